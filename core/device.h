/* device.h: memory on a device. The host owns every buffer a plugin sees; this is the one place
 * that allocates them, so the CUDA build adds its cases here and nowhere else. */
#ifndef RUNEXP_DEVICE_H
#define RUNEXP_DEVICE_H

#include "runexp.h"

const char *device_name(rx_device d);
/* Zeroed memory of `bytes` on the device, aligned for vector loads; NULL when out of memory. */
void *device_alloc(rx_device d, size_t bytes);
void device_free(rx_device d, void *p);
void device_zero(rx_device d, void *p, size_t bytes);
/* Copies between host memory and the device (plain memcpy on the CPU). */
void device_to_host(rx_device d, void *host, const void *src, size_t bytes);
void host_to_device(rx_device d, void *dst, const void *host, size_t bytes);

#endif
