/* files.h: the few file-system operations runexp needs, done safely: every output file is
 * written whole to a temporary name, flushed to disk and renamed into place, so a crash leaves
 * either the old file or the new one, never a torn one; every input file is opened only when it
 * is a regular file, so a FIFO or a device put in its place is refused, not waited on. Also a
 * growable string buffer whose JSON strings are always valid UTF-8. */
#ifndef RUNEXP_FILES_H
#define RUNEXP_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Writes len bytes to path atomically (temporary file, fsync, rename, fsync of the folder). */
int write_file_atomic(const char *path, const void *data, size_t len, char *err);
/* Flushes a folder's entries (a file or folder renamed into it) to disk; -1 when it cannot. */
int sync_folder(const char *dir);
/* Creates path and its missing parents, like mkdir -p. */
int make_dirs(const char *path, char *err);
/* Reads a whole regular file into a new buffer (NUL-terminated for text); the caller frees it. */
int read_file(const char *path, char **data, size_t *len, char *err);
/* open(path, flags), but only of a regular file: what is not one (a FIFO, a device, a socket,
 * a folder) is refused, before the open and again after it, which is made with O_NONBLOCK so
 * that a FIFO put there in between cannot block it ("PATH: is a FIFO, expected a regular
 * file"). Symbolic links are followed. Returns the descriptor (blocking, close-on-exec), or -1
 * with the message in err and errno kept from the failing call (ENOENT: no such file). */
int open_regular(const char *path, int flags, char *err);
/* -1 and the same message when path exists and is not a regular file; 0 otherwise (a missing
 * file is left to the opener to report). For paths opened by others: Lua's loader would block
 * on a FIFO. */
int file_check_regular(const char *path, char *err);

/* U+FFFD, the replacement character, in UTF-8: what output text holds in place of bytes that
 * are not UTF-8, so every JSON file parses and every HTML page is valid UTF-8. */
#define UTF8_REPLACEMENT "\xef\xbf\xbd"
/* The length (1 to 4) of the well-formed UTF-8 character s starts with; 0 at the string's end
 * and where the bytes are no such character (a stray or missing continuation byte, an overlong
 * form, a surrogate, past U+10FFFF). */
size_t utf8_char_len(const char *s);

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
/* Appends s as a JSON string literal, quotes and escapes included; bytes that are not UTF-8
 * become U+FFFD, control characters \u escapes. */
void sb_json_string(strbuf *b, const char *s);
void sb_free(strbuf *b);

#endif
