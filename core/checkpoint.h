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

#define CKPT_MAX_META 32

/* String metadata read back from a file. */
typedef struct ckpt_meta_buf {
    int n;
    char key[CKPT_MAX_META][32];
    char value[CKPT_MAX_META][64];
} ckpt_meta_buf;

/* The value of KEY in m, or NULL. */
const char *ckpt_meta_get(const ckpt_meta_buf *m, const char *key);

/* Writes the tensors and string metadata to path, atomically. */
int checkpoint_write(const char *path, const ckpt_tensor *t, int n, const ckpt_meta *meta, int nmeta,
                     char *err);
/* Reads path into the given tensors, matched by name: every one must be present, with dtype F32
 * and the same shape, and the file must hold no others. Nothing is written on failure. The
 * metadata goes to meta unless it is NULL. */
int checkpoint_read(const char *path, ckpt_tensor *t, int n, ckpt_meta_buf *meta, char *err);
/* The same, from a file already in memory (path only names it in messages). */
int checkpoint_parse(const char *path, const char *file, size_t len, ckpt_tensor *t, int n, ckpt_meta_buf *meta,
                     char *err);

/* The network's parameters under PyTorch's names, plus `extra` tensors (host memory, e.g. the
 * optimizer's state) and metadata. */
int checkpoint_save_net(const net *nt, const char *path, const ckpt_tensor *extra, int nextra,
                        const ckpt_meta *meta, int nmeta, char *err);
/* Loads what checkpoint_save_net wrote, with the same extra tensors, into nt and extra. */
int checkpoint_load_net(net *nt, const char *path, ckpt_tensor *extra, int nextra, ckpt_meta_buf *meta,
                        char *err);

#endif
