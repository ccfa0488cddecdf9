/* config.c: from a Lua config file (plus key=value overrides) to a checked struct config.
 *
 * The table is read twice: once as the file wrote it, so that its mistakes are reported against
 * the file, and once more after the overrides, so that theirs are reported against the command
 * line. Each plugin's table is converted by the same routine, driven by the plugin's declared
 * parameter list plus the few keys the host itself reads there (data.batch_size, optim.lr). The
 * top-level keys that are plain values are one table, top_keys; optim.schedule is schedule.c's. */
#include "config.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "device.h"

/* One key of the top-level table that is a plain value (data, model, loss and optim are
 * plugins): read into its field of struct config, checked, and written back into the resolved
 * config. A key is one line of top_keys. */
typedef struct top_key {
    rx_param p;                 /* key, type, default, help */
    size_t offset, size;        /* its field: offsetof and sizeof in struct config */
    int order;                  /* its place in the resolved config's last line; 0: left out */
    const char *must;           /* NULL, or what a value must be, for the message: "at least 1" */
    double min, max;            /* with must, numbers: a value in [min, max) */
    const char *const *choices; /* with must, strings: one of these (NULL ended) */
    bool omit_default;          /* left out of the resolved config at its default (a feature off) */
    const char *if_true;        /* strings: what `true` stands for (false: the default), or NULL */
} top_key;

#define FIELD(f) .offset = offsetof(config, f), .size = sizeof ((config *)0)->f
static const char *const devices[] = { "auto", "cpu", "cuda", NULL };
static const char *const log_levels[] = { "quiet", "normal", "verbose", NULL };
/* In the order the message for an unknown key lists them. `out` is left out of the resolved
 * config: run again, that file repeats the run in a new folder (`runexp resume` names it). */
static const top_key top_keys[] = {
    { { .key = "epochs", .type = RX_INT, .def = { .i = 10 }, .help = "passes over the training set" },
      FIELD(epochs), .order = 1, .must = "at least 1", .min = 1, .max = INFINITY },
    { { .key = "seed", .type = RX_INT, .def = { .i = 1 }, .help = "seed for initialization, split, shuffles and dropout" },
      FIELD(seed), .order = 2 },
    { { .key = "threads", .type = RX_INT, .def = { .i = 0 }, .help = "CPU threads; 0 means every core" },
      FIELD(threads), .order = 3, .must = "0 (every core) or more", .min = 0, .max = INFINITY },
    { { .key = "device", .type = RX_STR, .def = { .s = "auto" }, .help = "auto, cpu or cuda" },
      FIELD(device), .order = 5, .must = "auto, cpu or cuda", .choices = devices },
    { { .key = "out", .type = RX_STR, .def = { .s = "" }, .help = "run folder; default runs/<config>-<time>" },
      FIELD(out) },
    { { .key = "resume", .type = RX_BOOL, .def = { .b = false }, .help = "continue the run in `out` where it stopped" },
      FIELD(resume) },
    { { .key = "ema", .type = RX_NUM, .def = { .num = 0 },
        .help = "evaluate a moving average of the weights with this decay per step (0: off)" },
      FIELD(ema), .order = 4, .must = "a decay in [0, 1) (0: off)", .min = 0, .max = 1 },
    { { .key = "clip_grad_norm", .type = RX_NUM, .def = { .num = 0 },
        .help = "scale the gradients down to this global L2 norm before each step (0: off)" },
      FIELD(clip_grad_norm), .order = 6, .must = "a finite number >= 0 (0: off)", .min = 0, .max = INFINITY,
      .omit_default = true },
    /* Left out of the resolved config: how much a run prints is no part of the experiment, and a
     * resume may print more or less. */
    { { .key = "log", .type = RX_STR, .def = { .s = "normal" }, .help = "quiet, normal or verbose (-q, -v)" },
      FIELD(log), .must = "quiet, normal or verbose", .choices = log_levels },
    { { .key = "tensorboard", .type = RX_STR, .def = { .s = "" },
        .help = "true (RUN/tensorboard) or a folder (relative: to the run folder): TensorBoard event files" },
      FIELD(tensorboard), .order = 7, .if_true = "tensorboard",
      .omit_default = true },
};
#undef FIELD
#define NTOP ((int)(sizeof top_keys / sizeof *top_keys))
static const char *const top_tables[] = { "data", "model", "loss", "optim", "early_stop" };

/* Keys the host reads inside a plugin's table, beside the plugin's own parameters. */
static const rx_param data_host_params[] = {
    { .key = "batch_size", .type = RX_INT, .def = { .i = 32 }, .help = "samples per batch" },
    { 0 },
};
static const rx_param optim_host_params[] = {
    { .key = "lr", .type = RX_NUM, .def = { .num = 0.01 }, .help = "learning rate (or a Lua function of the step)" },
    { .key = "weight_decay", .type = RX_NUM, .def = { .num = 0 }, .help = "weight decay of every trained tensor" },
    { .key = "schedule", .type = RX_STR, .def = { .s = "constant" },
      .help = "constant, or {\"step\", every=, gamma=}, {\"cosine\", warmup=, start=, final=}, {\"onecycle\", ...}" },
    { 0 },
};
/* Keys the host reads in every layer's table. */
static const rx_param layer_host_params[] = {
    { .key = "lr_scale", .type = RX_NUM, .help = "multiplies the learning rate (a number, or {tensor = number})" },
    { .key = "weight_decay", .type = RX_NUM, .help = "instead of optim.weight_decay (a number, or {tensor = number})" },
    { .key = "frozen", .type = RX_BOOL, .help = "never trained (true, or {tensor = true})" },
    { .key = "train_epochs", .type = RX_INT, .help = "trained in the first N epochs only (N, or {tensor = N})" },
    { .key = "init", .type = RX_STR, .def = { .s = "default" },
      .help = "default; dirac (a convolution starts as the identity on its first channels); whiten (from the data)" },
    { 0 },
};
static const rx_param no_params[] = { { 0 } };

typedef struct reader {
    config *c;
    lua_State *L;
    const plugin_path *path;
    const char *origin;   /* what a message blames: the file, or the command line */
    char *err;
} reader;

static int fail(reader *r, const char *where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(reader *r, const char *where, const char *fmt, ...)
{
    char msg[ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, ERR_LEN, "%s: %s%s%s", r->origin, where ? where : "", where ? ": " : "", msg);
    return -1;
}

static const char *keep_string(config *c, const char *s)
{
    char **grown = realloc(c->strings, sizeof *grown * (size_t)(c->nstrings + 1));
    if (!grown) return NULL;
    c->strings = grown;
    char *copy = strdup(s);
    if (copy) c->strings[c->nstrings++] = copy;
    return copy;
}

/* "number 3.5", "string 'abc'", "table": what a value is, for messages. */
void config_describe(lua_State *L, int idx, char *buf, size_t len)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER || t == LUA_TBOOLEAN || t == LUA_TSTRING) {
        const char *s = luaL_tolstring(L, idx, NULL);
        snprintf(buf, len, t == LUA_TSTRING ? "%s '%.60s'" : "%s %.60s", lua_typename(L, t), s);
        lua_pop(L, 1);
    } else {
        snprintf(buf, len, "%s", lua_typename(L, t));
    }
}

static const char *type_name(rx_type t)
{
    switch (t) {
    case RX_INT: return "an integer";
    case RX_NUM: return "a number";
    case RX_BOOL: return "a boolean";
    case RX_STR: return "a string";
    case RX_NUMS: return "a number or a list of numbers";
    }
    return "?";
}

/* An integer, or a float with an integral value that a double holds exactly. */
static bool to_int(lua_State *L, int idx, int64_t *i)
{
    if (lua_isinteger(L, idx)) {
        *i = lua_tointeger(L, idx);
        return true;
    }
    double d = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    if (d == floor(d) && fabs(d) < 9e15) {
        *i = (int64_t)d;
        return true;
    }
    return false;
}

/* A list of numbers (the table at idx) into v; -1 and msg when it is not one. */
static int to_nums(lua_State *L, int idx, const rx_param *p, rx_value *v, char *msg)
{
    lua_Integer n = luaL_len(L, idx);
    if (n > RX_MAX_LIST) return errorf(msg, "'%s' has %lld values, at most %d are allowed", p->key, (long long)n, RX_MAX_LIST);
    v->len = (int)n;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, idx, i) != LUA_TNUMBER) {
            char got[96];
            config_describe(L, -1, got, sizeof got);
            lua_pop(L, 1);
            return errorf(msg, "'%s'[%lld] must be a number, got %s", p->key, (long long)i, got);
        }
        v->list[i - 1] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return 0;
}

int config_convert(config *c, lua_State *L, int idx, const rx_param *p, rx_value *v, char *msg)
{
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    switch (p->type) {
    case RX_INT:
        if (to_int(L, idx, &v->i)) return 0;
        break;
    case RX_NUM:
        if (t == LUA_TNUMBER) return v->num = lua_tonumber(L, idx), 0;
        break;
    case RX_BOOL:
        if (t == LUA_TBOOLEAN) return v->b = lua_toboolean(L, idx), 0;
        break;
    case RX_STR:
        /* A number where text is wanted (out=123 on the command line) is taken as its text. */
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            lua_pushvalue(L, idx);
            v->s = keep_string(c, lua_tostring(L, -1)); /* converts the copy, not the table's value */
            lua_pop(L, 1);
            return v->s ? 0 : errorf(msg, "out of memory");
        }
        break;
    case RX_NUMS:
        if (t == LUA_TNUMBER) {
            v->len = 1;
            v->list[0] = lua_tonumber(L, idx);
            return 0;
        }
        if (t == LUA_TTABLE) return to_nums(L, idx, p, v, msg);
        break;
    }
    char got[96];
    config_describe(L, idx, got, sizeof got);
    return errorf(msg, "'%s' must be %s, got %s", p->key, type_name(p->type), got);
}

/* config_convert, its message blamed on r's origin and `where`. */
static int convert(reader *r, const char *where, int idx, const rx_param *p, rx_value *v)
{
    char msg[ERR_LEN];
    return config_convert(r->c, r->L, idx, p, v, msg) != 0 ? fail(r, where, "%s", msg) : 0;
}

void config_list_keys(const rx_param *a, const rx_param *b, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const rx_param *set[2] = { a, b }, **s = set; s < set + 2; s++)
        for (const rx_param *p = *s; p && p->key && used < len; p++)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", p->key);
    if (!used) snprintf(buf, len, "none");
}

int config_find_param(const rx_param *ps, const char *key)
{
    for (int i = 0; ps[i].key; i++)
        if (strcmp(ps[i].key, key) == 0) return i;
    return -1;
}

static tensor_rule *rule_for(plugin_use *u, const char *tensor)
{
    for (int i = 0; i < u->nrules; i++)
        if (strcmp(u->rules[i].tensor, tensor) == 0) return &u->rules[i];
    if (u->nrules == CONFIG_MAX_RULES) return NULL;
    tensor_rule *t = &u->rules[u->nrules++];
    *t = (tensor_rule){ .lr_scale = NAN, .weight_decay = NAN, .frozen = -1, .train_epochs = -1 };
    snprintf(t->tensor, sizeof t->tensor, "%s", tensor);
    return t;
}

/* Stores one converted rule value, checked, into the rule for `tensor`. */
static int set_rule(reader *r, plugin_use *u, const rx_param *p, const char *tensor, const rx_value *v)
{
    tensor_rule *t = rule_for(u, tensor);
    if (!t) return fail(r, u->where, "'%s': more than %d tensors named", p->key, CONFIG_MAX_RULES);
    const char *what = strcmp(tensor, "*") ? tensor : NULL;
    char place[128];
    snprintf(place, sizeof place, "%s%s%s", p->key, what ? "." : "", what ? what : "");
    if (p->type == RX_NUM && (!(v->num >= 0) || !isfinite(v->num)))
        return fail(r, u->where, "'%s' must be a finite number >= 0, got %g", place, v->num);
    if (p->type == RX_INT && v->i < 1) return fail(r, u->where, "'%s' must be at least 1, got %lld", place, (long long)v->i);
    if (strcmp(p->key, "lr_scale") == 0) t->lr_scale = v->num;
    else if (strcmp(p->key, "weight_decay") == 0) t->weight_decay = v->num;
    else if (strcmp(p->key, "frozen") == 0) t->frozen = v->b;
    else t->train_epochs = v->i;
    return 0;
}

/* A layer's lr_scale, weight_decay, frozen or train_epochs (at the top of the stack): one value
 * for every tensor, or a table {tensor_name = value}. */
static int read_rule(reader *r, plugin_use *u, const rx_param *p)
{
    lua_State *L = r->L;
    int idx = lua_gettop(L);
    rx_value v = { 0 };
    if (lua_type(L, idx) != LUA_TTABLE) {
        if (convert(r, u->where, idx, p, &v) != 0) return -1;
        return set_rule(r, u, p, "*", &v);
    }
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            char got[96];
            config_describe(L, -2, got, sizeof got);
            lua_pop(L, 2);
            return fail(r, u->where, "'%s': expected tensor names as keys ({bias = ...}), got %s", p->key, got);
        }
        rx_param named = *p;
        char key[128];
        snprintf(key, sizeof key, "%s.%s", p->key, lua_tostring(L, -2));
        named.key = key;
        if (convert(r, u->where, -1, &named, &v) != 0 || set_rule(r, u, p, lua_tostring(L, -2), &v) != 0) return -1;
    }
    return 0;
}

/* Keys the host reads beside a plugin's own: those that need more than one rx_type. Returns 1
 * when it took the key, 0 when not, -1 on an error. The value is at the top of the stack. */
static int read_host_special(reader *r, rx_kind kind, plugin_use *u, const char *key)
{
    lua_State *L = r->L;
    if (kind == RX_LAYER) {
        int i = config_find_param(layer_host_params, key);
        if (i < 0) return 0;
        if (strcmp(key, "init") == 0) {
            rx_value v;
            if (convert(r, u->where, -1, &layer_host_params[i], &v) != 0) return -1;
            if (strcmp(v.s, "default") && strcmp(v.s, "whiten") && strcmp(v.s, "dirac"))
                return fail(r, u->where, "'init' must be default, dirac or whiten, got '%s'", v.s);
            snprintf(u->init, sizeof u->init, "%s", v.s);
            return 1;
        }
        return read_rule(r, u, &layer_host_params[i]) != 0 ? -1 : 1;
    }
    if (kind == RX_OPTIM && strcmp(key, "schedule") == 0) {
        char msg[ERR_LEN];
        return schedule_read(r->c, L, msg) != 0 ? fail(r, u->where, "%s", msg) : 1;
    }
    if (kind == RX_OPTIM && strcmp(key, "lr") == 0 && lua_type(L, -1) == LUA_TFUNCTION) {
        schedule_read_function(r->c, L);
        return 1;
    }
    return 0;
}

void config_push_name(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TTABLE) lua_rawgeti(L, idx, 1);
    else lua_pushvalue(L, idx);
}

/* Reads the plugin use at the top of the stack: "name" or {"name", key = value, ...}. The host's
 * keys for this kind (host) are converted into host_args. */
static int read_use(reader *r, rx_kind kind, const char *place, const char *path, const rx_param *host,
                    rx_value *host_args, plugin_use *u)
{
    lua_State *L = r->L;
    int idx = lua_gettop(L);
    char got[96];
    config_describe(L, idx, got, sizeof got);
    config_push_name(L, idx);
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        return fail(r, place, "expected a %s plugin name or a table like {\"name\", key = value}, got %s",
                    plugin_kind_name(kind), got);
    }
    plugin_unload(&u->pl);
    snprintf(u->name, sizeof u->name, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    snprintf(u->where, sizeof u->where, "%s (%s)", place, u->name);
    snprintf(u->path, sizeof u->path, "%s", path);
    u->nrules = 0;
    snprintf(u->init, sizeof u->init, "default");

    char lerr[ERR_LEN];
    if (plugin_load(r->path, kind, u->name, &u->pl, lerr, sizeof lerr) != 0) return fail(r, place, "%s", lerr);
    const rx_param *ps = u->pl.desc->params;
    bool given[CONFIG_MAX_ARGS] = { false };
    if (plugin_param_count(u->pl.desc) > CONFIG_MAX_ARGS)
        return fail(r, u->where, "the plugin declares more than %d parameters", CONFIG_MAX_ARGS);
    for (int i = 0; ps[i].key; i++) u->args[i] = ps[i].def;
    for (int i = 0; host[i].key; i++) host_args[i] = host[i].def;

    if (lua_type(L, idx) == LUA_TTABLE) {
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                if (lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1) continue;
                config_describe(L, -2, got, sizeof got);
                return fail(r, u->where, "unexpected positional value at key %s (only the plugin name comes first)", got);
            }
            const char *key = lua_tostring(L, -2);
            int i = config_find_param(ps, key), special;
            if (i >= 0) {
                if (convert(r, u->where, -1, &ps[i], &u->args[i]) != 0) return -1;
                given[i] = true;
            } else if ((special = read_host_special(r, kind, u, key)) != 0) {
                if (special < 0) return -1;
            } else if ((i = config_find_param(host, key)) >= 0) {
                if (convert(r, u->where, -1, &host[i], &host_args[i]) != 0) return -1;
            } else {
                char keys[512];
                config_list_keys(kind == RX_LAYER ? layer_host_params : host, ps, keys, sizeof keys);
                return fail(r, u->where, "unknown key '%s' (accepted: %s)", key, keys);
            }
        }
    }
    for (int i = 0; ps[i].key; i++)
        if (ps[i].required && !given[i])
            return fail(r, u->where, "missing required key '%s' (%s)", ps[i].key, ps[i].help ? ps[i].help : "");
    return 0;
}

/* Is the value at idx a residual block, {"residual", {layers...}}? */
static bool is_residual(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE) return false;
    bool yes = lua_rawgeti(L, idx, 1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "residual") == 0;
    lua_pop(L, 1);
    return yes;
}

/* Checks the layer list at idx (place names it in messages) and returns how many layers it holds,
 * residual blocks' included, or -1. */
static int64_t count_layers(reader *r, int idx, const char *place, int depth)
{
    lua_State *L = r->L;
    char got[96];
    idx = lua_absindex(L, idx);
    if (depth > 16) return fail(r, place, "residual blocks nested more than 16 deep");
    if (lua_type(L, idx) != LUA_TTABLE) {
        config_describe(L, idx, got, sizeof got);
        return fail(r, NULL, "'%s' must be a list of layers, got %s", place, got);
    }
    lua_Integer n = luaL_len(L, idx);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n) {
            config_describe(L, -2, got, sizeof got);
            lua_pop(L, 2);
            return fail(r, place, "unexpected key %s (%s is a list of layers)", got, place);
        }
    }
    if (n < 1) return fail(r, place, "the list of layers is empty");
    int64_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int64_t k = 1;
        if (is_residual(L, -1)) {
            char inner[96];
            snprintf(inner, sizeof inner, "%s[%lld]", place, (long long)i);
            lua_pushnil(L);
            bool extra = false;
            while (lua_next(L, -2)) {
                lua_pop(L, 1);
                extra |= !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 2;
            }
            if (extra || lua_rawgeti(L, -1, 2) != LUA_TTABLE) {
                lua_pop(L, extra ? 1 : 2);
                return fail(r, inner, "a residual block is {\"residual\", {layers...}}: y = x + layers(x)");
            }
            k = count_layers(r, -1, inner, depth + 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (k < 0) return -1;
        total += k;
        if (total > 4096) return fail(r, "model", "more than 4096 layers");
    }
    return total;
}

/* Reads the (checked) layer list at idx into c->layers from *at on. Places read "model[3][2]";
 * checkpoint paths "2.1", as PyTorch names a Sequential inside a Sequential. */
static int read_layers(reader *r, int idx, const char *place, const char *path, int *at)
{
    lua_State *L = r->L;
    config *c = r->c;
    idx = lua_absindex(L, idx);
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        char here[96], where[64];
        snprintf(where, sizeof where, "%s[%lld]", place, (long long)i);
        snprintf(here, sizeof here, "%s%s%lld", path, path[0] ? "." : "", (long long)(i - 1));
        lua_rawgeti(L, idx, i);
        if (is_residual(L, -1)) {
            int first = *at;
            lua_rawgeti(L, -1, 2);
            if (read_layers(r, -1, where, here, at) != 0) return -1;
            lua_pop(L, 1);
            c->layers[first].opens++;
            c->layers[*at - 1].closes++;
        } else {
            rx_value host[1];
            plugin_use *u = &c->layers[(*at)++];
            u->opens = u->closes = 0;
            if (read_use(r, RX_LAYER, where, here, no_params, host, u) != 0) return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* The value of top-level key k in c. A field is copied, not cast: its type is k's. */
static void top_key_get(const config *c, const top_key *k, rx_value *v)
{
    const char *field = (const char *)c + k->offset;
    switch (k->p.type) {
    case RX_INT: memcpy(&v->i, field, sizeof v->i); break;
    case RX_NUM: memcpy(&v->num, field, sizeof v->num); break;
    case RX_BOOL: memcpy(&v->b, field, sizeof v->b); break;
    case RX_STR: v->s = field; break;
    case RX_NUMS: break; /* no top-level key is a list */
    }
}

/* Sets top-level key k in c to v. */
static void top_key_set(config *c, const top_key *k, const rx_value *v)
{
    char *field = (char *)c + k->offset;
    switch (k->p.type) {
    case RX_INT: memcpy(field, &v->i, sizeof v->i); break;
    case RX_NUM: memcpy(field, &v->num, sizeof v->num); break;
    case RX_BOOL: memcpy(field, &v->b, sizeof v->b); break;
    case RX_STR: snprintf(field, k->size, "%s", v->s); break;
    case RX_NUMS: break;
    }
}

/* Whether v is what k's `must` asks for (always, where k asks for nothing). */
static bool top_key_allows(const top_key *k, const rx_value *v)
{
    if (!k->must) return true;
    if (k->choices) {
        for (const char *const *s = k->choices; *s; s++)
            if (strcmp(v->s, *s) == 0) return true;
        return false;
    }
    double x = k->p.type == RX_INT ? (double)v->i : v->num;
    return x >= k->min && x < k->max;
}

static int top_key_refused(reader *r, const top_key *k, const rx_value *v)
{
    const char *key = k->p.key, *must = k->must;
    switch (k->p.type) {
    case RX_INT: return fail(r, NULL, "'%s' must be %s, got %lld", key, must, (long long)v->i);
    case RX_STR: return fail(r, NULL, "'%s' must be %s, got '%s'", key, must, v->s);
    default: return fail(r, NULL, "'%s' must be %s, got %g", key, must, v->num);
    }
}

/* An experiment table's key that is neither a plugin nor in top_keys, named with the keys it
 * could have been. */
static int unknown_top_key(reader *r)
{
    char got[96], keys[256] = "";
    config_describe(r->L, -2, got, sizeof got);
    for (int i = 0, used = 0; i < NTOP; i++)
        used += snprintf(keys + used, sizeof keys - (size_t)used, "%s%s", i ? ", " : "", top_keys[i].p.key);
    return fail(r, NULL, "unknown key %s in the experiment table (accepted: data, model, loss, optim, early_stop, %s)",
                got, keys);
}

/* The keys of top_keys in the experiment table at idx, defaults for those it lacks, into r->c. */
static int read_top_keys(reader *r, int idx)
{
    lua_State *L = r->L;
    rx_value v[NTOP];
    for (int i = 0; i < NTOP; i++) v[i] = top_keys[i].p.def;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        bool known = false;
        for (size_t t = 0; key && t < sizeof top_tables / sizeof *top_tables; t++) known |= strcmp(key, top_tables[t]) == 0;
        int i = 0;
        while (key && i < NTOP && strcmp(key, top_keys[i].p.key) != 0) i++;
        if (key && i < NTOP && top_keys[i].if_true && lua_type(L, -1) == LUA_TBOOLEAN) {
            v[i].s = lua_toboolean(L, -1) ? top_keys[i].if_true : top_keys[i].p.def.s;
        } else if (key && i < NTOP) {
            if (convert(r, NULL, -1, &top_keys[i].p, &v[i]) != 0) return -1;
        } else if (!known) {
            return unknown_top_key(r);
        }
    }
    for (int i = 0; i < NTOP; i++) {
        if (!top_key_allows(&top_keys[i], &v[i])) return top_key_refused(r, &top_keys[i], &v[i]);
        top_key_set(r->c, &top_keys[i], &v[i]);
    }
    return 0;
}

/* data = {"name", batch_size = ..., ...}, in the experiment table at idx. */
static int read_data(reader *r, int idx)
{
    config *c = r->c;
    rx_value host[1];
    if (lua_getfield(r->L, idx, "data") == LUA_TNIL) return fail(r, NULL, "missing key 'data' (the data set, e.g. {\"cifar10\", path = ...})");
    if (read_use(r, RX_DATA, "data", "", data_host_params, host, &c->data) != 0) return -1;
    lua_pop(r->L, 1);
    c->batch_size = host[0].i;
    if (c->batch_size < 1) return fail(r, c->data.where, "'batch_size' must be at least 1, got %lld", (long long)c->batch_size);
    if (c->batch_size > CHECKED_MAX_DIM)
        return fail(r, c->data.where, "'batch_size' must be at most %d (no batch is larger), got %lld", CHECKED_MAX_DIM,
                    (long long)c->batch_size);
    return 0;
}

/* optim = {"name", lr = ..., schedule = ..., weight_decay = ..., ...}, in the experiment table at idx. */
static int read_optim(reader *r, int idx)
{
    lua_State *L = r->L;
    config *c = r->c;
    rx_value host[3];
    if (lua_getfield(L, idx, "optim") == LUA_TNIL) return fail(r, NULL, "missing key 'optim' (e.g. {\"sgd\", lr = 0.01})");
    schedule_reset(&c->sched, L);
    if (read_use(r, RX_OPTIM, "optim", "", optim_host_params, host, &c->optim) != 0) return -1;
    /* Both would set the schedule; which one won would depend on the order Lua lists keys in. */
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushliteral(L, "lr");
        bool function = lua_rawget(L, -2) == LUA_TFUNCTION;
        lua_pushliteral(L, "schedule");
        bool scheduled = lua_rawget(L, -3) != LUA_TNIL;
        lua_pop(L, 2);
        if (function && scheduled)
            return fail(r, c->optim.where, "'schedule' cannot be given with lr as a function (the function is the schedule)");
    }
    lua_pop(L, 1);
    c->lr = c->sched.kind == SCHED_FUNCTION ? 1 : host[0].num;
    c->weight_decay = host[1].num;
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return fail(r, c->optim.where, "'weight_decay' must be a finite number >= 0, got %g", c->weight_decay);
    if (!(c->lr >= 0) || !isfinite(c->lr)) return fail(r, c->optim.where, "'lr' must be a finite number >= 0, got %g", c->lr);
    return 0;
}

/* model = {layers...}, in the experiment table at idx. */
static int read_model(reader *r, int idx)
{
    config *c = r->c;
    lua_getfield(r->L, idx, "model");
    int64_t n = count_layers(r, -1, "model", 0);
    if (n < 0) return -1;
    if (c->nlayers != n) {
        for (int i = 0; i < c->nlayers; i++) plugin_unload(&c->layers[i].pl);
        free(c->layers);
        c->layers = calloc((size_t)n, sizeof *c->layers);
        if (!c->layers) return fail(r, NULL, "out of memory");
        c->nlayers = (int)n;
    }
    int at = 0;
    if (read_layers(r, -1, "model", "", &at) != 0) return -1;
    lua_pop(r->L, 1);
    return 0;
}

/* early_stop = { patience = N, min_delta = d } (absent or false: off), in the experiment table
 * at idx. Its keys go through the same conversion as a plugin's, so their messages read alike. */
static int read_early_stop(reader *r, int idx)
{
    static const rx_param keys[] = {
        { .key = "patience", .type = RX_INT, .required = true, .help = "epochs without improvement before stopping" },
        { .key = "min_delta", .type = RX_NUM, .def = { .num = 0 }, .help = "a smaller decrease is no improvement" },
        { 0 },
    };
    lua_State *L = r->L;
    config *c = r->c;
    rx_value v[2] = { { .i = 0 }, keys[1].def };
    bool seen[2] = { false, false };
    c->early_stop_patience = 0; /* read twice (the file, then with the overrides): off unless given */
    c->early_stop_min_delta = 0;
    int t = lua_getfield(L, idx, "early_stop");
    if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) return lua_pop(L, 1), 0;
    if (t != LUA_TTABLE) {
        char got[96];
        config_describe(L, -1, got, sizeof got);
        return fail(r, NULL, "'early_stop' must be a table { patience = N, min_delta = d } (or false), got %s", got);
    }
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int i = key ? config_find_param(keys, key) : -1;
        if (i < 0) {
            char got[96];
            config_describe(L, -2, got, sizeof got);
            return fail(r, "early_stop", "unknown key %s (accepted: patience, min_delta)", got);
        }
        if (convert(r, "early_stop", -1, &keys[i], &v[i]) != 0) return -1;
        seen[i] = true;
    }
    lua_pop(L, 1);
    if (!seen[0]) return fail(r, "early_stop", "'patience' is required (epochs without improvement before stopping)");
    if (v[0].i < 1) return fail(r, "early_stop", "'patience' must be at least 1, got %lld", (long long)v[0].i);
    if (!(v[1].num >= 0) || !isfinite(v[1].num))
        return fail(r, "early_stop", "'min_delta' must be a finite number >= 0, got %g", v[1].num);
    c->early_stop_patience = v[0].i;
    c->early_stop_min_delta = v[1].num;
    return 0;
}

/* Reads the whole experiment table at stack index idx into r->c. */
static int read_experiment(reader *r, int idx)
{
    rx_value host[1];
    if (read_top_keys(r, idx) != 0 || read_early_stop(r, idx) != 0 || read_data(r, idx) != 0) return -1;
    if (lua_getfield(r->L, idx, "loss") == LUA_TNIL) return fail(r, NULL, "missing key 'loss' (e.g. \"cross_entropy\")");
    if (read_use(r, RX_LOSS, "loss", "", no_params, host, &r->c->loss) != 0) return -1;
    lua_pop(r->L, 1);
    if (read_optim(r, idx) != 0 || read_model(r, idx) != 0) return -1;
    return 0;
}

/* ---- Lua states with a memory limit ---- */

/* What a state's allocations add up to, and how far they may go. Lives as long as the state:
 * budget_alloc frees it with the state's main block, which lua_close frees last, so a state
 * made here is closed with a plain lua_close. */
typedef struct lua_budget {
    size_t used, limit;
    bool refused;     /* an allocation was refused for the limit */
    bool *freed;      /* while lua_newstate runs: set when a failed start already freed this */
} lua_budget;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_budget *b = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type, not a size */
    if (nsize == 0) {
        free(ptr);
        b->used -= old;
        if (ptr && b->used == 0) { /* the main block, the last of all */
            if (b->freed) *b->freed = true;
            free(b);
        }
        return NULL;
    }
    if (nsize > old && (b->used >= b->limit || nsize - old > b->limit - b->used)) {
        b->refused = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) b->used = b->used - old + nsize;
    return p;
}

/* As luaL_newstate's: an error outside any protected call is printed before Lua aborts. */
static int panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
    fprintf(stderr, "runexp: unprotected error in a Lua call (%s)\n", msg);
    return 0;
}

lua_State *config_lua_state(void)
{
    lua_budget *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    bool freed = false;
    *b = (lua_budget){ .limit = CONFIG_LUA_LIMIT, .freed = &freed };
    lua_State *L = lua_newstate(budget_alloc, b);
    if (!L && !freed) free(b);
    if (L) b->freed = NULL;
    if (L) lua_atpanic(L, panic);
    return L;
}

/* L's budget, or NULL for a state not made by config_lua_state. */
static lua_budget *budget_of(lua_State *L)
{
    void *ud;
    return lua_getallocf(L, &ud) == budget_alloc ? ud : NULL;
}

bool config_lua_limit_reached(lua_State *L, const char *origin, char *err)
{
    lua_budget *b = budget_of(L);
    if (!b || !b->refused) return false;
    errorf(err, "%s: the config's Lua used more than %zu MiB, the limit of a config (it describes experiments; "
           "data belongs to a data plugin)", origin, (size_t)CONFIG_LUA_LIMIT >> 20);
    return true;
}

/* Stops a command-line table constructor that runs too long (a loop in a function call). */
static void too_long(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "it runs too long for a constant");
}

/* Pushes an override's value typed as Lua reads it: true/false, a number, a table constructor
 * such as {0.1, 0.01} (evaluated with no globals in reach and a bounded number of
 * instructions), or else the text as a string. */
static int push_override_value(reader *r, const char *arg, const char *value)
{
    lua_State *L = r->L;
    if (strcmp(value, "true") == 0) lua_pushboolean(L, 1);
    else if (strcmp(value, "false") == 0) lua_pushboolean(L, 0);
    else if (value[0] == '{') {
        lua_pushfstring(L, "return %s", value);
        int ok = luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=(command line)", "t") == LUA_OK;
        lua_remove(L, -2);
        lua_budget *b = budget_of(L);
        size_t limit = b ? b->limit : 0;
        if (ok) {
            lua_newtable(L); /* an empty _ENV: constants only */
            lua_setupvalue(L, -2, 1);
            lua_sethook(L, too_long, LUA_MASKCOUNT, 1000000);
            if (b && b->used < limit && limit - b->used > CONFIG_OVERRIDE_LIMIT) b->limit = b->used + CONFIG_OVERRIDE_LIMIT;
            if (b) b->refused = false;
            ok = lua_pcall(L, 0, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE;
            lua_sethook(L, NULL, 0, 0);
        }
        bool refused = b && b->refused;
        if (b) b->limit = limit, b->refused = false;
        if (!ok && refused) {
            lua_pop(L, 1);
            return fail(r, NULL, "'%s': evaluating the value took more than %d MiB, the limit of a command-line value",
                        arg, CONFIG_OVERRIDE_LIMIT >> 20);
        }
        if (!ok) {
            const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "not a table";
            fail(r, NULL, "'%s': the value is not a Lua table constructor: %s", arg, why);
            lua_pop(L, 1);
            return -1;
        }
    } else if (lua_stringtonumber(L, value) == 0) lua_pushstring(L, value);
    return 0;
}

/* Sets table[path] = value for one "a.b.c=value" argument; numeric parts index lists. */
static int apply_override(reader *r, int idx, const char *arg)
{
    lua_State *L = r->L;
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return fail(r, NULL, "'%s' is not key=value", arg);
    char key[256];
    if ((size_t)(eq - arg) >= sizeof key) return fail(r, NULL, "'%s': key too long", arg);
    memcpy(key, arg, (size_t)(eq - arg));
    key[eq - arg] = '\0';
    const char *value = eq + 1;

    lua_pushvalue(L, idx);
    char *save = NULL;
    char *part = strtok_r(key, ".", &save);
    char done[256] = "";
    while (part) {
        char *next = strtok_r(NULL, ".", &save);
        char *end;
        long long num = strtoll(part, &end, 10);
        bool is_index = *end == '\0' && end != part;
        if (is_index) lua_pushinteger(L, num);
        else lua_pushstring(L, part);
        if (!next) {
            if (push_override_value(r, arg, value) != 0) return -1;
            lua_settable(L, -3);
            lua_pop(L, 1);
            return 0;
        }
        size_t used = strlen(done);
        snprintf(done + used, sizeof done - used, "%s%s", used ? "." : "", part);
        if (lua_gettable(L, -2) != LUA_TTABLE) {
            char got[96];
            config_describe(L, -1, got, sizeof got);
            lua_pop(L, 2);
            return fail(r, NULL, "'%s': '%s' is %s in the config, not a table", arg, done, got);
        }
        lua_remove(L, -2);
        part = next;
    }
    lua_pop(L, 1);
    return fail(r, NULL, "'%s': empty key", arg);
}

int config_read_plugin(config *c, lua_State *L, int idx, rx_kind kind, const plugin_path *path, const char *origin,
                       plugin_use *u, char *err)
{
    reader r = { .c = c, .L = L, .path = path, .origin = origin, .err = err };
    rx_value unused[1];
    lua_pushvalue(L, idx); /* read_use reads the top of the stack */
    int rc = read_use(&r, kind, kind == RX_DATA ? "data" : kind == RX_OPTIM ? "optim" : "plugin", "", no_params,
                      unused, u);
    lua_pop(L, 1);
    return rc;
}

int config_override(lua_State *L, int idx, const char *arg, char *err)
{
    config scratch = { 0 };
    reader r = { .c = &scratch, .L = L, .origin = "command line", .err = err };
    int rc = apply_override(&r, lua_absindex(L, idx), arg);
    for (int i = 0; i < scratch.nstrings; i++) free(scratch.strings[i]);
    free(scratch.strings);
    return rc;
}

/* Pushes a copy of the table at idx, nested tables copied too, so overrides never touch the
 * caller's table. */
static void deep_copy(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > 64) luaL_error(L, "the experiment table is nested more than 64 levels deep (a cycle?)");
    lua_newtable(L);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        lua_pushvalue(L, -2);
        if (lua_type(L, -2) == LUA_TTABLE) deep_copy(L, -2, depth + 1);
        else lua_pushvalue(L, -2);
        lua_rawset(L, -5);
    }
}

typedef struct table_job {
    reader r;
    int idx, noverrides;
    char *const *overrides;
    int rc;
} table_job;

/* The whole read, run under lua_pcall so that a Lua error (a __len that throws, out of memory)
 * becomes a message instead of a jump out of C. */
static int read_table_protected(lua_State *L)
{
    table_job *job = lua_touserdata(L, 1);
    reader *r = &job->r;
    job->idx = 2; /* the table, passed as the second argument */
    job->rc = -1;
    if (lua_type(L, job->idx) != LUA_TTABLE) {
        char got[96];
        config_describe(L, job->idx, got, sizeof got);
        fail(r, NULL, "the experiment must be a table, got %s", got);
        return 0;
    }
    if (read_experiment(r, job->idx) != 0) return 0;
    if (job->noverrides > 0) {
        deep_copy(L, job->idx, 0);
        int copy = lua_gettop(L);
        r->origin = "command line";
        for (int i = 0; i < job->noverrides; i++)
            if (apply_override(r, copy, job->overrides[i]) != 0) return 0;
        if (read_experiment(r, copy) != 0) return 0;
    }
    job->rc = 0;
    return 0;
}

int config_from_table(config *c, lua_State *L, int idx, const plugin_path *path, const char *file,
                      int noverrides, char *const *overrides, char *err)
{
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, "%s", file);
    table_job job = { .r = { .c = c, .L = L, .path = path, .origin = file, .err = err },
                      .idx = lua_absindex(L, idx), .noverrides = noverrides, .overrides = overrides };
    int top = lua_gettop(L);
    lua_pushcfunction(L, read_table_protected);
    lua_pushlightuserdata(L, &job);
    lua_pushvalue(L, job.idx);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        if (!config_lua_limit_reached(L, file, err)) snprintf(err, ERR_LEN, "%s: %s", file, lua_tostring(L, -1));
        job.rc = -1;
    }
    lua_settop(L, top);
    return job.rc;
}

int config_load(config *c, const plugin_path *path, const char *file, int noverrides,
                char *const *overrides, char *err)
{
    memset(c, 0, sizeof *c);
    if (file_check_regular(file, err) != 0) return -1; /* Lua's loader would block on a FIFO */
    lua_State *L = config_lua_state();
    if (!L) {
        snprintf(err, ERR_LEN, "%s: cannot create a Lua state (out of memory)", file);
        return -1;
    }
    luaL_openlibs(L);
    int rc = -1;
    /* Text only: a precompiled chunk is not a config. Lua's messages already name file:line. */
    if (luaL_loadfilex(L, file, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        if (!config_lua_limit_reached(L, file, err)) snprintf(err, ERR_LEN, "%s", lua_tostring(L, -1));
    } else if (lua_type(L, -1) != LUA_TTABLE) {
        char got[96];
        config_describe(L, -1, got, sizeof got);
        snprintf(err, ERR_LEN, "%s: the config must return a table (the experiment), got %s", file, got);
    } else {
        rc = config_from_table(c, L, -1, path, file, noverrides, overrides, err);
    }
    if (c->sched.kind == SCHED_FUNCTION) c->owns_L = true; /* the schedule lives on in this state */
    else lua_close(L);
    return rc;
}

void config_free(config *c)
{
    if (c->owns_L) lua_close(c->L);
    else if (c->L) schedule_reset(&c->sched, c->L);
    plugin_unload(&c->data.pl);
    plugin_unload(&c->loss.pl);
    plugin_unload(&c->optim.pl);
    for (int i = 0; i < c->nlayers; i++) plugin_unload(&c->layers[i].pl);
    free(c->layers);
    for (int i = 0; i < c->nstrings; i++) free(c->strings[i]);
    free(c->strings);
    memset(c, 0, sizeof *c);
}

const rx_value *config_arg(const plugin_use *u, const char *key)
{
    int i = u->pl.desc ? plugin_param_index(u->pl.desc, key) : -1;
    return i >= 0 ? &u->args[i] : NULL;
}

void config_tensor_rule(const config *c, const plugin_use *u, const char *name, tensor_rule *out)
{
    *out = (tensor_rule){ .lr_scale = 1, .weight_decay = c->weight_decay, .frozen = 0, .train_epochs = 0 };
    snprintf(out->tensor, sizeof out->tensor, "%s", name);
    for (int pass = 0; pass < 2; pass++) /* "*" first, then the tensor's own rule over it */
        for (int i = 0; i < u->nrules; i++) {
            const tensor_rule *t = &u->rules[i];
            if (strcmp(t->tensor, pass ? name : "*") != 0) continue;
            if (!isnan(t->lr_scale)) out->lr_scale = t->lr_scale;
            if (!isnan(t->weight_decay)) out->weight_decay = t->weight_decay;
            if (t->frozen >= 0) out->frozen = t->frozen;
            if (t->train_epochs >= 0) out->train_epochs = t->train_epochs;
        }
}

/* ---- The resolved config, as Lua ---- */

static void lua_string(strbuf *b, const char *s)
{
    sb_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') sb_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) sb_printf(b, "\\%03d", *p);
        else sb_append(b, p, 1);
    }
    sb_append(b, "\"", 1);
}

/* The shortest decimal that reads back as the same double: 0.05, not 0.050000000000000003. */
void config_lua_number(strbuf *b, double x)
{
    char buf[32];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) break;
    }
    /* Keep it a float for Lua (math.type) when it looks like an integer. */
    if (isfinite(x) && !strpbrk(buf, ".eEn")) sb_printf(b, "%s.0", buf);
    else sb_printf(b, "%s", buf);
}

static void lua_value(strbuf *b, rx_type t, const rx_value *v)
{
    switch (t) {
    case RX_INT: sb_printf(b, "%lld", (long long)v->i); break;
    case RX_NUM: config_lua_number(b, v->num); break;
    case RX_BOOL: sb_printf(b, "%s", v->b ? "true" : "false"); break;
    case RX_STR: lua_string(b, v->s ? v->s : ""); break;
    case RX_NUMS:
        sb_printf(b, "{");
        for (int i = 0; i < v->len; i++) {
            sb_printf(b, "%s", i ? ", " : " ");
            config_lua_number(b, v->list[i]);
        }
        sb_printf(b, " }");
        break;
    }
}

/* Whether rule t sets field 0 (lr_scale), 1 (weight_decay), 2 (frozen) or 3 (train_epochs). */
static bool rule_has(const tensor_rule *t, int field)
{
    return field == 0 ? !isnan(t->lr_scale) : field == 1 ? !isnan(t->weight_decay)
         : field == 2 ? t->frozen >= 0 : t->train_epochs >= 0;
}

/* A layer's rules for one key: "lr_scale = 2" or "lr_scale = { bias = 64, ["*"] = 2 }". */
static void lua_rules(strbuf *b, const plugin_use *u, int field)
{
    static const char *const keys[] = { "lr_scale", "weight_decay", "frozen", "train_epochs" };
    int set = 0;
    bool only_all = true;
    for (int i = 0; i < u->nrules; i++) {
        const tensor_rule *t = &u->rules[i];
        if (!rule_has(t, field)) continue;
        set++;
        only_all &= strcmp(t->tensor, "*") == 0;
    }
    if (!set) return;
    sb_printf(b, ", %s = %s", keys[field], only_all ? "" : "{ ");
    for (int i = 0, k = 0; i < u->nrules; i++) {
        const tensor_rule *t = &u->rules[i];
        if (!rule_has(t, field)) continue;
        if (!only_all) {
            sb_printf(b, "%s[", k++ ? ", " : "");
            lua_string(b, t->tensor);
            sb_printf(b, "] = ");
        }
        if (field == 0) config_lua_number(b, t->lr_scale);
        else if (field == 1) config_lua_number(b, t->weight_decay);
        else if (field == 2) sb_printf(b, "%s", t->frozen ? "true" : "false");
        else sb_printf(b, "%lld", (long long)t->train_epochs);
    }
    if (!only_all) sb_printf(b, " }");
}

static void lua_use(strbuf *b, const plugin_use *u, const char *extra)
{
    sb_printf(b, "{ ");
    lua_string(b, u->name);
    if (extra) sb_printf(b, ", %s", extra);
    const rx_param *ps = u->pl.desc->params;
    for (int i = 0; ps[i].key; i++) {
        sb_printf(b, ", %s = ", ps[i].key);
        lua_value(b, ps[i].type, &u->args[i]);
    }
    if (u->pl.desc->kind == RX_LAYER) {
        for (int f = 0; f < 4; f++) lua_rules(b, u, f);
        if (strcmp(u->init, "default") != 0) sb_printf(b, ", init = \"%s\"", u->init);
    }
    sb_printf(b, " }");
}

/* The top-level keys that the resolved config holds, in their order: "epochs = 10, seed = 1". */
static void lua_top_keys(strbuf *b, const config *c)
{
    for (int order = 1, found = 1; found; order++) {
        found = 0;
        for (int i = 0; i < NTOP; i++) {
            if (top_keys[i].order != order) continue;
            found = 1;
            rx_value v;
            top_key_get(c, &top_keys[i], &v);
            /* A feature switched off is left out, so configs that never name it read as before. */
            if (top_keys[i].omit_default && (top_keys[i].p.type == RX_STR ? strcmp(v.s, top_keys[i].p.def.s) == 0
                                                                           : v.num == top_keys[i].p.def.num))
                continue;
            sb_printf(b, "%s%s = ", order > 1 ? ", " : "", top_keys[i].p.key);
            lua_value(b, top_keys[i].p.type, &v);
        }
    }
    if (c->early_stop_patience > 0) {
        sb_printf(b, ", early_stop = { patience = %lld, min_delta = ", (long long)c->early_stop_patience);
        config_lua_number(b, c->early_stop_min_delta);
        sb_printf(b, " }");
    }
}

void config_to_lua(const config *c, strbuf *b)
{
    char extra[64];
    sb_printf(b, "-- The resolved experiment: %s with its overrides, every default filled in.\n", c->file);
    sb_printf(b, "-- Run it again to repeat the run: runexp THIS_FILE out=NEW_FOLDER\nreturn {\n");
    snprintf(extra, sizeof extra, "batch_size = %lld", (long long)c->batch_size);
    sb_printf(b, "  data = ");
    lua_use(b, &c->data, extra);
    sb_printf(b, ",\n  model = {\n");
    int depth = 0;
    for (int i = 0; i < c->nlayers; i++) {
        for (int k = 0; k < c->layers[i].opens; k++, depth++) sb_printf(b, "    %*s{ \"residual\", {\n", 2 * depth, "");
        sb_printf(b, "    %*s", 2 * depth, "");
        lua_use(b, &c->layers[i], NULL);
        sb_printf(b, ",\n");
        for (int k = 0; k < c->layers[i].closes; k++) sb_printf(b, "    %*s} },\n", 2 * --depth, "");
    }
    sb_printf(b, "  },\n  loss = ");
    lua_use(b, &c->loss, NULL);
    strbuf lr = { 0 };
    schedule_to_lua(c, &lr);
    sb_printf(&lr, ", weight_decay = ");
    config_lua_number(&lr, c->weight_decay);
    sb_printf(b, ",\n  optim = ");
    lua_use(b, &c->optim, lr.s);
    sb_free(&lr);
    sb_printf(b, ",\n  ");
    lua_top_keys(b, c);
    sb_printf(b, ",\n}\n");
}

const plugin_use *config_plugin_without(const config *c, rx_device d)
{
    const plugin_use *fixed[] = { &c->data, &c->loss, &c->optim };
    for (int i = 0; i < 3; i++)
        if (!plugin_runs_on(fixed[i]->pl.desc, d)) return fixed[i];
    for (int i = 0; i < c->nlayers; i++)
        if (!plugin_runs_on(c->layers[i].pl.desc, d)) return &c->layers[i];
    return NULL;
}

int plugin_use_check_device(const config *c, const plugin_use *u, rx_device d, char *err)
{
    if (plugin_runs_on(u->pl.desc, d)) return 0;
    return errorf(err, "%s: %s: the plugin has no %s implementation", c->file, u->where, device_name(d));
}
