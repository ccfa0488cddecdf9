/* regular.c: opening only regular files (see regular.h). */
#include "regular.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a file of mode m is, for the message. */
static const char *kind_of(mode_t m)
{
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISDIR(m)) return "a folder";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    return S_ISBLK(m) ? "a block device" : "a special file";
}

/* -1 after rx_fail, errno e kept for the caller. */
static int fail_with(rx_ctx *ctx, int e, const char *path, const char *why, const char *kind)
{
    rx_fail(ctx, "%s: %s%s%s", path, why, kind, *kind ? ", expected a regular file" : "");
    errno = e;
    return -1;
}

int open_regular(rx_ctx *ctx, const char *path, int flags, mode_t mode)
{
    struct stat st = { 0 };
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return fail_with(ctx, EINVAL, path, "is ", kind_of(st.st_mode));
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) return fail_with(ctx, errno, path, "cannot open: ", strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { /* swapped for something else since the check */
        close(fd);
        return fail_with(ctx, EINVAL, path, "is ", kind_of(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return fail_with(ctx, e, path, "cannot open: ", strerror(e));
    }
    return fd;
}

FILE *fopen_regular(rx_ctx *ctx, const char *path)
{
    int fd = open_regular(ctx, path, O_RDONLY, 0);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (fd >= 0 && !f) {
        int e = errno;
        close(fd);
        fail_with(ctx, e, path, "cannot open: ", strerror(e));
    }
    return f;
}
