/* evaluate.h: the loss, accuracy and per-class counts of the current weights on a split, with
 * the data plugin's test-time views averaged (mirror, shifts), and optionally the confusion
 * matrix and the first batch's images with their predictions. Also runexp.evaluate's entry:
 * a checkpoint measured without a run folder. */
#ifndef RUNEXP_EVALUATE_H
#define RUNEXP_EVALUATE_H

#include "observer.h"
#include "record.h"
#include "trainer.h"

/* A stop request (interrupt.h) came: the evaluation stopped at a batch's end. */
enum { EVAL_STOPPED = -2 };

/* confusion (nclasses^2 counts, [true * nclasses + predicted]) and samples may be NULL. Returns
 * 0, -1 on failure, or EVAL_STOPPED (err says so) after a stop request. */
int evaluate_split(trainer *t, rx_split split, eval_result *e, int64_t *confusion, sample_batch *samples, char *err);

/* The logits of samples [first, first + n) of split (n at most the batch size), averaged over the
 * test-time views as evaluate_split averages them, into t->host_logits (n, classes). For
 * predict.c, whose samples have no labels to score. */
int evaluate_logits(trainer *t, rx_split split, int64_t first, int64_t n, char *err);

/* Loads a checkpoint of c's network and measures it on a split; no run folder is made. */
int evaluate_checkpoint(const config *c, const char *checkpoint, rx_split split, eval_result *e, char *err);

#endif
