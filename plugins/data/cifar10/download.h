/* download.h: what cifar10.c calls in download.c to get the data set's archive onto the disk
 * safely (download.c's top comment says how). Each returns 0, or -1 after rx_fail with a line
 * that names the file or URL. */
#ifndef RX_DATA_CIFAR10_DOWNLOAD_H
#define RX_DATA_CIFAR10_DOWNLOAD_H

#include <stddef.h>

#include <openssl/evp.h> /* EVP_MAX_MD_SIZE, for the size of dl_digest's hex */

#include "runexp.h"

/* DIR/NAME into out (PATH_MAX bytes); fails when it does not fit. */
int dl_join(rx_ctx *ctx, char *out, const char *dir, const char *name);

/* mkdir -p PATH. *made: length of the outermost prefix of PATH this call created, 0 when it
 * created nothing, so that dl_unmake_dirs can take exactly those away again. */
int dl_make_dirs(rx_ctx *ctx, const char *path, size_t *made);
/* Removes the folders dl_make_dirs created for PATH, innermost first; folders something else
 * has put files in stay. */
void dl_unmake_dirs(const char *path, size_t made);

/* Fetches URL (http, https or file) into PART, continuing from what PART already holds; LABEL
 * is shown before the progress bar. On failure PART keeps what came, for the next run to
 * continue from, or is removed if it holds nothing. */
int dl_fetch(rx_ctx *ctx, const char *url, const char *part, const char *label);

/* The ALGO ("md5", "sha256") digest of FILE as lowercase hex into hex (2 * EVP_MAX_MD_SIZE + 1). */
int dl_digest(rx_ctx *ctx, const char *file, const char *algo, char *hex);

/* Checks an extracted folder before it goes into place; fails with a reason naming ARCHIVE. */
typedef int (*dl_check_fn)(rx_ctx *ctx, const char *dir, const char *archive);

/* FOLDER/ of the .tar.gz ARCHIVE becomes the folder DEST (in PARENT): extracted into a
 * temporary folder beside it, checked by CHECK, flushed to disk and renamed, so DEST is either
 * absent (or the empty folder it was) or complete, whenever the process stops. */
int dl_extract_into_place(rx_ctx *ctx, const char *archive, const char *folder, const char *dest,
                          const char *parent, dl_check_fn check);

#endif
