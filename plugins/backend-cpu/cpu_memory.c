/* backend-cpu: memory, copies, fill and events. "Device" and pinned memory are ordinary
 * host memory here, and every operation completes before it returns, so events only need to
 * exist and be cheap. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

struct tp_event {
    uint64_t stamp; /* the event clock when last recorded; work is already complete */
};

tp_status cpu_alloc(void *self, tp_tensor *t, const char *what)
{
    cpu_backend *be = self;
    const char *name = what ? what : "tensor";
    if (t->ndim < 1 || t->ndim > TP_TENSOR_MAX_DIMS || tp_dtype_size(t->dtype) == 0)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu alloc: %s has %d dimensions or unknown dtype %d",
                              name, t->ndim, (int)t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return be->host->fail(be->host, TP_ERR_INVALID,
                                  "backend-cpu alloc: %s has negative dimension %d (%lld)", name,
                                  i, (long long)t->shape[i]);
    size_t bytes = tp_tensor_bytes(t);
    /* Cache-line aligned and rounded up, as aligned_alloc requires and SIMD loads like. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0)
        rounded = 64;
    t->data = aligned_alloc(64, rounded);
    if (!t->data)
        return be->host->fail(be->host, TP_ERR_NOMEM,
                              "backend-cpu alloc: out of memory for %s (%zu bytes)", name, bytes);
    return TP_OK;
}

void cpu_free(void *self, tp_tensor *t)
{
    (void)self;
    if (!t)
        return;
    free(t->data);
    t->data = NULL;
}

/* Copies a 4-D tensor between layouts, element by element of any dtype size. */
static void copy_relayout(tp_tensor *dst, const tp_tensor *src)
{
    const size_t es = tp_dtype_size(src->dtype);
    const int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    unsigned char *d = dst->data;
    const unsigned char *s = src->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    memcpy(d + (size_t)cpu_offset4(dst, n, c, h, w) * es,
                           s + (size_t)cpu_offset4(src, n, c, h, w) * es, es);
}

tp_status cpu_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    cpu_backend *be = self;
    (void)stream;
    if (!dst->data || !src->data)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu copy: %s is not allocated",
                              dst->data ? "src" : "dst");
    if (dst->dtype != src->dtype)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu copy: dtypes differ (dst %s, src %s)",
                              tp_dtype_name(dst->dtype), tp_dtype_name(src->dtype));
    tp_status st = cpu_check_same_shape(be, "copy", "dst", dst, "src", src);
    if (st)
        return st;
    if (dst->ndim == 4 && dst->layout != src->layout) {
        copy_relayout(dst, src);
    } else if (dst->data != src->data) {
        memcpy(dst->data, src->data, tp_tensor_bytes(src));
    }
    return TP_OK;
}

tp_status cpu_fill(void *self, tp_tensor *t, double value)
{
    cpu_backend *be = self;
    if (!t->data)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu fill: tensor not allocated");
    size_t n = cpu_count(t);
    switch (t->dtype) {
    case TP_DTYPE_F32: {
        float *p = t->data, v = (float)value;
        for (size_t i = 0; i < n; i++)
            p[i] = v;
        return TP_OK;
    }
    case TP_DTYPE_I32: {
        int32_t *p = t->data, v = (int32_t)value;
        for (size_t i = 0; i < n; i++)
            p[i] = v;
        return TP_OK;
    }
    case TP_DTYPE_U8:
        memset(t->data, (int)(unsigned char)value, n);
        return TP_OK;
    default:
        return be->host->fail(be->host, TP_ERR_UNSUPPORTED,
                              "backend-cpu fill: dtype %s is not supported",
                              tp_dtype_name(t->dtype));
    }
}

tp_status cpu_event_create(void *self, tp_event **ev)
{
    cpu_backend *be = self;
    *ev = calloc(1, sizeof **ev);
    if (!*ev)
        return be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu: cannot allocate an event");
    return TP_OK;
}

void cpu_event_destroy(void *self, tp_event *ev)
{
    (void)self;
    free(ev);
}

tp_status cpu_event_record(void *self, tp_event *ev, tp_stream stream)
{
    cpu_backend *be = self;
    (void)stream;
    if (!ev)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu event_record: NULL event");
    pthread_mutex_lock(&be->lock);
    ev->stamp = ++be->event_clock;
    pthread_mutex_unlock(&be->lock);
    return TP_OK;
}

tp_status cpu_stream_wait(void *self, tp_stream stream, tp_event *ev)
{
    cpu_backend *be = self;
    (void)stream;
    if (!ev)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu stream_wait: NULL event");
    return TP_OK; /* the recorded work has completed already */
}

tp_status cpu_event_sync(void *self, tp_event *ev)
{
    cpu_backend *be = self;
    if (!ev)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu event_sync: NULL event");
    return TP_OK;
}

tp_status cpu_sync(void *self)
{
    (void)self;
    return TP_OK;
}
