/* Internal to the communication layer (comm.c and its transports): the transport table that
 * comm.c dispatches to, the constructors of the transports, and the NCCL helper.
 * Not for other host code: use comm.h. */
#ifndef TRAINPIPE_HOST_COMM_TRANSPORT_H
#define TRAINPIPE_HOST_COMM_TRANSPORT_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

#include "comm.h"

/* Element types a transport sums. */
typedef enum comm_dtype {
    COMM_F32 = 0,
    COMM_F64 = 1
} comm_dtype;

/* A transport's operations. Collectives are bounded by the transport's timeout; on timeout
 * or a lost peer they call comm_transport_fatal() and do not return. */
typedef struct comm_transport_ops {
    const char *name;
    /* Sum in place across ranks; the result is identical on every rank. */
    tp_status (*allreduce)(void *self, void *data, size_t count, comm_dtype dtype,
                           const char *what);
    tp_status (*broadcast)(void *self, void *bytes, size_t n, int root);
    tp_status (*barrier)(void *self);
    /* Ends this process and, where the transport can, the others. Never returns. */
    void (*abort)(void *self, int exit_status);
    void (*destroy)(void *self);
} comm_transport_ops;

typedef struct comm_transport {
    const comm_transport_ops *ops; /* NULL: the single-process comm */
    void *self;
    int rank, size, local_rank;
    double timeout; /* seconds */
    /* Collectives may run on a thread other than the one that opened the transport (one
     * thread at a time): the condition for the communication thread of comm_worker.h. */
    int threads_ok;
} comm_transport;

/* Whether NCCL is used for device tensors: decided collectively, once (comm_decide_nccl). */
typedef enum nccl_state {
    NCCL_UNDECIDED = 0,
    NCCL_READY = 1,
    NCCL_OFF = 2
} nccl_state;

typedef struct comm_nccl comm_nccl;
typedef struct comm_worker comm_worker;

/* The comm of comm.h, shared by comm.c and comm_reducer.c. */
struct comm {
    comm_transport t;
    const char *name;
    float *bucket;        /* flat host buffer for bucketed and staged reductions */
    size_t bucket_count;  /* floats allocated */
    size_t bucket_target; /* floats per transport call (a larger tensor gets its own) */
    nccl_state nccl_state;
    comm_nccl *nccl;
    /* The communication thread, once comm_start_worker() made it: from then on every
     * collective of this comm runs there, in the order it was asked for. */
    comm_worker *worker;
};

/* The transport's collectives, run on the communication thread when there is one (the
 * calling thread waits), else directly. */
tp_status comm_run_allreduce(comm *c, void *data, size_t count, comm_dtype dtype,
                             const char *what);
tp_status comm_run_broadcast(comm *c, void *bytes, size_t n, int root);
tp_status comm_run_barrier(comm *c);

/* Starts the communication thread (idempotent). TP_ERR_UNSUPPORTED when the transport
 * cannot run collectives off the main thread (check c->t.threads_ok first). */
tp_status comm_start_worker(comm *c);

/* Whether t lives in device memory on a backend described by info. */
int comm_tensor_on_device(const tp_tensor *t, const tp_backend_info *info);

/* Checks what comm_allreduce_tensors() and comm_reducer_create() accept (`who` names the
 * caller in messages): a backend, a finite scale, f32 tensors with data. Fills the backend's
 * info and how many of the tensors live in device memory. */
tp_status comm_check_tensors(const char *who, const tp_backend *backend,
                             tp_tensor *const *tensors, size_t n, double scale,
                             tp_backend_info *info, size_t *on_device);

/* Multiplies every tensor by `scale` where it lives (nothing when scale is 1). */
tp_status comm_scale_tensors(const tp_backend *backend, const tp_backend_info *info,
                             tp_tensor *const *tensors, size_t n, double scale);

/* Decides, collectively and once, whether device gradients go through NCCL: a no-op when
 * decided, or with one rank unless TRAINPIPE_COMM_NCCL=1. Sets c->nccl_state. */
tp_status comm_decide_nccl(comm *c, int device_tensors, const tp_backend_info *info);

/* Prints "trainpipe: rank R: <message>" and ends the job through t->ops->abort (or _exit
 * when t has no transport). For timeouts and lost peers. */
void comm_transport_fatal(const comm_transport *t, int exit_status, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* Seconds on the monotonic clock. */
double comm_now(void);

/* How this process was started, from the environment. */
typedef enum comm_env {
    COMM_ENV_SINGLE = 0,
    COMM_ENV_MPI = 1,
    COMM_ENV_LOCAL = 2
} comm_env;
comm_env comm_detect_env(void);

/* The MPI transport (comm_mpi.c, built with MPI only): initialises MPI. */
tp_status comm_mpi_open(double timeout, comm_transport *out);

/* The local transport (comm_star.c): the sockets comm_launch_run() handed down, named by
 * TRAINPIPE_RANK, TRAINPIPE_WORLD_SIZE, TRAINPIPE_LOCAL_RANK and TRAINPIPE_COMM_FDS. */
tp_status comm_star_open(double timeout, comm_transport *out);

/* NCCL for device tensors on backend-cuda (comm_nccl.c, built with NCCL only). libnccl and
 * libcudart are loaded at run time, so the host binary does not depend on them. */
/* Loads the libraries; TP_ERR_UNSUPPORTED when they are missing (no message recorded). */
tp_status comm_nccl_load(comm_nccl **out);
/* Joins the NCCL communicator on the calling thread's current CUDA device: rank 0 makes the
 * unique id and t broadcasts it. Collective over t. */
tp_status comm_nccl_init(comm_nccl *n, const comm_transport *t);
/* Sum-all-reduces the device tensors (f32) on NCCL's own stream after a backend sync, and
 * waits for it within t->timeout; the caller applies its scale. */
tp_status comm_nccl_allreduce(comm_nccl *n, const comm_transport *t, tp_tensor *const *tensors,
                              size_t count);
/* Overlapped use (comm_reducer.c): sums `count` device tensors on NCCL's stream once the
 * backend's compute stream (its native handle, a cudaStream_t) has finished what is queued
 * on it now, without waiting on the host. Calls on every rank must come in one order. */
tp_status comm_nccl_enqueue(comm_nccl *n, void *compute_stream, tp_tensor *const *tensors,
                            size_t count);
/* Waits on the host, within t->timeout, for every reduction enqueued so far. */
tp_status comm_nccl_wait(comm_nccl *n, const comm_transport *t);
void comm_nccl_free(comm_nccl *n);

#endif
