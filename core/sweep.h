/* sweep.h: runexp.map, a list of experiments run side by side, their results in the order given.
 *
 *   runexp.map(experiments [, { jobs = N, dir = SWEEP_DIR, labels = { ... } }]) -> results
 *
 * results[i] is what runexp.train(experiments[i]) returns, with ok = true and label; a training
 * that fails (or whose process dies) leaves { ok = false, error = "...", label, run_dir } in its
 * place and never stops the others. Where the trainings run:
 *   jobs=1      in this process, one after another (runexp.train in a loop; the default)
 *   jobs=N      in up to N forked processes at once, each experiment's output in
 *               DIR/results/I.log; the machine's cores are shared out (threads = cores / N)
 *               unless an experiment or the command line sets threads
 *   ranks       under mpirun or srun (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE,
 *               SLURM_PROCID/NTASKS), rank r runs every size-th experiment from the r-th;
 *               rank 0 waits for the others' result files in DIR (a shared file system) and
 *               returns them all; the other ranks end (status 0) after their share
 *   shard=I/N   (command line; I from 0) only experiments I+1, I+1+N, ...; the process ends
 *               after them, and `runexp merge DIR` joins the shards' results. shard=auto
 *               takes I and N from a Slurm job array (SLURM_ARRAY_TASK_ID - _MIN, _COUNT).
 * With a dir, every result is also written as DIR/results/I.result (sweep_file.h) and the
 * collecting process writes DIR/sweep.csv and DIR/sweep.html. A training forked with the same
 * config and thread count gives the same weights, bit for bit, as the same training in-process. */
#ifndef RUNEXP_SWEEP_H
#define RUNEXP_SWEEP_H

#include <lua.h>
#include <stdbool.h>

#include "error.h"

#define SWEEP_MAX_JOBS 1024

typedef struct sweep_cli {
    int jobs;           /* jobs=N from the command line; 0 when not given */
    int shard, shards;  /* shard=I/N, I from 0; shards 0 when not given */
} sweep_cli;

struct script;

/* Takes jobs= and shard= out of s's overrides (they are runexp's, for runexp.map, never an
 * experiment's keys) into s->sweep. Returns 0, or -1 with the message in err. */
int sweep_take_overrides(struct script *s, char *err);

/* runexp.map, a Lua C function whose first upvalue is the script. */
int sweep_map(lua_State *L);

#endif
