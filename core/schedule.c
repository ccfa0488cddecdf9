/* schedule.c: optim.schedule and optim.lr as a function, read, evaluated and written back.
 *
 * The schedule's keys are read with config.c's conversion, so that their messages read like
 * every other key's; a message comes back without its place, which the caller puts in front. */
#include "schedule.h"

#include <ctype.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* One kind of schedule, its name in the config and its keys. */
typedef struct schedule_desc {
    const char *name;
    schedule_kind kind;
    rx_param params[4];
} schedule_desc;

static const schedule_desc kinds[] = {
    { "constant", SCHED_CONSTANT, { { 0 } } },
    { "step", SCHED_STEP,
      { { .key = "every", .type = RX_INT, .required = true, .help = "epochs between decays" },
        { .key = "gamma", .type = RX_NUM, .def = { .num = 0.1 }, .help = "factor per decay" }, { 0 } } },
    { "cosine", SCHED_COSINE,
      { { .key = "warmup", .type = RX_NUM, .def = { .num = 0 }, .help = "share of the steps rising from start" },
        { .key = "start", .type = RX_NUM, .def = { .num = 0 }, .help = "factor at the first step" },
        { .key = "final", .type = RX_NUM, .def = { .num = 0 }, .help = "factor at the last step" } } },
    { "onecycle", SCHED_ONECYCLE,
      { { .key = "warmup", .type = RX_NUM, .def = { .num = 0.3 }, .help = "share of the steps rising from start" },
        { .key = "start", .type = RX_NUM, .def = { .num = 0 }, .help = "factor at the first step" },
        { .key = "final", .type = RX_NUM, .def = { .num = 0 }, .help = "factor at the last step" } } },
};

/* The kind that the "name" or {"name", ...} at idx names, or NULL. */
static const schedule_desc *find_kind(lua_State *L, int idx)
{
    config_push_name(L, idx);
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    const schedule_desc *k = NULL;
    for (size_t i = 0; name && i < sizeof kinds / sizeof *kinds; i++)
        if (strcmp(kinds[i].name, name) == 0) k = &kinds[i];
    lua_pop(L, 1);
    return k;
}

/* The values of k's keys in the table at idx (if it is one), defaults filled in. */
static int read_values(config *c, lua_State *L, int idx, const schedule_desc *k, rx_value *v, char *msg)
{
    const rx_param *ps = k->params;
    bool given[3] = { false };
    for (int i = 0; ps[i].key; i++) v[i] = ps[i].def;
    if (lua_type(L, idx) == LUA_TTABLE) {
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
            if (lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1) continue;
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            int i = config_find_param(ps, key);
            if (i < 0) {
                char keys[128];
                config_list_keys(ps, NULL, keys, sizeof keys);
                errorf(msg, "schedule %s: unknown key '%s' (accepted: %s)", k->name, key, keys);
                lua_pop(L, 2);
                return -1;
            }
            if (config_convert(c, L, -1, &ps[i], &v[i], msg) != 0) return -1;
            given[i] = true;
        }
    }
    for (int i = 0; ps[i].key; i++)
        if (ps[i].required && !given[i])
            return errorf(msg, "schedule %s: missing key '%s' (%s)", k->name, ps[i].key, ps[i].help);
    return 0;
}

/* s as kind k with the values v, checked. */
static int set_values(schedule *s, const schedule_desc *k, const rx_value *v, char *msg)
{
    *s = (schedule){ .kind = k->kind, .ref = LUA_NOREF };
    if (s->kind == SCHED_STEP) {
        s->every = v[0].i;
        s->gamma = v[1].num;
        if (s->every < 1) return errorf(msg, "schedule step: 'every' must be at least 1 epoch, got %lld", (long long)s->every);
        if (!(s->gamma >= 0) || !isfinite(s->gamma))
            return errorf(msg, "schedule step: 'gamma' must be a finite number >= 0, got %g", s->gamma);
    } else if (s->kind != SCHED_CONSTANT) {
        s->warmup = v[0].num;
        s->start = v[1].num;
        s->final = v[2].num;
        if (!(s->warmup >= 0 && s->warmup < 1))
            return errorf(msg, "schedule %s: 'warmup' is a share of the steps in [0, 1), got %g", k->name, s->warmup);
        for (int i = 1; i < 3; i++)
            if (!(v[i].num >= 0) || !isfinite(v[i].num))
                return errorf(msg, "schedule %s: '%s' must be a finite factor >= 0, got %g", k->name, k->params[i].key,
                              v[i].num);
    }
    return 0;
}

int schedule_read(config *c, lua_State *L, char *msg)
{
    int idx = lua_gettop(L);
    const schedule_desc *k = find_kind(L, idx);
    if (!k) {
        char got[96];
        config_describe(L, idx, got, sizeof got);
        return errorf(msg, "'schedule' must be constant, step, cosine or onecycle (a name or {\"name\", key = value}), "
                      "got %s", got);
    }
    rx_value v[3];
    if (read_values(c, L, idx, k, v, msg) != 0) return -1;
    return set_values(&c->sched, k, v, msg);
}

/* The shortest piece of text, from a "function" keyword to an "end", that Lua reads as one
 * function expression, without a local function's name ("function f(" would be a syntax error
 * in an expression). Returns whether it found one. */
static bool function_expression(lua_State *L, const char *text, char *buf, size_t len)
{
    bool found = false;
    for (const char *from = strstr(text, "function"); from && !found; from = strstr(from + 1, "function")) {
        const char *args = from + 8; /* past "function", and past a name: "function decay(" */
        while (*args == ' ' || *args == '\t') args++;
        while (isalnum((unsigned char)*args) || *args == '_' || *args == '.') args++;
        while (*args == ' ' || *args == '\t') args++;
        if (*args != '(') continue;
        for (const char *to = strstr(args, "end"); to && !found; to = strstr(to + 1, "end")) {
            strbuf expr = { 0 };
            sb_printf(&expr, "return function%.*s", (int)(to + 3 - args), args);
            if (!expr.oom) {
                found = luaL_loadbufferx(L, expr.s, expr.len, "=lr", "t") == LUA_OK;
                lua_pop(L, 1); /* the function, or the message */
            }
            if (found && expr.len - 7 < len) snprintf(buf, len, "%s", expr.s + 7);
            sb_free(&expr);
        }
    }
    return found;
}

/* The text of the Lua function at the top of the stack, from its file, for the resolved config
 * (which `runexp resume` runs again). Lua gives the lines it spans, not the columns, so the text
 * is the shortest function expression in those lines. Failing that, an expression that raises
 * an error: the resolved config must never run on with another learning rate. */
static void function_source(lua_State *L, char *buf, size_t len)
{
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    snprintf(buf, len, "error([==[the lr function defined in %s, line %d, cannot be copied into this file]==])",
             ar.short_src, ar.linedefined);
    char why[ERR_LEN];
    int fd = ar.source[0] == '@' && ar.linedefined > 0 ? open_regular(ar.source + 1, O_RDONLY, why) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    strbuf text = { 0 };
    for (int n = 1; n <= ar.lastlinedefined && getline(&line, &cap, f) >= 0; n++)
        if (n >= ar.linedefined) sb_printf(&text, "%s", line);
    free(line);
    fclose(f);
    if (text.s) function_expression(L, text.s, buf, len);
    sb_free(&text);
}

void schedule_reset(schedule *s, lua_State *L)
{
    if (s->kind == SCHED_FUNCTION) luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    *s = (schedule){ .kind = SCHED_CONSTANT, .ref = LUA_NOREF };
}

void schedule_read_function(config *c, lua_State *L)
{
    schedule_reset(&c->sched, L);
    c->sched = (schedule){ .kind = SCHED_FUNCTION };
    function_source(L, c->sched.source, sizeof c->sched.source);
    lua_pushvalue(L, -1);
    c->sched.ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->L = L;
}

/* The factor the config's Lua function gives at step of steps. */
static int function_factor(const config *c, int64_t step, int64_t steps, double *factor, char *err)
{
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->sched.ref);
    lua_pushinteger(L, step);
    lua_pushinteger(L, steps);
    int ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
    double v = ok && lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
    if (!ok || !(v >= 0) || !isfinite(v)) {
        char got[96];
        if (ok) config_describe(L, -1, got, sizeof got);
        errorf(err, "%s: optim: the lr function %s at step %lld of %lld: %s", c->file,
               ok ? "must return a finite number >= 0" : "failed", (long long)step, (long long)steps,
               ok ? got : lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_settop(L, top);
    *factor = v;
    return 0;
}

int config_lr_factor(const config *c, int64_t step, int64_t steps, int64_t epoch, double *factor, char *err)
{
    const schedule *s = &c->sched;
    double t = steps > 1 ? (double)step / (double)(steps - 1) : 1; /* 0 at the first step, 1 at the last */
    switch (s->kind) {
    case SCHED_CONSTANT: *factor = 1; return 0;
    case SCHED_STEP: *factor = pow(s->gamma, (double)((epoch - 1) / s->every)); return 0;
    case SCHED_COSINE:
    case SCHED_ONECYCLE:
        if (t < s->warmup) {
            *factor = s->start + (1 - s->start) * t / s->warmup;
        } else {
            double u = s->warmup < 1 ? (t - s->warmup) / (1 - s->warmup) : 1; /* 0 .. 1 after the warm-up */
            double down = s->kind == SCHED_COSINE ? 0.5 * (1 + cos(M_PI * u)) : 1 - u;
            *factor = s->final + (1 - s->final) * down;
        }
        return 0;
    case SCHED_FUNCTION: return function_factor(c, step, steps, factor, err);
    }
    *factor = 1;
    return 0;
}

void schedule_to_lua(const config *c, strbuf *b)
{
    const schedule *s = &c->sched;
    sb_printf(b, "lr = ");
    if (s->kind == SCHED_FUNCTION) {
        sb_printf(b, "%s", s->source);
        return;
    }
    config_lua_number(b, c->lr);
    sb_printf(b, ", schedule = ");
    switch (s->kind) {
    case SCHED_CONSTANT: sb_printf(b, "\"constant\""); break;
    case SCHED_STEP:
        sb_printf(b, "{ \"step\", every = %lld, gamma = ", (long long)s->every);
        config_lua_number(b, s->gamma);
        sb_printf(b, " }");
        break;
    case SCHED_COSINE:
    case SCHED_ONECYCLE:
        sb_printf(b, "{ \"%s\", warmup = ", s->kind == SCHED_COSINE ? "cosine" : "onecycle");
        config_lua_number(b, s->warmup);
        sb_printf(b, ", start = ");
        config_lua_number(b, s->start);
        sb_printf(b, ", final = ");
        config_lua_number(b, s->final);
        sb_printf(b, " }");
        break;
    case SCHED_FUNCTION: break;
    }
}
