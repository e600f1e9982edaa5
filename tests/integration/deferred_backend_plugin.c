/* The test backend "deferred" (deferred-backend.la, used by test-deferred.tap): backend-cpu
 * behind a GPU's execution model, so the CPU tests reach the code that otherwise only runs
 * against backend-cuda.
 *
 *   - It reports device memory (has_device_memory = 1): the ring copies every batch from
 *     pinned memory on the copy stream and runs the device augmenters on the compute stream,
 *     and the trainer reads its losses back through pinned slots, as with backend-cuda.
 *   - mode = lazy: nothing runs when it is queued. Each stream is a queue; a queued call runs
 *     only when the host waits for it (event_sync, sync, or a free, which waits for
 *     everything as cudaFree does) or when a call on the other stream waits on an event
 *     behind it. A caller that reads a result before waiting for it, overwrites memory a
 *     queued call has yet to read, or leaves out a stream_wait between the two streams gets
 *     different numbers here, where backend-cpu (everything done before the call returns)
 *     hides the mistake. mode = eager runs each call as it is queued: the same arithmetic
 *     in the same order, the reference a lazy run must match bit for bit. mode = copy_ahead
 *     runs the copy stream as it is queued (its waits included) and the compute stream
 *     lazily: a copy that overwrites a buffer before the compute stream is done with it (a
 *     missing wait on the copy stream) shows there. mode = random runs a few queued calls
 *     of either stream, drawn from `seed`, after each new one: orders between the two.
 *   - fence = true (lazy and copy_ahead): device memory is mapped PROT_NONE except while
 *     queued calls run, so host code that reads or writes it directly (which on a GPU reads
 *     garbage or faults) crashes at that line instead of passing unnoticed.
 *   - It records (capture_begin .. capture_end) and replays like a CUDA graph, with the
 *     same restrictions as backend-cuda, so step capture runs on the CPU too.
 *
 * Host arrays passed by pointer (crop_flip's offsets, normalize_channels' mean and std) are
 * copied when the call is queued, as kernel arguments are. A queued call that fails makes the
 * error sticky: the next wait or call reports it. One mutex serialises everything, since the
 * loader threads wait on events and queue device augmentation while the trainer queues
 * steps. backend-cpu is loaded from the path in `cpu_plugin`. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

/* ------------------------------------------------------------------------------------- */
/* Configuration                                                                          */

typedef struct deferred_config {
    const char *cpu_plugin;
    int mode; /* deferred_mode */
    int64_t threads;
    int deterministic;
    int64_t seed;
    int fence;
    int precision; /* index into precision_names, which are backend-cpu's choices */
} deferred_config;

/* The order of the modes is deferred_mode's. */
static const char *const mode_names[] = { "lazy", "copy_ahead", "random", "eager", NULL };
static const char *const precision_names[] = { "fp32", "bf16", NULL };

typedef enum deferred_mode { MODE_LAZY, MODE_COPY_AHEAD, MODE_RANDOM, MODE_EAGER } deferred_mode;

static const tp_param_def deferred_params[] = {
    TP_PARAM_DEF_REQUIRED_PATH(deferred_config, cpu_plugin, "cpu_plugin",
                               "backend-cpu's shared object, which runs the calls"),
    TP_PARAM_DEF_ENUM(deferred_config, mode, "mode", "lazy", mode_names,
                      "lazy: a call runs only when something waits for it; copy_ahead: the "
                      "copy stream runs as it is queued, the compute stream lazily; random: "
                      "after each call, up to 3 queued calls of either stream, drawn from "
                      "`seed`; eager: every call at once"),
    TP_PARAM_DEF_INT(deferred_config, threads, "threads", "0", 0, 4096,
                     "backend-cpu's threads (0: all cores)"),
    TP_PARAM_DEF_BOOL(deferred_config, deterministic, "deterministic", "false",
                      "passed on to backend-cpu"),
    TP_PARAM_DEF_INT(deferred_config, seed, "seed", "1", 1, 1e15,
                     "mode = random: the seed of the draws"),
    TP_PARAM_DEF_BOOL(deferred_config, fence, "fence", "true",
                      "lazy and copy_ahead: device memory is inaccessible to the host except "
                      "while queued calls run, so a host read of it crashes at once"),
    TP_PARAM_DEF_ENUM(deferred_config, precision, "precision", "fp32", precision_names,
                      "passed on to backend-cpu (bf16: activations stored as bf16)"),
};

/* ------------------------------------------------------------------------------------- */
/* Queued calls                                                                           */

typedef enum call_op {
    C_MARK, C_WAIT, C_COPY, C_FILL,
    C_CONV_FWD, C_CONV_BWD_DATA, C_CONV_BWD_DATA_ADD, C_CONV_BWD_FILTER,
    C_BN_TRAIN, C_BN_INFER, C_BN_BWD, C_BN_RELU_TRAIN, C_BN_RELU_BWD, C_BN_ADD_RELU_TRAIN,
    C_RELU_FWD, C_RELU_BWD, C_ADD, C_ADD_RELU, C_POOL_FWD, C_POOL_BWD, C_GAP_FWD, C_GAP_BWD,
    C_LINEAR_FWD, C_LINEAR_BWD, C_XENT, C_TOPK, C_SUBPAD_FWD, C_SUBPAD_BWD,
    C_AXPBY, C_SCALE, C_SUM_SQUARES, C_CONVERT_U8, C_CROP_FLIP, C_STANDARDIZE, C_NORMALIZE,
    C_SGD, C_ADAM, C_SGD_DEV, C_ADAM_DEV, C_SGD_GROUP, C_ADAM_GROUP, C_CHECK_FINITE
} call_op;

static const char *const op_names[] = {
    "event mark", "stream wait", "copy", "fill",
    "conv_forward", "conv_backward_data", "conv_backward_data_add", "conv_backward_filter",
    "batchnorm_train", "batchnorm_infer", "batchnorm_backward", "batchnorm_relu_train",
    "batchnorm_relu_backward", "batchnorm_add_relu_train",
    "relu_forward", "relu_backward", "add", "add_relu", "pool_forward", "pool_backward",
    "global_avgpool_forward", "global_avgpool_backward",
    "linear_forward", "linear_backward", "softmax_xent", "topk_correct",
    "subsample_pad_forward", "subsample_pad_backward",
    "axpby", "scale", "sum_squares", "convert_u8_batch", "crop_flip", "standardize_images",
    "normalize_channels", "sgd_update", "adam_update", "sgd_update_dev", "adam_update_dev",
    "sgd_update_group_dev", "adam_update_group_dev", "check_finite_group",
};

struct tp_event {
    uint64_t recorded; /* how many times it was recorded */
    uint64_t done;     /* the latest record whose mark has run */
    tp_stream stream;  /* where the latest record sits */
};

#define CALL_TENSORS 12

/* One queued call: tensor descriptors by value (the caller may change its structs once the
 * call returns), scalars, and `extra`, a block of the call's own copies of host arrays. */
typedef struct call {
    struct call *next;
    call_op op;
    tp_stream stream;
    unsigned present; /* bit k: t[k] was given (non-NULL) */
    tp_tensor t[CALL_TENSORS];
    double s[5];
    int64_t i[3];
    tp_conv_desc conv;
    tp_bn_desc bn;
    tp_pool_desc pool;
    tp_event *ev;      /* C_MARK, C_WAIT */
    uint64_t seq;      /* C_MARK: the record it completes; C_WAIT: the record waited for */
    tp_stream other;   /* C_WAIT: the stream the record sits on */
    size_t n;          /* entries in extra */
    size_t extra_bytes;
    unsigned char *extra;
} call;

/* A grouped update's item as queued: param, grad, state[0], state[1] by value. */
typedef struct queued_item {
    tp_tensor t[4];
    unsigned present;
    double weight_decay;
} queued_item;

typedef struct call_queue {
    call *head, *tail;
} call_queue;

struct tp_recording {
    call_queue calls;
};

typedef struct deferred deferred;

/* The tp_host backend-cpu sees: forwards to the real one and keeps the last error message,
 * so an error raised while a queued call runs can be reported to whoever waits for it. */
typedef struct inner_host {
    tp_host host; /* first: backend-cpu's host pointer is this struct's address */
    deferred *owner;
} inner_host;

/* Fenced device memory: one reservation, handed out page-aligned from the bottom (freed
 * pages are returned to the system, never reused), PROT_NONE except while queued calls run,
 * so opening and closing it is one mprotect() each. */
typedef struct fenced_block {
    unsigned char *at;
    size_t bytes;
} fenced_block;

typedef struct device_fence {
    unsigned char *base; /* NULL: device memory is not fenced */
    size_t reserved, used;
    int depth; /* nested runs of queued calls */
    fenced_block *blocks;
    size_t n_blocks, cap_blocks;
} device_fence;

/* Virtual address space only (MAP_NORESERVE); pages are committed as they are touched. */
#define FENCE_RESERVE ((size_t)16 << 30)

struct deferred {
    const tp_host *host;
    inner_host inner_host;
    void *dl;
    const tp_backend_ops *in;
    void *in_self;
    void (*in_destroy)(void *);
    deferred_mode mode;
    uint64_t random_state; /* mode = random: xorshift64 */
    device_fence fence;

    pthread_mutex_t lock;
    pthread_cond_t capture_cond;
    call_queue queue[2]; /* TP_STREAM_COMPUTE, TP_STREAM_COPY */
    size_t queued;

    tp_status failed; /* sticky: the first queued call that failed */
    char failure[1024];
    char last_message[512];

    int capturing, capture_spoiled;
    pthread_t capture_owner;
    call_queue recorded;
};

/* A lazy queue this long is run anyway, so a caller that never waits cannot exhaust memory. */
#define QUEUE_LIMIT 50000

#define IN d->in
#define INS d->in_self

static void queue_push(call_queue *q, call *c)
{
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

static call *queue_pop(call_queue *q)
{
    call *c = q->head;
    if (c) {
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
    }
    return c;
}

static void call_free(call *c)
{
    if (c) {
        free(c->extra);
        free(c);
    }
}

static void queue_clear(call_queue *q)
{
    call *c;
    while ((c = queue_pop(q)))
        call_free(c);
}

static call *call_new(deferred *d, call_op op, size_t extra_bytes)
{
    call *c = calloc(1, sizeof *c);
    if (c && extra_bytes && !(c->extra = calloc(1, extra_bytes))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        d->host->fail(d->host, TP_ERR_NOMEM, "deferred: out of memory queueing %s",
                      op_names[op]);
        return NULL;
    }
    c->op = op;
    c->extra_bytes = extra_bytes;
    return c;
}

static call *call_clone(deferred *d, const call *src)
{
    call *c = call_new(d, src->op, src->extra_bytes);
    if (!c)
        return NULL;
    unsigned char *extra = c->extra;
    *c = *src;
    c->extra = extra;
    c->next = NULL;
    if (src->extra_bytes)
        memcpy(c->extra, src->extra, src->extra_bytes);
    return c;
}

static void keep(call *c, int k, const tp_tensor *t)
{
    if (t) {
        c->t[k] = *t;
        c->present |= 1u << k;
    }
}

static tp_tensor *arg(call *c, int k) { return c->present & (1u << k) ? &c->t[k] : NULL; }

/* ------------------------------------------------------------------------------------- */
/* Running queued calls                                                                   */

static tp_status flush_until(deferred *d, tp_stream s, tp_event *ev, uint64_t seq);

static tp_status run_update_group(deferred *d, call *c)
{
    const queued_item *q = (const queued_item *)c->extra;
    tp_update_item *items = calloc(c->n ? c->n : 1, sizeof *items);
    if (!items)
        return d->host->fail(d->host, TP_ERR_NOMEM, "deferred: out of memory");
    for (size_t k = 0; k < c->n; k++) {
        queued_item *m = (queued_item *)&q[k];
        items[k].param = &m->t[0];
        items[k].grad = &m->t[1];
        items[k].state[0] = m->present & 4u ? &m->t[2] : NULL;
        items[k].state[1] = m->present & 8u ? &m->t[3] : NULL;
        items[k].weight_decay = m->weight_decay;
    }
    tp_status st = c->op == C_SGD_GROUP
                       ? IN->sgd_update_group_dev(INS, items, c->n, arg(c, 0), arg(c, 1),
                                                  c->s[0], (int)c->i[0])
                       : IN->adam_update_group_dev(INS, items, c->n, arg(c, 0), arg(c, 1),
                                                   c->s[0], c->s[1], c->s[2], (int)c->i[0]);
    free(items);
    return st;
}

static tp_status run_check_finite(deferred *d, call *c)
{
    const tp_tensor **xs = calloc(c->n ? c->n : 1, sizeof *xs);
    if (!xs)
        return d->host->fail(d->host, TP_ERR_NOMEM, "deferred: out of memory");
    for (size_t k = 0; k < c->n; k++)
        xs[k] = (const tp_tensor *)c->extra + k;
    tp_status st = IN->check_finite_group(INS, xs, c->n, arg(c, 0));
    free(xs);
    return st;
}

static tp_status run_call(deferred *d, call *c)
{
    tp_tensor *t[CALL_TENSORS];
    for (int k = 0; k < CALL_TENSORS; k++)
        t[k] = arg(c, k);
    switch (c->op) {
    case C_MARK:
        if (c->ev->done < c->seq)
            c->ev->done = c->seq;
        return TP_OK;
    case C_WAIT:
        return flush_until(d, c->other, c->ev, c->seq);
    case C_COPY:
        return IN->copy(INS, t[0], t[1], c->stream);
    case C_FILL:
        return IN->fill(INS, t[0], c->s[0]);
    case C_CONV_FWD:
        return IN->conv_forward(INS, &c->conv, t[0], t[1], t[2], t[3]);
    case C_CONV_BWD_DATA:
        return IN->conv_backward_data(INS, &c->conv, t[0], t[1], t[2]);
    case C_CONV_BWD_DATA_ADD:
        return IN->conv_backward_data_add(INS, &c->conv, t[0], t[1], t[2]);
    case C_CONV_BWD_FILTER:
        return IN->conv_backward_filter(INS, &c->conv, t[0], t[1], t[2], t[3]);
    case C_BN_TRAIN:
        return IN->batchnorm_train(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
    case C_BN_INFER:
        return IN->batchnorm_infer(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5]);
    case C_BN_BWD:
        return IN->batchnorm_backward(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                                      t[7]);
    case C_BN_RELU_TRAIN:
        return IN->batchnorm_relu_train(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                                        t[7], t[8]);
    case C_BN_RELU_BWD:
        return IN->batchnorm_relu_backward(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5],
                                           t[6], t[7], t[8], t[9]);
    case C_BN_ADD_RELU_TRAIN:
        return IN->batchnorm_add_relu_train(INS, &c->bn, t[0], t[1], t[2], t[3], t[4], t[5],
                                            t[6], t[7], t[8]);
    case C_RELU_FWD:
        return IN->relu_forward(INS, t[0], t[1]);
    case C_RELU_BWD:
        return IN->relu_backward(INS, t[0], t[1], t[2]);
    case C_ADD:
        return IN->add(INS, t[0], t[1], t[2]);
    case C_ADD_RELU:
        return IN->add_relu(INS, t[0], t[1], t[2]);
    case C_POOL_FWD:
        return IN->pool_forward(INS, &c->pool, t[0], t[1]);
    case C_POOL_BWD:
        return IN->pool_backward(INS, &c->pool, t[0], t[1], t[2], t[3]);
    case C_GAP_FWD:
        return IN->global_avgpool_forward(INS, t[0], t[1]);
    case C_GAP_BWD:
        return IN->global_avgpool_backward(INS, t[0], t[1]);
    case C_LINEAR_FWD:
        return IN->linear_forward(INS, t[0], t[1], t[2], t[3]);
    case C_LINEAR_BWD:
        return IN->linear_backward(INS, t[0], t[1], t[2], t[3], t[4], t[5]);
    case C_XENT:
        return IN->softmax_xent(INS, t[0], t[1], c->s[0], c->s[1], t[2], t[3]);
    case C_TOPK:
        return IN->topk_correct(INS, t[0], t[1], (int)c->i[0], t[2]);
    case C_SUBPAD_FWD:
        return IN->subsample_pad_forward(INS, (int)c->i[0], t[0], t[1]);
    case C_SUBPAD_BWD:
        return IN->subsample_pad_backward(INS, (int)c->i[0], t[0], t[1]);
    case C_AXPBY:
        return IN->axpby(INS, c->s[0], t[0], c->s[1], t[1]);
    case C_SCALE:
        return IN->scale(INS, c->s[0], t[0]);
    case C_SUM_SQUARES:
        return IN->sum_squares(INS, t[0], t[1]);
    case C_CONVERT_U8:
        return IN->convert_u8_batch(INS, t[0], c->s[0], t[1]);
    case C_CROP_FLIP: {
        const int32_t *oy = (const int32_t *)c->extra;
        tp_crop_flip_desc desc = {
            .pad = (int)c->i[0],
            .fill = (float)c->s[0],
            .offset_y = oy,
            .offset_x = oy + c->n,
            .flip = c->i[1] ? (const uint8_t *)(oy + 2 * c->n) : NULL,
        };
        return IN->crop_flip(INS, &desc, t[0], t[1]);
    }
    case C_STANDARDIZE:
        return IN->standardize_images(INS, t[0]);
    case C_NORMALIZE: {
        const float *mean = (const float *)c->extra;
        return IN->normalize_channels(INS, t[0], mean, mean + c->n);
    }
    case C_SGD:
        return IN->sgd_update(INS, t[0], t[1], t[2], c->s[0], c->s[1], c->s[2], (int)c->i[0]);
    case C_ADAM:
        return IN->adam_update(INS, t[0], t[1], t[2], t[3], c->s[0], c->s[1], c->s[2], c->s[3],
                               c->s[4], (int)c->i[0], c->i[1]);
    case C_SGD_DEV:
        return IN->sgd_update_dev(INS, t[0], t[1], t[2], t[3], t[4], c->s[0], c->s[1],
                                  (int)c->i[0]);
    case C_ADAM_DEV:
        return IN->adam_update_dev(INS, t[0], t[1], t[2], t[3], t[4], t[5], c->s[0], c->s[1],
                                   c->s[2], c->s[3], (int)c->i[0]);
    case C_SGD_GROUP:
    case C_ADAM_GROUP:
        return run_update_group(d, c);
    case C_CHECK_FINITE:
        return run_check_finite(d, c);
    }
    return d->host->fail(d->host, TP_ERR_INVALID, "deferred: unknown queued call %d",
                         (int)c->op);
}

/* Device memory becomes accessible while queued calls run (nested runs count). */
static void fence_open(deferred *d)
{
    if (d->fence.base && d->fence.depth++ == 0 && d->fence.used)
        (void)mprotect(d->fence.base, d->fence.used, PROT_READ | PROT_WRITE);
}

static void fence_close(deferred *d)
{
    if (d->fence.base && --d->fence.depth == 0 && d->fence.used)
        (void)mprotect(d->fence.base, d->fence.used, PROT_NONE);
}

/* Runs the call at the head of stream s; a failure becomes the sticky error, and once one
 * is recorded the remaining calls are dropped unrun (as a CUDA context stops after a fault). */
static void run_head(deferred *d, tp_stream s)
{
    call *c = queue_pop(&d->queue[s]);
    d->queued--;
    if (c->op == C_MARK || !d->failed) {
        d->last_message[0] = '\0';
        tp_status st = run_call(d, c);
        if (st && !d->failed) {
            d->failed = st;
            snprintf(d->failure, sizeof d->failure, "a queued %s failed: %s", op_names[c->op],
                     d->last_message[0] ? d->last_message : "(no message)");
        }
    }
    call_free(c);
}

/* Runs stream s until ev's record `seq` has been reached. */
static tp_status flush_until(deferred *d, tp_stream s, tp_event *ev, uint64_t seq)
{
    tp_status st = TP_OK;
    fence_open(d);
    while (ev->done < seq && !st) {
        if (!d->queue[s].head)
            st = d->host->fail(d->host, TP_ERR_INVALID,
                               "deferred: event record %llu is not on the %s stream",
                               (unsigned long long)seq, s ? "copy" : "compute");
        else
            run_head(d, s);
    }
    fence_close(d);
    return st;
}

static void flush_all(deferred *d)
{
    fence_open(d);
    while (d->queue[0].head || d->queue[1].head)
        run_head(d, d->queue[0].head ? TP_STREAM_COMPUTE : TP_STREAM_COPY);
    fence_close(d);
}

/* Runs stream s until it is empty (calls waiting on the other stream run that far). */
static void flush_stream(deferred *d, tp_stream s)
{
    fence_open(d);
    while (d->queue[s].head)
        run_head(d, s);
    fence_close(d);
}

static tp_status report_failure(deferred *d)
{
    return d->failed ? d->host->fail(d->host, d->failed, "deferred: %s", d->failure) : TP_OK;
}

/* ------------------------------------------------------------------------------------- */
/* Locking and recording                                                                  */

static int capturing_here(const deferred *d)
{
    return d->capturing && pthread_equal(d->capture_owner, pthread_self());
}

/* Takes the lock; another thread's recording ends first, so none of this thread's work
 * slips into it (the contract of capture_begin). */
static void enter(deferred *d)
{
    pthread_mutex_lock(&d->lock);
    while (d->capturing && !pthread_equal(d->capture_owner, pthread_self()))
        pthread_cond_wait(&d->capture_cond, &d->lock);
}

static void leave(deferred *d) { pthread_mutex_unlock(&d->lock); }

static tp_status forbid_while_recording(deferred *d, const char *what)
{
    if (!capturing_here(d))
        return TP_OK;
    d->capture_spoiled = 1;
    return d->host->fail(d->host, TP_ERR_INVALID,
                         "%s: not allowed while recording (capture_begin ... capture_end)",
                         what);
}

static uint64_t next_random(deferred *d)
{
    uint64_t x = d->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return d->random_state = x;
}

/* mode = random: runs 0 to 3 queued calls, each from a stream drawn at random (the other
 * one when the drawn stream is empty), so runs explore orders between lazy and eager. */
static void run_some(deferred *d)
{
    fence_open(d);
    for (uint64_t k = next_random(d) % 4; k > 0; k--) {
        tp_stream s = (next_random(d) & 1) ? TP_STREAM_COPY : TP_STREAM_COMPUTE;
        if (!d->queue[s].head)
            s = s == TP_STREAM_COPY ? TP_STREAM_COMPUTE : TP_STREAM_COPY;
        if (!d->queue[s].head)
            break;
        run_head(d, s);
    }
    fence_close(d);
}

/* Queues c on stream s (or records it), taking ownership; runs it at once in eager mode. */
static tp_status submit(deferred *d, call *c, tp_stream s)
{
    if (!c)
        return TP_ERR_NOMEM;
    c->stream = s;
    if (capturing_here(d)) {
        if (s != TP_STREAM_COMPUTE) {
            call_free(c);
            return forbid_while_recording(d, "work on the copy stream");
        }
        queue_push(&d->recorded, c);
        return TP_OK;
    }
    if (d->failed) {
        if (c->op == C_MARK && c->ev->done < c->seq)
            c->ev->done = c->seq; /* nothing will run: a wait for it must not hang */
        call_free(c);
        return report_failure(d);
    }
    queue_push(&d->queue[s], c);
    d->queued++;
    if (d->mode == MODE_EAGER || d->queued > QUEUE_LIMIT)
        flush_all(d);
    else if (d->mode == MODE_COPY_AHEAD && s == TP_STREAM_COPY)
        flush_stream(d, TP_STREAM_COPY);
    else if (d->mode == MODE_RANDOM)
        run_some(d);
    return report_failure(d);
}

/* Every queued operation: build the call under the lock, then submit it. */
#define QUEUE(opcode, extra_bytes, stream, fill)                                               \
    do {                                                                                       \
        deferred *dq_ = self;                                                                  \
        enter(dq_);                                                                            \
        call *c = call_new(dq_, (opcode), (extra_bytes));                                      \
        if (c) {                                                                               \
            fill;                                                                              \
        }                                                                                      \
        tp_status st_ = submit(dq_, c, (stream));                                              \
        leave(dq_);                                                                            \
        return st_;                                                                            \
    } while (0)

/* ------------------------------------------------------------------------------------- */
/* Operations that run at once                                                            */

static tp_status d_info(void *self, tp_backend_info *out)
{
    deferred *d = self;
    enter(d);
    tp_status st = IN->info(INS, out);
    leave(d);
    if (st)
        return st;
    out->name = "deferred";
    out->has_device_memory = 1;
    return TP_OK;
}

/* Device memory from the fenced reservation, checked as backend-cpu checks its own. */
static tp_status fenced_alloc(deferred *d, tp_tensor *t, const char *what)
{
    const char *name = what ? what : "tensor";
    int bad = t->ndim < 1 || t->ndim > TP_TENSOR_MAX_DIMS || tp_dtype_size(t->dtype) == 0;
    for (int i = 0; !bad && i < t->ndim; i++)
        bad = t->shape[i] < 0;
    if (bad)
        return d->host->fail(d->host, TP_ERR_INVALID,
                             "deferred alloc: %s has a bad shape or dtype", name);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (tp_tensor_bytes(t) + page - 1) / page * page;
    if (!bytes)
        bytes = page;
    device_fence *f = &d->fence;
    if (bytes > f->reserved - f->used)
        return d->host->fail(d->host, TP_ERR_NOMEM,
                             "deferred alloc: %s (%zu bytes): the fenced reservation of %zu "
                             "bytes is used up", name, bytes, f->reserved);
    if (f->n_blocks == f->cap_blocks) {
        size_t cap = f->cap_blocks ? 2 * f->cap_blocks : 64;
        fenced_block *blocks = realloc(f->blocks, cap * sizeof *blocks);
        if (!blocks)
            return d->host->fail(d->host, TP_ERR_NOMEM, "deferred alloc: out of memory");
        f->blocks = blocks;
        f->cap_blocks = cap;
    }
    t->data = f->base + f->used;
    f->blocks[f->n_blocks++] = (fenced_block){ t->data, bytes };
    f->used += bytes;
    return TP_OK;
}

/* Returns the pages of a fenced block to the system; 0 if t is not one. */
static int fenced_free(deferred *d, tp_tensor *t)
{
    device_fence *f = &d->fence;
    for (size_t k = 0; k < f->n_blocks; k++)
        if (f->blocks[k].at == t->data) {
            (void)madvise(f->blocks[k].at, f->blocks[k].bytes, MADV_DONTNEED);
            f->blocks[k] = f->blocks[--f->n_blocks];
            t->data = NULL;
            return 1;
        }
    return 0;
}

static tp_status d_alloc(void *self, tp_tensor *t, const char *what)
{
    deferred *d = self;
    enter(d);
    tp_status st = forbid_while_recording(d, "alloc");
    if (!st)
        st = d->fence.base && t->device == TP_DEVICE_DEVICE ? fenced_alloc(d, t, what)
                                                            : IN->alloc(INS, t, what);
    leave(d);
    return st;
}

/* Waits for everything first, as cudaFree does: queued calls may still use t. */
static void d_free(void *self, tp_tensor *t)
{
    deferred *d = self;
    enter(d);
    if (!forbid_while_recording(d, "free")) {
        flush_all(d);
        if (!(d->fence.base && t && fenced_free(d, t)))
            IN->free(INS, t);
    }
    leave(d);
}

static tp_status d_event_create(void *self, tp_event **ev)
{
    deferred *d = self;
    *ev = calloc(1, sizeof **ev);
    return *ev ? TP_OK : d->host->fail(d->host, TP_ERR_NOMEM, "event_create: out of memory");
}

/* Queued marks may still point at ev: run them first. */
static void d_event_destroy(void *self, tp_event *ev)
{
    deferred *d = self;
    if (!ev)
        return;
    enter(d);
    flush_all(d);
    leave(d);
    free(ev);
}

static tp_status d_event_record(void *self, tp_event *ev, tp_stream stream)
{
    deferred *d = self;
    enter(d);
    tp_status st = forbid_while_recording(d, "event_record");
    if (!st) {
        call *c = call_new(d, C_MARK, 0);
        if (c) {
            c->ev = ev;
            c->seq = ++ev->recorded;
            ev->stream = stream;
        }
        st = submit(d, c, stream);
    }
    leave(d);
    return st;
}

static tp_status d_stream_wait(void *self, tp_stream stream, tp_event *ev)
{
    deferred *d = self;
    enter(d);
    tp_status st = forbid_while_recording(d, "stream_wait");
    if (!st && ev->done < ev->recorded) {
        call *c = call_new(d, C_WAIT, 0);
        if (c) {
            c->ev = ev;
            c->seq = ev->recorded;
            c->other = ev->stream;
        }
        st = submit(d, c, stream);
    }
    leave(d);
    return st;
}

static tp_status d_event_sync(void *self, tp_event *ev)
{
    deferred *d = self;
    enter(d);
    tp_status st = forbid_while_recording(d, "event_sync");
    if (!st)
        st = flush_until(d, ev->stream, ev, ev->recorded);
    if (!st)
        st = report_failure(d);
    leave(d);
    return st;
}

static tp_status d_sync(void *self)
{
    deferred *d = self;
    enter(d);
    tp_status st = forbid_while_recording(d, "sync");
    if (!st) {
        flush_all(d);
        st = report_failure(d);
    }
    leave(d);
    return st;
}

static tp_status d_bn_relu_workspace_bytes(void *self, const tp_bn_desc *desc,
                                           const tp_tensor *x, int64_t *bytes)
{
    deferred *d = self;
    enter(d);
    tp_status st = IN->batchnorm_relu_workspace_bytes(INS, desc, x, bytes);
    leave(d);
    return st;
}

/* ------------------------------------------------------------------------------------- */
/* Queued operations                                                                      */

/* Pageable host memory cannot be read or written by a recording (backend-cuda's rule). A
 * copy between two pageable buffers is synchronous, as the SDK defines copy(). */
static tp_status d_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    deferred *d = self;
    int host_dst = dst && dst->device == TP_DEVICE_HOST;
    int host_src = src && src->device == TP_DEVICE_HOST;
    enter(d);
    tp_status st = host_dst || host_src ? forbid_while_recording(d, "copy through host memory")
                                        : TP_OK;
    if (!st && host_dst && host_src) {
        st = IN->copy(INS, dst, src, stream);
    } else if (!st) {
        call *c = call_new(d, C_COPY, 0);
        if (c) {
            keep(c, 0, dst);
            keep(c, 1, src);
        }
        st = submit(d, c, stream);
    }
    leave(d);
    return st;
}

static tp_status d_fill(void *self, tp_tensor *t, double value)
{
    QUEUE(C_FILL, 0, TP_STREAM_COMPUTE, keep(c, 0, t); c->s[0] = value);
}

static tp_status d_conv_forward(void *self, const tp_conv_desc *desc, const tp_tensor *x,
                                const tp_tensor *w, const tp_tensor *bias, tp_tensor *y)
{
    QUEUE(C_CONV_FWD, 0, TP_STREAM_COMPUTE, c->conv = *desc; keep(c, 0, x); keep(c, 1, w);
          keep(c, 2, bias); keep(c, 3, y));
}

static tp_status d_conv_backward_data(void *self, const tp_conv_desc *desc, const tp_tensor *dy,
                                      const tp_tensor *w, tp_tensor *dx)
{
    QUEUE(C_CONV_BWD_DATA, 0, TP_STREAM_COMPUTE, c->conv = *desc; keep(c, 0, dy);
          keep(c, 1, w); keep(c, 2, dx));
}

static tp_status d_conv_backward_data_add(void *self, const tp_conv_desc *desc,
                                          const tp_tensor *dy, const tp_tensor *w,
                                          tp_tensor *dx)
{
    QUEUE(C_CONV_BWD_DATA_ADD, 0, TP_STREAM_COMPUTE, c->conv = *desc; keep(c, 0, dy);
          keep(c, 1, w); keep(c, 2, dx));
}

static tp_status d_conv_backward_filter(void *self, const tp_conv_desc *desc,
                                        const tp_tensor *x, const tp_tensor *dy, tp_tensor *dw,
                                        tp_tensor *dbias)
{
    QUEUE(C_CONV_BWD_FILTER, 0, TP_STREAM_COMPUTE, c->conv = *desc; keep(c, 0, x);
          keep(c, 1, dy); keep(c, 2, dw); keep(c, 3, dbias));
}

static tp_status d_bn_train(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                            tp_tensor *rmean, tp_tensor *rvar, tp_tensor *smean,
                            tp_tensor *sinv)
{
    QUEUE(C_BN_TRAIN, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x); keep(c, 1, gamma);
          keep(c, 2, beta); keep(c, 3, y); keep(c, 4, rmean); keep(c, 5, rvar);
          keep(c, 6, smean); keep(c, 7, sinv));
}

static tp_status d_bn_infer(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta,
                            const tp_tensor *rmean, const tp_tensor *rvar, tp_tensor *y)
{
    QUEUE(C_BN_INFER, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x); keep(c, 1, gamma);
          keep(c, 2, beta); keep(c, 3, rmean); keep(c, 4, rvar); keep(c, 5, y));
}

static tp_status d_bn_backward(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                               const tp_tensor *dy, const tp_tensor *gamma,
                               const tp_tensor *smean, const tp_tensor *sinv, tp_tensor *dx,
                               tp_tensor *dgamma, tp_tensor *dbeta)
{
    QUEUE(C_BN_BWD, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x); keep(c, 1, dy);
          keep(c, 2, gamma); keep(c, 3, smean); keep(c, 4, sinv); keep(c, 5, dx);
          keep(c, 6, dgamma); keep(c, 7, dbeta));
}

static tp_status d_bn_relu_train(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                                 const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                 tp_tensor *rmean, tp_tensor *rvar, tp_tensor *smean,
                                 tp_tensor *sinv, tp_tensor *workspace)
{
    QUEUE(C_BN_RELU_TRAIN, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x);
          keep(c, 1, gamma); keep(c, 2, beta); keep(c, 3, y); keep(c, 4, rmean);
          keep(c, 5, rvar); keep(c, 6, smean); keep(c, 7, sinv); keep(c, 8, workspace));
}

static tp_status d_bn_relu_backward(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                                    const tp_tensor *y, const tp_tensor *workspace,
                                    const tp_tensor *dy, const tp_tensor *gamma,
                                    const tp_tensor *smean, const tp_tensor *sinv,
                                    tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta)
{
    QUEUE(C_BN_RELU_BWD, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x); keep(c, 1, y);
          keep(c, 2, workspace); keep(c, 3, dy); keep(c, 4, gamma); keep(c, 5, smean);
          keep(c, 6, sinv); keep(c, 7, dx); keep(c, 8, dgamma); keep(c, 9, dbeta));
}

static tp_status d_bn_add_relu_train(void *self, const tp_bn_desc *desc, const tp_tensor *x,
                                     const tp_tensor *residual, const tp_tensor *gamma,
                                     const tp_tensor *beta, tp_tensor *y, tp_tensor *rmean,
                                     tp_tensor *rvar, tp_tensor *smean, tp_tensor *sinv)
{
    QUEUE(C_BN_ADD_RELU_TRAIN, 0, TP_STREAM_COMPUTE, c->bn = *desc; keep(c, 0, x);
          keep(c, 1, residual); keep(c, 2, gamma); keep(c, 3, beta); keep(c, 4, y);
          keep(c, 5, rmean); keep(c, 6, rvar); keep(c, 7, smean); keep(c, 8, sinv));
}

static tp_status d_relu_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    QUEUE(C_RELU_FWD, 0, TP_STREAM_COMPUTE, keep(c, 0, x); keep(c, 1, y));
}

static tp_status d_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy,
                                 tp_tensor *dx)
{
    QUEUE(C_RELU_BWD, 0, TP_STREAM_COMPUTE, keep(c, 0, y); keep(c, 1, dy); keep(c, 2, dx));
}

static tp_status d_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    QUEUE(C_ADD, 0, TP_STREAM_COMPUTE, keep(c, 0, a); keep(c, 1, b); keep(c, 2, y));
}

static tp_status d_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    QUEUE(C_ADD_RELU, 0, TP_STREAM_COMPUTE, keep(c, 0, a); keep(c, 1, b); keep(c, 2, y));
}

static tp_status d_pool_forward(void *self, const tp_pool_desc *desc, const tp_tensor *x,
                                tp_tensor *y)
{
    QUEUE(C_POOL_FWD, 0, TP_STREAM_COMPUTE, c->pool = *desc; keep(c, 0, x); keep(c, 1, y));
}

static tp_status d_pool_backward(void *self, const tp_pool_desc *desc, const tp_tensor *x,
                                 const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    QUEUE(C_POOL_BWD, 0, TP_STREAM_COMPUTE, c->pool = *desc; keep(c, 0, x); keep(c, 1, y);
          keep(c, 2, dy); keep(c, 3, dx));
}

static tp_status d_gap_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    QUEUE(C_GAP_FWD, 0, TP_STREAM_COMPUTE, keep(c, 0, x); keep(c, 1, y));
}

static tp_status d_gap_backward(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    QUEUE(C_GAP_BWD, 0, TP_STREAM_COMPUTE, keep(c, 0, dy); keep(c, 1, dx));
}

static tp_status d_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                                  const tp_tensor *bias, tp_tensor *y)
{
    QUEUE(C_LINEAR_FWD, 0, TP_STREAM_COMPUTE, keep(c, 0, x); keep(c, 1, w); keep(c, 2, bias);
          keep(c, 3, y));
}

static tp_status d_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                                   const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                                   tp_tensor *db)
{
    QUEUE(C_LINEAR_BWD, 0, TP_STREAM_COMPUTE, keep(c, 0, x); keep(c, 1, w); keep(c, 2, dy);
          keep(c, 3, dx); keep(c, 4, dw); keep(c, 5, db));
}

static tp_status d_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                                double smoothing, double grad_scale, tp_tensor *loss,
                                tp_tensor *dlogits)
{
    QUEUE(C_XENT, 0, TP_STREAM_COMPUTE, keep(c, 0, logits); keep(c, 1, labels);
          c->s[0] = smoothing; c->s[1] = grad_scale; keep(c, 2, loss); keep(c, 3, dlogits));
}

static tp_status d_topk_correct(void *self, const tp_tensor *logits, const tp_tensor *labels,
                                int k, tp_tensor *correct)
{
    QUEUE(C_TOPK, 0, TP_STREAM_COMPUTE, keep(c, 0, logits); keep(c, 1, labels); c->i[0] = k;
          keep(c, 2, correct));
}

static tp_status d_subpad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    QUEUE(C_SUBPAD_FWD, 0, TP_STREAM_COMPUTE, c->i[0] = stride; keep(c, 0, x); keep(c, 1, y));
}

static tp_status d_subpad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    QUEUE(C_SUBPAD_BWD, 0, TP_STREAM_COMPUTE, c->i[0] = stride; keep(c, 0, dy);
          keep(c, 1, dx));
}

static tp_status d_axpby(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y)
{
    QUEUE(C_AXPBY, 0, TP_STREAM_COMPUTE, c->s[0] = alpha; keep(c, 0, x); c->s[1] = beta;
          keep(c, 1, y));
}

static tp_status d_scale(void *self, double alpha, tp_tensor *y)
{
    QUEUE(C_SCALE, 0, TP_STREAM_COMPUTE, c->s[0] = alpha; keep(c, 0, y));
}

static tp_status d_sum_squares(void *self, const tp_tensor *x, tp_tensor *out)
{
    QUEUE(C_SUM_SQUARES, 0, TP_STREAM_COMPUTE, keep(c, 0, x); keep(c, 1, out));
}

static tp_status d_convert_u8_batch(void *self, const tp_tensor *src, double scale,
                                    tp_tensor *dst)
{
    QUEUE(C_CONVERT_U8, 0, TP_STREAM_COMPUTE, keep(c, 0, src); c->s[0] = scale;
          keep(c, 1, dst));
}

/* The per-sample offsets and flips are copied now, as kernel arguments are. */
static tp_status d_crop_flip(void *self, const tp_crop_flip_desc *desc, const tp_tensor *src,
                             tp_tensor *dst)
{
    deferred *d = self;
    if (!desc || !desc->offset_y || !desc->offset_x || !src || src->ndim < 1)
        return d->host->fail(d->host, TP_ERR_INVALID,
                             "crop_flip: needs a descriptor with offset_y and offset_x and a "
                             "batch tensor");
    size_t n = (size_t)src->shape[0];
    size_t bytes = 2 * n * sizeof(int32_t) + (desc->flip ? n : 0);
    QUEUE(C_CROP_FLIP, bytes, TP_STREAM_COMPUTE, {
        int32_t *oy = (int32_t *)c->extra;
        memcpy(oy, desc->offset_y, n * sizeof *oy);
        memcpy(oy + n, desc->offset_x, n * sizeof *oy);
        if (desc->flip)
            memcpy(oy + 2 * n, desc->flip, n);
        c->n = n;
        c->i[0] = desc->pad;
        c->i[1] = desc->flip != NULL;
        c->s[0] = desc->fill;
        keep(c, 0, src);
        keep(c, 1, dst);
    });
}

static tp_status d_standardize_images(void *self, tp_tensor *x)
{
    QUEUE(C_STANDARDIZE, 0, TP_STREAM_COMPUTE, keep(c, 0, x));
}

static tp_status d_normalize_channels(void *self, tp_tensor *x, const float *mean,
                                      const float *std)
{
    deferred *d = self;
    if (!x || x->ndim < 2 || !mean || !std)
        return d->host->fail(d->host, TP_ERR_INVALID,
                             "normalize_channels: needs an image batch, mean and std");
    size_t n = (size_t)x->shape[1];
    QUEUE(C_NORMALIZE, 2 * n * sizeof(float), TP_STREAM_COMPUTE, {
        float *m = (float *)c->extra;
        memcpy(m, mean, n * sizeof *m);
        memcpy(m + n, std, n * sizeof *m);
        c->n = n;
        keep(c, 0, x);
    });
}

static tp_status d_sgd_update(void *self, tp_tensor *param, const tp_tensor *grad,
                              tp_tensor *velocity, double lr, double momentum,
                              double weight_decay, int nesterov)
{
    QUEUE(C_SGD, 0, TP_STREAM_COMPUTE, keep(c, 0, param); keep(c, 1, grad);
          keep(c, 2, velocity); c->s[0] = lr; c->s[1] = momentum; c->s[2] = weight_decay;
          c->i[0] = nesterov);
}

static tp_status d_adam_update(void *self, tp_tensor *param, const tp_tensor *grad,
                               tp_tensor *m, tp_tensor *v, double lr, double beta1,
                               double beta2, double eps, double weight_decay, int decoupled,
                               int64_t step)
{
    QUEUE(C_ADAM, 0, TP_STREAM_COMPUTE, keep(c, 0, param); keep(c, 1, grad); keep(c, 2, m);
          keep(c, 3, v); c->s[0] = lr; c->s[1] = beta1; c->s[2] = beta2; c->s[3] = eps;
          c->s[4] = weight_decay; c->i[0] = decoupled; c->i[1] = step);
}

static tp_status d_sgd_update_dev(void *self, tp_tensor *param, const tp_tensor *grad,
                                  tp_tensor *velocity, const tp_tensor *scalars,
                                  const tp_tensor *gate, double momentum, double weight_decay,
                                  int nesterov)
{
    QUEUE(C_SGD_DEV, 0, TP_STREAM_COMPUTE, keep(c, 0, param); keep(c, 1, grad);
          keep(c, 2, velocity); keep(c, 3, scalars); keep(c, 4, gate); c->s[0] = momentum;
          c->s[1] = weight_decay; c->i[0] = nesterov);
}

static tp_status d_adam_update_dev(void *self, tp_tensor *param, const tp_tensor *grad,
                                   tp_tensor *m, tp_tensor *v, const tp_tensor *scalars,
                                   const tp_tensor *gate, double beta1, double beta2,
                                   double eps, double weight_decay, int decoupled)
{
    QUEUE(C_ADAM_DEV, 0, TP_STREAM_COMPUTE, keep(c, 0, param); keep(c, 1, grad);
          keep(c, 2, m); keep(c, 3, v); keep(c, 4, scalars); keep(c, 5, gate);
          c->s[0] = beta1; c->s[1] = beta2; c->s[2] = eps; c->s[3] = weight_decay;
          c->i[0] = decoupled);
}

/* The items' tensor descriptors are copied now; the tensors' contents are read when the
 * update runs. */
static void keep_items(call *c, const tp_update_item *items, size_t n)
{
    queued_item *q = (queued_item *)c->extra;
    for (size_t k = 0; k < n; k++) {
        const tp_tensor *t[4] = { items[k].param, items[k].grad, items[k].state[0],
                                  items[k].state[1] };
        for (int j = 0; j < 4; j++)
            if (t[j]) {
                q[k].t[j] = *t[j];
                q[k].present |= 1u << j;
            }
        q[k].weight_decay = items[k].weight_decay;
    }
    c->n = n;
}

static tp_status check_items(deferred *d, const char *op, const tp_update_item *items, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!items || !items[k].param || !items[k].grad)
            return d->host->fail(d->host, TP_ERR_INVALID, "%s: item %zu has no param or grad",
                                 op, k);
    return TP_OK;
}

static tp_status d_sgd_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                        const tp_tensor *scalars, const tp_tensor *gate,
                                        double momentum, int nesterov)
{
    tp_status st = check_items(self, "sgd_update_group_dev", items, n);
    if (st)
        return st;
    QUEUE(C_SGD_GROUP, n * sizeof(queued_item), TP_STREAM_COMPUTE, keep_items(c, items, n);
          keep(c, 0, scalars); keep(c, 1, gate); c->s[0] = momentum; c->i[0] = nesterov);
}

static tp_status d_adam_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                         const tp_tensor *scalars, const tp_tensor *gate,
                                         double beta1, double beta2, double eps, int decoupled)
{
    tp_status st = check_items(self, "adam_update_group_dev", items, n);
    if (st)
        return st;
    QUEUE(C_ADAM_GROUP, n * sizeof(queued_item), TP_STREAM_COMPUTE, keep_items(c, items, n);
          keep(c, 0, scalars); keep(c, 1, gate); c->s[0] = beta1; c->s[1] = beta2;
          c->s[2] = eps; c->i[0] = decoupled);
}

static tp_status d_check_finite_group(void *self, const tp_tensor *const *xs, size_t n,
                                      tp_tensor *out)
{
    deferred *d = self;
    for (size_t k = 0; k < n; k++)
        if (!xs || !xs[k])
            return d->host->fail(d->host, TP_ERR_INVALID,
                                 "check_finite_group: tensor %zu is NULL", k);
    QUEUE(C_CHECK_FINITE, n * sizeof(tp_tensor), TP_STREAM_COMPUTE, {
        tp_tensor *copy = (tp_tensor *)c->extra;
        for (size_t k = 0; k < n; k++)
            copy[k] = *xs[k];
        c->n = n;
        keep(c, 0, out);
    });
}

/* ------------------------------------------------------------------------------------- */
/* Recording                                                                              */

static tp_status d_capture_begin(void *self)
{
    deferred *d = self;
    enter(d);
    tp_status st = TP_OK;
    if (d->capturing)
        st = d->host->fail(d->host, TP_ERR_INVALID,
                           "capture_begin: this thread is already recording");
    else {
        d->capturing = 1;
        d->capture_spoiled = 0;
        d->capture_owner = pthread_self();
    }
    leave(d);
    return st;
}

static tp_status d_capture_end(void *self, tp_recording **out)
{
    deferred *d = self;
    *out = NULL;
    enter(d);
    if (!capturing_here(d)) {
        leave(d);
        return d->host->fail(d->host, TP_ERR_INVALID, "capture_end: this thread is not "
                             "recording");
    }
    d->capturing = 0;
    pthread_cond_broadcast(&d->capture_cond);
    tp_status st = TP_OK;
    tp_recording *r = NULL;
    if (d->capture_spoiled)
        st = d->host->fail(d->host, TP_ERR_INVALID, "capture_end: an operation failed while "
                           "recording, so the recording was discarded");
    else if (!(r = calloc(1, sizeof *r)))
        st = d->host->fail(d->host, TP_ERR_NOMEM, "capture_end: out of memory");
    if (r) {
        r->calls = d->recorded;
        d->recorded = (call_queue){ NULL, NULL };
    }
    queue_clear(&d->recorded);
    leave(d);
    *out = r;
    return st;
}

/* Queues a copy of every recorded call, so freeing the recording cannot pull calls out from
 * under the queue (work enqueued from a recording still completes). */
static tp_status d_replay(void *self, tp_recording *r)
{
    deferred *d = self;
    enter(d);
    tp_status st = capturing_here(d)
                       ? d->host->fail(d->host, TP_ERR_INVALID, "replay: not allowed while "
                                       "recording")
                       : TP_OK;
    for (const call *c = r->calls.head; c && !st; c = c->next)
        st = submit(d, call_clone(d, c), TP_STREAM_COMPUTE);
    leave(d);
    return st;
}

static void d_recording_free(void *self, tp_recording *r)
{
    (void)self;
    if (r) {
        queue_clear(&r->calls);
        free(r);
    }
}

/* ------------------------------------------------------------------------------------- */
/* The host backend-cpu sees                                                              */

static deferred *owner_of(const tp_host *h) { return ((const inner_host *)h)->owner; }

static void inner_log(const tp_host *h, tp_log_level level, const char *who, const char *fmt,
                      ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    const tp_host *real = owner_of(h)->host;
    real->log(real, level, who, "%s", line);
}

static tp_status inner_fail(const tp_host *h, tp_status status, const char *fmt, ...)
{
    deferred *d = owner_of(h);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_message, sizeof d->last_message, fmt, ap);
    va_end(ap);
    return d->host->fail(d->host, status, "%s", d->last_message);
}

static const struct tp_backend *inner_backend(const tp_host *h)
{
    const tp_host *real = owner_of(h)->host;
    return real->backend(real);
}

static int inner_interrupted(const tp_host *h)
{
    const tp_host *real = owner_of(h)->host;
    return real->interrupted(real);
}

/* ------------------------------------------------------------------------------------- */
/* Creating backend-cpu                                                                   */

/* The index of `name` in an enum parameter's choices, or -1. */
static int choice_index(const char *const *choices, const char *name)
{
    for (int i = 0; choices && choices[i]; i++)
        if (strcmp(choices[i], name) == 0)
            return i;
    return -1;
}

/* backend-cpu's config: threads, deterministic and precision from ours, everything else its
 * default. */
static tp_status inner_config(deferred *d, const tp_component *cpu, const deferred_config *cfg,
                              void **out)
{
    char *config = calloc(1, cpu->config_size ? cpu->config_size : 1);
    if (!config)
        return d->host->fail(d->host, TP_ERR_NOMEM, "deferred: out of memory");
    for (size_t k = 0; k < cpu->n_params; k++) {
        const tp_param_def *p = &cpu->params[k];
        char *field = config + p->offset;
        const char *def = p->default_value ? p->default_value : "";
        if (p->type == TP_PARAM_INT) {
            int64_t v = strcmp(p->name, "threads") == 0 ? cfg->threads : strtoll(def, NULL, 10);
            memcpy(field, &v, sizeof v);
        } else if (p->type == TP_PARAM_BOOL) {
            int v = strcmp(p->name, "deterministic") == 0 ? cfg->deterministic
                                                          : strcmp(def, "true") == 0;
            memcpy(field, &v, sizeof v);
        } else if (p->type == TP_PARAM_FLOAT) {
            double v = strtod(def, NULL);
            memcpy(field, &v, sizeof v);
        } else if (p->type == TP_PARAM_ENUM) {
            const char *want = strcmp(p->name, "precision") == 0
                                   ? precision_names[cfg->precision] : def;
            int v = choice_index(p->choices, want);
            if (v < 0) {
                free(config);
                return d->host->fail(d->host, TP_ERR_UNSUPPORTED,
                                     "deferred: backend-cpu's parameter %s has no choice %s",
                                     p->name, want);
            }
            memcpy(field, &v, sizeof v);
        } else {
            free(config);
            return d->host->fail(d->host, TP_ERR_UNSUPPORTED,
                                 "deferred: backend-cpu's parameter %s has a type this test "
                                 "backend cannot fill in", p->name);
        }
    }
    *out = config;
    return TP_OK;
}

static const tp_component *find_cpu_component(const tp_plugin_info *info)
{
    for (size_t k = 0; info && k < info->n_components; k++) {
        const tp_component *c = info->components[k];
        if (c->kind == TP_KIND_BACKEND && strcmp(c->name, "cpu") == 0)
            return c;
    }
    return NULL;
}

static void deferred_destroy(void *self);

static tp_backend_ops deferred_ops;
static void hide_missing(const tp_backend_ops *in);

static tp_status deferred_create(const tp_host *host, const void *config, void **self)
{
    const deferred_config *cfg = config;
    deferred *d = calloc(1, sizeof *d);
    if (!d)
        return host->fail(host, TP_ERR_NOMEM, "deferred: out of memory");
    d->host = host;
    d->mode = (deferred_mode)cfg->mode;
    d->random_state = cfg->seed > 0 ? (uint64_t)cfg->seed : 1; /* xorshift stays at 0 */
    if (cfg->fence && (d->mode == MODE_LAZY || d->mode == MODE_COPY_AHEAD)) {
        void *base = mmap(NULL, FENCE_RESERVE, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            tp_status st = host->fail(host, TP_ERR_NOMEM, "deferred: cannot reserve %zu "
                                      "bytes of address space for fenced device memory",
                                      FENCE_RESERVE);
            free(d);
            return st;
        }
        d->fence.base = base;
        d->fence.reserved = FENCE_RESERVE;
    }
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->capture_cond, NULL);
    size_t host_size = host->size < sizeof(tp_host) ? host->size : sizeof(tp_host);
    memcpy(&d->inner_host.host, host, host_size);
    d->inner_host.host.size = host_size;
    d->inner_host.host.log = inner_log;
    d->inner_host.host.fail = inner_fail;
    d->inner_host.host.backend = inner_backend;
    d->inner_host.host.interrupted = inner_interrupted;
    d->inner_host.owner = d;

    if (!(d->dl = dlopen(cfg->cpu_plugin, RTLD_NOW | RTLD_LOCAL))) {
        tp_status st = host->fail(host, TP_ERR_NOT_FOUND, "deferred: cpu_plugin %s: %s",
                                  cfg->cpu_plugin, dlerror());
        deferred_destroy(d);
        return st;
    }
    const tp_plugin_info *(*entry)(void) =
        (const tp_plugin_info *(*)(void))(uintptr_t)dlsym(d->dl, TP_PLUGIN_ENTRY_SYMBOL);
    const tp_component *cpu = entry ? find_cpu_component(entry()) : NULL;
    if (!cpu) {
        tp_status st = host->fail(host, TP_ERR_NOT_FOUND,
                                  "deferred: cpu_plugin %s has no backend named cpu",
                                  cfg->cpu_plugin);
        deferred_destroy(d);
        return st;
    }
    const tp_backend_ops *in = cpu->ops;
    if (in->size < sizeof(tp_backend_ops)) {
        tp_status st = host->fail(host, TP_ERR_UNSUPPORTED,
                                  "deferred: cpu_plugin %s is older than this test backend",
                                  cfg->cpu_plugin);
        deferred_destroy(d);
        return st;
    }
    void *inner_cfg = NULL;
    tp_status st = inner_config(d, cpu, cfg, &inner_cfg);
    if (!st)
        st = cpu->create(&d->inner_host.host, inner_cfg, &d->in_self);
    free(inner_cfg); /* backend-cpu copies what it keeps from its config */
    if (st) {
        deferred_destroy(d);
        return st;
    }
    d->in = in;
    d->in_destroy = cpu->destroy;
    hide_missing(in);
    *self = d;
    return TP_OK;
}

static void deferred_destroy(void *self)
{
    deferred *d = self;
    if (d->in_self) {
        flush_all(d);
        d->in_destroy(d->in_self);
    }
    queue_clear(&d->recorded);
    if (d->fence.base)
        munmap(d->fence.base, d->fence.reserved);
    free(d->fence.blocks);
    /* the handle stays open: backend-cpu keeps oneDNN's threads, which must stay mapped */
    pthread_cond_destroy(&d->capture_cond);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static tp_backend_ops deferred_ops = {
    .size = sizeof(tp_backend_ops),
    .info = d_info,
    .alloc = d_alloc,
    .free = d_free,
    .copy = d_copy,
    .fill = d_fill,
    .event_create = d_event_create,
    .event_destroy = d_event_destroy,
    .event_record = d_event_record,
    .stream_wait = d_stream_wait,
    .event_sync = d_event_sync,
    .sync = d_sync,
    .conv_forward = d_conv_forward,
    .conv_backward_data = d_conv_backward_data,
    .conv_backward_filter = d_conv_backward_filter,
    .batchnorm_train = d_bn_train,
    .batchnorm_infer = d_bn_infer,
    .batchnorm_backward = d_bn_backward,
    .relu_forward = d_relu_forward,
    .relu_backward = d_relu_backward,
    .add = d_add,
    .pool_forward = d_pool_forward,
    .pool_backward = d_pool_backward,
    .global_avgpool_forward = d_gap_forward,
    .global_avgpool_backward = d_gap_backward,
    .linear_forward = d_linear_forward,
    .linear_backward = d_linear_backward,
    .softmax_xent = d_softmax_xent,
    .topk_correct = d_topk_correct,
    .subsample_pad_forward = d_subpad_forward,
    .subsample_pad_backward = d_subpad_backward,
    .axpby = d_axpby,
    .scale = d_scale,
    .sum_squares = d_sum_squares,
    .convert_u8_batch = d_convert_u8_batch,
    .crop_flip = d_crop_flip,
    .standardize_images = d_standardize_images,
    .normalize_channels = d_normalize_channels,
    .sgd_update = d_sgd_update,
    .adam_update = d_adam_update,
    .add_relu = d_add_relu,
    .batchnorm_relu_workspace_bytes = d_bn_relu_workspace_bytes,
    .batchnorm_relu_train = d_bn_relu_train,
    .batchnorm_relu_backward = d_bn_relu_backward,
    .capture_begin = d_capture_begin,
    .capture_end = d_capture_end,
    .replay = d_replay,
    .recording_free = d_recording_free,
    .sgd_update_dev = d_sgd_update_dev,
    .adam_update_dev = d_adam_update_dev,
    .sgd_update_group_dev = d_sgd_update_group_dev,
    .adam_update_group_dev = d_adam_update_group_dev,
    .batchnorm_add_relu_train = d_bn_add_relu_train,
    .conv_backward_data_add = d_conv_backward_data_add,
    .check_finite_group = d_check_finite_group,
};

/* Offers an optional operation only where backend-cpu has it, so callers take the same
 * paths as on backend-cpu (recording aside, which this backend adds). */
static void hide_missing(const tp_backend_ops *in)
{
#define HIDE_IF_MISSING(op)                                                                    \
    if (!in->op)                                                                               \
        deferred_ops.op = NULL
    HIDE_IF_MISSING(sgd_update);
    HIDE_IF_MISSING(adam_update);
    HIDE_IF_MISSING(add_relu);
    HIDE_IF_MISSING(batchnorm_relu_workspace_bytes);
    HIDE_IF_MISSING(batchnorm_relu_train);
    HIDE_IF_MISSING(batchnorm_relu_backward);
    HIDE_IF_MISSING(sgd_update_dev);
    HIDE_IF_MISSING(adam_update_dev);
    HIDE_IF_MISSING(sgd_update_group_dev);
    HIDE_IF_MISSING(adam_update_group_dev);
    HIDE_IF_MISSING(batchnorm_add_relu_train);
    HIDE_IF_MISSING(conv_backward_data_add);
    HIDE_IF_MISSING(check_finite_group);
#undef HIDE_IF_MISSING
}

static const tp_component deferred_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_BACKEND,
    .name = "deferred",
    .summary = "test backend: backend-cpu with queued streams (lazy or eager) and recording",
    .params = deferred_params,
    .n_params = sizeof deferred_params / sizeof deferred_params[0],
    .config_size = sizeof(deferred_config),
    .create = deferred_create,
    .destroy = deferred_destroy,
    .ops = &deferred_ops,
};

static const tp_component *const components[] = { &deferred_component };

static const tp_plugin_info plugin_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "deferred-backend",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "a test backend that queues work as a GPU does",
    .components = components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &plugin_info; }
