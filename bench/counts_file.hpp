// A user's histogram of tokens per expert (dmoe tune --counts FILE): read, checked against the shape and
// scaled to T·K. No GPU needed, so the command line checks it before asking for one.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dmoe::bench {

// The non-negative integers of `text` (separated by whitespace, commas or newlines; '#' starts a comment
// running to the end of the line). Throws InvalidArgument naming `source` and the line of a bad entry.
std::vector<int64_t> parse_counts(const std::string& text, const std::string& source);

// parse_counts of a file's contents; throws InvalidArgument naming the path when it cannot be read.
std::vector<int64_t> read_counts_file(const std::filesystem::path&);

struct FittedCounts {
  std::vector<int64_t> counts;  // E entries summing to T·K, each ≤ T
  int64_t given_sum = 0;        // the file's sum
  bool scaled = false;          // given_sum ≠ T·K: scaled proportionally (largest-remainder rounding)
};

// Checks `counts` against E experts and T tokens of K experts each: E entries, a positive sum; scales them
// to sum to T·K when they do not; then every count must be ≤ T (one assignment per token and expert).
// Throws InvalidArgument naming the numbers at fault; `source` (the file) prefixes every message.
FittedCounts fit_counts(std::vector<int64_t> counts, int64_t tokens, int64_t top_k, int64_t experts,
                        const std::string& source);

}  // namespace dmoe::bench
