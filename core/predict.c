/* predict.c: a trained model on picture files (see predict.h).
 *
 * The pictures take the data plugin's place in the trainer. trainer_setup builds everything from
 * the run's config as evaluation does, the data set included (it knows the class names, the
 * sample shape and how many test-time views it gives); the checkpoint is loaded; then a shallow
 * copy of the config whose data descriptor is picture_source (the host's own, never loaded from
 * a file) makes trainer_load_batch draw from the decoded files, and evaluate_logits runs the
 * forward pass with the views averaged, as evaluate_split does. The views are augment.c's, built
 * from the run's data arguments (tta, padding_mode): the code cifar10 and imagefolder render
 * theirs with. Normalization is data_build_luts's from the mean and std the data plugin reports
 * (rx_data_info, configured or computed from its training split): the table its batches use.
 */
#include "predict.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "device.h"
#include "evaluate.h"
#include "interrupt.h"
#include "trainer.h"
/* plugins/common is linked into the host too (Makefile): one decoder, one set of views. */
#include "../plugins/common/augment.h"
#include "../plugins/common/data.h"
#include "../plugins/common/picture.h"

/* The decodable files' pictures, fitted and ready to be drawn as the run's test images are. */
typedef struct picture_set {
    int64_t n;
    int h, w;
    uint8_t *pixels;            /* (n, 3, h, w) */
    int64_t *item;              /* (n) each picture's entry in the result */
    augment aug;                /* the run's test-time views */
    float lut[3][AUGMENT_LEVELS];
    float *staged;              /* (batch, 3, h, w) pageable host memory a GPU batch is drawn into:
                                 * the copy from it is made before host_to_device returns */
} picture_set;

typedef struct name_list {
    char **v;
    int64_t n, cap;
} name_list;

/* ---- The pictures as a data source ---- */

static int source_begin_epoch(void *self, rx_ctx *ctx, rx_split split, int64_t epoch) { return 0; }

/* Pictures [first, first + n) in test-time view VIEW into x (n, 3, h, w); labels 0 (none is read). */
static void source_draw(const picture_set *s, int64_t first, int view, int64_t n, float *x, int32_t *labels)
{
    size_t each = (size_t)3 * (size_t)s->h * (size_t)s->w;
    for (int64_t i = 0; i < n; i++) {
        augment_pick pk = augment_pick_for(&s->aug, 0, 0, RX_TEST, (int32_t)(first + i), view);
        augment_render(&s->aug, &s->lut[0][0], s->pixels + (size_t)pk.image * each, pk, x + (size_t)i * each);
        if (labels) labels[i] = 0;
    }
}

static int source_batch_cpu(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                            int32_t *labels)
{
    source_draw(self, first, view, x->shape.d[0], x->data, labels);
    return 0;
}

/* Used when the run's data plugin draws on the GPU, so the trainer has no staging buffers. */
static int source_batch_cuda(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                             int32_t *labels)
{
    picture_set *s = self;
    int64_t n = x->shape.d[0];
    source_draw(s, first, view, n, s->staged, NULL);
    host_to_device(RX_CUDA, x->data, s->staged, (size_t)n * 3 * (size_t)s->h * (size_t)s->w * sizeof(float));
    return 0;
}

static const rx_param no_params[] = { { 0 } };
static const rx_plugin picture_source = {
    .abi = RX_ABI_VERSION, .size = sizeof(rx_plugin), .kind = RX_DATA, .name = "predict",
    .summary = "the picture files runexp predict classifies", .params = no_params,
    .data = { .begin_epoch = source_begin_epoch, .batch = { [RX_CPU] = source_batch_cpu, [RX_CUDA] = source_batch_cuda } },
};

/* ---- The files ---- */

static int add_name(name_list *l, const char *name, char *err)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return errorf(err, "out of memory listing the pictures");
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(name))) return errorf(err, "out of memory listing the pictures");
    l->n++;
    return 0;
}

static void free_names(name_list *l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int visible(const struct dirent *e) { return e->d_name[0] != '.'; }

static bool picture_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

/* The .png, .jpg and .jpeg files under DIR, sorted bytewise at every level, depth first. */
static int walk(const char *dir, name_list *l, int depth, char *err)
{
    struct dirent **e;
    int n = scandir(dir, &e, visible, by_name);
    if (n < 0) return errorf(err, "%s: cannot list: %s", dir, strerror(errno));
    if (depth > 32) n = 0; /* a loop of links: what is deeper is not a picture collection */
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat st;
        if (rc == 0 && snprintf(path, sizeof path, "%s/%s", dir, e[i]->d_name) < (int)sizeof path &&
            stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode)) rc = walk(path, l, depth + 1, err);
            else if (S_ISREG(st.st_mode) && picture_name(e[i]->d_name)) rc = add_name(l, path, err);
        }
        free(e[i]);
    }
    free(e);
    return rc;
}

/* Folders walked; any other input taken as named (a missing or odd one fails by its name later). */
static int collect(const predict_request *q, name_list *l, char *err)
{
    for (int i = 0; i < q->ninputs; i++) {
        struct stat st;
        bool folder = stat(q->inputs[i], &st) == 0 && S_ISDIR(st.st_mode);
        int64_t before = l->n;
        if ((folder ? walk(q->inputs[i], l, 0, err) : add_name(l, q->inputs[i], err)) != 0) return -1;
        if (folder && l->n == before) fprintf(stderr, "runexp: predict: %s holds no .png, .jpg or .jpeg file\n", q->inputs[i]);
    }
    if (l->n == 0) return errorf(err, "predict: no pictures to classify (give files, or folders holding .png, .jpg or .jpeg files)");
    return 0;
}

/* FILE decoded and fitted into out (3, h, w); -1 with the reason (naming the file) in err. */
static int decode_one(const char *file, picture_fit fit, int h, int w, uint8_t *out, char *err)
{
    struct stat st;
    if (stat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > PICTURE_MAX_BYTES)
        return errorf(err, "%s: too large: %lld bytes, at most %lld are read as a picture", file, (long long)st.st_size,
                      PICTURE_MAX_BYTES);
    char *bytes;
    size_t len;
    if (read_file(file, &bytes, &len, err) != 0) return -1;
    rx_ctx ctx = { .device = RX_CPU, .threads = 1 };
    picture p;
    int rc = picture_decode(&ctx, file, (const uint8_t *)bytes, len, &p);
    free(bytes);
    if (rc == 0) rc = picture_fit_to(&ctx, &p, fit, h, w, out);
    picture_free(&p);
    return rc == 0 ? 0 : errorf(err, "%s", ctx.err);
}

/* Every file into s (or, when it fails, its message into its entry of r). */
static int decode_all(const name_list *files, picture_fit fit, picture_set *s, predict_result *r, char *err)
{
    size_t each = (size_t)3 * (size_t)s->h * (size_t)s->w;
    r->items = calloc((size_t)files->n, sizeof *r->items);
    s->pixels = malloc((size_t)files->n * each);
    s->item = malloc((size_t)files->n * sizeof *s->item);
    if (!r->items || !s->pixels || !s->item)
        return errorf(err, "out of memory for %lld pictures of 3 x %d x %d", (long long)files->n, s->h, s->w);
    for (int64_t i = 0; i < files->n; i++) {
        char why[ERR_LEN];
        prediction *p = &r->items[i];
        r->n++;
        if (!(p->file = strdup(files->v[i]))) return errorf(err, "out of memory");
        if (decode_one(files->v[i], fit, s->h, s->w, s->pixels + (size_t)s->n * each, why) == 0) {
            s->item[s->n++] = i;
        } else {
            r->failed++;
            if (!(p->error = strdup(why))) return errorf(err, "out of memory");
        }
        if (interrupt_requested()) return errorf(err, "stopped by a signal while reading the pictures");
    }
    return 0;
}

/* ---- The run ---- */

/* A run folder (config.lua, best.safetensors) or a checkpoint with config.lua beside it. */
static int locate(const char *target, char *cfg, char *ckpt, char *err)
{
    struct stat st;
    if (stat(target, &st) != 0) return errorf(err, "%s: no such run folder or checkpoint", target);
    if (S_ISDIR(st.st_mode)) {
        if (snprintf(cfg, PATH_MAX, "%s/config.lua", target) >= PATH_MAX ||
            snprintf(ckpt, PATH_MAX, "%s/best.safetensors", target) >= PATH_MAX)
            return errorf(err, "%s: path too long", target);
        return 0;
    }
    const char *slash = strrchr(target, '/');
    int dir = slash ? (int)(slash - target) : 1;
    if (snprintf(cfg, PATH_MAX, "%.*s/config.lua", dir, slash ? target : ".") >= PATH_MAX ||
        snprintf(ckpt, PATH_MAX, "%s", target) >= PATH_MAX)
        return errorf(err, "%s: path too long", target);
    if (stat(cfg, &st) != 0)
        return errorf(err, "%s: predict needs the run's config.lua beside the checkpoint (the network, the data set, "
                      "its normalization and views), and %s is not there", target, cfg);
    return 0;
}

/* The trainer of the run, its checkpoint loaded; the data set's samples must be pictures. */
static int open_run(trainer *t, const config *c, const char *ckpt, FILE *quiet, char *err)
{
    if (trainer_setup(t, c, quiet, true, false, err) != 0) return -1;
    const rx_shape *s = &t->info.sample;
    if (s->ndim != 3 || s->d[0] != 3 || s->d[1] > 8192 || s->d[2] > 8192)
        return errorf(err, "%s: %s: predict classifies pictures, but the data set's samples are not (3, H, W) with "
                      "H and W at most 8192", c->file, c->data.where);
    return checkpoint_load_net(&t->nt, ckpt, NULL, 0, NULL, err);
}

/* The run's normalization (as the data plugin reports it) and views (its augmentation arguments). */
static int prepare_set(const trainer *t, const config *c, picture_set *s, char *err)
{
    static const char *const keys[] = { "crop_padding", "padding_mode", "flip", "cutout", "tta" };
    s->h = (int)t->info.sample.d[1];
    s->w = (int)t->info.sample.d[2];
    /* trainer.c checked that a reported normalization has one value per channel: 3 here. */
    if (t->info.norm_channels == 0)
        return errorf(err, "%s: %s: the data plugin does not report the normalization its samples had "
                      "(rx_data_info's norm_channels, mean and std), so predict cannot prepare pictures as the "
                      "network saw them", c->file, c->data.where);
    data_build_luts(s->lut, &t->info);
    rx_value a[5] = { [1] = { .s = "reflect" }, [2] = { .s = "none" }, [4] = { .s = "none" } };
    for (int k = 0; k < 5; k++)
        if (config_arg(&c->data, keys[k])) a[k] = *config_arg(&c->data, keys[k]);
    rx_ctx ctx = { 0 };
    if (augment_parse(&ctx, a, s->h, s->w, &s->aug) != 0) return errorf(err, "%s: %s: %s", c->file, c->data.where, ctx.err);
    int views = t->info.views > 1 ? t->info.views : 0;
    if (views != s->aug.views)
        return errorf(err, "%s: %s: the data set gives %d test-time views, which predict cannot draw (it knows the "
                      "tta of cifar10 and imagefolder)", c->file, c->data.where, views);
    if (t->device == RX_CUDA &&
        !(s->staged = malloc((size_t)c->batch_size * 3 * (size_t)s->h * (size_t)s->w * sizeof(float))))
        return errorf(err, "out of memory for a batch of pictures");
    return 0;
}

/* q->fit, or the run's data.resize when it has one ("resize" or "crop"), else "resize". */
static picture_fit fit_of(const predict_request *q, const config *c)
{
    if (q->fit >= 0) return (picture_fit)q->fit;
    const rx_value *v = config_arg(&c->data, "resize");
    return v && v->s && strcmp(v->s, picture_fit_names[PICTURE_CROP]) == 0 ? PICTURE_CROP : PICTURE_RESIZE;
}

/* ---- Classifying ---- */

/* Row i of t->host_logits into the entry of picture first + i: the top classes by logit (ties to
 * the lower index, as evaluate.c's accuracy counts), with their softmax probabilities. */
static int rank(const trainer *t, const picture_set *s, int64_t first, int64_t n, predict_result *r, char *err)
{
    int64_t classes = rx_numel(t->nt.out);
    for (int64_t i = 0; i < n; i++) {
        const float *row = t->host_logits + i * classes;
        prediction *p = &r->items[s->item[first + i]];
        p->index = malloc((size_t)r->top * sizeof *p->index);
        p->probability = malloc((size_t)r->top * sizeof *p->probability);
        if (!p->index || !p->probability) return errorf(err, "out of memory");
        double max = row[0], sum = 0;
        for (int64_t k = 1; k < classes; k++) max = row[k] > max ? row[k] : max;
        for (int64_t k = 0; k < classes; k++) sum += exp((double)row[k] - max);
        for (int j = 0; j < r->top; j++) {
            int64_t best = -1;
            for (int64_t k = 0; k < classes; k++) {
                bool taken = false;
                for (int m = 0; m < j && !taken; m++) taken = p->index[m] == k;
                if (!taken && (best < 0 || row[k] > row[best])) best = k;
            }
            p->index[j] = (int)best;
            p->probability[j] = (float)(exp((double)row[best] - max) / sum);
        }
    }
    return 0;
}

/* Every picture through the network, a batch at a time, with the run's test-time views. */
static int classify(trainer *t, picture_set *s, predict_result *r, char *err)
{
    config pc = *t->c; /* shallow: the same plugins, with the pictures as the data set */
    pc.data.pl.desc = &picture_source;
    const config *own = t->c;
    void *own_data = t->data;
    t->c = &pc;
    t->data = s;
    int rc = 0;
    for (int64_t first = 0; first < s->n && rc == 0; first += pc.batch_size) {
        int64_t n = s->n - first < pc.batch_size ? s->n - first : pc.batch_size;
        rc = evaluate_logits(t, RX_TEST, first, n, err);
        if (rc == 0) rc = rank(t, s, first, n, r, err);
        if (rc == 0 && interrupt_requested()) rc = errorf(err, "stopped by a signal while predicting");
    }
    t->c = own;
    t->data = own_data;
    return rc;
}

static int keep_class_names(const trainer *t, predict_result *r, char *err)
{
    r->nclasses = t->info.nclasses;
    r->class_names = calloc((size_t)r->nclasses, sizeof *r->class_names);
    if (!r->class_names) return errorf(err, "out of memory");
    for (int k = 0; k < r->nclasses; k++)
        snprintf(r->class_names[k], sizeof r->class_names[k], "%s", t->info.class_names[k] ? t->info.class_names[k] : "?");
    int64_t classes = rx_numel(t->nt.out);
    r->top = classes < r->top ? (int)classes : r->top;
    return 0;
}

int predict(const plugin_path *path, const predict_request *q, predict_result *r, char *err)
{
    char cfg[PATH_MAX], ckpt[PATH_MAX];
    memset(r, 0, sizeof *r);
    r->top = q->top;
    if (q->top < 1 || q->top > PREDICT_MAX_TOP) return errorf(err, "predict: top must be 1 to %d, got %d", PREDICT_MAX_TOP, q->top);
    if (locate(q->target, cfg, ckpt, err) != 0) return -1;
    config c = { 0 };
    trainer t = { 0 };
    picture_set s = { 0 };
    name_list files = { 0 };
    FILE *quiet = fopen("/dev/null", "w");
    int rc = config_load(&c, path, cfg, q->noverrides, q->overrides, err);
    if (rc == 0) rc = collect(q, &files, err);
    if (rc == 0) rc = open_run(&t, &c, ckpt, quiet ? quiet : stderr, err);
    if (rc == 0) rc = prepare_set(&t, &c, &s, err);
    if (rc == 0) rc = keep_class_names(&t, r, err);
    if (rc == 0) rc = decode_all(&files, fit_of(q, &c), &s, r, err);
    if (rc == 0) rc = classify(&t, &s, r, err);
    trainer_free(&t);
    config_free(&c);
    free_names(&files);
    free(s.pixels);
    free(s.item);
    free(s.staged);
    if (quiet) fclose(quiet);
    if (rc != 0) predict_result_free(r);
    return rc;
}

void predict_result_free(predict_result *r)
{
    for (int64_t i = 0; i < r->n; i++) {
        free(r->items[i].file);
        free(r->items[i].error);
        free(r->items[i].index);
        free(r->items[i].probability);
    }
    free(r->items);
    free(r->class_names);
    memset(r, 0, sizeof *r);
}

/* ---- The command line ---- */

static const char *class_name(const predict_result *r, int k)
{
    return k < r->nclasses ? r->class_names[k] : "?";
}

static void print_json(const predict_result *r, const prediction *p, FILE *out)
{
    strbuf b = { 0 };
    sb_printf(&b, "{\"file\": ");
    sb_json_string(&b, p->file);
    if (p->error) {
        fprintf(stderr, "runexp: predict: %s\n", p->error); /* for whoever watches, as without --json */
        sb_printf(&b, ", \"error\": ");
        sb_json_string(&b, p->error);
    } else {
        sb_printf(&b, ", \"top\": [");
        for (int j = 0; j < r->top; j++) {
            sb_printf(&b, "%s{\"class\": ", j ? ", " : "");
            sb_json_string(&b, class_name(r, p->index[j]));
            sb_printf(&b, ", \"index\": %d, \"probability\": %.6g}", p->index[j], (double)p->probability[j]);
        }
        sb_printf(&b, "]");
    }
    fprintf(out, "%s}\n", b.s ? b.s : "");
    sb_free(&b);
}

static void print_text(const predict_result *r, const prediction *p, FILE *out)
{
    if (p->error) {
        fprintf(stderr, "runexp: predict: %s\n", p->error);
        return;
    }
    fprintf(out, "%s:", p->file);
    for (int j = 0; j < r->top; j++)
        fprintf(out, "%s %s %.4f", j ? "," : "", class_name(r, p->index[j]), (double)p->probability[j]);
    fputc('\n', out);
}

/* Whether ARG is a key=value override ("device=cpu") rather than a file: a dotted name before
 * '=', and no file of that name. */
static bool is_override(const char *arg)
{
    const char *eq = strchr(arg, '=');
    struct stat st;
    if (!eq || eq == arg || stat(arg, &st) == 0) return false;
    for (const char *p = arg; p < eq; p++)
        if (!(*p == '_' || *p == '.' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* --top=K, --json, --resize=crop|resize; the target, then files, folders and overrides. */
static int parse_args(int argc, char **argv, predict_request *q, char **rest, bool *json, char *err)
{
    int nin = 0, nover = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (strncmp(a, "--top=", 6) == 0) {
            long v = strtol(a + 6, &end, 10);
            if (end == a + 6 || *end || v < 1 || v > PREDICT_MAX_TOP)
                return errorf(err, "'%s': expected --top=K with K from 1 to %d", a, PREDICT_MAX_TOP);
            q->top = (int)v;
        } else if (strcmp(a, "--json") == 0) {
            *json = true;
        } else if (strncmp(a, "--resize=", 9) == 0) {
            if (data_parse_choice(&(rx_ctx){ 0 }, "--resize", a + 9, picture_fit_names, 2, &q->fit) != 0)
                return errorf(err, "'%s': expected --resize=resize or --resize=crop", a);
        } else if (a[0] == '-' && a[1] == '-') {
            return errorf(err, "predict: unknown option '%s' (known: --top=K, --json, --resize=resize|crop)", a);
        } else if (!q->target) {
            q->target = a;
        } else if (is_override(a)) {
            rest[argc - 1 - nover++] = argv[i];
        } else {
            rest[nin++] = argv[i];
        }
    }
    q->inputs = rest;
    q->ninputs = nin;
    q->overrides = rest + argc - nover;
    q->noverrides = nover;
    if (!q->target || nin == 0) return errorf(err, "predict needs a run and pictures: runexp predict RUN_DIR|CHECKPOINT IMAGE|FOLDER ...");
    return 0;
}

int predict_main(const plugin_path *path, int argc, char **argv)
{
    predict_request q = { .top = 3, .fit = -1 };
    bool json = false;
    char err[ERR_LEN];
    char **rest = malloc(sizeof *rest * (size_t)(argc > 0 ? argc : 1));
    if (!rest) return fprintf(stderr, "runexp: out of memory\n"), 1;
    if (parse_args(argc, argv, &q, rest, &json, err) != 0) {
        fprintf(stderr, "runexp: %s\n", err);
        free(rest);
        return 2;
    }
    predict_result r;
    int rc = predict(path, &q, &r, err);
    free(rest);
    if (rc != 0) {
        fprintf(stderr, "runexp: %s\n", err);
        return strstr(err, "stopped by a signal") ? 130 : 1;
    }
    for (int64_t i = 0; i < r.n; i++) (json ? print_json : print_text)(&r, &r.items[i], stdout);
    fflush(stdout);
    if (r.failed) fprintf(stderr, "runexp: predict: %lld of %lld files could not be classified\n", (long long)r.failed, (long long)r.n);
    rc = r.failed ? 1 : 0;
    predict_result_free(&r);
    return rc;
}
