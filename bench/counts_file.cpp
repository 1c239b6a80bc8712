#include "counts_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <numeric>
#include <sstream>

#include "dmoe/spec.hpp"

namespace dmoe::bench {

std::vector<int64_t> parse_counts(const std::string& text, const std::string& source) {
  std::vector<int64_t> out;
  std::istringstream in(text);
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream words(line);
    for (std::string w; words >> w;) {
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), v);
      if (ec != std::errc{} || end != w.data() + w.size() || v < 0)
        throw InvalidArgument(fmt::format("--counts {}: line {}: '{}' is not a non-negative integer", source,
                                          line_no, w));
      out.push_back(v);
    }
  }
  return out;
}

std::vector<int64_t> read_counts_file(const std::filesystem::path& path) {
  std::error_code ec;
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open() || std::filesystem::is_directory(path, ec))
    throw InvalidArgument(fmt::format("--counts: cannot read {}", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw InvalidArgument(fmt::format("--counts: cannot read {}", path.string()));
  return parse_counts(text.str(), path.string());
}

FittedCounts fit_counts(std::vector<int64_t> counts, int64_t tokens, int64_t top_k, int64_t experts,
                        const std::string& source) {
  if (int64_t(counts.size()) != experts)
    throw InvalidArgument(fmt::format("--counts {}: {} entries, but the shape has {} experts (one count each)",
                                      source, counts.size(), experts));
  FittedCounts fit;
  const int64_t total = tokens * top_k;
  for (int64_t c : counts) {
    if (c > (int64_t{1} << 62) - fit.given_sum)
      throw InvalidArgument(fmt::format("--counts {}: the counts' sum overflows", source));
    fit.given_sum += c;
  }
  if (fit.given_sum == 0) throw InvalidArgument(fmt::format("--counts {}: every count is 0", source));
  if (fit.given_sum != total) {
    // Largest remainder: each expert's floor of c·T·K/sum, then one more each to the largest remainders
    // (ties to the lower expert) until the sum is T·K. 128-bit products: exact.
    fit.scaled = true;
    std::vector<unsigned __int128> rem(experts);
    int64_t assigned = 0;
    for (int64_t e = 0; e < experts; ++e) {
      const unsigned __int128 q = (unsigned __int128)counts[e] * (unsigned __int128)total;
      counts[e] = int64_t(q / (unsigned __int128)fit.given_sum);
      rem[e] = q % (unsigned __int128)fit.given_sum;
      assigned += counts[e];
    }
    std::vector<int64_t> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rem[a] > rem[b]; });
    for (int64_t i = 0; i < total - assigned; ++i) ++counts[order[i]];
  }
  for (int64_t e = 0; e < experts; ++e)
    if (counts[e] > tokens)
      throw InvalidArgument(fmt::format(
          "--counts {}: expert {} has {} tokens{}, more than T = {} (an expert gets at most one assignment per token)",
          source, e, counts[e], fit.scaled ? fmt::format(" (scaled to T·K = {})", total) : "", tokens));
  fit.counts = std::move(counts);
  return fit;
}

}  // namespace dmoe::bench
