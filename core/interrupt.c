/* interrupt.c: the stop flag (see interrupt.h). */
#include "interrupt.h"

#include <signal.h>

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    signal(sig, SIG_DFL); /* a second Ctrl-C ends the process at once */
}

void interrupt_handle_signals(void)
{
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
}

bool interrupt_requested(void)
{
    return stop_signal != 0;
}
