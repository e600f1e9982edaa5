/* Internal to the communication layer (comm.c and its transports): the transport table that
 * comm.c dispatches to, the constructors of the transports, and the NCCL helper.
 * Not for other host code: use comm.h. */
#ifndef TRAINPIPE_HOST_COMM_TRANSPORT_H
#define TRAINPIPE_HOST_COMM_TRANSPORT_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

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
} comm_transport;

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
typedef struct comm_nccl comm_nccl;
/* Loads the libraries; TP_ERR_UNSUPPORTED when they are missing (no message recorded). */
tp_status comm_nccl_load(comm_nccl **out);
/* Joins the NCCL communicator on the calling thread's current CUDA device: rank 0 makes the
 * unique id and t broadcasts it. Collective over t. */
tp_status comm_nccl_init(comm_nccl *n, const comm_transport *t);
/* Sum-all-reduces the device tensors (f32) on NCCL's own stream after a backend sync, waits
 * for it within t->timeout, then scales them on the backend. */
tp_status comm_nccl_allreduce(comm_nccl *n, const comm_transport *t, const tp_backend *backend,
                              tp_tensor *const *tensors, size_t count, double scale);
void comm_nccl_free(comm_nccl *n);

#endif
