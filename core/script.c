/* script.c: the `runexp` Lua module and the running of a config file (see script.h).
 *
 * Every module function that can fail raises a Lua error carrying exactly the message the
 * command line would print, so `pcall(runexp.train, cfg)` lets a sweep go on past a bad run.
 * C resources are released before any error is raised: lua_error never jumps over a malloc. */
#include "script.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "evaluate.h"
#include "predict.h"
#include "../plugins/common/picture.h" /* picture_fit_names */
#include "files.h"
#include "interrupt.h"
#include "report.h"
#include "train.h"

/* runexp.with, written in Lua because it is clearest there. */
static const char *prelude =
    "local runexp = ...\n"
    "local function copy(t)\n"
    "  if type(t) ~= 'table' then return t end\n"
    "  local c = {}\n"
    "  for k, v in pairs(t) do c[k] = copy(v) end\n"
    "  return c\n"
    "end\n"
    "local function merge(into, changes)\n"
    "  for k, v in pairs(changes) do\n"
    "    if type(v) == 'table' and type(into[k]) == 'table' then merge(into[k], v) else into[k] = copy(v) end\n"
    "  end\n"
    "  return into\n"
    "end\n"
    "function runexp.with(base, changes)\n"
    "  if type(base) ~= 'table' then error('runexp.with: base must be a table, got ' .. type(base), 2) end\n"
    "  if changes ~= nil and type(changes) ~= 'table' then\n"
    "    error('runexp.with: changes must be a table, got ' .. type(changes), 2)\n"
    "  end\n"
    "  return merge(copy(base), changes or {})\n"
    "end\n";

static script *self_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Raises err as a Lua error; never returns. */
static int raise(lua_State *L, const char *err)
{
    lua_pushstring(L, err);
    return lua_error(L);
}

/* The overrides runexp.options has not taken: they apply to every experiment. */
static int remaining_overrides(script *s, char **out)
{
    int n = 0;
    for (int i = 0; i < s->noverrides; i++)
        if (!s->taken[i]) out[n++] = s->overrides[i];
    return n;
}

static void set_number(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

static void set_integer(lua_State *L, const char *key, int64_t v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

static void set_string(lua_State *L, const char *key, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

/* Sets the fields of record (an epoch record, an evaluation, a summary) in the table on top,
 * named as record.h's lists name them; an evaluation's with a prefix ("test_" in a summary),
 * except per_class_accuracy. */
static void set_fields(lua_State *L, const field *fields, int n, const void *record, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        const field *f = &fields[i];
        const void *at = (const char *)record + f->offset;
        char key[64];
        snprintf(key, sizeof key, "%s%s", f->type == FIELD_CLASSES ? "" : prefix, f->name);
        if (f->type == FIELD_EVAL) {
            set_fields(L, eval_fields, n_eval_fields, at, "test_");
        } else if (f->type == FIELD_CLASSES) {
            const eval_result *e = record;
            lua_createtable(L, 0, e->nclasses);
            for (int k = 0; k < e->nclasses; k++) set_number(L, e->class_names[k], class_accuracy(e, k));
            lua_setfield(L, -2, key);
        } else if (f->type == FIELD_STR) {
            set_string(L, key, field_string(f, record));
        } else if (f->type == FIELD_BOOL) {
            lua_pushboolean(L, field_bool(f, record));
            lua_setfield(L, -2, key);
        } else if (f->type == FIELD_INT) {
            set_integer(L, key, field_int(f, record));
        } else {
            set_number(L, key, field_number(f, record));
        }
    }
}

/* The fields of summary.json, plus `history`: one table per epoch, as in metrics.csv. */
static void push_summary(lua_State *L, const run_summary *s)
{
    lua_newtable(L);
    set_fields(L, summary_fields, n_summary_fields, s, "");
    lua_createtable(L, s->nhistory, 0);
    for (int i = 0; i < s->nhistory; i++) {
        lua_createtable(L, 0, n_epoch_fields);
        set_fields(L, epoch_fields, n_epoch_fields, &s->history[i], "");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "history");
}

int script_train(lua_State *L, script *s, int idx, char *err)
{
    if (interrupt_requested()) return errorf(err, "stopped by a signal before this run started");
    char **rest = malloc(sizeof *rest * (size_t)(s->noverrides + 1));
    if (!rest) return errorf(err, "out of memory");
    config c;
    run_summary sum = { 0 };
    int rc = config_from_table(&c, L, idx, &s->path, s->file, remaining_overrides(s, rest), rest, err);
    free(rest);
    c.command = s->command;
    c.label = s->label;
    if (rc == 0) {
        s->computed_here = true;
        s->in_experiment = true;
        rc = train_run(&c, s->run_flags | TRAIN_IN_SCRIPT, s->log, &sum, err);
        s->in_experiment = false;
        if (rc == TRAIN_INTERRUPTED) s->interrupted = true;
    }
    if (rc == 0) push_summary(L, &sum);
    run_summary_free(&sum);
    config_free(&c);
    return rc;
}

/* runexp.train(cfg) -> results */
static int l_train(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    char err[ERR_LEN];
    return script_train(L, self_of(L), 1, err) == 0 ? 1 : raise(L, err);
}

static int split_of(lua_State *L, int idx, rx_split *split)
{
    static const char *const names[] = { "train", "valid", "test", NULL };
    int i = luaL_checkoption(L, idx, "test", names);
    *split = (rx_split)i;
    return 0;
}

/* runexp.evaluate(checkpoint, cfg [, split]) -> { loss, accuracy, correct, total, per_class_accuracy } */
static int l_evaluate(lua_State *L)
{
    script *s = self_of(L);
    const char *checkpoint = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    rx_split split;
    split_of(L, 3, &split);
    char err[ERR_LEN];
    char **rest = malloc(sizeof *rest * (size_t)(s->noverrides + 1));
    if (!rest) return raise(L, "out of memory");
    config c;
    eval_result *e = calloc(1, sizeof *e);
    int rc = e ? config_from_table(&c, L, 2, &s->path, s->file, remaining_overrides(s, rest), rest, err) : -1;
    if (!e) snprintf(err, sizeof err, "out of memory");
    free(rest);
    if (rc == 0) s->computed_here = true;
    if (rc == 0) rc = evaluate_checkpoint(&c, checkpoint, split, e, err);
    if (rc == 0) {
        lua_newtable(L);
        set_string(L, "checkpoint", checkpoint);
        set_string(L, "split", lua_tostring(L, 3) ? lua_tostring(L, 3) : "test");
        set_fields(L, eval_fields, n_eval_fields, e, "");
    }
    if (e) config_free(&c);
    free(e);
    return rc == 0 ? 1 : raise(L, err);
}

/* The inputs of runexp.predict: a string, or a list of strings, into a new array (free it). */
static char **predict_inputs(lua_State *L, int idx, int *n)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        char **v = malloc(sizeof *v);
        if (v) v[0] = (char *)lua_tostring(L, idx);
        *n = 1;
        return v;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int)luaL_len(L, idx);
    for (int i = 0; i < *n; i++) { /* every type checked before anything is allocated */
        if (lua_rawgeti(L, idx, i + 1) != LUA_TSTRING)
            luaL_error(L, "runexp.predict: images[%d] is not a string (a file or a folder)", i + 1);
        lua_pop(L, 1);
    }
    char **v = malloc(sizeof *v * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; v && i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        v[i] = (char *)lua_tostring(L, -1); /* kept alive by the table */
        lua_pop(L, 1);
    }
    return v;
}

/* One prediction as a table: file, and error, or class, probability and top (class, index,
 * probability each, most probable first; index counts from 0, as labels do). */
static void push_prediction(lua_State *L, const predict_result *r, const prediction *p)
{
    lua_newtable(L);
    set_string(L, "file", p->file);
    if (p->error) {
        set_string(L, "error", p->error);
        return;
    }
    set_string(L, "class", p->index[0] < r->nclasses ? r->class_names[p->index[0]] : "?");
    set_number(L, "probability", p->probability[0]);
    lua_createtable(L, r->top, 0);
    for (int j = 0; j < r->top; j++) {
        lua_createtable(L, 0, 3);
        set_string(L, "class", p->index[j] < r->nclasses ? r->class_names[p->index[j]] : "?");
        set_integer(L, "index", p->index[j]);
        set_number(L, "probability", p->probability[j]);
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "top");
}

/* runexp.predict(checkpoint_or_run_dir, images [, { top = 3, resize = "resize" | "crop" }]) -> a list */
static int l_predict(lua_State *L)
{
    script *s = self_of(L);
    predict_request q = { .target = luaL_checkstring(L, 1), .top = 3, .fit = -1 };
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "top");
        q.top = (int)luaL_optinteger(L, -1, 3);
        lua_getfield(L, 3, "resize");
        q.fit = luaL_checkoption(L, -1, "resize", picture_fit_names);
        lua_pop(L, 2);
    }
    int n;
    char **inputs = predict_inputs(L, 2, &n);
    char **rest = malloc(sizeof *rest * (size_t)(s->noverrides + 1));
    if (!inputs || !rest) {
        free(inputs);
        free(rest);
        return raise(L, "out of memory");
    }
    q.inputs = inputs;
    q.ninputs = n;
    q.noverrides = remaining_overrides(s, rest);
    q.overrides = rest;
    predict_result r;
    char err[ERR_LEN];
    s->computed_here = true; /* its OpenMP threads, as a training's, would not survive a fork */
    int rc = predict(&s->path, &q, &r, err);
    free(inputs);
    free(rest);
    if (rc != 0) return raise(L, err);
    lua_createtable(L, (int)r.n, 0);
    for (int64_t i = 0; i < r.n; i++) {
        push_prediction(L, &r, &r.items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    predict_result_free(&r);
    return 1;
}

/* runexp.options(defaults) -> a copy with the overrides whose first key it has applied */
static int l_options(lua_State *L)
{
    script *s = self_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, lua_upvalueindex(2), "with"); /* runexp.with(defaults): a deep copy */
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    int copy = lua_gettop(L);
    for (int i = 0; i < s->noverrides; i++) {
        const char *arg = s->overrides[i];
        size_t first = strcspn(arg, ".=");
        lua_pushlstring(L, arg, first);
        bool mine = lua_rawget(L, 1) != LUA_TNIL;
        lua_pop(L, 1);
        if (!mine) continue;
        char err[ERR_LEN];
        if (config_override(L, copy, arg, err) != 0) return raise(L, err);
        s->taken[i] = true;
    }
    return 1;
}

static void push_default(lua_State *L, const rx_param *p)
{
    if (p->required) {
        lua_pushnil(L);
        return;
    }
    switch (p->type) {
    case RX_INT: lua_pushinteger(L, p->def.i); break;
    case RX_NUM: lua_pushnumber(L, p->def.num); break;
    case RX_BOOL: lua_pushboolean(L, p->def.b); break;
    case RX_STR: lua_pushstring(L, p->def.s ? p->def.s : ""); break;
    case RX_NUMS:
        lua_createtable(L, p->def.len, 0);
        for (int i = 0; i < p->def.len; i++) {
            lua_pushnumber(L, p->def.list[i]);
            lua_rawseti(L, -2, i + 1);
        }
        break;
    }
}

static const char *type_word(rx_type t)
{
    switch (t) {
    case RX_INT: return "integer";
    case RX_NUM: return "number";
    case RX_BOOL: return "boolean";
    case RX_STR: return "string";
    case RX_NUMS: return "numbers";
    }
    return "?";
}

/* runexp.plugins() -> { { name, kind, summary, file, params = { { name, type, default, required, help } } } } */
static int l_plugins(lua_State *L)
{
    script *s = self_of(L);
    int n;
    plugin *all = plugin_catalog(&s->path, &n, NULL, 0);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const rx_plugin *d = all[i].desc;
        lua_newtable(L);
        set_string(L, "name", d->name);
        set_string(L, "kind", plugin_kind_name(d->kind));
        set_string(L, "summary", d->summary);
        set_string(L, "file", all[i].file);
        lua_newtable(L);
        for (int k = 0; d->params[k].key; k++) {
            const rx_param *p = &d->params[k];
            lua_newtable(L);
            set_string(L, "name", p->key);
            set_string(L, "type", type_word(p->type));
            push_default(L, p);
            lua_setfield(L, -2, "default");
            lua_pushboolean(L, p->required);
            lua_setfield(L, -2, "required");
            set_string(L, "help", p->help ? p->help : "");
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "params");
        lua_rawseti(L, -2, i + 1);
    }
    for (int i = 0; i < n; i++) plugin_unload(&all[i]);
    free(all);
    return 1;
}

/* runexp.write_file(path, text): whole or not at all, parent folders created. */
static int l_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    char err[ERR_LEN], dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (make_dirs(dir, err) != 0) return raise(L, err);
    }
    if (write_file_atomic(path, text, len, err) != 0) return raise(L, err);
    return 0;
}

static double number_field(lua_State *L, int idx, const char *key, double otherwise)
{
    lua_getfield(L, idx, key);
    double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : otherwise;
    lua_pop(L, 1);
    return v;
}

/* An epoch record from a history table as runexp.train returns it; missing fields are 0, a
 * missing epoch its position. */
static epoch_record record_from_lua(lua_State *L, int idx, int64_t position)
{
    epoch_record e = { 0 };
    for (int i = 0; i < n_epoch_fields; i++) {
        const field *f = &epoch_fields[i];
        double v = number_field(L, idx, f->name, f->offset == offsetof(epoch_record, epoch) ? (double)position : 0);
        void *at = (char *)&e + f->offset;
        if (f->type == FIELD_INT) *(int64_t *)at = (int64_t)v;
        else *(double *)at = v;
    }
    return e;
}

/* runexp.sweep_report(path, rows): rows = { { label, history, best_valid_loss, best_epoch,
 * test_accuracy, run_dir, error }, ... }, as runexp.train's results give them. Writes one HTML
 * page with every run's curves and the results table. Strings stay on the Lua stack (the rows
 * table holds them) until the page is written. */
int script_sweep_report(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int nruns = (int)luaL_len(L, 2);
    sweep_run *runs = lua_newuserdatauv(L, sizeof *runs * (size_t)(nruns + 1), 0); /* freed by Lua */
    memset(runs, 0, sizeof *runs * (size_t)(nruns + 1));
    for (int i = 0; i < nruns; i++) {
        luaL_checkstack(L, 8, "runexp.sweep_report: too many rows");
        lua_rawgeti(L, 2, i + 1);
        int row = lua_gettop(L);
        if (!lua_istable(L, row)) return luaL_error(L, "runexp.sweep_report: row %d is not a table", i + 1);
        sweep_run *u = &runs[i];
        lua_getfield(L, row, "label");
        u->label = lua_tostring(L, -1) ? lua_tostring(L, -1) : "?";
        lua_getfield(L, row, "run_dir");
        u->run_dir = lua_tostring(L, -1);
        lua_getfield(L, row, "error");
        u->error = lua_tostring(L, -1);
        u->best_valid_loss = number_field(L, row, "best_valid_loss", 0);
        u->best_epoch = (int64_t)number_field(L, row, "best_epoch", 0);
        u->test_accuracy = number_field(L, row, "test_accuracy", 0);
        lua_getfield(L, row, "history");
        if (lua_istable(L, -1)) {
            int h = lua_gettop(L), n = (int)luaL_len(L, h);
            epoch_record *e = lua_newuserdatauv(L, sizeof *e * (size_t)(n + 1), 0);
            for (int k = 0; k < n; k++) {
                lua_rawgeti(L, h, k + 1);
                int t = lua_gettop(L);
                e[k] = record_from_lua(L, t, k + 1);
                lua_pop(L, 1);
            }
            u->history = e;
            u->nhistory = n;
        }
        /* label, run_dir, error, history (and its records) stay on the stack until the end */
    }
    char err[ERR_LEN];
    sweep_input in = { .title = path, .runs = runs, .nruns = nruns };
    if (report_write_sweep_html(path, &in, err) != 0) return raise(L, err);
    return 0;
}

/* Creates the module as the global `runexp`, each function holding the script as an upvalue. */
static void open_module(lua_State *L, script *s)
{
    static const luaL_Reg funcs[] = {
        { "train", l_train }, { "evaluate", l_evaluate }, { "predict", l_predict }, { "options", l_options },
        { "plugins", l_plugins }, { "write_file", l_write_file }, { "sweep_report", script_sweep_report },
        { "map", sweep_map }, { NULL, NULL },
    };
    lua_newtable(L);
    int module = lua_gettop(L);
    for (const luaL_Reg *f = funcs; f->name; f++) {
        lua_pushlightuserdata(L, s);
        lua_pushvalue(L, module);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, module, f->name);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", s->file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    set_string(L, "dir", dir);
    lua_pushliteral(L, RUNEXP_VERSION);
    lua_setfield(L, module, "version");
    if (luaL_loadbufferx(L, prelude, strlen(prelude), "=runexp", "t") == LUA_OK) {
        lua_pushvalue(L, module);
        lua_call(L, 1, 0);
    }
    lua_setglobal(L, "runexp");
}

/* Runs the experiment a config returned, as the command line does. */
static int run_returned_table(script *s, lua_State *L, char *err)
{
    if (s->sweep.jobs || s->sweep.shards)
        return errorf(err, "%s returns one experiment; jobs= and shard= are for configs that call runexp.map", s->file),
               SCRIPT_FAILED;
    char **rest = malloc(sizeof *rest * (size_t)(s->noverrides + 1));
    if (!rest) return snprintf(err, ERR_LEN, "out of memory"), SCRIPT_FAILED;
    config c;
    run_summary sum = { 0 };
    int rc = config_from_table(&c, L, -1, &s->path, s->file, remaining_overrides(s, rest), rest, err);
    free(rest);
    c.command = s->command;
    s->in_experiment = true;
    if (rc == 0) rc = train_run(&c, s->run_flags, s->log, &sum, err);
    s->in_experiment = false;
    run_summary_free(&sum);
    config_free(&c);
    return rc == 0 ? SCRIPT_OK : rc == TRAIN_INTERRUPTED || interrupt_requested() ? SCRIPT_INTERRUPTED : SCRIPT_FAILED;
}

/* How often the config's own Lua looks at the stop flag: every this many instructions (well
 * under a millisecond of Lua). */
#define STOP_CHECK_INSTRUCTIONS 10000

/* A stop request ends the config's Lua (a loop, a long computation) as an error at its line;
 * not while the host runs an experiment, which calls back into this state (an lr function) and
 * stops at its own points. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    const script *s = *(script **)lua_getextraspace(L);
    if (!interrupt_requested() || s->in_experiment) return;
    lua_getinfo(L, "Sl", ar);
    lua_pushfstring(L, "%s:%d: stopped by a signal", ar->short_src, ar->currentline);
    lua_error(L);
}

int script_run(script *s, const char *file, char *err)
{
    s->file = file;
    s->interrupted = false;
    s->share_done = false;
    if (file_check_regular(file, err) != 0) return SCRIPT_FAILED; /* Lua's loader would block on a FIFO */
    s->taken = calloc((size_t)s->noverrides + 1, sizeof *s->taken);
    if (s->taken && sweep_take_overrides(s, err) != 0) {
        free(s->taken);
        return SCRIPT_FAILED;
    }
    lua_State *L = config_lua_state();
    if (!L || !s->taken) {
        free(s->taken);
        if (L) lua_close(L);
        snprintf(err, ERR_LEN, "%s: out of memory", file);
        return SCRIPT_FAILED;
    }
    luaL_openlibs(L);
    open_module(L, s);
    *(script **)lua_getextraspace(L) = s;
    lua_sethook(L, stop_hook, LUA_MASKCOUNT, STOP_CHECK_INSTRUCTIONS);
    int rc;
    /* Text only: a precompiled chunk is not a config. Lua's messages already name file:line. */
    if (luaL_loadfilex(L, file, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(err, ERR_LEN, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error without a message");
        config_lua_limit_reached(L, file, err);
        rc = s->interrupted || interrupt_requested() ? SCRIPT_INTERRUPTED : SCRIPT_FAILED;
        if (s->share_done) rc = SCRIPT_OK; /* runexp.map ended this process after its share */
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        rc = run_returned_table(s, L, err);
    } else if (lua_isnil(L, -1)) {
        /* a program that ran its own experiments, unless a stop request cut it short */
        rc = s->interrupted || interrupt_requested() ? SCRIPT_INTERRUPTED : SCRIPT_OK;
        if (rc) snprintf(err, ERR_LEN, "stopped by a signal");
    } else {
        char got[64];
        snprintf(got, sizeof got, "%s", luaL_typename(L, -1));
        snprintf(err, ERR_LEN, "%s: the config must return a table (the experiment) or nothing, got %s", file, got);
        rc = SCRIPT_FAILED;
    }
    lua_close(L);
    free(s->taken);
    s->taken = NULL;
    return rc;
}

static void print_default(FILE *out, const rx_param *p)
{
    char buf[160];
    if (p->required) {
        snprintf(buf, sizeof buf, "(required)");
    } else {
        switch (p->type) {
        case RX_INT: snprintf(buf, sizeof buf, "%lld", (long long)p->def.i); break;
        case RX_NUM: snprintf(buf, sizeof buf, "%g", p->def.num); break;
        case RX_BOOL: snprintf(buf, sizeof buf, "%s", p->def.b ? "true" : "false"); break;
        case RX_STR: snprintf(buf, sizeof buf, "\"%s\"", p->def.s ? p->def.s : ""); break;
        case RX_NUMS: {
            size_t used = (size_t)snprintf(buf, sizeof buf, "{");
            for (int i = 0; i < p->def.len && used < sizeof buf; i++)
                used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%g", i ? ", " : "", p->def.list[i]);
            if (used < sizeof buf) snprintf(buf + used, sizeof buf - used, "}");
            break;
        }
        }
    }
    fprintf(out, "%-14s", buf);
}

void script_print_plugins(const plugin_path *p, FILE *out)
{
    int n;
    char skipped[4096];
    plugin *all = plugin_catalog(p, &n, skipped, sizeof skipped);
    const char *kind = "";
    for (int i = 0; i < n; i++) {
        const rx_plugin *d = all[i].desc;
        const char *folder = plugin_folder(d->kind);
        if (strcmp(folder, kind) != 0) fprintf(out, "%s%s\n", i ? "\n" : "", folder);
        kind = folder;
        fprintf(out, "  %-14s %-9s %s\n", d->name, plugin_kind_name(d->kind), d->summary);
        for (int k = 0; d->params[k].key; k++) {
            const rx_param *pr = &d->params[k];
            fprintf(out, "      %-16s %-8s ", pr->key, type_word(pr->type));
            print_default(out, pr);
            fprintf(out, " %s\n", pr->help ? pr->help : "");
        }
        fprintf(out, "      (%s)\n", all[i].file);
    }
    if (skipped[0]) fprintf(out, "\nnot loaded:\n%s\n", skipped);
    for (int i = 0; i < n; i++) plugin_unload(&all[i]);
    free(all);
}
