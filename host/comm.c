/* The communication layer's front end (see comm.h): picks the transport, buckets and stages
 * tensors for it, hands device tensors to NCCL, and implements the single-process comm. */
#include "config.h"

#include "comm.h"
#include "comm_transport.h"
#include "comm_worker.h"
#include "services.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMM_DEFAULT_BUCKET_MB 16.0

double comm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

comm_env comm_detect_env(void)
{
    const char *force = getenv("TRAINPIPE_COMM");
    if (force && *force) {
        if (!strcmp(force, "mpi"))
            return COMM_ENV_MPI;
        if (!strcmp(force, "local"))
            return COMM_ENV_LOCAL;
        if (!strcmp(force, "single"))
            return COMM_ENV_SINGLE;
    }
    if (getenv("TRAINPIPE_WORLD_SIZE"))
        return COMM_ENV_LOCAL;
    /* OpenMPI's mpirun, PMI-1/PMI-2 (MPICH's hydra, srun --mpi=pmi2), PMIx (srun --mpi=pmix). */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") ||
        getenv("PMI_RANK"))
        return COMM_ENV_MPI;
    return COMM_ENV_SINGLE;
}

static void print_fatal(int rank, const char *message)
{
    fflush(stdout);
    fprintf(stderr, "trainpipe: rank %d: %s\n", rank, message);
    fflush(stderr);
}

void comm_transport_fatal(const comm_transport *t, int exit_status, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    print_fatal(t ? t->rank : 0, message);
    if (exit_status == 0)
        exit_status = 1;
    if (t && t->ops)
        t->ops->abort(t->self, exit_status);
    _exit(exit_status);
}

void comm_abort(comm *c, int exit_status, const char *reason)
{
    comm_transport_fatal(c ? &c->t : NULL, exit_status, "%s",
                         reason && *reason ? reason : "failed");
}

/* TRAINPIPE_COMM_BUCKET_MB: megabytes per transport call (fractions allowed, for tests). */
static tp_status bucket_target_from_env(size_t *out)
{
    double mb = COMM_DEFAULT_BUCKET_MB;
    const char *s = getenv("TRAINPIPE_COMM_BUCKET_MB");
    if (s && *s) {
        char *end = NULL;
        errno = 0;
        mb = strtod(s, &end);
        if (errno || end == s || *end || !(mb > 0.0) || mb > 65536.0)
            return services_fail(TP_ERR_INVALID,
                                 "TRAINPIPE_COMM_BUCKET_MB='%s': expected megabytes in "
                                 "(0, 65536]", s);
    }
    double floats = mb * 1024.0 * 1024.0 / sizeof(float);
    *out = floats < 1.0 ? 1 : (size_t)floats;
    return TP_OK;
}

tp_status comm_create(double timeout_seconds, comm **out)
{
    tp_status st;
    if (!out)
        return services_fail(TP_ERR_INVALID, "comm_create: out is NULL");
    *out = NULL;
    if (!(timeout_seconds >= 0.0) || !isfinite(timeout_seconds))
        return services_fail(TP_ERR_INVALID,
                             "comm_create: timeout %g s: expected 0 (default) or more",
                             timeout_seconds);
    const char *force = getenv("TRAINPIPE_COMM");
    if (force && *force && strcmp(force, "mpi") && strcmp(force, "local") &&
        strcmp(force, "single"))
        return services_fail(TP_ERR_INVALID,
                             "TRAINPIPE_COMM='%s': expected mpi, local or single", force);

    comm *c = calloc(1, sizeof *c);
    if (!c)
        return services_fail(TP_ERR_NOMEM, "comm_create: out of memory");
    c->t.size = 1;
    c->t.timeout = timeout_seconds > 0.0 ? timeout_seconds : COMM_DEFAULT_TIMEOUT;
    c->name = "single";
    if ((st = bucket_target_from_env(&c->bucket_target)))
        goto fail;

    switch (comm_detect_env()) {
    case COMM_ENV_SINGLE:
        break;
    case COMM_ENV_LOCAL:
        if ((st = comm_star_open(c->t.timeout, &c->t)))
            goto fail;
        c->name = "local";
        break;
    case COMM_ENV_MPI:
#ifdef TP_HAVE_MPI
        if ((st = comm_mpi_open(c->t.timeout, &c->t)))
            goto fail;
        c->name = "mpi";
#else
    {
        const char *n = getenv("OMPI_COMM_WORLD_SIZE");
        if (!n)
            n = getenv("PMI_SIZE");
        if (!n || strcmp(n, "1")) {
            st = services_fail(TP_ERR_UNSUPPORTED,
                               "started as one of %s MPI ranks, but this trainpipe was built "
                               "without MPI: install libopenmpi-dev and re-run configure "
                               "(or set TRAINPIPE_COMM=single)",
                               n ? n : "several");
            goto fail;
        }
    }
#endif
        break;
    }
    *out = c;
    return TP_OK;
fail:
    free(c);
    return st;
}

int comm_have_mpi(void)
{
#ifdef TP_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int comm_rank(const comm *c) { return c ? c->t.rank : 0; }
int comm_size(const comm *c) { return c ? c->t.size : 1; }
int comm_local_rank(const comm *c) { return c ? c->t.local_rank : 0; }
const char *comm_transport_name(const comm *c) { return c ? c->name : "single"; }

/* ---------------------------------------------------------------- collectives, routed */

/* A transport call packed for the communication thread. */
typedef struct transport_call {
    comm *c;
    enum { CALL_ALLREDUCE, CALL_BROADCAST, CALL_BARRIER } kind;
    void *data;
    size_t count;
    comm_dtype dtype;
    int root;
    const char *what;
} transport_call;

static tp_status run_call(void *arg)
{
    transport_call *a = arg;
    comm_transport *t = &a->c->t;
    switch (a->kind) {
    case CALL_ALLREDUCE: return t->ops->allreduce(t->self, a->data, a->count, a->dtype, a->what);
    case CALL_BROADCAST: return t->ops->broadcast(t->self, a->data, a->count, a->root);
    case CALL_BARRIER: return t->ops->barrier(t->self);
    }
    return TP_ERR_INVALID;
}

static tp_status route(transport_call *a)
{
    return a->c->worker ? comm_worker_call(a->c->worker, run_call, a) : run_call(a);
}

tp_status comm_run_allreduce(comm *c, void *data, size_t count, comm_dtype dtype,
                             const char *what)
{
    transport_call a = { c, CALL_ALLREDUCE, data, count, dtype, 0, what };
    return route(&a);
}

tp_status comm_run_broadcast(comm *c, void *bytes, size_t n, int root)
{
    transport_call a = { c, CALL_BROADCAST, bytes, n, COMM_F32, root, "broadcast" };
    return route(&a);
}

tp_status comm_run_barrier(comm *c)
{
    transport_call a = { c, CALL_BARRIER, NULL, 0, COMM_F32, 0, "barrier" };
    return route(&a);
}

tp_status comm_start_worker(comm *c)
{
    if (c->worker)
        return TP_OK;
    if (!c->t.ops || !c->t.threads_ok)
        return services_fail(TP_ERR_UNSUPPORTED, "comm: the %s transport cannot run collectives "
                             "on a communication thread", c->name);
    return comm_worker_start(&c->worker);
}

/* ---------------------------------------------------------------- tensors */

int comm_tensor_on_device(const tp_tensor *t, const tp_backend_info *info)
{
    return info->has_device_memory && t->device == TP_DEVICE_DEVICE;
}

static tp_status backend_sync(const tp_backend *backend)
{
    if (!backend->ops->sync)
        return TP_OK;
    tp_status st = backend->ops->sync(backend->self);
    if (st)
        return services_fail(st, "comm_allreduce_tensors: backend sync failed: %s",
                             services_last_error());
    return TP_OK;
}

/* Multiplies one tensor by `scale` where it lives. */
static tp_status scale_tensor(const tp_backend *backend, const tp_backend_info *info,
                              tp_tensor *t, double scale, size_t index)
{
    if (tp_tensor_count(t) == 0)
        return TP_OK;
    if (comm_tensor_on_device(t, info)) {
        if (!backend->ops->scale)
            return services_fail(TP_ERR_UNSUPPORTED,
                                 "comm_allreduce_tensors: backend '%s' has no scale operation",
                                 info->name ? info->name : "?");
        tp_status st = backend->ops->scale(backend->self, scale, t);
        if (st)
            return services_fail(st, "comm_allreduce_tensors: scaling tensor %zu: %s", index,
                                 services_last_error());
        return TP_OK;
    }
    float *p = t->data;
    float s = (float)scale;
    for (int64_t k = 0, m = tp_tensor_count(t); k < m; k++)
        p[k] *= s;
    return TP_OK;
}

tp_status comm_scale_tensors(const tp_backend *backend, const tp_backend_info *info,
                             tp_tensor *const *tensors, size_t n, double scale)
{
    tp_status st;
    for (size_t i = 0; i < n && scale != 1.0; i++)
        if ((st = scale_tensor(backend, info, tensors[i], scale, i)))
            return st;
    return TP_OK;
}

tp_status comm_check_tensors(const char *who, const tp_backend *backend,
                             tp_tensor *const *tensors, size_t n, double scale,
                             tp_backend_info *info, size_t *on_device)
{
    tp_status st;
    if (!backend || !backend->ops || (n && !tensors))
        return services_fail(TP_ERR_INVALID, "%s: NULL argument", who);
    if (!isfinite(scale))
        return services_fail(TP_ERR_INVALID, "%s: scale %g", who, scale);
    for (size_t i = 0; i < n; i++) {
        if (!tensors[i] || (!tensors[i]->data && tp_tensor_count(tensors[i]) > 0))
            return services_fail(TP_ERR_INVALID, "%s: tensor %zu has no data", who, i);
        if (tensors[i]->dtype != TP_DTYPE_F32)
            return services_fail(TP_ERR_UNSUPPORTED,
                                 "%s: tensor %zu is %s; only f32 tensors are reduced", who, i,
                                 tp_dtype_name(tensors[i]->dtype));
    }
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
    if ((st = backend->ops->info(backend->self, info)))
        return st;
    *on_device = 0;
    for (size_t i = 0; i < n; i++)
        *on_device += (size_t)comm_tensor_on_device(tensors[i], info);
    return TP_OK;
}

static tp_status ensure_bucket(comm *c, size_t count)
{
    if (count <= c->bucket_count)
        return TP_OK;
    float *b = realloc(c->bucket, count * sizeof(float));
    if (!b)
        return services_fail(TP_ERR_NOMEM,
                             "comm_allreduce_tensors: cannot allocate a %zu-byte bucket",
                             count * sizeof(float));
    c->bucket = b;
    c->bucket_count = count;
    return TP_OK;
}

/* Copies between a device tensor and its host image at `host` (same shape and layout). */
static tp_status stage_copy(const tp_backend *backend, tp_tensor *t, float *host, int to_host,
                            size_t index)
{
    tp_tensor view = *t;
    view.device = TP_DEVICE_HOST;
    view.data = host;
    tp_status st = to_host ? backend->ops->copy(backend->self, &view, t, TP_STREAM_COMPUTE)
                           : backend->ops->copy(backend->self, t, &view, TP_STREAM_COMPUTE);
    if (st)
        return services_fail(st, "comm_allreduce_tensors: copying tensor %zu %s the host: %s",
                             index, to_host ? "to" : "from", services_last_error());
    return TP_OK;
}

/* Reduces tensors [first, last) as one transport call. */
static tp_status reduce_group(comm *c, const tp_backend *backend, const tp_backend_info *info,
                              tp_tensor *const *tensors, size_t first, size_t last, size_t total,
                              double scale)
{
    tp_status st;
    /* One host tensor alone: reduce it where it is. */
    if (last == first + 1 && !comm_tensor_on_device(tensors[first], info)) {
        if ((st = comm_run_allreduce(c, tensors[first]->data, total, COMM_F32, "allreduce")))
            return st;
        return scale == 1.0 ? TP_OK : scale_tensor(backend, info, tensors[first], scale, first);
    }
    if ((st = ensure_bucket(c, total)))
        return st;
    int staged = 0;
    size_t off = 0;
    for (size_t i = first; i < last; i++) {
        size_t cnt = (size_t)tp_tensor_count(tensors[i]);
        if (!cnt)
            continue;
        if (comm_tensor_on_device(tensors[i], info)) {
            if ((st = stage_copy(backend, tensors[i], c->bucket + off, 1, i)))
                return st;
            staged = 1;
        } else {
            memcpy(c->bucket + off, tensors[i]->data, cnt * sizeof(float));
        }
        off += cnt;
    }
    if (staged && (st = backend_sync(backend)))
        return st;
    if ((st = comm_run_allreduce(c, c->bucket, total, COMM_F32, "allreduce")))
        return st;
    if (scale != 1.0) {
        float s = (float)scale;
        for (size_t k = 0; k < total; k++)
            c->bucket[k] *= s;
    }
    off = 0;
    for (size_t i = first; i < last; i++) {
        size_t cnt = (size_t)tp_tensor_count(tensors[i]);
        if (!cnt)
            continue;
        if (comm_tensor_on_device(tensors[i], info)) {
            if ((st = stage_copy(backend, tensors[i], c->bucket + off, 0, i)))
                return st;
        } else {
            memcpy(tensors[i]->data, c->bucket + off, cnt * sizeof(float));
        }
        off += cnt;
    }
    /* The copies back read the bucket: finish them before the next group reuses it. */
    return staged ? backend_sync(backend) : TP_OK;
}

static int multi_rank(const comm *c)
{
    return c->t.ops && c->t.size > 1;
}

/* TRAINPIPE_COMM_NCCL: "0" never uses NCCL; "1" uses it even for one rank (to test the NCCL
 * path on one GPU); unset: NCCL for device gradients when there are several ranks. */
static int nccl_setting(void)
{
    const char *s = getenv("TRAINPIPE_COMM_NCCL");
    if (s && !strcmp(s, "0"))
        return 0;
    if (s && !strcmp(s, "1"))
        return 2;
    return 1;
}

/* Every rank says whether its gradients are in device memory and whether it can run NCCL
 * on them (backend-cuda, libraries present); NCCL is used only when all can. Runs before
 * the communication thread exists, or on it (comm_nccl_init broadcasts NCCL's id). */
static tp_status decide_nccl_now(comm *c, int device_tensors, const tp_backend_info *info)
{
    tp_status st;
    int nccl_ok = 0;
#ifdef TP_HAVE_NCCL
    if (device_tensors && info->name && !strcmp(info->name, "cuda") && nccl_setting() &&
        comm_nccl_load(&c->nccl) == TP_OK)
        nccl_ok = 1;
#else
    (void)info;
#endif
    double votes[2] = { device_tensors ? 1.0 : 0.0, nccl_ok ? 1.0 : 0.0 };
    if (multi_rank(c) &&
        (st = c->t.ops->allreduce(c->t.self, votes, 2, COMM_F64, "allreduce (setup)")))
        return st;
    int on_device = (int)votes[0], with_nccl = (int)votes[1];
    c->nccl_state = NCCL_OFF;
    if (on_device != 0 && on_device != c->t.size)
        return services_fail(TP_ERR_INVALID,
                             "comm_allreduce_tensors: %d of %d ranks hold their gradients in "
                             "device memory: every rank must use the same backend",
                             on_device, c->t.size);
#ifdef TP_HAVE_NCCL
    if (on_device == c->t.size && with_nccl == c->t.size) {
        if ((st = comm_nccl_init(c->nccl, &c->t)))
            return st;
        c->nccl_state = NCCL_READY;
    } else if (c->nccl) {
        comm_nccl_free(c->nccl);
        c->nccl = NULL;
    }
#else
    (void)with_nccl;
#endif
    if (device_tensors && c->nccl_state != NCCL_READY && nccl_setting() == 2)
        services_host()->log(services_host(), TP_LOG_WARN, "comm",
                             "TRAINPIPE_COMM_NCCL=1, but NCCL is not usable%s: device "
                             "gradients go through the host",
#ifdef TP_HAVE_NCCL
                             " (it needs backend-cuda and libnccl.so.2 on every rank)"
#else
                             " (this build has no NCCL)"
#endif
        );
    return TP_OK;
}

typedef struct decide_call {
    comm *c;
    int device_tensors;
    const tp_backend_info *info;
} decide_call;

static tp_status run_decide(void *arg)
{
    decide_call *a = arg;
    return decide_nccl_now(a->c, a->device_tensors, a->info);
}

tp_status comm_decide_nccl(comm *c, int device_tensors, const tp_backend_info *info)
{
    /* One rank needs no traffic, unless TRAINPIPE_COMM_NCCL=1 asks to exercise NCCL. */
    if (c->nccl_state != NCCL_UNDECIDED ||
        (!multi_rank(c) && !(device_tensors && nccl_setting() == 2)))
        return TP_OK;
    decide_call a = { c, device_tensors, info };
    return c->worker ? comm_worker_call(c->worker, run_decide, &a) : run_decide(&a);
}

tp_status comm_allreduce_tensors(comm *c, const tp_backend *backend, tp_tensor *const *tensors,
                                 size_t n, double scale)
{
    tp_status st;
    if (!c)
        return services_fail(TP_ERR_INVALID, "comm_allreduce_tensors: NULL comm");
    tp_backend_info info;
    size_t on_device;
    if ((st = comm_check_tensors("comm_allreduce_tensors", backend, tensors, n, scale, &info,
                                 &on_device)))
        return st;
    int device_tensors = on_device > 0;
    if (device_tensors && !backend->ops->copy)
        return services_fail(TP_ERR_UNSUPPORTED,
                             "comm_allreduce_tensors: backend '%s' has no copy operation",
                             info.name ? info.name : "?");

    /* Backward may still be running on the backend's streams. */
    if ((st = backend_sync(backend)))
        return st;
    int single = !multi_rank(c);
    if ((st = comm_decide_nccl(c, device_tensors, &info)))
        return st;
#ifdef TP_HAVE_NCCL
    if (c->nccl_state == NCCL_READY && on_device == n && n > 0)
        return (st = comm_nccl_allreduce(c->nccl, &c->t, tensors, n))
                   ? st
                   : comm_scale_tensors(backend, &info, tensors, n, scale);
#endif
    if (single)
        return comm_scale_tensors(backend, &info, tensors, n, scale);

    /* Groups of whole tensors of about bucket_target floats, one transport call each. */
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0;
        while (j < n) {
            size_t cnt = (size_t)tp_tensor_count(tensors[j]);
            if (j > i && total + cnt > c->bucket_target)
                break;
            total += cnt;
            j++;
        }
        if (total && (st = reduce_group(c, backend, &info, tensors, i, j, total, scale)))
            return st;
        i = j;
    }
    return TP_OK;
}

tp_status comm_allreduce_host(comm *c, double *values, size_t n)
{
    if (!c || (n && !values))
        return services_fail(TP_ERR_INVALID, "comm_allreduce_host: NULL argument");
    if (c->t.size == 1 || !c->t.ops || n == 0)
        return TP_OK;
    return comm_run_allreduce(c, values, n, COMM_F64, "allreduce_host");
}

tp_status comm_broadcast_host(comm *c, void *bytes, size_t n, int root)
{
    if (!c || (n && !bytes))
        return services_fail(TP_ERR_INVALID, "comm_broadcast_host: NULL argument");
    if (root < 0 || root >= c->t.size)
        return services_fail(TP_ERR_INVALID, "comm_broadcast_host: root %d: expected 0..%d",
                             root, c->t.size - 1);
    if (c->t.size == 1 || !c->t.ops)
        return TP_OK;
    return comm_run_broadcast(c, bytes, n, root);
}

tp_status comm_barrier(comm *c)
{
    if (!c)
        return services_fail(TP_ERR_INVALID, "comm_barrier: NULL comm");
    if (c->t.size == 1 || !c->t.ops)
        return TP_OK;
    return comm_run_barrier(c);
}

void comm_free(comm *c)
{
    if (!c)
        return;
    comm_worker_stop(c->worker); /* after what is queued: a peer may wait for it */
#ifdef TP_HAVE_NCCL
    if (c->nccl)
        comm_nccl_free(c->nccl);
#endif
    if (c->t.ops)
        c->t.ops->destroy(c->t.self);
    free(c->bucket);
    free(c);
}
