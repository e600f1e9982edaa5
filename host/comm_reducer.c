/* Gradient reduction overlapped with backward (comm.h, "comm_reducer"): buckets over the
 * order in which backward finishes the gradients, started as soon as they are complete, on
 * the communication thread (host memory) or on NCCL's stream (device memory). */
#include "config.h"

#include "comm.h"
#include "comm_transport.h"
#include "comm_worker.h"
#include "services.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* PyTorch's DistributedDataParallel caps its first bucket at 1 MB for the same reason: the
 * last layers' gradients are ready first, and their sum should start at once. */
#define FIRST_BUCKET_FLOATS ((size_t)(1024 * 1024 / sizeof(float)))

typedef enum reducer_mode {
    MODE_NONE = 0,        /* one rank: finish only scales */
    MODE_AFTER = 1,       /* everything in finish, through comm_allreduce_tensors() */
    MODE_THREAD = 2,      /* host memory: buckets go to the communication thread */
    MODE_NCCL = 3         /* device memory: buckets go to NCCL's stream */
} reducer_mode;

static const char *const mode_names[] = {
    [MODE_NONE] = "none", [MODE_AFTER] = "after backward",
    [MODE_THREAD] = "overlapped (thread)", [MODE_NCCL] = "overlapped (NCCL)",
};

typedef struct bucket {
    comm_reducer *r;
    size_t first, last; /* tensors [first, last) of the create list */
    size_t floats;
    size_t waiting;     /* tensors of this bucket not yet ready this round */
    float *flat;        /* MODE_THREAD with several tensors: their packed copy */
    int posted;         /* MODE_THREAD: job posted and not yet waited for */
    comm_job job;
} bucket;

struct comm_reducer {
    comm *c;
    tp_backend backend;
    tp_backend_info info;
    tp_tensor **tensors;
    size_t n;
    double scale;
    reducer_mode mode;
    bucket *buckets;
    size_t n_buckets;
    size_t *bucket_of;      /* per tensor */
    unsigned char *ready;   /* per tensor, this round */
    size_t launched;        /* buckets [0, launched) started this round (always in order) */
    void *compute_stream;   /* MODE_NCCL: the backend's compute stream */
    comm_reducer_stats stats;
};

/* ---------------------------------------------------------------- MODE_THREAD */

/* Runs on the communication thread: the bucket's tensors are final and nothing touches them
 * until finish() has waited for this job. */
static tp_status reduce_host_bucket(void *arg)
{
    bucket *b = arg;
    comm_reducer *r = b->r;
    comm *c = r->c;
    tp_status st;
    float *data = b->flat ? b->flat : r->tensors[b->first]->data;
    if (b->flat) {
        size_t off = 0;
        for (size_t i = b->first; i < b->last; i++) {
            size_t cnt = (size_t)tp_tensor_count(r->tensors[i]);
            if (cnt) /* an empty tensor has no data pointer */
                memcpy(b->flat + off, r->tensors[i]->data, cnt * sizeof(float));
            off += cnt;
        }
    }
    if ((st = c->t.ops->allreduce(c->t.self, data, b->floats, COMM_F32,
                                  "allreduce (gradients)")))
        return st;
    /* The same float multiply as comm_allreduce_tensors(), so the results agree bit for
     * bit. */
    float s = (float)r->scale;
    if (r->scale != 1.0)
        for (size_t k = 0; k < b->floats; k++)
            data[k] *= s;
    if (b->flat) {
        size_t off = 0;
        for (size_t i = b->first; i < b->last; i++) {
            size_t cnt = (size_t)tp_tensor_count(r->tensors[i]);
            if (cnt)
                memcpy(r->tensors[i]->data, b->flat + off, cnt * sizeof(float));
            off += cnt;
        }
    }
    return TP_OK;
}

/* ---------------------------------------------------------------- starting buckets */

static tp_status start_bucket(comm_reducer *r, bucket *b)
{
    tp_status st;
    if (b->floats == 0)
        return TP_OK;
    if (r->mode == MODE_THREAD) {
        /* An asynchronous backend may still be writing the gradients (backend-cpu is not). */
        if (r->backend.ops->sync && (st = r->backend.ops->sync(r->backend.self)))
            return services_fail(st, "gradient reduction: backend sync failed: %s",
                                 services_last_error());
        memset(&b->job, 0, sizeof b->job);
        b->job.run = reduce_host_bucket;
        b->job.arg = b;
        comm_worker_post(r->c->worker, &b->job);
        b->posted = 1;
        return TP_OK;
    }
#ifdef TP_HAVE_NCCL
    if (r->mode == MODE_NCCL)
        return comm_nccl_enqueue(r->c->nccl, r->compute_stream, r->tensors + b->first,
                                 b->last - b->first);
#endif
    return TP_OK;
}

/* Starts every complete bucket after the ones already started, in order, so all ranks
 * issue the same sequence whatever order their tensors became ready in. */
static tp_status start_complete_buckets(comm_reducer *r)
{
    tp_status st;
    while (r->launched < r->n_buckets && r->buckets[r->launched].waiting == 0) {
        if ((st = start_bucket(r, &r->buckets[r->launched])))
            return st;
        r->launched++;
    }
    return TP_OK;
}

/* Waits for every posted job; returns the first failure. */
static tp_status wait_posted(comm_reducer *r)
{
    tp_status first = TP_OK;
    for (size_t k = 0; k < r->n_buckets; k++) {
        bucket *b = &r->buckets[k];
        if (!b->posted)
            continue;
        tp_status st = comm_worker_wait(r->c->worker, &b->job);
        b->posted = 0;
        if (st && !first)
            first = st;
    }
    return first;
}

static void new_round(comm_reducer *r)
{
    memset(r->ready, 0, r->n ? r->n : 1);
    for (size_t k = 0; k < r->n_buckets; k++)
        r->buckets[k].waiting = r->buckets[k].last - r->buckets[k].first;
    r->launched = 0;
}

/* ---------------------------------------------------------------- the API */

tp_status comm_reducer_ready(comm_reducer *r, size_t index)
{
    if (!r || index >= r->n)
        return services_fail(TP_ERR_INVALID, "comm_reducer_ready: tensor %zu of %zu", index,
                             r ? r->n : 0);
    if (r->ready[index])
        return services_fail(TP_ERR_INVALID,
                             "comm_reducer_ready: tensor %zu reported twice in one round",
                             index);
    r->ready[index] = 1;
    if (r->mode != MODE_THREAD && r->mode != MODE_NCCL)
        return TP_OK;
    bucket *b = &r->buckets[r->bucket_of[index]];
    b->waiting--;
    return b->waiting == 0 ? start_complete_buckets(r) : TP_OK;
}

tp_status comm_reducer_finish(comm_reducer *r)
{
    tp_status st = TP_OK;
    if (!r)
        return services_fail(TP_ERR_INVALID, "comm_reducer_finish: NULL reducer");
    double start = comm_now();
    switch (r->mode) {
    case MODE_NONE: /* one rank: only a scale other than 1 has anything to do */
        if (r->scale != 1.0)
            st = comm_allreduce_tensors(r->c, &r->backend, r->tensors, r->n, r->scale);
        break;
    case MODE_AFTER:
        st = comm_allreduce_tensors(r->c, &r->backend, r->tensors, r->n, r->scale);
        break;
    case MODE_THREAD:
    case MODE_NCCL:
        for (size_t k = r->launched; k < r->n_buckets; k++)
            r->buckets[k].waiting = 0;
        st = start_complete_buckets(r);
        if (r->mode == MODE_THREAD) {
            tp_status wst = wait_posted(r); /* even after a failure: jobs use the buckets */
            if (!st)
                st = wst;
        }
#ifdef TP_HAVE_NCCL
        if (r->mode == MODE_NCCL && !st && !(st = comm_nccl_wait(r->c->nccl, &r->c->t)))
            st = comm_scale_tensors(&r->backend, &r->info, r->tensors, r->n, r->scale);
#endif
        break;
    }
    r->stats.wait_seconds += comm_now() - start;
    if (r->mode == MODE_THREAD)
        r->stats.thread_seconds = comm_worker_busy_seconds(r->c->worker);
    if (!st)
        r->stats.rounds++;
    new_round(r);
    return st;
}

void comm_reducer_get_stats(const comm_reducer *r, comm_reducer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    *out = r->stats;
    if (r->mode == MODE_THREAD)
        for (size_t k = 0; k < r->n_buckets; k++)
            out->completed += r->buckets[k].posted &&
                              comm_worker_job_done(r->c->worker, &r->buckets[k].job);
}

void comm_reducer_free(comm_reducer *r)
{
    if (!r)
        return;
    if (r->mode == MODE_THREAD)
        (void)wait_posted(r);
#ifdef TP_HAVE_NCCL
    if (r->mode == MODE_NCCL && r->launched > 0)
        (void)comm_nccl_wait(r->c->nccl, &r->c->t);
#endif
    for (size_t k = 0; k < r->n_buckets; k++)
        free(r->buckets[k].flat);
    free(r->buckets);
    free(r->bucket_of);
    free(r->ready);
    free(r->tensors);
    free(r);
}

/* Buckets of whole neighbouring tensors: the first up to 1 MB, the others up to the comm's
 * bucket size; a tensor larger than that is a bucket of its own. */
static tp_status make_buckets(comm_reducer *r)
{
    size_t target = r->c->bucket_target;
    r->buckets = calloc(r->n ? r->n : 1, sizeof *r->buckets);
    r->bucket_of = calloc(r->n ? r->n : 1, sizeof *r->bucket_of);
    r->ready = calloc(r->n ? r->n : 1, 1);
    if (!r->buckets || !r->bucket_of || !r->ready)
        return services_fail(TP_ERR_NOMEM, "gradient reduction: out of memory");
    size_t i = 0;
    while (i < r->n) {
        size_t limit = r->n_buckets == 0 && FIRST_BUCKET_FLOATS < target ? FIRST_BUCKET_FLOATS
                                                                         : target;
        bucket *b = &r->buckets[r->n_buckets];
        b->r = r;
        b->first = i;
        while (i < r->n) {
            size_t cnt = (size_t)tp_tensor_count(r->tensors[i]);
            if (i > b->first && b->floats + cnt > limit)
                break;
            b->floats += cnt;
            r->bucket_of[i] = r->n_buckets;
            i++;
        }
        b->last = i;
        if (r->mode == MODE_THREAD && b->last - b->first > 1 && b->floats > 0 &&
            !(b->flat = malloc(b->floats * sizeof(float))))
            return services_fail(TP_ERR_NOMEM, "gradient reduction: cannot allocate a "
                                               "%zu-byte bucket", b->floats * sizeof(float));
        r->n_buckets++;
    }
    r->stats.buckets = r->n_buckets;
    new_round(r);
    return TP_OK;
}

/* The mode this rank can offer; then every rank must agree (see comm_reducer_create). */
static reducer_mode local_mode(comm_reducer *r, int overlap, size_t on_device)
{
    comm *c = r->c;
    if (r->n == 0 || (c->t.size <= 1 && c->nccl_state != NCCL_READY))
        return MODE_NONE;
    if (!overlap)
        return MODE_AFTER;
    if (on_device > 0) {
#ifdef TP_HAVE_NCCL
        if (c->nccl_state == NCCL_READY && on_device == r->n && r->backend.ops->native_stream &&
            (r->compute_stream = r->backend.ops->native_stream(r->backend.self,
                                                               TP_STREAM_COMPUTE)))
            return MODE_NCCL;
#endif
        return MODE_AFTER; /* staged through the host: nothing to overlap with */
    }
    return c->t.ops && c->t.threads_ok ? MODE_THREAD : MODE_AFTER;
}

tp_status comm_reducer_create(comm *c, const tp_backend *backend, tp_tensor *const *tensors,
                              size_t n, double scale, int overlap, comm_reducer **out)
{
    tp_status st;
    if (!out)
        return services_fail(TP_ERR_INVALID, "comm_reducer_create: out is NULL");
    *out = NULL;
    if (!c)
        return services_fail(TP_ERR_INVALID, "comm_reducer_create: NULL comm");
    tp_backend_info info;
    size_t on_device;
    if ((st = comm_check_tensors("comm_reducer_create", backend, tensors, n, scale, &info,
                                 &on_device)) ||
        (st = comm_decide_nccl(c, on_device > 0, &info)))
        return st;

    comm_reducer *r = calloc(1, sizeof *r);
    if (!r)
        return services_fail(TP_ERR_NOMEM, "gradient reduction: out of memory");
    r->c = c;
    r->backend = *backend;
    r->info = info;
    r->n = n;
    r->scale = scale;
    if (!(r->tensors = malloc((n ? n : 1) * sizeof *r->tensors))) {
        free(r);
        return services_fail(TP_ERR_NOMEM, "gradient reduction: out of memory");
    }
    if (n)
        memcpy(r->tensors, tensors, n * sizeof *tensors);

    /* Overlap only when every rank can: a rank reducing after backward issues different
     * transport calls than one reducing in buckets, and the job would hang. */
    reducer_mode mode = local_mode(r, overlap, on_device);
    if (mode != MODE_NONE && c->t.ops && c->t.size > 1) {
        double can = mode == MODE_THREAD || mode == MODE_NCCL ? 1.0 : 0.0;
        if ((st = comm_run_allreduce(c, &can, 1, COMM_F64, "allreduce (setup)")))
            goto fail;
        if (can < (double)c->t.size)
            mode = MODE_AFTER;
    }
    /* threads_ok was part of the vote: what can fail here is local (no thread). */
    if (mode == MODE_THREAD && (st = comm_start_worker(c)))
        goto fail;
    r->mode = mode;
    r->stats.mode = mode_names[mode];
    if ((st = make_buckets(r)))
        goto fail;
    if (mode == MODE_NONE || mode == MODE_AFTER)
        r->stats.buckets = 0; /* comm_allreduce_tensors() groups them its own way */
    *out = r;
    return TP_OK;
fail:
    comm_reducer_free(r);
    return st;
}
