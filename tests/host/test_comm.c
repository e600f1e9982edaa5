/* Tests of the communication layer (host/comm.c and its transports).
 *
 *   test_comm                  single process: the single comm, argument errors, env errors
 *   test_comm features         prints "mpi=yes|no" (for the scripts that decide to skip)
 *   test_comm MODE             one rank of a multi-rank job (under mpirun or the launcher)
 *   test_comm launch N MODE    the local launcher: runs N copies of "test_comm launch N MODE"
 *
 * MODE is one of
 *   basic   ranks and sizes; allreduce of tensors (host memory, a fake device backend that
 *           stages through the host, and backend-cpu when it loads) against sums computed
 *           here, with several bucket groupings; host doubles; broadcast from every root;
 *           barrier; every rank ends with the same bits; the overlapped gradient reducer
 *           (buckets summed on the communication thread before finish, a host allreduce
 *           queued between them, two rounds, the same bits as reducing after backward)
 *   abort   rank 1 calls comm_abort() while rank 0 waits in an allreduce
 *   die     rank 1 exits without a word while rank 0 waits in an allreduce
 *   hang    rank 1 sleeps while rank 0 waits in an allreduce with a 2 s timeout
 *   hang_bucket  the same while rank 0's communication thread sums a gradient bucket
 * The failure modes never end well: the scripts (test_comm_mpi.sh, test_comm_launch.sh)
 * check the exit status, the messages and the time it took. */
#include "config.h"

#include "check.h"
#include "comm.h"
#include "comm_launch.h"
#include "params.h"
#include "registry.h"
#include "services.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a fake device backend */

/* "Device" memory is host memory here, but the backend says it is not, so comm.c must
 * stage every device tensor through copy(); the counters show it did. */
typedef struct fake_device {
    int copies_to_host, copies_to_device, syncs, scales;
} fake_device;

static tp_status fd_info(void *self, tp_backend_info *out)
{
    (void)self;
    out->name = "fake-device";
    out->device_name = "test";
    out->preferred_layout = TP_LAYOUT_NCHW;
    out->has_device_memory = 1;
    out->threads = 0;
    return TP_OK;
}

static tp_status fd_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    fake_device *fd = self;
    (void)stream;
    if (dst->dtype != src->dtype || tp_tensor_count(dst) != tp_tensor_count(src) ||
        dst->layout != src->layout)
        return services_fail(TP_ERR_INVALID, "fake-device copy: shapes differ");
    if (src->device == TP_DEVICE_DEVICE && dst->device != TP_DEVICE_DEVICE)
        fd->copies_to_host++;
    else if (dst->device == TP_DEVICE_DEVICE && src->device != TP_DEVICE_DEVICE)
        fd->copies_to_device++;
    memcpy(dst->data, src->data, tp_tensor_bytes(src));
    return TP_OK;
}

static tp_status fd_sync(void *self)
{
    ((fake_device *)self)->syncs++;
    return TP_OK;
}

static tp_status fd_scale(void *self, double alpha, tp_tensor *y)
{
    ((fake_device *)self)->scales++;
    float *p = y->data;
    for (int64_t i = 0; i < tp_tensor_count(y); i++)
        p[i] *= (float)alpha;
    return TP_OK;
}

static const tp_backend_ops fake_device_ops = {
    .size = sizeof(tp_backend_ops),
    .info = fd_info,
    .copy = fd_copy,
    .sync = fd_sync,
    .scale = fd_scale,
};

/* ---------------------------------------------------------------- tensors and expectations */

#define N_TENSORS 7
/* Sizes chosen against a bucket of 2621 floats (0.01 MB): small ones share a bucket, 2304
 * fills one, 70000 is larger than any bucket, 0 is empty. */
static const int64_t tensor_sizes[N_TENSORS] = { 1, 7, 1000, 2304, 70000, 0, 10 };

/* The value rank r contributes at element i of tensor t. */
static float contribution(int r, int t, int64_t i)
{
    return (float)((int)((i * 37 + t * 11) % 101) - 50) * 0.01f * (float)(r + 1) +
           (float)r * 0.001f;
}

/* What every rank should hold afterwards: the rank-order sum, then the scale. */
static float expected(int size, int t, int64_t i, float scale)
{
    float acc = contribution(0, t, i);
    for (int r = 1; r < size; r++)
        acc += contribution(r, t, i);
    return acc * scale;
}

typedef struct tensor_set {
    tp_tensor t[N_TENSORS];
    tp_tensor *p[N_TENSORS];
} tensor_set;

/* The worst relative difference of tensors [first, last) from the expectation. */
static double set_error(const tensor_set *s, int size, float scale, int first, int last)
{
    double max_rel = 0.0;
    for (int k = first; k < last; k++) {
        const float *v = s->t[k].data;
        for (int64_t i = 0; i < tensor_sizes[k]; i++) {
            double want = expected(size, k, i, scale);
            max_rel = fmax(max_rel, fabs((double)v[i] - want) / fmax(fabs(want), 1e-3));
        }
    }
    return max_rel;
}

static void refill_set(tensor_set *s, int rank)
{
    for (int k = 0; k < N_TENSORS; k++)
        for (int64_t i = 0; i < tensor_sizes[k]; i++)
            ((float *)s->t[k].data)[i] = contribution(rank, k, i);
}

/* Allocates with `backend` (NULL: malloc) on `device`, filled with this rank's values. */
static int make_set(tensor_set *s, const tp_backend *backend, tp_device device, int rank)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < N_TENSORS; k++) {
        s->t[k] = tp_tensor_2d(TP_DTYPE_F32, tensor_sizes[k], 0);
        s->t[k].device = device;
        s->p[k] = &s->t[k];
        if (tensor_sizes[k] == 0)
            continue; /* an empty tensor has no data */
        if (backend && backend->ops->alloc) {
            if (backend->ops->alloc(backend->self, &s->t[k], "test tensor"))
                return -1;
        } else if (!(s->t[k].data = malloc(tp_tensor_bytes(&s->t[k]) + 4))) {
            return -1;
        }
    }
    refill_set(s, rank);
    return 0;
}

static void free_set(tensor_set *s, const tp_backend *backend)
{
    for (int k = 0; k < N_TENSORS; k++) {
        if (!s->t[k].data)
            continue;
        if (backend && backend->ops->free)
            backend->ops->free(backend->self, &s->t[k]);
        else
            free(s->t[k].data);
        s->t[k].data = NULL;
    }
}

/* A hash of every value's bits, to show all ranks hold the same ones. */
static uint64_t hash_set(const tensor_set *s)
{
    uint64_t h = 1469598103934665603ull;
    for (int k = 0; k < N_TENSORS; k++) {
        const unsigned char *b = s->t[k].data;
        for (size_t i = 0; i < tp_tensor_bytes(&s->t[k]); i++)
            h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

/* Reduces one set and compares it with the expectation; returns the max relative error. */
static double reduce_and_compare(comm *c, const tp_backend *backend, tp_device device,
                                 const char *label)
{
    int rank = comm_rank(c), size = comm_size(c);
    float scale = 1.0f / (float)size;
    tensor_set s;
    if (make_set(&s, backend, device, rank)) {
        fprintf(stderr, "rank %d: %s: cannot allocate tensors\n", rank, label);
        check_failures++;
        return INFINITY;
    }
    tp_status st = comm_allreduce_tensors(c, backend, s.p, N_TENSORS, scale);
    CHECK(st == TP_OK);
    if (st)
        fprintf(stderr, "rank %d: %s: %s\n", rank, label, services_last_error());
    double max_rel = set_error(&s, size, scale, 0, N_TENSORS);
    /* All ranks must hold the same bits: compare with rank 0's hash. */
    uint64_t mine = hash_set(&s), root = mine;
    CHECK(comm_broadcast_host(c, &root, sizeof root, 0) == TP_OK);
    CHECK(root == mine);
    printf("rank %d: %s: max relative difference %.3g from the rank-order sum, %s rank 0\n",
           rank, label, max_rel, root == mine ? "same bits as" : "DIFFERENT bits from");
    /* MPI may sum in another order for more than 2 ranks; 2 ranks have only one order. */
    CHECK(max_rel <= (size <= 2 ? 0.0 : 1e-6));
    free_set(&s, backend);
    return max_rel;
}

/* backend-cpu from the build tree, or 0 when it is not built here. */
static int load_backend_cpu(registry *reg, instance *inst, tp_backend *out)
{
    const char *top = getenv("TP_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/.libs/backend-cpu.so", top ? top : "..");
    if (access(path, R_OK) != 0)
        return 0;
    const registry_entry *e = NULL;
    if (registry_load_file(reg, path) != TP_OK ||
        !(e = registry_find(reg, TP_KIND_BACKEND, "cpu")) ||
        instance_create(e->component, (const char *[]){ "threads=1", NULL }, inst) != TP_OK) {
        fprintf(stderr, "backend-cpu.so does not load: %s\n", services_last_error());
        check_failures++;
        return 0;
    }
    out->ops = e->component->ops;
    out->self = inst->self;
    return 1;
}

/* ---------------------------------------------------------------- the reducer */

/* The gradient reducer on host tensors (needs TRAINPIPE_COMM_BUCKET_MB=0.01: buckets
 * {1, 7, 1000} {2304} {70000} {0, 10}). Returns the hash of the result, equal on all ranks
 * and for overlap on and off. */
static uint64_t reduce_with_reducer(comm *c, const tp_backend *backend, int overlap,
                                    const char *want_mode)
{
    int rank = comm_rank(c), size = comm_size(c);
    float scale = 1.0f / (float)size;
    double limit = size <= 2 ? 0.0 : 1e-6;
    const char *label = overlap ? "reducer, overlapped" : "reducer, after backward";
    tensor_set s;
    comm_reducer *r = NULL;
    comm_reducer_stats rs;
    if (make_set(&s, NULL, TP_DEVICE_HOST, rank)) {
        check_failures++;
        return 0;
    }
    tp_status st = comm_reducer_create(c, backend, s.p, N_TENSORS, scale, overlap, &r);
    CHECK(st == TP_OK && r);
    if (!r) {
        fprintf(stderr, "rank %d: %s: %s\n", rank, label, services_last_error());
        free_set(&s, NULL);
        return 0;
    }
    comm_reducer_get_stats(r, &rs);
    printf("rank %d: %s: mode %s, %zu buckets\n", rank, label, rs.mode, rs.buckets);
    CHECK(!strcmp(rs.mode, want_mode));
    CHECK(rs.buckets == (overlap ? 4u : 0u));

    /* Round 1: the first bucket's tensors are ready; "backward" goes on. */
    for (size_t i = 0; i < 3; i++)
        CHECK(comm_reducer_ready(r, i) == TP_OK);
    if (overlap) {
        /* Its sum arrives before finish: the overlap itself. */
        double start = (double)time(NULL);
        do {
            comm_reducer_get_stats(r, &rs);
            if (rs.completed >= 1)
                break;
            usleep(1000);
        } while ((double)time(NULL) - start < 20.0);
        CHECK(rs.completed >= 1);
        double early = set_error(&s, size, scale, 0, 3);
        printf("rank %d: %s: bucket 1 summed before finish (max rel. error %.3g)\n", rank,
               label, early);
        CHECK(early <= limit);
    }
    /* A collective asked for meanwhile (synchronised batch norm) queues behind the bucket. */
    double v = rank + 1.0;
    CHECK(comm_allreduce_host(c, &v, 1) == TP_OK);
    CHECK(v == size * (size + 1) / 2.0);
    CHECK(comm_reducer_ready(r, 3) == TP_OK);
    CHECK(comm_reducer_ready(r, 4) == TP_OK);
    CHECK(comm_reducer_ready(r, 4) == TP_ERR_INVALID); /* twice in a round */
    CHECK_CONTAINS(services_last_error(), "twice");
    CHECK(comm_reducer_ready(r, N_TENSORS) == TP_ERR_INVALID);
    /* Tensors 5 and 6 are never reported: finish takes them as ready. */
    CHECK(comm_reducer_finish(r) == TP_OK);
    double err1 = set_error(&s, size, scale, 0, N_TENSORS);
    uint64_t h1 = hash_set(&s);

    /* Round 2: every tensor reported, in order. */
    refill_set(&s, rank);
    for (size_t i = 0; i < N_TENSORS; i++)
        CHECK(comm_reducer_ready(r, i) == TP_OK);
    CHECK(comm_reducer_finish(r) == TP_OK);
    double err2 = set_error(&s, size, scale, 0, N_TENSORS);
    CHECK(hash_set(&s) == h1);
    comm_reducer_get_stats(r, &rs);
    CHECK(rs.rounds == 2);
    printf("rank %d: %s: max rel. error %.3g and %.3g in two rounds, %.3f s waited in finish\n",
           rank, label, err1, err2, rs.wait_seconds);
    CHECK(err1 <= limit && err2 <= limit);
    uint64_t root = h1;
    CHECK(comm_broadcast_host(c, &root, sizeof root, 0) == TP_OK);
    CHECK(root == h1);
    comm_reducer_free(r);
    free_set(&s, NULL);
    return h1;
}

/* ---------------------------------------------------------------- the modes */

static int run_basic(void)
{
    comm *c = NULL;
    /* 0.01 MB buckets: groups of several tensors, one alone, one larger than a bucket. */
    setenv("TRAINPIPE_COMM_BUCKET_MB", "0.01", 1);
    if (comm_create(20.0, &c) != TP_OK) {
        fprintf(stderr, "comm_create: %s\n", services_last_error());
        return 1;
    }
    int rank = comm_rank(c), size = comm_size(c);
    printf("rank %d of %d (local rank %d) on the %s transport\n", rank, size,
           comm_local_rank(c), comm_transport_name(c));
    CHECK(size >= 2);
    CHECK(rank >= 0 && rank < size);
    CHECK(comm_local_rank(c) == rank); /* one host */

    /* Host doubles. */
    double v[3] = { 1.0, (double)rank, 0.25 * rank };
    CHECK(comm_allreduce_host(c, v, 3) == TP_OK);
    CHECK(v[0] == size);
    CHECK(v[1] == size * (size - 1) / 2.0);
    CHECK(v[2] == 0.25 * size * (size - 1) / 2.0);

    /* Broadcast from every root, small and large. */
    for (int root = 0; root < size; root++) {
        char text[64];
        snprintf(text, sizeof text, "from rank %d", rank);
        CHECK(comm_broadcast_host(c, text, sizeof text, root) == TP_OK);
        char want[64];
        snprintf(want, sizeof want, "from rank %d", root);
        CHECK(!strcmp(text, want));
    }
    size_t big_n = 3u << 20;
    unsigned char *big = malloc(big_n);
    CHECK(big != NULL);
    if (big) {
        for (size_t i = 0; i < big_n; i++)
            big[i] = (unsigned char)(rank == size - 1 ? i * 7 + 1 : 0);
        CHECK(comm_broadcast_host(c, big, big_n, size - 1) == TP_OK);
        size_t bad = 0;
        for (size_t i = 0; i < big_n; i++)
            bad += big[i] != (unsigned char)(i * 7 + 1);
        CHECK(bad == 0);
        free(big);
    }
    CHECK(comm_barrier(c) == TP_OK);

    /* Argument errors fail on every rank alike, before any traffic. */
    CHECK(comm_broadcast_host(c, v, sizeof v, size) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "root");
    tp_tensor half = tp_tensor_2d(TP_DTYPE_F16, 4, 0);
    uint16_t hv[4] = { 0 };
    half.data = hv;
    tp_tensor *hp = &half;
    fake_device fdev;
    memset(&fdev, 0, sizeof fdev);
    tp_backend fake = { &fake_device_ops, &fdev };
    CHECK(comm_allreduce_tensors(c, &fake, &hp, 1, 1.0) == TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(services_last_error(), "f16");

    /* Tensors: host memory, staged device memory, backend-cpu. */
    reduce_and_compare(c, &fake, TP_DEVICE_HOST, "host memory");
    CHECK(fdev.copies_to_host == 0 && fdev.copies_to_device == 0);
    reduce_and_compare(c, &fake, TP_DEVICE_DEVICE, "fake device memory (staged)");
    printf("rank %d: fake device: %d copies to the host, %d back, %d syncs\n", rank,
           fdev.copies_to_host, fdev.copies_to_device, fdev.syncs);
    CHECK(fdev.copies_to_host == N_TENSORS - 1 && fdev.copies_to_device == N_TENSORS - 1);

    /* The overlapped reducer, then the same without overlap: the same bits. */
    uint64_t overlapped = reduce_with_reducer(c, &fake, 1, "overlapped (thread)");
    uint64_t after = reduce_with_reducer(c, &fake, 0, "after backward");
    CHECK(overlapped == after);
    /* Device tensors staged through the host have nothing to overlap with. */
    tensor_set staged;
    comm_reducer *sr = NULL;
    comm_reducer_stats srs;
    CHECK(make_set(&staged, NULL, TP_DEVICE_DEVICE, rank) == 0);
    CHECK(comm_reducer_create(c, &fake, staged.p, N_TENSORS, 1.0, 1, &sr) == TP_OK);
    comm_reducer_get_stats(sr, &srs);
    CHECK(srs.mode && !strcmp(srs.mode, "after backward"));
    CHECK(comm_reducer_finish(sr) == TP_OK);
    CHECK(set_error(&staged, size, 1.0f, 0, N_TENSORS) <= (size <= 2 ? 0.0 : 1e-6));
    comm_reducer_free(sr);
    free_set(&staged, NULL);

    /* The default bucket: everything in one call. */
    unsetenv("TRAINPIPE_COMM_BUCKET_MB");

    registry *reg = registry_new();
    instance inst;
    tp_backend cpu;
    if (load_backend_cpu(reg, &inst, &cpu)) {
        reduce_and_compare(c, &cpu, TP_DEVICE_DEVICE, "backend-cpu tensors");
        instance_destroy(&inst);
    } else {
        printf("rank %d: note: backend-cpu.so is not built here; skipped its case\n", rank);
    }
    registry_free(reg);

    /* Every rank's checks in one sum, so a failure anywhere fails every rank. */
    double failures = check_failures;
    CHECK(comm_allreduce_host(c, &failures, 1) == TP_OK);
    CHECK(comm_barrier(c) == TP_OK);
    comm_free(c);
    if (failures > 0 && !check_failures)
        fprintf(stderr, "rank %d: another rank failed %g check(s)\n", rank, failures);
    if (!check_failures && failures == 0)
        printf("rank %d: all comm checks passed\n", rank);
    return check_failures || failures > 0 ? 1 : 0;
}

/* Rank 1 fails (how depends on the mode) while rank 0 waits in an allreduce. */
static int run_failure(const char *mode)
{
    comm *c = NULL;
    int bucket = !strcmp(mode, "hang_bucket");
    double timeout = !strcmp(mode, "hang") || bucket ? 2.0 : 30.0;
    if (comm_create(timeout, &c) != TP_OK) {
        fprintf(stderr, "comm_create: %s\n", services_last_error());
        return 1;
    }
    int rank = comm_rank(c);
    CHECK(comm_barrier(c) == TP_OK);
    tensor_set s;
    comm_reducer *r = NULL;
    fake_device fdev;
    memset(&fdev, 0, sizeof fdev);
    tp_backend fake = { &fake_device_ops, &fdev };
    if (bucket) { /* collective: both ranks make the reducer, then rank 1 hangs */
        CHECK(make_set(&s, NULL, TP_DEVICE_HOST, rank) == 0);
        CHECK(comm_reducer_create(c, &fake, s.p, N_TENSORS, 1.0, 1, &r) == TP_OK);
    }
    if (rank == 1) {
        if (!strcmp(mode, "abort"))
            comm_abort(c, 3, "simulated failure");
        if (!strcmp(mode, "die"))
            _exit(3);
        struct timespec ts = { 60, 0 }; /* hang */
        nanosleep(&ts, NULL);
        fprintf(stderr, "rank 1: still here after 60 s: nobody stopped this rank\n");
        return 1;
    }
    tp_status st;
    if (bucket) {
        for (size_t i = 0; i < N_TENSORS; i++)
            CHECK(comm_reducer_ready(r, i) == TP_OK); /* the buckets leave */
        st = comm_reducer_finish(r);
    } else {
        double sums[4] = { 1, 2, 3, 4 };
        st = comm_allreduce_host(c, sums, 4);
    }
    fprintf(stderr, "rank %d: the allreduce returned (status %d) although rank 1 failed\n",
            rank, (int)st);
    comm_free(c);
    return 1;
}

static int run_single(void)
{
    comm *c = NULL;
    tp_status st;

    /* Environment errors. */
    setenv("TRAINPIPE_COMM", "carrier-pigeon", 1);
    CHECK(comm_create(0, &c) == TP_ERR_INVALID && c == NULL);
    CHECK_CONTAINS(services_last_error(), "carrier-pigeon");
    unsetenv("TRAINPIPE_COMM");
    setenv("TRAINPIPE_COMM_BUCKET_MB", "-1", 1);
    CHECK(comm_create(0, &c) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "TRAINPIPE_COMM_BUCKET_MB");
    unsetenv("TRAINPIPE_COMM_BUCKET_MB");
    setenv("TRAINPIPE_WORLD_SIZE", "2", 1);
    setenv("TRAINPIPE_RANK", "1", 1);
    setenv("TRAINPIPE_COMM_FDS", "0", 1); /* stdin: not a socket under make check */
    st = comm_create(0, &c);
    if (st == TP_OK) { /* stdin happened to be a socket: then the barrier would wait */
        fprintf(stderr, "unexpected: comm_create accepted fd 0\n");
        check_failures++;
        comm_free(c);
    } else {
        CHECK_CONTAINS(services_last_error(), "TRAINPIPE_COMM_FDS");
    }
    setenv("TRAINPIPE_COMM_FDS", "", 1);
    CHECK(comm_create(0, &c) == TP_ERR_INVALID);
    setenv("TRAINPIPE_RANK", "2", 1);
    CHECK(comm_create(0, &c) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "TRAINPIPE_RANK=2");
    unsetenv("TRAINPIPE_WORLD_SIZE");
    unsetenv("TRAINPIPE_RANK");
    unsetenv("TRAINPIPE_COMM_FDS");
    CHECK(comm_create(-1.0, &c) == TP_ERR_INVALID);
    CHECK(comm_launch_wanted(2) == 1);
    CHECK(comm_launch_wanted(1) == 0);

    /* The single comm. */
    CHECK(comm_create(0, &c) == TP_OK && c);
    if (!c)
        return CHECK_EXIT();
    CHECK(comm_rank(c) == 0 && comm_size(c) == 1 && comm_local_rank(c) == 0);
    CHECK(!strcmp(comm_transport_name(c), "single"));
    double v[2] = { 1.5, -2.0 };
    CHECK(comm_allreduce_host(c, v, 2) == TP_OK && v[0] == 1.5 && v[1] == -2.0);
    char text[8] = "abc";
    CHECK(comm_broadcast_host(c, text, sizeof text, 0) == TP_OK && !strcmp(text, "abc"));
    CHECK(comm_broadcast_host(c, text, sizeof text, 1) == TP_ERR_INVALID);
    CHECK(comm_barrier(c) == TP_OK);

    /* One rank: only the scale applies, on the host and on the device. */
    fake_device fdev;
    memset(&fdev, 0, sizeof fdev);
    tp_backend fake = { &fake_device_ops, &fdev };
    tensor_set host, dev;
    CHECK(make_set(&host, NULL, TP_DEVICE_HOST, 0) == 0);
    CHECK(make_set(&dev, NULL, TP_DEVICE_DEVICE, 0) == 0);
    CHECK(comm_allreduce_tensors(c, &fake, host.p, N_TENSORS, 0.5) == TP_OK);
    CHECK(comm_allreduce_tensors(c, &fake, dev.p, N_TENSORS, 0.5) == TP_OK);
    double max_diff = 0.0;
    for (int k = 0; k < N_TENSORS; k++)
        for (int64_t i = 0; i < tensor_sizes[k]; i++) {
            float want = contribution(0, k, i) * 0.5f;
            max_diff = fmax(max_diff, fabs(((float *)host.t[k].data)[i] - want));
            max_diff = fmax(max_diff, fabs(((float *)dev.t[k].data)[i] - want));
        }
    printf("single: scale 0.5: max difference %g; %d device scales\n", max_diff, fdev.scales);
    CHECK(max_diff == 0.0);
    CHECK(fdev.scales == N_TENSORS - 1 && fdev.copies_to_host == 0); /* not the empty one */
    CHECK(comm_allreduce_tensors(c, &fake, dev.p, N_TENSORS, 1.0) == TP_OK);
    CHECK(fdev.scales == N_TENSORS - 1); /* scale 1: untouched */
    CHECK(comm_allreduce_tensors(c, NULL, dev.p, N_TENSORS, 1.0) == TP_ERR_INVALID);

    /* The reducer of one rank only scales, in finish. */
    comm_reducer *r = NULL;
    comm_reducer_stats rs;
    refill_set(&host, 0);
    CHECK(comm_reducer_create(c, &fake, host.p, N_TENSORS, 0.25, 1, &r) == TP_OK && r);
    comm_reducer_get_stats(r, &rs);
    CHECK(rs.mode && !strcmp(rs.mode, "none") && rs.buckets == 0);
    CHECK(comm_reducer_ready(r, 0) == TP_OK);
    CHECK(comm_reducer_finish(r) == TP_OK);
    max_diff = 0.0;
    for (int k = 0; k < N_TENSORS; k++)
        for (int64_t i = 0; i < tensor_sizes[k]; i++)
            max_diff = fmax(max_diff, fabs(((float *)host.t[k].data)[i] -
                                           contribution(0, k, i) * 0.25f));
    printf("single: reducer, scale 0.25: max difference %g\n", max_diff);
    CHECK(max_diff == 0.0);
    comm_reducer_free(r);
    comm_reducer_free(NULL);
    CHECK(comm_reducer_create(c, &fake, host.p, N_TENSORS, NAN, 1, &r) == TP_ERR_INVALID);
    free_set(&host, NULL);
    free_set(&dev, NULL);
    comm_free(c);
    comm_free(NULL);
    if (!check_failures)
        printf("single: all comm checks passed\n");
    return CHECK_EXIT();
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return run_single();
    const char *mode = argv[1];
    if (!strcmp(mode, "features")) {
        printf("mpi=%s\n", comm_have_mpi() ? "yes" : "no");
        return 0;
    }
    if (!strcmp(mode, "launch")) {
        if (argc != 4) {
            fprintf(stderr, "usage: %s launch N MODE\n", argv[0]);
            return 2;
        }
        int n = atoi(argv[2]);
        if (comm_launch_wanted(n))
            return comm_launch_run(n, argv);
        mode = argv[3]; /* a launched copy */
    }
    if (!strcmp(mode, "basic"))
        return run_basic();
    if (!strcmp(mode, "abort") || !strcmp(mode, "die") || !strcmp(mode, "hang") ||
        !strcmp(mode, "hang_bucket"))
        return run_failure(mode);
    fprintf(stderr, "%s: unknown mode '%s'\n", argv[0], mode);
    return 2;
}
