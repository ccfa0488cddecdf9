/* sweep_file.c: a sweep's folder: result files, sweep.csv and sweep.html, and `runexp merge`
 * (see sweep_file.h). Result files are read by a small C decoder, never run as Lua, so a broken
 * or hostile file is a message with its byte, not code. */
#include "sweep_file.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "files.h"
#include "script.h"

#define SWEEP_MAGIC "runexp-sweep-result 1\n"
/* runexp.train's results are three tables deep; the bound keeps a hostile file off C's stack. */
#define MAX_DEPTH 16

bool sweep_path(char *out, size_t len, const char *dir, int experiment, const char *ext)
{
    return snprintf(out, len, "%s/results/%d.%s", dir, experiment, ext) < (int)len;
}

static int encode(lua_State *L, int idx, strbuf *b, int depth, char *err);

static int encode_table(lua_State *L, int idx, strbuf *b, int depth, char *err)
{
    if (depth >= MAX_DEPTH) return errorf(err, "a result's tables are nested deeper than %d", MAX_DEPTH);
    luaL_checkstack(L, 4, "a sweep result");
    int n = 0;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) n++;
    sb_printf(b, "t%d{", n);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        bool key_ok = lua_type(L, -2) == LUA_TSTRING || lua_isinteger(L, -2);
        if (!key_ok) errorf(err, "a result's table has a %s key; only integer and string keys are written",
                            luaL_typename(L, -2));
        if (!key_ok || encode(L, -2, b, depth + 1, err) != 0 || encode(L, -1, b, depth + 1, err) != 0) {
            lua_pop(L, 2);
            return -1;
        }
    }
    sb_append(b, "}", 1);
    return 0;
}

static int encode(lua_State *L, int idx, strbuf *b, int depth, char *err)
{
    idx = lua_absindex(L, idx);
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) sb_printf(b, "i%lld;", (long long)lua_tointeger(L, idx));
        else sb_printf(b, "n%a;", lua_tonumber(L, idx));
        return 0;
    case LUA_TBOOLEAN: sb_printf(b, "b%d", lua_toboolean(L, idx)); return 0;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        sb_printf(b, "s%zu:", len);
        sb_append(b, s, len);
        return 0;
    case LUA_TTABLE: return encode_table(L, idx, b, depth, err);
    default:
        return errorf(err, "a result holds a %s; only numbers, strings, booleans and tables are written",
                      luaL_typename(L, idx));
    }
}

int sweep_write_value(lua_State *L, int idx, const char *path, char *err)
{
    strbuf b = { 0 };
    sb_append(&b, SWEEP_MAGIC, strlen(SWEEP_MAGIC));
    char why[ERR_LEN];
    int rc = encode(L, idx, &b, 0, why);
    if (rc != 0) errorf(err, "%s: %s", path, why);
    else if (b.oom) rc = errorf(err, "%s: out of memory", path);
    else rc = write_file_atomic(path, b.s, b.len, err);
    sb_free(&b);
    return rc;
}

typedef struct reader {
    const char *p, *start, *end;
    const char *name;
    char *err;
} reader;

static int bad(reader *r, const char *what)
{
    return errorf(r->err, "%s: byte %td: %s", r->name, r->p - r->start, what);
}

/* The text up to `stop` (at most len - 1 bytes) into buf, and r past the stop. */
static int token(reader *r, char stop, char *buf, size_t len, const char *what)
{
    const char *e = memchr(r->p, stop, (size_t)(r->end - r->p));
    if (!e || e == r->p || (size_t)(e - r->p) >= len) return bad(r, what);
    memcpy(buf, r->p, (size_t)(e - r->p));
    buf[e - r->p] = '\0';
    r->p = e + 1;
    return 0;
}

/* A whole number from 0 to max, ended by stop. */
static int count_of(reader *r, char stop, long long max, long long *v, const char *what)
{
    char buf[32], *end;
    if (token(r, stop, buf, sizeof buf, what) != 0) return -1;
    errno = 0;
    *v = strtoll(buf, &end, 10);
    if (*end || errno || buf[0] < '0' || buf[0] > '9' || *v > max) return r->p--, bad(r, what);
    return 0;
}

static int decode(lua_State *L, reader *r, int depth);

static int decode_table(lua_State *L, reader *r, int depth)
{
    long long n;
    /* a pair takes at least 4 bytes ("b0b0"), which bounds the count by what the file holds */
    if (count_of(r, '{', (r->end - r->p) / 4, &n, "expected a table's pair count and '{'") != 0) return -1;
    if (depth >= MAX_DEPTH) return bad(r, "tables nested too deep");
    luaL_checkstack(L, 4, "a sweep result");
    lua_createtable(L, 0, n < 256 ? (int)n : 256);
    for (long long k = 0; k < n; k++) {
        const char *key_at = r->p;
        if (decode(L, r, depth + 1) != 0) return -1;
        if (lua_type(L, -1) != LUA_TSTRING && !lua_isinteger(L, -1))
            return r->p = key_at, bad(r, "a table's key must be an integer or a string");
        if (decode(L, r, depth + 1) != 0) return -1;
        lua_rawset(L, -3);
    }
    if (r->p >= r->end || *r->p != '}') return bad(r, "expected '}' after a table's pairs");
    r->p++;
    return 0;
}

static int decode(lua_State *L, reader *r, int depth)
{
    if (r->p >= r->end) return bad(r, "the file ends where a value was expected");
    const char *at = r->p; /* a bad number is reported at its value's start */
    char buf[64], *end, tag = *r->p++;
    long long len;
    switch (tag) {
    case 'i':
        if (token(r, ';', buf, sizeof buf, "expected an integer and ';'") != 0) return -1;
        errno = 0;
        lua_Integer i = strtoll(buf, &end, 10);
        if (*end || errno) return r->p = at, bad(r, "expected an integer before ';'");
        lua_pushinteger(L, i);
        return 0;
    case 'n':
        if (token(r, ';', buf, sizeof buf, "expected a number and ';'") != 0) return -1;
        double v = strtod(buf, &end);
        if (*end) return r->p = at, bad(r, "expected a number before ';'");
        lua_pushnumber(L, v);
        return 0;
    case 'b':
        if (r->p >= r->end || (*r->p != '0' && *r->p != '1')) return bad(r, "expected 0 or 1 after 'b'");
        lua_pushboolean(L, *r->p++ == '1');
        return 0;
    case 's':
        if (count_of(r, ':', r->end - r->p, &len, "expected a string's length and ':'") != 0) return -1;
        if (len > r->end - r->p) return bad(r, "a string runs past the end of the file");
        lua_pushlstring(L, r->p, (size_t)len);
        r->p += len;
        return 0;
    case 't': return decode_table(L, r, depth);
    default: return r->p--, bad(r, "expected a value (i, n, s, b or t)");
    }
}

int sweep_decode(lua_State *L, const char *text, size_t len, const char *name, char *err)
{
    reader r = { .p = text, .start = text, .end = text + len, .name = name, .err = err };
    size_t magic = strlen(SWEEP_MAGIC);
    if (len < magic || memcmp(text, SWEEP_MAGIC, magic) != 0)
        return errorf(err, "%s: not a runexp sweep result (expected the line '%.*s' at its start)", name,
                      (int)magic - 1, SWEEP_MAGIC);
    r.p += magic;
    int top = lua_gettop(L);
    int rc = decode(L, &r, 0);
    if (rc == 0 && r.p != r.end) rc = bad(&r, "unexpected bytes after the value");
    if (rc != 0) lua_settop(L, top);
    return rc;
}

int sweep_read_value(lua_State *L, const char *path, char *err)
{
    char *text;
    size_t len;
    if (read_file(path, &text, &len, err) != 0) return -1;
    int rc = sweep_decode(L, text, len, path, err);
    free(text);
    return rc;
}

int sweep_write_result(lua_State *L, int idx, const char *dir, int i, int count, int shards, const char *launch,
                       char *err)
{
    idx = lua_absindex(L, idx);
    char path[PATH_MAX];
    if (!sweep_path(path, sizeof path, dir, i, "result")) return errorf(err, "%s: path too long", dir);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "experiment");
    lua_pushinteger(L, count);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, shards);
    lua_setfield(L, -2, "shards");
    lua_pushstring(L, launch);
    lua_setfield(L, -2, "launch");
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "result");
    int rc = sweep_write_value(L, -1, path, err);
    lua_pop(L, 1);
    return rc;
}

static lua_Integer integer_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

/* The envelope on top: its fields checked against experiment i of count (count 0: any size,
 * which *count then receives) and the launch ("" accepts any). 0: the result replaces the
 * envelope; 1: another launch's, popped; -1: refused with the message, popped. */
static int open_envelope(lua_State *L, const char *path, int i, int *count, int *shards, const char *launch,
                         char *err)
{
    int env = lua_gettop(L);
    if (!lua_istable(L, env)) lua_newtable(L), lua_replace(L, env); /* then refused, as any broken envelope */
    lua_Integer got = integer_field(L, env, "experiment"), n = integer_field(L, env, "count");
    lua_Integer s = integer_field(L, env, "shards");
    lua_getfield(L, env, "launch");
    lua_getfield(L, env, "result");
    int rc = 0;
    if (got != i || n < i || n > INT_MAX || s < 1 || s > INT_MAX || !lua_isstring(L, -2) || !lua_istable(L, -1))
        rc = errorf(err, "%s: not experiment %d's result (expected experiment = %d, count, launch and result)", path,
                    i, i);
    else if (*count && n != *count)
        rc = errorf(err, "%s: from a sweep of %lld experiments, this one has %d: results of two sweeps in one folder",
                    path, (long long)n, *count);
    else if (launch[0] && strcmp(lua_tostring(L, -2), launch) != 0) rc = 1;
    if (rc == 0) {
        *count = (int)n;
        *shards = (int)s;
        lua_replace(L, env);
    }
    lua_settop(L, rc == 0 ? env : env - 1);
    return rc;
}

int sweep_read_result(lua_State *L, const char *dir, int i, int count, const char *launch, char *err)
{
    char path[PATH_MAX];
    if (!sweep_path(path, sizeof path, dir, i, "result")) return errorf(err, "%s: path too long", dir);
    if (access(path, F_OK) != 0) return 1;
    if (sweep_read_value(L, path, err) != 0) return -1;
    int shards;
    return open_envelope(L, path, i, &count, &shards, launch, err);
}

static void csv_text(strbuf *b, const char *s)
{
    if (!s) return;
    if (!strpbrk(s, ",\"\n\r")) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"') sb_append(b, "\"", 1);
        sb_append(b, s, 1);
    }
    sb_append(b, "\"", 1);
}

static double number_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* experiment,label,ok,best_valid_loss,best_epoch,test_accuracy,total_seconds,run_dir,error */
static void csv_row(lua_State *L, int row, int i, strbuf *b)
{
    lua_getfield(L, row, "ok");
    bool ok = lua_toboolean(L, -1);
    lua_getfield(L, row, "label");
    lua_getfield(L, row, "run_dir");
    lua_getfield(L, row, "error");
    sb_printf(b, "%d,", i);
    csv_text(b, lua_tostring(L, -3));
    sb_printf(b, ",%s,", ok ? "true" : "false");
    if (ok)
        sb_printf(b, "%.9g,%lld,%.9g,%.6g", number_field(L, row, "best_valid_loss"),
                  (long long)integer_field(L, row, "best_epoch"), number_field(L, row, "test_accuracy"),
                  number_field(L, row, "total_seconds"));
    else
        sb_printf(b, ",,,");
    sb_append(b, ",", 1);
    csv_text(b, lua_tostring(L, -2));
    sb_append(b, ",", 1);
    csv_text(b, lua_tostring(L, -1));
    sb_append(b, "\n", 1);
    lua_pop(L, 4);
}

int sweep_write_reports(lua_State *L, int idx, int n, const char *dir, char *err)
{
    idx = lua_absindex(L, idx);
    char path[PATH_MAX];
    strbuf b = { 0 };
    sb_printf(&b, "experiment,label,ok,best_valid_loss,best_epoch,test_accuracy,total_seconds,run_dir,error\n");
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_istable(L, -1)) csv_row(L, lua_gettop(L), i, &b);
        lua_pop(L, 1);
    }
    int rc = snprintf(path, sizeof path, "%s/sweep.csv", dir) < (int)sizeof path ? 0 : errorf(err, "%s: path too long", dir);
    if (rc == 0 && b.oom) rc = errorf(err, "%s: out of memory", path);
    if (rc == 0) rc = write_file_atomic(path, b.s, b.len, err);
    sb_free(&b);
    if (rc != 0) return rc;
    snprintf(path, sizeof path, "%s/sweep.html", dir);
    lua_pushcfunction(L, script_sweep_report);
    lua_pushstring(L, path);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 2, 0, 0) == LUA_OK) return 0;
    errorf(err, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
}

/* Experiment i from a results folder's file name "I.result", or 0. */
static int experiment_of(const char *name)
{
    char *end;
    if (name[0] < '1' || name[0] > '9') return 0;
    errno = 0;
    long v = strtol(name, &end, 10);
    return strcmp(end, ".result") == 0 && errno == 0 && v <= INT_MAX ? (int)v : 0;
}

/* Every DIR/results/I.result into rows[I]; *count from them. */
static int collect(lua_State *L, const char *dir, int rows, int *count, int *shards, char *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/results", dir);
    DIR *d = opendir(path);
    if (!d) return errorf(err, "%s: %s: not a sweep's folder, or no experiment of it has finished", path, strerror(errno));
    int found = 0, rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        int i = experiment_of(e->d_name);
        if (i == 0) continue;
        snprintf(path, sizeof path, "%s/results/%s", dir, e->d_name);
        rc = sweep_read_value(L, path, err);
        if (rc == 0) rc = open_envelope(L, path, i, count, shards, "", err);
        if (rc == 0) lua_rawseti(L, rows, i), found++;
    }
    closedir(d);
    if (rc == 0 && found == 0) rc = errorf(err, "%s/results: no result files (I.result) in it", dir);
    return rc;
}

/* Experiment i's row when its result is missing; its number (and shard) added to the string at
 * index list. */
static void missing_row(lua_State *L, int rows, int i, int shards, int list)
{
    char why[256];
    int n = snprintf(why, sizeof why, "no result: results/%d.result is missing", i);
    if (shards > 1) snprintf(why + n, sizeof why - (size_t)n, " (shard %d/%d did not finish it)", (i - 1) % shards, shards);
    lua_createtable(L, 0, 3);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    lua_pushfstring(L, "experiment %d", i);
    lua_setfield(L, -2, "label");
    lua_pushstring(L, why);
    lua_setfield(L, -2, "error");
    lua_rawseti(L, rows, i);
    const char *before = lua_tostring(L, list);
    if (shards > 1) lua_pushfstring(L, "%s%s%d (shard %d/%d)", before, *before ? ", " : "", i, (i - 1) % shards, shards);
    else lua_pushfstring(L, "%s%s%d", before, *before ? ", " : "", i);
    lua_replace(L, list);
}

typedef struct merge_job {
    const char *dir;
    FILE *log;
    char *err;
    int rc;
} merge_job;

static int merge_in_lua(lua_State *L)
{
    merge_job *j = lua_touserdata(L, 1);
    lua_newtable(L);
    int rows = lua_gettop(L), count = 0, shards = 1, nmissing = 0;
    j->rc = collect(L, j->dir, rows, &count, &shards, j->err);
    if (j->rc != 0) return 0;
    lua_pushliteral(L, "");
    int missing = lua_gettop(L);
    for (int i = 1; i <= count; i++) {
        if (lua_rawgeti(L, rows, i) == LUA_TNIL) missing_row(L, rows, i, shards, missing), nmissing++;
        lua_pop(L, 1);
    }
    j->rc = sweep_write_reports(L, rows, count, j->dir, j->err);
    if (j->rc == 0 && nmissing)
        j->rc = errorf(j->err, "%s: %d of %d experiments have no result: %s; sweep.csv and sweep.html mark them missing",
                       j->dir, nmissing, count, lua_tostring(L, missing));
    else if (j->rc == 0)
        fprintf(j->log, "merged %d experiments into %s/sweep.csv and %s/sweep.html\n", count, j->dir, j->dir);
    return 0;
}

int sweep_merge(const char *dir, FILE *log, char *err)
{
    lua_State *L = config_lua_state();
    if (!L) return errorf(err, "out of memory creating a Lua state");
    merge_job j = { .dir = dir, .log = log, .err = err, .rc = -1 };
    lua_pushcfunction(L, merge_in_lua);
    lua_pushlightuserdata(L, &j);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) j.rc = errorf(err, "%s: %s", dir, lua_tostring(L, -1));
    lua_close(L);
    return j.rc;
}
