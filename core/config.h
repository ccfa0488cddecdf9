/* config.h: an experiment as the host sees it, read from a Lua config.
 *
 * A config is a Lua program that returns a table (see README "The config"). Command-line
 * `key=value` overrides are applied to that table, then every value is checked against what
 * the host and each plugin accept, and converted into plain typed values (rx_value) in the
 * order of each plugin's parameter list. Errors name the file and the place: `model[4] (conv2d)`.
 */
#ifndef RUNEXP_CONFIG_H
#define RUNEXP_CONFIG_H

#include "files.h"
#include "plugin.h"

#define CONFIG_MAX_ARGS 64

/* One plugin as the config uses it: which one, where, and its arguments. */
typedef struct plugin_use {
    char where[96];            /* "model[4] (conv2d)", "optim (sgd)": the place, for messages */
    char name[72];
    int index;                 /* position in the model list, from 0 (PyTorch's Sequential index) */
    plugin pl;                 /* loaded and validated */
    rx_value args[CONFIG_MAX_ARGS]; /* in the order of pl.desc->params, defaults filled in */
} plugin_use;

typedef struct config {
    char file[PATH_MAX];
    plugin_use data, loss, optim;
    int nlayers;
    plugin_use *layers;        /* (nlayers) */
    int64_t epochs, seed, threads, batch_size;
    double lr;
    char device[16];           /* "auto", "cpu" or "cuda" */
    char out[PATH_MAX];        /* run folder; "" means the default under runs/ */
    bool resume;               /* continue the run in `out` from its last checkpoint */
    int nstrings;
    char **strings;            /* copies of every string argument, freed with the config */
} config;

typedef struct lua_State lua_State;

/* Reads the experiment table at index idx of L: checks it against what the host and each plugin
 * accept, loads the plugins it names from the path, then does the same for a copy with the
 * overrides ("a.b=value") applied; the table itself is left untouched. Messages blame `file`,
 * or the command line for what only the overrides got wrong. On failure writes a one-line
 * message to err (ERR_LEN bytes) and returns -1; c needs config_free either way. */
int config_from_table(config *c, lua_State *L, int idx, const plugin_path *path, const char *file,
                      int noverrides, char *const *overrides, char *err);
/* Reads one plugin use ("name" or {"name", key = value}) at idx into u, checked against the
 * plugin's parameters; strings are kept in c. Messages blame `origin`. */
int config_read_plugin(config *c, lua_State *L, int idx, rx_kind kind, const plugin_path *path, const char *origin,
                       plugin_use *u, char *err);
/* Applies one "a.b=value" override to the table at idx (a Lua error may escape: call it from Lua). */
int config_override(lua_State *L, int idx, const char *arg, char *err);
/* Runs FILE in a fresh Lua state (without the runexp module) and reads the table it returns. */
int config_load(config *c, const plugin_path *path, const char *file, int noverrides,
                char *const *overrides, char *err);
void config_free(config *c);

/* The resolved config, every default filled in, as a Lua program that runexp can run again. */
void config_to_lua(const config *c, strbuf *b);

/* The value of one argument of a plugin use, by key (NULL if the plugin has no such key). */
const rx_value *config_arg(const plugin_use *u, const char *key);

#endif
