/* device.c: CPU memory. 64-byte alignment so that AVX-512 loads never split a cache line. */
#include "device.h"

#include <stdlib.h>
#include <string.h>

const char *device_name(rx_device d)
{
    return d == RX_CUDA ? "cuda" : "cpu";
}

void *device_alloc(rx_device d, size_t bytes)
{
    (void)d;
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded ? rounded : 64);
    return p;
}

void device_free(rx_device d, void *p)
{
    (void)d;
    free(p);
}

void device_zero(rx_device d, void *p, size_t bytes)
{
    (void)d;
    memset(p, 0, bytes);
}

void device_to_host(rx_device d, void *host, const void *src, size_t bytes)
{
    (void)d;
    memcpy(host, src, bytes);
}

void host_to_device(rx_device d, void *dst, const void *host, size_t bytes)
{
    (void)d;
    memcpy(dst, host, bytes);
}
