/* export.c: a trained network as an ONNX model (see export.h). The network is built on the CPU
 * for a batch of one, from the run's resolved config, and loaded from the checkpoint; then each
 * step of net.c's list becomes nodes: a layer through its plugin's export_onnx, a residual
 * block's end an Add of the block's input. */
#include "export.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "onnx.h"
#include "trainer.h"

/* The run's config and checkpoint files for target: a folder's config.lua and best.safetensors,
 * or a file and the config.lua beside it. */
static int find_files(const char *target, char *config_file, char *checkpoint, char *err)
{
    struct stat st;
    if (stat(target, &st) != 0)
        return errorf(err, "%s: %s (expected a run folder or a checkpoint file)", target, strerror(errno));
    char dir[PATH_MAX];
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", target);
        if (snprintf(checkpoint, PATH_MAX, "%s/best.safetensors", target) >= PATH_MAX)
            return errorf(err, "%s: path too long", target);
    } else {
        snprintf(checkpoint, PATH_MAX, "%s", target);
        snprintf(dir, sizeof dir, "%s", target);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
    }
    if (snprintf(config_file, PATH_MAX, "%s/config.lua", dir) >= PATH_MAX) return errorf(err, "%s: path too long", dir);
    if (stat(config_file, &st) != 0)
        return errorf(err, "%s: %s (the run's resolved config, which says what the network is)", config_file,
                      strerror(errno));
    if (stat(checkpoint, &st) != 0)
        return errorf(err, "%s: %s (the run writes it after its first epoch)", checkpoint, strerror(errno));
    return 0;
}

/* A layer whose plugin has no export_onnx, named before anything is loaded. */
static int check_mappings(const config *c, char *err)
{
    for (int i = 0; i < c->nlayers; i++)
        if (!c->layers[i].pl.desc->layer.export_onnx)
            return errorf(err, "%s: %s: the plugin '%s' (%s) has no ONNX mapping (the optional operation "
                          "layer.export_onnx, docs/plugins.md), so the model cannot be exported", c->file,
                          c->layers[i].where, c->layers[i].name, c->layers[i].pl.file);
    return 0;
}

/* One value per channel as a constant of shape (C, 1, ...), to broadcast over (N, C, ...). NULL
 * (err set) when out of memory. */
static const char *norm_constant(onnx_graph *g, const double *v, rx_shape in, char *err)
{
    float values[RX_MAX_NORM];
    for (int k = 0; k < in.d[0]; k++) values[k] = (float)v[k];
    rx_shape s = { .ndim = in.ndim, .d = { in.d[0] } };
    for (int i = 1; i < in.ndim; i++) s.d[i] = 1;
    const char *name = onnx_constant(g, s, values);
    if (!name) errorf(err, "out of memory writing the ONNX model");
    return name;
}

/* (input - mean) / std into "normalized", the normalization the data plugin reported applying
 * (trainer.c checked it has one value per channel); none when it reported none. *x names the
 * graph's value after it. */
static int add_normalization(onnx_graph *g, const rx_data_info *info, const char **x, char *err)
{
    if (info->norm_channels == 0) return 0;
    snprintf(g->prefix, sizeof g->prefix, "normalize");
    const char *m = norm_constant(g, info->mean, info->sample, err);
    const char *s = m ? norm_constant(g, info->std, info->sample, err) : NULL;
    if (!s) return -1;
    if (onnx_node(g, "Sub", (const char *[]){ *x, m }, 2, "centred", NULL, 0) != 0 ||
        onnx_node(g, "Div", (const char *[]){ "centred", s }, 2, "normalized", NULL, 0) != 0)
        return errorf(err, "out of memory writing the ONNX model");
    *x = "normalized";
    return 0;
}

/* Layer i's nodes, from *x; *x then names its output (out, or its input for an identity). file
 * names the config in messages. */
static int add_layer(onnx_graph *g, rx_ctx *ctx, const net *nt, int i, int opset, const char **x, const char *out,
                     const char *file, char *err)
{
    const layer *l = &nt->layers[i];
    rx_onnx b;
    onnx_builder(g, &b, opset, l->use->path);
    b.in = l->in;
    b.input = *x;
    b.output = out;
    for (int t = 0; t < l->info.ntensors; t++) {
        char name[CKPT_NAME_LEN];
        net_tensor_name(nt, i, t, name, sizeof name);
        onnx_initializer(g, name, l->w[t].shape, l->w[t].data);
        b.tensors[t] = onnx_keep_name(g, name);
    }
    ctx->err[0] = '\0';
    if (l->use->pl.desc->layer.export_onnx(l->self, ctx, &b) != 0)
        return errorf(err, "%s: %s: %s: export_onnx failed: %s", file, l->use->where, l->use->pl.file,
                      ctx->err[0] ? ctx->err : "no reason given");
    if (g->oom || g->body.oom) return errorf(err, "out of memory writing the ONNX model");
    *x = g->same ? *x : out;
    return 0;
}

/* The steps of nt as nodes, from *x (the input, normalized) to "logits". */
static int add_steps(onnx_graph *g, rx_ctx *ctx, const net *nt, int opset, const char **x, const char *file,
                     char *err)
{
    const char *kept[64];
    int depth = 0;
    for (int i = 0; i < nt->nsteps; i++) {
        const net_step *st = &nt->steps[i];
        const layer *l = &nt->layers[st->layer];
        char name[96];
        if (st->kind == STEP_BEGIN) { /* net.c's build_steps kept blocks within 64 deep */
            kept[depth++] = *x;
            continue;
        }
        /* Blocks nested to end at the same layer are told apart by their depth. */
        if (st->kind == STEP_END) snprintf(name, sizeof name, "%s.sum%d", l->use->path, depth);
        else snprintf(name, sizeof name, "%s.out", l->use->path);
        const char *out = i == nt->nsteps - 1 ? "logits" : onnx_keep_name(g, name);
        if (!out) return errorf(err, "out of memory writing the ONNX model");
        if (st->kind == STEP_END) {
            if (onnx_node(g, "Add", (const char *[]){ *x, kept[--depth] }, 2, out, NULL, 0) != 0)
                return errorf(err, "out of memory writing the ONNX model");
            *x = out;
        } else if (add_layer(g, ctx, nt, st->layer, opset, x, out, file, err) != 0) {
            return -1;
        }
    }
    /* A last layer that is the identity (dropout) left the logits under an earlier name. */
    if (strcmp(*x, "logits") != 0 && onnx_node(g, "Identity", x, 1, "logits", NULL, 0) != 0)
        return errorf(err, "out of memory writing the ONNX model");
    return 0;
}

/* The graph of t's network, loaded, into model. */
static int build_model(trainer *t, int opset, strbuf *model, char *err)
{
    onnx_graph g = { 0 };
    const char *x = "input";
    t->ctx.training = false;
    int rc = add_normalization(&g, &t->info, &x, err) != 0 ||
                     add_steps(&g, &t->ctx, &t->nt, opset, &x, t->c->file, err) != 0
                 ? -1
                 : onnx_model(&g, opset, "input", t->info.sample, "logits", t->nt.out, model, err);
    onnx_graph_free(&g);
    return rc;
}

int export_run(const plugin_path *path, const char *target, const char *out, int opset, char *err)
{
    char config_file[PATH_MAX], checkpoint[PATH_MAX];
    if (find_files(target, config_file, checkpoint, err) != 0) return -1;
    /* On the CPU whatever the run used, for one sample: the network only has to be built and loaded. */
    char *overrides[] = { "device=cpu", "data.batch_size=1" };
    config c;
    trainer t = { 0 };
    strbuf model = { 0 };
    FILE *quiet = fopen("/dev/null", "w");
    int rc = config_load(&c, path, config_file, 2, overrides, err) != 0 || check_mappings(&c, err) != 0 ||
                     trainer_setup(&t, &c, quiet ? quiet : stderr, true, false, err) != 0 ||
                     checkpoint_load_net(&t.nt, checkpoint, NULL, 0, NULL, err) != 0 ||
                     build_model(&t, opset, &model, err) != 0 ||
                     write_file_atomic(out, model.s, model.len, err) != 0
                 ? -1
                 : 0;
    sb_free(&model);
    trainer_free(&t);
    config_free(&c);
    if (quiet) fclose(quiet);
    return rc;
}

int export_main(const plugin_path *path, int argc, char **argv)
{
    const char *files[2] = { NULL, NULL };
    int nfiles = 0, opset = ONNX_OPSET_MIN;
    for (int i = 0; i < argc; i++) {
        const char *value = strncmp(argv[i], "--opset=", 8) == 0 ? argv[i] + 8
                            : strcmp(argv[i], "--opset") == 0 && i + 1 < argc ? argv[++i]
                                                                               : NULL;
        char *end;
        if (value) {
            errno = 0;
            long v = strtol(value, &end, 10);
            if (end == value || *end || errno || v < ONNX_OPSET_MIN || v > ONNX_OPSET_MAX) {
                fprintf(stderr, "runexp: export: --opset '%s': expected an opset from %d to %d\n", value,
                        ONNX_OPSET_MIN, ONNX_OPSET_MAX);
                return 2;
            }
            opset = (int)v;
        } else if (argv[i][0] == '-' || nfiles == 2) {
            fprintf(stderr, "runexp: export: unexpected '%s' (usage: runexp export RUN_DIR|CHECKPOINT "
                            "model.onnx [--opset N])\n", argv[i]);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles != 2) {
        fprintf(stderr, "runexp: export needs a run (or checkpoint) and the file to write: runexp export "
                        "RUN_DIR|CHECKPOINT model.onnx [--opset N]\n");
        return 2;
    }
    char err[ERR_LEN] = "";
    if (export_run(path, files[0], files[1], opset, err) != 0) {
        fprintf(stderr, "runexp: export: %s\n", err);
        return 1;
    }
    printf("%s: ONNX opset %d, input \"input\", output \"logits\"\n", files[1], opset);
    return 0;
}
