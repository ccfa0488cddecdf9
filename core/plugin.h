/* plugin.h: finding plugins by name on a search path, loading them with dlopen, and checking
 * their descriptors (ABI version, struct size, kind, name, parameter list, required operations)
 * before anything calls them. */
#ifndef RUNEXP_PLUGIN_H
#define RUNEXP_PLUGIN_H

#include <limits.h>

#include "runexp.h"

#define PLUGIN_MAX_DIRS 16

/* Folders searched in order; each holds layers/, loss/, optim/ and data/ sub-folders. */
typedef struct plugin_path {
    int n;
    char dir[PLUGIN_MAX_DIRS][PATH_MAX];
} plugin_path;

typedef struct plugin {
    const rx_plugin *desc;
    void *handle;          /* from dlopen; NULL when not loaded */
    char file[PATH_MAX];   /* where it came from, for messages */
} plugin;

/* RUNEXP_PLUGIN_PATH (colon separated), then the build tree next to the executable, then the
 * install prefix. Never the current folder unless a listed path names it. */
void plugin_path_default(plugin_path *p);
/* Appends one folder; returns -1 when the list is full. */
int plugin_path_add(plugin_path *p, const char *dir);

/* The sub-folder a kind lives in: "layers", "loss", "optim" or "data". */
const char *plugin_folder(rx_kind kind);
const char *plugin_kind_name(rx_kind kind);

/* Whether the plugin can run on device dev: a layer or loss has its forward there, an optimizer
 * its step; a data set draws batches there or on the CPU (the host then copies them over). */
bool plugin_runs_on(const rx_plugin *desc, rx_device dev);

/* Finds NAME of KIND on the path, loads and validates it. On failure writes a one-line reason
 * to err and returns -1: an unknown name lists the known ones of KIND; a name found only in
 * another kind's folder says what its descriptor declares (a layer asked for as the loss). */
int plugin_load(const plugin_path *p, rx_kind kind, const char *name, plugin *out, char *err,
                size_t errlen);
/* Finds NAME in the folders of the given kinds, in that order (the path's order within a kind),
 * and loads it as the kind of its folder, which its descriptor must declare: out->desc->kind
 * says which it is. `runexp check` asks for a layer or a loss this way. */
int plugin_load_any(const plugin_path *p, const rx_kind *kinds, int nkinds, const char *name, plugin *out,
                    char *err, size_t errlen);
/* Loads one file, expecting a plugin of KIND named NAME. */
int plugin_load_file(const char *file, rx_kind kind, const char *name, plugin *out, char *err,
                     size_t errlen);
void plugin_unload(plugin *pl);

/* Writes the names of the plugins found in FOLDER on the path, comma separated and sorted. */
void plugin_list_names(const plugin_path *p, const char *folder, char *buf, size_t len);

/* Loads every plugin found on the path, layers, losses, optimizers and data sets, in that
 * order and sorted by name; *n gets their number. Files that fail to load are skipped and
 * their reasons written to `skipped` (may be NULL). The caller unloads each and frees the array. */
plugin *plugin_catalog(const plugin_path *p, int *n, char *skipped, size_t len);

/* The index of KEY in the descriptor's parameter list, or -1. */
int plugin_param_index(const rx_plugin *desc, const char *key);
int plugin_param_count(const rx_plugin *desc);

#endif
