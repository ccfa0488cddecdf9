/* files.c: atomic writes, mkdir -p, opening only regular files, whole-file reads, UTF-8 and the
 * string buffer (see files.h). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sync_folder(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    return sync_folder(dir);
}

int write_file_atomic(const char *path, const void *data, size_t len, char *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) {
        snprintf(err, ERR_LEN, "%s: path too long", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, ERR_LEN, "%s: cannot create a temporary file: %s", path, strerror(errno));
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) goto fail;
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) goto fail;
    fsync_dir_of(path);
    return 0;
fail:
    snprintf(err, ERR_LEN, "%s: cannot write: %s", path, strerror(errno ? errno : EIO));
    if (fd >= 0) close(fd);
    unlink(tmp);
    return -1;
}

int make_dirs(const char *path, char *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        snprintf(err, ERR_LEN, "%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            snprintf(err, ERR_LEN, "%s: cannot create folder: %s", buf, strerror(errno));
            return -1;
        }
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, ERR_LEN, "%s: exists and is not a folder", buf);
            return -1;
        }
        *p = c;
        if (c == '\0') return 0;
    }
}

/* What a file of mode m is, for a message that says what was found instead of a regular file. */
static const char *file_kind(mode_t m)
{
    return S_ISFIFO(m) ? "a FIFO" : S_ISDIR(m) ? "a folder" : S_ISSOCK(m) ? "a socket" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : "a special file";
}

int file_check_regular(const char *path, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0 || S_ISREG(st.st_mode)) return 0;
    return errorf(err, "%s: is %s, expected a regular file", path, file_kind(st.st_mode));
}

int open_regular(const char *path, int flags, char *err)
{
    if (file_check_regular(path, err) != 0) return -1;
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        errorf(err, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st = { 0 };
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { /* swapped for something else since the check */
        errorf(err, "%s: is %s, expected a regular file", path, file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        errorf(err, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* All of the n bytes fd holds into buf. */
static int read_all(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

int read_file(const char *path, char **data, size_t *len, char *err)
{
    *data = NULL;
    *len = 0;
    int fd = open_regular(path, O_RDONLY, err);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, ERR_LEN, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        snprintf(err, ERR_LEN, "%s: out of memory reading %zu bytes", path, n);
        close(fd);
        return -1;
    }
    if (read_all(fd, buf, n) != 0) {
        snprintf(err, ERR_LEN, "%s: short read (expected %zu bytes)", path, n);
        free(buf);
        close(fd);
        return -1;
    }
    close(fd); /* read-only */
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

static bool sb_reserve(strbuf *b, size_t extra)
{
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

void sb_append(strbuf *b, const void *data, size_t len)
{
    if (!sb_reserve(b, len)) return;
    memcpy(b->s + b->len, data, len);
    b->len += len;
    b->s[b->len] = '\0';
}

void sb_printf(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t utf8_char_len(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    if (s[0] < 0x80) return s[0] ? 1 : 0;
    size_t n = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0) return 0; /* a continuation byte, or 0xf8-0xff */
    static const uint32_t MIN[5] = { 0, 0, 0x80, 0x800, 0x10000 }; /* below: an overlong form */
    uint32_t c = s[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < MIN[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    return n;
}

void sb_json_string(strbuf *b, const char *s)
{
    sb_append(b, "\"", 1);
    for (const char *c = s; *c;) {
        unsigned char u = (unsigned char)*c;
        size_t n = utf8_char_len(c);
        if (u == '"' || u == '\\') sb_printf(b, "\\%c", u);
        else if (u < 0x20) sb_printf(b, "\\u%04x", u);
        else if (n) sb_append(b, c, n);
        else sb_append(b, UTF8_REPLACEMENT, 3);
        c += n ? n : 1;
    }
    sb_append(b, "\"", 1);
}

void sb_free(strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}
