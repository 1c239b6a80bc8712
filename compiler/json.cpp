#include "json.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace dmoe::json {
namespace {

// Deep enough for any document we write; shallow enough that recursion cannot exhaust the stack.
constexpr int kMaxDepth = 512;

std::string_view type_name(const Value& v) {
  static constexpr std::string_view kNames[] = {"null", "bool", "integer", "double", "string", "array", "object"};
  return kNames[v.data.index()];
}

[[noreturn]] void wrong_type(const Value& v, std::string_view wanted) {
  throw TypeError(fmt::format("json: expected {}, got {}", wanted, type_name(v)));
}

std::string describe(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u < 0x7f ? fmt::format("'{}'", c) : fmt::format("byte 0x{:02x}", u);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3f));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    skip_whitespace();
    Value v = value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("unexpected " + describe(text_[pos_]) + " after the document");
    return v;
  }

 private:
  [[noreturn]] void fail(std::string_view what) const { throw ParseError(pos_, what); }

  char next() const {
    if (pos_ >= text_.size()) fail("unexpected end of input");
    return text_[pos_];
  }

  void skip_whitespace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  void expect(char c) {
    if (next() != c) fail(fmt::format("expected '{}', got {}", c, describe(text_[pos_])));
    ++pos_;
  }

  Value value(int depth) {
    switch (next()) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return string();
      case 't': literal("true"); return true;
      case 'f': literal("false"); return false;
      case 'n': literal("null"); return nullptr;
      default:
        if (text_[pos_] == '-' || is_digit(text_[pos_])) return number();
        fail("unexpected " + describe(text_[pos_]));
    }
  }

  void literal(std::string_view word) {
    for (char c : word) expect(c);
  }

  void enter(int depth) const {
    if (depth > kMaxDepth) fail(fmt::format("nesting deeper than {} levels", kMaxDepth));
  }

  Value object(int depth) {
    enter(depth);
    ++pos_;
    Object members;
    skip_whitespace();
    if (next() == '}') {
      ++pos_;
      return members;
    }
    for (;;) {
      skip_whitespace();
      const size_t key_pos = pos_;
      if (next() != '"') fail("expected a string key, got " + describe(text_[pos_]));
      std::string key = string();
      for (const auto& [existing, _] : members)
        if (existing == key) throw ParseError(key_pos, fmt::format("duplicate key \"{}\"", key));
      skip_whitespace();
      expect(':');
      skip_whitespace();
      members.emplace_back(std::move(key), value(depth));
      skip_whitespace();
      if (next() == '}') break;
      if (text_[pos_] != ',') fail("expected ',' or '}', got " + describe(text_[pos_]));
      ++pos_;
    }
    ++pos_;
    return members;
  }

  Value array(int depth) {
    enter(depth);
    ++pos_;
    Array items;
    skip_whitespace();
    if (next() == ']') {
      ++pos_;
      return items;
    }
    for (;;) {
      skip_whitespace();
      items.push_back(value(depth));
      skip_whitespace();
      if (next() == ']') break;
      if (text_[pos_] != ',') fail("expected ',' or ']', got " + describe(text_[pos_]));
      ++pos_;
    }
    ++pos_;
    return items;
  }

  std::string string() {
    ++pos_;  // the opening quote
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        escape(out);
      } else if (c < 0x20) {
        fail("unescaped control character " + describe(text_[pos_]) + " in string");
      } else if (c < 0x80) {
        out += text_[pos_++];
      } else {
        utf8_sequence(out);
      }
    }
  }

  void escape(std::string& out) {
    ++pos_;
    const char c = next();
    ++pos_;
    switch (c) {
      case '"': out += '"'; return;
      case '\\': out += '\\'; return;
      case '/': out += '/'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: --pos_; fail("invalid escape \\" + std::string(1, c));
    }
    uint32_t cp = hex4();
    if (cp >= 0xdc00 && cp <= 0xdfff) fail("unpaired low surrogate in \\u escape");
    if (cp >= 0xd800 && cp <= 0xdbff) {
      if (text_.substr(pos_, 2) != "\\u") fail("high surrogate not followed by a \\u low surrogate");
      pos_ += 2;
      const uint32_t low = hex4();
      if (low < 0xdc00 || low > 0xdfff) fail("high surrogate not followed by a low surrogate");
      cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    append_utf8(out, cp);
  }

  uint32_t hex4() {
    uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = next();
      const int digit = is_digit(c)            ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
      if (digit < 0) fail("expected 4 hex digits after \\u, got " + describe(c));
      cp = cp << 4 | static_cast<uint32_t>(digit);
      ++pos_;
    }
    return cp;
  }

  // Copies one multi-byte UTF-8 sequence, rejecting overlong forms, surrogates and code points > U+10FFFF.
  void utf8_sequence(std::string& out) {
    const auto lead = static_cast<unsigned char>(text_[pos_]);
    int length = 0;
    unsigned char low = 0x80, high = 0xbf;  // allowed range of the second byte
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead == 0xe0) low = 0xa0;
      if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead == 0xf0) low = 0x90;
      if (lead == 0xf4) high = 0x8f;
    } else {
      fail("invalid UTF-8 lead " + describe(text_[pos_]));
    }
    const size_t start = pos_++;
    for (int i = 1; i < length; ++i, ++pos_) {
      if (pos_ >= text_.size()) fail("truncated UTF-8 sequence");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c < (i == 1 ? low : 0x80) || c > (i == 1 ? high : 0xbf))
        fail("invalid UTF-8 continuation " + describe(text_[pos_]));
    }
    out.append(text_.substr(start, pos_ - start));
  }

  Value number() {
    const size_t start = pos_;
    bool integral = true;
    if (text_[pos_] == '-') ++pos_;
    if (!is_digit(next())) fail("expected a digit, got " + describe(text_[pos_]));
    if (text_[pos_++] != '0')
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      integral = false;
      ++pos_;
      digits();
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      digits();
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      if (std::from_chars(first, last, i).ec == std::errc()) return i;
    }
    double d = 0;
    if (std::from_chars(first, last, d).ec != std::errc())
      throw ParseError(start,
                       fmt::format("number {} is out of the range of a double", std::string_view(first, last)));
    return d;
  }

  void digits() {
    if (!is_digit(next())) fail("expected a digit, got " + describe(text_[pos_]));
    while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

void write_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
        else
          out += c;
    }
  }
  out += '"';
}

void write_double(std::string& out, double d) {
  if (!std::isfinite(d)) throw TypeError(fmt::format("json: cannot represent the non-finite number {}", d));
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, d).ptr;
  const std::string_view text(buf, end - buf);
  out += text;
  // Shortest round-trip form; keep a fraction so that it parses back as a double, not an integer.
  if (text.find_first_of(".e") == std::string_view::npos) out += ".0";
}

void write(std::string& out, const Value& v, int indent, int depth);

// Writes the items of an array or object, one per line when indenting.
template <typename Items, typename WriteItem>
void write_container(std::string& out, const Items& items, char open, char close, int indent, int depth,
                     WriteItem write_item) {
  out += open;
  if (items.empty()) {
    out += close;
    return;
  }
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += indent < 0 ? ", " : ",";
    if (indent >= 0) out.append("\n").append(static_cast<size_t>(indent) * (depth + 1), ' ');
    write_item(item);
    first = false;
  }
  if (indent >= 0) out.append("\n").append(static_cast<size_t>(indent) * depth, ' ');
  out += close;
}

void write(std::string& out, const Value& v, int indent, int depth) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) {
          out += "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          out += std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          write_double(out, x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          write_string(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          write_container(out, x, '[', ']', indent, depth,
                          [&](const Value& item) { write(out, item, indent, depth + 1); });
        } else {
          write_container(out, x, '{', '}', indent, depth, [&](const auto& member) {
            write_string(out, member.first);
            out += ": ";
            write(out, member.second, indent, depth + 1);
          });
        }
      },
      v.data);
}

}  // namespace

ParseError::ParseError(size_t at, std::string_view what)
    : std::runtime_error(fmt::format("json: {} at byte {}", what, at)), offset(at) {}

bool Value::get_bool() const {
  if (!is_bool()) wrong_type(*this, "bool");
  return std::get<bool>(data);
}

int64_t Value::get_int() const {
  if (!is_int()) wrong_type(*this, "integer");
  return std::get<int64_t>(data);
}

double Value::get_double() const {
  if (is_int()) return static_cast<double>(std::get<int64_t>(data));
  if (!is_double()) wrong_type(*this, "number");
  return std::get<double>(data);
}

const std::string& Value::get_string() const {
  if (!is_string()) wrong_type(*this, "string");
  return std::get<std::string>(data);
}

const Array& Value::get_array() const {
  if (!is_array()) wrong_type(*this, "array");
  return std::get<Array>(data);
}

Array& Value::get_array() {
  if (!is_array()) wrong_type(*this, "array");
  return std::get<Array>(data);
}

const Object& Value::get_object() const {
  if (!is_object()) wrong_type(*this, "object");
  return std::get<Object>(data);
}

Object& Value::get_object() {
  if (!is_object()) wrong_type(*this, "object");
  return std::get<Object>(data);
}

const Value* Value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [name, value] : std::get<Object>(data))
    if (name == key) return &value;
  return nullptr;
}

const Value& Value::operator[](std::string_view key) const {
  for (const auto& [name, value] : get_object())
    if (name == key) return value;
  throw TypeError(fmt::format("json: no key \"{}\" in object", key));
}

Value& Value::set(std::string_view key, Value value) {
  Object& members = get_object();
  for (auto& [name, existing] : members)
    if (name == key) return existing = std::move(value);
  return members.emplace_back(std::string(key), std::move(value)).second;
}

std::string Value::dump(int indent) const {
  std::string out;
  write(out, *this, indent, 0);
  return out;
}

Value parse(std::string_view text) { return Parser(text).document(); }

}  // namespace dmoe::json
