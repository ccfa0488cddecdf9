/* bench/wake.c: what one parallel region of two threads, with a barrier inside, costs beyond its
 * work, after a serial gap like the host's between training steps: the price of waking a thread
 * that waits (OMP_WAIT_POLICY=passive: it sleeps) against one that spins (active).
 *
 *   cc -O2 -fopenmp bench/wake.c -o /tmp/wake
 *   OMP_WAIT_POLICY=passive /tmp/wake 200; OMP_WAIT_POLICY=active /tmp/wake 200
 *
 * The argument is the serial gap in microseconds (default 20). docs/benchmarks.md has the
 * figures: they bound how much of bench/waiting's difference the wakes themselves explain. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    const double gap = (argc > 1 ? atof(argv[1]) : 20) * 1e-6;
    const int regions = 5000;
    const double start = now();
    for (int i = 0; i < regions; i++) {
#pragma omp parallel num_threads(2)
        {
#pragma omp barrier
        }
        for (const double t = now(); now() - t < gap;) /* the host's serial work, spinning */
            ;
    }
    const double each = (now() - start) / regions - gap;
    printf("%.1f us a region (its start, a barrier, its end) beyond a serial gap of %.0f us\n", each * 1e6, gap * 1e6);
    return 0;
}
