// dmoe/dmoe.h from C++ with pedantic warnings as errors: the extern "C" block and the struct layouts a
// binding relies on (fixed offsets, no padding). Built, never run: a failure is a build failure.
#include "dmoe/dmoe.h"

#include <cstddef>

static_assert(sizeof(dmoe_layer_desc) == 80);
static_assert(offsetof(dmoe_layer_desc, tokens) == 40);
static_assert(offsetof(dmoe_layer_desc, dtype) == 48);
static_assert(offsetof(dmoe_layer_desc, lbl_weight) == 64);
static_assert(offsetof(dmoe_layer_desc, z_weight) == 68);
static_assert(offsetof(dmoe_layer_desc, recompute) == 72);
static_assert(offsetof(dmoe_layer_desc, jitter_eps) == 76);
static_assert(sizeof(dmoe_weights) == 5 * sizeof(void*));
static_assert(offsetof(dmoe_weights, expert_bias) == 4 * sizeof(void*));
static_assert(sizeof(dmoe_gradients) == 5 * sizeof(void*));
static_assert(sizeof(dmoe_device_properties) == 256 + 4 * 4 + 2 * 8 + 2 * 4);
static_assert(sizeof(dmoe_status) == sizeof(int));

// Every function is a C function: taking its address as a C function pointer type compiles.
extern "C" {
typedef dmoe_status (*dmoe_forward_fn)(dmoe_layer*, const void*, const dmoe_weights*, void*, dmoe_context*, void*);
}
dmoe_forward_fn dmoe_header_check_forward = &dmoe_layer_forward;
