/* ema.c: the weights' moving average (see ema.h). */
#include "ema.h"

#include <math.h>

#include "device.h"
#include "error.h"

int ema_start(moving_average *m, rx_device d, double decay, const float *params, size_t n, char *err)
{
    *m = (moving_average){ .decay = decay, .device = d, .n = n };
    if (decay <= 0) return 0;
    m->avg = device_alloc(d, n * sizeof(float));
    m->trained = device_alloc(d, n * sizeof(float));
    if (!m->avg || !m->trained) return errorf(err, "out of memory for the moving average");
    device_copy(d, m->avg, params, n * sizeof(float));
    return 0;
}

void ema_free(moving_average *m)
{
    device_free(m->device, m->avg);
    device_free(m->device, m->trained);
    m->avg = m->trained = NULL;
}

void ema_update(moving_average *m, const rx_ctx *ctx, const float *params, int64_t t, size_t begin, size_t end)
{
    if (!m->avg || begin >= end) return;
    double d = fmin(m->decay, (1.0 + (double)t) / (10.0 + (double)t));
    device_axpby(m->device, ctx, end - begin, (float)(1 - d), params + begin, (float)d, m->avg + begin);
}

void ema_swap(moving_average *m, float *params, bool average_in)
{
    if (!m->avg) return;
    size_t bytes = m->n * sizeof(float);
    if (average_in) {
        device_copy(m->device, m->trained, params, bytes);
        device_copy(m->device, params, m->avg, bytes);
    } else {
        device_copy(m->device, params, m->trained, bytes);
    }
}
