#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>

#include "moe/io/json.hpp"

namespace json = moe::json;

namespace {

/// The byte offset parse reports for `text`, or npos when it parses.
std::size_t error_offset(const std::string& text) {
  try {
    json::parse(text);
  } catch (const json::ParseError& e) {
    return e.offset();
  }
  return std::string::npos;
}

}  // namespace

TEST_CASE("JSON parses every kind of value", "[io][json]") {
  const json::Value v = json::parse(
      R"( {"null": null, "yes": true, "no": false, "int": -42, "big": 9223372036854775807,
           "number": 1.5e3, "small": -0.25, "text": "a b", "list": [1, [2, []], {}], "empty": ""} )");
  REQUIRE(v.is_object());
  CHECK(v.as_object().size() == 10);
  CHECK(v.find("null")->is_null());
  CHECK(v.find("yes")->as_bool());
  CHECK_FALSE(v.find("no")->as_bool());
  CHECK(v.find("int")->as_integer() == -42);
  CHECK(v.find("big")->as_integer() == std::numeric_limits<std::int64_t>::max());
  CHECK_FALSE(v.find("number")->is_integer());
  CHECK(v.find("number")->as_number() == 1500.0);
  CHECK(v.find("small")->as_number() == -0.25);
  CHECK(v.find("int")->as_number() == -42.0);  // an integer is a number too
  CHECK(v.find("text")->as_string() == "a b");
  CHECK(v.find("empty")->as_string().empty());
  const json::Array& list = v.find("list")->as_array();
  REQUIRE(list.size() == 3);
  CHECK(list[1].as_array()[1].as_array().empty());
  CHECK(list[2].as_object().empty());
  CHECK(v.find("absent") == nullptr);
  CHECK(json::parse("-9223372036854775808").as_integer() == std::numeric_limits<std::int64_t>::min());
  CHECK(json::parse("0").as_integer() == 0);
  CHECK(json::parse("1E2").as_number() == 100.0);
  CHECK(json::parse("2e-1").as_number() == 0.2);
  // Members keep the document's order.
  const json::Value ordered = json::parse(R"({"b": 1, "a": 2})");
  CHECK(ordered.as_object()[0].first == "b");
}

TEST_CASE("JSON decodes every escape, surrogate pairs and raw UTF-8", "[io][json]") {
  CHECK(json::parse(R"("\"\\\/\b\f\n\r\t")").as_string() == "\"\\/\b\f\n\r\t");
  CHECK(json::parse(R"("\u0041\u00e9\u20AC")").as_string() == "A\xC3\xA9\xE2\x82\xAC");   // A, e acute, euro
  CHECK(json::parse(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");               // U+1F600
  CHECK(json::parse(R"("\u0000x")").as_string() == std::string("\0x", 2));
  CHECK(json::parse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string() == "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST_CASE("JSON writes what it reads back, exactly", "[io][json]") {
  const json::Value v = json::Object{
      {"__metadata__", json::Object{{"config", "{\"d_model\": 8}"}, {"note", "tab\there\nline \x01 \xC3\xA9"}}},
      {"tensor", json::Object{{"dtype", "F32"}, {"shape", json::Array{3, 4}}, {"data_offsets", json::Array{0, 48}}}},
      {"numbers", json::Array{0.1, -2.5e-300, 1e300, 2.0, -0.0, std::int64_t{-7}, true, nullptr}},
  };
  const std::string text = json::dump(v);
  CHECK(text.starts_with(R"({"__metadata__":{"config":"{\"d_model\": 8}","note":)"));
  CHECK(text.find(R"({"dtype":"F32","shape":[3,4],"data_offsets":[0,48]})") != std::string::npos);
  CHECK(text.find(R"("tab\there\nline \u0001 )") != std::string::npos);
  const json::Value back = json::parse(text);
  CHECK(back == v);
  CHECK(back.find("numbers")->as_array()[3].is_number());
  CHECK_FALSE(back.find("numbers")->as_array()[3].is_integer());  // 2.0 stays a number, written "2.0"
  CHECK(json::dump(json::Array{}) == "[]");
  CHECK(json::dump(json::Object{}) == "{}");
  CHECK_THROWS_WITH(json::dump(json::Value(std::numeric_limits<double>::infinity())),
                    Catch::Contains("JSON has no inf or nan"));
}

TEST_CASE("JSON accessors name the type they found", "[io][json][errors]") {
  CHECK_THROWS_WITH(json::parse("[1]").as_object(), Catch::Contains("expected an object, got an array"));
  CHECK_THROWS_WITH(json::parse("\"x\"").as_integer(), Catch::Contains("expected an integer, got a string"));
  CHECK_THROWS_WITH(json::parse("1.5").as_integer(), Catch::Contains("expected an integer, got a number"));
}

TEST_CASE("JSON rejects invalid documents with the byte offset", "[io][json][errors]") {
  CHECK_THROWS_AS(json::parse("[1, 2,]"), json::ParseError);
  CHECK_THROWS_WITH(json::parse("[1, 2,]"), "JSON: unexpected character ']', expected a value at byte 6");
  CHECK_THROWS_WITH(json::parse(R"({"a": 1,})"), Catch::Contains("expected a string key") && Catch::Contains("byte 8"));
  CHECK_THROWS_WITH(json::parse(R"({"a" 1})"), "JSON: expected ':', found character '1' at byte 5");
  CHECK_THROWS_WITH(json::parse(R"({"a": 1, "a": 2})"), "JSON: duplicate key \"a\" at byte 9");
  CHECK_THROWS_WITH(json::parse("{} x"), "JSON: unexpected character 'x' after the JSON value at byte 3");
  CHECK_THROWS_WITH(json::parse(""), "JSON: unexpected end of input, expected a value at byte 0");
  CHECK_THROWS_WITH(json::parse("   "), Catch::Contains("at byte 3"));
  CHECK_THROWS_WITH(json::parse("\"abc"), "JSON: unterminated string at byte 0");
  CHECK_THROWS_WITH(json::parse("[\"a\nb\"]"), Catch::Contains("control character byte 0x0A") &&
                                                  Catch::Contains("at byte 3"));
  CHECK_THROWS_WITH(json::parse(R"(["\x"])"), "JSON: invalid escape \\x at byte 2");
  CHECK_THROWS_WITH(json::parse(R"("\u12G4")"), Catch::Contains("hexadecimal digit") && Catch::Contains("byte 5"));
  CHECK_THROWS_WITH(json::parse(R"("\ude00")"), "JSON: lone low surrogate in \\u escape at byte 1");
  CHECK_THROWS_WITH(json::parse(R"("\ud83d")"), Catch::Contains("high surrogate") && Catch::Contains("byte 1"));
  CHECK_THROWS_WITH(json::parse(R"("\ud83d\u0041")"), Catch::Contains("low surrogate"));
  CHECK_THROWS_WITH(json::parse("\"a\xC3\""), "JSON: invalid UTF-8 sequence at byte 2");        // cut short
  CHECK_THROWS_WITH(json::parse("\"\xC0\xAF\""), Catch::Contains("invalid UTF-8 lead byte 0xC0"));  // overlong
  CHECK_THROWS_WITH(json::parse("\"\xED\xA0\x80\""), Catch::Contains("invalid UTF-8 sequence"));  // surrogate
  CHECK_THROWS_WITH(json::parse("\"\xFF\""), Catch::Contains("byte 0xFF") && Catch::Contains("at byte 1"));
  CHECK_THROWS_WITH(json::parse("01"), "JSON: leading zero in a number at byte 1");
  CHECK_THROWS_WITH(json::parse("[-]"), Catch::Contains("expected a digit in a number") && Catch::Contains("byte 2"));
  CHECK_THROWS_WITH(json::parse("1."), Catch::Contains("after the decimal point") && Catch::Contains("byte 2"));
  CHECK_THROWS_WITH(json::parse("1e+"), Catch::Contains("in the exponent") && Catch::Contains("byte 3"));
  CHECK_THROWS_WITH(json::parse(".5"), Catch::Contains("byte 0"));
  CHECK_THROWS_WITH(json::parse("+1"), Catch::Contains("byte 0"));
  CHECK_THROWS_WITH(json::parse("[9223372036854775808]"),
                    "JSON: integer 9223372036854775808 does not fit in 64 signed bits at byte 1");
  CHECK_THROWS_WITH(json::parse("1e999"), Catch::Contains("out of the range of a double"));
  CHECK_THROWS_WITH(json::parse("[tru]"), "JSON: invalid literal, expected true at byte 1");
  CHECK_THROWS_WITH(json::parse("NaN"), Catch::Contains("at byte 0"));
  CHECK_THROWS_WITH(json::parse("'a'"), Catch::Contains("character '''"));
  CHECK_THROWS_WITH(json::parse("// c\n1"), Catch::Contains("at byte 0"));
  CHECK_THROWS_WITH(json::parse(std::string(600, '[') + std::string(600, ']')),
                    "JSON: nesting deeper than 512 levels at byte 512");
  CHECK(error_offset(std::string(512, '[') + std::string(512, ']')) == std::string::npos);
}
