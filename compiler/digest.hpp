// digest.hpp — SHA-256 and the cache-key builder.
//
// The key of a cached kernel is a digest over every input that changes the binary. Fields are
// length-prefixed so that no two different field lists can encode to the same bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dmoe {

// FIPS 180-4 SHA-256. finish() is idempotent; update() after finish() throws std::logic_error.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view data);
  void update(const void* data, size_t size);
  std::array<uint8_t, 32> finish();
  std::string hex();  // finish() as 64 lowercase hex digits

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
  std::array<uint8_t, 32> digest_{};
};

std::string sha256_hex(std::string_view data);

// Feeds (8-byte little-endian length, bytes) of each name and value into a SHA-256.
class KeyBuilder {
 public:
  KeyBuilder& add(std::string_view field_name, std::string_view value);
  // The first 32 hex digits (128 bits) of the digest. add() after key() throws std::logic_error.
  std::string key();

 private:
  void add_bytes(std::string_view bytes);

  Sha256 sha_;
};

}  // namespace dmoe
