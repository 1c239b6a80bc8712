// Helpers shared by the GPU tests: random operands, device upload of a topology.
#pragma once

#include <dlfcn.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dmoe/args.cuh"
#include "dmoe/driver.hpp"
#include "dmoe/kernel_cache.hpp"
#include "dmoe/reference.hpp"

namespace dmoe::test {

// The GPU the test program runs on, and its kernel cache (one per process).
inline Device& device() {
  static Device dev(0);
  return dev;
}

inline KernelCache& cache() {
  static KernelCache kc(device());
  return kc;
}

inline Arch arch() { return device_arch(device().properties()); }

// A stream of a context that is not the device's primary one: a second context created through the
// driver directly (dmoe itself only uses primary contexts), for the "stream from another context" checks.
// Leaves the calling thread's current context as it was.
class ForeignStream {
 public:
  explicit ForeignStream(int ordinal = 0) {
    lib_ = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) throw std::runtime_error(std::string("ForeignStream: ") + dlerror());
    load(create_, "cuCtxCreate_v2"), load(destroy_, "cuCtxDestroy_v2"), load(push_, "cuCtxPushCurrent_v2");
    load(pop_, "cuCtxPopCurrent_v2"), load(stream_create_, "cuStreamCreate");
    load(stream_destroy_, "cuStreamDestroy_v2"), load(device_get_, "cuDeviceGet");
    int dev = 0;
    check(device_get_(&dev, ordinal), "cuDeviceGet");
    check(create_(&ctx_, 0, dev), "cuCtxCreate");  // pushed: current on this thread
    check(stream_create_(&stream_, 0), "cuStreamCreate");
    void* popped = nullptr;
    check(pop_(&popped), "cuCtxPopCurrent");
  }
  ~ForeignStream() {
    void* popped = nullptr;
    if (push_(ctx_) == 0) stream_destroy_(stream_), pop_(&popped);
    destroy_(ctx_);
  }
  ForeignStream(const ForeignStream&) = delete;
  ForeignStream& operator=(const ForeignStream&) = delete;
  Stream get() const { return static_cast<Stream>(stream_); }

 private:
  template <class F>
  void load(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(lib_, name));
    if (!f) throw std::runtime_error(std::string("ForeignStream: libcuda has no ") + name);
  }
  static void check(int r, const char* call) {
    if (r != 0) throw std::runtime_error(std::string("ForeignStream: ") + call + " failed with " + std::to_string(r));
  }
  void* lib_ = nullptr;  // never closed: the driver outlives it
  void* ctx_ = nullptr;
  void* stream_ = nullptr;
  int (*create_)(void**, unsigned, int) = nullptr;
  int (*destroy_)(void*) = nullptr;
  int (*push_)(void*) = nullptr;
  int (*pop_)(void**) = nullptr;
  int (*stream_create_)(void**, unsigned) = nullptr;
  int (*stream_destroy_)(void*) = nullptr;
  int (*device_get_)(int*, int) = nullptr;
};

template <class T>
std::vector<T> download(const void* src, int64_t n) {
  std::vector<T> v(n);
  if (n > 0) device().copy_to_host(v.data(), src, n * sizeof(T));
  return v;
}

template <class T>
void upload(void* dst, const std::vector<T>& v) {
  if (!v.empty()) device().copy_to_device(dst, v.data(), v.size() * sizeof(T));
}

inline std::mt19937_64& rng() {
  static std::mt19937_64 gen{std::random_device{}()};
  return gen;
}

// Uniform(-1, 1) values already rounded to the element type, as float (for the reference) and as bits.
struct HostOperand {
  std::vector<float> values;
  std::vector<uint16_t> bits;
};

inline HostOperand random_operand(int64_t n, DType dtype) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  HostOperand op;
  op.values.resize(n);
  op.bits.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    float v = dist(rng());
    if (v == 0.f) v = 0.5f;  // never zeros
    op.bits[i] = dtype == DType::BF16 ? reference::to_bf16(v) : reference::to_fp16(v);
    op.values[i] = dtype == DType::BF16 ? reference::from_bf16(op.bits[i]) : reference::from_fp16(op.bits[i]);
  }
  return op;
}

// The topology on the device: its buffers and the Topology view over them.
struct DeviceTopology {
  DeviceBuffer row_indices, column_indices, offsets, column_indices_t, offsets_t, block_offsets_t, block_rows;
  Topology view{};

  DeviceTopology(const Device& dev, const reference::HostTopology& t, int32_t capacity_block_rows) {
    auto upload = [&](DeviceBuffer& buf, const std::vector<int32_t>& v, size_t min_count) {
      std::vector<int32_t> padded = v;
      padded.resize(std::max(v.size(), min_count), -1);  // capacity past T_pad: garbage the kernel must skip
      buf = DeviceBuffer(dev, std::max<size_t>(padded.size(), 1) * sizeof(int32_t));
      if (!padded.empty()) dev.copy_to_device(buf.get(), padded.data(), padded.size() * sizeof(int32_t));
      return static_cast<const int32_t*>(buf.get());
    };
    const size_t fb = t.ffn / t.block;
    view.row_indices = upload(row_indices, t.row_indices, capacity_block_rows * fb);
    view.column_indices = upload(column_indices, t.column_indices, capacity_block_rows * fb);
    view.offsets = upload(offsets, t.offsets, capacity_block_rows + 1);
    view.column_indices_t = upload(column_indices_t, t.column_indices_t, 0);
    view.offsets_t = upload(offsets_t, t.offsets_t, 0);
    view.block_offsets_t = upload(block_offsets_t, t.block_offsets_t, 0);
    view.block_rows = upload(block_rows, std::vector<int32_t>{t.block_rows}, 1);
  }
};

}  // namespace dmoe::test
