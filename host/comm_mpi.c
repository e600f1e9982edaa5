/* The MPI transport (built only with MPI). Collectives are nonblocking (MPI_Iallreduce,
 * MPI_Ibcast, MPI_Ibarrier) and polled with MPI_Test against a deadline, because a blocking
 * MPI collective waits forever for a peer that died; at the deadline the job ends through
 * MPI_Abort with a message naming this rank and the collective. */
#include "config.h"

#include "comm_transport.h"
#include "services.h"

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* MPI counts are int: larger buffers go in pieces of this many elements. */
#define MPI_PIECE (1 << 30)

typedef struct mpi_transport {
    comm_transport *t; /* the owner's view (rank, size, timeout) */
    MPI_Comm comm;     /* a duplicate of MPI_COMM_WORLD, errors returned */
    int finalize;      /* we initialised MPI, so we finalise it */
} mpi_transport;

static tp_status mpi_fail(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    return services_fail(TP_ERR_LIBRARY, "%s failed: %s", what, text);
}

/* Polls `req` until it completes; past the deadline the job ends. Open MPI progresses a
 * collective only inside MPI calls, so the first second polls hard (yielding the core to
 * other ranks when cores are oversubscribed); a longer wait means a peer is busy elsewhere
 * (rank 0 writing a checkpoint) and polls every 200 us to leave the CPU alone. */
static tp_status mpi_wait(mpi_transport *m, MPI_Request *req, const char *what, double start)
{
    for (unsigned spin = 0;; spin++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, what);
        if (done)
            return TP_OK;
        if (spin < 64)
            continue;
        double waited = comm_now() - start;
        if (waited > m->t->timeout)
            comm_transport_fatal(m->t, 1,
                                 "collective %s timed out after %g s (a peer rank probably "
                                 "failed)", what, m->t->timeout);
        if (waited < 1.0) {
            sched_yield();
        } else {
            struct timespec ts = { 0, 200000 };
            nanosleep(&ts, NULL);
        }
    }
}

static tp_status mpi_allreduce(void *self, void *data, size_t count, comm_dtype dtype,
                               const char *what)
{
    mpi_transport *m = self;
    MPI_Datatype type = dtype == COMM_F32 ? MPI_FLOAT : MPI_DOUBLE;
    size_t elem = dtype == COMM_F32 ? sizeof(float) : sizeof(double);
    double start = comm_now();
    for (size_t off = 0; off < count; off += MPI_PIECE) {
        size_t piece = count - off < MPI_PIECE ? count - off : MPI_PIECE;
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)data + off * elem, (int)piece, type,
                                MPI_SUM, m->comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "MPI_Iallreduce");
        tp_status st = mpi_wait(m, &req, what, start);
        if (st)
            return st;
    }
    return TP_OK;
}

static tp_status mpi_broadcast(void *self, void *bytes, size_t n, int root)
{
    mpi_transport *m = self;
    double start = comm_now();
    for (size_t off = 0; off < n; off += MPI_PIECE) {
        size_t piece = n - off < MPI_PIECE ? n - off : MPI_PIECE;
        MPI_Request req;
        int rc = MPI_Ibcast((char *)bytes + off, (int)piece, MPI_BYTE, root, m->comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "MPI_Ibcast");
        tp_status st = mpi_wait(m, &req, "broadcast", start);
        if (st)
            return st;
    }
    return TP_OK;
}

static tp_status mpi_barrier(void *self)
{
    mpi_transport *m = self;
    MPI_Request req;
    int rc = MPI_Ibarrier(m->comm, &req);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Ibarrier");
    return mpi_wait(m, &req, "barrier", comm_now());
}

static void mpi_abort(void *self, int exit_status)
{
    (void)self;
    MPI_Abort(MPI_COMM_WORLD, exit_status);
    _exit(exit_status); /* MPI_Abort should not return */
}

static void mpi_destroy(void *self)
{
    mpi_transport *m = self;
    if (m->comm != MPI_COMM_NULL)
        MPI_Comm_free(&m->comm);
    if (m->finalize)
        MPI_Finalize();
    free(m);
}

static const comm_transport_ops mpi_ops = {
    .name = "mpi",
    .allreduce = mpi_allreduce,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
    .destroy = mpi_destroy,
};

tp_status comm_mpi_open(double timeout, comm_transport *out)
{
    tp_status st;
    int rc, initialized = 0, finalized = 0;
    mpi_transport *m = calloc(1, sizeof *m);
    if (!m)
        return services_fail(TP_ERR_NOMEM, "comm: out of memory");
    m->comm = MPI_COMM_NULL;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized) {
        free(m);
        return services_fail(TP_ERR_INVALID, "comm: MPI was already finalised in this process "
                                             "(one comm per process)");
    }
    if (!initialized) {
        /* SERIALIZED: the communication thread (comm_worker.h) runs the collectives while
         * the main thread computes, one thread at a time. */
        int provided = MPI_THREAD_SINGLE;
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) {
            free(m);
            return mpi_fail(rc, "MPI_Init_thread");
        }
        m->finalize = 1;
        if (provided < MPI_THREAD_SERIALIZED)
            services_host()->log(services_host(), TP_LOG_WARN, "comm",
                                 "MPI provides thread level %d, below MPI_THREAD_SERIALIZED: "
                                 "gradients are reduced after backward, not during it",
                                 provided);
    }
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->comm)) != MPI_SUCCESS) {
        st = mpi_fail(rc, "MPI_Comm_dup");
        goto fail;
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &out->rank);
    MPI_Comm_size(m->comm, &out->size);

    /* The local rank: our rank among the processes that share this node's memory. */
    MPI_Comm node = MPI_COMM_NULL;
    if ((rc = MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, out->rank, MPI_INFO_NULL,
                                  &node)) != MPI_SUCCESS) {
        st = mpi_fail(rc, "MPI_Comm_split_type");
        goto fail;
    }
    MPI_Comm_rank(node, &out->local_rank);
    MPI_Comm_free(&node);

    /* Whoever initialised MPI, the level it provides decides whether collectives may run on
     * the communication thread. */
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    out->threads_ok = level >= MPI_THREAD_SERIALIZED;

    m->t = out;
    out->timeout = timeout;
    out->ops = &mpi_ops;
    out->self = m;
    return TP_OK;
fail:
    out->rank = 0;
    out->size = 1;
    mpi_destroy(m);
    return st;
}
