/* bench/regions.c: an LD_PRELOAD wrapper of libgomp's GOMP_parallel that counts the parallel
 * regions a process starts outside any other region (those wake sleeping threads; the nested
 * ones of lanes run on one thread) and prints the count at exit to the file named by
 * RUNEXP_REGIONS_OUT. Built and used by bench/regions. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static long outer;

static void write_count(void)
{
    const char *path = getenv("RUNEXP_REGIONS_OUT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!f) return;
    fprintf(f, "%ld\n", outer);
    fclose(f);
}

void GOMP_parallel(void (*fn)(void *), void *data, unsigned threads, unsigned flags)
{
    static void (*real)(void (*)(void *), void *, unsigned, unsigned);
    if (!real) {
        real = (void (*)(void (*)(void *), void *, unsigned, unsigned))dlsym(RTLD_NEXT, "GOMP_parallel");
        atexit(write_count);
    }
    if (!omp_in_parallel()) outer++; /* only the first thread starts outer regions */
    real(fn, data, threads, flags);
}
