/* files.h: the few file-system operations runexp needs, done safely: every output file is
 * written whole to a temporary name, flushed to disk and renamed into place, so a crash leaves
 * either the old file or the new one, never a torn one. Also a growable string buffer. */
#ifndef RUNEXP_FILES_H
#define RUNEXP_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Writes len bytes to path atomically (temporary file, fsync, rename, fsync of the folder). */
int write_file_atomic(const char *path, const void *data, size_t len, char *err);
/* Creates path and its missing parents, like mkdir -p. */
int make_dirs(const char *path, char *err);
/* Reads a whole file into a new buffer (NUL-terminated for text); the caller frees it. */
int read_file(const char *path, char **data, size_t *len, char *err);

typedef struct strbuf {
    char *s;      /* NUL-terminated; NULL until the first append */
    size_t len, cap;
    bool oom;     /* an append failed; s holds what fit before */
} strbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void sb_printf(strbuf *b, const char *fmt, ...);
void sb_append(strbuf *b, const void *data, size_t len);
/* Appends s as a JSON string literal, quotes and escapes included. */
void sb_json_string(strbuf *b, const char *s);
void sb_free(strbuf *b);

#endif
