/* main.c: the runexp command line. Everything that can go wrong arrives here as one line of
 * text, printed once, with a non-zero exit status (1 failed, 2 usage, 130 stopped by a signal). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "script.h"
#include "train.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: runexp CONFIG.lua [key=value ...]   run the experiment(s) CONFIG.lua describes\n"
            "       runexp resume RUN_DIR [key=value ...]  continue a stopped or crashed run\n"
            "       runexp plugins                         list the plugins found, with their parameters\n"
            "       runexp --help | --version\n"
            "\n"
            "key=value overrides the config with dotted keys, typed as Lua reads them:\n"
            "  runexp configs/cifar10.lua epochs=1 optim.lr=0.05 data.path=/x device=cpu out=runs/x\n"
            "  epochs=5 is an integer, optim.lr=1e-3 a number, optim.nesterov=true a boolean,\n"
            "  lrs={0.1,0.01} a table, anything else a string.\n"
            "\n"
            "Ctrl-C lets the current batch finish, saves RUN_DIR/last.safetensors and prints the\n"
            "command that resumes. Plugins are searched in $RUNEXP_PLUGIN_PATH (colon separated),\n"
            "then next to the executable (build/plugins), then in the install prefix\n"
            "(lib/runexp/plugins); never in the current folder.\n");
}

/* `runexp resume DIR ...` is `runexp DIR/config.lua out=DIR resume=true ...`. */
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
    for (int i = 0; i < argc; i++) args[i + 2] = argv[i];
    s->noverrides = argc + 2;
    s->overrides = args;
    int rc = script_run(s, file, err);
    free(args);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("runexp %s (plugin ABI %d)\n", RUNEXP_VERSION, RX_ABI_VERSION);
        return 0;
    }
    if (argv[1][0] == '-') {
        fprintf(stderr, "runexp: unknown option '%s' (try runexp --help)\n", argv[1]);
        return 2;
    }
    script s = { .log = stdout };
    plugin_path_default(&s.path);
    if (strcmp(argv[1], "plugins") == 0) {
        script_print_plugins(&s.path, stdout);
        return 0;
    }
    train_handle_signals();
    char err[ERR_LEN] = "";
    int rc;
    if (strcmp(argv[1], "resume") == 0) {
        if (argc < 3) {
            fprintf(stderr, "runexp: resume needs the run folder: runexp resume RUN_DIR [key=value ...]\n");
            return 2;
        }
        rc = resume(&s, argv[2], argc - 3, argv + 3, err);
    } else {
        s.noverrides = argc - 2;
        s.overrides = argv + 2;
        rc = script_run(&s, argv[1], err);
    }
    fflush(stdout);
    if (rc != SCRIPT_OK) fprintf(stderr, "runexp: %s\n", err);
    return rc;
}
