/* run_dir.c: the run folder's files (see run_dir.h). */
#include "run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config_diff.h"
#include "device.h"

int run_dir_path(char *buf, const char *dir, const char *name, char *err)
{
    if (snprintf(buf, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) return errorf(err, "%s: path too long", dir);
    return 0;
}

static int write_text(const char *dir, const char *name, const strbuf *b, char *err)
{
    char path[PATH_MAX];
    if (run_dir_path(path, dir, name, err) != 0) return -1;
    if (b->oom) return errorf(err, "%s: out of memory", path);
    return write_file_atomic(path, b->s ? b->s : "", b->len, err);
}

/* ---- Making it ---- */

/* runs/NAME-YYYYmmdd-HHMMSS, NAME the config file's name without its extension. */
static void default_run_dir(const config *c, char *dir, size_t len)
{
    const char *base = strrchr(c->file, '/');
    base = base ? base + 1 : c->file;
    size_t n = strcspn(base, ".");
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(dir, len, "runs/%.*s-%s", (int)n, base, stamp);
}

/* started.lua's first line: what makes a folder runexp's run folder. */
static const char started_mark[] = "-- runexp run folder: the resolved config this run started with";
/* config.lua's first line as runexp writes it: an older runexp's run folder has no started.lua. */
static const char resolved_mark[] = "-- The resolved experiment: ";

/* Whether dir/name exists and begins with mark. */
static bool file_begins_with(const char *dir, const char *name, const char *mark)
{
    char path[PATH_MAX], head[128] = "", err[ERR_LEN];
    /* open_regular: a FIFO of that name must not block (it is no run of ours either) */
    int fd = run_dir_path(path, dir, name, err) == 0 ? open_regular(path, O_RDONLY, err) : -1;
    if (fd < 0) return false;
    ssize_t n = read(fd, head, sizeof head - 1);
    close(fd);
    head[n > 0 ? n : 0] = '\0';
    return strncmp(head, mark, strlen(mark)) == 0;
}

static bool exists(const char *dir, const char *name)
{
    char path[PATH_MAX], err[ERR_LEN];
    return run_dir_path(path, dir, name, err) == 0 && access(path, F_OK) == 0;
}

typedef enum { FOLDER_NONE, FOLDER_RUN, FOLDER_OTHER } folder_kind;

/* What dir holds: nothing (or no folder), a run, or something else (*found names one entry). */
static folder_kind folder_of(const char *dir, char *found, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) return FOLDER_NONE; /* absent; anything else that cannot be listed fails when made */
    const struct dirent *e;
    found[0] = '\0';
    while (!found[0] && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) snprintf(found, len, "%s", e->d_name);
    closedir(d);
    if (!found[0]) return FOLDER_NONE;
    if (file_begins_with(dir, "started.lua", started_mark) || file_begins_with(dir, "config.lua", resolved_mark))
        return FOLDER_RUN;
    return FOLDER_OTHER;
}

/* Refuses a resume that would not go on as the run started: the resolved config now against
 * started.lua. Checked before anything is loaded, so that an edit is what is reported, not what
 * it breaks (a changed batch size no longer matches the checkpoint's step count). */
static int check_unchanged(const config *c, int flags, char *err)
{
    const char *dir = c->out;
    if ((flags & RUN_ALLOW_CHANGES) || !exists(dir, "started.lua")) return 0; /* an older runexp's run: no record */
    char path[PATH_MAX], *was = NULL;
    size_t len;
    if (run_dir_path(path, dir, "started.lua", err) != 0 || read_file(path, &was, &len, err) != 0) return -1;
    static const char *const allowed[] = { "epochs", "tensorboard", NULL };
    strbuf lua = { 0 }, changes = { 0 };
    config_to_lua(c, &lua);
    /* Without started.lua's mark, the texts' lines match (an lr function's code names its lines). */
    const char *body = strchr(was, '\n') ? strchr(was, '\n') + 1 : was;
    int rc = lua.oom ? errorf(err, "%s: out of memory writing the resolved config", dir)
                     : config_diff(body, path, lua.s ? lua.s : "", "the config now", allowed, &changes, err);
    if (rc == 0 && changes.len)
        rc = errorf(err, "%s: the config differs from the one the run started with (%s): %s; a resumed run goes on "
                    "bit for bit only unchanged: undo the changes (in %s/config.lua or the command line), or accept "
                    "them with: %s resume %s --allow-changes", dir, path, changes.s, dir, config_command(c), dir);
    sb_free(&lua);
    sb_free(&changes);
    free(was);
    return rc;
}

int run_dir_mode_of(const config *c, int flags, run_dir_mode *mode, char *err)
{
    char found[256];
    const char *dir = c->out;
    *mode = RUN_DIR_NEW;
    folder_kind kind = dir[0] ? folder_of(dir, found, sizeof found) : FOLDER_NONE;
    if (kind == FOLDER_OTHER)
        return errorf(err, "%s holds files runexp did not make (%s): it is not a run folder, and nothing is written "
                      "into it; choose another out=", dir, found);
    if (kind == FOLDER_NONE) return 0;
    if (!c->resume)
        return errorf(err, "%s already holds a run; choose another out=, remove it, or continue it with: "
                      "%s resume %s", dir, config_command(c), dir);
    if (flags & RUN_RESTART) return *mode = RUN_DIR_RESTART, 0;
    if (!exists(dir, "last.safetensors"))
        return errorf(err, "%s: last.safetensors is missing, so the run cannot continue (nothing was changed); "
                      "start it over with: %s resume %s --restart", dir, config_command(c), dir);
    *mode = RUN_DIR_RESUME;
    return check_unchanged(c, flags, err);
}

/* The config files of a run, in dir: started.lua (lua, marked) and config.lua (lua). */
static int write_configs(const char *dir, const strbuf *lua, char *err)
{
    strbuf started = { 0 };
    sb_printf(&started, "%s (resume compares config.lua with it)\n%s", started_mark, lua->s ? lua->s : "");
    int rc = write_text(dir, "started.lua", &started, err);
    sb_free(&started);
    return rc == 0 ? write_text(dir, "config.lua", lua, err) : -1;
}

/* A new run: made whole in PARENT/.NAME.starting-PID, then renamed to dir (an empty folder there
 * is replaced), so that dir never exists without what resumes it. */
static int make_new(const char *dir, trainer *t, const run_position *p, const strbuf *lua, char *err)
{
    char path[PATH_MAX], parent[PATH_MAX], staging[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s", dir);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--) path[n - 1] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash) snprintf(parent, sizeof parent, ".");
    else snprintf(parent, sizeof parent, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    snprintf(staging, sizeof staging, "%s/.%s.starting-%ld", parent, slash ? slash + 1 : path, (long)getpid());
    if (make_dirs(parent, err) != 0) return -1;
    if (mkdir(staging, 0755) != 0) return errorf(err, "%s: cannot create folder: %s", staging, strerror(errno));
    int rc = write_configs(staging, lua, err) == 0 ? run_dir_save_last(staging, t, p, err) : -1;
    if (rc == 0 && rename(staging, dir) != 0)
        rc = errno == ENOTEMPTY || errno == EEXIST
                 ? errorf(err, "%s already holds a run (made while this one started); choose another out=", dir)
                 : errorf(err, "%s: cannot move the new run folder %s there: %s", dir, staging, strerror(errno));
    if (rc != 0) {
        static const char *const made[] = { "started.lua", "config.lua", "last.safetensors" };
        char file[PATH_MAX], ignored[ERR_LEN];
        for (int i = 0; i < 3; i++)
            if (run_dir_path(file, staging, made[i], ignored) == 0) unlink(file);
        rmdir(staging);
        return -1;
    }
    sync_folder(parent); /* best effort: the rename itself is done */
    return 0;
}

/* Removes dir/name if it is there. */
static int remove_file(const char *dir, const char *name, char *err)
{
    char path[PATH_MAX];
    if (run_dir_path(path, dir, name, err) != 0) return -1;
    if (unlink(path) != 0 && errno != ENOENT) return errorf(err, "%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

/* `runexp resume DIR --restart`: the run in dir from the start. summary.json goes first (it says
 * the run is finished), then last.safetensors is the start, then the old epochs' files go. */
static int restart(const char *dir, trainer *t, const run_position *p, const strbuf *lua, char *err)
{
    if (remove_file(dir, "summary.json", err) != 0 || write_configs(dir, lua, err) != 0 ||
        run_dir_save_last(dir, t, p, err) != 0)
        return -1;
    return remove_file(dir, "metrics.csv", err) == 0 && remove_file(dir, "best.safetensors", err) == 0 ? 0 : -1;
}

/* Refuses a resume that has nothing left to do. */
static int check_unfinished(const config *c, const run_position *p, char *err)
{
    const char *dir = c->out;
    if (p->epochs_done == c->epochs && exists(dir, "summary.json"))
        return errorf(err, "%s: the run is finished (its results are in %s/summary.json); to train it further, give "
                      "it more epochs: %s resume %s epochs=%lld", dir, dir, config_command(c), dir, (long long)c->epochs + 1);
    if (run_stopped_early(c, p) && exists(dir, "summary.json"))
        return errorf(err, "%s: the run stopped early after epoch %lld, %lld epochs without improvement (early_stop."
                      "patience = %lld), and is finished (its results are in %s/summary.json); to train it further, "
                      "give it more patience: %s resume %s 'early_stop={patience=%lld}' --allow-changes", dir,
                      (long long)p->epochs_done, (long long)p->stale_epochs, (long long)c->early_stop_patience, dir,
                      config_command(c), dir,
                      (long long)p->stale_epochs + 1);
    return 0;
}

int run_dir_open(config *c, run_dir_mode mode, int flags, trainer *t, const run_position *p, FILE *log,
                 char **config_text, char *err)
{
    if (!c->out[0]) default_run_dir(c, c->out, sizeof c->out);
    const char *dir = c->out;
    strbuf lua = { 0 };
    config_to_lua(c, &lua);
    int rc = lua.oom ? errorf(err, "%s: out of memory writing the resolved config", dir) : 0;
    if (rc == 0 && mode == RUN_DIR_NEW) rc = make_new(dir, t, p, &lua, err);
    if (rc == 0 && mode == RUN_DIR_RESTART) rc = restart(dir, t, p, &lua, err);
    if (rc == 0 && mode == RUN_DIR_RESUME) {
        rc = check_unfinished(c, p, err);
        /* An extended run is no longer finished; started.lua takes what was allowed. */
        if (rc == 0) rc = remove_file(dir, "summary.json", err);
        if (rc == 0) rc = write_configs(dir, &lua, err);
    }
    if (rc == 0 && log) fprintf(log, "%srun folder: %s\n", lua.s, dir);
    *config_text = lua.s;
    return rc;
}

/* ---- metrics.csv and summary.json ---- */

int run_dir_write_metrics(const char *dir, const epoch_record *history, int n, char *err)
{
    strbuf b = { 0 };
    epoch_csv_header(&b);
    for (int i = 0; i < n; i++) epoch_csv_row(&b, &history[i]);
    int rc = write_text(dir, "metrics.csv", &b, err);
    sb_free(&b);
    return rc;
}

/* The rows of metrics.csv for the epochs_done epochs a resumed run keeps. */
static int read_metrics(const char *dir, epoch_record *history, int64_t epochs_done, int *n, char *err)
{
    char path[PATH_MAX], *text;
    size_t len;
    if (run_dir_path(path, dir, "metrics.csv", err) != 0 || read_file(path, &text, &len, err) != 0) return -1;
    int rows = 0, rc = 0;
    char *save = NULL;
    strtok_r(text, "\n", &save); /* the header */
    for (char *line; rc == 0 && rows < epochs_done && (line = strtok_r(NULL, "\n", &save));) {
        if (epoch_csv_parse(line, &history[rows]) != 0 || history[rows].epoch != rows + 1)
            rc = errorf(err, "%s: line %d is not a metrics row for epoch %d", path, rows + 2, rows + 1);
        else rows++;
    }
    free(text);
    if (rc == 0 && rows != epochs_done)
        rc = errorf(err, "%s: %d rows, but last.safetensors is at epoch %lld", path, rows, (long long)epochs_done);
    *n = rows;
    return rc;
}

int run_dir_write_summary(const run_summary *s, char *err)
{
    strbuf b = { 0 };
    summary_json(&b, s);
    int rc = write_text(s->dir, "summary.json", &b, err);
    sb_free(&b);
    return rc;
}

/* ---- best.safetensors ---- */

int run_dir_save_best(const char *dir, const net *nt, int64_t epoch, double valid_loss, char *err)
{
    char path[PATH_MAX], ep[24], vl[40];
    snprintf(ep, sizeof ep, "%lld", (long long)epoch);
    snprintf(vl, sizeof vl, "%.9g", valid_loss);
    const ckpt_meta meta[] = { { "format", "pt" }, { "producer", "runexp" }, { "epoch", ep }, { "valid_loss", vl } };
    if (run_dir_path(path, dir, "best.safetensors", err) != 0) return -1;
    return checkpoint_save_net(nt, path, NULL, 0, meta, isnan(valid_loss) ? 3 : 4, err);
}

int run_dir_load_best(const char *dir, net *nt, char *err)
{
    char path[PATH_MAX];
    if (run_dir_path(path, dir, "best.safetensors", err) != 0) return -1;
    return checkpoint_load_net(nt, path, NULL, 0, NULL, err);
}

/* ---- last.safetensors ---- */

/* The tensors last.safetensors holds besides the weights, in host memory (*host, freed by the
 * caller): the optimizer state and the moving average, each only when there is one. */
static int resume_tensors(const trainer *t, ckpt_tensor extra[2], float **host, const char *path, char *err)
{
    size_t n = (size_t)t->state_per_param * t->nt.nparams, na = t->ema.avg ? t->nt.nparams : 0;
    *host = malloc((n + na ? n + na : 1) * sizeof(float));
    if (!*host) return errorf(err, "%s: out of memory", path);
    int count = 0;
    if (n) extra[count++] = (ckpt_tensor){ .name = "optim.state", .data = *host, .shape = { 1, { (int64_t)n } } };
    if (na) extra[count++] = (ckpt_tensor){ .name = "ema.weights", .data = *host + n, .shape = { 1, { (int64_t)na } } };
    return count;
}

/* Copies the optimizer state and the average between the device and *host, as laid out above. */
static void copy_resume_tensors(trainer *t, float *host, bool to_host)
{
    size_t n = (size_t)t->state_per_param * t->nt.nparams, na = t->ema.avg ? t->nt.nparams : 0;
    if (to_host) {
        device_to_host(t->device, host, t->opt_state, n * sizeof(float));
        if (na) device_to_host(t->device, host + n, t->ema.avg, na * sizeof(float));
    } else {
        host_to_device(t->device, t->opt_state, host, n * sizeof(float));
        if (na) host_to_device(t->device, t->ema.avg, host + n, na * sizeof(float));
    }
}

#define POSITION_FORMAT_POSITION_COUNT(p, v, buf) snprintf(buf, sizeof buf, "%lld", (long long)(v))
#define POSITION_FORMAT_POSITION_U64(p, v, buf) snprintf(buf, sizeof buf, "%" PRIu64, (v))
#define POSITION_FORMAT_POSITION_NUM(p, v, buf) snprintf(buf, sizeof buf, "%.17g", (v))
#define POSITION_FORMAT_POSITION_OPTNUM POSITION_FORMAT_POSITION_NUM
#define POSITION_FORMAT_POSITION_OPTCOUNT POSITION_FORMAT_POSITION_COUNT
#define POSITION_SAVE(type, name, key)                             \
    POSITION_FORMAT_##type(p, p->name, values[nmeta]);            \
    meta[nmeta] = (ckpt_meta){ key, values[nmeta] };               \
    nmeta++;

int run_dir_save_last(const char *dir, trainer *t, const run_position *p, char *err)
{
    char path[PATH_MAX], values[24][40];
    ckpt_meta meta[26] = { { "format", "pt" }, { "producer", "runexp" } };
    int nmeta = 2;
    POSITION_FIELDS(POSITION_SAVE)
    ckpt_tensor extra[2];
    float *host = NULL;
    int count = run_dir_path(path, dir, "last.safetensors", err) == 0 ? resume_tensors(t, extra, &host, path, err) : -1;
    if (count < 0) return -1;
    copy_resume_tensors(t, host, true);
    int rc = device_check(t->device, err) == 0 ? checkpoint_save_net(&t->nt, path, extra, count, meta, nmeta, err) : -1;
    free(host);
    return rc;
}

/* One metadata value of last.safetensors, parsed as its type; -1 with a message naming it. */
static int read_position_field(const ckpt_meta_buf *m, const char *key, int type, void *v, const char *path, char *err)
{
    const char *s = ckpt_meta_get(m, key);
    char *end = NULL;
    if (!s && type == 'o') return *(double *)v = NAN, 0; /* optional: a file of an older runexp */
    if (!s && type == 'k') return *(int64_t *)v = 0, 0;
    if (type == 'c' || type == 'k') {
        long long x = s ? strtoll(s, &end, 10) : 0;
        if (!s || *end || x < 0) return errorf(err, "%s: metadata '%s' is missing or not a count", path, key);
        *(int64_t *)v = x;
    } else if (type == 'u') { /* the RNG state is a full 64-bit value: parsed unsigned */
        uint64_t x = s ? strtoull(s, &end, 10) : 0;
        if (!s || *end) return errorf(err, "%s: metadata '%s' is missing or not a number", path, key);
        *(uint64_t *)v = x;
    } else {
        double x = s ? strtod(s, &end) : 0;
        if (!s || *end) return errorf(err, "%s: metadata '%s' is missing or not a number", path, key);
        *(double *)v = x;
    }
    return 0;
}

#define POSITION_TYPE_POSITION_COUNT 'c'
#define POSITION_TYPE_POSITION_U64 'u'
#define POSITION_TYPE_POSITION_NUM 'n'
#define POSITION_TYPE_POSITION_OPTNUM 'o'
#define POSITION_TYPE_POSITION_OPTCOUNT 'k'
#define POSITION_READ(type, name, key) \
    if (read_position_field(m, key, POSITION_TYPE_##type, &p->name, path, err) != 0) return -1;

int run_position_read(const ckpt_meta_buf *m, run_position *p, const char *path, char *err)
{
    POSITION_FIELDS(POSITION_READ)
    return 0;
}

/* Metadata that contradicts the run would make rows of nonsense (a loss of 0, infinite images
 * per second): refused, named, before anything is restored from it. */
int run_position_check(const run_position *p, int64_t epochs, int64_t batches, const char *path, char *err)
{
    if (p->epochs_done > epochs)
        return errorf(err, "%s: the run has done %lld epochs, more than epochs=%lld", path, (long long)p->epochs_done,
                      (long long)epochs);
    if (p->batches_done > batches)
        return errorf(err, "%s: metadata 'batch' is %lld, past the end of an epoch of %lld batches", path,
                      (long long)p->batches_done, (long long)batches);
    if (p->epochs_done == epochs && p->batches_done > 0)
        return errorf(err, "%s: metadata 'batch' is %lld, but all %lld epochs are done", path, (long long)p->batches_done,
                      (long long)epochs);
    int64_t steps = 0;
    bool over = __builtin_mul_overflow(p->epochs_done, batches, &steps) ||
                __builtin_add_overflow(steps, p->batches_done, &steps);
    if (over || p->step != steps)
        return errorf(err, "%s: metadata 'step' is %lld, but %lld epochs of %lld batches and %lld batches more make %s%lld",
                      path, (long long)p->step, (long long)p->epochs_done, (long long)batches, (long long)p->batches_done,
                      over ? "more than " : "", (long long)(over ? INT64_MAX : steps));
    if (p->stale_epochs > p->epochs_done)
        return errorf(err, "%s: metadata 'epochs_without_improvement' is %lld, more than the %lld epochs done", path,
                      (long long)p->stale_epochs, (long long)p->epochs_done);
    if (p->best_epoch > p->epochs_done)
        return errorf(err, "%s: metadata 'best_epoch' is %lld, past the %lld epochs done", path, (long long)p->best_epoch,
                      (long long)p->epochs_done);
    const struct { const char *key; double v; bool positive; } sums[] = {
        { "loss_sum", p->loss_sum, false },
        { "epoch_seconds", p->epoch_seconds, p->batches_done > 0 },
        { "train_seconds", p->train_seconds, p->epochs_done > 0 },
    };
    for (size_t i = 0; i < sizeof sums / sizeof *sums; i++)
        if (!isfinite(sums[i].v) || sums[i].v < 0 || (sums[i].positive && sums[i].v == 0))
            return errorf(err, "%s: metadata '%s' is %g, expected a finite number%s", path, sums[i].key, sums[i].v,
                          sums[i].positive ? " above 0 after the batches done" : " of 0 or more");
    return 0;
}

int run_dir_resume(const char *dir, trainer *t, run_position *p, epoch_record *history, int *nhistory, char *err)
{
    char path[PATH_MAX];
    ckpt_tensor extra[2];
    float *host = NULL;
    int count = run_dir_path(path, dir, "last.safetensors", err) == 0 ? resume_tensors(t, extra, &host, path, err) : -1;
    if (count < 0) return -1;
    ckpt_meta_buf m;
    int rc = checkpoint_load_net(&t->nt, path, extra, count, &m, err);
    if (rc == 0) rc = run_position_read(&m, p, path, err);
    if (rc == 0) rc = run_position_check(p, t->c->epochs, (t->info.size[RX_TRAIN] + t->c->batch_size - 1) / t->c->batch_size,
                                         path, err);
    if (rc == 0) copy_resume_tensors(t, host, false);
    if (rc == 0) rc = device_check(t->device, err);
    free(host);
    if (rc != 0) return -1;
    *nhistory = 0;
    if (p->epochs_done == 0) return 0; /* stopped in the first epoch: no metrics.csv yet */
    return read_metrics(dir, history, p->epochs_done, nhistory, err);
}
