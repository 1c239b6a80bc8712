// json.hpp — a small JSON value for cache metadata (meta.json) and tool output.
//
// Objects keep insertion order so that dumped files are stable and readable. parse() is strict
// (RFC 8259, UTF-8 validated, no duplicate keys, nesting bounded) because its input may be a file
// truncated or corrupted by a crash: every malformed input throws ParseError, none crashes.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace dmoe::json {

struct ParseError : std::runtime_error {
  ParseError(size_t offset, std::string_view what);
  size_t offset;  // byte offset in the input where parsing failed
};

// Accessing a value as the wrong type, or a missing object key through operator[].
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;

struct Value {
  std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array, Object> data;

  Value() : data(nullptr) {}
  Value(std::nullptr_t) : data(nullptr) {}
  Value(bool b) : data(b) {}
  // Any integer type; unsigned values above INT64_MAX throw TypeError rather than wrap.
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  Value(T i) : data(checked_int(i)) {}
  Value(double d) : data(d) {}
  Value(std::string s) : data(std::move(s)) {}
  Value(std::string_view s) : data(std::string(s)) {}
  Value(const char* s) : data(std::string(s)) {}
  Value(Array a) : data(std::move(a)) {}
  Value(Object o) : data(std::move(o)) {}

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(data); }
  bool is_bool() const { return std::holds_alternative<bool>(data); }
  bool is_int() const { return std::holds_alternative<int64_t>(data); }
  bool is_double() const { return std::holds_alternative<double>(data); }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return std::holds_alternative<std::string>(data); }
  bool is_array() const { return std::holds_alternative<Array>(data); }
  bool is_object() const { return std::holds_alternative<Object>(data); }

  // Typed access; the wrong type throws TypeError. get_double() also accepts an int.
  bool get_bool() const;
  int64_t get_int() const;
  double get_double() const;
  const std::string& get_string() const;
  const Array& get_array() const;
  Array& get_array();
  const Object& get_object() const;
  Object& get_object();

  // Object lookup: find() returns nullptr when this is not an object or has no such key;
  // operator[] throws TypeError in both cases.
  const Value* find(std::string_view key) const;
  const Value& operator[](std::string_view key) const;
  // Replaces the value of an existing key in place, else appends it. Throws TypeError on non-objects.
  Value& set(std::string_view key, Value value);

  // indent < 0: one line with ", " and ": " separators; otherwise one member per line.
  // Non-finite doubles have no JSON spelling and throw TypeError.
  std::string dump(int indent = -1) const;

  friend bool operator==(const Value&, const Value&) = default;

 private:
  template <std::integral T>
  static int64_t checked_int(T i) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(int64_t))
      if (i > static_cast<T>(INT64_MAX))
        throw TypeError("json: integer " + std::to_string(i) + " exceeds INT64_MAX");
    return static_cast<int64_t>(i);
  }
};

// Parses exactly one JSON document (surrounding whitespace allowed). Integers that fit in int64 become
// int64, other numbers double.
Value parse(std::string_view text);

}  // namespace dmoe::json
