/* interrupt.h: SIGINT and SIGTERM ask the running experiment to stop. The training loop looks
 * after every batch, saves last.safetensors and returns; a second signal ends the process at
 * once. The flag the handler sets is the host's one global variable: a signal handler can reach
 * nothing else. */
#ifndef RUNEXP_INTERRUPT_H
#define RUNEXP_INTERRUPT_H

#include <stdbool.h>

/* Installs the handlers; call once at start. */
void interrupt_handle_signals(void);
/* Whether a stop was asked for. */
bool interrupt_requested(void);

#endif
