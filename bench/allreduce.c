/* bench/allreduce.c: the time of one MPI_Allreduce (sum, in place) of N floats, as runexp's
 * data-parallel step sums a model's gradients (core/dist.c, buckets of 2^22 floats).
 *   mpicc -O2 bench/allreduce.c -o build/allreduce
 *   mpirun -np 2 build/allreduce 154454 1115064
 * prints, per N, the median and the best of REPEATS calls (after WARMUP), in milliseconds. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

enum { WARMUP = 20, REPEATS = 200, BUCKET = 1 << 22 };

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double one_sum(float *p, long n)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (long at = 0; at < n; at += BUCKET)
        MPI_Allreduce(MPI_IN_PLACE, p + at, (int)(n - at < BUCKET ? n - at : BUCKET), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double t = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD); /* the slowest rank's */
    return t;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int a = 1; a < argc; a++) {
        long n = atol(argv[a]);
        float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
        double t[REPEATS];
        if (!p || n < 1) {
            if (rank == 0) fprintf(stderr, "allreduce: '%s': expected a count of floats that fits memory\n", argv[a]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        for (int i = 0; i < WARMUP; i++) one_sum(p, n);
        for (int i = 0; i < REPEATS; i++) t[i] = one_sum(p, n);
        qsort(t, REPEATS, sizeof *t, by_value);
        if (rank == 0)
            printf("%d ranks, %ld floats (%.2f MB): median %.3f ms, best %.3f ms, %.2f GB/s of gradient\n", size, n,
                   4e-6 * (double)n, 1e3 * t[REPEATS / 2], 1e3 * t[0], 4e-9 * (double)n / t[REPEATS / 2]);
        free(p);
    }
    MPI_Finalize();
    return 0;
}
