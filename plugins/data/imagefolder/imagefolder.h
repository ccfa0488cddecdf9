/* imagefolder.h: what imagefolder.c (parameters, splits, normalization, batches, the descriptor)
 * and scan.c (the folder walk, the cache) share: the list of image files found, and the decoded
 * images the cache holds. */
#ifndef RX_DATA_IMAGEFOLDER_H
#define RX_DATA_IMAGEFOLDER_H

#include <stdint.h>

#include "runexp.h"
#include "picture.h"

#define IF_MAX_SIDE 1024 /* size's largest side: the images are held decoded, in memory */

/* Where a file came from: ROOT/train, ROOT/val or ROOT/test, or ROOT itself (one folder, split
 * by valid_fraction and test_fraction). */
typedef enum { IF_FROM_TRAIN = 0, IF_FROM_VAL = 1, IF_FROM_TEST = 2, IF_FROM_ROOT = 3 } if_origin;

typedef struct if_file {
    char *path;       /* relative to the root, e.g. "train/cat/001.png" */
    int64_t bytes;    /* size and modification time, which the cache is checked against */
    int64_t mtime_ns;
    int32_t label;    /* index into the sorted class names */
    uint8_t origin;   /* if_origin */
} if_file;

/* Everything under the root, in a fixed order: origin, then class, then path (bytewise). */
typedef struct if_list {
    if_file *files;
    int64_t n, cap;
    char **classes;   /* (nclasses) folder names, sorted bytewise */
    int nclasses;
    bool split_layout; /* train/ (val/, test/) rather than the classes at the root */
} if_list;

/* Walks ROOT into *l: refuses an empty class folder, class sets that differ between train/,
 * val/ and test/, and a root with no class folder; errors name the folder. */
int if_scan(rx_ctx *ctx, const char *root, if_list *l);
void if_list_free(if_list *l);

/* The images of l, decoded and fitted to (3, h, w) each, into *pixels (n, 3, h, w), malloc'd:
 * read from the cache file CACHE when it was made from exactly these files (names, sizes,
 * modification times) at this size and fit, else decoded anew (every core at once) and the cache
 * rewritten atomically. A file that does not decode fails the whole call, naming the file. */
int if_load_images(rx_ctx *ctx, const char *root, const if_list *l, const char *cache, int h, int w,
                   picture_fit fit, uint8_t **pixels);

#endif
