/* script.h: a config run as a Lua program, with the `runexp` module in its state.
 *
 * A config that returns a table is one experiment, run once. A config that calls the module
 * runs as many as it likes, and reads their results back as tables:
 *   runexp.train(cfg)                 run one experiment; its summary and per-epoch history
 *   runexp.evaluate(checkpoint, cfg [, split])   test saved weights ("test", "valid", "train")
 *   runexp.predict(run_or_checkpoint, images [, options])   classify picture files (predict.h)
 *   runexp.with(base, changes)        a deep-merged copy; base is left untouched
 *   runexp.options(defaults)          the script's own options, with key=value overrides applied
 *   runexp.plugins()                  every plugin found, with kind, summary and parameters
 *   runexp.write_file(path, text)     an atomic write (folders created), e.g. for a sweep's table
 *   runexp.sweep_report(path, rows)   one HTML page: every run's curves and the results table
 *   runexp.map(experiments [, options])   experiments side by side, results in order (sweep.h)
 *   runexp.dir                        the folder of the running config, for dofile
 * Command-line key=value overrides apply to every experiment the program runs, except those
 * that runexp.options takes for the script itself. */
#ifndef RUNEXP_SCRIPT_H
#define RUNEXP_SCRIPT_H

#include <stdio.h>

#include "plugin.h"
#include "sweep.h"
#include "version.h"


typedef struct script {
    plugin_path path;
    int noverrides;
    char *const *overrides;
    bool *taken;            /* (noverrides) overrides runexp.options consumed */
    FILE *log;
    const char *file;       /* the config being run */
    bool interrupted;       /* a run was stopped by SIGINT / SIGTERM */
    int run_flags;          /* run_dir.h's RUN_RESTART, RUN_ALLOW_CHANGES: what a resume may do */
    bool in_experiment;     /* the host runs an experiment, which stops at its own points */
    sweep_cli sweep;        /* jobs= and shard= from the command line, for runexp.map */
    bool share_done;        /* runexp.map ran this process's share of a sweep another collects */
    bool computed_here;     /* a training, evaluation or prediction ran in this process: OpenMP's threads
                             * exist, and a forked child would wait for them for ever */
    const char *command;    /* how runexp was invoked (argv[0]); NULL: "runexp" */
    const char *label;      /* the label of the experiment runexp.map runs in this process now, or NULL */
} script;

enum { SCRIPT_OK = 0, SCRIPT_FAILED = 1, SCRIPT_INTERRUPTED = 130 };

/* Runs FILE with the overrides; returns a SCRIPT_* exit status, with a one-line message in err
 * (ERR_LEN bytes) unless SCRIPT_OK. A stop request (interrupt.h) ends the config's Lua too, as
 * an error at the line it was running, and makes the status SCRIPT_INTERRUPTED. */
int script_run(script *s, const char *file, char *err);

/* Runs the experiment table at idx as runexp.train does and pushes its results; returns 0, or
 * TRAIN_FAILED / TRAIN_INTERRUPTED with the message in err and nothing pushed. */
int script_train(lua_State *L, script *s, int idx, char *err);
/* runexp.sweep_report(path, rows), a Lua C function (no upvalues). */
int script_sweep_report(lua_State *L);

/* `runexp plugins`: every plugin found, readable. */
void script_print_plugins(const plugin_path *p, FILE *out);

#endif
