#include "dmoe/driver.hpp"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string_view>
#include <utility>

#include "dmoe/spec.hpp"  // InvalidArgument

static_assert(CUDA_VERSION >= 13000, "dmoe's driver table follows the CUDA 13 entry points");

namespace dmoe {

CudaError::CudaError(std::string call_, int code_, const std::string& message)
    : std::runtime_error(message), call(std::move(call_)), code(code_) {}

namespace {

// Entry points, each looked up by its base name at CUDA_VERSION. cuda.h maps most base names to the
// prototype cuGetProcAddress returns for that version (cuMemAlloc -> cuMemAlloc_v2), so the member and its
// type follow the macro. ENTRY_AS covers the base names whose CUDA 13 entry point cuda.h declares only
// under another name, with a different signature: the pointer must have the signature the driver returns.
#define DMOE_DRIVER_ENTRIES(ENTRY, ENTRY_AS)                                                  \
  ENTRY(cuGetErrorName)                                                                       \
  ENTRY(cuGetErrorString)                                                                     \
  ENTRY(cuInit)                                                                               \
  ENTRY(cuDriverGetVersion)                                                                   \
  ENTRY(cuDeviceGetCount)                                                                     \
  ENTRY(cuDeviceGet)                                                                          \
  ENTRY(cuDeviceGetName)                                                                      \
  ENTRY(cuDeviceGetAttribute)                                                                 \
  ENTRY(cuDeviceTotalMem)                                                                     \
  ENTRY(cuDevicePrimaryCtxRetain)                                                             \
  ENTRY(cuDevicePrimaryCtxRelease)                                                            \
  ENTRY(cuCtxSetCurrent)                                                                      \
  ENTRY(cuCtxGetCurrent)                                                                      \
  ENTRY_AS(cuCtxGetDevice, cuCtxGetDevice_v2)     /* CUDA 13: takes the context */            \
  ENTRY_AS(cuCtxSynchronize, cuCtxSynchronize_v2) /* CUDA 13: takes the context */            \
  ENTRY(cuStreamCreate)                                                                       \
  ENTRY(cuStreamDestroy)                                                                      \
  ENTRY(cuStreamSynchronize)                                                                  \
  ENTRY_AS(cuStreamGetCtx, cuStreamGetCtx_v2) /* CUDA 12.5: also returns the green context */ \
  ENTRY(cuMemAlloc)                                                                           \
  ENTRY(cuMemFree)                                                                            \
  ENTRY(cuMemcpyHtoDAsync)                                                                    \
  ENTRY(cuMemcpyDtoHAsync)                                                                    \
  ENTRY(cuMemcpyDtoDAsync)                                                                    \
  ENTRY(cuMemsetD8Async)                                                                      \
  ENTRY(cuTensorMapEncodeTiled)                                                               \
  ENTRY(cuModuleLoadData)                                                                     \
  ENTRY(cuModuleUnload)                                                                       \
  ENTRY(cuModuleGetFunction)                                                                  \
  ENTRY(cuFuncGetAttribute)                                                                   \
  ENTRY(cuFuncSetAttribute)                                                                   \
  ENTRY(cuOccupancyMaxActiveClusters)                                                         \
  ENTRY(cuLaunchKernel)                                                                       \
  ENTRY(cuLaunchKernelEx)                                                                     \
  ENTRY(cuEventCreate)                                                                        \
  ENTRY(cuEventRecord)                                                                        \
  ENTRY(cuEventSynchronize)                                                                   \
  ENTRY(cuEventElapsedTime)                                                                   \
  ENTRY(cuEventDestroy)                                                                       \
  ENTRY(cuStreamBeginCapture)                                                                 \
  ENTRY(cuStreamEndCapture)                                                                   \
  ENTRY(cuGraphInstantiateWithFlags) /* the base name resolves to the 5-argument CUDA 11 form */ \
  ENTRY(cuGraphLaunch)                                                                        \
  ENTRY(cuGraphExecDestroy)                                                                   \
  ENTRY(cuGraphDestroy)

struct Driver {
#define DMOE_DECLARE(name) decltype(&::name) name = nullptr;
#define DMOE_DECLARE_AS(name, prototype) decltype(&::prototype) name = nullptr;
  DMOE_DRIVER_ENTRIES(DMOE_DECLARE, DMOE_DECLARE_AS)
#undef DMOE_DECLARE
#undef DMOE_DECLARE_AS
};

// "CUDA_ERROR_X (description)"; falls back to the number when the driver cannot name the code.
std::string describe(const Driver* d, CUresult r) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (d && d->cuGetErrorName && d->cuGetErrorName(r, &name) != CUDA_SUCCESS) name = nullptr;
  if (d && d->cuGetErrorString && d->cuGetErrorString(r, &text) != CUDA_SUCCESS) text = nullptr;
  if (!name) return fmt::format("CUresult {} (unrecognized error code)", static_cast<int>(r));
  return fmt::format("{} ({})", name, text ? text : "no description");
}

std::string call_failed(const Driver* d, const char* call, CUresult r) {
  return fmt::format("{}: {}", call, describe(d, r));
}

// cuGetProcAddress as the library exports it: the CUDA 12 form reports why a symbol is missing; the
// CUDA 11 form (exported unversioned) does not.
struct ProcAddress {
  PFN_cuGetProcAddress_v12000 v12 = nullptr;
  PFN_cuGetProcAddress_v11030 v11 = nullptr;

  // Sets *fn to `symbol` at CUDA_VERSION; returns "" or the NoGpu message naming the library at `path`.
  std::string get(const Driver& d, const char* path, const char* symbol, void** fn) const {
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
    const CUresult r = v12 ? v12(symbol, fn, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &status)
                           : v11(symbol, fn, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT);
    if (r == CUDA_SUCCESS && status == CU_GET_PROC_ADDRESS_SUCCESS && *fn) return {};
    const std::string why = r != CUDA_SUCCESS ? call_failed(&d, "cuGetProcAddress", r)
                            : status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT ? "version not sufficient"
                                                                                   : "symbol not found";
    return fmt::format("no CUDA driver: {} does not provide {} for CUDA {}.{} ({}); is the driver older?",
                       path, symbol, CUDA_VERSION / 1000, CUDA_VERSION % 1000 / 10, why);
  }
};

// Fills `d` from the library at `path` and initializes the driver; returns "" or the NoGpu message.
// The library is never closed: the driver owns threads and state that must outlive any handle to it.
std::string load(const char* path, Driver& d) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return fmt::format("no CUDA driver: cannot load {} ({})", path, dlerror());
  ProcAddress proc;
  proc.v12 = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(lib, "cuGetProcAddress_v2"));
  if (!proc.v12) proc.v11 = reinterpret_cast<PFN_cuGetProcAddress_v11030>(dlsym(lib, "cuGetProcAddress"));
  if (!proc.v12 && !proc.v11) return fmt::format("no CUDA driver: {} has no cuGetProcAddress", path);

  // #name is the unexpanded base name ("cuMemAlloc"), which is what cuGetProcAddress expects.
#define DMOE_LOOKUP(name, ...) \
  if (std::string why = proc.get(d, path, #name, reinterpret_cast<void**>(&d.name)); !why.empty()) return why;
  DMOE_DRIVER_ENTRIES(DMOE_LOOKUP, DMOE_LOOKUP)
#undef DMOE_LOOKUP

  if (CUresult r = d.cuInit(0); r != CUDA_SUCCESS)
    return fmt::format("{}: {}", r == CUDA_ERROR_NO_DEVICE ? "no GPU" : "no usable CUDA driver",
                       call_failed(&d, "cuInit", r));
  int count = 0;
  if (CUresult r = d.cuDeviceGetCount(&count); r != CUDA_SUCCESS)
    return "no GPU: " + call_failed(&d, "cuDeviceGetCount", r);
  if (count == 0) return "no GPU: the CUDA driver reports no devices";
  return {};
}

// The process-wide table: published once a load succeeds and never freed, since objects destroyed at
// exit may still call into it. Until then every use retries, reading DMOE_LIBCUDA again.
std::atomic<const Driver*> g_driver{nullptr};
std::mutex g_load_mutex;

[[gnu::noinline]] const Driver& load_process_driver() {
  std::lock_guard lock(g_load_mutex);
  if (const Driver* d = g_driver.load(std::memory_order_acquire)) return *d;
  const char* env = std::getenv("DMOE_LIBCUDA");
  auto d = std::make_unique<Driver>();
  if (std::string why = load(env && *env ? env : "libcuda.so.1", *d); !why.empty()) throw NoGpu(why);
  g_driver.store(d.get(), std::memory_order_release);
  return *d.release();
}

const Driver& driver() {
  if (const Driver* d = g_driver.load(std::memory_order_acquire)) [[likely]]
    return *d;
  return load_process_driver();
}

[[noreturn, gnu::noinline, gnu::cold]] void throw_failed(const char* call, CUresult r,
                                                         std::string_view detail = {}) {
  std::string message = call_failed(g_driver.load(std::memory_order_acquire), call, r);
  if (!detail.empty()) fmt::format_to(std::back_inserter(message), " for {}", detail);
  throw CudaError(call, r, message);
}

[[noreturn, gnu::noinline, gnu::cold]] void throw_check(const char* check, CUresult code,
                                                        const std::string& what) {
  throw CudaError(check, code, fmt::format("{}: {}", check, what));
}

// Stringizing the unexpanded name keeps "cuMemAlloc" in messages while the call goes to cuMemAlloc_v2.
#define DMOE_CHECK(fn, ...)                                                              \
  do {                                                                                   \
    if (CUresult dmoe_r = driver().fn(__VA_ARGS__); dmoe_r != CUDA_SUCCESS) [[unlikely]] \
      throw_failed(#fn, dmoe_r);                                                         \
  } while (0)

CUdeviceptr device_ptr(const void* p) { return reinterpret_cast<CUdeviceptr>(p); }

// Makes `ctx` current on this thread; the query first keeps the common case (already current) cheap.
CUresult set_current(const Driver& d, CUcontext ctx) noexcept {
  CUcontext current = nullptr;
  if (CUresult r = d.cuCtxGetCurrent(&current); r != CUDA_SUCCESS) return r;
  return current == ctx ? CUDA_SUCCESS : d.cuCtxSetCurrent(ctx);
}

void make_current(CUcontext ctx) {
  if (CUresult r = set_current(driver(), ctx); r != CUDA_SUCCESS) [[unlikely]]
    throw_failed("cuCtxSetCurrent", r);
}

// For destructors: the driver if it is loaded, with `ctx` made current when possible. Errors are dropped
// because a destructor cannot report them, and at exit the driver may already be shutting down.
const Driver* driver_for_cleanup(CUcontext ctx) noexcept {
  const Driver* d = g_driver.load(std::memory_order_acquire);
  if (d && ctx) (void)set_current(*d, ctx);
  return d;
}

int device_attribute(CUdevice dev, CUdevice_attribute attr) {
  int value = 0;
  DMOE_CHECK(cuDeviceGetAttribute, &value, attr, dev);
  return value;
}

int function_attribute(CUfunction fn, CUfunction_attribute attr) {
  int value = 0;
  DMOE_CHECK(cuFuncGetAttribute, &value, attr, fn);
  return value;
}

}  // namespace

std::string detail::load_driver(const char* path) {
  Driver d;
  return load(path, d);
}

std::string gpu_unavailable_reason() {
  try {
    Device device(0);
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

// ---- Device ----

Device::Device(int ordinal) : ordinal_(ordinal) {
  const Driver& d = driver();
  int count = 0;
  DMOE_CHECK(cuDeviceGetCount, &count);
  if (ordinal < 0 || ordinal >= count)
    throw NoGpu(fmt::format("no GPU: device ordinal {} requested but the CUDA driver reports {} device{}",
                            ordinal, count, count == 1 ? "" : "s"));
  CUdevice dev = 0;
  DMOE_CHECK(cuDeviceGet, &dev, ordinal);
  cu_device_ = dev;

  char name[256] = {};
  DMOE_CHECK(cuDeviceGetName, name, static_cast<int>(sizeof name), dev);
  size_t global_bytes = 0;
  DMOE_CHECK(cuDeviceTotalMem, &global_bytes, dev);
  props_.name = name;
  props_.ordinal = ordinal;
  props_.cc_major = device_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  props_.cc_minor = device_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  props_.sm_count = device_attribute(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  props_.l2_bytes = device_attribute(dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  props_.global_bytes = static_cast<int64_t>(global_bytes);
  props_.max_shared_per_block_optin =
      device_attribute(dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  DMOE_CHECK(cuDriverGetVersion, &props_.driver_version);

  // Last, so nothing above can throw with the context retained.
  CUcontext ctx = nullptr;
  if (CUresult r = d.cuDevicePrimaryCtxRetain(&ctx, dev); r != CUDA_SUCCESS)
    throw_failed("cuDevicePrimaryCtxRetain", r, fmt::format("device {}", ordinal));
  ctx_ = ctx;
}

Device::~Device() {
  if (const Driver* d = driver_for_cleanup(nullptr)) (void)d->cuDevicePrimaryCtxRelease(cu_device_);
}

void Device::make_current() const { dmoe::make_current(ctx_); }

void* Device::alloc(size_t bytes) const {
  if (bytes == 0) return nullptr;
  make_current();
  CUdeviceptr p = 0;
  if (CUresult r = driver().cuMemAlloc(&p, bytes); r != CUDA_SUCCESS)
    throw_failed("cuMemAlloc", r, fmt::format("{} bytes on device {}", bytes, ordinal_));
  return reinterpret_cast<void*>(p);
}

void Device::free(void* ptr) const noexcept {
  if (!ptr) return;
  if (const Driver* d = driver_for_cleanup(ctx_)) (void)d->cuMemFree(device_ptr(ptr));
}

void Device::copy_to_device(void* dst, const void* src, size_t bytes, Stream stream) const {
  if (bytes == 0) return;
  make_current();
  DMOE_CHECK(cuMemcpyHtoDAsync, device_ptr(dst), src, bytes, stream);
}

void Device::copy_to_host(void* dst, const void* src, size_t bytes, Stream stream) const {
  if (bytes == 0) return;
  make_current();
  DMOE_CHECK(cuMemcpyDtoHAsync, dst, device_ptr(src), bytes, stream);
  DMOE_CHECK(cuStreamSynchronize, stream);  // the caller reads `dst` next
}

void Device::copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream) const {
  if (bytes == 0) return;
  make_current();
  DMOE_CHECK(cuMemcpyDtoDAsync, device_ptr(dst), device_ptr(src), bytes, stream);
}

void encode_tensor_map(TensorMap& map, bool bf16, int rank, const void* base, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box) {
  static_assert(sizeof(TensorMap) == sizeof(CUtensorMap) && alignof(TensorMap) == alignof(CUtensorMap));
  if (rank < 2 || rank > 3) throw CudaError("encode_tensor_map", CUDA_ERROR_INVALID_VALUE, "rank must be 2 or 3");
  const cuuint32_t unit[3] = {1, 1, 1};
  DMOE_CHECK(cuTensorMapEncodeTiled, reinterpret_cast<CUtensorMap*>(&map),
             bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, cuuint32_t(rank),
             const_cast<void*>(base), reinterpret_cast<const cuuint64_t*>(dims),
             reinterpret_cast<const cuuint64_t*>(strides), reinterpret_cast<const cuuint32_t*>(box), unit,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

void Device::fill_u8(void* dst, uint8_t value, size_t bytes, Stream stream) const {
  if (bytes == 0) return;
  make_current();
  DMOE_CHECK(cuMemsetD8Async, device_ptr(dst), value, bytes, stream);
}

void Device::synchronize(Stream stream) const {
  if (stream) {
    DMOE_CHECK(cuStreamSynchronize, stream);
  } else {
    DMOE_CHECK(cuCtxSynchronize, ctx_);
  }
}

void Device::check_stream(Stream stream) const {
  if (!stream) return;
  make_current();  // CU_STREAM_LEGACY and CU_STREAM_PER_THREAD resolve to the current context
  CUcontext ctx = nullptr;
  CUgreenCtx green = nullptr;
  DMOE_CHECK(cuStreamGetCtx, stream, &ctx, &green);
  if (ctx == ctx_) return;
  CUdevice owner = -1;
  std::string where = "a green context";
  if (ctx && driver().cuCtxGetDevice(&owner, ctx) == CUDA_SUCCESS)
    where = owner == cu_device_ ? fmt::format("another context of device {}", ordinal_)
                                : fmt::format("a context of CUDA device {}", owner);
  throw_check(
      "check_stream", CUDA_ERROR_INVALID_CONTEXT,
      fmt::format("the stream belongs to {}, not to the primary context of device {}", where, ordinal_));
}

// ---- OwnedStream ----

OwnedStream::OwnedStream(const Device& device) : device_(device) {
  device_.make_current();
  // Blocking (not CU_STREAM_NON_BLOCKING) so work on the legacy default stream still orders with it.
  DMOE_CHECK(cuStreamCreate, &stream_, CU_STREAM_DEFAULT);
}

OwnedStream::~OwnedStream() {
  if (const Driver* d = driver_for_cleanup(device_.context())) (void)d->cuStreamDestroy(stream_);
}

// ---- DeviceBuffer ----

DeviceBuffer::DeviceBuffer(const Device& device, size_t bytes)
    : device_(&device), ptr_(device.alloc(bytes)), bytes_(bytes) {}

DeviceBuffer::DeviceBuffer(const Device& device, size_t bytes, const Allocator& a) : device_(&device), alloc_(a) {
  if (!a.allocate != !a.deallocate)
    throw InvalidArgument(fmt::format("Allocator: {} is set but {} is null", a.allocate ? "allocate" : "deallocate",
                                      a.allocate ? "deallocate" : "allocate"));
  if (!a.allocate) {
    ptr_ = device.alloc(bytes);
    bytes_ = bytes;
    return;
  }
  if (bytes == 0) return;
  void* p = a.allocate(bytes, a.user);
  if (!p) throw std::bad_alloc();
  if (reinterpret_cast<uintptr_t>(p) % 256 != 0) {
    a.deallocate(p, bytes, a.user);
    throw InvalidArgument(fmt::format("Allocator: {} bytes came back at {}, not 256-byte aligned", bytes, p));
  }
  ptr_ = p;
  bytes_ = bytes;
}

void DeviceBuffer::release() noexcept {
  if (!ptr_) return;
  if (alloc_.deallocate) alloc_.deallocate(ptr_, bytes_, alloc_.user);
  else if (device_) device_->free(ptr_);
  ptr_ = nullptr;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : device_(std::exchange(other.device_, nullptr)),
      alloc_(std::exchange(other.alloc_, Allocator{})),
      ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    device_ = std::exchange(other.device_, nullptr);
    alloc_ = std::exchange(other.alloc_, Allocator{});
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

// ---- Module ----

Module::Module(const Device& device, const void* cubin, size_t bytes) : device_(device) {
  if (!cubin || bytes == 0) throw_check("cuModuleLoadData", CUDA_ERROR_INVALID_IMAGE, "empty kernel image");
  device_.make_current();
  DMOE_CHECK(cuModuleLoadData, &module_, cubin);
}

Module::~Module() {
  if (const Driver* d = driver_for_cleanup(device_.context())) (void)d->cuModuleUnload(module_);
}

LoadedFunction Module::function(const char* name, int dynamic_shared_bytes) const {
  // Without opting in, static plus dynamic shared memory is limited to 48 KiB per block.
  constexpr int kDefaultSharedLimit = 48 * 1024;
  device_.make_current();
  LoadedFunction fn;
  fn.context = device_.context();
  if (CUresult r = driver().cuModuleGetFunction(&fn.function, module_, name); r != CUDA_SUCCESS)
    throw_failed("cuModuleGetFunction", r, fmt::format("kernel '{}'", name));
  fn.registers = function_attribute(fn.function, CU_FUNC_ATTRIBUTE_NUM_REGS);
  fn.local_bytes = function_attribute(fn.function, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
  fn.static_shared_bytes = function_attribute(fn.function, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
  fn.max_threads = function_attribute(fn.function, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);

  if (dynamic_shared_bytes < 0)
    throw_check("Module::function", CUDA_ERROR_INVALID_VALUE,
                fmt::format("kernel '{}': dynamic shared memory of {} bytes is negative", name,
                            dynamic_shared_bytes));
  const int optin = device_.properties().max_shared_per_block_optin;
  const int64_t total = int64_t{fn.static_shared_bytes} + dynamic_shared_bytes;
  if (total > optin)
    throw_check(
        "Module::function", CUDA_ERROR_INVALID_VALUE,
        fmt::format("kernel '{}' needs {} bytes of shared memory per block ({} static + {} dynamic), but "
                    "device {} allows at most {}",
                    name, total, fn.static_shared_bytes, dynamic_shared_bytes, device_.properties().ordinal,
                    optin));
  if (total > kDefaultSharedLimit) {
    if (CUresult r = driver().cuFuncSetAttribute(fn.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                 dynamic_shared_bytes);
        r != CUDA_SUCCESS)
      throw_failed(
          "cuFuncSetAttribute", r,
          fmt::format("kernel '{}' raising dynamic shared memory to {} bytes", name, dynamic_shared_bytes));
  }
  fn.dynamic_shared_bytes = dynamic_shared_bytes;
  // A kernel compiled with __cluster_dims__: how many of its clusters the GPU holds at once (CTAs of a
  // cluster share a GPC, so this can be fewer than SMs / cluster), for persistent grids of whole waves.
  fn.cluster = std::max(1, function_attribute(fn.function, CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH));
  if (fn.cluster > 1) {
    CUlaunchConfig config{};
    config.gridDimX = static_cast<unsigned>(fn.cluster * device_.properties().sm_count);
    config.gridDimY = config.gridDimZ = 1;
    config.blockDimX = static_cast<unsigned>(fn.max_threads);
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = static_cast<unsigned>(dynamic_shared_bytes);
    if (CUresult r = driver().cuOccupancyMaxActiveClusters(&fn.max_active_clusters, fn.function, &config);
        r != CUDA_SUCCESS)
      throw_failed("cuOccupancyMaxActiveClusters", r, fmt::format("kernel '{}' (clusters of {})", name, fn.cluster));
    if (fn.max_active_clusters < 1)
      throw_check("Module::function", CUDA_ERROR_INVALID_CLUSTER_SIZE,
                  fmt::format("kernel '{}': no cluster of {} CTAs with {} bytes of shared memory each fits device {}",
                              name, fn.cluster, dynamic_shared_bytes, device_.properties().ordinal));
  }
  return fn;
}

// ---- launch ----

namespace {

[[noreturn, gnu::noinline, gnu::cold]] void throw_launch_limit(const char* what, unsigned value,
                                                               unsigned limit) {
  throw_check("launch", CUDA_ERROR_INVALID_VALUE,
              fmt::format("{} = {} is outside [1, {}]", what, value, limit));
}

// DMOE_PDL=0 launches programmatic kernels as plain ones (their grid-dependency instructions then do
// nothing): an A/B switch and an escape hatch. Read once.
bool programmatic_launches_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DMOE_PDL");
    return !(v && std::string_view(v) == "0");
  }();
  return enabled;
}

}  // namespace

void launch(const LoadedFunction& fn, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
            void** params, Stream stream) {
  constexpr unsigned kMaxGridX = (1u << 31) - 1, kMaxGridYZ = 65535;
  if (!fn.function || !fn.context) [[unlikely]]
    throw_check("launch", CUDA_ERROR_INVALID_HANDLE, "the function was not loaded");
  if (grid_x - 1 >= kMaxGridX) [[unlikely]]  // unsigned wrap-around also rejects 0
    throw_launch_limit("grid_x", grid_x, kMaxGridX);
  if (grid_y - 1 >= kMaxGridYZ) [[unlikely]]
    throw_launch_limit("grid_y", grid_y, kMaxGridYZ);
  if (grid_z - 1 >= kMaxGridYZ) [[unlikely]]
    throw_launch_limit("grid_z", grid_z, kMaxGridYZ);
  if (block_x - 1 >= static_cast<unsigned>(fn.max_threads)) [[unlikely]]
    throw_launch_limit("block_x", block_x, static_cast<unsigned>(fn.max_threads));
  make_current(fn.context);
  // Not on the legacy default stream (stream 0), whose implicit synchronization with other streams the
  // programmatic overlap is not documented to respect: a plain launch there.
  if (fn.programmatic && stream && programmatic_launches_enabled()) {
    CUlaunchAttribute attr{};
    attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig config{};
    config.gridDimX = grid_x, config.gridDimY = grid_y, config.gridDimZ = grid_z;
    config.blockDimX = block_x, config.blockDimY = 1, config.blockDimZ = 1;
    config.sharedMemBytes = static_cast<unsigned>(fn.dynamic_shared_bytes);
    config.hStream = stream;
    config.attrs = &attr;
    config.numAttrs = 1;
    DMOE_CHECK(cuLaunchKernelEx, &config, fn.function, params, nullptr);
    return;
  }
  DMOE_CHECK(cuLaunchKernel, fn.function, grid_x, grid_y, grid_z, block_x, 1, 1,
             static_cast<unsigned>(fn.dynamic_shared_bytes), stream, params, nullptr);
}

// ---- EventTimer ----

EventTimer::EventTimer(const Device& device) : device_(device) {
  device_.make_current();
  DMOE_CHECK(cuEventCreate, &start_, CU_EVENT_DEFAULT);
  if (CUresult r = driver().cuEventCreate(&stop_, CU_EVENT_DEFAULT); r != CUDA_SUCCESS) {
    (void)driver().cuEventDestroy(start_);  // the destructor does not run for a throwing constructor
    throw_failed("cuEventCreate", r);
  }
}

EventTimer::~EventTimer() {
  if (const Driver* d = driver_for_cleanup(nullptr)) {
    (void)d->cuEventDestroy(start_);
    (void)d->cuEventDestroy(stop_);
  }
}

void EventTimer::start(Stream stream) {
  device_.make_current();
  DMOE_CHECK(cuEventRecord, start_, stream);
}

void EventTimer::stop(Stream stream) {
  device_.make_current();
  DMOE_CHECK(cuEventRecord, stop_, stream);
}

float EventTimer::elapsed_ms() {
  DMOE_CHECK(cuEventSynchronize, stop_);
  float ms = 0;
  DMOE_CHECK(cuEventElapsedTime, &ms, start_, stop_);
  return ms;
}

// ---- CapturedGraph ----

CapturedGraph::CapturedGraph(const Device& device, Stream stream, const std::function<void()>& work)
    : device_(device) {
  if (!stream) throw CudaError("cuStreamBeginCapture", CUDA_ERROR_INVALID_VALUE, "cannot capture the legacy default stream");
  device_.make_current();
  DMOE_CHECK(cuStreamBeginCapture, stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  CUgraph graph = nullptr;
  try {
    work();
  } catch (...) {
    (void)driver().cuStreamEndCapture(stream, &graph);  // leave the stream usable
    if (graph) (void)driver().cuGraphDestroy(graph);
    throw;
  }
  DMOE_CHECK(cuStreamEndCapture, stream, &graph);
  CUgraphExec exec = nullptr;
  const CUresult r = driver().cuGraphInstantiateWithFlags(&exec, graph, 0);
  (void)driver().cuGraphDestroy(graph);
  if (r != CUDA_SUCCESS) throw_failed("cuGraphInstantiate", r);
  exec_ = exec;
}

CapturedGraph::~CapturedGraph() {
  if (const Driver* d = driver_for_cleanup(nullptr); d && exec_) (void)d->cuGraphExecDestroy(exec_);
}

void CapturedGraph::launch(Stream stream) const {
  device_.make_current();
  DMOE_CHECK(cuGraphLaunch, exec_, stream);
}

}  // namespace dmoe
