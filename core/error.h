/* error.h: how the host reports a failure. Every `char *err` in core/ points at ERR_LEN bytes
 * and receives one line that says what was wrong and where; the function then returns -1 (or
 * NULL), and the one place that prints messages (main.c, or a Lua error in script.c) shows it. */
#ifndef RUNEXP_ERROR_H
#define RUNEXP_ERROR_H

#include <stdarg.h>
#include <stdio.h>

#define ERR_LEN 1024

/* Writes the message into err and returns -1, so that `return errorf(err, ...)` reads well. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline int errorf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

#endif
