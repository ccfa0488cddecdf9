/* dist.h: more than one process training one model (data parallelism), and the only place in the
 * host that knows MPI or NCCL. Under a launcher (mpirun, srun --mpi=pmix) every rank runs the
 * same config; each computes the gradients of its part of every batch, the parts' gradients are
 * summed (MPI_Allreduce on the CPU, ncclAllReduce on the GPU), and every rank steps the same
 * weights. Rank 0 alone writes the run folder, prints and draws.
 *
 * A build without MPI (MPI=0, or no mpicc found) has the same functions as one process: rank 0
 * of 1, sums that return their input, broadcasts that do nothing. So does a build with MPI run
 * without a launcher: MPI is started only when a launcher's variables say there are ranks. */
#ifndef RUNEXP_DIST_H
#define RUNEXP_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runexp.h"

/* Starts MPI when launched by mpirun or srun (their environment says so); otherwise nothing.
 * Returns -1 with the reason in err (ERR_LEN) when MPI does not start. */
int dist_init(int *argc, char ***argv, char *err);
void dist_finalize(void);
bool dist_built_in(void);                 /* compiled with MPI */
/* on: the trainings that follow span this process alone (rank 0 of 1), whatever the launcher
 * started: runexp.map gives each rank experiments of its own. off: every rank again. */
void dist_alone(bool on);
int dist_rank(void);                      /* 0 .. dist_size() - 1; 0 without MPI */
int dist_size(void);                      /* 1 without MPI */
int dist_local_rank(void);                /* this rank's place among the ranks of its host */
int dist_local_size(void);                /* the ranks of this host */

/* The part of samples [first, first + n) this rank trains: the ranks take consecutive slices in
 * rank order, the first n % size ranks one sample more, so the split depends only on (n, size).
 * A rank gets none when n < size. */
void dist_part(int64_t first, int64_t n, int64_t *my_first, int64_t *my_n);

/* Every rank's rc (0: fine) and err; returns, on every rank, the rc of the lowest rank whose rc
 * is not 0, with that rank's message in err, prefixed "rank R of N: " unless R is 0 (rank 0
 * speaks for the run, as one process does; agreeing again on an agreed message adds nothing);
 * 0 when every rank is fine. Every rank must call it at the same point. */
int dist_agree(int rc, char *err);
/* v[0..n) summed over the ranks in place (host doubles: losses, counts, flags). */
int dist_sum(double *v, int n, char *err);

/* A GPU's communicator (NCCL), for a run on the GPU with more than one rank; NULL otherwise. */
typedef struct dist_gpu dist_gpu;
/* Picks this rank's GPU (local rank modulo the GPUs present) before the run's device is opened. */
int dist_pick_gpu(char *err);
/* The NCCL communicator over every rank, its id sent from rank 0 over MPI (as llm.c does). */
int dist_gpu_open(dist_gpu **g, rx_device d, char *err);
void dist_gpu_close(dist_gpu *g);

/* n floats at p (on device d) summed over the ranks in place, in buckets of DIST_BUCKET_FLOATS:
 * every rank gets the same bytes. g: the GPU communicator when d is the GPU. */
#define DIST_BUCKET_FLOATS ((size_t)1 << 22) /* 16 MiB, near PyTorch DDP's 25 MiB bucket_cap_mb */
int dist_sum_floats(dist_gpu *g, rx_device d, float *p, size_t n, char *err);
/* bytes at p (on device d) copied from rank 0 to every rank. */
int dist_broadcast(dist_gpu *g, rx_device d, void *p, size_t bytes, char *err);

#endif
