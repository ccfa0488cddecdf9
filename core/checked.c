/* checked.c: shapes checked for overflow, the machine's memory, and the one message for a size
 * that cannot be had (see checked.h). */
#include "checked.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "error.h"

bool checked_numel(rx_shape s, int64_t *out)
{
    if (s.ndim < 0 || s.ndim > RX_MAX_DIMS) return false;
    int64_t n = 1;
    for (int i = 0; i < s.ndim; i++)
        if (s.d[i] < 1 || s.d[i] > CHECKED_MAX_DIM || !checked_mul_i64(n, s.d[i], &n) || n > CHECKED_MAX_ELEMENTS)
            return false;
    *out = n;
    return true;
}

size_t checked_host_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t bytes;
    if (pages <= 0 || page <= 0 || !checked_mul((size_t)pages, (size_t)page, &bytes)) return SIZE_MAX;
    return bytes;
}

/* "8.8e+12 bytes (8 TiB)": the figure, and the binary unit a reader takes in at a glance. */
static void format_bytes(double bytes, char *buf, size_t len)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB" };
    int u = -1;
    double x = bytes;
    while (x >= 1024 && u < 7) x /= 1024, u++;
    if (u < 0) snprintf(buf, len, "%.0f bytes", bytes);
    else snprintf(buf, len, "%.3g bytes (%.3g %s)", bytes, x, units[u]);
}

int size_error(char *err, const size_origin *o, double bytes, const char *what, ...)
{
    char thing[256], need[64], have[64], why[128];
    va_list ap;
    va_start(ap, what);
    vsnprintf(thing, sizeof thing, what, ap);
    va_end(ap);
    format_bytes(bytes, need, sizeof need);
    size_t host = checked_host_memory();
    format_bytes((double)host, have, sizeof have);
    if (!(bytes <= (double)CHECKED_MAX_BYTES)) snprintf(why, sizeof why, "more than any size can hold (it overflows)");
    else if (host != SIZE_MAX && bytes > (double)host) snprintf(why, sizeof why, "more than this machine's memory, %s", have);
    else snprintf(why, sizeof why, "and that much could not be allocated (out of memory)");
    return errorf(err, "%s: %s = %lld: %s needs %s, %s", o->file, o->key, o->value, thing, need, why);
}
