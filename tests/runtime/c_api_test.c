/* The C ABI (dmoe/dmoe.h) from C99, linked against the shared libdmoe. Without a GPU it checks everything
 * that needs none (version, presets, validation messages, NULL handling, DMOE_NO_GPU) and says that the
 * GPU part was skipped; with one it also runs forward and backward of small layers through the ABI.
 * Exit status: 0 when every check passed, 1 otherwise. */
#define _POSIX_C_SOURCE 200112L /* setenv, unsetenv */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmoe/dmoe.h"

static int g_checks = 0;
static int g_failures = 0;

static void check(int ok, const char* what, const char* file, int line) {
  ++g_checks;
  if (ok) return;
  ++g_failures;
  fprintf(stderr, "FAIL %s:%d: %s (dmoe_last_error: \"%s\")\n", file, line, what, dmoe_last_error());
}
#define CHECK(cond) check((cond) != 0, #cond, __FILE__, __LINE__)

/* `call` returned `want`; on failure the message is non-empty and contains `needle` (if given); on
 * success the message is empty. */
static int expect(dmoe_status got, dmoe_status want, const char* needle, const char* expr, const char* file,
                  int line) {
  const char* msg = dmoe_last_error();
  int ok = got == want;
  if (ok && want == DMOE_OK) ok = msg[0] == '\0';
  if (ok && want != DMOE_OK) ok = msg[0] != '\0' && (!needle || strstr(msg, needle) != NULL);
  ++g_checks;
  if (!ok) {
    ++g_failures;
    fprintf(stderr, "FAIL %s:%d: %s returned %s, expected %s%s%s%s; message: \"%s\"\n", file, line, expr,
            dmoe_status_name(got), dmoe_status_name(want), needle ? " with a message containing \"" : "",
            needle ? needle : "", needle ? "\"" : "", msg);
  }
  return ok;
}
#define EXPECT(call, want, needle) expect((call), (want), (needle), #call, __FILE__, __LINE__)
#define EXPECT_OK(call) expect((call), DMOE_OK, NULL, #call, __FILE__, __LINE__)

/* ---- CPU part ---- */

static void test_accessors(void) {
  CHECK(dmoe_version() != NULL && dmoe_version()[0] != '\0');
  CHECK(dmoe_abi_version() == DMOE_ABI_VERSION);
  CHECK(strcmp(dmoe_status_name(DMOE_OK), "DMOE_OK") == 0);
  CHECK(strcmp(dmoe_status_name(DMOE_INVALID_ARGUMENT), "DMOE_INVALID_ARGUMENT") == 0);
  CHECK(strcmp(dmoe_status_name(DMOE_INTERNAL), "DMOE_INTERNAL") == 0);
  CHECK(strcmp(dmoe_status_name((dmoe_status)99), "unknown status") == 0);
  CHECK(sizeof(dmoe_layer_desc) == 80);
}

static void test_presets(void) {
  dmoe_layer_desc d;
  size_t i, n = dmoe_preset_count();
  const char* name = NULL;
  CHECK(n >= 6);
  for (i = 0; i < n; ++i) {
    if (!EXPECT_OK(dmoe_preset_name(i, &name))) continue;
    EXPECT_OK(dmoe_layer_desc_preset(name, &d));
    EXPECT_OK(dmoe_layer_desc_validate(&d));
  }
  EXPECT(dmoe_preset_name(n, &name), DMOE_INVALID_ARGUMENT, "index");
  EXPECT(dmoe_preset_name(0, NULL), DMOE_INVALID_ARGUMENT, "name is NULL");

  if (EXPECT_OK(dmoe_layer_desc_preset("tiny", &d))) {
    CHECK(d.hidden == 128 && d.ffn == 256 && d.experts == 4 && d.top_k == 2 && d.block == 128);
    CHECK(d.tokens == 512 && d.dtype == DMOE_DTYPE_BF16 && d.activation == DMOE_ACTIVATION_GELU_TANH);
    CHECK(d.gated == 0 && d.renorm_p == 0 && d.lbl_weight == 0.01f && d.z_weight == 0.0f);
    CHECK(d.recompute == 0 && d.jitter_eps == 0.0f);
  }
  if (EXPECT_OK(dmoe_layer_desc_preset("mixtral-8x7b", &d)))
    CHECK(d.hidden == 4096 && d.experts == 8 && d.gated == 1 && d.activation == DMOE_ACTIVATION_SILU);
  /* An unknown name leaves *desc alone and names itself and the known ones. */
  d.hidden = 12345;
  EXPECT(dmoe_layer_desc_preset("no-such-model", &d), DMOE_INVALID_ARGUMENT, "no-such-model");
  CHECK(strstr(dmoe_last_error(), "tiny") != NULL);
  CHECK(strstr(dmoe_last_error(), "dmoe_layer_desc_preset") != NULL);
  CHECK(d.hidden == 12345);
  EXPECT(dmoe_layer_desc_preset(NULL, &d), DMOE_INVALID_ARGUMENT, "name is NULL");
  EXPECT(dmoe_layer_desc_preset("tiny", NULL), DMOE_INVALID_ARGUMENT, "desc is NULL");

  EXPECT_OK(dmoe_layer_desc_init(&d));
  CHECK(d.hidden == 0 && d.top_k == 1 && d.block == 128 && d.dtype == DMOE_DTYPE_BF16);
  CHECK(d.activation == DMOE_ACTIVATION_GELU_TANH && d.gated == 0 && d.lbl_weight == 0.01f);
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "hidden must be positive");
  EXPECT(dmoe_layer_desc_init(NULL), DMOE_INVALID_ARGUMENT, "desc is NULL");
}

static dmoe_layer_desc tiny(void) {
  dmoe_layer_desc d;
  dmoe_layer_desc_preset("tiny", &d);
  return d;
}

static void test_validate(void) {
  dmoe_layer_desc d = tiny();
  EXPECT_OK(dmoe_layer_desc_validate(&d));

  d = tiny(), d.ffn = 200;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "ffn = 200 is not a multiple of the block size 128");
  CHECK(strstr(dmoe_last_error(), "dmoe_layer_desc_validate") != NULL);
  d = tiny(), d.top_k = 5;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "top_k = 5 exceeds the number of experts 4");
  d = tiny(), d.hidden = 100;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "hidden = 100");
  d = tiny(), d.block = 96;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "block size 96");
  d = tiny(), d.experts = -3;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "-3");
  /* T·K fits in int32, the padded rows T·K + E·(B − 1) do not. */
  d = tiny(), d.top_k = 1, d.tokens = 2147483647 - 100;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "padded rows");
  CHECK(strstr(dmoe_last_error(), "2147484160") != NULL); /* 2147484055, rounded up to a multiple of 128 */
  d = tiny(), d.tokens = (int64_t)1 << 30; /* T·K = 2^31 */
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "tokens * top_k = 2147483648");
  d = tiny(), d.tokens = 0;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "tokens = 0");
  d = tiny(), d.dtype = 7;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "dtype = 7");
  d = tiny(), d.activation = -1;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "activation = -1");
  d = tiny(), d.gated = 2;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "gated = 2");
  d = tiny(), d.renorm_p = 3;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "renorm_p = 3");
  d = tiny(), d.lbl_weight = -0.5f;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "lbl_weight = -0.5");
  d = tiny(), d.z_weight = (float)NAN;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "z_weight = nan");
  d = tiny(), d.recompute = 2;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "recompute = 2 is not 0 or 1");
  d = tiny(), d.jitter_eps = 1.0f;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "jitter_eps = 1 is not in [0, 1)");
  d = tiny(), d.jitter_eps = -0.01f;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "jitter_eps = -0.01");
  d = tiny(), d.jitter_eps = (float)NAN;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "jitter_eps = nan");
  d = tiny(), d.recompute = 1, d.jitter_eps = 0.01f;
  EXPECT_OK(dmoe_layer_desc_validate(&d));
  d = tiny(), d.gated = 1, d.activation = DMOE_ACTIVATION_SILU, d.renorm_p = 2, d.dtype = DMOE_DTYPE_FP16;
  EXPECT_OK(dmoe_layer_desc_validate(&d));
  EXPECT(dmoe_layer_desc_validate(NULL), DMOE_INVALID_ARGUMENT, "desc is NULL");

  /* Success clears the thread's last error. */
  d = tiny(), d.top_k = 9;
  EXPECT(dmoe_layer_desc_validate(&d), DMOE_INVALID_ARGUMENT, "top_k = 9");
  d = tiny();
  EXPECT_OK(dmoe_layer_desc_validate(&d));
  CHECK(dmoe_last_error()[0] == '\0');
}

static void* never_allocate(size_t bytes, void* user) {
  (void)bytes, (void)user;
  return NULL;
}

static void never_deallocate(void* ptr, size_t bytes, void* user) { (void)ptr, (void)bytes, (void)user; }

/* Every entry point taking a handle or an out-pointer refuses NULL, naming it, before needing a GPU. */
static void test_null_handles(void) {
  dmoe_layer_desc d = tiny();
  dmoe_device* dev = NULL;
  dmoe_layer* layer = (dmoe_layer*)&d; /* garbage the calls must overwrite with NULL */
  dmoe_context* ctx = NULL;
  dmoe_weights w;
  dmoe_gradients g;
  dmoe_allocator half;
  dmoe_device_properties props;
  const float* f = NULL;
  const int32_t* i32 = NULL;
  const uint64_t* u64 = NULL;
  size_t bytes = 0;
  void* ptr = NULL;
  char host[16];
  memset(&w, 0, sizeof w);
  memset(&g, 0, sizeof g);
  memset(&half, 0, sizeof half);
  half.allocate = never_allocate;

  EXPECT(dmoe_device_create(0, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_get_properties(NULL, &props), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_alloc(NULL, 16, &ptr), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_free(NULL, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_copy_to_device(NULL, ptr, host, 16, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_copy_to_host(NULL, host, ptr, 16, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_fill_u8(NULL, ptr, 0, 16, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");
  EXPECT(dmoe_device_synchronize(NULL, NULL), DMOE_INVALID_ARGUMENT, "device is NULL");

  EXPECT(dmoe_layer_create(NULL, &d, NULL, &layer), DMOE_INVALID_ARGUMENT, "device is NULL");
  CHECK(layer == NULL);
  EXPECT(dmoe_layer_create(NULL, NULL, NULL, &layer), DMOE_INVALID_ARGUMENT, "desc is NULL");
  EXPECT(dmoe_layer_create(dev, &d, NULL, NULL), DMOE_INVALID_ARGUMENT, "layer is NULL");
  /* The description and the allocator are checked before the device. */
  d.top_k = 7;
  EXPECT(dmoe_layer_create(NULL, &d, NULL, &layer), DMOE_INVALID_ARGUMENT, "top_k = 7");
  CHECK(strstr(dmoe_last_error(), "dmoe_layer_create") != NULL);
  d = tiny();
  EXPECT(dmoe_layer_create(NULL, &d, &half, &layer), DMOE_INVALID_ARGUMENT, "deallocate is NULL");
  EXPECT(dmoe_layer_get_desc(NULL, &d), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_layer_bytes(NULL, &bytes), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_layer_flops(NULL, NULL, NULL), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_layer_set_seed(NULL, 1), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_layer_forward(NULL, host, &w, host, ctx, NULL), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_layer_backward(NULL, host, &w, ctx, &g, NULL), DMOE_INVALID_ARGUMENT, "layer is NULL");

  EXPECT(dmoe_context_create(NULL, &ctx), DMOE_INVALID_ARGUMENT, "layer is NULL");
  EXPECT(dmoe_context_losses(NULL, &f), DMOE_INVALID_ARGUMENT, "context is NULL");
  EXPECT(dmoe_context_expert_ids(NULL, &i32), DMOE_INVALID_ARGUMENT, "context is NULL");
  EXPECT(dmoe_context_weights(NULL, &f), DMOE_INVALID_ARGUMENT, "context is NULL");
  EXPECT(dmoe_context_counts(NULL, &i32), DMOE_INVALID_ARGUMENT, "context is NULL");
  EXPECT(dmoe_context_bytes(NULL, &bytes), DMOE_INVALID_ARGUMENT, "context is NULL");
  EXPECT(dmoe_context_jitter_seed(NULL, &u64), DMOE_INVALID_ARGUMENT, "context is NULL");

  /* Destroying NULL is a no-op, like free(NULL). */
  EXPECT_OK(dmoe_device_destroy(NULL));
  EXPECT_OK(dmoe_layer_destroy(NULL));
  EXPECT_OK(dmoe_context_destroy(NULL));
}

/* ---- GPU part ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float uniform(void) { /* U(-1, 1), never 0 */
  g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
  return ((float)(g_rng >> 40) + 0.5f) / 8388608.0f - 1.0f;
}

static uint16_t to_bf16(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* An allocator over dmoe_device_alloc that counts what is live. */
typedef struct {
  dmoe_device* device;
  long live, total;
  size_t live_bytes;
} counting_allocator;

static void* counting_allocate(size_t bytes, void* user) {
  counting_allocator* a = (counting_allocator*)user;
  void* p = NULL;
  if (dmoe_device_alloc(a->device, bytes, &p) != DMOE_OK) return NULL;
  ++a->live, ++a->total;
  a->live_bytes += bytes;
  return p;
}

static void counting_deallocate(void* ptr, size_t bytes, void* user) {
  counting_allocator* a = (counting_allocator*)user;
  dmoe_device_free(a->device, ptr);
  --a->live;
  a->live_bytes -= bytes;
}

typedef struct {
  void* dev;      /* device buffer */
  uint16_t* host; /* its bf16 contents */
  size_t n;       /* elements */
} tensor;

static tensor make_tensor(dmoe_device* dev, size_t n, float scale) {
  tensor t;
  size_t i;
  t.n = n;
  t.dev = NULL;
  t.host = (uint16_t*)malloc(n * sizeof(uint16_t));
  if (!t.host) abort();
  for (i = 0; i < n; ++i) t.host[i] = to_bf16(scale * uniform());
  EXPECT_OK(dmoe_device_alloc(dev, n * sizeof(uint16_t), &t.dev));
  if (t.dev) EXPECT_OK(dmoe_device_copy_to_device(dev, t.dev, t.host, n * sizeof(uint16_t), NULL));
  return t;
}

static void free_tensor(dmoe_device* dev, tensor* t) {
  dmoe_device_free(dev, t->dev);
  free(t->host);
  t->dev = NULL, t->host = NULL;
}

/* Downloads `t` and checks every element is finite and not the poison pattern 0xFFFF (a NaN), and that
 * not all are zero. */
static void check_output(dmoe_device* dev, tensor* t, const char* name) {
  size_t i, bad = 0, zeros = 0, first_bad = 0;
  if (!EXPECT_OK(dmoe_device_copy_to_host(dev, t->host, t->dev, t->n * sizeof(uint16_t), NULL))) return;
  for (i = 0; i < t->n; ++i) {
    const float v = from_bf16(t->host[i]);
    if (t->host[i] == 0xFFFFu || !isfinite(v)) {
      if (bad++ == 0) first_bad = i;
    }
    zeros += v == 0.0f;
  }
  ++g_checks;
  if (bad || zeros == t->n) {
    ++g_failures;
    fprintf(stderr, "FAIL %s: %zu of %zu elements poisoned or not finite (first at %zu, bits 0x%04x); %zu zeros\n",
            name, bad, t->n, first_bad, bad ? t->host[first_bad] : 0u, zeros);
  }
}

/* Forward and backward of one layer through the ABI, with the pointer checks and the routing outputs. */
/* use_bias: an expert bias that puts expert 0 first for every token (dmoe_weights.expert_bias). */
static void run_layer(dmoe_device* dev, const dmoe_layer_desc* desc, int use_allocator, int use_bias) {
  const size_t T = (size_t)desc->tokens, H = (size_t)desc->hidden, E = (size_t)desc->experts;
  const size_t F = (size_t)desc->ffn, K = (size_t)desc->top_k;
  const int gated = desc->gated;
  counting_allocator counter;
  dmoe_allocator alloc;
  dmoe_device* own = NULL;
  dmoe_layer *layer = NULL, *other = NULL;
  dmoe_context *ctx = NULL, *other_ctx = NULL;
  dmoe_layer_desc back;
  dmoe_weights w, bad_w;
  dmoe_gradients g;
  tensor x, router, w1, w2, v1, y, dy, dx, drouter, dw1, dw2, dv1;
  size_t bytes = 0, layer_bytes = 0, i, k;
  double fwd = 0, bwd = 0;
  const float* d_losses = NULL;
  const float* d_weights = NULL;
  const int32_t *d_ids = NULL, *d_counts = NULL;
  const uint64_t* d_seed = NULL;
  uint64_t seed[2] = {0, 0};
  float* bias = (float*)calloc(E, sizeof(float));
  void* d_bias = NULL;
  float losses[2] = {-1, -1};
  float* weights = (float*)malloc(T * K * sizeof(float));
  int32_t* ids = (int32_t*)malloc(T * K * sizeof(int32_t));
  int32_t* counts = (int32_t*)malloc(E * sizeof(int32_t));
  long* histogram = (long*)calloc(E, sizeof(long));
  long total = 0;
  if (!weights || !ids || !counts || !histogram || !bias) abort();

  x = make_tensor(dev, T * H, 1.0f);
  router = make_tensor(dev, E * H, 1.0f / sqrtf((float)H));
  w1 = make_tensor(dev, E * F * H, 1.0f / sqrtf((float)H));
  w2 = make_tensor(dev, E * F * H, 1.0f / sqrtf((float)F));
  v1 = make_tensor(dev, gated ? E * F * H : 8, 1.0f / sqrtf((float)H));
  y = make_tensor(dev, T * H, 1.0f);
  dy = make_tensor(dev, T * H, 1.0f);
  dx = make_tensor(dev, T * H, 1.0f);
  drouter = make_tensor(dev, E * H, 1.0f);
  dw1 = make_tensor(dev, E * F * H, 1.0f);
  dw2 = make_tensor(dev, E * F * H, 1.0f);
  dv1 = make_tensor(dev, gated ? E * F * H : 8, 1.0f);
  w.router = router.dev, w.w1 = w1.dev, w.w2 = w2.dev, w.v1 = gated ? v1.dev : NULL, w.expert_bias = NULL;
  if (use_bias) {
    bias[0] = 2.0f; /* above any probability: expert 0 wins the selection, its weight stays its probability */
    EXPECT_OK(dmoe_device_alloc(dev, E * sizeof(float), &d_bias));
    EXPECT_OK(dmoe_device_copy_to_device(dev, d_bias, bias, E * sizeof(float), NULL));
    w.expert_bias = (const float*)d_bias;
  }
  g.dx = dx.dev, g.drouter = drouter.dev, g.dw1 = dw1.dev, g.dw2 = dw2.dev, g.dv1 = gated ? dv1.dev : NULL;

  /* The layer on a second handle to the same GPU, destroyed at once: the layer keeps it alive. */
  counter.device = dev, counter.live = 0, counter.total = 0, counter.live_bytes = 0;
  alloc.allocate = counting_allocate, alloc.deallocate = counting_deallocate, alloc.user = &counter;
  if (!EXPECT_OK(dmoe_device_create(0, &own))) goto done;
  if (!EXPECT_OK(dmoe_layer_create(own, desc, use_allocator ? &alloc : NULL, &layer))) goto done;
  EXPECT_OK(dmoe_device_destroy(own));
  if (!EXPECT_OK(dmoe_context_create(layer, &ctx))) goto done;
  if (use_allocator) CHECK(counter.live > 0);

  EXPECT_OK(dmoe_layer_get_desc(layer, &back));
  CHECK(memcmp(&back, desc, sizeof back) == 0);
  EXPECT_OK(dmoe_layer_bytes(layer, &layer_bytes));
  CHECK(layer_bytes > 0);
  EXPECT_OK(dmoe_context_bytes(ctx, &bytes));
  CHECK(bytes > 0);
  /* Every device byte the layer and its context hold came from the allocator, and is what they report. */
  if (use_allocator) CHECK(counter.live_bytes == layer_bytes + bytes);
  EXPECT_OK(dmoe_layer_flops(layer, &fwd, &bwd));
  CHECK(fwd == (gated ? 3.0 : 2.0) * 2.0 * (double)T * (double)K * (double)H * (double)F && bwd > fwd);

  /* Refusals, before anything is enqueued. */
  EXPECT(dmoe_layer_forward(layer, NULL, &w, y.dev, ctx, NULL), DMOE_INVALID_ARGUMENT, "x is");
  EXPECT(dmoe_layer_forward(layer, (const char*)x.dev + 2, &w, y.dev, ctx, NULL), DMOE_INVALID_ARGUMENT,
         "not 16-byte aligned");
  EXPECT(dmoe_layer_forward(layer, x.dev, &w, (char*)y.dev + 8, ctx, NULL), DMOE_INVALID_ARGUMENT,
         "not 16-byte aligned");
  EXPECT(dmoe_layer_forward(layer, x.dev, &w, NULL, ctx, NULL), DMOE_INVALID_ARGUMENT, "y is");
  EXPECT(dmoe_layer_forward(layer, x.dev, NULL, y.dev, ctx, NULL), DMOE_INVALID_ARGUMENT, "weights is NULL");
  EXPECT(dmoe_layer_forward(layer, x.dev, &w, y.dev, NULL, NULL), DMOE_INVALID_ARGUMENT, "context is NULL");
  bad_w = w, bad_w.w1 = NULL;
  EXPECT(dmoe_layer_forward(layer, x.dev, &bad_w, y.dev, ctx, NULL), DMOE_INVALID_ARGUMENT, "w1 is");
  bad_w = w, bad_w.v1 = gated ? NULL : v1.dev;
  EXPECT(dmoe_layer_forward(layer, x.dev, &bad_w, y.dev, ctx, NULL), DMOE_INVALID_ARGUMENT, "v1");
  EXPECT(dmoe_layer_backward(layer, dy.dev, &w, ctx, &g, NULL), DMOE_INVALID_ARGUMENT, "no forward");
  EXPECT(dmoe_layer_backward(layer, dy.dev, &w, ctx, NULL, NULL), DMOE_INVALID_ARGUMENT, "grads is NULL");
  if (!use_allocator && EXPECT_OK(dmoe_layer_create(dev, desc, NULL, &other)) &&
      EXPECT_OK(dmoe_context_create(other, &other_ctx)))
    EXPECT(dmoe_layer_forward(layer, x.dev, &w, y.dev, other_ctx, NULL), DMOE_INVALID_ARGUMENT, "another layer");
  dmoe_context_destroy(other_ctx);
  dmoe_layer_destroy(other);

  /* Jitter: the seed is settable, and each forward records its {seed, offset}. */
  EXPECT_OK(dmoe_context_jitter_seed(ctx, &d_seed));
  CHECK((desc->jitter_eps > 0) == (d_seed != NULL));
  if (desc->jitter_eps > 0) EXPECT_OK(dmoe_layer_set_seed(layer, 1234));
  else EXPECT(dmoe_layer_set_seed(layer, 1234), DMOE_INVALID_ARGUMENT, "jitter is off");

  /* Forward into poisoned y. */
  EXPECT_OK(dmoe_device_fill_u8(dev, y.dev, 0xFF, y.n * 2, NULL));
  if (!EXPECT_OK(dmoe_layer_forward(layer, x.dev, &w, y.dev, ctx, NULL))) goto done;
  EXPECT_OK(dmoe_device_synchronize(dev, NULL));
  check_output(dev, &y, "forward y");

  /* The routing: ids in range and distinct per token, weights in (0, 1], counts their histogram. */
  EXPECT_OK(dmoe_context_losses(ctx, &d_losses));
  EXPECT_OK(dmoe_context_expert_ids(ctx, &d_ids));
  EXPECT_OK(dmoe_context_weights(ctx, &d_weights));
  EXPECT_OK(dmoe_context_counts(ctx, &d_counts));
  EXPECT_OK(dmoe_device_copy_to_host(dev, losses, d_losses, sizeof losses, NULL));
  EXPECT_OK(dmoe_device_copy_to_host(dev, ids, d_ids, T * K * sizeof(int32_t), NULL));
  EXPECT_OK(dmoe_device_copy_to_host(dev, weights, d_weights, T * K * sizeof(float), NULL));
  EXPECT_OK(dmoe_device_copy_to_host(dev, counts, d_counts, E * sizeof(int32_t), NULL));
  CHECK(isfinite(losses[0]) && losses[0] > 0 && isfinite(losses[1]) && losses[1] >= 0);
  if (d_seed) {
    EXPECT_OK(dmoe_device_copy_to_host(dev, seed, d_seed, sizeof seed, NULL));
    CHECK(seed[0] == 1234 && seed[1] == 0);
  }
  for (i = 0; i < T * K; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || (size_t)id >= E || !(weights[i] > 0 && weights[i] <= 1)) {
      CHECK(!"expert id in [0, E) and weight in (0, 1]");
      fprintf(stderr, "  assignment %zu: expert %d, weight %g\n", i, (int)id, (double)weights[i]);
      break;
    }
    ++histogram[id];
    for (k = i - i % K; k < i; ++k)
      if (ids[k] == id) CHECK(!"distinct experts per token");
  }
  for (i = 0; i < E; ++i) {
    CHECK(counts[i] == histogram[i]);
    total += counts[i];
  }
  CHECK(total == (long)(T * K));
  if (use_bias) {
    CHECK(counts[0] == (int32_t)T);
    for (i = 0; i < T; ++i)
      if (ids[i * K] != 0 || !(weights[i * K] < 1)) {
        CHECK(!"expert 0 first with its unbiased probability as weight");
        break;
      }
  }

  /* Backward into poisoned gradients; a second backward is refused. */
  EXPECT_OK(dmoe_device_fill_u8(dev, dx.dev, 0xFF, dx.n * 2, NULL));
  EXPECT_OK(dmoe_device_fill_u8(dev, drouter.dev, 0xFF, drouter.n * 2, NULL));
  EXPECT_OK(dmoe_device_fill_u8(dev, dw1.dev, 0xFF, dw1.n * 2, NULL));
  EXPECT_OK(dmoe_device_fill_u8(dev, dw2.dev, 0xFF, dw2.n * 2, NULL));
  EXPECT_OK(dmoe_device_fill_u8(dev, dv1.dev, 0xFF, dv1.n * 2, NULL));
  if (!EXPECT_OK(dmoe_layer_backward(layer, dy.dev, &w, ctx, &g, NULL))) goto done;
  EXPECT_OK(dmoe_device_synchronize(dev, NULL));
  check_output(dev, &dx, "backward dx");
  check_output(dev, &drouter, "backward drouter");
  check_output(dev, &dw1, "backward dw1");
  check_output(dev, &dw2, "backward dw2");
  if (gated) check_output(dev, &dv1, "backward dv1");
  EXPECT(dmoe_layer_backward(layer, dy.dev, &w, ctx, &g, NULL), DMOE_INVALID_ARGUMENT, "no forward");

done:
  /* The layer first: its context keeps it alive until destroyed. */
  EXPECT_OK(dmoe_layer_destroy(layer));
  EXPECT_OK(dmoe_context_destroy(ctx));
  if (use_allocator) CHECK(counter.live == 0 && counter.live_bytes == 0 && counter.total > 0);
  free_tensor(dev, &x), free_tensor(dev, &router), free_tensor(dev, &w1), free_tensor(dev, &w2);
  free_tensor(dev, &v1), free_tensor(dev, &y), free_tensor(dev, &dy), free_tensor(dev, &dx);
  free_tensor(dev, &drouter), free_tensor(dev, &dw1), free_tensor(dev, &dw2), free_tensor(dev, &dv1);
  EXPECT_OK(dmoe_device_free(dev, d_bias));
  free(weights), free(ids), free(counts), free(histogram), free(bias);
}

static void test_gpu(dmoe_device* dev) {
  dmoe_device_properties props;
  dmoe_device* none = NULL;
  dmoe_layer_desc d;
  dmoe_layer* layer = NULL;
  void* p = (void*)&props;

  EXPECT_OK(dmoe_device_get_properties(dev, &props));
  CHECK(props.name[0] != '\0' && props.cc_major >= 7 && props.sm_count > 0 && props.global_bytes > 0);
  printf("GPU: %s (sm_%d%d, %d SMs)\n", props.name, props.cc_major, props.cc_minor, props.sm_count);
  EXPECT(dmoe_device_create(1000, &none), DMOE_NO_GPU, "ordinal 1000");
  CHECK(none == NULL);
  EXPECT_OK(dmoe_device_alloc(dev, 0, &p));
  CHECK(p == NULL);
  EXPECT_OK(dmoe_device_free(dev, NULL));
  EXPECT(dmoe_device_copy_to_host(dev, NULL, &props, 4, NULL), DMOE_INVALID_ARGUMENT, "dst is NULL");

  /* A failing allocator: out of memory, no layer. */
  {
    dmoe_allocator broke;
    broke.allocate = never_allocate, broke.deallocate = never_deallocate, broke.user = NULL;
    d = tiny();
    EXPECT(dmoe_layer_create(dev, &d, &broke, &layer), DMOE_OUT_OF_MEMORY, "out of memory");
    CHECK(layer == NULL);
  }

  d = tiny();
  printf("layer tiny (plain, GELU-tanh), cuMemAlloc\n");
  run_layer(dev, &d, 0, 0);
  d = tiny(), d.gated = 1, d.activation = DMOE_ACTIVATION_SILU, d.renorm_p = 1, d.z_weight = 0.001f;
  printf("layer tiny (gated, SiLU, renorm 1, z-loss), counting allocator\n");
  run_layer(dev, &d, 1, 0);
  d = tiny(), d.recompute = 1, d.jitter_eps = 0.05f;
  printf("layer tiny (plain, GELU-tanh, recompute, jitter, expert bias), counting allocator\n");
  run_layer(dev, &d, 1, 1);
}

int main(int argc, char** argv) {
  dmoe_device* dev = NULL;
  dmoe_status status;
  (void)argc, (void)argv; /* gpu-tests.sh passes doctest flags */

  /* DMOE_NO_GPU, on any machine: the driver is loaded on first use, re-reading DMOE_LIBCUDA until a
   * load succeeds. */
  setenv("DMOE_LIBCUDA", "/nonexistent/libcuda-for-c-api-test.so", 1);
  EXPECT(dmoe_device_create(0, &dev), DMOE_NO_GPU, "/nonexistent/libcuda-for-c-api-test.so");
  CHECK(dev == NULL);
  unsetenv("DMOE_LIBCUDA");

  test_accessors();
  test_presets();
  test_validate();
  test_null_handles();

  status = dmoe_device_create(0, &dev);
  if (status == DMOE_OK) {
    test_gpu(dev);
    EXPECT_OK(dmoe_device_destroy(dev));
  } else {
    /* No GPU here: the failure must be DMOE_NO_GPU with a reason. */
    expect(status, DMOE_NO_GPU, "no ", "dmoe_device_create(0, &dev)", __FILE__, __LINE__);
    CHECK(dev == NULL);
    printf("SKIPPED the GPU part (layer forward/backward through the C ABI): %s\n", dmoe_last_error());
  }

  printf("c_api_test: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
