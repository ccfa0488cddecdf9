/* plugin.c: the plugin loader. A plugin named NAME of a kind is the file
 * <dir>/<folder>/NAME.so on the search path, exporting rx_plugin_NAME(), the way Lua's loadlib
 * derives luaopen_NAME from a module name. Everything in the descriptor is checked here, once. */
#include "plugin.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.h"

#ifndef RX_PLUGIN_DIR
#define RX_PLUGIN_DIR "/usr/local/lib/runexp/plugins"
#endif

int plugin_path_add(plugin_path *p, const char *dir)
{
    if (p->n >= PLUGIN_MAX_DIRS || strlen(dir) >= PATH_MAX) return -1;
    snprintf(p->dir[p->n++], PATH_MAX, "%s", dir);
    return 0;
}

void plugin_path_default(plugin_path *p)
{
    p->n = 0;
    const char *env = getenv("RUNEXP_PLUGIN_PATH");
    if (env) {
        char buf[PATH_MAX * 4];
        snprintf(buf, sizeof buf, "%s", env);
        for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save))
            plugin_path_add(p, d);
    }
    /* The build tree: build/runexp finds build/plugins. */
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char dir[PATH_MAX];
            if (snprintf(dir, sizeof dir, "%s/plugins", exe) < (int)sizeof dir) plugin_path_add(p, dir);
            if (snprintf(dir, sizeof dir, "%s/../lib/runexp/plugins", exe) < (int)sizeof dir)
                plugin_path_add(p, dir);
        }
    }
    plugin_path_add(p, RX_PLUGIN_DIR);
}

const char *plugin_folder(rx_kind kind)
{
    switch (kind) {
    case RX_LAYER: return "layers";
    case RX_LOSS: return "loss";
    case RX_OPTIM: return "optim";
    case RX_DATA: return "data";
    }
    return "?";
}

const char *plugin_kind_name(rx_kind kind)
{
    switch (kind) {
    case RX_LAYER: return "layer";
    case RX_LOSS: return "loss";
    case RX_OPTIM: return "optimizer";
    case RX_DATA: return "data";
    }
    return "unknown";
}

bool plugin_runs_on(const rx_plugin *d, rx_device dev)
{
    switch (d->kind) {
    case RX_LAYER: return d->layer.forward[dev] != NULL;
    case RX_LOSS: return d->loss.forward[dev] != NULL;
    case RX_OPTIM: return d->optim.step[dev] != NULL;
    case RX_DATA: return d->data.batch[dev] || d->data.batch[RX_CPU]; /* the host copies CPU batches over */
    }
    return false;
}

/* Names are identifiers, so a name can never be a path that escapes the search folders. */
static bool valid_name(const char *name)
{
    if (!name || !*name || strlen(name) > 64) return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return false;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void plugin_list_names(const plugin_path *p, const char *folder, char *buf, size_t len)
{
    char *names[256];
    int n = 0;
    for (int i = 0; i < p->n; i++) {
        char dir[PATH_MAX];
        if (snprintf(dir, sizeof dir, "%s/%s", p->dir[i], folder) >= (int)sizeof dir) continue;
        DIR *d = opendir(dir);
        if (!d) continue;
        for (struct dirent *e; (e = readdir(d)) && n < 256;) {
            size_t l = strlen(e->d_name);
            if (l < 4 || strcmp(e->d_name + l - 3, ".so") != 0) continue;
            char *name = strndup(e->d_name, l - 3);
            if (!name) continue;
            bool dup = false;
            for (int j = 0; j < n && !dup; j++) dup = strcmp(names[j], name) == 0;
            if (dup || !valid_name(name)) free(name);
            else names[n++] = name;
        }
        closedir(d);
    }
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (used < len)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", names[i]);
        free(names[i]);
    }
    if (n == 0) snprintf(buf, len, "none");
}

int plugin_param_count(const rx_plugin *desc)
{
    int n = 0;
    while (desc->params && desc->params[n].key) n++;
    return n;
}

int plugin_param_index(const rx_plugin *desc, const char *key)
{
    for (int i = 0; desc->params && desc->params[i].key; i++)
        if (strcmp(desc->params[i].key, key) == 0) return i;
    return -1;
}

/* A device's operations come in complete sets; at least one device must be complete. */
static const char *check_ops(const rx_plugin *d)
{
    bool any = false;
    switch (d->kind) {
    case RX_LAYER:
        if (!d->layer.create) return "layer.create is missing";
        for (int dev = 0; dev < RX_NDEVICES; dev++) {
            if (!d->layer.forward[dev] != !d->layer.backward[dev])
                return "layer.forward and layer.backward must be given for the same devices";
            any |= d->layer.forward[dev] != NULL;
        }
        if (!any) return "layer.forward/backward are missing for every device";
        break;
    case RX_LOSS:
        if (!d->loss.create) return "loss.create is missing";
        for (int dev = 0; dev < RX_NDEVICES; dev++) any |= d->loss.forward[dev] != NULL;
        if (!any) return "loss.forward is missing for every device";
        break;
    case RX_OPTIM:
        if (!d->optim.create) return "optim.create is missing";
        for (int dev = 0; dev < RX_NDEVICES; dev++) any |= d->optim.step[dev] != NULL;
        if (!any) return "optim.step is missing for every device";
        break;
    case RX_DATA:
        if (!d->data.create) return "data.create is missing";
        if (!d->data.begin_epoch) return "data.begin_epoch is missing";
        for (int dev = 0; dev < RX_NDEVICES; dev++) any |= d->data.batch[dev] != NULL;
        if (!any) return "data.batch is missing for every device";
        break;
    }
    return NULL;
}

static const char *check_params(const rx_plugin *d)
{
    if (!d->params) return "the parameter list is NULL (use an empty list ending with {0})";
    for (int i = 0; d->params[i].key; i++) {
        const rx_param *p = &d->params[i];
        if (p->type < RX_INT || p->type > RX_NUMS) return "a parameter has an unknown type";
        if (!valid_name(p->key)) return "a parameter key is not an identifier";
        if (i >= 64) return "more than 64 parameters";
    }
    return NULL;
}

int plugin_load_file(const char *file, rx_kind kind, const char *name, plugin *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    snprintf(out->file, sizeof out->file, "%s", file);
    /* RTLD_NODELETE: a plugin stays mapped after dlclose, because threads it started (OpenMP's
     * pool, OpenBLAS's) outlive the run that used it and would crash into unmapped code. */
    char not_regular[ERR_LEN];
    if (file_check_regular(file, not_regular) != 0) { /* dlopen would block on a FIFO */
        snprintf(err, errlen, "%s", not_regular);
        return -1;
    }
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        snprintf(err, errlen, "%s: cannot load: %s", file, dlerror());
        return -1;
    }
    char sym[96];
    snprintf(sym, sizeof sym, "rx_plugin_%s", name);
    const rx_plugin *(*entry)(void);
    *(void **)&entry = dlsym(h, sym);
    const rx_plugin *d = entry ? entry() : NULL;
    const char *why = NULL;
    char buf[160];
    if (!entry) {
        snprintf(buf, sizeof buf, "no entry function %s()", sym);
        why = buf;
    } else if (!d) {
        why = "the entry function returned NULL";
    } else if (d->abi != RX_ABI_VERSION) {
        snprintf(buf, sizeof buf, "built for plugin ABI %u, this runexp speaks ABI %d (rebuild it)",
                 d->abi, RX_ABI_VERSION);
        why = buf;
    } else if (d->size != sizeof(rx_plugin)) {
        snprintf(buf, sizeof buf, "descriptor is %u bytes, expected %zu (built against another runexp.h)",
                 d->size, sizeof(rx_plugin));
        why = buf;
    } else if (d->kind != kind) {
        snprintf(buf, sizeof buf, "is a plugin of kind %s, expected kind %s", plugin_kind_name(d->kind),
                 plugin_kind_name(kind));
        why = buf;
    } else if (!d->name || strcmp(d->name, name) != 0) {
        snprintf(buf, sizeof buf, "calls itself '%s', expected '%s'", d->name ? d->name : "(null)", name);
        why = buf;
    } else if (!d->summary) {
        why = "has no summary";
    } else {
        why = check_params(d);
        if (!why) why = check_ops(d);
    }
    if (why) {
        snprintf(err, errlen, "%s: %s", file, why);
        dlclose(h);
        return -1;
    }
    out->desc = d;
    out->handle = h;
    return 0;
}

/* The first <dir>/<folder of kind>/NAME.so on the path, into file (PATH_MAX); false if none. */
static bool find_file(const plugin_path *p, rx_kind kind, const char *name, char *file)
{
    for (int i = 0; i < p->n; i++) {
        if (snprintf(file, PATH_MAX, "%s/%s/%s.so", p->dir[i], plugin_folder(kind), name) >= PATH_MAX) continue;
        if (access(file, F_OK) == 0) return true;
    }
    return false;
}

/* "unknown layer or loss plugin 'x' (known layer: a, b; loss: c); searched layers/ and loss/ in:
 * DIRS (...)"; one kind lists its names only. */
static void unknown(const plugin_path *p, const rx_kind *kinds, int n, const char *name, char *err, size_t errlen)
{
    char known[2048] = "", names[1024], dirs[1024] = "";
    size_t used = 0;
    for (int k = 0; k < n && used < sizeof known; k++) {
        plugin_list_names(p, plugin_folder(kinds[k]), names, sizeof names);
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s%s%s", k ? "; " : "",
                                 n > 1 ? plugin_kind_name(kinds[k]) : "", n > 1 ? ": " : "", names);
    }
    used = 0;
    for (int i = 0; i < p->n && used < sizeof dirs; i++)
        used += (size_t)snprintf(dirs + used, sizeof dirs - used, "%s%s", i ? ", " : "", p->dir[i]);
    snprintf(err, errlen, "unknown %s%s%s plugin '%s' (known%s %s); searched %s/%s%s%s in: %s (RUNEXP_PLUGIN_PATH, "
             "colon separated, puts folders before these)", plugin_kind_name(kinds[0]), n > 1 ? " or " : "",
             n > 1 ? plugin_kind_name(kinds[1]) : "", name, n > 1 ? "" : ":", known, plugin_folder(kinds[0]),
             n > 1 ? " and " : "", n > 1 ? plugin_folder(kinds[1]) : "", n > 1 ? "/" : "", dirs);
}

/* NAME is not in its kind's folder but in another's: say what its descriptor says it is (a layer
 * asked for as the loss), or, if it is of the kind asked for, where it belongs. */
static int load_misplaced(const char *file, rx_kind kind, const char *name, plugin *out, char *err,
                          size_t errlen)
{
    if (plugin_load_file(file, kind, name, out, err, errlen) != 0) return -1;
    plugin_unload(out);
    snprintf(err, errlen, "%s: a %s plugin belongs in the folder %s/", file, plugin_kind_name(kind),
             plugin_folder(kind));
    return -1;
}

static const rx_kind all_kinds[] = { RX_LAYER, RX_LOSS, RX_OPTIM, RX_DATA };

int plugin_load(const plugin_path *p, rx_kind kind, const char *name, plugin *out, char *err,
                size_t errlen)
{
    memset(out, 0, sizeof *out);
    char file[PATH_MAX];
    if (valid_name(name)) {
        if (find_file(p, kind, name, file)) return plugin_load_file(file, kind, name, out, err, errlen);
        for (size_t k = 0; k < sizeof all_kinds / sizeof *all_kinds; k++)
            if (all_kinds[k] != kind && find_file(p, all_kinds[k], name, file))
                return load_misplaced(file, kind, name, out, err, errlen);
    }
    unknown(p, &kind, 1, name, err, errlen);
    return -1;
}

int plugin_load_any(const plugin_path *p, const rx_kind *kinds, int nkinds, const char *name, plugin *out,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char file[PATH_MAX];
    for (int k = 0; k < nkinds && valid_name(name); k++)
        if (find_file(p, kinds[k], name, file)) return plugin_load_file(file, kinds[k], name, out, err, errlen);
    unknown(p, kinds, nkinds, name, err, errlen);
    return -1;
}

void plugin_unload(plugin *pl)
{
    if (pl && pl->handle) dlclose(pl->handle);
    if (pl) memset(pl, 0, sizeof *pl);
}

plugin *plugin_catalog(const plugin_path *p, int *n, char *skipped, size_t len)
{
    plugin *all = NULL;
    *n = 0;
    size_t used = 0;
    if (skipped && len) skipped[0] = '\0';
    for (size_t k = 0; k < sizeof all_kinds / sizeof *all_kinds; k++) {
        char names[4096];
        plugin_list_names(p, plugin_folder(all_kinds[k]), names, sizeof names);
        if (strcmp(names, "none") == 0) continue;
        char *save = NULL;
        for (char *name = strtok_r(names, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
            plugin *grown = realloc(all, sizeof *all * (size_t)(*n + 1));
            if (!grown) return all;
            all = grown;
            char err[512];
            if (plugin_load(p, all_kinds[k], name, &all[*n], err, sizeof err) == 0) (*n)++;
            else if (skipped && used < len)
                used += (size_t)snprintf(skipped + used, len - used, "%s%s", used ? "\n" : "", err);
        }
    }
    return all;
}
