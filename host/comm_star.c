/* The local transport: the ranks comm_launch_run() started on this host talk over Unix
 * stream sockets in a star through rank 0. Rank 0 holds one socket per other rank; every
 * other rank holds one socket to rank 0.
 *
 * Each collective: every rank r > 0 sends a header (what it is calling, its call number,
 * byte count) and its payload to rank 0; rank 0 checks that the headers agree with its own
 * call, reduces or forwards, and sends a reply header and the result back. Sums run in rank
 * order, (x0 + x1) + x2 ..., on rank 0 only, so every rank gets the same bits and a run is
 * repeatable. The traffic through rank 0 grows with the number of ranks, which is fine for
 * the few local ranks this serves (device gradients go through NCCL anyway).
 *
 * Every read and write polls against the collective's deadline; a timeout or a closed
 * socket (a rank that exited) ends this rank through comm_transport_fatal(). */
#include "config.h"

#include "comm.h"
#include "comm_transport.h"
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAR_MAGIC 0x4d435054u /* "TPCM" */
#define STAR_MAX_RANKS 4096
#define STAR_CHUNK (1u << 20)  /* rank 0 receives and sums in pieces of this many bytes */

typedef enum star_op {
    STAR_ALLREDUCE_F32 = 1,
    STAR_ALLREDUCE_F64 = 2,
    STAR_BROADCAST = 3,
    STAR_BARRIER = 4
} star_op;

typedef struct star_header {
    uint32_t magic;
    uint32_t op;
    uint64_t call;  /* collectives so far on the sender: catches ranks that diverged */
    uint64_t bytes; /* payload bytes that follow this header */
    int32_t rank;   /* the sender */
    int32_t root;   /* broadcast root, else 0 */
} star_header;

typedef struct star {
    comm_transport *t;
    int *fds;      /* rank 0: fds[r] for r = 1..size-1; others: fds[0], the link to rank 0 */
    uint64_t call;
    char *chunk;   /* rank 0's receive buffer for sums */
} star;

static const char *op_name(uint32_t op)
{
    switch (op) {
    case STAR_ALLREDUCE_F32: return "allreduce(f32)";
    case STAR_ALLREDUCE_F64: return "allreduce(f64)";
    case STAR_BROADCAST: return "broadcast";
    case STAR_BARRIER: return "barrier";
    }
    return "?";
}

/* Moves n bytes over fd to or from `peer` before the collective's deadline, or ends the job. */
static void star_io(star *s, int peer, void *buf, size_t n, int writing, const char *what,
                    double start)
{
    int fd = s->t->rank == 0 ? s->fds[peer] : s->fds[0];
    char *p = buf;
    size_t done = 0;
    while (done < n) {
        double left = s->t->timeout - (comm_now() - start);
        if (left <= 0)
            comm_transport_fatal(s->t, 1,
                                 "collective %s timed out after %g s (a peer rank probably "
                                 "failed)", what, s->t->timeout);
        struct pollfd pfd = { fd, (short)(writing ? POLLOUT : POLLIN), 0 };
        double ms = left * 1000.0 + 1.0;
        int r = poll(&pfd, 1, ms > 60000.0 ? 60000 : (int)ms);
        if (r < 0 && errno != EINTR)
            comm_transport_fatal(s->t, 1, "collective %s: poll: %s", what, strerror(errno));
        if (r <= 0)
            continue;
        ssize_t k = writing ? send(fd, p + done, n - done, MSG_NOSIGNAL)
                            : recv(fd, p + done, n - done, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (k == 0 || (k < 0 && (errno == EPIPE || errno == ECONNRESET)))
            comm_transport_fatal(s->t, COMM_EXIT_PEER_LOST,
                                 "collective %s: lost rank %d (it exited or crashed)", what,
                                 peer);
        if (k < 0)
            comm_transport_fatal(s->t, 1, "collective %s: %s rank %d: %s", what,
                                 writing ? "sending to" : "receiving from", peer,
                                 strerror(errno));
        done += (size_t)k;
    }
}

static star_header make_header(star *s, star_op op, uint64_t bytes, int root)
{
    star_header h;
    memset(&h, 0, sizeof h);
    h.magic = STAR_MAGIC;
    h.op = op;
    h.call = s->call;
    h.bytes = bytes;
    h.rank = s->t->rank;
    h.root = root;
    return h;
}

/* Rank 0 reads rank r's header and checks that it is in the same call as rank 0. */
static void receive_matching(star *s, int r, const star_header *mine, star_header *h,
                             const char *what, double start)
{
    star_io(s, r, h, sizeof *h, 0, what, start);
    if (h->magic != STAR_MAGIC || h->rank != r)
        comm_transport_fatal(s->t, 1, "collective %s: garbage from rank %d's socket", what, r);
    if (h->op != mine->op || h->call != mine->call || h->root != mine->root ||
        (h->op != STAR_BROADCAST && h->bytes != mine->bytes))
        comm_transport_fatal(s->t, 1,
                             "the ranks' calls diverged: rank %d is in %s (call %llu, %llu "
                             "bytes, root %d) while rank 0 is in %s (call %llu, %llu bytes, "
                             "root %d)",
                             r, op_name(h->op), (unsigned long long)h->call,
                             (unsigned long long)h->bytes, (int)h->root, op_name(mine->op),
                             (unsigned long long)mine->call, (unsigned long long)mine->bytes,
                             (int)mine->root);
}

/* A non-root rank reads rank 0's reply header for its call. */
static void receive_reply(star *s, const star_header *mine, star_header *h, const char *what,
                          double start)
{
    star_io(s, 0, h, sizeof *h, 0, what, start);
    if (h->magic != STAR_MAGIC || h->rank != 0 || h->op != mine->op || h->call != mine->call)
        comm_transport_fatal(s->t, 1,
                             "collective %s (call %llu): rank 0 answered %s (call %llu): the "
                             "ranks' calls diverged",
                             what, (unsigned long long)mine->call, op_name(h->op),
                             (unsigned long long)h->call);
}

static void add_into(void *acc, const void *src, size_t bytes, comm_dtype dtype)
{
    if (dtype == COMM_F32) {
        float *a = acc;
        const float *b = src;
        for (size_t i = 0, n = bytes / sizeof(float); i < n; i++)
            a[i] += b[i];
    } else {
        double *a = acc;
        const double *b = src;
        for (size_t i = 0, n = bytes / sizeof(double); i < n; i++)
            a[i] += b[i];
    }
}

static tp_status star_allreduce(void *self, void *data, size_t count, comm_dtype dtype,
                                const char *what)
{
    star *s = self;
    double start = comm_now();
    size_t elem = dtype == COMM_F32 ? sizeof(float) : sizeof(double);
    size_t bytes = count * elem;
    star_header mine = make_header(s, dtype == COMM_F32 ? STAR_ALLREDUCE_F32 : STAR_ALLREDUCE_F64,
                                   bytes, 0);
    star_header h;
    s->call++;
    if (s->t->rank != 0) {
        star_io(s, 0, &mine, sizeof mine, 1, what, start);
        star_io(s, 0, data, bytes, 1, what, start);
        receive_reply(s, &mine, &h, what, start);
        if (h.bytes != bytes)
            comm_transport_fatal(s->t, 1, "collective %s: rank 0 answered %llu bytes, not %zu",
                                 what, (unsigned long long)h.bytes, bytes);
        star_io(s, 0, data, bytes, 0, what, start);
        return TP_OK;
    }
    /* Rank 0: all of rank 1, then all of rank 2, ... so the sum order is fixed. Replies go
     * out only after every payload is in: a rank reads nothing until it has sent it all. */
    for (int r = 1; r < s->t->size; r++) {
        receive_matching(s, r, &mine, &h, what, start);
        for (size_t off = 0; off < bytes; off += STAR_CHUNK) {
            size_t piece = bytes - off < STAR_CHUNK ? bytes - off : STAR_CHUNK;
            star_io(s, r, s->chunk, piece, 0, what, start);
            add_into((char *)data + off, s->chunk, piece, dtype);
        }
    }
    for (int r = 1; r < s->t->size; r++) {
        star_io(s, r, &mine, sizeof mine, 1, what, start);
        star_io(s, r, data, bytes, 1, what, start);
    }
    return TP_OK;
}

static tp_status star_broadcast(void *self, void *bytes, size_t n, int root)
{
    star *s = self;
    const char *what = "broadcast";
    double start = comm_now();
    star_header mine = make_header(s, STAR_BROADCAST, s->t->rank == root ? n : 0, root);
    star_header h;
    s->call++;
    if (s->t->rank != 0) {
        star_io(s, 0, &mine, sizeof mine, 1, what, start);
        if (s->t->rank == root)
            star_io(s, 0, bytes, n, 1, what, start);
        receive_reply(s, &mine, &h, what, start);
        if (h.bytes != (s->t->rank == root ? 0 : n))
            comm_transport_fatal(s->t, 1, "collective %s: rank 0 answered %llu bytes, not %zu",
                                 what, (unsigned long long)h.bytes, n);
        star_io(s, 0, bytes, (size_t)h.bytes, 0, what, start);
        return TP_OK;
    }
    for (int r = 1; r < s->t->size; r++) {
        receive_matching(s, r, &mine, &h, what, start);
        if (h.bytes != (r == root ? n : 0))
            comm_transport_fatal(s->t, 1,
                                 "the ranks' calls diverged: rank %d broadcasts %llu bytes "
                                 "from rank %d, rank 0 expects %zu",
                                 r, (unsigned long long)h.bytes, root, n);
        if (r == root)
            star_io(s, r, bytes, n, 0, what, start);
    }
    for (int r = 1; r < s->t->size; r++) {
        star_header reply = mine;
        reply.bytes = r == root ? 0 : n;
        star_io(s, r, &reply, sizeof reply, 1, what, start);
        star_io(s, r, bytes, (size_t)reply.bytes, 1, what, start);
    }
    return TP_OK;
}

static tp_status star_barrier(void *self)
{
    star *s = self;
    const char *what = "barrier";
    double start = comm_now();
    star_header mine = make_header(s, STAR_BARRIER, 0, 0);
    star_header h;
    s->call++;
    if (s->t->rank != 0) {
        star_io(s, 0, &mine, sizeof mine, 1, what, start);
        receive_reply(s, &mine, &h, what, start);
        return TP_OK;
    }
    for (int r = 1; r < s->t->size; r++)
        receive_matching(s, r, &mine, &h, what, start);
    for (int r = 1; r < s->t->size; r++)
        star_io(s, r, &mine, sizeof mine, 1, what, start);
    return TP_OK;
}

static void star_abort(void *self, int exit_status)
{
    (void)self;
    /* Our sockets close with us: the peers see it, and the launcher stops them. */
    _exit(exit_status);
}

static void star_destroy(void *self)
{
    star *s = self;
    if (!s)
        return;
    if (s->fds) {
        int n = s->t->rank == 0 ? s->t->size : 1;
        for (int i = 0; i < n; i++)
            if (s->fds[i] >= 0)
                close(s->fds[i]);
    }
    free(s->fds);
    free(s->chunk);
    free(s);
}

static const comm_transport_ops star_ops = {
    .name = "local",
    .allreduce = star_allreduce,
    .broadcast = star_broadcast,
    .barrier = star_barrier,
    .abort = star_abort,
    .destroy = star_destroy,
};

/* A non-negative decimal int from the environment. */
static tp_status env_int(const char *name, int fallback, int *out)
{
    const char *s = getenv(name);
    if (!s) {
        if (fallback < 0)
            return services_fail(TP_ERR_INVALID, "comm: %s is not set (the local launcher sets "
                                                 "it)", name);
        *out = fallback;
        return TP_OK;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX)
        return services_fail(TP_ERR_INVALID, "comm: %s='%s': expected a number >= 0", name, s);
    *out = (int)v;
    return TP_OK;
}

/* The sockets listed in TRAINPIPE_COMM_FDS ("fd,fd,..."): want of them, each a socket. */
static tp_status parse_fds(const char *list, int *fds, int want)
{
    const char *p = list ? list : "";
    for (int i = 0; i < want; i++) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        struct stat sb;
        if (errno || end == p || v < 0 || v > INT_MAX || (*end && *end != ','))
            return services_fail(TP_ERR_INVALID,
                                 "comm: TRAINPIPE_COMM_FDS='%s': expected %d socket number%s",
                                 list ? list : "", want, want == 1 ? "" : "s");
        if (fstat((int)v, &sb) != 0 || !S_ISSOCK(sb.st_mode))
            return services_fail(TP_ERR_INVALID,
                                 "comm: TRAINPIPE_COMM_FDS: descriptor %ld is not a socket "
                                 "(TRAINPIPE_WORLD_SIZE is set only by the local launcher)", v);
        fds[i] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*p)
        return services_fail(TP_ERR_INVALID,
                             "comm: TRAINPIPE_COMM_FDS='%s': more than %d socket number%s",
                             list, want, want == 1 ? "" : "s");
    return TP_OK;
}

tp_status comm_star_open(double timeout, comm_transport *out)
{
    tp_status st;
    int rank = 0, size = 0, local = 0;
    if ((st = env_int("TRAINPIPE_WORLD_SIZE", -1, &size)) ||
        (st = env_int("TRAINPIPE_RANK", -1, &rank)))
        return st;
    if (size < 1 || size > STAR_MAX_RANKS || rank >= size)
        return services_fail(TP_ERR_INVALID,
                             "comm: TRAINPIPE_RANK=%d, TRAINPIPE_WORLD_SIZE=%d: expected "
                             "0 <= rank < size <= %d", rank, size, STAR_MAX_RANKS);
    if ((st = env_int("TRAINPIPE_LOCAL_RANK", rank, &local)))
        return st;

    star *s = calloc(1, sizeof *s);
    int n_fds = rank == 0 ? size : 1;
    if (!s || !(s->fds = malloc((size_t)n_fds * sizeof(int))) ||
        (rank == 0 && !(s->chunk = malloc(STAR_CHUNK)))) {
        if (s)
            free(s->fds);
        free(s);
        return services_fail(TP_ERR_NOMEM, "comm: out of memory");
    }
    for (int i = 0; i < n_fds; i++)
        s->fds[i] = -1;
    const char *list = getenv("TRAINPIPE_COMM_FDS");
    if (size > 1 && (st = parse_fds(list, rank == 0 ? s->fds + 1 : s->fds,
                                    rank == 0 ? size - 1 : 1))) {
        for (int i = 0; i < n_fds; i++)
            s->fds[i] = -1; /* not ours to close */
        free(s->fds);
        free(s->chunk);
        free(s);
        return st;
    }
    /* Programs the trainer may start must not hold our sockets open. */
    for (int i = 0; i < n_fds; i++)
        if (s->fds[i] >= 0)
            (void)fcntl(s->fds[i], F_SETFD, FD_CLOEXEC);

    out->rank = rank;
    out->size = size;
    out->local_rank = local;
    out->timeout = timeout;
    out->ops = &star_ops;
    out->threads_ok = 1; /* plain sockets: any one thread at a time */
    out->self = s;
    s->t = out;
    /* Every rank is up and wired to the right peer before anyone goes on. */
    return star_barrier(s);
}
