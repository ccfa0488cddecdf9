/* create.c: the create and destroy steps plugins share (create.h). */
#include <stdlib.h>
#include <string.h>

#include "create.h"

int plugin_new_self(void **self, rx_ctx *ctx, const void *init, size_t size)
{
    void *s = malloc(size);
    if (!s) return rx_fail(ctx, "out of memory");
    memcpy(s, init, size);
    *self = s;
    return 0;
}

void plugin_free_self(void *self) { free(self); }

int layer_elementwise_info(rx_ctx *ctx, rx_shape in, size_t state_bytes, rx_layer_info *info)
{
    if (in.ndim < 1) return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    info->out = in;
    info->ntensors = 0;
    info->state_bytes = state_bytes;
    info->workspace_bytes = 0;
    return 0;
}
