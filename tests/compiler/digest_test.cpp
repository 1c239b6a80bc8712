#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "digest.hpp"

using dmoe::KeyBuilder;
using dmoe::Sha256;
using dmoe::sha256_hex;

TEST_CASE("sha256: FIPS 180-4 vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // The 896-bit two-block message of FIPS 180-2 appendix B.
  CHECK(
      sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                 "mnopqrstnopqrstu") == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST_CASE("sha256: padding boundaries match a byte-at-a-time digest") {
  // Lengths around 55/56/64 exercise the one-block and two-block padding paths.
  for (size_t n : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129}) {
    const std::string msg(n, 'x');
    Sha256 bytewise;
    for (char c : msg) bytewise.update(&c, 1);
    CHECK_MESSAGE(bytewise.hex() == sha256_hex(msg), "length " << n);
  }
  // Known value for exactly one block of input (two blocks after padding).
  CHECK(sha256_hex(std::string(64, 'a')) == "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  CHECK(sha256_hex(std::string(55, 'a')) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha256_hex(std::string(56, 'a')) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
}

TEST_CASE("sha256: incremental updates in any chunking equal the one-shot digest") {
  std::string msg;
  for (int i = 0; i < 1000; ++i) msg += static_cast<char>(i * 7 + 3);
  const std::string expected = sha256_hex(msg);
  for (size_t chunk : {1, 3, 63, 64, 65, 200, 999}) {
    Sha256 sha;
    for (size_t pos = 0; pos < msg.size(); pos += chunk) sha.update(std::string_view(msg).substr(pos, chunk));
    CHECK_MESSAGE(sha.hex() == expected, "chunk " << chunk);
  }
}

TEST_CASE("sha256: finish is idempotent and update afterwards is an error") {
  Sha256 sha;
  sha.update("abc");
  const auto first = sha.finish();
  CHECK(sha.finish() == first);
  CHECK(sha.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK_THROWS_AS(sha.update("d"), std::logic_error);
  Sha256 empty;
  empty.update(nullptr, 0);
  CHECK(empty.hex() == sha256_hex(""));
}

TEST_CASE("key builder: 128-bit hex over the length-prefixed fields") {
  const std::string key = KeyBuilder().add("arch", "sm_90a").add("source", "x").key();
  CHECK(key.size() == 32);
  CHECK(key.find_first_not_of("0123456789abcdef") == std::string::npos);

  // Same encoding written out by hand: 8-byte little-endian length, then the bytes.
  std::string encoded;
  for (std::string_view field : {"arch", "sm_90a", "source", "x"}) {
    for (int i = 0; i < 8; ++i) encoded += static_cast<char>((field.size() >> (8 * i)) & 0xff);
    encoded += field;
  }
  CHECK(key == sha256_hex(encoded).substr(0, 32));

  CHECK(KeyBuilder().add("arch", "sm_90a").add("source", "x").key() == key);  // deterministic
  CHECK(KeyBuilder().add("source", "x").add("arch", "sm_90a").key() != key);  // order matters
  // Moving a boundary between fields or between name and value changes the key.
  CHECK(KeyBuilder().add("ab", "c").key() != KeyBuilder().add("a", "bc").key());
  CHECK(KeyBuilder().add("a", "").add("", "b").key() != KeyBuilder().add("a", "b").key());
  CHECK(KeyBuilder().key() == sha256_hex("").substr(0, 32));

  KeyBuilder done;
  done.add("a", "b");
  CHECK(done.key() == done.key());
  CHECK_THROWS_AS(done.add("c", "d"), std::logic_error);
}
