// The product check shared by the SIMT and Hopper product tests: random operands and topology, poisoned
// output, fp64 reference, relative Frobenius error, every element written and nothing past T_pad.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <initializer_list>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dmoe/products.hpp"
#include "test_util.hpp"

namespace dmoe::test {

// Every operand layout (trans_a, trans_b), and the layouts the dMoE schedule uses: SDD NT, DSD NN,
// DSD TN, DDS NN, DDS NT.
inline const std::vector<std::pair<bool, bool>> kAllTrans = {{false, false}, {false, true}, {true, false}, {true, true}};
inline const std::vector<std::tuple<Op, bool, bool>> kSchedule = {{Op::SDD, false, true}, {Op::DSD, false, false},
                                                                  {Op::DSD, true, false}, {Op::DDS, false, false},
                                                                  {Op::DDS, false, true}};

struct Case {
  Op op;
  bool trans_a, trans_b;
  DType dtype = DType::BF16;
  int32_t block = 128, hidden = 256, ffn = 256;
  std::vector<int64_t> counts = {130, 0, 257, 64};  // an empty expert, counts off the block multiple
  TileConfig tile{};
  int32_t extra_block_rows = 0;  // row capacity beyond the true T_pad
  Epilogue epilogue = Epilogue::None;  // SDD only
  bool save_pre = false;               // activation epilogues: also write the pre-activation to aux
  bool gather = false;                 // SDD NT/NN: A's rows gathered from a token matrix through a row map
  bool gated = false;                  // SDD: h = act(A·B)·(A·B2); save_pre keeps both pre-activations
  bool scatter = false;                // DSD NN: output rows written to token rows through a row map
};

inline std::string describe(const Case& c) {
  return std::string(to_string(c.op)) + (c.trans_a ? "t" : "n") + (c.trans_b ? "t" : "n") + " " +
         std::string(to_string(c.dtype)) + " b" + std::to_string(c.block) + " h" + std::to_string(c.hidden) +
         " f" + std::to_string(c.ffn) + " e" + std::to_string(c.counts.size()) + " " +
         std::string(to_string(c.tile.mma)) + " tile " + std::to_string(c.tile.m) + "x" + std::to_string(c.tile.n) +
         "x" + std::to_string(c.tile.k) + "w" + std::to_string(c.tile.warps) + "s" + std::to_string(c.tile.stages) +
         "g" + std::to_string(c.tile.group) + (c.tile.pingpong ? "pp" : "") + "c" + std::to_string(c.tile.cluster) +
         (c.tile.store_chunks ? "st" + std::to_string(c.tile.store_chunks) : "") + (c.tile.act_warps ? "aw" : "") + " extra" + std::to_string(c.extra_block_rows) + " epilogue " + std::string(to_string(c.epilogue)) +
         (c.save_pre ? "+pre" : "") + (c.gather ? " gather" : "") + (c.gated ? " gated" : "") +
         (c.scatter ? " scatter" : "");
}

// The kernel spec of a case on this GPU's arch.
inline KernelSpec spec_of(const Case& c) {
  KernelSpec spec;
  spec.op = c.op;
  spec.trans_a = c.trans_a;
  spec.trans_b = c.trans_b;
  spec.dtype = c.dtype;
  spec.arch = device_arch(device().properties());
  spec.block = c.block;
  spec.hidden = c.hidden;
  spec.ffn = c.ffn;
  spec.experts = static_cast<int32_t>(c.counts.size());
  spec.tile = c.tile;
  spec.epilogue = c.epilogue;
  spec.gather = c.gather;
  spec.scatter = c.scatter;
  spec.gated = c.gated;
  return spec;
}

// Whether the case's tile is valid for its op and shape (not every tile fits every op: DDS n within a
// block, …), for loops over tile shapes.
inline bool fits(const Case& c) {
  try {
    validate(spec_of(c));
    return true;
  } catch (const InvalidArgument&) {
    return false;
  }
}

inline void run(const Case& c) {
  INFO(describe(c));
  Device& dev = device();
  const KernelSpec spec = spec_of(c);

  const reference::HostTopology topo = reference::topology_from_counts(c.counts, c.block, c.ffn);
  const int32_t cap_rows = topo.block_rows + c.extra_block_rows;
  const int64_t capacity = int64_t(cap_rows) * c.block;
  const reference::ProductShapes s = reference::product_shapes(spec, topo, capacity);
  const bool a_sparse = c.op == Op::DSD, b_sparse = c.op == Op::DDS;
  const int64_t bb = int64_t(c.block) * c.block;
  // Sparse operands are sized for the capacity too, like a real layer's buffers.
  const int64_t cap_blocks = int64_t(cap_rows) * (c.ffn / c.block);
  HostOperand a = random_operand(a_sparse ? cap_blocks * bb : s.a_rows * s.a_cols, c.dtype);
  // A gathering SDD reads A's row r as row map[r] of a token matrix x (fewer rows than A, rows repeated as
  // with top-k > 1); padding rows and rows past T_pad map to −1 and must read as zeros. The reference sees
  // the materialized A.
  std::vector<int32_t> row_map;
  HostOperand x;
  if (c.gather) {
    REQUIRE((c.op == Op::SDD && !c.trans_a));
    int64_t tokens = 0;
    for (int64_t n : c.counts) tokens += n;
    tokens = std::max<int64_t>(1, tokens / 2 + 3);
    x = random_operand(tokens * c.hidden, c.dtype);
    row_map.assign(size_t(capacity), -1);
    std::uniform_int_distribution<int32_t> pick(0, int32_t(tokens - 1));
    int64_t start = 0;
    for (int64_t n : c.counts) {
      for (int64_t j = 0; j < n; ++j) row_map[size_t(start + j)] = pick(rng());
      start += (n + c.block - 1) / c.block * c.block;
    }
    for (int64_t r = 0; r < capacity; ++r)
      for (int64_t h = 0; h < c.hidden; ++h) {
        const int32_t t = row_map[size_t(r)];
        a.values[size_t(r * c.hidden + h)] = t < 0 ? 0.0f : x.values[size_t(t * c.hidden + h)];
      }
    a.bits = x.bits;  // what the device reads
  }
  const HostOperand b = random_operand(b_sparse ? cap_blocks * bb : s.b_rows * s.b_cols, c.dtype);
  const HostOperand b2 = c.gated ? random_operand(s.b_rows * s.b_cols, c.dtype) : HostOperand{};  // the gate's
  const int64_t c_elems = c.op == Op::SDD ? cap_blocks * bb : s.c_rows * s.c_cols;

  DeviceTopology dtopo(dev, topo, cap_rows);
  DeviceBuffer da(dev, a.bits.size() * 2), db(dev, b.bits.size() * 2), dc(dev, c_elems * 2);
  dev.copy_to_device(da.get(), a.bits.data(), a.bits.size() * 2);
  dev.copy_to_device(db.get(), b.bits.data(), b.bits.size() * 2);
  dev.fill_u8(dc.get(), 0xff, c_elems * 2);  // 0xffff is NaN in bf16 and fp16: unwritten elements show

  // The epilogue's operand: the saved pre-activation (random, read by gradient epilogues) or a poisoned
  // buffer the forward epilogue fills.
  const bool grad = is_gradient(c.epilogue);
  const HostOperand pre = grad ? random_operand(c_elems, c.dtype) : HostOperand{};
  DeviceBuffer daux, db2, daux2;
  if (grad || c.save_pre) {
    daux = DeviceBuffer(dev, c_elems * 2);
    if (grad) dev.copy_to_device(daux.get(), pre.bits.data(), c_elems * 2);
    else dev.fill_u8(daux.get(), 0xff, c_elems * 2);
  }
  if (c.gated) {
    db2 = DeviceBuffer(dev, b2.bits.size() * 2);
    dev.copy_to_device(db2.get(), b2.bits.data(), b2.bits.size() * 2);
    if (c.save_pre) {
      daux2 = DeviceBuffer(dev, c_elems * 2);
      dev.fill_u8(daux2.get(), 0xff, c_elems * 2);
    }
  }

  DeviceBuffer dmap;
  if (c.gather) {
    dmap = DeviceBuffer(dev, row_map.size() * 4);
    dev.copy_to_device(dmap.get(), row_map.data(), row_map.size() * 4);
  }
  // A scattering DSD writes output row r to token row map[r] of a [tokens, H] C: a random one-to-one map
  // of the real rows onto the tokens (padding rows and rows past T_pad −1); every token row must be
  // written, with its row's values, and nothing else.
  std::vector<int32_t> scatter_map;
  DeviceBuffer dscatter, dtok;
  int64_t tokens = 0;
  if (c.scatter) {
    REQUIRE((c.op == Op::DSD && !c.trans_a && !c.trans_b));
    for (int64_t n : c.counts) tokens += n;
    std::vector<int32_t> perm(static_cast<size_t>(tokens));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    scatter_map.assign(size_t(capacity), -1);
    int64_t start = 0, next = 0;
    for (int64_t n : c.counts) {
      for (int64_t j = 0; j < n; ++j) scatter_map[size_t(start + j)] = perm[size_t(next++)];
      start += (n + c.block - 1) / c.block * c.block;
    }
    dscatter = DeviceBuffer(dev, scatter_map.size() * 4);
    dev.copy_to_device(dscatter.get(), scatter_map.data(), scatter_map.size() * 4);
    dtok = DeviceBuffer(dev, std::max<int64_t>(1, tokens) * c.hidden * 2);
    dev.fill_u8(dtok.get(), 0xff, std::max<int64_t>(1, tokens) * c.hidden * 2);
  }
  ProductArgs args{da.get(), db.get(), c.scatter ? dtok.get() : dc.get(), dtopo.view, cap_rows, daux.get(),
                   static_cast<const int32_t*>(dmap.get()), db2.get(), daux2.get(),
                   static_cast<const int32_t*>(dscatter.get())};
  launch_product(cache(), spec, args, nullptr);
  dev.synchronize();

  const std::vector<double> ref = reference::product(spec, topo, capacity, a.values, b.values);
  if (c.scatter) {
    std::vector<uint16_t> out_bits(size_t(tokens * c.hidden));
    dev.copy_to_host(out_bits.data(), dtok.get(), out_bits.size() * 2);
    std::vector<double> want(out_bits.size()), got(out_bits.size());
    for (int64_t r = 0; r < capacity; ++r)
      if (const int32_t t = scatter_map[size_t(r)]; t >= 0)
        for (int64_t h = 0; h < c.hidden; ++h) want[size_t(t * c.hidden + h)] = ref[size_t(r * s.c_cols + h)];
    int64_t unwritten = 0;
    for (size_t i = 0; i < out_bits.size(); ++i) {
      got[i] = c.dtype == DType::BF16 ? reference::from_bf16(out_bits[i]) : reference::from_fp16(out_bits[i]);
      unwritten += std::isnan(got[i]);
    }
    CHECK(unwritten == 0);
    const double err = reference::relative_error(want, got);
    INFO("relative Frobenius error " << err);
    CHECK(err < (c.dtype == DType::BF16 ? 1e-2 : 2e-3));
    CHECK(err > 0);
    MESSAGE(describe(c) << ": scattered rows rel err " << err);
    return;
  }
  const std::vector<double> ref_gate =
      c.gated ? reference::product(spec, topo, capacity, a.values, b2.values) : std::vector<double>{};
  std::vector<double> expected = ref;
  for (int64_t i = 0; i < int64_t(expected.size()); ++i) {
    if (grad) expected[i] = ref[i] * reference::activation_grad(c.epilogue, pre.values[i]);
    else if (c.epilogue != Epilogue::None) expected[i] = reference::activation(c.epilogue, ref[i]);
    if (c.gated) expected[i] *= ref_gate[i];
  }

  // Compares a device output with its reference over the valid region (SDD's true blocks; the dense
  // output up to the true T_pad) and checks that nothing past it was written.
  auto check = [&](const void* dptr, const std::vector<double>& want, const char* what) {
    std::vector<uint16_t> out_bits(c_elems);
    dev.copy_to_host(out_bits.data(), dptr, c_elems * 2);
    std::vector<double> ref_valid, out_valid;
    int64_t unwritten = 0, clobbered = 0;
    for (int64_t i = 0; i < c_elems; ++i) {
      const bool valid = c.op == Op::SDD ? i < topo.blocks() * bb
                                         : i / s.c_cols < s.valid_rows && i % s.c_cols < s.valid_cols;
      if (!valid) {
        clobbered += out_bits[i] != 0xffff;  // nothing may be written past the true size
        continue;
      }
      const double v =
          c.dtype == DType::BF16 ? reference::from_bf16(out_bits[i]) : reference::from_fp16(out_bits[i]);
      unwritten += std::isnan(v);
      ref_valid.push_back(want[i]);
      out_valid.push_back(v);
    }
    INFO(what);
    CHECK(unwritten == 0);
    CHECK(clobbered == 0);
    const double err = reference::relative_error(ref_valid, out_valid);
    const double tol = c.dtype == DType::BF16 ? 1e-2 : 2e-3;
    INFO("relative Frobenius error " << err);
    CHECK(err < tol);
    CHECK(err > 0);  // an exact match would mean the reference saw the device's rounding: impossible here
    MESSAGE(describe(c) << ": " << what << " rel err " << err);
  };
  check(dc.get(), expected, "output");
  if (c.save_pre) check(daux.get(), ref, "saved pre-activation");
  if (c.gated && c.save_pre) check(daux2.get(), ref_gate, "saved gate pre-activation");
}

// Block sizes 64 and 256 (with empty and partial experts) for every product of the schedule, through a
// kernel family's run function.
template <class Run>
void check_block_sizes(Run&& run) {
  for (auto [op, ta, tb] : kSchedule) {
    Case c64{op, ta, tb};
    c64.block = 64;
    c64.counts = {1, 70, 0, 200, 64};
    run(c64);
    Case c256{op, ta, tb};
    c256.block = 256;
    c256.ffn = 512;
    c256.counts = {300, 0, 1};
    run(c256);
  }
}

// More than 65 536 padded rows (T_pad = 70 144) for every product of the schedule.
template <class Run>
void check_many_rows(Run&& run) {
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.hidden = 128;
    c.ffn = 256;
    c.counts = {30000, 0, 25000, 15001};
    run(c);
  }
}

// Fused SDD epilogues (default: every one), forward ones with and without the kept pre-activation.
template <class Run>
void check_epilogues(Run&& run,
                     std::initializer_list<Epilogue> epilogues = {Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu,
                                                                  Epilogue::GeluTanhGrad, Epilogue::SiluGrad,
                                                                  Epilogue::ReluGrad}) {
  for (Epilogue e : epilogues)
    for (bool save_pre : {false, true}) {
      if (is_gradient(e) && save_pre) continue;
      Case c{Op::SDD, false, true};
      c.hidden = 512;
      c.counts = {700, 0, 129, 1000};
      c.epilogue = e;
      c.save_pre = save_pre;
      run(c);
    }
}

}  // namespace dmoe::test
