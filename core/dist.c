/* dist.c: ranks, sums and broadcasts over MPI, and NCCL's on the GPU (see dist.h). Every MPI
 * call goes through MPI_CHECK, with MPI_ERRORS_RETURN set, so a failure is a message naming the
 * call instead of an abort. MPI keeps the communicators itself: this file holds only which one a
 * training spans (see ranks()); the NCCL communicator lives in the trainer (dist_gpu). */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device.h"
#include "error.h"

void dist_part(int64_t first, int64_t n, int64_t *my_first, int64_t *my_n)
{
    int64_t size = dist_size(), rank = dist_rank(), base = n / size, extra = n % size;
    *my_n = base + (rank < extra);
    *my_first = first + rank * base + (rank < extra ? rank : extra);
}

#ifdef RX_WITH_MPI
#include <mpi.h>
#ifdef RX_WITH_CUDA
#include <nccl.h>
#endif

static int mpi_failed(int rc, const char *call, const char *file, int line, char *err)
{
    char why[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, why, &len);
    return errorf(err, "%s failed at %s:%d: %s", call, file, line, why);
}
#define MPI_CHECK(call, err) ((rc_ = (call)) == MPI_SUCCESS ? 0 : mpi_failed(rc_, #call, __FILE__, __LINE__, err))

static bool started(void)
{
    int on = 0, off = 0;
    MPI_Initialized(&on);
    if (on) MPI_Finalized(&off);
    return on && !off;
}

/* The ranks a training spans: all of them, or this process alone while runexp.map trains this
 * rank's own experiments (dist_alone). Beside MPI's own state, the one thing this file keeps. */
static bool alone;

void dist_alone(bool on)
{
    alone = on;
}

static MPI_Comm ranks(void)
{
    return alone ? MPI_COMM_SELF : MPI_COMM_WORLD;
}

/* A launcher's variables: mpirun's (OpenMPI), PMIx's (srun --mpi=pmix, OpenMPI 5), PMI's. */
static bool launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int dist_init(int *argc, char ***argv, char *err)
{
    if (!launched()) return 0;
    int rc_, provided;
    /* FUNNELED: only the main thread calls MPI; OpenMP's threads compute between the calls. */
    if (MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), err) != 0) return -1;
    if (MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), err) != 0) return -1;
    return MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN), err);
}

void dist_finalize(void)
{
    if (started()) MPI_Finalize();
}

bool dist_built_in(void) { return true; }

int dist_rank(void)
{
    int r = 0;
    if (started()) MPI_Comm_rank(ranks(), &r);
    return r;
}

int dist_size(void)
{
    int n = 1;
    if (started()) MPI_Comm_size(ranks(), &n);
    return n;
}

/* The ranks sharing this host's memory; *rank gets this one's place among them. */
static int local_ranks(int *rank)
{
    int n = 1;
    *rank = 0;
    MPI_Comm local;
    if (!started() || MPI_Comm_split_type(ranks(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS)
        return n;
    MPI_Comm_rank(local, rank);
    MPI_Comm_size(local, &n);
    MPI_Comm_free(&local);
    return n;
}

int dist_local_rank(void)
{
    int r;
    local_ranks(&r);
    return r;
}

int dist_local_size(void)
{
    int r;
    return local_ranks(&r);
}

/* Waits for r as OpenMP's passive threads wait (main.c): testing, then sleeping between tests.
 * MPI's own wait spins, and on a machine shared with other work a spinning rank burns the time
 * slice its partner needs to reach the sum; a rank that sleeps is woken first when the partner
 * is done. The first SPIN_TESTS tests are back to back, for a partner already there. */
#define SPIN_TESTS 1000
static int wait_passively(MPI_Request *r, char *err)
{
    int done = 0, rc_;
    for (long i = 0; !done; i++) {
        if (MPI_CHECK(MPI_Test(r, &done, MPI_STATUS_IGNORE), err) != 0) return -1;
        if (!done && i >= SPIN_TESTS) nanosleep(&(struct timespec){ .tv_nsec = 20000 }, NULL);
    }
    return 0;
}

static int reduce_in_place(void *p, int n, MPI_Datatype type, MPI_Op op, char *err)
{
    MPI_Request r;
    int rc_;
    if (MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, p, n, type, op, ranks(), &r), err) != 0) return -1;
    return wait_passively(&r, err);
}

int dist_agree(int rc, char *err)
{
    if (!started()) return rc;
    int rank = dist_rank(), size = dist_size(), who = rc != 0 ? rank : size, rc_;
    char why[ERR_LEN];
    /* Passively: the other ranks wait here while rank 0 validates, tests and writes. */
    if (reduce_in_place(&who, 1, MPI_INT, MPI_MIN, why) != 0)
        return errorf(err, "rank %d of %d: %s (while agreeing whether every rank is fine)", rank, size, why);
    if (who == size) return 0;
    char msg[ERR_LEN];
    snprintf(msg, sizeof msg, "%s", err);
    if (MPI_CHECK(MPI_Bcast(msg, ERR_LEN, MPI_CHAR, who, ranks()), why) != 0 ||
        MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, who, ranks()), why) != 0)
        return errorf(err, "rank %d of %d: %s (while hearing why rank %d stopped)", rank, size, why, who);
    msg[ERR_LEN - 1] = '\0';
    if (who == 0) snprintf(err, ERR_LEN, "%s", msg); /* rank 0 is the run's own voice, as one process's */
    else snprintf(err, ERR_LEN, "rank %d of %d: %s", who, size, msg);
    return rc;
}

int dist_sum(double *v, int n, char *err)
{
    return started() ? reduce_in_place(v, n, MPI_DOUBLE, MPI_SUM, err) : 0;
}

int dist_pick_gpu(char *err)
{
    return dist_size() > 1 ? device_pick(dist_local_rank(), err) : 0;
}

#ifdef RX_WITH_CUDA
struct dist_gpu { ncclComm_t comm; };

static int nccl_failed(ncclResult_t r, const char *call, const char *file, int line, char *err)
{
    return errorf(err, "%s failed at %s:%d: %s", call, file, line, ncclGetErrorString(r));
}
#define NCCL_CHECK(call, err) ((nr_ = (call)) == ncclSuccess ? 0 : nccl_failed(nr_, #call, __FILE__, __LINE__, err))

int dist_gpu_open(dist_gpu **g, rx_device d, char *err)
{
    *g = NULL;
    if (d != RX_CUDA || dist_size() < 2) return 0;
    ncclUniqueId id;
    ncclResult_t nr_;
    int rc_;
    if (dist_rank() == 0 && NCCL_CHECK(ncclGetUniqueId(&id), err) != 0) memset(&id, 0, sizeof id);
    if (MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, ranks()), err) != 0) return -1;
    if (!(*g = calloc(1, sizeof **g))) return errorf(err, "out of memory starting NCCL");
    return NCCL_CHECK(ncclCommInitRank(&(*g)->comm, dist_size(), id, dist_rank()), err);
}

void dist_gpu_close(dist_gpu *g)
{
    if (g && g->comm) ncclCommDestroy(g->comm);
    free(g);
}

/* On the default stream, in order with the kernels before and after, as everything else. */
static int gpu_sum(dist_gpu *g, float *p, size_t n, char *err)
{
    ncclResult_t nr_;
    return NCCL_CHECK(ncclAllReduce(p, p, n, ncclFloat, ncclSum, g->comm, NULL), err);
}

static int gpu_broadcast(dist_gpu *g, void *p, size_t bytes, char *err)
{
    ncclResult_t nr_;
    return NCCL_CHECK(ncclBroadcast(p, p, bytes, ncclChar, 0, g->comm, NULL), err);
}
#else
struct dist_gpu { int unused; };
int dist_gpu_open(dist_gpu **g, rx_device d, char *err) { return *g = NULL, 0; }
void dist_gpu_close(dist_gpu *g) { free(g); }
static int gpu_sum(dist_gpu *g, float *p, size_t n, char *err) { return errorf(err, "no NCCL in this build"); }
static int gpu_broadcast(dist_gpu *g, void *p, size_t bytes, char *err) { return errorf(err, "no NCCL in this build"); }
#endif

int dist_sum_floats(dist_gpu *g, rx_device d, float *p, size_t n, char *err)
{
    if (!started() || dist_size() < 2) return 0;
    if (g) return gpu_sum(g, p, n, err);
    for (size_t at = 0; at < n; at += DIST_BUCKET_FLOATS) {
        size_t len = n - at < DIST_BUCKET_FLOATS ? n - at : DIST_BUCKET_FLOATS;
        if (reduce_in_place(p + at, (int)len, MPI_FLOAT, MPI_SUM, err) != 0) return -1;
    }
    return 0;
}

int dist_broadcast(dist_gpu *g, rx_device d, void *p, size_t bytes, char *err)
{
    if (!started() || dist_size() < 2) return 0;
    if (g) return gpu_broadcast(g, p, bytes, err);
    int rc_;
    const size_t chunk = (size_t)1 << 30; /* MPI counts are ints */
    for (size_t at = 0; at < bytes; at += chunk) {
        size_t len = bytes - at < chunk ? bytes - at : chunk;
        if (MPI_CHECK(MPI_Bcast((char *)p + at, (int)len, MPI_BYTE, 0, ranks()), err) != 0) return -1;
    }
    return 0;
}

#else /* one process */

int dist_init(int *argc, char ***argv, char *err) { return 0; }
void dist_finalize(void) {}
void dist_alone(bool on) {}
bool dist_built_in(void) { return false; }
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
int dist_local_rank(void) { return 0; }
int dist_local_size(void) { return 1; }
int dist_agree(int rc, char *err) { return rc; }
int dist_sum(double *v, int n, char *err) { return 0; }
int dist_pick_gpu(char *err) { return 0; }
struct dist_gpu { int unused; };
int dist_gpu_open(dist_gpu **g, rx_device d, char *err) { return *g = NULL, 0; }
void dist_gpu_close(dist_gpu *g) { free(g); }
int dist_sum_floats(dist_gpu *g, rx_device d, float *p, size_t n, char *err) { return 0; }
int dist_broadcast(dist_gpu *g, rx_device d, void *p, size_t bytes, char *err) { return 0; }

#endif
