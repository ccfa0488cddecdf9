/* scan.c: the image files under an imagefolder root, and the cache of their decoded pixels.
 *
 * The walk follows torchvision's ImageFolder: class folders sorted by name, the files in each
 * found recursively, those ending in .png, .jpg or .jpeg (any case) taken, other files and
 * anything whose name starts with a dot left alone. Everything is sorted bytewise, so the order
 * (and with it the seeded split) is the same on every machine.
 *
 * The cache holds a manifest (the size, the fit, and every file's path, size, modification time,
 * class and origin, as text) followed by the pixels. It is used only when its manifest is byte
 * for byte the one the walk gives now; otherwise the images are decoded again and the cache is
 * rewritten: to a temporary name beside it, flushed, then renamed, so it is never torn. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imagefolder.h"
#include "regular.h"

static const char *const origin_dirs[] = { "train", "val", "test" };

void if_list_free(if_list *l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->files[i].path);
    free(l->files);
    for (int c = 0; c < l->nclasses; c++) free(l->classes[c]);
    free(l->classes);
    *l = (if_list){ 0 };
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int visible(const struct dirent *e) { return e->d_name[0] != '.'; }

static bool is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

static int join(rx_ctx *ctx, char *out, const char *a, const char *b)
{
    if (snprintf(out, PATH_MAX, "%s%s%s", a, *a && *b ? "/" : "", b) >= PATH_MAX)
        return rx_fail(ctx, "%s/%s: path too long", a, b);
    return 0;
}

/* The visible entries of DIR, sorted, into *names (free with free_names). */
static int list_dir(rx_ctx *ctx, const char *dir, struct dirent ***names, int *n)
{
    *n = scandir(dir, names, visible, by_name);
    if (*n < 0) return rx_fail(ctx, "%s: cannot list: %s", dir, strerror(errno));
    return 0;
}

static void free_names(struct dirent **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int add_file(rx_ctx *ctx, if_list *l, const char *rel, const struct stat *st, int label, if_origin origin)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 256;
        if (cap > INT32_MAX) return rx_fail(ctx, "more than %d image files", INT32_MAX);
        if_file *f = realloc(l->files, (size_t)cap * sizeof *f);
        if (!f) return rx_fail(ctx, "out of memory listing the image files");
        l->files = f;
        l->cap = cap;
    }
    char *p = strdup(rel);
    if (!p) return rx_fail(ctx, "out of memory listing the image files");
    l->files[l->n++] = (if_file){ .path = p, .bytes = (int64_t)st->st_size,
                                  .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                                  .label = label, .origin = (uint8_t)origin };
    return 0;
}

/* Every image file under ROOT/REL (a class folder, or a folder inside one), depth first. */
static int walk(rx_ctx *ctx, const char *root, const char *rel, int label, if_origin origin, if_list *l, int depth)
{
    char dir[PATH_MAX];
    struct dirent **names;
    int n;
    if (depth > 32) return rx_fail(ctx, "%s/%s: folders nested more than 32 deep (a loop of links?)", root, rel);
    if (join(ctx, dir, root, rel) != 0 || list_dir(ctx, dir, &names, &n) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char sub[PATH_MAX], full[PATH_MAX];
        struct stat st;
        rc = join(ctx, sub, rel, names[i]->d_name);
        if (rc == 0) rc = join(ctx, full, root, sub);
        if (rc != 0 || stat(full, &st) != 0) continue; /* a dangling link is no image */
        if (S_ISDIR(st.st_mode)) rc = walk(ctx, root, sub, label, origin, l, depth + 1);
        else if (S_ISREG(st.st_mode) && is_image_name(names[i]->d_name)) rc = add_file(ctx, l, sub, &st, label, origin);
    }
    free_names(names, n);
    return rc;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The sorted class folders of DIR into *names; at least one, at most RX_MAX_CLASSES. */
static int class_dirs(rx_ctx *ctx, const char *dir, char ***names, int *n)
{
    struct dirent **all;
    int count;
    if (list_dir(ctx, dir, &all, &count) != 0) return -1;
    *names = calloc((size_t)(count > 0 ? count : 0) + 1, sizeof **names);
    *n = 0;
    int rc = *names ? 0 : rx_fail(ctx, "out of memory");
    for (int i = 0; i < count && rc == 0; i++) {
        char path[PATH_MAX];
        if (join(ctx, path, dir, all[i]->d_name) != 0) rc = -1;
        else if (is_dir(path) && !((*names)[(*n)++] = strdup(all[i]->d_name))) rc = rx_fail(ctx, "out of memory");
    }
    free_names(all, count);
    if (rc == 0 && *n == 0) rc = rx_fail(ctx, "%s: no class folders (expected %s/CLASS/*.png|jpg|jpeg)", dir, dir);
    if (rc == 0 && *n > RX_MAX_CLASSES) rc = rx_fail(ctx, "%s: %d class folders, at most %d", dir, *n, RX_MAX_CLASSES);
    return rc;
}

static void free_strings(char **s, int n)
{
    for (int i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

/* ROOT/SUB's classes must be l's (from ROOT/train): the first difference is named. */
static int same_classes(rx_ctx *ctx, const char *root, const char *sub, char **names, int n, const if_list *l)
{
    for (int i = 0, j = 0; i < n || j < l->nclasses; i++, j++) {
        int cmp = i == n ? 1 : j == l->nclasses ? -1 : strcmp(names[i], l->classes[j]);
        if (cmp < 0) return rx_fail(ctx, "%s/%s has class '%s', which %s/train lacks (the splits must have the "
                                    "same class folders)", root, sub, names[i], root);
        if (cmp > 0) return rx_fail(ctx, "%s/%s lacks class '%s', which %s/train has (the splits must have the "
                                    "same class folders)", root, sub, l->classes[j], root);
    }
    return 0;
}

/* The files of every class folder of ROOT/SUB ("" for the root itself). */
static int scan_classes(rx_ctx *ctx, const char *root, const char *sub, if_origin origin, if_list *l)
{
    char dir[PATH_MAX];
    char **names = NULL;
    int n = 0;
    if (join(ctx, dir, root, sub) != 0 || class_dirs(ctx, dir, &names, &n) != 0) {
        free_strings(names, n);
        return -1;
    }
    int rc = 0;
    if (!l->classes) {
        l->classes = names;
        l->nclasses = n;
        names = NULL;
    } else {
        rc = same_classes(ctx, root, sub, names, n, l);
    }
    free_strings(names, n);
    for (int c = 0; c < l->nclasses && rc == 0; c++) {
        char rel[PATH_MAX];
        int64_t before = l->n;
        rc = join(ctx, rel, sub, l->classes[c]);
        if (rc == 0) rc = walk(ctx, root, rel, c, origin, l, 0);
        if (rc == 0 && l->n == before)
            rc = rx_fail(ctx, "%s/%s: an empty class folder (no .png, .jpg or .jpeg file in it)", root, rel);
    }
    return rc;
}

int if_scan(rx_ctx *ctx, const char *root, if_list *l)
{
    *l = (if_list){ 0 };
    char dir[PATH_MAX];
    if (!is_dir(root)) {
        if_list_free(l);
        return rx_fail(ctx, "%s: %s", root, access(root, F_OK) == 0 ? "not a folder" : "no such folder");
    }
    if (join(ctx, dir, root, "train") != 0) return -1;
    l->split_layout = is_dir(dir);
    int rc = 0;
    if (!l->split_layout) rc = scan_classes(ctx, root, "", IF_FROM_ROOT, l);
    for (int o = IF_FROM_TRAIN; l->split_layout && o <= IF_FROM_TEST && rc == 0; o++)
        if (join(ctx, dir, root, origin_dirs[o]) == 0 && (o == IF_FROM_TRAIN || is_dir(dir)))
            rc = scan_classes(ctx, root, origin_dirs[o], (if_origin)o, l);
    if (rc != 0) if_list_free(l);
    return rc;
}

/* ---- The cache ---- */

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static int text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int text_add(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (t->s && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return 0;
        }
        size_t cap = (t->cap ? 2 * t->cap : 4096) + (size_t)n;
        char *s = realloc(t->s, cap);
        if (!s) return -1;
        t->s = s;
        t->cap = cap;
    }
}

/* What the pixels were made from, as text: any change to it makes the cache stale. Paths are
 * written with their length, so no name can pass for another. */
static int manifest(rx_ctx *ctx, const if_list *l, int h, int w, picture_fit fit, text *t)
{
    int rc = text_add(t, "runexp imagefolder cache 1\nsize %d %d %s\nfiles %lld\n", h, w, picture_fit_names[fit],
                      (long long)l->n);
    for (int64_t i = 0; i < l->n && rc == 0; i++) {
        const if_file *f = &l->files[i];
        rc = text_add(t, "%d %d %lld %lld %zu:%s\n", f->origin, f->label, (long long)f->bytes,
                      (long long)f->mtime_ns, strlen(f->path), f->path);
    }
    if (rc != 0) return rx_fail(ctx, "out of memory for the cache's manifest");
    return 0;
}

/* The pixels from CACHE when its manifest is m; 1 when it is absent, stale or unreadable (the
 * caller decodes), 0 when *px holds them. */
static int cache_read(rx_ctx *ctx, const char *cache, const text *m, size_t bytes, uint8_t *px)
{
    rx_ctx quiet = *ctx;
    FILE *f = access(cache, F_OK) == 0 ? fopen_regular(&quiet, cache) : NULL;
    if (!f) return 1;
    size_t len = 0;
    struct stat st;
    int stale = fscanf(f, "%zu", &len) != 1 || fgetc(f) != '\n' || len != m->len || fstat(fileno(f), &st) != 0 ||
                (uint64_t)st.st_size != (uint64_t)(int64_t)ftell(f) + len + bytes;
    char *head = stale ? NULL : malloc(len);
    stale = stale || !head || fread(head, 1, len, f) != len || memcmp(head, m->s, len) != 0 ||
            fread(px, 1, bytes, f) != bytes;
    free(head);
    fclose(f);
    return stale;
}

/* CACHE whole, or not at all: a temporary file beside it, flushed, renamed over it. */
static int cache_write(rx_ctx *ctx, const char *cache, const text *m, size_t bytes, const uint8_t *px)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", cache, (long)getpid()) >= (int)sizeof tmp)
        return rx_fail(ctx, "%s: path too long", cache);
    int fd = open_regular(ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return rx_fail(ctx, "%s: cannot write the cache: %s (cache = a writable folder puts it elsewhere)", tmp,
                       strerror(errno));
    }
    int ok = fprintf(f, "%zu\n", m->len) > 0 && fwrite(m->s, 1, m->len, f) == m->len &&
             fwrite(px, 1, bytes, f) == bytes && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, cache) == 0) return 0;
    e = ok ? errno : e;
    unlink(tmp);
    return rx_fail(ctx, "%s: cannot write the cache: %s (cache = a writable folder puts it elsewhere)", cache,
                   strerror(e));
}

/* ROOT/REL read whole (PICTURE_MAX_BYTES at most, a regular file only) and decoded into *p. */
static int read_picture(rx_ctx *ctx, const char *root, const char *rel, picture *p)
{
    char path[PATH_MAX];
    if (join(ctx, path, root, rel) != 0) return -1;
    FILE *f = fopen_regular(ctx, path);
    if (!f) return -1;
    struct stat st;
    uint8_t *bytes = NULL;
    int rc = fstat(fileno(f), &st) != 0 ? rx_fail(ctx, "%s: cannot stat: %s", path, strerror(errno))
           : st.st_size > PICTURE_MAX_BYTES ? rx_fail(ctx, "%s: too large: %lld bytes, at most %lld are read as a "
                                                      "picture", path, (long long)st.st_size, PICTURE_MAX_BYTES)
           : !(bytes = malloc(st.st_size ? (size_t)st.st_size : 1)) ? rx_fail(ctx, "%s: out of memory", path)
           : fread(bytes, 1, (size_t)st.st_size, f) != (size_t)st.st_size ? rx_fail(ctx, "%s: cannot read: %s", path,
                                                                                     strerror(errno))
           : 0;
    fclose(f);
    if (rc == 0) rc = picture_decode(ctx, path, bytes, (size_t)st.st_size, p);
    free(bytes);
    return rc;
}

/* Every file of l decoded into px, on every core the run allows. Which files failed is kept, and
 * the first one (in the list's order) is decoded again alone for its message, so the error does
 * not depend on the threads' timing. */
static int decode_all(rx_ctx *ctx, const char *root, const if_list *l, int h, int w, picture_fit fit, uint8_t *px)
{
    size_t each = (size_t)3 * (size_t)h * (size_t)w;
    int64_t first_bad = l->n;
    #pragma omp parallel for schedule(dynamic, 4) num_threads(ctx->threads > 0 ? ctx->threads : 1) reduction(min : first_bad)
    for (int64_t i = 0; i < l->n; i++) {
        rx_ctx mine = *ctx;
        picture p = { 0 };
        if (read_picture(&mine, root, l->files[i].path, &p) != 0 || picture_fit_to(&mine, &p, fit, h, w, px + (size_t)i * each) != 0)
            first_bad = i < first_bad ? i : first_bad;
        picture_free(&p);
    }
    if (first_bad == l->n) return 0;
    picture p = { 0 };
    if (read_picture(ctx, root, l->files[first_bad].path, &p) == 0 && picture_fit_to(ctx, &p, fit, h, w, px) == 0)
        rx_fail(ctx, "%s/%s: failed to decode on a second thread but not alone", root, l->files[first_bad].path);
    picture_free(&p);
    return -1;
}

int if_load_images(rx_ctx *ctx, const char *root, const if_list *l, const char *cache, int h, int w,
                   picture_fit fit, uint8_t **pixels)
{
    size_t bytes = (size_t)l->n * 3 * (size_t)h * (size_t)w;
    text m = { 0 };
    *pixels = NULL;
    if (manifest(ctx, l, h, w, fit, &m) != 0) return -1;
    uint8_t *px = malloc(bytes ? bytes : 1);
    int rc = px ? cache_read(ctx, cache, &m, bytes, px)
                : rx_fail(ctx, "out of memory for %lld images of 3 x %d x %d", (long long)l->n, h, w);
    if (rc == 1) {
        fprintf(stderr, "imagefolder: decoding %lld images into %s\n", (long long)l->n, cache);
        rc = decode_all(ctx, root, l, h, w, fit, px);
        if (rc == 0) rc = cache_write(ctx, cache, &m, bytes, px);
    }
    free(m.s);
    if (rc != 0) free(px);
    else *pixels = px;
    return rc;
}
