/* create.h: what many plugins' create and destroy do alike: allocate a small self struct from a
 * filled-in value (and free it), and, for a layer that maps its input element by element (relu,
 * gelu, scale, dropout), check the input and declare an output of the same shape. One place, so
 * that their checks and messages stay the same words. */
#ifndef RX_COMMON_CREATE_H
#define RX_COMMON_CREATE_H

#include <stddef.h>

#include "runexp.h"

/* *self = a malloc'ed copy of the `size` bytes at init; 0, or -1 after rx_fail ("out of
 * memory"), *self then untouched. */
int plugin_new_self(void **self, rx_ctx *ctx, const void *init, size_t size);

/* The destroy of a plugin whose self is one block from plugin_new_self. */
void plugin_free_self(void *self);

/* The create of an elementwise layer: checks that the per-sample input has at least one
 * dimension, then declares out = in, no tensors, `state_bytes` of state per sample and no
 * workspace. 0, or -1 after rx_fail. */
int layer_elementwise_info(rx_ctx *ctx, rx_shape in, size_t state_bytes, rx_layer_info *info);

#endif
