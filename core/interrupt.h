/* interrupt.h: SIGINT and SIGTERM ask the running experiment to stop, at any moment, within a
 * second: the training loop looks after every batch and saves last.safetensors, evaluation
 * (validation, the test) after every batch, the run before it makes its folder and between
 * epochs, and the config's Lua every few thousand instructions (script.c); each returns, and
 * runexp exits 130. A second signal ends the process at once. The flag the handler sets is the
 * host's one global variable: a signal handler can reach nothing else. */
#ifndef RUNEXP_INTERRUPT_H
#define RUNEXP_INTERRUPT_H

#include <stdbool.h>

/* Installs the handlers; call once at start. */
void interrupt_handle_signals(void);
/* Whether a stop was asked for. */
bool interrupt_requested(void);

#endif
