/* Fuzz target: the safetensors reader (checkpoint_parse) on any bytes, expecting two tensors as
 * a real checkpoint would name them. It must refuse bad input with a message, never crash. */
#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float w[6], b[2];
    ckpt_tensor t[2] = { { .name = "0.weight", .shape = { 2, { 2, 3 } }, .data = w },
                         { .name = "0.bias", .shape = { 1, { 2 } }, .data = b } };
    ckpt_meta_buf meta;
    char err[ERR_LEN];
    checkpoint_parse("fuzz.safetensors", (const char *)data, size, t, 2, &meta, err);
    return 0;
}
