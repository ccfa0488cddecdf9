/* regular.h: opening only regular files. A data plugin that opens a FIFO, a device or a socket
 * where it expects a data file would block for ever (or read garbage); these refuse what is not
 * a regular file and say what was found instead ("PATH: is a FIFO, expected a regular file"),
 * as the host's core/files.c does for the files it reads (plugins see no host symbols). */
#ifndef RX_COMMON_REGULAR_H
#define RX_COMMON_REGULAR_H

#include <stdio.h>
#include <sys/types.h>

#include "runexp.h"

/* open(path, flags, mode) of a regular file only (or, with O_CREAT, of a new one): what is not
 * one is refused before the open and again after it, which is made with O_NONBLOCK so that a
 * FIFO put there in between cannot block it. Symbolic links are followed. Returns the
 * descriptor (blocking, close-on-exec), or -1 after rx_fail, errno kept from the failing call
 * (ENOENT: no such file). */
int open_regular(rx_ctx *ctx, const char *path, int flags, mode_t mode);
/* The same for reading, as a stream; NULL after rx_fail. */
FILE *fopen_regular(rx_ctx *ctx, const char *path);

#endif
