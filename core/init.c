/* init.c: a network's first parameter values (see init.h): declared inits from the seed, dirac,
 * and airbench's whitening of the first convolution from the data's patches. */
#include "init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "net.h"

/* dirac on a (OC, C, KH, KW) weight w: output channel o < C passes input channel o through
 * (torch.nn.init.dirac_). */
static void dirac_fill(float *w, rx_shape shape)
{
    const int64_t *s = shape.d, per = s[1] * s[2] * s[3];
    for (int64_t o = 0; o < s[0] && o < s[1]; o++) {
        memset(w + o * per, 0, sizeof(float) * (size_t)per);
        w[o * per + (o * s[2] + s[2] / 2) * s[3] + s[3] / 2] = 1.0f;
    }
}

int net_init_params(net *nt, uint64_t seed, char *err)
{
    float *host = malloc((nt->nparams ? nt->nparams : 1) * sizeof(float));
    if (!host) return errorf(err, "out of memory initializing %zu parameters", nt->nparams);
    rx_rng rng = rx_rng_stream(seed, 0x1417);
    size_t at = 0;
    for (int i = 0; i < nt->n; i++)
        for (int t = 0; t < nt->layers[i].info.ntensors; t++) {
            const rx_tensor_decl *d = &nt->layers[i].info.tensors[t];
            size_t n = (size_t)rx_numel(d->shape);
            for (size_t k = 0; k < n; k++) {
                switch (d->init) {
                case RX_INIT_ZEROS: host[at + k] = 0.0f; break;
                case RX_INIT_ONES: host[at + k] = 1.0f; break;
                case RX_INIT_UNIFORM: host[at + k] = d->scale * (2.0f * rx_rng_uniform(&rng) - 1.0f); break;
                case RX_INIT_CONSTANT: host[at + k] = d->scale; break;
                }
            }
            if (t == 0 && strcmp(nt->layers[i].use->init, "dirac") == 0) dirac_fill(host + at, d->shape);
            at += n;
        }
    host_to_device(nt->device, nt->params, host, nt->nparams * sizeof(float));
    free(host);
    return 0;
}

int net_whitening_layer(const net *nt)
{
    for (int i = 0; i < nt->n; i++)
        if (strcmp(nt->layers[i].use->init, "whiten") == 0) return i;
    return -1;
}

/* Whether layer i, with weight w (its first tensor, or NULL), can be whitened from samples shaped
 * in (C, H, W): a square k x k kernel over C channels, 2 * C * k * k filters, C * k * k <= 64. */
static bool can_whiten(int i, const rx_shape *w, rx_shape in)
{
    int64_t k = w && w->ndim == 4 ? w->d[2] : 0;
    return i == 0 && in.ndim == 3 && w && w->ndim == 4 && w->d[3] == k && w->d[1] == in.d[0] &&
           in.d[0] * k * k <= 64 && w->d[0] == 2 * in.d[0] * k * k;
}

int init_check_layer(const config *c, const layer *l, int i, rx_shape in, char *err)
{
    const rx_shape *w = l->info.ntensors ? &l->info.tensors[0].shape : NULL;
    if (strcmp(l->use->init, "dirac") == 0 && (!w || w->ndim != 4 || w->d[2] % 2 == 0 || w->d[3] % 2 == 0))
        return errorf(err, "%s: %s: init = \"dirac\" is for a convolution with an odd kernel", c->file, l->use->where);
    if (strcmp(l->use->init, "whiten") == 0 && !can_whiten(i, w, in))
        return errorf(err, "%s: %s: init = \"whiten\" is for the first layer, a convolution with a square "
                      "kernel k and 2 * C * k * k outputs for C input channels (e.g. 24 for 3 channels and k = 2)",
                      c->file, l->use->where);
    return 0;
}

/* Eigenvalues (into val) and eigenvectors (columns of vec) of the symmetric d x d matrix a, by
 * cyclic Jacobi rotations: exact enough and short for the 12 x 12 of a 2 x 2 x 3 patch. */
static void symmetric_eigen(double *a, int d, double *val, double *vec)
{
    for (int i = 0; i < d * d; i++) vec[i] = i % (d + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) off += a[p * d + q] * a[p * d + q];
        if (off < 1e-30) break;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) {
                double apq = a[p * d + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < d; k++) { /* columns p and q */
                    double akp = a[k * d + p], akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for (int k = 0; k < d; k++) { /* rows p and q */
                    double apk = a[p * d + k], aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < d; k++) {
                    double vkp = vec[k * d + p], vkq = vec[k * d + q];
                    vec[k * d + p] = c * vkp - s * vkq;
                    vec[k * d + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < d; i++) val[i] = a[i * d + i];
}

/* The second moment m (d x d, d = C * k * k) of every k x k patch (stride 1) of n images
 * (N, C, H, W), laid out as the weights are (c, ky, kx); p: d doubles of scratch. */
static void patch_moment(const float *images, int64_t n, int C, int H, int W, int k, double *m, double *p)
{
    const int d = C * k * k;
    int64_t count = 0;
    for (int64_t s = 0; s < n; s++) {
        const float *img = images + s * C * H * W;
        for (int y = 0; y + k <= H; y++)
            for (int x = 0; x + k <= W; x++, count++) {
                for (int c = 0, j = 0; c < C; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) p[j++] = img[(c * H + y + ky) * W + x + kx];
                for (int i = 0; i < d; i++)
                    for (int j = i; j < d; j++) m[i * d + j] += p[i] * p[j];
            }
    }
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) m[j * d + i] = m[i * d + j] /= (double)(count ? count : 1);
}

/* The 2 * d filters w (2 * d, d) from the eigenvalues val and eigenvectors vec (columns) of the
 * patches' second moment: largest eigenvalue first, as airbench orders them, each scaled by
 * 1 / sqrt(eigenvalue + eps); then the same filters negated. */
static void whitening_filters(const double *val, const double *vec, int d, double eps, float *w)
{
    int order[64];
    for (int i = 0; i < d; i++) order[i] = i;
    for (int i = 1; i < d; i++)
        for (int j = i; j > 0 && val[order[j]] > val[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int o = 0; o < d; o++) {
        int e = order[o];
        double scale = 1 / sqrt((val[e] > 0 ? val[e] : 0) + eps);
        for (int j = 0; j < d; j++) {
            w[o * d + j] = (float)(vec[j * d + e] * scale);
            w[(o + d) * d + j] = -w[o * d + j];
        }
    }
}

int net_init_whitening(net *nt, const float *images, int64_t n, double eps, char *err)
{
    int li = net_whitening_layer(nt);
    if (li < 0) return 0;
    layer *l = &nt->layers[li];
    const int C = (int)nt->in.d[0], H = (int)nt->in.d[1], W = (int)nt->in.d[2];
    const int k = (int)l->info.tensors[0].shape.d[2], d = C * k * k;
    double *m = calloc((size_t)(d * d), sizeof *m), *val = malloc(sizeof *val * (size_t)d);
    double *vec = malloc(sizeof *vec * (size_t)(d * d)), *p = malloc(sizeof *p * (size_t)d);
    float *w = malloc(sizeof *w * (size_t)(2 * d * d));
    int rc = 0;
    if (!m || !val || !vec || !p || !w) {
        rc = errorf(err, "out of memory computing the whitening layer");
    } else {
        patch_moment(images, n, C, H, W, k, m, p);
        symmetric_eigen(m, d, val, vec);
        whitening_filters(val, vec, d, eps, w);
        host_to_device(nt->device, l->w[0].data, w, sizeof *w * (size_t)(2 * d * d));
    }
    free(m), free(val), free(vec), free(p), free(w);
    return rc;
}
