/* init.h: a network's first parameter values: each tensor's declared init drawn from the seed,
 * and the two a config can ask of a layer instead, init = "dirac" (a convolution that starts as
 * the identity on its first channels) and init = "whiten" (the first convolution's filters
 * computed from the data, as airbench does); with the checks that a layer can take them. */
#ifndef RUNEXP_INIT_H
#define RUNEXP_INIT_H

#include "config.h"

typedef struct net net;     /* net.h, which includes this file */
typedef struct layer layer;

/* Draws every parameter from its declared init, on the CPU from seed, then copies it over;
 * a layer with init = "dirac" gets its identity on top. */
int net_init_params(net *nt, uint64_t seed, char *err);
/* For the layer with init = "whiten" (the first): weights that whiten its k x k patches, computed
 * from n sample images (CPU memory), as airbench does: the eigenvectors of the patches' second
 * moment scaled by 1 / sqrt(eigenvalue + eps), and their negatives. */
int net_init_whitening(net *nt, const float *images, int64_t n, double eps, char *err);
/* Which layer asks for init = "whiten", or -1. */
int net_whitening_layer(const net *nt);

/* Refuses the config's init for layer l, the i-th of a network whose samples are shaped `in`,
 * where the layer cannot take it: dirac wants a convolution with an odd kernel, whiten the
 * first layer, a convolution whose filters the patches of its input can fill. */
int init_check_layer(const config *c, const layer *l, int i, rx_shape in, char *err);

#endif
