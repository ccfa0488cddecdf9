/* sweep.c: runexp.map, experiments run side by side (see sweep.h): which experiments are this
 * process's (shard, rank), running them here or in forked processes, collecting the other
 * ranks' results. The files it reads and writes are sweep_file.c's.
 *
 * A forked child is a copy of the config's Lua state at the moment of the call, so an
 * experiment may hold what no file can (an lr function and its upvalues); it runs the same
 * script_train as runexp.train, under its own lua_pcall (an error must never unwind into the
 * parent's frames in the child), writes its result file and leaves with _exit. */
#include "sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"
#include "files.h"
#include "interrupt.h"
#include "script.h"
#include "sweep_file.h"

/* Where this process stands among the ranks of one launch. */
typedef struct place {
    int rank, size;
    char launch[160];   /* the launcher's job id, "" when none: tells this launch's results apart */
} place;

typedef struct plan {
    int n;              /* experiments */
    int exps, opts;     /* stack indices: the experiments, the options (0: none) */
    int results;        /* stack index of the results table */
    const char *dir;    /* the sweep's folder; NULL: none */
    int jobs, threads_each;
    int shard, shards;  /* shards 1: no shards */
    place at;
} plan;

/* ---- The command line ---- */

/* A whole number from lo to hi, all of text up to `stop` ('\0' for the end); *end after it. */
static bool whole_number(const char *text, char stop, long long lo, long long hi, long long *v, const char **end)
{
    char *e;
    if (*text < '0' || *text > '9') return false;
    errno = 0;
    *v = strtoll(text, &e, 10);
    *end = e;
    return *e == stop && errno == 0 && *v >= lo && *v <= hi;
}

/* shard=auto: the Slurm job array's task, counted from its first id. */
static int shard_from_slurm(sweep_cli *c, char *err)
{
    const char *id = getenv("SLURM_ARRAY_TASK_ID"), *count = getenv("SLURM_ARRAY_TASK_COUNT");
    const char *min = getenv("SLURM_ARRAY_TASK_MIN");
    const char *end;
    long long i, n, first = 0;
    if (!id || !count)
        return errorf(err, "shard=auto: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set (not in a Slurm job "
                           "array, sbatch --array); give shard=I/N");
    if (!whole_number(id, '\0', 0, INT_MAX, &i, &end) || !whole_number(count, '\0', 1, INT_MAX, &n, &end) ||
        (min && !whole_number(min, '\0', 0, INT_MAX, &first, &end)))
        return errorf(err, "shard=auto: SLURM_ARRAY_TASK_ID=%s, SLURM_ARRAY_TASK_COUNT=%s, SLURM_ARRAY_TASK_MIN=%s: "
                           "expected whole numbers", id, count, min ? min : "(unset)");
    if (i - first < 0 || i - first >= n)
        return errorf(err, "shard=auto: task %lld of an array from %lld with %lld tasks is not shard 0 to %lld: the "
                           "array's ids must be one range with step 1 (--array=0-%lld or 1-%lld)", i, first, n, n - 1,
                      n - 1, n);
    c->shard = (int)(i - first);
    c->shards = (int)n;
    return 0;
}

static int parse_shard(const char *text, sweep_cli *c, char *err)
{
    if (strcmp(text, "auto") == 0) return shard_from_slurm(c, err);
    const char *end;
    long long i, n;
    if (!whole_number(text, '/', 0, INT_MAX, &i, &end) || !whole_number(end + 1, '\0', 0, INT_MAX, &n, &end))
        return errorf(err, "shard=%s: expected I/N, shard I of N counted from 0 (shard=0/4 to shard=3/4), or shard=auto "
                           "in a Slurm job array", text);
    if (n < 1) return errorf(err, "shard=%s: N, the number of shards, must be at least 1", text);
    if (i >= n)
        return errorf(err, "shard=%s: I must be less than N (shards count from 0: 0/%lld to %lld/%lld)", text, n, n - 1,
                      n);
    c->shard = (int)i;
    c->shards = (int)n;
    return 0;
}

int sweep_take_overrides(script *s, char *err)
{
    s->sweep = (sweep_cli){ 0 };
    for (int k = 0; k < s->noverrides; k++) {
        const char *arg = s->overrides[k];
        if (strncmp(arg, "jobs=", 5) == 0) {
            long long v;
            const char *end;
            if (!whole_number(arg + 5, '\0', 1, SWEEP_MAX_JOBS, &v, &end))
                return errorf(err, "%s: expected jobs=N, a whole number of processes from 1 to %d", arg, SWEEP_MAX_JOBS);
            s->sweep.jobs = (int)v;
        } else if (strncmp(arg, "shard=", 6) == 0) {
            if (parse_shard(arg + 6, &s->sweep, err) != 0) return -1;
        } else {
            continue;
        }
        s->taken[k] = true;
    }
    return 0;
}

/* ---- Where this process stands ---- */

/* This process's rank and size: MPI's when it has started (dist.c, so that the two never
 * disagree), else the launcher's variables, for a build or a launch without MPI. */
static int find_place(place *p, char *err)
{
    static const char *const vars[][2] = {
        { "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" }, { "PMI_RANK", "PMI_SIZE" },
        { "SLURM_PROCID", "SLURM_NTASKS" },
    };
    *p = (place){ .rank = dist_rank(), .size = dist_size() };
    for (size_t k = 0; p->size == 1 && k < sizeof vars / sizeof *vars; k++) {
        const char *rank = getenv(vars[k][0]), *size = getenv(vars[k][1]), *end;
        if (!rank || !size) continue;
        long long r, n;
        if (!whole_number(size, '\0', 1, INT_MAX, &n, &end) || !whole_number(rank, '\0', 0, n - 1, &r, &end))
            return errorf(err, "%s=%s with %s=%s: expected a rank from 0 to the size - 1", vars[k][0], rank, vars[k][1],
                          size);
        p->rank = (int)r;
        p->size = (int)n;
        break;
    }
    const char *pmix = getenv("PMIX_NAMESPACE"), *ompi = getenv("OMPI_MCA_ess_base_jobid");
    const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
    if (pmix || ompi) snprintf(p->launch, sizeof p->launch, "%s", pmix ? pmix : ompi);
    else if (job) snprintf(p->launch, sizeof p->launch, "slurm %s.%s", job, step ? step : "");
    return 0;
}

/* Whether experiment i is in this shard, and whether it is this rank's. */
static bool in_shard(const plan *p, int i)
{
    return (i - 1) % p->shards == p->shard;
}

static bool is_mine(const plan *p, int i)
{
    return in_shard(p, i) && ((i - 1) / p->shards) % p->at.size == p->at.rank;
}

/* ---- One experiment's slot ---- */

/* Experiment i's label: options.labels[i], else its out, else "experiment I". */
static void push_label(lua_State *L, const plan *p, int i)
{
    if (p->opts) {
        int pushed = 1;
        if (lua_getfield(L, p->opts, "labels") == LUA_TTABLE) {
            pushed = 2;
            if (lua_rawgeti(L, -1, i) == LUA_TSTRING) {
                lua_remove(L, -2);
                return;
            }
        }
        lua_pop(L, pushed);
    }
    lua_rawgeti(L, p->exps, i);
    if (lua_getfield(L, -1, "out") == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 2);
    lua_pushfstring(L, "experiment %d", i);
}

/* Pushes a failed slot: { ok = false, error, label, run_dir (the experiment's out, if any) }. */
static void push_failure(lua_State *L, const plan *p, int i, const char *why)
{
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    lua_pushstring(L, why);
    lua_setfield(L, -2, "error");
    lua_rawgeti(L, p->exps, i);
    if (lua_getfield(L, -1, "out") == LUA_TSTRING) lua_setfield(L, -3, "run_dir");
    else lua_pop(L, 1);
    lua_pop(L, 1);
}

/* Runs experiment i in this process and pushes its slot. */
static void run_here(lua_State *L, script *s, const plan *p, int i)
{
    char err[ERR_LEN];
    lua_rawgeti(L, p->exps, i);
    if (script_train(L, s, lua_gettop(L), err) == 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "ok");
    } else {
        push_failure(L, p, i, err);
    }
    lua_remove(L, -2);
    push_label(L, p, i);
    lua_setfield(L, -2, "label");
}

/* The slot on top into results[i], and into DIR/results/I.result when there is a folder. */
static int keep(lua_State *L, const plan *p, int i, char *err)
{
    int rc = p->dir ? sweep_write_result(L, -1, p->dir, i, p->n, p->shards, p->at.launch, err) : 0;
    lua_rawseti(L, p->results, i);
    return rc;
}

/* ---- Running this process's experiments ---- */

enum { STOPPED = 1 };

static int run_in_process(lua_State *L, script *s, const plan *p, char *err)
{
    for (int i = 1; i <= p->n; i++) {
        if (!is_mine(p, i)) continue;
        if (interrupt_requested() || s->interrupted) return STOPPED;
        push_label(L, p, i); /* its epoch lines say it: "LABEL: epoch 1/3 ..." */
        s->label = lua_tostring(L, -1);
        run_here(L, s, p, i);
        s->label = NULL;
        lua_remove(L, -2); /* the label, under the result */
        if (keep(L, p, i, err) != 0) return -1;
    }
    return interrupt_requested() || s->interrupted ? STOPPED : 0;
}

typedef struct child_job {
    script *s;
    const plan *p;
    int i;
    char err[ERR_LEN];
} child_job;

/* In the child, under its own lua_pcall: the cores shared out unless the experiment says, the
 * training, and the result file. */
static int child_in_lua(lua_State *L)
{
    child_job *j = lua_touserdata(L, lua_upvalueindex(1));
    lua_rawgeti(L, j->p->exps, j->i);
    if (lua_getfield(L, -1, "threads") == LUA_TNIL) {
        lua_pushinteger(L, j->p->threads_each);
        lua_setfield(L, -3, "threads");
    }
    lua_pop(L, 2);
    run_here(L, j->s, j->p, j->i);
    lua_pushboolean(L, sweep_write_result(L, -1, j->p->dir, j->i, j->p->n, j->p->shards, j->p->at.launch, j->err) == 0);
    return 1;
}

/* The forked process of experiment i: never returns. Its output goes to DIR/results/I.log. */
static void child_main(lua_State *L, script *s, const plan *p, int i)
{
    char log[PATH_MAX];
    int fd = sweep_path(log, sizeof log, p->dir, i, "log") ? open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    s->log = stdout;
    child_job j = { .s = s, .p = p, .i = i };
    lua_pushlightuserdata(L, &j);
    lua_pushcclosure(L, child_in_lua, 1);
    for (int k = 1; k <= p->results; k++) lua_pushvalue(L, k); /* the plan's stack indices, in the new frame */
    int status = 0;
    if (lua_pcall(L, p->results, 1, 0) != LUA_OK) {
        fprintf(stderr, "runexp: experiment %d: %s\n", i, lua_tostring(L, -1));
        status = 1;
    } else if (!lua_toboolean(L, -1)) {
        fprintf(stderr, "runexp: experiment %d: %s\n", i, j.err);
        status = 1;
    }
    fflush(NULL);
    _exit(interrupt_requested() ? 130 : status);
}

typedef struct child {
    pid_t pid;
    int i;
} child;

/* Why experiment i's process left no result, from its wait status. */
static void push_death(lua_State *L, const plan *p, int i, int status, const char *read_error)
{
    char why[ERR_LEN], log[PATH_MAX];
    if (read_error) snprintf(why, sizeof why, "%s", read_error);
    else if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "its process died of signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) == 130) snprintf(why, sizeof why, "stopped by a signal");
    else snprintf(why, sizeof why, "its process exited with status %d without a result", WEXITSTATUS(status));
    sweep_path(log, sizeof log, p->dir, i, "log");
    push_label(L, p, i);
    lua_pushfstring(L, "experiment %d (%s): %s; its output is in %s", i, lua_tostring(L, -1), why, log);
    push_failure(L, p, i, lua_tostring(L, -1));
    lua_insert(L, -3);
    lua_pop(L, 1);
    lua_setfield(L, -2, "label");
}

/* A child has ended: its result file, or a failed slot that names its death (written too, so
 * that rank 0 and `runexp merge` see it). */
static int finish_child(lua_State *L, const plan *p, child k, int status, char *err)
{
    char why[ERR_LEN];
    int rc = sweep_read_result(L, p->dir, k.i, p->n, p->at.launch, why);
    if (rc == 0) {
        lua_rawseti(L, p->results, k.i);
        return 0;
    }
    push_death(L, p, k.i, status, rc < 0 ? why : NULL);
    return keep(L, p, k.i, err);
}

/* A stop passed on to the children: when, and whether they were killed for not stopping. */
typedef struct stopping {
    bool asked, killed;
    struct timespec since;
} stopping;

/* Seconds a child may take to stop (it promises one) before SIGKILL: one hung in a plugin
 * must not hold the sweep for ever. Its run folder stays resumable from its last checkpoint. */
#define STOP_GRACE_SECONDS 10

static void pass_stop_on(stopping *st, const child *kids, int n)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!st->asked) {
        st->asked = true;
        st->since = now;
        for (int k = 0; k < n; k++) kill(kids[k].pid, SIGTERM);
    } else if (!st->killed && now.tv_sec - st->since.tv_sec > STOP_GRACE_SECONDS) {
        st->killed = true;
        for (int k = 0; k < n; k++) kill(kids[k].pid, SIGKILL);
    }
}

/* Waits until one of the n children ends; polling, so that a stop request is passed on at once
 * (SIGTERM: a Ctrl-C from the terminal reached them already, and the first SIGTERM of each
 * still stops it cleanly). */
static int reap_one(lua_State *L, const plan *p, child *kids, int *n, stopping *st, char *err)
{
    const struct timespec pause = { 0, 20000000 };
    for (;;) {
        for (int k = 0; k < *n; k++) {
            int status;
            pid_t got = waitpid(kids[k].pid, &status, WNOHANG);
            if (got == 0 || (got < 0 && errno == EINTR)) continue;
            if (got < 0) status = 0x7f00; /* not ours to wait for after all: "exited with status 127" */
            child done = kids[k];
            kids[k] = kids[--*n];
            return finish_child(L, p, done, status, err);
        }
        if (interrupt_requested()) pass_stop_on(st, kids, *n);
        nanosleep(&pause, NULL);
    }
}

/* This process's experiments in up to p->jobs forked processes at once; after a stop request,
 * no new one, and every child is waited for. */
static int run_forked(lua_State *L, script *s, const plan *p, char *err)
{
    child *kids = lua_newuserdatauv(L, sizeof *kids * (size_t)p->jobs, 0); /* freed by Lua */
    int n = 0, rc = 0, next = 1;
    stopping st = { 0 };
    for (;;) {
        for (; !interrupt_requested() && n < p->jobs && next <= p->n; next++) {
            if (!is_mine(p, next)) continue;
            fflush(NULL); /* what is buffered is printed once, not once more by the child */
            pid_t pid = fork();
            if (pid == 0) child_main(L, s, p, next);
            if (pid < 0) {
                push_death(L, p, next, 0, strerror(errno));
                if (keep(L, p, next, err) != 0) rc = -1;
                continue;
            }
            kids[n++] = (child){ pid, next };
            push_label(L, p, next);
            fprintf(s->log, "== experiment %d of %d: %s (process %d, output in %s/results/%d.log)\n", next, p->n,
                    lua_tostring(L, -1), (int)pid, p->dir, next);
            lua_pop(L, 1);
        }
        if (n == 0) break;
        if (reap_one(L, p, kids, &n, &st, err) != 0) rc = -1;
    }
    lua_pop(L, 1);
    return rc != 0 ? rc : interrupt_requested() ? STOPPED : 0;
}

/* ---- Collecting ---- */

/* Rank 0: waits for the result files of this shard's experiments that other ranks run. */
static int collect_others(lua_State *L, script *s, const plan *p, char *err)
{
    const struct timespec pause = { 0, 200000000 };
    for (bool said = false;; said = true) {
        int waiting = 0;
        for (int i = 1; i <= p->n; i++) {
            if (!in_shard(p, i) || lua_rawgeti(L, p->results, i) != LUA_TNIL) {
                lua_pop(L, 1);
                continue;
            }
            lua_pop(L, 1);
            int rc = sweep_read_result(L, p->dir, i, p->n, p->at.launch, err);
            if (rc < 0) return -1;
            if (rc == 0) lua_rawseti(L, p->results, i);
            else waiting++;
        }
        if (waiting == 0) return 0;
        if (interrupt_requested()) return STOPPED;
        if (!said)
            fprintf(s->log, "rank 0 of %d: waiting for %d results of the other ranks in %s/results\n", p->at.size,
                    waiting, p->dir);
        fflush(s->log);
        nanosleep(&pause, NULL);
    }
}

/* A shard's end: sweep.csv and sweep.html when every shard's results are there, else how to
 * merge them later. */
static int finish_shard(script *s, const plan *p, char *err)
{
    char path[PATH_MAX];
    int missing = 0;
    for (int i = 1; i <= p->n; i++)
        if (!sweep_path(path, sizeof path, p->dir, i, "result") || access(path, F_OK) != 0) missing++;
    fprintf(s->log, "shard %d/%d done\n", p->shard, p->shards);
    if (missing == 0) return sweep_merge(p->dir, s->log, err);
    fprintf(s->log, "results of %d experiments of other shards are still to come; once they are in: runexp merge %s\n", missing,
            p->dir);
    return 0;
}

/* ---- runexp.map ---- */

static int read_option(lua_State *L, plan *p, const char *key, char *err)
{
    if (strcmp(key, "jobs") == 0) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > SWEEP_MAX_JOBS)
            return errorf(err, "runexp.map: options.jobs: expected a whole number of processes from 1 to %d, got %s",
                          SWEEP_MAX_JOBS, luaL_tolstring(L, -1, NULL));
        p->jobs = (int)lua_tointeger(L, -1);
    } else if (strcmp(key, "dir") == 0) {
        if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
            return errorf(err, "runexp.map: options.dir: expected the sweep's folder, got %s", luaL_typename(L, -1));
        p->dir = lua_tostring(L, -1); /* the options table keeps it */
    } else if (strcmp(key, "labels") == 0) {
        if (!lua_istable(L, -1))
            return errorf(err, "runexp.map: options.labels: expected a list of strings, got %s", luaL_typename(L, -1));
    } else {
        return errorf(err, "runexp.map: unknown option '%s' (known: dir, jobs, labels)", key);
    }
    return 0;
}

static int read_plan(lua_State *L, script *s, plan *p, char *err)
{
    p->jobs = 1;
    for (lua_pushnil(L); p->opts && lua_next(L, p->opts); lua_pop(L, 1)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "(not a name)";
        if (read_option(L, p, key, err) != 0) return -1;
    }
    for (int i = 1; i <= p->n; i++) {
        int t = lua_rawgeti(L, p->exps, i);
        lua_pop(L, 1);
        if (t != LUA_TTABLE)
            return errorf(err, "runexp.map: experiments[%d] is a %s, expected an experiment table", i, lua_typename(L, t));
    }
    if (s->sweep.jobs) p->jobs = s->sweep.jobs; /* the command line wins */
    p->shard = s->sweep.shard;
    p->shards = s->sweep.shards ? s->sweep.shards : 1;
    if (find_place(&p->at, err) != 0) return -1;
    if (p->jobs > 1 && s->computed_here)
        return errorf(err, "runexp.map: jobs=%d cannot start processes after this config has trained or evaluated in "
                           "this process (OpenMP's threads do not survive a fork); call runexp.map first, or use jobs=1",
                      p->jobs);
    if (p->jobs > 1 && dist_size() > 1)
        return errorf(err, "runexp.map: jobs=%d under mpirun or srun: MPI does not survive a fork; start more ranks "
                           "instead (each runs its share of the experiments)", p->jobs);
    if (!p->dir && (p->jobs > 1 || p->shards > 1 || p->at.size > 1))
        return errorf(err, "runexp.map: options.dir, the sweep's folder, is needed to run on several processes (jobs=%d, "
                           "%d shards, %d ranks)", p->jobs, p->shards, p->at.size);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    p->threads_each = cores / p->jobs > 1 ? (int)(cores / p->jobs) : 1;
    return 0;
}

/* DIR/results made, and this process's old result files gone: a result there is this launch's. */
static int prepare_dir(const plan *p, char *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/results", p->dir);
    if (make_dirs(path, err) != 0) return -1;
    for (int i = 1; i <= p->n; i++) {
        if (!is_mine(p, i)) continue;
        if (!sweep_path(path, sizeof path, p->dir, i, "result")) return errorf(err, "%s: path too long", p->dir);
        if (unlink(path) != 0 && errno != ENOENT) return errorf(err, "%s: cannot remove: %s", path, strerror(errno));
    }
    return 0;
}

static int finished(lua_State *L, const plan *p)
{
    int done = 0;
    for (int i = 1; i <= p->n; i++) {
        lua_rawgeti(L, p->results, i);
        lua_getfield(L, -1, "ok");
        done += lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    return done;
}

/* Whether the command line asks for everything (-v, log=verbose): the sweep's own lines, such as
 * where its reports went, are then said; at the normal level a sweep prints its runs' epoch lines
 * only (and a parallel one, a line per experiment started). */
static bool verbose(const script *s)
{
    for (int i = s->noverrides - 1; i >= 0; i--)
        if (strncmp(s->overrides[i], "log=", 4) == 0)
            return strcmp(s->overrides[i] + 4, "verbose") == 0 || strcmp(s->overrides[i] + 4, "'verbose'") == 0 ||
                   strcmp(s->overrides[i] + 4, "\"verbose\"") == 0;
    return false;
}

/* After this process's share (rc as the runners return it): the results, or the end of a
 * process whose share another collects. Raises every failure. */
static int conclude(lua_State *L, script *s, const plan *p, int rc, char *err)
{
    if (rc == STOPPED)
        return luaL_error(L, "stopped by a signal: %d of %d experiments finished%s%s%s", finished(L, p), p->n,
                          p->dir ? "; their results are in " : "", p->dir ? p->dir : "", p->dir ? "/results" : "");
    if (rc == 0 && p->shards > 1 && p->at.rank == 0) rc = finish_shard(s, p, err);
    if (rc == 0 && p->dir && p->shards == 1 && p->at.rank == 0) {
        rc = sweep_write_reports(L, p->results, p->n, p->dir, err);
        if (rc == 0 && verbose(s)) fprintf(s->log, "wrote %s/sweep.csv and %s/sweep.html\n", p->dir, p->dir);
    }
    if (rc != 0) return luaL_error(L, "%s", err);
    if (p->at.rank == 0 && p->shards == 1) return 1;
    if (p->at.rank != 0)
        fprintf(s->log, "rank %d of %d: its share of the sweep is done; rank 0 collects the results\n", p->at.rank,
                p->at.size);
    s->share_done = true; /* script_run ends this process with status 0 */
    return luaL_error(L, "this process's share of the sweep is done");
}

int sweep_map(lua_State *L)
{
    script *s = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    plan p = { .exps = 1, .opts = lua_istable(L, 2) ? 2 : 0, .n = (int)luaL_len(L, 1) };
    char err[ERR_LEN];
    if (read_plan(L, s, &p, err) != 0) return luaL_error(L, "%s", err);
    lua_createtable(L, p.n, 0);
    p.results = lua_gettop(L);
    if (p.dir && prepare_dir(&p, err) != 0) return luaL_error(L, "%s", err);
    /* Under a launcher that started MPI, each rank trains its own experiments by itself, and
     * says so on its own output (main.c silences every rank but 0 for trainings they share). */
    FILE *log = s->log;
    if (p.at.size > 1) s->log = stdout;
    dist_alone(true);
    int rc = p.jobs > 1 ? run_forked(L, s, &p, err) : run_in_process(L, s, &p, err);
    dist_alone(false);
    if (rc == 0 && p.at.rank == 0 && p.at.size > 1) rc = collect_others(L, s, &p, err);
    lua_settop(L, p.results);
    rc = conclude(L, s, &p, rc, err);
    s->log = log;
    return rc;
}
