// GPU tests of the gated experts' elementwise kernels, Glu and GluGrad (templates/dmoe/kernels/glu.cuh),
// against the fp64 references: every valid element written, blocks past the true block rows untouched,
// GluGrad's outputs in its inputs' buffers, and element offsets past 2^31.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "dmoe/reference.hpp"
#include "dmoe/routing.hpp"
#include "test_util.hpp"

using namespace dmoe;

namespace {

using test::arch;
using test::cache;
using test::device;
using test::download;
using test::upload;

constexpr uint16_t kPoison = 0xffff;  // NaN in bf16 and fp16

float from_bits(uint16_t b, DType d) { return d == DType::BF16 ? reference::from_bf16(b) : reference::from_fp16(b); }

// Random operand of n elements, uniform in (−scale, scale), never zero, rounded to the dtype.
test::HostOperand operand(int64_t n, DType d, float scale) {
  test::HostOperand o = test::random_operand(n, d);
  for (int64_t i = 0; i < n; ++i) {
    const float v = o.values[i] * scale;
    o.bits[i] = d == DType::BF16 ? reference::to_bf16(v) : reference::to_fp16(v);
    o.values[i] = from_bits(o.bits[i], d);
  }
  return o;
}

// ‖out − ref‖ / ‖ref‖ over the first n elements; NaN or Inf anywhere (an element never written) gives +Inf.
double relative_error(const std::vector<double>& ref, const std::vector<uint16_t>& out, int64_t n, DType d) {
  std::vector<double> o(n);
  for (int64_t i = 0; i < n; ++i) o[i] = from_bits(out[i], d);
  return reference::relative_error(std::span<const double>(ref.data(), n), o);
}

struct Case {
  int block, ffn, experts, top_k;
  int64_t tokens;
  DType dtype;
  Activation act;
};

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.block) + " F=" + std::to_string(c.ffn) + " E=" + std::to_string(c.experts) +
         " K=" + std::to_string(c.top_k) + " T=" + std::to_string(c.tokens) + " " + std::string(to_string(c.dtype)) +
         " " + std::string(to_string(c.act));
}

// Which buffers GluGrad writes da and dg into.
enum class Outputs { Separate, DaInDhDgInG, DaInADgInDh };

void run(const Case& c) {
  INFO(describe(c));
  Device& dev = device();
  MoeShape shape;
  shape.hidden = 64;
  shape.ffn = c.ffn;
  shape.experts = c.experts;
  shape.top_k = c.top_k;
  shape.block = c.block;
  shape.tokens = c.tokens;
  shape.dtype = c.dtype;
  shape.activation = c.act;
  shape.gated = true;
  RoutingWorkspace ws(dev, shape);
  const KernelSpec glu = ws.spec(Op::Glu), grad = ws.spec(Op::GluGrad);
  CHECK(glu == ws.spec(Op::Glu, arch()));
  CHECK(glu.epilogue == epilogue_of(c.act));
  CHECK(grad.epilogue == epilogue_of(c.act));
  CHECK(glu.dtype == c.dtype);

  const int64_t B = c.block, F = c.ffn, cap_rows = ws.max_block_rows();
  const int64_t capacity = cap_rows * B * F;  // elements of the sparse data at capacity
  const double tol = c.dtype == DType::BF16 ? 1e-2 : 2e-3;
  const Epilogue act = epilogue_of(c.act);
  // a spans the activations' curved range, short of the tail where GELU's tanh.approx (relative error
  // ~2^-11 in t, so absolute in 1 + t) dominates the fp16 rounding; g and dh are O(1).
  const test::HostOperand a = operand(capacity, c.dtype, 2.5f), g = operand(capacity, c.dtype, 1.f),
                          dh = operand(capacity, c.dtype, 1.f);
  DeviceBuffer da_buf(dev, capacity * 2), dg_buf(dev, capacity * 2), ddh_buf(dev, capacity * 2),
      dout(dev, capacity * 2), dout2(dev, capacity * 2);

  double worst_h = 0, worst_da = 0, worst_dg = 0;
  // The true block rows: none, one, a partial count, and the whole capacity.
  for (int64_t rows : {int64_t{0}, int64_t{1}, cap_rows / 2 + 1, cap_rows}) {
    if (rows > cap_rows) continue;
    INFO("block_rows " << rows << " of " << cap_rows);
    const int64_t n = rows * B * F;
    upload(ws.state().block_rows, std::vector<int32_t>{int32_t(rows)});
    RoutingArgs args = ws.args();

    // Glu: h = act(a) · g.
    upload(da_buf.get(), a.bits);
    upload(dg_buf.get(), g.bits);
    dev.fill_u8(dout.get(), 0xff, capacity * 2);
    args.x = da_buf.get();
    args.aux = dg_buf.get();
    args.y = dout.get();
    launch_routing(cache(), glu, args, nullptr);
    dev.synchronize();
    {
      const auto h = download<uint16_t>(dout.get(), capacity);
      const auto ref = reference::glu(act, std::span(a.values).first(n), std::span(g.values).first(n));
      int64_t unwritten = 0, clobbered = 0;
      for (int64_t i = 0; i < n; ++i) unwritten += h[i] == kPoison;
      for (int64_t i = n; i < capacity; ++i) clobbered += h[i] != kPoison;
      const double err = n ? relative_error(ref, h, n, c.dtype) : 0.0;
      INFO("glu relative Frobenius error " << err);
      CHECK(unwritten == 0);
      CHECK(clobbered == 0);
      CHECK(err <= tol);
      worst_h = std::max(worst_h, err);
    }
    // Glu without g: h = act(a), the plain layer's activation recomputed (LayerOptions::recompute).
    dev.fill_u8(dout.get(), 0xff, capacity * 2);
    args.aux = nullptr;
    launch_routing(cache(), glu, args, nullptr);
    dev.synchronize();
    {
      const auto h = download<uint16_t>(dout.get(), capacity);
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i) ref[i] = reference::activation(act, a.values[i]);
      int64_t unwritten = 0, clobbered = 0;
      for (int64_t i = 0; i < n; ++i) unwritten += h[i] == kPoison;
      for (int64_t i = n; i < capacity; ++i) clobbered += h[i] != kPoison;
      const double err = n ? relative_error(ref, h, n, c.dtype) : 0.0;
      INFO("glu without g: relative Frobenius error " << err);
      CHECK(unwritten == 0);
      CHECK(clobbered == 0);
      CHECK(err <= tol);
    }

    // GluGrad: da = dh · g · act'(a), dg = dh · act(a), into separate buffers and into its inputs'.
    const reference::GluGrad ref = reference::glu_grad(act, std::span(dh.values).first(n),
                                                       std::span(a.values).first(n), std::span(g.values).first(n));
    for (Outputs o : {Outputs::Separate, Outputs::DaInDhDgInG, Outputs::DaInADgInDh}) {
      INFO("outputs " << int(o));
      upload(da_buf.get(), a.bits);
      upload(dg_buf.get(), g.bits);
      upload(ddh_buf.get(), dh.bits);
      args.x = ddh_buf.get();
      args.aux = da_buf.get();
      args.x2 = dg_buf.get();
      switch (o) {
        case Outputs::Separate:
          dev.fill_u8(dout.get(), 0xff, capacity * 2);
          dev.fill_u8(dout2.get(), 0xff, capacity * 2);
          args.y = dout.get(), args.y2 = dout2.get();
          break;
        case Outputs::DaInDhDgInG: args.y = ddh_buf.get(), args.y2 = dg_buf.get(); break;
        case Outputs::DaInADgInDh: args.y = da_buf.get(), args.y2 = ddh_buf.get(); break;
      }
      launch_routing(cache(), grad, args, nullptr);
      dev.synchronize();
      const auto d_a = download<uint16_t>(args.y, capacity), d_g = download<uint16_t>(args.y2, capacity);
      // Past the true block rows the output buffers hold what they held: poison, or the input there.
      const std::vector<uint16_t>& was_a = o == Outputs::Separate ? std::vector<uint16_t>(capacity, kPoison)
                                           : o == Outputs::DaInDhDgInG ? dh.bits
                                                                       : a.bits;
      const std::vector<uint16_t>& was_g = o == Outputs::Separate      ? std::vector<uint16_t>(capacity, kPoison)
                                           : o == Outputs::DaInDhDgInG ? g.bits
                                                                       : dh.bits;
      int64_t unwritten = 0, clobbered = 0;
      if (o == Outputs::Separate)
        for (int64_t i = 0; i < n; ++i) unwritten += (d_a[i] == kPoison) + (d_g[i] == kPoison);
      for (int64_t i = n; i < capacity; ++i) clobbered += (d_a[i] != was_a[i]) + (d_g[i] != was_g[i]);
      const double err_a = n ? relative_error(ref.da, d_a, n, c.dtype) : 0.0;
      const double err_g = n ? relative_error(ref.dg, d_g, n, c.dtype) : 0.0;
      INFO("glu_grad relative Frobenius errors: da " << err_a << ", dg " << err_g);
      CHECK(unwritten == 0);
      CHECK(clobbered == 0);
      CHECK(err_a <= tol);
      CHECK(err_g <= tol);
      worst_da = std::max(worst_da, err_a);
      worst_dg = std::max(worst_dg, err_g);
      args.x2 = nullptr, args.y2 = nullptr;
    }
  }
  MESSAGE(describe(c) << ": worst relative errors h " << worst_h << ", da " << worst_da << ", dg " << worst_dg
                      << " (tolerance " << tol << ")");
}

}  // namespace

TEST_CASE("glu and glu_grad: every activation, both dtypes, against the fp64 reference") {
  for (Activation act : {Activation::Silu, Activation::GeluTanh, Activation::Relu, Activation::None})
    for (DType d : {DType::BF16, DType::FP16}) run({128, 256, 4, 2, 300, d, act});
}

TEST_CASE("glu and glu_grad: block sizes and widths") {
  run({64, 64, 1, 1, 1, DType::BF16, Activation::Silu});      // one block row of one block
  run({64, 448, 8, 2, 777, DType::BF16, Activation::GeluTanh});  // F/B = 7 blocks per row
  run({256, 512, 8, 3, 1000, DType::FP16, Activation::Silu});
  run({128, 1408, 16, 6, 1024, DType::BF16, Activation::Silu});  // fine-grained's ffn
}

TEST_CASE("glu: element offsets past 2^31 (64-bit indexing), the tail written and nothing after it") {
  // 2080 block rows of 128 × 8192: 2.18e9 elements of capacity. Constant inputs (a byte pattern): the
  // check downloads only the region around the end of the valid blocks.
  Device& dev = device();
  MoeShape shape;
  shape.hidden = 64;
  shape.ffn = 8192;
  shape.experts = 8;
  shape.top_k = 1;
  shape.block = 128;
  shape.activation = Activation::Silu;
  const KernelSpec spec = routing_spec(shape, Op::Glu, arch());
  const int64_t B = 128, F = 8192, cap_rows = 2080, capacity = cap_rows * B * F, rows = cap_rows - 3;
  REQUIRE(capacity > (int64_t{1} << 31));
  if (dev.properties().global_bytes < 3 * capacity * 2 + (int64_t{2} << 30)) {
    MESSAGE("skipped: needs " << (3 * capacity * 2 >> 30) << " GiB of device memory");
    return;
  }
  DeviceBuffer a(dev, capacity * 2), g(dev, capacity * 2), h(dev, capacity * 2), block_rows(dev, 4);
  dev.fill_u8(a.get(), 0x3f, capacity * 2);  // bf16 0x3f3f = 0.74609375
  dev.fill_u8(g.get(), 0xbf, capacity * 2);  // bf16 0xbfbf = −1.4921875
  dev.fill_u8(h.get(), 0xff, capacity * 2);
  upload(block_rows.get(), std::vector<int32_t>{int32_t(rows)});
  RoutingArgs args{};
  args.s.block_rows = static_cast<int32_t*>(block_rows.get());
  args.max_rows = int32_t(cap_rows * B);
  args.x = a.get();
  args.aux = g.get();
  args.y = h.get();
  launch_routing(cache(), spec, args, nullptr);
  dev.synchronize();
  const int64_t n = rows * B * F, window = int64_t{1} << 20;
  const auto tail = download<uint16_t>(static_cast<char*>(h.get()) + (n - window) * 2, 2 * window);
  const double x = reference::from_bf16(0x3f3f), y = reference::from_bf16(0xbfbf);
  const double want = reference::activation(Epilogue::Silu, x) * y;
  int64_t wrong = 0, clobbered = 0;
  for (int64_t i = 0; i < window; ++i) wrong += !(std::abs(reference::from_bf16(tail[i]) - want) <= 1e-2 * std::abs(want));
  for (int64_t i = window; i < 2 * window; ++i) clobbered += tail[i] != kPoison;
  CHECK(wrong == 0);
  CHECK(clobbered == 0);
  const auto head = download<uint16_t>(h.get(), 1024);
  int64_t wrong_head = 0;
  for (uint16_t v : head) wrong_head += v != tail[0];
  CHECK(wrong_head == 0);
}
