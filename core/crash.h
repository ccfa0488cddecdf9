/* crash.h: naming the plugin that crashed. Before each plugin call the host records which use of
 * which plugin it is entering; if the process then dies of SIGSEGV, SIGBUS, SIGFPE or SIGILL,
 * the handler prints one line naming it ("model[3] (conv2d): forward") and lets the signal
 * end the process as it would have. A crashed process cannot be trusted to go on, but the
 * user learns whose bug it was, and the run folder holds only whole files. */
#ifndef RUNEXP_CRASH_H
#define RUNEXP_CRASH_H

/* Installs the handlers; call once at start. */
void crash_handle_signals(void);
/* Records the plugin call about to run; `where` and `op` must outlive it. */
void crash_enter(const char *where, const char *op);
void crash_leave(void);

#endif
