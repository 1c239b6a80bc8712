// The driver wrapper. CPU-side cases run everywhere; GPU-side cases skip, visibly, without a usable GPU.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dmoe/driver.hpp"
#include "test_util.hpp"

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Sets an environment variable for one scope, restoring the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A function that launch() must reject before touching the driver; its handles are never dereferenced.
dmoe::LoadedFunction fake_function(int max_threads) {
  dmoe::LoadedFunction fn;
  fn.function = reinterpret_cast<CUfunc_st*>(uintptr_t{0x10});
  fn.context = reinterpret_cast<CUctx_st*>(uintptr_t{0x20});
  fn.max_threads = max_threads;
  return fn;
}

std::string launch_error(const dmoe::LoadedFunction& fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx) {
  try {
    dmoe::launch(fn, gx, gy, gz, bx, nullptr, nullptr);
  } catch (const dmoe::CudaError& e) {
    CHECK(e.call == "launch");
    return e.what();
  }
  return "";
}

}  // namespace

// First in the file: DMOE_LIBCUDA is only read until a load succeeds, so this must run before any case
// that loads the real driver.
TEST_CASE("a missing libcuda makes Device throw NoGpu naming the library") {
  ScopedEnv env("DMOE_LIBCUDA", "/nonexistent/libcuda.so.1");
  const std::string reason = dmoe::gpu_unavailable_reason();
  if (reason.empty()) {
    MESSAGE("skipped: the driver was already loaded in this process, so DMOE_LIBCUDA is no longer read");
    return;
  }
  INFO(reason);
  CHECK(contains(reason, "no CUDA driver: cannot load /nonexistent/libcuda.so.1"));
  bool threw = false;
  try {
    dmoe::Device device(0);
  } catch (const dmoe::NoGpu& e) {
    threw = true;
    CHECK(std::string(e.what()) == reason);
  }
  CHECK(threw);
}

TEST_CASE("load_driver reports why a library cannot be used") {
  const std::string missing = dmoe::detail::load_driver("/nonexistent/libcuda.so.1");
  INFO(missing);
  CHECK(contains(missing, "no CUDA driver: cannot load /nonexistent/libcuda.so.1 ("));
  CHECK(contains(missing, "No such file"));

  // A real shared library that is not a CUDA driver.
  const std::string not_cuda = dmoe::detail::load_driver("libm.so.6");
  INFO(not_cuda);
  CHECK(not_cuda == "no CUDA driver: libm.so.6 has no cuGetProcAddress");
}

TEST_CASE("gpu_unavailable_reason agrees with Device(0)") {
  const std::string reason = dmoe::gpu_unavailable_reason();
  if (reason.empty()) {
    CHECK_NOTHROW(dmoe::Device(0));
    return;
  }
  MESSAGE("no GPU here: " << reason);
  CHECK((contains(reason, "no CUDA driver") || contains(reason, "no GPU") ||
         contains(reason, "no usable CUDA")));
  if (!std::getenv("DMOE_LIBCUDA")) CHECK((contains(reason, "libcuda") || contains(reason, "CUDA_ERROR_")));
  bool threw = false;
  try {
    dmoe::Device device(0);
  } catch (const std::exception& e) {
    threw = true;
    CHECK(std::string(e.what()) == reason);
  }
  CHECK(threw);
}

TEST_CASE("launch rejects grids and blocks outside the limits, naming value and limit") {
  const dmoe::LoadedFunction fn = fake_function(256);
  CHECK(launch_error(fn, 0, 1, 1, 32) == "launch: grid_x = 0 is outside [1, 2147483647]");
  CHECK(launch_error(fn, 1u << 31, 1, 1, 32) == "launch: grid_x = 2147483648 is outside [1, 2147483647]");
  CHECK(launch_error(fn, 1, 65536, 1, 32) == "launch: grid_y = 65536 is outside [1, 65535]");
  CHECK(launch_error(fn, 1, 1, 70000, 32) == "launch: grid_z = 70000 is outside [1, 65535]");
  CHECK(launch_error(fn, 1, 1, 1, 257) == "launch: block_x = 257 is outside [1, 256]");
  CHECK(launch_error(dmoe::LoadedFunction{}, 1, 1, 1, 32) == "launch: the function was not loaded");
}

TEST_CASE("CudaError keeps the call, the code and the message") {
  const dmoe::CudaError e("cuModuleLoadData", 200, "cuModuleLoadData: CUDA_ERROR_INVALID_IMAGE (x)");
  CHECK(e.call == "cuModuleLoadData");
  CHECK(e.code == 200);
  CHECK(std::string(e.what()) == "cuModuleLoadData: CUDA_ERROR_INVALID_IMAGE (x)");
}

// ---- GPU-side ----

#define DMOE_REQUIRE_GPU()                                                    \
  if (std::string reason = dmoe::gpu_unavailable_reason(); !reason.empty()) { \
    MESSAGE("skipped: " << reason);                                           \
    return;                                                                   \
  }

TEST_CASE("device properties are sane") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  const dmoe::DeviceProperties& p = device.properties();
  MESSAGE(p.name << ": sm_" << p.cc_major << p.cc_minor << ", " << p.sm_count << " SMs, driver "
                 << p.driver_version);
  CHECK(!p.name.empty());
  CHECK(p.ordinal == 0);
  CHECK(p.cc_major >= 8);
  CHECK(p.sm_count > 0);
  CHECK(p.l2_bytes > 0);
  CHECK(p.global_bytes > (int64_t{1} << 30));
  CHECK(p.max_shared_per_block_optin >= 48 * 1024);
  CHECK(p.driver_version >= 13000);
  CHECK(device.context() != nullptr);
}

TEST_CASE("an out-of-range ordinal throws NoGpu naming it and the count") {
  DMOE_REQUIRE_GPU();
  try {
    dmoe::Device device(1000);
    FAIL("Device(1000) did not throw");
  } catch (const dmoe::NoGpu& e) {
    INFO(e.what());
    CHECK(contains(e.what(), "ordinal 1000"));
    CHECK(contains(e.what(), "reports"));
  }
}

TEST_CASE("1 MiB of random bytes survive a round trip, on the default and an owned stream") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  dmoe::OwnedStream stream(device);
  std::vector<uint8_t> in(1 << 20);
  std::mt19937 rng(42);
  for (uint8_t& b : in) b = static_cast<uint8_t>(rng());
  for (dmoe::Stream s : {dmoe::Stream{nullptr}, stream.get()}) {
    dmoe::DeviceBuffer buffer(device, in.size());
    REQUIRE(buffer.get() != nullptr);
    CHECK(buffer.size() == in.size());
    std::vector<uint8_t> out(in.size());
    device.copy_to_device(buffer.get(), in.data(), in.size(), s);
    device.copy_to_host(out.data(), buffer.get(), out.size(), s);
    CHECK(out == in);
  }
  CHECK(device.alloc(0) == nullptr);
}

TEST_CASE("fill_u8 sets every byte") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  dmoe::DeviceBuffer buffer(device, 4096 + 3);
  device.fill_u8(buffer.get(), 0xAB, buffer.size());
  device.synchronize();
  std::vector<uint8_t> out(buffer.size());
  device.copy_to_host(out.data(), buffer.get(), out.size());
  CHECK(out == std::vector<uint8_t>(buffer.size(), 0xAB));

  dmoe::DeviceBuffer moved = std::move(buffer);
  CHECK(buffer.get() == nullptr);
  CHECK(moved.size() == out.size());
}

TEST_CASE("an owned stream passes check_stream, as does the default stream") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  dmoe::OwnedStream stream(device);
  CHECK(stream.get() != nullptr);
  CHECK_NOTHROW(device.check_stream(stream.get()));
  CHECK_NOTHROW(device.check_stream(nullptr));
  CHECK_NOTHROW(device.synchronize(stream.get()));
}

TEST_CASE("check_stream refuses a stream of another context, naming it") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  const dmoe::test::ForeignStream foreign;
  try {
    device.check_stream(foreign.get());
    FAIL("no error for a stream of another context");
  } catch (const dmoe::CudaError& e) {
    CHECK(std::string(e.what()).find("check_stream: the stream belongs to another context of device 0, not to the "
                                     "primary context of device 0") != std::string::npos);
  }
  CHECK_NOTHROW(device.check_stream(nullptr));  // the thread's current context is the primary one again
}

TEST_CASE("loading garbage as a module throws CudaError naming cuModuleLoadData") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  const char garbage[] = "this is neither a cubin nor PTX";  // NUL-terminated: the driver may scan it as text
  try {
    dmoe::Module module(device, garbage, sizeof garbage);
    FAIL("loading garbage did not throw");
  } catch (const dmoe::CudaError& e) {
    INFO(e.what());
    CHECK(e.call == "cuModuleLoadData");
    CHECK(e.code != 0);
    CHECK(contains(e.what(), "cuModuleLoadData: CUDA_ERROR_"));
  }
}

TEST_CASE("EventTimer measures a non-negative time") {
  DMOE_REQUIRE_GPU();
  dmoe::Device device(0);
  dmoe::OwnedStream stream(device);
  dmoe::DeviceBuffer buffer(device, 64 << 20);
  dmoe::EventTimer timer(device);
  timer.start(stream.get());
  device.fill_u8(buffer.get(), 0, buffer.size(), stream.get());
  timer.stop(stream.get());
  const float ms = timer.elapsed_ms();
  MESSAGE("memset of 64 MiB: " << ms << " ms");
  CHECK(ms >= 0.0f);
}
