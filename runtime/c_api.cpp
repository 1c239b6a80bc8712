// The C ABI (dmoe/dmoe.h) over dmoe/layer.hpp: handles own shared references to what they need, every
// entry point runs inside `guarded`, which turns exceptions into a status and the thread's last error.
#include "dmoe/dmoe.h"

#include <cuda.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "dmoe/compiler.hpp"
#include "dmoe/driver.hpp"
#include "dmoe/layer.hpp"
#include "dmoe/spec.hpp"
#include "dmoe_version.hpp"

// NOTES: a layer holds its device and a context its layer, so a binding's garbage collector may
// finalize handles in any order.
struct dmoe_device {
  std::shared_ptr<dmoe::Device> device;
};

namespace {

struct LayerState {
  std::shared_ptr<dmoe::Device> device;  // declared first: destroyed after the layer
  dmoe_layer_desc desc;
  dmoe::Layer layer;
  LayerState(std::shared_ptr<dmoe::Device> d, const dmoe_layer_desc& dd, const dmoe::MoeShape& shape,
             const dmoe::LayerOptions& opt, dmoe::Allocator alloc)
      : device(std::move(d)), desc(dd), layer(*device, shape, opt, alloc) {}
};

}  // namespace

struct dmoe_layer {
  std::shared_ptr<LayerState> state;
};

struct dmoe_context {
  std::shared_ptr<LayerState> layer;  // declared first: destroyed after the context
  dmoe::LayerContext context;
  explicit dmoe_context(std::shared_ptr<LayerState> l) : layer(std::move(l)), context(layer->layer) {}
};

static_assert(sizeof(dmoe_layer_desc) == 80, "dmoe_layer_desc must have no padding");
static_assert(sizeof(dmoe_allocator) == 3 * sizeof(void*));

namespace {

using dmoe::InvalidArgument;

// NOTES: a message that cannot be stored (std::bad_alloc) falls back to a static one.
thread_local std::string t_error;
thread_local const char* t_error_static = nullptr;

dmoe_status fail(dmoe_status status, const char* call, const char* what) noexcept {
  try {
    t_error = fmt::format("{}: {}", call, what);
    t_error_static = nullptr;
  } catch (...) {
    t_error_static = "dmoe: out of host memory while recording an error";
  }
  return status;
}

template <class F>
dmoe_status guarded(const char* call, F&& body) noexcept {
  try {
    body();
    t_error.clear();
    t_error_static = nullptr;
    return DMOE_OK;
  } catch (const dmoe::InvalidArgument& e) {
    return fail(DMOE_INVALID_ARGUMENT, call, e.what());
  } catch (const dmoe::NoGpu& e) {
    return fail(DMOE_NO_GPU, call, e.what());
  } catch (const dmoe::CudaError& e) {
    return fail(e.code == CUDA_ERROR_OUT_OF_MEMORY ? DMOE_OUT_OF_MEMORY : DMOE_CUDA_ERROR, call, e.what());
  } catch (const dmoe::CompileError& e) {
    return fail(DMOE_COMPILE_ERROR, call, e.what());
  } catch (const std::bad_alloc&) {
    return fail(DMOE_OUT_OF_MEMORY, call, "out of memory (host, or the caller's allocator returned NULL)");
  } catch (const std::exception& e) {
    return fail(DMOE_INTERNAL, call, (std::string("internal error: ") + e.what()).c_str());
  } catch (...) {
    return fail(DMOE_INTERNAL, call, "internal error: an unknown exception");
  }
}

template <class T>
T& need(T* p, const char* name) {
  if (!p) throw InvalidArgument(fmt::format("{} is NULL", name));
  return *p;
}

// A context accessor: `out` (named `name` in errors) receives what `get` returns for the context.
template <class T, class Get>
dmoe_status context_get(const char* call, const dmoe_context* context, T* out, const char* name, Get get) {
  return guarded(call, [&] {
    const dmoe_context& c = need(context, "context");
    need(out, name) = (c.context.*get)();
  });
}

void require(const void* p, const char* name) {
  if (!p) throw InvalidArgument(fmt::format("{} is NULL", name));
}

dmoe::Stream stream_of(void* s) { return static_cast<dmoe::Stream>(s); }

// The checks dmoe::Layer makes on its options, made here too so that they run without a GPU.
struct Converted {
  dmoe::MoeShape shape;
  dmoe::LayerOptions options;
};

Converted convert(const dmoe_layer_desc& d) {
  Converted c;
  dmoe::MoeShape& s = c.shape;
  s.hidden = d.hidden;
  s.ffn = d.ffn;
  s.experts = d.experts;
  s.top_k = d.top_k;
  s.block = d.block;
  s.tokens = d.tokens;
  switch (d.dtype) {
    case DMOE_DTYPE_BF16: s.dtype = dmoe::DType::BF16; break;
    case DMOE_DTYPE_FP16: s.dtype = dmoe::DType::FP16; break;
    default: throw InvalidArgument(fmt::format("dtype = {} is not a dmoe_dtype (0: bf16, 1: fp16)", d.dtype));
  }
  switch (d.activation) {
    case DMOE_ACTIVATION_NONE: s.activation = dmoe::Activation::None; break;
    case DMOE_ACTIVATION_GELU_TANH: s.activation = dmoe::Activation::GeluTanh; break;
    case DMOE_ACTIVATION_SILU: s.activation = dmoe::Activation::Silu; break;
    case DMOE_ACTIVATION_RELU: s.activation = dmoe::Activation::Relu; break;
    default:
      throw InvalidArgument(fmt::format(
          "activation = {} is not a dmoe_activation (0: none, 1: gelu_tanh, 2: silu, 3: relu)", d.activation));
  }
  if (d.gated != 0 && d.gated != 1) throw InvalidArgument(fmt::format("gated = {} is not 0 or 1", d.gated));
  s.gated = d.gated == 1;
  c.options.renorm_p = d.renorm_p;
  c.options.lbl_weight = d.lbl_weight;
  c.options.z_weight = d.z_weight;
  if (d.recompute != 0 && d.recompute != 1) throw InvalidArgument(fmt::format("recompute = {} is not 0 or 1", d.recompute));
  c.options.recompute = d.recompute == 1;
  c.options.jitter_eps = d.jitter_eps;
  dmoe::validate(s, c.options);  // the layer's own checks (no GPU needed)
  return c;
}

dmoe_layer_desc default_desc() {
  dmoe_layer_desc d;
  std::memset(&d, 0, sizeof d);
  const dmoe::MoeShape s;
  const dmoe::LayerOptions o;
  d.top_k = s.top_k;
  d.block = s.block;
  d.dtype = DMOE_DTYPE_BF16;
  d.activation = DMOE_ACTIVATION_GELU_TANH;
  d.renorm_p = o.renorm_p;
  d.lbl_weight = o.lbl_weight;
  d.z_weight = o.z_weight;
  d.recompute = o.recompute ? 1 : 0;
  d.jitter_eps = o.jitter_eps;
  return d;
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const dmoe::Preset& p : dmoe::presets()) v.emplace_back(p.name);
    return v;
  }();
  return names;
}

}  // namespace

extern "C" {

const char* dmoe_version(void) { return DMOE_VERSION; }

int dmoe_abi_version(void) { return DMOE_ABI_VERSION; }

const char* dmoe_last_error(void) { return t_error_static ? t_error_static : t_error.c_str(); }

const char* dmoe_status_name(dmoe_status status) {
  switch (status) {
    case DMOE_OK: return "DMOE_OK";
    case DMOE_INVALID_ARGUMENT: return "DMOE_INVALID_ARGUMENT";
    case DMOE_NO_GPU: return "DMOE_NO_GPU";
    case DMOE_CUDA_ERROR: return "DMOE_CUDA_ERROR";
    case DMOE_COMPILE_ERROR: return "DMOE_COMPILE_ERROR";
    case DMOE_OUT_OF_MEMORY: return "DMOE_OUT_OF_MEMORY";
    case DMOE_INTERNAL: return "DMOE_INTERNAL";
  }
  return "unknown status";
}

dmoe_status dmoe_layer_desc_init(dmoe_layer_desc* desc) {
  return guarded(__func__, [&] { need(desc, "desc") = default_desc(); });
}

dmoe_status dmoe_layer_desc_preset(const char* name, dmoe_layer_desc* desc) {
  return guarded(__func__, [&] {
    require(name, "name");
    dmoe_layer_desc& d = need(desc, "desc");
    const dmoe::MoeShape& s = dmoe::preset(name);
    dmoe_layer_desc p = default_desc();
    p.hidden = s.hidden;
    p.ffn = s.ffn;
    p.experts = s.experts;
    p.top_k = s.top_k;
    p.block = s.block;
    p.tokens = s.tokens;
    p.dtype = s.dtype == dmoe::DType::FP16 ? DMOE_DTYPE_FP16 : DMOE_DTYPE_BF16;
    switch (s.activation) {
      case dmoe::Activation::None: p.activation = DMOE_ACTIVATION_NONE; break;
      case dmoe::Activation::GeluTanh: p.activation = DMOE_ACTIVATION_GELU_TANH; break;
      case dmoe::Activation::Silu: p.activation = DMOE_ACTIVATION_SILU; break;
      case dmoe::Activation::Relu: p.activation = DMOE_ACTIVATION_RELU; break;
    }
    p.gated = s.gated ? 1 : 0;
    d = p;
  });
}

size_t dmoe_preset_count(void) {
  try {
    return preset_names().size();
  } catch (...) {
    return 0;
  }
}

dmoe_status dmoe_preset_name(size_t index, const char** name) {
  return guarded(__func__, [&] {
    const char*& out = need(name, "name");
    const auto& names = preset_names();
    if (index >= names.size())
      throw InvalidArgument(fmt::format("index = {} is past the {} presets", index, names.size()));
    out = names[index].c_str();
  });
}

dmoe_status dmoe_layer_desc_validate(const dmoe_layer_desc* desc) {
  return guarded(__func__, [&] { convert(need(desc, "desc")); });
}

dmoe_status dmoe_device_create(int ordinal, dmoe_device** device) {
  return guarded(__func__, [&] {
    dmoe_device*& out = need(device, "device");
    out = nullptr;
    auto d = std::make_shared<dmoe::Device>(ordinal);
    out = new dmoe_device{std::move(d)};
  });
}

dmoe_status dmoe_device_destroy(dmoe_device* device) {
  return guarded(__func__, [&] { delete device; });
}

dmoe_status dmoe_device_get_properties(const dmoe_device* device, dmoe_device_properties* props) {
  return guarded(__func__, [&] {
    const dmoe::DeviceProperties& p = need(device, "device").device->properties();
    dmoe_device_properties& out = need(props, "props");
    std::memset(&out, 0, sizeof out);
    std::strncpy(out.name, p.name.c_str(), sizeof out.name - 1);
    out.ordinal = p.ordinal;
    out.cc_major = p.cc_major;
    out.cc_minor = p.cc_minor;
    out.sm_count = p.sm_count;
    out.global_bytes = p.global_bytes;
    out.l2_bytes = p.l2_bytes;
    out.driver_version = p.driver_version;
  });
}

dmoe_status dmoe_device_alloc(const dmoe_device* device, size_t bytes, void** ptr) {
  return guarded(__func__, [&] {
    const dmoe_device& d = need(device, "device");
    void*& out = need(ptr, "ptr");
    out = nullptr;
    out = d.device->alloc(bytes);
  });
}

dmoe_status dmoe_device_free(const dmoe_device* device, void* ptr) {
  return guarded(__func__, [&] { need(device, "device").device->free(ptr); });
}

dmoe_status dmoe_device_copy_to_device(const dmoe_device* device, void* dst, const void* src, size_t bytes,
                                       void* stream) {
  return guarded(__func__, [&] {
    const dmoe_device& d = need(device, "device");
    if (bytes == 0) return;
    require(dst, "dst");
    require(src, "src");
    d.device->copy_to_device(dst, src, bytes, stream_of(stream));
  });
}

dmoe_status dmoe_device_copy_to_host(const dmoe_device* device, void* dst, const void* src, size_t bytes,
                                     void* stream) {
  return guarded(__func__, [&] {
    const dmoe_device& d = need(device, "device");
    if (bytes == 0) return;
    require(dst, "dst");
    require(src, "src");
    d.device->copy_to_host(dst, src, bytes, stream_of(stream));
  });
}

dmoe_status dmoe_device_fill_u8(const dmoe_device* device, void* dst, uint8_t value, size_t bytes, void* stream) {
  return guarded(__func__, [&] {
    const dmoe_device& d = need(device, "device");
    if (bytes == 0) return;
    require(dst, "dst");
    d.device->fill_u8(dst, value, bytes, stream_of(stream));
  });
}

dmoe_status dmoe_device_synchronize(const dmoe_device* device, void* stream) {
  return guarded(__func__, [&] { need(device, "device").device->synchronize(stream_of(stream)); });
}

dmoe_status dmoe_layer_create(dmoe_device* device, const dmoe_layer_desc* desc, const dmoe_allocator* allocator,
                              dmoe_layer** layer) {
  return guarded(__func__, [&] {
    dmoe_layer*& out = need(layer, "layer");
    out = nullptr;
    const Converted c = convert(need(desc, "desc"));
    dmoe::Allocator alloc;
    if (allocator) {
      if (!allocator->allocate != !allocator->deallocate)
        throw InvalidArgument(fmt::format("allocator: {} is set but {} is NULL",
                                          allocator->allocate ? "allocate" : "deallocate",
                                          allocator->allocate ? "deallocate" : "allocate"));
      alloc.allocate = allocator->allocate;
      alloc.deallocate = allocator->deallocate;
      alloc.user = allocator->user;
    }
    const dmoe_device& d = need(device, "device");
    auto state = std::make_shared<LayerState>(d.device, *desc, c.shape, c.options, alloc);
    out = new dmoe_layer{std::move(state)};
  });
}

dmoe_status dmoe_layer_destroy(dmoe_layer* layer) {
  return guarded(__func__, [&] { delete layer; });
}

dmoe_status dmoe_layer_get_desc(const dmoe_layer* layer, dmoe_layer_desc* desc) {
  return guarded(__func__, [&] {
    const dmoe_layer& l = need(layer, "layer");
    need(desc, "desc") = l.state->desc;
  });
}

dmoe_status dmoe_layer_bytes(const dmoe_layer* layer, size_t* bytes) {
  return guarded(__func__, [&] {
    const dmoe_layer& l = need(layer, "layer");
    need(bytes, "bytes") = l.state->layer.bytes();
  });
}

dmoe_status dmoe_layer_set_seed(dmoe_layer* layer, uint64_t seed) {
  return guarded(__func__, [&] { need(layer, "layer").state->layer.set_seed(seed); });
}

dmoe_status dmoe_layer_flops(const dmoe_layer* layer, double* forward, double* backward) {
  return guarded(__func__, [&] {
    const dmoe::Layer& l = need(layer, "layer").state->layer;
    if (forward) *forward = l.forward_flops();
    if (backward) *backward = l.backward_flops();
  });
}

dmoe_status dmoe_layer_forward(dmoe_layer* layer, const void* x, const dmoe_weights* weights, void* y,
                               dmoe_context* context, void* stream) {
  return guarded(__func__, [&] {
    dmoe::Layer& l = need(layer, "layer").state->layer;
    const dmoe_weights& w = need(weights, "weights");
    dmoe_context& c = need(context, "context");
    l.forward(x, dmoe::LayerWeights{w.router, w.w1, w.w2, w.v1, w.expert_bias}, y, c.context, stream_of(stream));
  });
}

dmoe_status dmoe_layer_backward(dmoe_layer* layer, const void* dy, const dmoe_weights* weights,
                                dmoe_context* context, const dmoe_gradients* grads, void* stream) {
  return guarded(__func__, [&] {
    dmoe::Layer& l = need(layer, "layer").state->layer;
    const dmoe_weights& w = need(weights, "weights");
    dmoe_context& c = need(context, "context");
    const dmoe_gradients& g = need(grads, "grads");
    l.backward(dy, dmoe::LayerWeights{w.router, w.w1, w.w2, w.v1, w.expert_bias}, c.context,
               dmoe::LayerGradients{g.dx, g.drouter, g.dw1, g.dw2, g.dv1}, stream_of(stream));
  });
}

dmoe_status dmoe_context_create(dmoe_layer* layer, dmoe_context** context) {
  return guarded(__func__, [&] {
    dmoe_context*& out = need(context, "context");
    out = nullptr;
    const dmoe_layer& l = need(layer, "layer");
    out = new dmoe_context(l.state);
  });
}

dmoe_status dmoe_context_destroy(dmoe_context* context) {
  return guarded(__func__, [&] { delete context; });
}

dmoe_status dmoe_context_losses(const dmoe_context* context, const float** losses) {
  return context_get(__func__, context, losses, "losses", &dmoe::LayerContext::losses);
}

dmoe_status dmoe_context_expert_ids(const dmoe_context* context, const int32_t** expert_ids) {
  return context_get(__func__, context, expert_ids, "expert_ids", &dmoe::LayerContext::expert_ids);
}

dmoe_status dmoe_context_weights(const dmoe_context* context, const float** weights) {
  return context_get(__func__, context, weights, "weights", &dmoe::LayerContext::weights);
}

dmoe_status dmoe_context_counts(const dmoe_context* context, const int32_t** counts) {
  return context_get(__func__, context, counts, "counts", &dmoe::LayerContext::counts);
}

dmoe_status dmoe_context_jitter_seed(const dmoe_context* context, const uint64_t** seed) {
  return context_get(__func__, context, seed, "seed", &dmoe::LayerContext::jitter_seed);
}

dmoe_status dmoe_context_bytes(const dmoe_context* context, size_t* bytes) {
  return context_get(__func__, context, bytes, "bytes", &dmoe::LayerContext::bytes);
}

}  // extern "C"
