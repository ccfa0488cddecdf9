/* data.c: the helpers data.h declares, once for every data set plugin. */
#include "data.h"

#include <string.h>

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

int data_parse_choice(rx_ctx *ctx, const char *key, const char *value, const char *const *names, int n, int *choice)
{
    const char *v = value ? value : "";
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) {
            *choice = i;
            return 0;
        }
    char accepted[128] = "";
    for (int i = 0; i < n; i++) {
        size_t len = strlen(accepted);
        snprintf(accepted + len, sizeof accepted - len, "%s\"%s\"", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    }
    return rx_fail(ctx, "%s must be %s, got \"%s\"", key, accepted, v);
}

void data_set_normalization(rx_data_info *info, int channels, const rx_value *mean, const rx_value *std)
{
    info->norm_channels = channels;
    for (int c = 0; c < channels; c++) {
        info->mean[c] = mean->list[mean->len == 1 ? 0 : c];
        info->std[c] = std->list[std->len == 1 ? 0 : c];
    }
}

void data_build_luts(float (*lut)[256], const rx_data_info *info)
{
    for (int c = 0; c < info->norm_channels; c++) {
        float m = (float)info->mean[c], s = (float)info->std[c];
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - m) / s;
    }
}
