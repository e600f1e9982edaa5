/* The recording test double (recording_backend.h). */
#include "config.h"

#include "recording_backend.h"

#include <stdlib.h>
#include <string.h>

#include "services.h"

typedef enum rec_op {
    R_COPY, R_FILL, R_CONV_FWD, R_CONV_BWD_DATA, R_CONV_BWD_FILTER, R_BN_TRAIN, R_BN_BWD,
    R_RELU_FWD, R_RELU_BWD, R_ADD, R_POOL_FWD, R_POOL_BWD, R_GAP_FWD, R_GAP_BWD,
    R_LINEAR_FWD, R_LINEAR_BWD, R_XENT, R_SUBPAD_FWD, R_SUBPAD_BWD, R_AXPBY, R_SCALE,
    R_ADD_RELU, R_BN_RELU_TRAIN, R_BN_RELU_BWD, R_BN_ADD_RELU_TRAIN
} rec_op;

/* One stored call: tensor descriptors by value (so later changes to the caller's structs
 * do not reach the replay, as with a CUDA graph), which of them were non-NULL, scalars. */
typedef struct rec_call {
    rec_op op;
    tp_tensor t[11];
    unsigned present;
    double s[2];
    int i;
    tp_conv_desc conv;
    tp_bn_desc bn;
    tp_pool_desc pool;
} rec_call;

struct tp_recording {
    rec_call *calls;
    size_t n;
};

static struct {
    tp_backend inner;
    tp_backend_ops ops;
    int recording, spoiled;
    rec_call *calls;
    size_t n, cap;
    size_t fail_at;
    size_t last_calls;
    long replays, live;
} rb;

#define IN rb.inner.ops
#define INSELF rb.inner.self

size_t recording_backend_calls(void) { return rb.last_calls; }
long recording_backend_replays(void) { return rb.replays; }
int recording_backend_open(void) { return rb.recording; }
long recording_backend_live(void) { return rb.live; }
void recording_backend_fail_at(size_t n) { rb.fail_at = n; }

static void keep(rec_call *c, int k, const tp_tensor *t)
{
    if (t) {
        c->t[k] = *t;
        c->present |= 1u << k;
    }
}

static tp_tensor *at(rec_call *c, int k) { return c->present & (1u << k) ? &c->t[k] : NULL; }

static tp_status store(const rec_call *c)
{
    if (rb.fail_at && rb.n + 1 == rb.fail_at) {
        rb.spoiled = 1;
        return services_fail(TP_ERR_UNSUPPORTED, "recording double: call %zu cannot be "
                             "recorded (as asked by the test)", rb.n + 1);
    }
    if (rb.n == rb.cap) {
        size_t cap = rb.cap ? 2 * rb.cap : 64;
        rec_call *calls = realloc(rb.calls, cap * sizeof *calls);
        if (!calls) {
            rb.spoiled = 1;
            return services_fail(TP_ERR_NOMEM, "recording double: out of memory");
        }
        rb.calls = calls;
        rb.cap = cap;
    }
    rb.calls[rb.n++] = *c;
    return TP_OK;
}

static tp_status forbidden(const char *op)
{
    rb.spoiled = 1;
    return services_fail(TP_ERR_INVALID, "%s: not allowed while recording", op);
}

/* Stores the call instead of running it while recording. */
#define RECORD(code, fill)                                                                     \
    do {                                                                                       \
        if (rb.recording) {                                                                    \
            rec_call c_ = {.op = (code)};                                                      \
            rec_call *c = &c_;                                                                 \
            fill;                                                                              \
            return store(c);                                                                   \
        }                                                                                      \
    } while (0)

static tp_status w_alloc(void *self, tp_tensor *t, const char *what)
{
    (void)self;
    return rb.recording ? forbidden("alloc") : IN->alloc(INSELF, t, what);
}

static void w_free(void *self, tp_tensor *t)
{
    (void)self;
    if (rb.recording)
        (void)forbidden("free");
    IN->free(INSELF, t);
}

static tp_status w_sync(void *self)
{
    (void)self;
    return rb.recording ? forbidden("sync") : IN->sync(INSELF);
}

static tp_status w_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream s)
{
    (void)self;
    if (rb.recording && (dst->device == TP_DEVICE_HOST || src->device == TP_DEVICE_HOST))
        return forbidden("copy through host memory");
    RECORD(R_COPY, keep(c, 0, dst); keep(c, 1, src); c->i = (int)s);
    return IN->copy(INSELF, dst, src, s);
}

static tp_status w_fill(void *self, tp_tensor *t, double v)
{
    (void)self;
    RECORD(R_FILL, keep(c, 0, t); c->s[0] = v);
    return IN->fill(INSELF, t, v);
}

static tp_status w_conv_forward(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                const tp_tensor *w, const tp_tensor *bias, tp_tensor *y)
{
    (void)self;
    RECORD(R_CONV_FWD, c->conv = *d; keep(c, 0, x); keep(c, 1, w); keep(c, 2, bias);
           keep(c, 3, y));
    return IN->conv_forward(INSELF, d, x, w, bias, y);
}

static tp_status w_conv_backward_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                      const tp_tensor *w, tp_tensor *dx)
{
    (void)self;
    RECORD(R_CONV_BWD_DATA, c->conv = *d; keep(c, 0, dy); keep(c, 1, w); keep(c, 2, dx));
    return IN->conv_backward_data(INSELF, d, dy, w, dx);
}

static tp_status w_conv_backward_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                        const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias)
{
    (void)self;
    RECORD(R_CONV_BWD_FILTER, c->conv = *d; keep(c, 0, x); keep(c, 1, dy); keep(c, 2, dw);
           keep(c, 3, dbias));
    return IN->conv_backward_filter(INSELF, d, x, dy, dw, dbias);
}

static tp_status w_bn_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                            tp_tensor *rmean, tp_tensor *rvar, tp_tensor *smean,
                            tp_tensor *sinv)
{
    (void)self;
    RECORD(R_BN_TRAIN, c->bn = *d; keep(c, 0, x); keep(c, 1, gamma); keep(c, 2, beta);
           keep(c, 3, y); keep(c, 4, rmean); keep(c, 5, rvar); keep(c, 6, smean);
           keep(c, 7, sinv));
    return IN->batchnorm_train(INSELF, d, x, gamma, beta, y, rmean, rvar, smean, sinv);
}

static tp_status w_bn_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *dy, const tp_tensor *gamma,
                               const tp_tensor *smean, const tp_tensor *sinv, tp_tensor *dx,
                               tp_tensor *dgamma, tp_tensor *dbeta)
{
    (void)self;
    RECORD(R_BN_BWD, c->bn = *d; keep(c, 0, x); keep(c, 1, dy); keep(c, 2, gamma);
           keep(c, 3, smean); keep(c, 4, sinv); keep(c, 5, dx); keep(c, 6, dgamma);
           keep(c, 7, dbeta));
    return IN->batchnorm_backward(INSELF, d, x, dy, gamma, smean, sinv, dx, dgamma, dbeta);
}

static tp_status w_relu_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    RECORD(R_RELU_FWD, keep(c, 0, x); keep(c, 1, y));
    return IN->relu_forward(INSELF, x, y);
}

static tp_status w_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy,
                                 tp_tensor *dx)
{
    (void)self;
    RECORD(R_RELU_BWD, keep(c, 0, y); keep(c, 1, dy); keep(c, 2, dx));
    return IN->relu_backward(INSELF, y, dy, dx);
}

static tp_status w_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    (void)self;
    RECORD(R_ADD, keep(c, 0, a); keep(c, 1, b); keep(c, 2, y));
    return IN->add(INSELF, a, b, y);
}

static tp_status w_pool_forward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                tp_tensor *y)
{
    (void)self;
    RECORD(R_POOL_FWD, c->pool = *d; keep(c, 0, x); keep(c, 1, y));
    return IN->pool_forward(INSELF, d, x, y);
}

static tp_status w_pool_backward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                 const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    RECORD(R_POOL_BWD, c->pool = *d; keep(c, 0, x); keep(c, 1, y); keep(c, 2, dy);
           keep(c, 3, dx));
    return IN->pool_backward(INSELF, d, x, y, dy, dx);
}

static tp_status w_gap_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    RECORD(R_GAP_FWD, keep(c, 0, x); keep(c, 1, y));
    return IN->global_avgpool_forward(INSELF, x, y);
}

static tp_status w_gap_backward(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    RECORD(R_GAP_BWD, keep(c, 0, dy); keep(c, 1, dx));
    return IN->global_avgpool_backward(INSELF, dy, dx);
}

static tp_status w_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                                  const tp_tensor *bias, tp_tensor *y)
{
    (void)self;
    RECORD(R_LINEAR_FWD, keep(c, 0, x); keep(c, 1, w); keep(c, 2, bias); keep(c, 3, y));
    return IN->linear_forward(INSELF, x, w, bias, y);
}

static tp_status w_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                                   const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                                   tp_tensor *db)
{
    (void)self;
    RECORD(R_LINEAR_BWD, keep(c, 0, x); keep(c, 1, w); keep(c, 2, dy); keep(c, 3, dx);
           keep(c, 4, dw); keep(c, 5, db));
    return IN->linear_backward(INSELF, x, w, dy, dx, dw, db);
}

static tp_status w_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                                double smoothing, double grad_scale, tp_tensor *loss,
                                tp_tensor *dlogits)
{
    (void)self;
    RECORD(R_XENT, keep(c, 0, logits); keep(c, 1, labels); keep(c, 2, loss);
           keep(c, 3, dlogits); c->s[0] = smoothing; c->s[1] = grad_scale);
    return IN->softmax_xent(INSELF, logits, labels, smoothing, grad_scale, loss, dlogits);
}

static tp_status w_subpad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    RECORD(R_SUBPAD_FWD, c->i = stride; keep(c, 0, x); keep(c, 1, y));
    return IN->subsample_pad_forward(INSELF, stride, x, y);
}

static tp_status w_subpad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    RECORD(R_SUBPAD_BWD, c->i = stride; keep(c, 0, dy); keep(c, 1, dx));
    return IN->subsample_pad_backward(INSELF, stride, dy, dx);
}

static tp_status w_axpby(void *self, double alpha, const tp_tensor *x, double beta,
                         tp_tensor *y)
{
    (void)self;
    RECORD(R_AXPBY, c->s[0] = alpha; c->s[1] = beta; keep(c, 0, x); keep(c, 1, y));
    return IN->axpby(INSELF, alpha, x, beta, y);
}

static tp_status w_scale(void *self, double alpha, tp_tensor *y)
{
    (void)self;
    RECORD(R_SCALE, c->s[0] = alpha; keep(c, 0, y));
    return IN->scale(INSELF, alpha, y);
}

static tp_status w_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    (void)self;
    RECORD(R_ADD_RELU, keep(c, 0, a); keep(c, 1, b); keep(c, 2, y));
    return IN->add_relu(INSELF, a, b, y);
}

static tp_status w_bn_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                 tp_tensor *rmean, tp_tensor *rvar, tp_tensor *smean,
                                 tp_tensor *sinv, tp_tensor *ws)
{
    (void)self;
    RECORD(R_BN_RELU_TRAIN, c->bn = *d; keep(c, 0, x); keep(c, 1, gamma); keep(c, 2, beta);
           keep(c, 3, y); keep(c, 4, rmean); keep(c, 5, rvar); keep(c, 6, smean);
           keep(c, 7, sinv); keep(c, 8, ws));
    return IN->batchnorm_relu_train(INSELF, d, x, gamma, beta, y, rmean, rvar, smean, sinv, ws);
}

static tp_status w_bn_add_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                     const tp_tensor *res, const tp_tensor *gamma,
                                     const tp_tensor *beta, tp_tensor *y, tp_tensor *rmean,
                                     tp_tensor *rvar, tp_tensor *smean, tp_tensor *sinv)
{
    (void)self;
    RECORD(R_BN_ADD_RELU_TRAIN, c->bn = *d; keep(c, 0, x); keep(c, 1, res); keep(c, 2, gamma);
           keep(c, 3, beta); keep(c, 4, y); keep(c, 5, rmean); keep(c, 6, rvar);
           keep(c, 7, smean); keep(c, 8, sinv));
    return IN->batchnorm_add_relu_train(INSELF, d, x, res, gamma, beta, y, rmean, rvar, smean,
                                        sinv);
}

static tp_status w_bn_relu_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                    const tp_tensor *y, const tp_tensor *ws,
                                    const tp_tensor *dy, const tp_tensor *gamma,
                                    const tp_tensor *smean, const tp_tensor *sinv,
                                    tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta)
{
    (void)self;
    RECORD(R_BN_RELU_BWD, c->bn = *d; keep(c, 0, x); keep(c, 1, y); keep(c, 2, ws);
           keep(c, 3, dy); keep(c, 4, gamma); keep(c, 5, smean); keep(c, 6, sinv);
           keep(c, 7, dx); keep(c, 8, dgamma); keep(c, 9, dbeta));
    return IN->batchnorm_relu_backward(INSELF, d, x, y, ws, dy, gamma, smean, sinv, dx, dgamma,
                                       dbeta);
}

/* Operations the double does not store: they fail while recording rather than run at once
 * and silently miss the replay. */
static tp_status w_bn_infer(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta,
                            const tp_tensor *rmean, const tp_tensor *rvar, tp_tensor *y)
{
    (void)self;
    return rb.recording ? forbidden("batchnorm_infer (in this double)")
                        : IN->batchnorm_infer(INSELF, d, x, gamma, beta, rmean, rvar, y);
}

static tp_status w_sum_squares(void *self, const tp_tensor *x, tp_tensor *out)
{
    (void)self;
    return rb.recording ? forbidden("sum_squares (in this double)")
                        : IN->sum_squares(INSELF, x, out);
}

static tp_status w_sgd_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *v,
                              double lr, double momentum, double wd, int nesterov)
{
    (void)self;
    return rb.recording ? forbidden("sgd_update (in this double)")
                        : IN->sgd_update(INSELF, p, g, v, lr, momentum, wd, nesterov);
}

static tp_status w_adam_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *m,
                               tp_tensor *v, double lr, double b1, double b2, double eps,
                               double wd, int decoupled, int64_t step)
{
    (void)self;
    return rb.recording ? forbidden("adam_update (in this double)")
                        : IN->adam_update(INSELF, p, g, m, v, lr, b1, b2, eps, wd, decoupled,
                                          step);
}

/* Runs one stored call on the inner backend. */
static tp_status run(rec_call *c)
{
    void *s = INSELF;
    switch (c->op) {
    case R_COPY: return IN->copy(s, at(c, 0), at(c, 1), (tp_stream)c->i);
    case R_FILL: return IN->fill(s, at(c, 0), c->s[0]);
    case R_CONV_FWD: return IN->conv_forward(s, &c->conv, at(c, 0), at(c, 1), at(c, 2), at(c, 3));
    case R_CONV_BWD_DATA:
        return IN->conv_backward_data(s, &c->conv, at(c, 0), at(c, 1), at(c, 2));
    case R_CONV_BWD_FILTER:
        return IN->conv_backward_filter(s, &c->conv, at(c, 0), at(c, 1), at(c, 2), at(c, 3));
    case R_BN_TRAIN:
        return IN->batchnorm_train(s, &c->bn, at(c, 0), at(c, 1), at(c, 2), at(c, 3), at(c, 4),
                                   at(c, 5), at(c, 6), at(c, 7));
    case R_BN_BWD:
        return IN->batchnorm_backward(s, &c->bn, at(c, 0), at(c, 1), at(c, 2), at(c, 3),
                                      at(c, 4), at(c, 5), at(c, 6), at(c, 7));
    case R_RELU_FWD: return IN->relu_forward(s, at(c, 0), at(c, 1));
    case R_RELU_BWD: return IN->relu_backward(s, at(c, 0), at(c, 1), at(c, 2));
    case R_ADD: return IN->add(s, at(c, 0), at(c, 1), at(c, 2));
    case R_POOL_FWD: return IN->pool_forward(s, &c->pool, at(c, 0), at(c, 1));
    case R_POOL_BWD:
        return IN->pool_backward(s, &c->pool, at(c, 0), at(c, 1), at(c, 2), at(c, 3));
    case R_GAP_FWD: return IN->global_avgpool_forward(s, at(c, 0), at(c, 1));
    case R_GAP_BWD: return IN->global_avgpool_backward(s, at(c, 0), at(c, 1));
    case R_LINEAR_FWD: return IN->linear_forward(s, at(c, 0), at(c, 1), at(c, 2), at(c, 3));
    case R_LINEAR_BWD:
        return IN->linear_backward(s, at(c, 0), at(c, 1), at(c, 2), at(c, 3), at(c, 4),
                                   at(c, 5));
    case R_XENT:
        return IN->softmax_xent(s, at(c, 0), at(c, 1), c->s[0], c->s[1], at(c, 2), at(c, 3));
    case R_SUBPAD_FWD: return IN->subsample_pad_forward(s, c->i, at(c, 0), at(c, 1));
    case R_SUBPAD_BWD: return IN->subsample_pad_backward(s, c->i, at(c, 0), at(c, 1));
    case R_AXPBY: return IN->axpby(s, c->s[0], at(c, 0), c->s[1], at(c, 1));
    case R_SCALE: return IN->scale(s, c->s[0], at(c, 0));
    case R_ADD_RELU: return IN->add_relu(s, at(c, 0), at(c, 1), at(c, 2));
    case R_BN_RELU_TRAIN:
        return IN->batchnorm_relu_train(s, &c->bn, at(c, 0), at(c, 1), at(c, 2), at(c, 3),
                                        at(c, 4), at(c, 5), at(c, 6), at(c, 7), at(c, 8));
    case R_BN_RELU_BWD:
        return IN->batchnorm_relu_backward(s, &c->bn, at(c, 0), at(c, 1), at(c, 2), at(c, 3),
                                           at(c, 4), at(c, 5), at(c, 6), at(c, 7), at(c, 8),
                                           at(c, 9));
    case R_BN_ADD_RELU_TRAIN:
        return IN->batchnorm_add_relu_train(s, &c->bn, at(c, 0), at(c, 1), at(c, 2), at(c, 3),
                                            at(c, 4), at(c, 5), at(c, 6), at(c, 7), at(c, 8));
    }
    return services_fail(TP_ERR_INVALID, "recording double: unknown stored call %d", (int)c->op);
}

static tp_status w_capture_begin(void *self)
{
    (void)self;
    if (rb.recording)
        return services_fail(TP_ERR_INVALID, "capture_begin: already recording");
    rb.recording = 1;
    rb.spoiled = 0;
    rb.n = 0;
    return TP_OK;
}

static tp_status w_capture_end(void *self, tp_recording **out)
{
    (void)self;
    *out = NULL;
    if (!rb.recording)
        return services_fail(TP_ERR_INVALID, "capture_end: not recording");
    rb.recording = 0;
    if (rb.spoiled)
        return services_fail(TP_ERR_INVALID, "capture_end: an operation failed while "
                             "recording; the recording was discarded");
    tp_recording *r = calloc(1, sizeof *r);
    if (!r || !(r->calls = malloc((rb.n ? rb.n : 1) * sizeof *r->calls))) {
        free(r);
        return services_fail(TP_ERR_NOMEM, "capture_end: out of memory");
    }
    if (rb.n) /* an empty recording has no call array yet */
        memcpy(r->calls, rb.calls, rb.n * sizeof *r->calls);
    r->n = rb.last_calls = rb.n;
    rb.live++;
    *out = r;
    return TP_OK;
}

static tp_status w_replay(void *self, tp_recording *r)
{
    (void)self;
    if (rb.recording)
        return services_fail(TP_ERR_INVALID, "replay: not allowed while recording");
    for (size_t i = 0; i < r->n; i++) {
        tp_status st = run(&r->calls[i]);
        if (st)
            return st;
    }
    rb.replays++;
    return TP_OK;
}

static void w_recording_free(void *self, tp_recording *r)
{
    (void)self;
    if (!r)
        return;
    free(r->calls);
    free(r);
    rb.live--;
}

tp_backend recording_backend(tp_backend inner)
{
    free(rb.calls);
    memset(&rb, 0, sizeof rb);
    rb.inner = inner;
    rb.ops = *inner.ops;
    tp_backend_ops *o = &rb.ops;
    o->alloc = w_alloc;
    o->free = w_free;
    o->sync = w_sync;
    o->copy = w_copy;
    o->fill = w_fill;
    o->conv_forward = w_conv_forward;
    o->conv_backward_data = w_conv_backward_data;
    o->conv_backward_filter = w_conv_backward_filter;
    o->batchnorm_train = w_bn_train;
    o->batchnorm_backward = w_bn_backward;
    o->relu_forward = w_relu_forward;
    o->relu_backward = w_relu_backward;
    o->add = w_add;
    o->pool_forward = w_pool_forward;
    o->pool_backward = w_pool_backward;
    o->global_avgpool_forward = w_gap_forward;
    o->global_avgpool_backward = w_gap_backward;
    o->linear_forward = w_linear_forward;
    o->linear_backward = w_linear_backward;
    o->softmax_xent = w_softmax_xent;
    o->subsample_pad_forward = w_subpad_forward;
    o->subsample_pad_backward = w_subpad_backward;
    o->axpby = w_axpby;
    o->scale = w_scale;
    o->batchnorm_infer = w_bn_infer;
    o->sum_squares = w_sum_squares;
    o->sgd_update = inner.ops->sgd_update ? w_sgd_update : NULL;
    o->adam_update = inner.ops->adam_update ? w_adam_update : NULL;
    if (inner.ops->add_relu) {
        o->add_relu = w_add_relu;
        o->batchnorm_relu_train = w_bn_relu_train;
        o->batchnorm_relu_backward = w_bn_relu_backward;
    }
    o->batchnorm_add_relu_train =
        inner.ops->batchnorm_add_relu_train ? w_bn_add_relu_train : NULL;
    /* Operations this double does not record would run at once while recording: hide
     * them, so the callers take their other paths. */
    o->conv_backward_data_add = NULL;
    o->sgd_update_dev = NULL;
    o->adam_update_dev = NULL;
    o->sgd_update_group_dev = NULL;
    o->adam_update_group_dev = NULL;
    o->check_finite_group = NULL;
    o->native_stream = NULL;
    o->capture_begin = w_capture_begin;
    o->capture_end = w_capture_end;
    o->replay = w_replay;
    o->recording_free = w_recording_free;
    return (tp_backend){&rb.ops, NULL};
}
