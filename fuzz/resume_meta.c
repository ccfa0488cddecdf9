/* Fuzz target: the resume metadata of last.safetensors (run_position_read, then
 * run_position_check) on any text. The input's first line gives the run's shape, "EPOCHS
 * BATCHES" (each clamped to 1 .. 10^6, as the config's bounds keep them); each further line is
 * one metadata entry "key=value". Whatever the values, the reader and the check must refuse
 * with a message or accept, never crash; and what they accept must be a position a run can
 * stand at, or the target aborts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_dir.h"

static int64_t clamp(long long v) { return v < 1 ? 1 : v > 1000000 ? 1000000 : v; }

/* Lines "key=value" of text into m, cut to fit as checkpoint_parse keeps them. */
static void read_entries(char *text, ckpt_meta_buf *m)
{
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && m->n < CKPT_MAX_META;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        snprintf(m->key[m->n], sizeof m->key[0], "%s", line);
        snprintf(m->value[m->n], sizeof m->value[0], "%s", eq + 1);
        m->n++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *rest = strchr(text, '\n');
    if (rest) *rest++ = '\0';
    char *end;
    long long e = strtoll(text, &end, 10), b = strtoll(end, NULL, 10);
    int64_t epochs = clamp(e), batches = clamp(b);
    ckpt_meta_buf m = { 0 };
    read_entries(rest ? rest : text + size, &m);
    run_position p;
    char err[ERR_LEN];
    if (run_position_read(&m, &p, "fuzz/last.safetensors", err) == 0 &&
        run_position_check(&p, epochs, batches, "fuzz/last.safetensors", err) == 0) {
        bool sane = p.epochs_done <= epochs && p.batches_done <= batches && p.best_epoch <= p.epochs_done &&
                    p.step == p.epochs_done * batches + p.batches_done && isfinite(p.loss_sum) &&
                    isfinite(p.epoch_seconds) && isfinite(p.train_seconds) &&
                    (p.batches_done == 0 || p.epoch_seconds > 0) && (p.epochs_done == 0 || p.train_seconds > 0);
        if (!sane) abort();
    }
    free(text);
    return 0;
}
