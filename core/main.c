/* main.c: the runexp command line: `runexp CONFIG.lua [key=value ...]`. Everything that can go
 * wrong arrives here as one line of text, printed once, with a non-zero exit. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "train.h"

#define RUNEXP_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: runexp CONFIG.lua [key=value ...]\n"
            "       runexp --help | --version\n"
            "\n"
            "Runs the experiment that CONFIG.lua returns. Each key=value overrides the config,\n"
            "with dotted keys and values typed as Lua reads them, e.g.\n"
            "  runexp configs/cifar10.lua epochs=1 optim.lr=0.05 data.path=/x device=cpu out=runs/x\n"
            "\n"
            "Plugins are searched in $RUNEXP_PLUGIN_PATH (colon separated), then next to the\n"
            "executable (build/plugins), then in the install prefix (lib/runexp/plugins).\n");
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
    plugin_path path;
    plugin_path_default(&path);
    config c;
    run_summary s;
    char err[ERR_LEN] = "";
    int rc = 1;
    if (config_load(&c, &path, argv[1], argc - 2, argv + 2, err) == 0 && train_run(&c, stdout, &s, err) == 0) rc = 0;
    fflush(stdout);
    if (rc != 0) fprintf(stderr, "runexp: %s\n", err);
    config_free(&c);
    return rc;
}
