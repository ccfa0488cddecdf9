/* main.c: the runexp command line. Everything that can go wrong arrives here as one line of
 * text, printed once, with a non-zero exit status (1 failed, 2 usage, 130 stopped by a signal). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "checked.h"
#include "crash.h"
#include "export.h"
#include "dist.h"
#include "files.h"
#include "run_dir.h"
#include "script.h"
#include "sweep_file.h"
#include "interrupt.h"
#include "predict.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: runexp CONFIG.lua [key=value ...]   run the experiment(s) CONFIG.lua describes\n"
            "       runexp resume RUN_DIR [key=value ...] [--allow-changes] [--restart]\n"
            "                                              continue a stopped or crashed run, from where\n"
            "                                              it stood; --allow-changes: even with a config\n"
            "                                              that differs from the one it started with;\n"
            "                                              --restart: start the run in RUN_DIR over\n"
            "       runexp merge SWEEP_DIR                 join a sharded sweep's results (shard=I/N) into\n"
            "                                              SWEEP_DIR/sweep.csv and sweep.html\n"
            "       runexp plugins                         list the plugins found, with their parameters\n"
            "       runexp check PLUGIN [key=value ...] [--shape=3,8,8] [--batch=4] [--seed=1] [--speed=0.2]\n"
            "                                              test a layer or loss plugin: gradients, writes,\n"
            "                                              determinism, speed\n"
            "       runexp export RUN_DIR|CHECKPOINT model.onnx [--opset N]\n"
            "                                              the trained network as an ONNX file (opset 17\n"
            "                                              by default), for ONNX Runtime and serving tools\n"
            "       runexp predict RUN_DIR|CHECKPOINT IMAGE|FOLDER ... [--top=3] [--json] [--resize=resize|crop]\n"
            "                                              classify PNG and JPEG files with a trained run\n"
            "       runexp --help | --version\n"
            "\n"
            "-q (--quiet) prints only errors and each run's result line, -v (--verbose) everything (the\n"
            "resolved config, the data, each best checkpoint, the test per class); the default prints a\n"
            "line per epoch and the result. They set the config's log = \"quiet\" | \"verbose\".\n"
            "\n"
            "key=value overrides the config with dotted keys, typed as Lua reads them:\n"
            "  runexp configs/cifar10.lua epochs=1 optim.lr=0.05 data.path=/x device=cpu out=runs/x\n"
            "  epochs=5 is an integer, optim.lr=1e-3 a number, optim.nesterov=true a boolean,\n"
            "  lrs={0.1,0.01} a table, anything else a string.\n"
            "\n"
            "Ctrl-C (or SIGTERM) stops within a second, whatever the run is doing: the current\n"
            "batch finishes, RUN_DIR/last.safetensors is saved, and the command that resumes is\n"
            "printed (exit status 130); a second Ctrl-C ends runexp at once. Plugins are searched in $RUNEXP_PLUGIN_PATH (colon separated),\n"
            "then next to the executable (build/plugins), then in the install prefix\n"
            "(lib/runexp/plugins); never in the current folder.\n");
}

/* `runexp resume DIR ...` is `runexp DIR/config.lua out=DIR resume=true ...`; --restart and
 * --allow-changes, anywhere among the arguments, set s->run_flags. */
static int resume(script *s, const char *dir, int argc, char **argv, char *err)
{
    char file[PATH_MAX], out[PATH_MAX + 8];
    if (snprintf(file, sizeof file, "%s/config.lua", dir) >= (int)sizeof file) {
        snprintf(err, ERR_LEN, "%s: path too long", dir);
        return SCRIPT_FAILED;
    }
    snprintf(out, sizeof out, "out=%s", dir);
    char **args = malloc(sizeof *args * (size_t)(argc + 2));
    if (!args) return snprintf(err, ERR_LEN, "out of memory"), SCRIPT_FAILED;
    args[0] = out;
    args[1] = "resume=true";
    int n = 2;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--restart") == 0) s->run_flags |= RUN_RESTART;
        else if (strcmp(argv[i], "--allow-changes") == 0) s->run_flags |= RUN_ALLOW_CHANGES;
        else if (argv[i][0] == '-') {
            free(args);
            snprintf(err, ERR_LEN, "resume: unknown option '%s' (known: --allow-changes, --restart)", argv[i]);
            return SCRIPT_FAILED;
        } else args[n++] = argv[i];
    }
    s->noverrides = n;
    s->overrides = args;
    int rc = script_run(s, file, err);
    free(args);
    return rc;
}

/* A whole number from 1 to CHECKED_MAX_DIM (a dimension or a batch), the rest of the text in
 * *end; false for anything else (a sign, junk, a number past the bound). */
static bool parse_count(const char *text, char **end, long long *v)
{
    errno = 0;
    *v = strtoll(text, end, 10);
    return *end != text && errno == 0 && *text != '-' && *text != '+' && *v >= 1 && *v <= CHECKED_MAX_DIM;
}

/* "--shape=3,8,8" into a per-sample shape; its elements are checked by check_plugin. */
static int parse_shape(const char *text, rx_shape *s)
{
    s->ndim = 0;
    for (const char *p = text; *p;) {
        char *end;
        long long v;
        if (!parse_count(p, &end, &v) || s->ndim == RX_MAX_DIMS - 1) return -1;
        s->d[s->ndim++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return s->ndim ? 0 : -1;
}

/* `runexp check NAME [key=value ...] [--shape=...] [--batch=N] [--seed=N] [--speed=SECONDS]` */
static int check(const plugin_path *path, int argc, char **argv)
{
    check_options o = { .in = { 3, { 3, 8, 8 } }, .batch = 4, .seed = 1, .out = stdout };
    const char *name = argv[0];
    lua_State *L = config_lua_state();
    if (!L) return fprintf(stderr, "runexp: out of memory creating a Lua state\n"), 1;
    luaL_openlibs(L);
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    char err[ERR_LEN] = "";
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        if (strncmp(argv[i], "--shape=", 8) == 0) {
            if (parse_shape(argv[i] + 8, &o.in) != 0)
                rc = snprintf(err, sizeof err, "'%s': expected --shape=C,H,W, at most %d dimensions of 1 to %d",
                              argv[i], RX_MAX_DIMS - 1, CHECKED_MAX_DIM);
        } else if (strncmp(argv[i], "--batch=", 8) == 0) {
            char *end;
            long long v;
            if (!parse_count(argv[i] + 8, &end, &v) || *end)
                rc = snprintf(err, sizeof err, "'%s': expected a batch of 1 to %d samples", argv[i], CHECKED_MAX_DIM);
            o.batch = v;
        } else if (strncmp(argv[i], "--seed=", 7) == 0) {
            char *end;
            errno = 0;
            o.seed = strtoull(argv[i] + 7, &end, 10);
            if (end == argv[i] + 7 || *end || errno || argv[i][7] == '-')
                rc = snprintf(err, sizeof err, "'%s': expected a seed from 0 to 18446744073709551615", argv[i]);
        } else if (strncmp(argv[i], "--speed=", 8) == 0) {
            char *end;
            errno = 0;
            o.speed_seconds = strtod(argv[i] + 8, &end);
            if (end == argv[i] + 8 || *end || errno || !(o.speed_seconds > 0 && o.speed_seconds <= 3600))
                rc = snprintf(err, sizeof err, "'%s': expected the seconds the speed row takes, more than 0 and at "
                              "most 3600", argv[i]);
        } else if (config_override(L, -1, argv[i], err) != 0) {
            rc = 1;
        }
    }
    config c = { 0 };
    plugin_use u = { 0 };
    if (rc == 0) {
        /* A layer or a loss: its descriptor says which, and the arguments are read for that kind. */
        static const rx_kind checked[] = { RX_LAYER, RX_LOSS };
        plugin found;
        rc = plugin_load_any(path, checked, 2, name, &found, err, sizeof err) == 0 ? 0 : 1;
        if (rc == 0) {
            const rx_kind kind = found.desc->kind;
            plugin_unload(&found);
            rc = config_read_plugin(&c, L, -1, kind, path, "command line", &u, err) == 0 ? 0 : 1;
        }
    }
    int failures = rc == 0 ? check_plugin(&u, &o, err) : -1;
    plugin_unload(&u.pl);
    config_free(&c);
    lua_close(L);
    if (failures < 0) fprintf(stderr, "runexp: %s\n", err);
    return failures == 0 ? 0 : 1;
}

/* -q (--quiet) and -v (--verbose), anywhere among a run's or a resume's arguments: taken out of
 * argv and given back as the override log=quiet or log=verbose (the last one wins), which comes
 * after the config's own `log`, so the command line wins. NULL when neither is there. */
static char *take_log_level(int *argc, char **argv)
{
    char *level = NULL;
    int n = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) level = "log=quiet";
        else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) level = "log=verbose";
        else argv[n++] = argv[i];
    }
    *argc = n;
    argv[n] = NULL;
    return level;
}

/* OpenMP's threads spin at every barrier by default. On a machine shared with other work (a CI
 * runner, a laptop, a VM with busy neighbours) the spinning thread holds a core the working one
 * needs, and a 2-thread run fell to a tenth of its speed; sleeping instead costs a few
 * microseconds per parallel region, nothing next to a layer's milliseconds. The runtime reads
 * OMP_WAIT_POLICY once, as it loads, so runexp starts itself again with it set, unless the user
 * chose a policy. */
static void prefer_passive_threads(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run on as we are */
}

/* `runexp merge SWEEP_DIR`: a sharded sweep's results joined into sweep.csv and sweep.html. */
static int merge_main(int argc, char **argv)
{
    char err[ERR_LEN];
    if (argc != 3) {
        fprintf(stderr, "runexp: merge needs the sweep's folder, and only it: runexp merge SWEEP_DIR\n");
        return 2;
    }
    if (sweep_merge(argv[2], stdout, err) == 0) return 0;
    fflush(stdout);
    fprintf(stderr, "runexp: %s\n", err);
    return 1;
}

/* A config run, or a run resumed, on this process or as one rank of many (mpirun, srun). */
static int run_main(script *s, int argc, char **argv)
{
    char err[ERR_LEN] = "";
    int rc;
    /* Under mpirun or srun: every rank runs the config; rank 0 alone prints (see dist.h). */
    if (dist_init(&argc, &argv, err) != 0) return fprintf(stderr, "runexp: %s\n", err), 1;
    FILE *quiet = dist_rank() != 0 ? fopen("/dev/null", "w") : NULL;
    if (quiet) s->log = quiet;
    if (strcmp(argv[1], "resume") == 0) {
        if (argc < 3) {
            fprintf(stderr, "runexp: resume needs the run folder: runexp resume RUN_DIR [key=value ...]\n");
            return 2;
        }
        rc = resume(s, argv[2], argc - 3, argv + 3, err);
    } else {
        s->noverrides = argc - 2;
        s->overrides = argv + 2;
        rc = script_run(s, argv[1], err);
    }
    fflush(stdout);
    if (rc != SCRIPT_OK && !quiet) fprintf(stderr, "runexp: %s\n", err);
    if (quiet) fclose(quiet);
    dist_finalize();
    /* mpirun ends the job when a rank fails, and may then drop what rank 0 has yet to pass on
     * (the one message saying why): the other ranks leave last. */
    if (rc != SCRIPT_OK && quiet) usleep(300000);
    return rc;
}

int main(int argc, char **argv)
{
    prefer_passive_threads(argv);
    bool other_verb = argc >= 2 && (strcmp(argv[1], "check") == 0 || strcmp(argv[1], "plugins") == 0);
    char *level = other_verb ? NULL : take_log_level(&argc, argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("runexp %s (plugin ABI %d, revision %s)\n", RUNEXP_VERSION, RX_ABI_VERSION, build_revision());
        return 0;
    }
    if (argv[1][0] == '-') {
        fprintf(stderr, "runexp: unknown option '%s' (try runexp --help)\n", argv[1]);
        return 2;
    }
    script s = { .log = stdout, .command = argv[0] };
    plugin_path_default(&s.path);
    if (strcmp(argv[1], "plugins") == 0) {
        script_print_plugins(&s.path, stdout);
        return 0;
    }
    if (strcmp(argv[1], "merge") == 0) return merge_main(argc, argv);
    if (strcmp(argv[1], "check") == 0) {
        if (argc < 3) {
            fprintf(stderr, "runexp: check needs a plugin name: runexp check PLUGIN [key=value ...]\n");
            return 2;
        }
        return check(&s.path, argc - 2, argv + 2);
    }
    if (level) { /* room: taking the option out freed a slot, and argv[argc] was NULL */
        argv[argc++] = level;
        argv[argc] = NULL;
    }
    interrupt_handle_signals();
    crash_handle_signals();
    /* A file-size limit (ulimit -f) or a full disk should fail a write with a message, not kill. */
    signal(SIGXFSZ, SIG_IGN);
    if (strcmp(argv[1], "export") == 0) return export_main(&s.path, argc - 2, argv + 2);
    if (strcmp(argv[1], "predict") == 0) return predict_main(&s.path, argc - 2, argv + 2);
    return run_main(&s, argc, argv);
}
