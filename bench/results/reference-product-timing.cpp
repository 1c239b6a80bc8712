// The timing harness behind the fp64 reference product figures of session 12 (bench/NOTES.md, "The fp64
// reference product on every core"): every operand layout of the sm90 suite's skewed routing (H = F = 512,
// 10 experts; "big": the 70 144-row routing at H 128, F 256), time and a checksum per layout. Built against a
// build's libdmoe.a, from the repository root:
//   g++ -std=c++20 -O2 -DFMT_HEADER_ONLY -I runtime/include -I compiler/include -I templates -I . \
//     -I /usr/local/cuda/include bench/results/reference-product-timing.cpp build/libdmoe.a -o /tmp/ref_timing \
//     -L/usr/local/cuda/lib64 -lnvrtc -ldl -lpthread && /tmp/ref_timing && /tmp/ref_timing big
// Output: bench/results/reference-product-timing.txt.
#include <chrono>
#include <cstdio>
#include <random>
#include "dmoe/reference.hpp"
#include "dmoe/products.hpp"
using namespace dmoe;
int main(int argc, char** argv) {
  std::vector<int64_t> counts = {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300};
  int H = 512, F = 512, B = 128;
  if (argc > 1) { counts = {30000, 0, 25000, 15001}; H = 128; F = 256; }
  auto topo = reference::topology_from_counts(counts, B, F);
  int64_t cap = int64_t(topo.block_rows) * B;
  std::mt19937 g(1); std::uniform_real_distribution<float> u(-1, 1);
  double total = 0; 
  for (auto [op, ta, tb] : std::vector<std::tuple<Op,bool,bool>>{{Op::SDD,false,true},{Op::DSD,false,false},{Op::DSD,true,false},{Op::DDS,false,false},{Op::DDS,false,true}, {Op::SDD,true,false},{Op::DSD,true,true},{Op::DDS,true,true}}) {
    KernelSpec k; k.op = op; k.trans_a = ta; k.trans_b = tb; k.block = B; k.hidden = H; k.ffn = F; k.experts = counts.size();
    auto s = reference::product_shapes(k, topo, cap);
    int64_t cb = int64_t(topo.block_rows) * (F / B) * B * B;
    std::vector<float> a(op == Op::DSD ? cb : s.a_rows * s.a_cols), b(op == Op::DDS ? cb : s.b_rows * s.b_cols);
    for (auto& x : a) x = u(g); for (auto& x : b) x = u(g);
    auto t0 = std::chrono::steady_clock::now();
    auto c = reference::product(k, topo, cap, a, b);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double sum = 0; for (size_t i = 0; i < c.size(); ++i) sum += c[i] * ((i % 7) + 1);
    std::printf("%s%c%c %.3f s checksum %.17g\n", to_string(op).data(), ta?'t':'n', tb?'t':'n', dt, sum);
    total += dt;
  }
  std::printf("total %.3f s\n", total);
}
