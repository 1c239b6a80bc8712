#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "json.hpp"

namespace json = dmoe::json;

namespace {

// A document that exercises every kind of value; no proper prefix of it is a valid document.
const std::string kDocument = R"({"name": "dmoe_sdd_bf16", "regs": 128, "neg": -7, "ratio": 0.25, "exp": 1.5e-3,
  "ok": true, "bad": false, "none": null, "list": [1, [2, []], {}], "esc": "a\"b\\c\n\u00e9\ud83d\ude00",
  "nested": {"a": {"b": [{"c": "d"}]}}})";

}  // namespace

TEST_CASE("json: parse types and accessors") {
  const json::Value v = json::parse(kDocument);
  REQUIRE(v.is_object());
  CHECK(v["name"].get_string() == "dmoe_sdd_bf16");
  CHECK(v["regs"].get_int() == 128);
  CHECK(v["neg"].get_int() == -7);
  CHECK(v["ratio"].is_double());
  CHECK(v["ratio"].get_double() == 0.25);
  CHECK(v["exp"].get_double() == 1.5e-3);
  CHECK(v["regs"].get_double() == 128.0);
  CHECK(v["ok"].get_bool());
  CHECK_FALSE(v["bad"].get_bool());
  CHECK(v["none"].is_null());
  CHECK(v["list"].get_array().size() == 3);
  CHECK(v["list"].get_array()[1].get_array()[1].get_array().empty());
  CHECK(v["esc"].get_string() == "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(v["nested"]["a"]["b"].get_array()[0]["c"].get_string() == "d");

  CHECK(v.find("regs") == &v["regs"]);
  CHECK(v.find("missing") == nullptr);
  CHECK(v["regs"].find("x") == nullptr);  // not an object
  CHECK_THROWS_AS(v["missing"], json::TypeError);
  CHECK_THROWS_AS(v["regs"]["x"], json::TypeError);
  CHECK_THROWS_AS(v["name"].get_int(), json::TypeError);
  CHECK_THROWS_AS(v["ratio"].get_int(), json::TypeError);
  CHECK_THROWS_AS(v["regs"].get_string(), json::TypeError);
  CHECK_THROWS_AS(v["none"].get_bool(), json::TypeError);
  CHECK_THROWS_WITH_AS(v["list"].get_object(), "json: expected object, got array", json::TypeError);
}

TEST_CASE("json: object keeps insertion order; set replaces or appends") {
  json::Value v = json::Object{{"z", 1}, {"a", 2}};
  v.set("m", "x");
  v.set("z", json::Array{true, nullptr});
  CHECK(v.dump() == R"({"z": [true, null], "a": 2, "m": "x"})");
  CHECK_THROWS_AS(json::Value(3).set("a", 1), json::TypeError);
}

TEST_CASE("json: round trips, compact and indented") {
  const json::Value v = json::parse(kDocument);
  CHECK(json::parse(v.dump()) == v);
  CHECK(json::parse(v.dump(2)) == v);
  CHECK(json::parse(v.dump(0)) == v);
  CHECK(json::parse(v.dump()).dump() == v.dump());

  CHECK(json::Value(json::Object{{"a", json::Array{1, 2}}, {"b", json::Object{}}, {"c", json::Array{}}}).dump(2) ==
        "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": []\n}");
  CHECK(json::Value(json::Array{1, "x", nullptr}).dump() == R"([1, "x", null])");
}

TEST_CASE("json: numbers") {
  CHECK(json::parse("0").get_int() == 0);
  CHECK(json::parse("-0").is_int());
  CHECK(json::parse("9223372036854775807").get_int() == std::numeric_limits<int64_t>::max());
  CHECK(json::parse("-9223372036854775808").get_int() == std::numeric_limits<int64_t>::min());
  const json::Value big = json::parse("9223372036854775808");  // INT64_MAX + 1: falls back to double
  CHECK(big.is_double());
  CHECK(big.get_double() == 9223372036854775808.0);
  CHECK(json::parse("-18446744073709551616").is_double());
  CHECK(json::parse("1e2").is_double());
  CHECK(json::parse("1E+2").get_double() == 100.0);
  CHECK(json::parse("2.5e-1").get_double() == 0.25);
  CHECK(json::parse("1.0").is_double());

  // Doubles print in shortest round-trip form and stay doubles.
  for (double d : {0.1, 1.0 / 3.0, 1e300, -2.0, 0.0, 5e-324, 1e21, 123456789.0}) {
    const json::Value back = json::parse(json::Value(d).dump());
    CHECK(back.is_double());
    CHECK(back.get_double() == d);
  }
  CHECK(json::Value(2.0).dump() == "2.0");
  CHECK(json::Value(uint64_t{42}).dump() == "42");
  CHECK_THROWS_AS(json::Value(std::numeric_limits<uint64_t>::max()), json::TypeError);
  CHECK_THROWS_AS(json::Value(std::nan("")).dump(), json::TypeError);
  CHECK_THROWS_AS(json::Value(std::numeric_limits<double>::infinity()).dump(), json::TypeError);
}

TEST_CASE("json: string escapes") {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  const std::string dumped = json::Value(all).dump();
  CHECK(json::parse(dumped).get_string() == all);
  for (char c : dumped) CHECK(static_cast<unsigned char>(c) >= 0x20);  // no raw control characters

  CHECK(json::Value(std::string("\x01\x1f\x7f", 3)).dump() == "\"\\u0001\\u001f\x7f\"");
  CHECK(json::Value("q\"b\\s\b\f\n\r\t").dump() == R"("q\"b\\s\b\f\n\r\t")");
  CHECK(json::parse(R"("\/\u0041\u00e9\u20AC\u0000")").get_string() == std::string("/A\xc3\xa9\xe2\x82\xac\0", 8));
  CHECK(json::parse(R"("\uD834\uDD1E")").get_string() == "\xf0\x9d\x84\x9e");
}

TEST_CASE("json: whitespace around and inside documents") {
  CHECK(json::parse(" \t\r\n[ 1 , { \"a\" : null } ] \n") ==
        json::Value(json::Array{1, json::Object{{"a", nullptr}}}));
}

TEST_CASE("json: malformed documents throw ParseError") {
  const char* bad[] = {
      "", " ", "nul", "tru", "True", "NULL", "+1", "01", "-", "-a", "1.", ".5", "1e", "1e+", "0x10", "1 2",
      "[1,]", "[,1]", "[1 2]", "[", "]", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{a:1}", "{\"a\":1,}",
      "{'a':1}", "{\"a\":1 \"b\":2}", "{\"a\":1}}", "[1]]", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"",
      "\"\\uDC00\"", "\"\\uD800\"", "\"\\uD800\\u0041\"", "\"\\uD800x\"", "\"a\nb\"", "\"\t\"", "\"\x7f\x80\"",
      "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xf8\x88\x80\x80\x80\"",
      "\"\xc3\"", "\"\xe2\x82\"", "\"\xff\"", "{\"a\":1,\"a\":2}", "1e400", "-1e400", "NaN", "Infinity", "[1]x",
      "/* */1", "\xef\xbb\xbf{}",
  };
  for (const char* text : bad) CHECK_THROWS_AS_MESSAGE(json::parse(text), json::ParseError, "input: " << text);
  CHECK_THROWS_AS(json::parse(std::string("[1]\0", 4)), json::ParseError);
  CHECK_THROWS_AS(json::parse(std::string("\"a\0b\"", 5)), json::ParseError);
}

TEST_CASE("json: error messages carry the byte offset") {
  try {
    json::parse(R"({"a": [1, 2,, 3]})");
    FAIL("no exception");
  } catch (const json::ParseError& e) {
    CHECK(e.offset == 12);
    CHECK(std::string(e.what()) == "json: unexpected ',' at byte 12");
  }
  CHECK_THROWS_WITH_AS(json::parse("[1"), "json: unexpected end of input at byte 2", json::ParseError);
  CHECK_THROWS_WITH_AS(json::parse(R"({"k": 1, "k": 2})"), "json: duplicate key \"k\" at byte 9", json::ParseError);
}

TEST_CASE("json: every truncation of a valid document throws") {
  for (const std::string& doc : {kDocument, json::parse(kDocument).dump(2)}) {
    for (size_t n = 0; n < doc.size(); ++n)
      CHECK_THROWS_AS_MESSAGE(json::parse(std::string_view(doc).substr(0, n)), json::ParseError, "prefix " << n);
    CHECK_NOTHROW(json::parse(doc));
  }
}

TEST_CASE("json: corrupted bytes never crash") {
  // Every single-byte substitution either parses or throws ParseError.
  const std::string doc = json::parse(kDocument).dump();
  for (size_t i = 0; i < doc.size(); ++i) {
    for (char c : {'\0', '"', '\\', '{', ']', ',', 'x', '\xff'}) {
      std::string bad = doc;
      bad[i] = c;
      try {
        json::parse(bad);
      } catch (const json::ParseError&) {
      }
    }
  }
}

TEST_CASE("json: nesting depth is bounded instead of exhausting the stack") {
  CHECK_NOTHROW(json::parse(std::string(500, '[') + std::string(500, ']')));
  CHECK_THROWS_AS(json::parse(std::string(100000, '[') + std::string(100000, ']')), json::ParseError);
  CHECK_THROWS_AS(json::parse(std::string(100000, '[')), json::ParseError);
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  CHECK_THROWS_AS(json::parse(objects), json::ParseError);
}
