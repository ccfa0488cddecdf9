/* data.h: what the data set plugins (cifar10, synthetic, imagefolder) share: the check of a split
 * argument, the seeded shuffle their split and epoch orders come from, a string parameter's
 * choices, and the normalization of 8-bit images: reported in rx_data_info and built into a table. */
#ifndef RX_COMMON_DATA_H
#define RX_COMMON_DATA_H

#include <stdint.h>

#include "runexp.h"

/* 0 for a known split, else -1 after rx_fail ("unknown split 7"). */
int data_check_split(rx_ctx *ctx, rx_split split);

/* In-place Fisher-Yates from rng: every permutation of v[0 .. n-1] equally likely, and the same
 * one for the same rng on every platform. */
void data_shuffle_indices(int32_t *v, int64_t n, rx_rng rng);

/* VALUE's position among the N accepted NAMES into *choice; anything else is refused with the key,
 * the accepted values and what was given. */
int data_parse_choice(rx_ctx *ctx, const char *key, const char *value, const char *const *names, int n, int *choice);

/* info's normalization (norm_channels, mean, std) for samples of CHANNELS channels (at most
 * RX_MAX_NORM), from mean and std holding 1 value (for every channel) or one per channel: what
 * the batches carry, and what `runexp export` and `runexp predict` read back. */
void data_set_normalization(rx_data_info *info, int channels, const rx_value *mean, const rx_value *std);

/* One table per channel of info's normalization so that normalizing a pixel is a lookup:
 * lut[c][v] = (v / 255 - mean[c]) / std[c], computed in float in the order torchvision does it,
 * so the values match PyTorch's bit for bit. */
void data_build_luts(float (*lut)[256], const rx_data_info *info);

#endif
