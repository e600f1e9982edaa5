/* The communication layer for data-parallel training: which rank this process is, and the
 * collectives the trainer needs (gradient all-reduce, metric sums, broadcasts, barriers).
 *
 * Transports, picked by comm_create() from the environment:
 *   - MPI: the process was started by mpirun / srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 *     PMIX_RANK set) or TRAINPIPE_COMM=mpi forces it. Needs a build with MPI.
 *   - local: the process is one of `gpus = N` ranks started by comm_launch_run() on this host
 *     (TRAINPIPE_WORLD_SIZE set); collectives travel over Unix sockets through rank 0.
 *   - single: neither; rank 0 of 1, every collective is a copy (and the scale still applies).
 * TRAINPIPE_COMM=single ignores the environment and forces the single-process comm.
 *
 * Gradients that live in device memory go through NCCL when the build has it and every rank
 * can load it (the decision is collective, taken on the first comm_allreduce_tensors() call
 * with device tensors), else through a host copy over the transport.
 *
 * Failures. Every collective is bounded by the timeout given to comm_create(). A collective
 * that times out, or whose peer disappears, cannot be cancelled, so it ends the job through
 * comm_abort() ("rank R: collective X timed out after N s (a peer rank probably failed)");
 * the functions below return errors only for bad arguments and local failures (memory, a
 * staging copy, an MPI error code), after which the caller should comm_abort() too.
 *
 * Threads: one thread at a time may call into a comm; create it before starting other
 * threads (MPI initialisation is not safe to run beside them). One comm per process. */
#ifndef TRAINPIPE_HOST_COMM_H
#define TRAINPIPE_HOST_COMM_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

typedef struct comm comm;

/* The exit status of a rank that ended because a peer vanished mid-collective (its socket
 * closed): the launcher then names the peer's failure, not this consequence of it. */
#define COMM_EXIT_PEER_LOST 75

/* Default bound of every collective, in seconds, when comm_create() gets 0. */
#define COMM_DEFAULT_TIMEOUT 300.0

/* Joins the job (see above for how the transport is chosen). timeout_seconds bounds every
 * collective (0: COMM_DEFAULT_TIMEOUT). On failure *out is NULL and the error is recorded
 * through services_fail(). */
tp_status comm_create(double timeout_seconds, comm **out);

int comm_rank(const comm *c);
int comm_size(const comm *c);
/* The rank among the ranks on this host: the GPU to use. */
int comm_local_rank(const comm *c);
/* Whether this build has the MPI transport. */
int comm_have_mpi(void);

/* "single", "mpi" or "local": for log lines. */
const char *comm_transport_name(const comm *c);

/* Sum-all-reduces f32 tensors in place across ranks, then multiplies them by `scale`
 * (1.0 / comm_size() averages). Every rank passes the same list (same count, shapes and
 * order). Tensors live on `backend`: host memory (backend-cpu, or TP_DEVICE_HOST/PINNED
 * tensors) is reduced through a flat bucket of TRAINPIPE_COMM_BUCKET_MB megabytes
 * (default 16) per transport call; device memory through NCCL, or a staged host copy when
 * NCCL is absent. The backend is synchronised first, so call it after backward has been
 * enqueued. With one rank only the scale is applied. */
tp_status comm_allreduce_tensors(comm *c, const tp_backend *backend, tp_tensor *const *tensors,
                                 size_t n, double scale);

/* Gradient reduction overlapped with the backward pass.
 *
 * A reducer takes the gradient tensors in the order backward finishes them and groups
 * neighbours into buckets of about TRAINPIPE_COMM_BUCKET_MB megabytes (default 16; the first
 * bucket at most 1 MB, so the first reduction starts early). comm_reducer_ready() says one
 * tensor is final; when a bucket is complete (and the ones before it have gone) its sum
 * starts while backward goes on:
 *   - host memory (backend-cpu): the bucket goes to the comm's communication thread, which
 *     packs it, reduces it over MPI or the local sockets and scales it in place;
 *   - device memory with NCCL and a backend that shows its compute stream (API 1.3
 *     native_stream): ncclAllReduce on NCCL's stream, ordered after the gradients by an
 *     event, so it runs on the GPU beside the rest of backward.
 * comm_reducer_finish() waits for every bucket and leaves each tensor holding the sum over
 * ranks times `scale`, bit for bit what comm_allreduce_tensors() gives with two ranks.
 * Where overlap is impossible or not asked for (one rank, device tensors staged through the
 * host, an MPI without MPI_THREAD_SERIALIZED, overlap = 0) everything happens in finish,
 * through comm_allreduce_tensors(). The choice is made collectively when the reducer is
 * created, so every rank issues the same collectives in the same order.
 *
 * Once a communication thread runs, every other collective of the comm also runs on it, in
 * the order asked for: comm_allreduce_host() during backward (synchronised batch norm) waits
 * behind the buckets posted before it. The reducer keeps one packed copy of the gradients in
 * host memory (the sum of their sizes) for buckets of several tensors. */
typedef struct comm_reducer comm_reducer;

/* What a reducer does and has done; times in seconds, summed over rounds. */
typedef struct comm_reducer_stats {
    const char *mode;      /* "none" (one rank), "after backward", "overlapped (thread)",
                            * "overlapped (NCCL)" */
    size_t buckets;        /* transport calls per round */
    int64_t rounds;        /* finished rounds */
    double wait_seconds;   /* finish() waiting for reductions: communication not hidden */
    double thread_seconds; /* the communication thread inside collectives, waiting for
                            * peers included (overlapped (thread) only) */
    size_t completed;      /* buckets of the current round already summed (overlapped
                            * (thread) only; their tensors hold the result) */
} comm_reducer_stats;

/* Collective: every rank passes the same tensors (count, shapes, order). `overlap` = 0
 * asks for the reduction after backward. The tensors must stay allocated until the
 * reducer is freed. */
tp_status comm_reducer_create(comm *c, const tp_backend *backend, tp_tensor *const *tensors,
                              size_t n, double scale, int overlap, comm_reducer **out);

/* Tensor `index` (a position in the create list) is final for this round. Each tensor at
 * most once per round; in the same order on every rank. */
tp_status comm_reducer_ready(comm_reducer *r, size_t index);

/* Ends the round: starts what is not started yet (tensors never reported count as ready
 * now), waits for everything, applies the scale. The next ready() begins a new round. */
tp_status comm_reducer_finish(comm_reducer *r);

void comm_reducer_get_stats(const comm_reducer *r, comm_reducer_stats *out);

/* Waits for reductions still in flight (after an error), then frees r. NULL is ignored.
 * Free the reducer before its comm. */
void comm_reducer_free(comm_reducer *r);

/* Sums n host doubles in place across ranks (loss sums, correct counts). The result is the
 * same on every rank, summed in rank order on the local transport. */
tp_status comm_allreduce_host(comm *c, double *values, size_t n);

/* Copies n bytes from rank `root` to every rank (an NCCL id, a resume decision, a path). */
tp_status comm_broadcast_host(comm *c, void *bytes, size_t n, int root);

/* Returns once every rank has entered it. */
tp_status comm_barrier(comm *c);

/* Ends the whole job after a failure on this rank: prints "trainpipe: rank R: reason" to
 * stderr and makes the other ranks exit (MPI_Abort under MPI; under the local launcher this
 * rank exits and the launcher stops the others). Never returns; c may be NULL (then it
 * behaves as a single process). The one place in library code that ends the process. */
void comm_abort(comm *c, int exit_status, const char *reason) __attribute__((noreturn));

/* Leaves the job (MPI_Finalize under MPI) and frees c; NULL is ignored. Call it on every
 * rank after the last collective: under MPI a rank that exits without it ends the job. */
void comm_free(comm *c);

#endif
