/* data.c: the helpers data.h declares, once for every data set plugin. */
#include "data.h"

int data_check_split(rx_ctx *ctx, rx_split split)
{
    if ((int)split < 0 || split >= RX_NSPLITS) return rx_fail(ctx, "unknown split %d", (int)split);
    return 0;
}

void data_shuffle_indices(int32_t *v, int64_t n, rx_rng rng)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rx_rng_below(&rng, (uint64_t)i + 1);
        int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
