/* crash.c: see crash.h. The pointers below are globals because a signal handler can reach
 * nothing else; they are written before and after each plugin call, read only by the handler.
 * Each thread that calls plugins keeps its own pair (net.c runs parts of a batch on several
 * threads at once); the shared pair names the latest call of any thread, for a crash in a
 * plugin's own worker threads, which call nothing themselves. */
#include "crash.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static _Thread_local const char *volatile crash_where;
static _Thread_local const char *volatile crash_op;
static const char *shared_where, *shared_op; /* written atomically: threads race to set them */

static void write_str(const char *s)
{
    if (s && write(STDERR_FILENO, s, strlen(s)) < 0) return;
}

/* Only async-signal-safe calls here: write(2), then the default action. */
static void on_crash(int sig)
{
    const char *where = crash_where, *op = crash_op;
    if (!where) {
        where = __atomic_load_n(&shared_where, __ATOMIC_RELAXED);
        op = __atomic_load_n(&shared_op, __ATOMIC_RELAXED);
    }
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
    __atomic_store_n(&shared_op, op, __ATOMIC_RELAXED);
    __atomic_store_n(&shared_where, where, __ATOMIC_RELAXED);
}

void crash_leave(void)
{
    crash_where = NULL;
    __atomic_store_n(&shared_where, NULL, __ATOMIC_RELAXED);
}
