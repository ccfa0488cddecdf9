/* checkpoint.c: safetensors, written and read.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v"}, "0.weight": {"dtype": "F32", "shape": [16, 3, 3, 3],
 *    "data_offsets": [0, 1728]}, ...}
 * padded with spaces to a multiple of 8, then the tensors' bytes back to back. The reader is a
 * small strict JSON parser for exactly that form: every length and offset is checked against
 * the file, and the tensors must tile the data section exactly (no overlap, no hole), before a
 * byte is copied. */
#include "checkpoint.h"

#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "files.h"

#define MAX_HEADER (64u << 20)

int checkpoint_write(const char *path, const ckpt_tensor *t, int n, const ckpt_meta *meta, int nmeta,
                     char *err)
{
    strbuf h = { 0 };
    sb_printf(&h, "{\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
        if (i) sb_printf(&h, ",");
        sb_json_string(&h, meta[i].key);
        sb_printf(&h, ":");
        sb_json_string(&h, meta[i].value);
    }
    sb_printf(&h, "}");
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)rx_numel(t[i].shape) * sizeof(float);
        sb_printf(&h, ",");
        sb_json_string(&h, t[i].name);
        sb_printf(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].shape.ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape.d[d]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        offset += bytes;
    }
    sb_printf(&h, "}");
    while (!h.oom && h.len % 8) sb_append(&h, " ", 1);
    if (h.oom) {
        sb_free(&h);
        snprintf(err, ERR_LEN, "%s: out of memory", path);
        return -1;
    }
    size_t total = 8 + h.len + offset;
    unsigned char *file = malloc(total);
    if (!file) {
        sb_free(&h);
        snprintf(err, ERR_LEN, "%s: out of memory (%zu bytes)", path, total);
        return -1;
    }
    for (int b = 0; b < 8; b++) file[b] = (unsigned char)((uint64_t)h.len >> (8 * b));
    memcpy(file + 8, h.s, h.len);
    unsigned char *at = file + 8 + h.len;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)rx_numel(t[i].shape) * sizeof(float);
        memcpy(at, t[i].data, bytes); /* float32 little-endian, as on every machine we build for */
        at += bytes;
    }
    int rc = write_file_atomic(path, file, total, err);
    free(file);
    sb_free(&h);
    return rc;
}

/* ---- A strict reader for the safetensors header ---- */

typedef struct parser {
    const char *start, *s, *end;
    const char *path;
    char *err;
} parser;

static int bad(parser *p, const char *what)
{
    snprintf(p->err, ERR_LEN, "%s: not a valid safetensors file: %s (at header byte %td)", p->path, what,
             p->s - p->start);
    return -1;
}

static void skip_ws(parser *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t')) p->s++;
}

static int expect(parser *p, char c)
{
    skip_ws(p);
    if (p->s >= p->end || *p->s != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return bad(p, what);
    }
    p->s++;
    return 0;
}

static bool peek(parser *p, char c)
{
    skip_ws(p);
    return p->s < p->end && *p->s == c;
}

/* A JSON string into out (cap bytes); \uXXXX escapes outside ASCII are refused. */
static int parse_string(parser *p, char *out, size_t cap)
{
    if (expect(p, '"') != 0) return -1;
    size_t n = 0;
    while (p->s < p->end && *p->s != '"') {
        char c = *p->s++;
        if ((unsigned char)c < 0x20) return bad(p, "control character in a string");
        if (c == '\\') {
            if (p->s >= p->end) return bad(p, "unfinished escape");
            char e = *p->s++;
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (p->end - p->s < 4) return bad(p, "short \\u escape");
                char hex[5] = { p->s[0], p->s[1], p->s[2], p->s[3], 0 };
                char *e2;
                long v = strtol(hex, &e2, 16);
                if (*e2 || v < 1 || v > 0x7f) return bad(p, "unsupported \\u escape");
                c = (char)v;
                p->s += 4;
                break;
            }
            default: return bad(p, "unknown escape");
            }
        }
        if (n + 1 >= cap) return bad(p, "string too long");
        out[n++] = c;
    }
    if (p->s >= p->end) return bad(p, "unterminated string");
    p->s++;
    out[n] = '\0';
    return 0;
}

static int parse_uint(parser *p, uint64_t *v)
{
    skip_ws(p);
    if (p->s >= p->end || *p->s < '0' || *p->s > '9') return bad(p, "expected a non-negative integer");
    uint64_t x = 0;
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
        if (x > (UINT64_MAX - 9) / 10) return bad(p, "integer too large");
        x = x * 10 + (uint64_t)(*p->s++ - '0');
    }
    *v = x;
    return 0;
}

/* [a, b, ...] of at most max integers. */
static int parse_uints(parser *p, uint64_t *v, int max, int *n)
{
    *n = 0;
    if (expect(p, '[') != 0) return -1;
    if (peek(p, ']')) return p->s++, 0;
    for (;;) {
        if (*n >= max) return bad(p, "too many values in a list");
        if (parse_uint(p, &v[(*n)++]) != 0) return -1;
        if (peek(p, ']')) return p->s++, 0;
        if (expect(p, ',') != 0) return -1;
    }
}

typedef struct entry {
    char dtype[16];
    rx_shape shape;
    uint64_t begin, end;
} entry;

static int parse_entry(parser *p, entry *e)
{
    bool has_dtype = false, has_shape = false, has_offsets = false;
    if (expect(p, '{') != 0) return -1;
    do {
        char key[32];
        if (parse_string(p, key, sizeof key) != 0 || expect(p, ':') != 0) return -1;
        uint64_t v[RX_MAX_DIMS];
        int n;
        if (strcmp(key, "dtype") == 0) {
            if (parse_string(p, e->dtype, sizeof e->dtype) != 0) return -1;
            has_dtype = true;
        } else if (strcmp(key, "shape") == 0) {
            if (parse_uints(p, v, RX_MAX_DIMS, &n) != 0) return -1;
            e->shape.ndim = n;
            for (int i = 0; i < n; i++) {
                if (v[i] > (1u << 30)) return bad(p, "dimension too large");
                e->shape.d[i] = (int64_t)v[i];
            }
            has_shape = true;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (parse_uints(p, v, 2, &n) != 0) return -1;
            if (n != 2) return bad(p, "data_offsets needs two values");
            e->begin = v[0];
            e->end = v[1];
            has_offsets = true;
        } else {
            return bad(p, "unknown key in a tensor entry");
        }
    } while (peek(p, ',') && p->s++);
    if (expect(p, '}') != 0) return -1;
    if (!has_dtype || !has_shape || !has_offsets) return bad(p, "a tensor entry lacks dtype, shape or data_offsets");
    return 0;
}

const char *ckpt_meta_get(const ckpt_meta_buf *m, const char *key)
{
    for (int i = 0; m && i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) return m->value[i];
    return NULL;
}

/* {"k": "v", ...}: metadata holds only strings. Kept in meta when it fits, else skipped. */
static int parse_metadata(parser *p, ckpt_meta_buf *meta)
{
    char key[4096], value[4096];
    if (expect(p, '{') != 0) return -1;
    if (peek(p, '}')) return p->s++, 0;
    do {
        if (parse_string(p, key, sizeof key) != 0 || expect(p, ':') != 0 || parse_string(p, value, sizeof value) != 0)
            return -1;
        if (meta && meta->n < CKPT_MAX_META && strlen(key) < sizeof meta->key[0] && strlen(value) < sizeof meta->value[0]) {
            snprintf(meta->key[meta->n], sizeof meta->key[0], "%s", key);
            snprintf(meta->value[meta->n], sizeof meta->value[0], "%s", value);
            meta->n++;
        }
    } while (peek(p, ',') && p->s++);
    return expect(p, '}');
}

int checkpoint_read(const char *path, ckpt_tensor *t, int n, ckpt_meta_buf *meta, char *err)
{
    char *file;
    size_t len;
    if (read_file(path, &file, &len, err) != 0) return -1;
    int rc = checkpoint_parse(path, file, len, t, n, meta, err);
    free(file);
    return rc;
}

/* The header's length, from the first 8 bytes (little-endian), checked against the file's. */
static int header_length(const char *path, const char *file, size_t len, uint64_t *hlen, char *err)
{
    if (len < 8) return errorf(err, "%s: not a safetensors file: %zu bytes, too short for a header", path, len);
    *hlen = 0;
    for (int b = 0; b < 8; b++) *hlen |= (uint64_t)(unsigned char)file[b] << (8 * b);
    if (*hlen > MAX_HEADER || *hlen > len - 8)
        return errorf(err, "%s: not a safetensors file: header of %llu bytes in a file of %zu", path,
                      (unsigned long long)*hlen, len);
    return 0;
}

/* Which of the n tensors t the header's entry e, named `name`, is for: the one of that name,
 * not seen before (found), with dtype F32, its shape, and its bytes within the data_len bytes
 * of data. -1 and a message otherwise. */
static int match_entry(const parser *p, const char *name, const entry *e, const ckpt_tensor *t, int n,
                       const bool *found, size_t data_len)
{
    int i = 0;
    while (i < n && strcmp(t[i].name, name) != 0) i++;
    if (i == n) return errorf(p->err, "%s: holds tensor '%s', which the network does not have", p->path, name);
    if (found[i]) return errorf(p->err, "%s: tensor '%s' appears twice", p->path, name);
    if (strcmp(e->dtype, "F32") != 0) return errorf(p->err, "%s: tensor '%s' has dtype %s, expected F32", p->path, name, e->dtype);
    bool same = e->shape.ndim == t[i].shape.ndim;
    for (int d = 0; same && d < e->shape.ndim; d++) same = e->shape.d[d] == t[i].shape.d[d];
    if (!same) {
        char got[96], want[96];
        shape_format(e->shape, got, sizeof got);
        shape_format(t[i].shape, want, sizeof want);
        return errorf(p->err, "%s: tensor '%s' has shape %s, the network expects %s", p->path, name, got, want);
    }
    uint64_t bytes = (uint64_t)rx_numel(e->shape) * sizeof(float);
    if (e->begin > e->end || e->end > data_len || e->end - e->begin != bytes)
        return errorf(p->err, "%s: tensor '%s' has data_offsets [%llu, %llu], expected %llu bytes within %zu", p->path,
                      name, (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)bytes, data_len);
    return i;
}

/* The whole header: {"__metadata__": {...}, "name": {entry}, ...}, every one of the n tensors t
 * in it once (its entry into entries), nothing after it. */
static int parse_header(parser *p, const ckpt_tensor *t, int n, entry *entries, ckpt_meta_buf *meta, size_t data_len)
{
    bool *found = calloc((size_t)(n > 0 ? n : 1), sizeof *found);
    if (!found) return errorf(p->err, "%s: out of memory", p->path);
    int rc = -1;
    if (expect(p, '{') != 0) goto done;
    if (!peek(p, '}')) {
        do {
            char name[CKPT_NAME_LEN];
            entry e = { 0 };
            if (parse_string(p, name, sizeof name) != 0 || expect(p, ':') != 0) goto done;
            if (strcmp(name, "__metadata__") == 0) {
                if (parse_metadata(p, meta) != 0) goto done;
                continue;
            }
            int i = parse_entry(p, &e) != 0 ? -1 : match_entry(p, name, &e, t, n, found, data_len);
            if (i < 0) goto done;
            found[i] = true;
            entries[i] = e;
        } while (peek(p, ',') && p->s++);
    }
    if (expect(p, '}') != 0) goto done;
    skip_ws(p);
    if (p->s != p->end) {
        bad(p, "trailing bytes after the header");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (!found[i]) {
            errorf(p->err, "%s: tensor '%s' is missing", p->path, t[i].name);
            goto done;
        }
    rc = 0;
done:
    free(found);
    return rc;
}

/* Tensor i's bytes, for sorting by where they start (empty tensors first at an offset). */
typedef struct span {
    uint64_t begin, end;
    int i;
} span;

static int span_order(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* As the safetensors specification asks, the tensors' bytes cover the data section exactly:
 * no two overlap, no byte lies between them or after the last (a hole could hide another file
 * in this one). The first tensor out of place is named. */
static int check_coverage(const char *path, const ckpt_tensor *t, const entry *e, int n, size_t data_len, char *err)
{
    span *s = malloc((size_t)(n > 0 ? n : 1) * sizeof *s);
    if (!s) return errorf(err, "%s: out of memory", path);
    for (int k = 0; k < n; k++) s[k] = (span){ e[k].begin, e[k].end, k };
    qsort(s, (size_t)n, sizeof *s, span_order);
    int rc = 0;
    uint64_t at = 0; /* where the next tensor must start */
    for (int k = 0; rc == 0 && k < n; at = s[k++].end) {
        if (s[k].begin < at)
            rc = errorf(err, "%s: tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' (data_offsets [%llu, %llu])",
                        path, t[s[k].i].name, (unsigned long long)s[k].begin, (unsigned long long)s[k].end,
                        t[s[k - 1].i].name, (unsigned long long)s[k - 1].begin, (unsigned long long)s[k - 1].end);
        else if (s[k].begin > at)
            rc = errorf(err, "%s: the data section has bytes [%llu, %llu) that no tensor holds, before tensor '%s'",
                        path, (unsigned long long)at, (unsigned long long)s[k].begin, t[s[k].i].name);
    }
    if (rc == 0 && at != data_len)
        rc = errorf(err, "%s: the data section has %llu bytes after the last tensor, which no tensor holds", path,
                    (unsigned long long)(data_len - at));
    free(s);
    return rc;
}

int checkpoint_parse(const char *path, const char *file, size_t len, ckpt_tensor *t, int n, ckpt_meta_buf *meta,
                     char *err)
{
    ckpt_meta_buf scratch = { 0 }; /* metadata lands in meta only on success */
    uint64_t hlen = 0;
    if (header_length(path, file, len, &hlen, err) != 0) return -1;
    entry *entries = calloc((size_t)(n > 0 ? n : 1), sizeof *entries);
    if (!entries) return errorf(err, "%s: out of memory", path);
    parser p = { .start = file + 8, .s = file + 8, .end = file + 8 + hlen, .path = path, .err = err };
    const char *data = file + 8 + hlen;
    int rc = parse_header(&p, t, n, entries, &scratch, len - 8 - hlen);
    if (rc == 0) rc = check_coverage(path, t, entries, n, len - 8 - hlen, err);
    if (rc == 0) {
        /* All checked: only now copy, so a bad file changes nothing. */
        for (int i = 0; i < n; i++) memcpy(t[i].data, data + entries[i].begin, entries[i].end - entries[i].begin);
        if (meta) *meta = scratch;
    }
    free(entries);
    return rc;
}

/* ---- The network ---- */

/* Named views of nt's parameters in a host copy, followed by the extra tensors. */
static ckpt_tensor *net_tensors(const net *nt, float *host, const ckpt_tensor *extra, int nextra, int *count)
{
    int n = nextra;
    for (int i = 0; i < nt->n; i++) n += nt->layers[i].info.ntensors;
    ckpt_tensor *t = calloc((size_t)(n ? n : 1), sizeof *t);
    if (!t) return NULL;
    int k = 0;
    size_t at = 0;
    for (int i = 0; i < nt->n; i++)
        for (int j = 0; j < nt->layers[i].info.ntensors; j++, k++) {
            net_tensor_name(nt, i, j, t[k].name, sizeof t[k].name);
            t[k].shape = nt->layers[i].info.tensors[j].shape;
            t[k].data = host + at;
            at += (size_t)rx_numel(t[k].shape);
        }
    for (int j = 0; j < nextra; j++) t[k++] = extra[j];
    *count = n;
    return t;
}

/* A host buffer for nt's parameters (*host, freed by the caller) and named views into it, extra
 * following; NULL and a message when memory runs out. */
static ckpt_tensor *host_tensors(const net *nt, const char *path, const ckpt_tensor *extra, int nextra, float **host,
                                 int *count, char *err)
{
    *host = malloc((nt->nparams ? nt->nparams : 1) * sizeof(float));
    ckpt_tensor *t = *host ? net_tensors(nt, *host, extra, nextra, count) : NULL;
    if (!t) {
        free(*host);
        *host = NULL;
        errorf(err, "%s: out of memory", path);
    }
    return t;
}

int checkpoint_save_net(const net *nt, const char *path, const ckpt_tensor *extra, int nextra,
                        const ckpt_meta *meta, int nmeta, char *err)
{
    float *host;
    int n = 0;
    ckpt_tensor *t = host_tensors(nt, path, extra, nextra, &host, &n, err);
    if (!t) return -1;
    device_to_host(nt->device, host, nt->params, nt->nparams * sizeof(float));
    int rc = device_check(nt->device, err) == 0 ? checkpoint_write(path, t, n, meta, nmeta, err) : -1;
    free(t);
    free(host);
    return rc;
}

int checkpoint_load_net(net *nt, const char *path, ckpt_tensor *extra, int nextra, ckpt_meta_buf *meta,
                        char *err)
{
    float *host;
    int n = 0;
    ckpt_tensor *t = host_tensors(nt, path, extra, nextra, &host, &n, err);
    if (!t) return -1;
    int rc = checkpoint_read(path, t, n, meta, err);
    if (rc == 0) host_to_device(nt->device, nt->params, host, nt->nparams * sizeof(float));
    if (rc == 0) rc = device_check(nt->device, err);
    free(t);
    free(host);
    return rc;
}
