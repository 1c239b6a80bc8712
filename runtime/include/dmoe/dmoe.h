/* dmoe/dmoe.h — the C ABI of the dropless MoE layer (dmoe/layer.hpp), for bindings from other languages.
 *
 * C99, usable from C++ (extern "C"). Link with -ldmoe (pkg-config dmoe-c). Every function but the
 * accessors (dmoe_version, dmoe_abi_version, dmoe_last_error, dmoe_status_name, dmoe_preset_count)
 * returns a dmoe_status and never lets an exception cross the boundary; on failure dmoe_last_error()
 * says why, naming the argument or value at fault.
 *
 * Handles. dmoe_device (one GPU), dmoe_layer (a compiled layer of one shape), dmoe_context (what one
 * forward saves for its backward) are opaque. A layer keeps its device alive and a context keeps its
 * layer alive, so handles may be destroyed in any order; each is freed when it and everything made from
 * it are destroyed. Destroying NULL does nothing and returns DMOE_OK.
 *
 * Tensors are caller-owned device pointers (CUdeviceptr values) in the layer's dtype, row-major, 16-byte
 * aligned; shapes use H = hidden, F = ffn, E = experts, K = top_k, T = tokens. Streams are CUstream
 * handles passed as void* (NULL: the legacy default stream); work is enqueued, not waited for.
 *
 * Threads. The accessors and the desc functions are thread-safe. Devices may be created and used from
 * any thread. Calls on one layer and its contexts share the layer's scratch memory: the caller orders
 * them (one thread at a time, and one stream or its own synchronization between streams). Different
 * layers are independent.
 */
#ifndef DMOE_DMOE_H
#define DMOE_DMOE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DMOE_API __attribute__((visibility("default")))
#else
#define DMOE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Raised when a struct's layout or a function's meaning changes; compare with dmoe_abi_version(). */
#define DMOE_ABI_VERSION 2

typedef enum dmoe_status {
  DMOE_OK = 0,
  DMOE_INVALID_ARGUMENT = 1, /* a NULL handle or pointer, a bad shape, option or tensor pointer */
  DMOE_NO_GPU = 2,           /* no driver, no device of that ordinal, no cuBLASLt */
  DMOE_CUDA_ERROR = 3,       /* a CUDA driver call failed (the message names the call and error) */
  DMOE_COMPILE_ERROR = 4,    /* NVRTC rejected a kernel, or ptxas produced one dmoe refuses to run */
  DMOE_OUT_OF_MEMORY = 5,    /* host or device memory, or the caller's allocator returned NULL */
  DMOE_INTERNAL = 6          /* anything else: a bug in dmoe */
} dmoe_status;

typedef enum dmoe_dtype { DMOE_DTYPE_BF16 = 0, DMOE_DTYPE_FP16 = 1 } dmoe_dtype;

typedef enum dmoe_activation {
  DMOE_ACTIVATION_NONE = 0,
  DMOE_ACTIVATION_GELU_TANH = 1,
  DMOE_ACTIVATION_SILU = 2,
  DMOE_ACTIVATION_RELU = 3
} dmoe_activation;

typedef struct dmoe_device dmoe_device;
typedef struct dmoe_layer dmoe_layer;
typedef struct dmoe_context dmoe_context;

/* One layer: the MoeShape and the layer options (dmoe/spec.hpp, dmoe/layer.hpp). Fixed-width fields,
 * no padding (80 bytes). Fill it with dmoe_layer_desc_init or dmoe_layer_desc_preset, then edit. */
typedef struct dmoe_layer_desc {
  int64_t hidden;     /* H, a multiple of 64 */
  int64_t ffn;        /* F per expert, a multiple of block */
  int64_t experts;    /* E */
  int64_t top_k;      /* K <= E */
  int64_t block;      /* block-sparse block size: 64, 128 or 256 */
  int64_t tokens;     /* T, the token count of every forward and backward call */
  int32_t dtype;      /* dmoe_dtype of every tensor */
  int32_t activation; /* dmoe_activation */
  int32_t gated;      /* 1: GLU / SwiGLU experts (a third weight v1), 0: plain MLP */
  int32_t renorm_p;   /* renormalize the top-k weights by their p-norm: 0 (off), 1 or 2 */
  float lbl_weight;   /* load-balancing loss weight, >= 0 */
  float z_weight;     /* router z-loss weight, >= 0 */
  int32_t recompute;  /* 1: memory-saving mode (LayerOptions::recompute): contexts keep only the permuted
                         input and the pre-activations, backward recomputes the rest; 0: off */
  float jitter_eps;   /* router jitter (LayerOptions::jitter_eps): the router's input x * U(1 - eps, 1 + eps),
                         fresh noise every forward (dmoe_layer_set_seed); 0: off, else in (0, 1) */
} dmoe_layer_desc;

/* Device memory for every buffer a layer and its contexts hold (backward scratch, cuBLASLt's workspace,
 * the routing workspace, saved activations: dmoe_layer_bytes + dmoe_context_bytes, to the byte). With
 * allocate NULL, dmoe uses cuMemAlloc. allocate must return 256-byte aligned device memory of the layer's device, or NULL
 * (DMOE_OUT_OF_MEMORY). Set both functions or neither. `user` is passed back unchanged and must stay
 * valid until the layer and all its contexts are destroyed. Called only from layer and context
 * create/destroy, on the calling thread. */
typedef struct dmoe_allocator {
  void* (*allocate)(size_t bytes, void* user);
  void (*deallocate)(void* ptr, size_t bytes, void* user);
  void* user;
} dmoe_allocator;

typedef struct dmoe_weights {
  const void* router; /* [E, H] */
  const void* w1;     /* [E*F, H] */
  const void* w2;     /* [E*F, H] */
  const void* v1;     /* [E*F, H], gated layers only (NULL otherwise) */
  const float* expert_bias; /* [E] fp32, optional (NULL: none): DeepSeek-V3's auxiliary-loss-free balancing
                               bias, added to the router's scores for the top-k selection only; the weights
                               are the unbiased scores, no gradient reaches it. Read by forward only. */
} dmoe_weights;

/* Every gradient is overwritten, not accumulated. */
typedef struct dmoe_gradients {
  void* dx;      /* [T, H] */
  void* drouter; /* [E, H] */
  void* dw1;     /* [E*F, H] */
  void* dw2;     /* [E*F, H] */
  void* dv1;     /* [E*F, H], gated layers only (NULL otherwise) */
} dmoe_gradients;

typedef struct dmoe_device_properties {
  char name[256]; /* NUL-terminated, truncated if longer */
  int32_t ordinal;
  int32_t cc_major, cc_minor;
  int32_t sm_count;
  int64_t global_bytes;
  int64_t l2_bytes;
  int32_t driver_version; /* e.g. 13000 */
  int32_t reserved;
} dmoe_device_properties;

/* ---- Accessors: no status, never fail, thread-safe. ---- */

/* The library's version, e.g. "0.1.0". Static storage. */
DMOE_API const char* dmoe_version(void);
/* The DMOE_ABI_VERSION the library was built with; a binding checks it equals the header's. */
DMOE_API int dmoe_abi_version(void);
/* The message of the last failed dmoe call on this thread; "" after a call that succeeded. Valid until
 * the next dmoe call on this thread. Never NULL. */
DMOE_API const char* dmoe_last_error(void);
/* "DMOE_OK", "DMOE_INVALID_ARGUMENT", ...; "unknown status" for other values. Static storage. */
DMOE_API const char* dmoe_status_name(dmoe_status status);

/* ---- Descriptions (no GPU needed). ---- */

/* Sets *desc to the defaults: all sizes 0 except top_k 1 and block 128, bf16, GELU-tanh, not gated,
 * renorm_p 0, lbl_weight 0.01, z_weight 0, recompute 0, jitter_eps 0. The sizes must then be set. */
DMOE_API dmoe_status dmoe_layer_desc_init(dmoe_layer_desc* desc);
/* Sets *desc to a named model shape (dmoe presets: "mb-46m", "mb-356m", "mixtral-8x7b", "fine-grained",
 * "deepseek-v3", "tiny") with the default options. An unknown name: DMOE_INVALID_ARGUMENT, listing the
 * known names. */
DMOE_API dmoe_status dmoe_layer_desc_preset(const char* name, dmoe_layer_desc* desc);
/* The number of presets, and the name of preset `index` (static storage) for index < that number. */
DMOE_API size_t dmoe_preset_count(void);
DMOE_API dmoe_status dmoe_preset_name(size_t index, const char** name);
/* The checks dmoe_layer_create makes on a description before it touches the GPU: DMOE_OK, or
 * DMOE_INVALID_ARGUMENT naming the field, its value and the limit (sizes, divisibility, enum values,
 * tokens > 0, options, and every derived size or index fitting in int32). */
DMOE_API dmoe_status dmoe_layer_desc_validate(const dmoe_layer_desc* desc);

/* ---- Devices. ---- */

/* Opens GPU `ordinal` (its primary context), loading the CUDA driver on first use. DMOE_NO_GPU when
 * there is no driver or no such device. Destroy with dmoe_device_destroy. */
DMOE_API dmoe_status dmoe_device_create(int ordinal, dmoe_device** device);
/* Releases the handle; the GPU's context is released when the last layer made on it is destroyed too. */
DMOE_API dmoe_status dmoe_device_destroy(dmoe_device* device);
DMOE_API dmoe_status dmoe_device_get_properties(const dmoe_device* device, dmoe_device_properties* props);
/* Device memory helpers, for callers without a CUDA library of their own. alloc of 0 bytes gives NULL;
 * free of NULL does nothing. Copies and fills are enqueued on `stream`; copy_to_device returns once `src`
 * may be reused; copy_to_host returns when `dst` holds the data. */
DMOE_API dmoe_status dmoe_device_alloc(const dmoe_device* device, size_t bytes, void** ptr);
DMOE_API dmoe_status dmoe_device_free(const dmoe_device* device, void* ptr);
DMOE_API dmoe_status dmoe_device_copy_to_device(const dmoe_device* device, void* dst, const void* src, size_t bytes,
                                                void* stream);
DMOE_API dmoe_status dmoe_device_copy_to_host(const dmoe_device* device, void* dst, const void* src, size_t bytes,
                                              void* stream);
DMOE_API dmoe_status dmoe_device_fill_u8(const dmoe_device* device, void* dst, uint8_t value, size_t bytes,
                                         void* stream);
/* Waits for `stream`; NULL waits for all work on the device. */
DMOE_API dmoe_status dmoe_device_synchronize(const dmoe_device* device, void* stream);

/* ---- Layers. ---- */

/* Validates *desc, plans the router GEMMs (cuBLASLt, loaded at run time: DMOE_NO_GPU without it),
 * allocates the backward scratch and compiles every kernel the layer needs (from dmoe's kernel caches
 * when warm; seconds when cold). `allocator` may be NULL (cuMemAlloc); it is copied. */
DMOE_API dmoe_status dmoe_layer_create(dmoe_device* device, const dmoe_layer_desc* desc,
                                       const dmoe_allocator* allocator, dmoe_layer** layer);
/* Releases the handle; the layer is freed once its contexts are destroyed too. */
DMOE_API dmoe_status dmoe_layer_destroy(dmoe_layer* layer);
/* The description the layer was created with. */
DMOE_API dmoe_status dmoe_layer_get_desc(const dmoe_layer* layer, dmoe_layer_desc* desc);
/* Device memory the layer itself holds (scratch and cuBLASLt workspace; contexts not included). A step's
 * peak is this plus each live context's dmoe_context_bytes, plus the caller's tensors. */
DMOE_API dmoe_status dmoe_layer_bytes(const dmoe_layer* layer, size_t* bytes);
/* Jitter: sets the base seed of the noise (0 at creation) and restarts its per-forward offset at 0, with a
 * synchronous write to the device (not during a CUDA graph capture; captured steps read the seed from device
 * memory and follow it). DMOE_INVALID_ARGUMENT when the layer's jitter_eps is 0. */
DMOE_API dmoe_status dmoe_layer_set_seed(dmoe_layer* layer, uint64_t seed);
/* Useful FLOPs of the expert products of one forward and one backward (2*T*K*H*F per product, padding
 * excluded). Either pointer may be NULL. */
DMOE_API dmoe_status dmoe_layer_flops(const dmoe_layer* layer, double* forward, double* backward);

/* y [T, H] = the layer applied to x [T, H], enqueued on `stream`; `context` (made for this layer) saves
 * what backward needs, including the pointer x, whose data must stay unchanged until backward. NULL or
 * misaligned tensors, v1 set on a plain layer or missing on a gated one, a context of another layer:
 * DMOE_INVALID_ARGUMENT, with nothing enqueued. No host synchronization: capturable in a CUDA graph. */
DMOE_API dmoe_status dmoe_layer_forward(dmoe_layer* layer, const void* x, const dmoe_weights* weights, void* y,
                                        dmoe_context* context, void* stream);
/* The gradients of <dy, y> + the router losses for the context's last forward, enqueued on `stream`.
 * Once per forward: backward uses the saved activations as scratch (a second call without a forward
 * in between is DMOE_INVALID_ARGUMENT). */
DMOE_API dmoe_status dmoe_layer_backward(dmoe_layer* layer, const void* dy, const dmoe_weights* weights,
                                         dmoe_context* context, const dmoe_gradients* grads, void* stream);

/* ---- Contexts. ---- */

/* Allocates the saved-activation buffers of one forward/backward pair of `layer` (through its
 * allocator). One context per forward in flight (e.g. per micro-batch). */
DMOE_API dmoe_status dmoe_context_create(dmoe_layer* layer, dmoe_context** context);
DMOE_API dmoe_status dmoe_context_destroy(dmoe_context* context);
/* Device pointers into the context, valid while it lives and written by each forward:
 * losses: float[2], the weighted [load-balancing, z] losses; expert_ids: int32_t[T*K];
 * weights: float[T*K], the routing weights; counts: int32_t[E], tokens per expert. */
DMOE_API dmoe_status dmoe_context_losses(const dmoe_context* context, const float** losses);
DMOE_API dmoe_status dmoe_context_expert_ids(const dmoe_context* context, const int32_t** expert_ids);
DMOE_API dmoe_status dmoe_context_weights(const dmoe_context* context, const float** weights);
DMOE_API dmoe_status dmoe_context_counts(const dmoe_context* context, const int32_t** counts);
/* Jitter: uint64_t[2] on the device, {base seed, offset} of the context's last forward: its noise, element i
 * of x [T, H], is jitter_factor(jitter_key(seed, offset), i, eps) (dmoe/routing_args.cuh). NULL without jitter. */
DMOE_API dmoe_status dmoe_context_jitter_seed(const dmoe_context* context, const uint64_t** seed);
/* Device memory the context holds. */
DMOE_API dmoe_status dmoe_context_bytes(const dmoe_context* context, size_t* bytes);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DMOE_DMOE_H */
