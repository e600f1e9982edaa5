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

/* Copies image n of a 4-D tensor between layouts, element by element of any dtype size. */
static void relayout_image(tp_tensor *dst, const tp_tensor *src, int64_t n, size_t es)
{
    const int64_t C = src->shape[1], H = src->shape[2], W = src->shape[3];
    unsigned char *d = dst->data;
    const unsigned char *s = src->data;
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++)
                memcpy(d + (size_t)cpu_offset4(dst, n, c, h, w) * es,
                       s + (size_t)cpu_offset4(src, n, c, h, w) * es, es);
}

static void copy_relayout(cpu_backend *be, tp_tensor *dst, const tp_tensor *src)
{
    const size_t es = tp_dtype_size(src->dtype);
    const int64_t N = src->shape[0], work = (int64_t)cpu_count(src);
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t n = 0; n < N; n++)
        relayout_image(dst, src, n, es);
}

static int is_f32_bf16(tp_dtype a, tp_dtype b)
{
    return (a == TP_DTYPE_F32 && b == TP_DTYPE_BF16) || (a == TP_DTYPE_BF16 && b == TP_DTYPE_F32);
}

/* One element converted f32 <-> bf16 with the SDK's own rounding (tp_bf16_from_f32: to
 * nearest even, NaN kept NaN), so the result is bit for bit what the SDK specifies. */
static void convert_element(tp_tensor *dst, int64_t di, const tp_tensor *src, int64_t si)
{
    if (src->dtype == TP_DTYPE_F32)
        ((uint16_t *)dst->data)[di] = tp_bf16_from_f32(((const float *)src->data)[si]);
    else
        ((float *)dst->data)[di] = tp_f32_from_bf16(((const uint16_t *)src->data)[si]);
}

/* f32 <-> bf16 over the same memory order (the common case: the input batch entering a bf16
 * graph), in one flat loop per direction. */
static void convert_flat(cpu_backend *be, tp_tensor *dst, const tp_tensor *src)
{
    const int64_t count = (int64_t)cpu_count(src);
    cpu_apply_threads(be);
    if (src->dtype == TP_DTYPE_F32) {
        const float *s = src->data;
        uint16_t *d = dst->data;
        CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < count; i++)
            d[i] = tp_bf16_from_f32(s[i]);
    } else {
        const uint16_t *s = src->data;
        float *d = dst->data;
        CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < count; i++)
            d[i] = tp_f32_from_bf16(s[i]);
    }
}

/* f32 <-> bf16; 4-D layouts may differ (then walked image by image, as copy_relayout walks
 * them). Used on the input batch and in tests, never per layer. */
static void copy_convert(cpu_backend *be, tp_tensor *dst, const tp_tensor *src)
{
    if (src->ndim != 4 || dst->layout == src->layout) {
        convert_flat(be, dst, src);
        return;
    }
    const int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    const int64_t work = (int64_t)cpu_count(src);
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    convert_element(dst, cpu_offset4(dst, n, c, h, w), src,
                                    cpu_offset4(src, n, c, h, w));
}

/* Below this many elements a plain memcpy beats starting oneDNN's threads. */
#define CPU_COPY_PARALLEL_MIN 65536

static void prim_free(void *payload)
{
    cpu_prim_destroy(payload);
    free(payload);
}

/* f32 copies, layout conversions included, on a cached oneDNN reorder: it runs on every
 * thread, where memcpy runs on one and the element-wise conversion loop is slower still.
 * The graph executor copies gradients at every residual addition, so this is on the
 * training step's path. */
static tp_status copy_reorder(cpu_backend *be, tp_tensor *dst, const tp_tensor *src)
{
    tp_status st = TP_OK;
    cpu_key key;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_memory_desc_t src_md, dst_md;
    cpu_key_init(&key, CPU_OP_COPY);
    cpu_key_add_tensor(&key, src);
    cpu_key_add_tensor(&key, dst);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    cpu_prim *p = cpu_cache_find(&be->cache, &key);
    if (!p) {
        cpu_md_for_tensor(src, &src_md);
        cpu_md_for_tensor(dst, &dst_md);
        p = calloc(1, sizeof *p);
        if (!p) {
            st = be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu copy: out of memory");
            goto fail;
        }
        CPU_DNNL(be, dnnl_reorder_primitive_desc_create, &rpd, &src_md, be->engine, &dst_md,
                 be->engine, NULL);
        if ((st = cpu_prim_create(be, p, rpd)) ||
            (st = cpu_prim_bind(be, p, DNNL_ARG_FROM, CPU_ARG_IN, &src_md, &src_md)) ||
            (st = cpu_prim_bind(be, p, DNNL_ARG_TO, CPU_ARG_OUT, &dst_md, &dst_md)))
            goto fail;
        dnnl_primitive_desc_destroy(rpd);
        rpd = NULL;
        cpu_cache_put(&be->cache, &key, p, prim_free);
    }
    void *h[2] = { src->data, dst->data };
    st = cpu_prim_run(be, p, h);
    pthread_mutex_unlock(&be->lock);
    return st;
fail:
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (p)
        prim_free(p);
    pthread_mutex_unlock(&be->lock);
    return st;
}

tp_status cpu_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    cpu_backend *be = self;
    (void)stream;
    if (!dst->data || !src->data)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu copy: %s is not allocated",
                              dst->data ? "src" : "dst");
    const int converts = dst->dtype != src->dtype;
    if (converts && !is_f32_bf16(dst->dtype, src->dtype))
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu copy: dtypes differ (dst %s, src %s); only f32 <-> "
                              "bf16 converts", tp_dtype_name(dst->dtype),
                              tp_dtype_name(src->dtype));
    tp_status st = cpu_check_same_shape(be, "copy", "dst", dst, "src", src);
    if (st)
        return st;
    if (converts) {
        if (tp_tensors_overlap(dst, src))
            return be->host->fail(be->host, TP_ERR_INVALID,
                                  "backend-cpu copy: a converting copy's dst overlaps its src");
        copy_convert(be, dst, src);
        return TP_OK;
    }
    if (dst->data == src->data && (dst->ndim != 4 || dst->layout == src->layout))
        return TP_OK;
    if (src->dtype == TP_DTYPE_F32 && src->ndim == 4 && dst->data != src->data &&
        cpu_count(src) > 0 &&
        (dst->layout != src->layout || cpu_count(src) >= CPU_COPY_PARALLEL_MIN))
        return copy_reorder(be, dst, src);
    if (dst->ndim == 4 && dst->layout != src->layout) {
        copy_relayout(be, dst, src);
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
    const int64_t n = (int64_t)cpu_count(t);
    cpu_apply_threads(be);
    switch (t->dtype) {
    case TP_DTYPE_F32: {
        float *p = t->data, v = (float)value;
        CPU_OMP(omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < n; i++)
            p[i] = v;
        return TP_OK;
    }
    case TP_DTYPE_I32: {
        int32_t *p = t->data, v = (int32_t)value;
        for (int64_t i = 0; i < n; i++)
            p[i] = v;
        return TP_OK;
    }
    case TP_DTYPE_BF16: {
        uint16_t *p = t->data, v = tp_bf16_from_f32((float)value);
        CPU_OMP(omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < n; i++)
            p[i] = v;
        return TP_OK;
    }
    case TP_DTYPE_U8:
        memset(t->data, (int)(unsigned char)value, (size_t)n);
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
