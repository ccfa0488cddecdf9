/* checked.h: sizes computed from what a user or a plugin gave (a batch size, a shape, the
 * bytes a layer keeps per sample), with every multiply and add checked, and the one message for
 * a size that cannot be had: it names the key and the value the size came from.
 *
 *     cifar10.lua: data.batch_size = 9223372036854775807: the batch's inputs (batch x 3072 floats)
 *     need 1.1e+23 bytes, more than any size can hold
 *
 * A wrapped size is a small allocation and then a write far past it; a checked one is a message.
 * The bounds below are where a value cannot be meant, so sizes past them are refused outright. */
#ifndef RUNEXP_CHECKED_H
#define RUNEXP_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runexp.h"

/* The largest size anything is asked for: what malloc and pointer differences can express. */
#define CHECKED_MAX_BYTES ((size_t)PTRDIFF_MAX)
/* Dimensions and batches beyond 2^31 - 1: plugins may index one with an int, and none is meant. */
#define CHECKED_MAX_DIM INT32_MAX
/* Elements of one per-sample shape or declared tensor (2^40, 4 TiB of floats): a bound no real
 * sample or tensor reaches, low enough that a fixed small count of them never overflows. */
#define CHECKED_MAX_ELEMENTS ((int64_t)1 << 40)

static inline bool checked_mul(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool checked_add(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool checked_mul_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool checked_add_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

/* count * per * elem bytes into *out (count, per >= 0); false when a count is negative or the
 * product overflows or passes CHECKED_MAX_BYTES. */
static inline bool checked_bytes(int64_t count, int64_t per, size_t elem, size_t *out)
{
    size_t n;
    return count >= 0 && per >= 0 && checked_mul((size_t)count, (size_t)per, &n) && checked_mul(n, elem, out) &&
           *out <= CHECKED_MAX_BYTES;
}

/* The elements of shape s into *out; false when a dimension is below 1 or above CHECKED_MAX_DIM
 * or the product passes CHECKED_MAX_ELEMENTS. rx_numel is safe on a shape that passed. */
bool checked_numel(rx_shape s, int64_t *out);

/* The physical memory of this machine, in bytes (SIZE_MAX when unknown): no one buffer, and no
 * one set of buffers allocated together, can be larger and still be used. */
size_t checked_host_memory(void);

/* Where a size came from, for the message: the file (or "command line"), the key, its value. */
typedef struct size_origin {
    const char *file;
    const char *key;
    long long value;
} size_origin;

/* Writes "<file>: <key> = <value>: <what> need(s) <bytes> bytes, <why>" into err (ERR_LEN
 * bytes) and returns -1. what is printf-formatted; bytes is the size as a double (exact enough
 * for a message, and never overflowing); why follows from it: more than any size can hold, more
 * than this machine's memory, or out of memory (an allocation of that size failed). */
int size_error(char *err, const size_origin *o, double bytes, const char *what, ...)
    __attribute__((format(printf, 4, 5)));

#endif
