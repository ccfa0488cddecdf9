/* crash.c: see crash.h. The two pointers below are globals because a signal handler can reach
 * nothing else; they are written before and after each plugin call, read only by the handler. */
#include "crash.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static const char *volatile crash_where;
static const char *volatile crash_op;

static void write_str(const char *s)
{
    if (s && write(STDERR_FILENO, s, strlen(s)) < 0) return;
}

/* Only async-signal-safe calls here: write(2), then the default action. */
static void on_crash(int sig)
{
    const char *where = crash_where, *op = crash_op;
    write_str("\nrunexp: crashed with ");
    write_str(sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE" : "SIGILL");
    if (where) {
        write_str(" in ");
        write_str(where);
        write_str(": ");
        write_str(op);
        write_str(" (a bug in that plugin; the run folder keeps its last whole files)\n");
    } else {
        write_str(" outside any plugin call (a bug in runexp)\n");
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void crash_handle_signals(void)
{
    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGFPE, on_crash);
    signal(SIGILL, on_crash);
}

void crash_enter(const char *where, const char *op)
{
    crash_op = op;
    crash_where = where;
}

void crash_leave(void)
{
    crash_where = NULL;
}
