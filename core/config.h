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
#include "schedule.h"

#define CONFIG_MAX_ARGS 64

typedef struct lua_State lua_State;

/* How the optimizer treats a layer's tensor named `tensor` ("*": every tensor of the layer that
 * no other rule names). A field left unset (NAN, -1) falls back to the "*" rule, then to the
 * optimizer's own setting. */
typedef struct tensor_rule {
    char tensor[32];
    double lr_scale;           /* this tensor's learning rate is lr * lr_scale */
    double weight_decay;       /* instead of optim.weight_decay */
    int frozen;                /* 1: never trained */
    int64_t train_epochs;      /* > 0: trained during the first train_epochs epochs only */
} tensor_rule;

#define CONFIG_MAX_RULES (RX_MAX_TENSORS + 1)

/* One plugin as the config uses it: which one, where, and its arguments. */
typedef struct plugin_use {
    char where[96];            /* "model[4] (conv2d)", "optim (sgd)": the place, for messages */
    char name[72];
    char path[48];             /* checkpoint prefix, PyTorch's module path: "4", or "4.1" inside a residual */
    plugin pl;                 /* loaded and validated */
    rx_value args[CONFIG_MAX_ARGS]; /* in the order of pl.desc->params, defaults filled in */
    /* Layers only: */
    int opens, closes;         /* residual blocks that begin before / end after this layer */
    int nrules;
    tensor_rule rules[CONFIG_MAX_RULES];
    char init[16];             /* "default"; "dirac": identity on the first channels; "whiten": from the data */
} plugin_use;

typedef struct config {
    char file[PATH_MAX];
    plugin_use data, loss, optim;
    int nlayers;
    plugin_use *layers;        /* (nlayers) */
    int64_t epochs, seed, threads, batch_size;
    double lr, weight_decay;   /* optim.lr and optim.weight_decay, read by the host */
    schedule sched;            /* optim.schedule, or optim.lr given as a function */
    double ema;                /* decay of the weights' moving average used for evaluation; 0: off */
    double clip_grad_norm;     /* > 0: gradients scaled down to this global L2 norm before each step */
    int64_t early_stop_patience; /* > 0: stop after this many epochs without the validation loss */
    double early_stop_min_delta; /* improving by more than min_delta; 0 patience: off */
    char log[16];              /* "quiet", "normal" or "verbose": what a run prints */
    lua_State *L;              /* the state holding a schedule function, or NULL */
    bool owns_L;               /* config_free closes it (config_load's own state) */
    char device[16];           /* "auto", "cpu" or "cuda" */
    char out[PATH_MAX];        /* run folder; "" means the default under runs/ */
    bool resume;               /* continue the run in `out` from its last checkpoint */
    char tensorboard[PATH_MAX]; /* TensorBoard's folder, relative to the run folder; "": none */
    const char *command;       /* how runexp was invoked (argv[0]), for the commands messages suggest */
    const char *label;         /* runexp.map's name for this run, before each of its epoch lines; NULL: none */
    int nstrings;
    char **strings;            /* copies of every string argument, freed with the config */
} config;

/* The command a message tells the user to run: as they invoked runexp ("build/runexp"). */
static inline const char *config_command(const config *c) { return c->command ? c->command : "runexp"; }

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
/* The memory a config's Lua state may take (1 GiB), and one command-line value's evaluation
 * (16 MiB): a config describes experiments, and a runaway one must stop with a message, not
 * take the machine. */
#define CONFIG_LUA_LIMIT ((size_t)1 << 30)
#define CONFIG_OVERRIDE_LIMIT (16 << 20)
/* A fresh Lua state (no libraries opened) whose allocations past CONFIG_LUA_LIMIT are refused;
 * lua_close closes it. NULL when out of memory. */
lua_State *config_lua_state(void);
/* After a Lua error in L: true, with "<origin>: the config's Lua used more than 1024 MiB ..." in
 * err, when it was L's memory limit (a state of config_lua_state's); else false, err untouched. */
bool config_lua_limit_reached(lua_State *L, const char *origin, char *err);
int config_load(config *c, const plugin_path *path, const char *file, int noverrides,
                char *const *overrides, char *err);
void config_free(config *c);

/* The resolved config, every default filled in, as a Lua program that runexp can run again. */
void config_to_lua(const config *c, strbuf *b);

/* The value of one argument of a plugin use, by key (NULL if the plugin has no such key). */
const rx_value *config_arg(const plugin_use *u, const char *key);

/* The first plugin of the run (data, loss, optim, then the layers) with no path on d, or NULL. */
const plugin_use *config_plugin_without(const config *c, rx_device d);
/* Refuses a plugin use that cannot run on device d, naming the file and the place:
 * "cifar10.lua: model[3] (conv2d): the plugin has no cuda implementation". */
int plugin_use_check_device(const config *c, const plugin_use *u, rx_device d, char *err);

/* The rule values that apply to tensor `name` of layer u, resolved. */
void config_tensor_rule(const config *c, const plugin_use *u, const char *name, tensor_rule *out);

/* ---- Lua values as the config reader takes them, for the readers of a config's parts
 * (schedule.c), so that their messages read like every other key's ---- */

/* "number 3.5", "string 'abc'", "table": what the value at idx is, for messages. */
void config_describe(lua_State *L, int idx, char *buf, size_t len);
/* Pushes the name in the "name" or {"name", key = value} at idx: the string, or the table's
 * first element (whatever either is: the caller checks). */
void config_push_name(lua_State *L, int idx);
/* Converts the value at idx into *v as p declares it, a string copied into c. On failure writes
 * what is wrong ("'every' must be an integer, got string 'x'") to msg (ERR_LEN bytes), without
 * the place, and returns -1. */
int config_convert(config *c, lua_State *L, int idx, const rx_param *p, rx_value *v, char *msg);
/* The index of key in the list ps (ended by a NULL key), or -1. */
int config_find_param(const rx_param *ps, const char *key);
/* "a, b, c": the keys of the lists a and b (b may be NULL), or "none", for messages. */
void config_list_keys(const rx_param *a, const rx_param *b, char *buf, size_t len);
/* x as Lua reads it back: the shortest decimal that gives the same double, a float to Lua. */
void config_lua_number(strbuf *b, double x);

#endif
