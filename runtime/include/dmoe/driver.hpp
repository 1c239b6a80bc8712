// dmoe/driver.hpp — the CUDA driver API, loaded at run time with dlopen("libcuda.so.1").
//
// dmoe links no CUDA driver library: the same binary builds and runs its CPU-side tests on machines
// without a driver and uses the GPU where there is one. Every call is checked; failures throw CudaError
// naming the call and the driver's error name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dmoe/args.cuh"

// Opaque driver handles, declared exactly as <cuda.h> declares them so both headers can coexist.
struct CUctx_st;
struct CUstream_st;
struct CUmod_st;
struct CUfunc_st;
struct CUevent_st;
struct CUgraphExec_st;

namespace dmoe {

using Stream = CUstream_st*;

// A driver call failed. `code` is the CUresult; `message` becomes what(), which reads e.g.
//   "cuModuleLoadData: CUDA_ERROR_INVALID_IMAGE (device kernel image is invalid)".
// Checks dmoe makes before calling the driver (launch limits, shared memory, stream context) throw it
// too, with `call` naming the check and `code` the CUresult the driver would have returned.
struct CudaError : std::runtime_error {
  CudaError(std::string call, int code, const std::string& message);
  std::string call;
  int code;
};

// No usable driver or GPU: libcuda.so.1 missing, cuInit failing, or no device. The message says which.
struct NoGpu : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Returns an empty string when Device(0) can be constructed, else the reason it cannot (for test skips).
// The driver is loaded once per process: each attempt reads DMOE_LIBCUDA (default "libcuda.so.1") until
// one succeeds, and the loaded driver then stays for the life of the process.
std::string gpu_unavailable_reason();

namespace detail {
// Loads the driver at `path` (a dlopen name or file), initializes it and counts devices, without touching
// the process-wide driver. Returns "" on success, else the NoGpu message. For tests and diagnostics.
std::string load_driver(const char* path);
}  // namespace detail

struct DeviceProperties {
  std::string name;
  int ordinal = 0;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t l2_bytes = 0;
  int64_t global_bytes = 0;
  int max_shared_per_block_optin = 0;  // bytes a kernel may request after raising its limit
  int driver_version = 0;              // e.g. 13000
};

class Module;

// One GPU and its primary context. Construction loads the driver and retains the primary context of
// `ordinal`; it throws NoGpu when that is impossible. Not copyable; methods make the context current on
// the calling thread first.
class Device {
 public:
  explicit Device(int ordinal = 0);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const DeviceProperties& properties() const { return props_; }
  CUctx_st* context() const { return ctx_; }
  void make_current() const;

  // Device memory. alloc(0) returns nullptr.
  void* alloc(size_t bytes) const;
  void free(void* ptr) const noexcept;
  void copy_to_device(void* dst, const void* src, size_t bytes, Stream = nullptr) const;
  void copy_to_host(void* dst, const void* src, size_t bytes, Stream = nullptr) const;
  void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream = nullptr) const;  // async
  void fill_u8(void* dst, uint8_t value, size_t bytes, Stream = nullptr) const;  // poison, clear
  // Waits for `stream`; nullptr waits for all work in the context.
  void synchronize(Stream = nullptr) const;

  // Throws CudaError if `stream` does not belong to this device's context.
  void check_stream(Stream) const;

 private:
  int ordinal_;
  int cu_device_ = 0;  // the driver's CUdevice handle for ordinal_
  CUctx_st* ctx_ = nullptr;
  DeviceProperties props_;
};

// A stream owned by dmoe (destroyed with the object); dmoe also accepts caller-owned Stream handles.
class OwnedStream {
 public:
  explicit OwnedStream(const Device&);
  ~OwnedStream();
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  Stream get() const { return stream_; }

 private:
  const Device& device_;
  Stream stream_ = nullptr;
};

// Device memory from the caller: buffers dmoe holds on its behalf (a layer's) come from `allocate` and go
// back through `deallocate`; with allocate null, dmoe uses cuMemAlloc. allocate must return 256-byte
// aligned device memory of the device, or null (std::bad_alloc). Set both or neither.
struct Allocator {
  void* (*allocate)(size_t bytes, void* user) = nullptr;
  void (*deallocate)(void* ptr, size_t bytes, void* user) = nullptr;
  void* user = nullptr;
};

// A device buffer owned by dmoe: from cuMemAlloc, or from an Allocator (returned to it on destruction).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const Device&, size_t bytes);
  // Throws InvalidArgument for an allocator with one function set, or memory not 256-byte aligned.
  DeviceBuffer(const Device&, size_t bytes, const Allocator&);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&&) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&&) noexcept;
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void release() noexcept;
  const Device* device_ = nullptr;
  Allocator alloc_{};
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A kernel loaded from a cubin: its function handle and the attributes read once at load.
struct LoadedFunction {
  CUfunc_st* function = nullptr;
  CUctx_st* context = nullptr;  // the module's context, made current by launch()
  int registers = 0;
  int local_bytes = 0;
  int static_shared_bytes = 0;
  int dynamic_shared_bytes = 0;  // the limit raised once at load
  int max_threads = 0;
  int cluster = 1;              // CTAs per cluster (the kernel's __cluster_dims__)
  int max_active_clusters = 0;  // cluster > 1: clusters resident at once (cuOccupancyMaxActiveClusters)
  bool programmatic = false;    // a programmatic dependent launch (spec.hpp) on any stream but the legacy 0
};

// A module loaded from a cubin image into a device's context; unloaded on destruction.
class Module {
 public:
  Module(const Device&, const void* cubin, size_t bytes);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  // Looks up `name` and raises its dynamic shared-memory limit to `dynamic_shared_bytes` (once, here).
  LoadedFunction function(const char* name, int dynamic_shared_bytes) const;

 private:
  const Device& device_;
  CUmod_st* module_ = nullptr;
};

// Launches a 1-D/2-D/3-D grid. `params` is the driver's kernelParams array. Checks the grid and block
// against the hardware limits first (CudaError naming the value and the limit), then the launch status.
void launch(const LoadedFunction&, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
            void** params, Stream);

// Encodes a TMA tensor map (cuTensorMapEncodeTiled) over a tensor of 16-bit elements with 128-byte
// swizzle: dims[0] is the contiguous dimension, strides[i] the byte stride of dimension i + 1, box the
// tile one load brings. A host-only call (no context needed); throws CudaError naming the driver's error.
void encode_tensor_map(TensorMap& map, bool bf16, int rank, const void* base, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box);

// CUDA events for timing: elapsed milliseconds between two records on a stream.
class EventTimer {
 public:
  explicit EventTimer(const Device&);
  ~EventTimer();
  void start(Stream);
  void stop(Stream);
  float elapsed_ms();  // synchronizes on the stop event

 private:
  const Device& device_;
  CUevent_st* start_ = nullptr;
  CUevent_st* stop_ = nullptr;
};

// Captures the work `work` enqueues on `stream` (a non-default stream) into a CUDA graph and instantiates it;
// launch() replays it. Capture fails loudly if the work synchronizes with the host, which makes a
// capture the test that a sequence of launches needs no host synchronization.
class CapturedGraph {
 public:
  CapturedGraph(const Device&, Stream, const std::function<void()>& work);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  void launch(Stream) const;

 private:
  const Device& device_;
  CUgraphExec_st* exec_ = nullptr;
};

}  // namespace dmoe
