/* checkpoint.h: the network's parameters as a safetensors file (https://github.com/huggingface/
 * safetensors): float32 tensors named and shaped as PyTorch's nn.Sequential names them
 * ("0.weight" (16, 3, 3, 3), ...), so a checkpoint loads into PyTorch as it is, and back. */
#ifndef RUNEXP_CHECKPOINT_H
#define RUNEXP_CHECKPOINT_H

#include "net.h"

#define CKPT_NAME_LEN 96

typedef struct ckpt_tensor {
    char name[CKPT_NAME_LEN];
    rx_shape shape;
    float *data;   /* host memory, numel(shape) floats */
} ckpt_tensor;

typedef struct ckpt_meta {
    const char *key, *value;
} ckpt_meta;

/* Writes the tensors and string metadata to path, atomically. */
int checkpoint_write(const char *path, const ckpt_tensor *t, int n, const ckpt_meta *meta, int nmeta,
                     char *err);
/* Reads path into the given tensors, matched by name: every one must be present, with dtype F32
 * and the same shape, and the file must hold no others. Nothing is written on failure. */
int checkpoint_read(const char *path, ckpt_tensor *t, int n, char *err);

/* The whole network's parameters, with the epoch it was saved at in the metadata. */
int checkpoint_save_net(const net *nt, const char *path, int64_t epoch, double valid_loss, char *err);
int checkpoint_load_net(net *nt, const char *path, char *err);

#endif
