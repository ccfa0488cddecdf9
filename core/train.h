/* train.h: one experiment, start to end: train and validate each epoch, keep the best
 * checkpoint by validation loss, then test it. The machinery is trainer.c's, the files
 * run_dir.c's, the measuring evaluate.c's, the pictures and the report observer.c's; this is
 * the loop that drives them. A run can be resumed from its last checkpoint, bit for bit, and
 * stopped cleanly by a signal (interrupt.h). */
#ifndef RUNEXP_TRAIN_H
#define RUNEXP_TRAIN_H

#include <stdio.h>

#include "config.h"
#include "record.h"

enum { TRAIN_FAILED = -1, TRAIN_INTERRUPTED = -2 };
/* A flag beside run_dir.h's: the run is one of a script's (runexp.train), whose results go back
 * to the script; at the normal log level it prints its epoch lines only. */
enum { TRAIN_IN_SCRIPT = 4 };

/* Runs c, printing progress to log as c->log says; flags (run_dir.h's RUN_RESTART,
 * RUN_ALLOW_CHANGES) say what a resume may do, TRAIN_IN_SCRIPT who prints the results. Returns 0, TRAIN_FAILED, or TRAIN_INTERRUPTED after a stop request, which is
 * honoured at any moment: before the run folder is made (nothing is written), in a batch, in
 * validation or the test (last.safetensors holds where the run stands, and err says how to
 * resume). On failure err holds one line, and no output of the run is left half-written. s gets
 * the results and the history (free with run_summary_free, whatever the result). */
int train_run(config *c, int flags, FILE *log, run_summary *s, char *err);

#endif
