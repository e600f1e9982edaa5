/* backend-cuda: memory, copies, fills, streams and events.
 *
 * Device tensors come from cudaMalloc, pinned ones from cudaMallocHost, host ones from the
 * host's allocator. Copies are cudaMemcpyAsync on the named stream; a copy that changes
 * the layout (NCHW <-> NHWC) or the dtype (f32 <-> bf16) runs a kernel when both sides are
 * device memory or both pinned, and otherwise copies the farther side whole through a
 * stream-ordered temporary (cudaMallocAsync/cudaFreeAsync) and runs the kernel on the nearer
 * one; only two pageable host buffers are transformed on the CPU. A copy on the
 * copy stream that reads device memory is ordered after the work already enqueued on the
 * compute stream (a device-side event wait, not a host wait). Nothing here waits for the
 * device on the host except event_sync() and sync() (and copies into pageable host
 * memory, which CUDA completes before returning). */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

#include <stdlib.h>
#include <string.h>

struct tp_event {
    cudaEvent_t event;
};

cudaStream_t cuda_stream(cuda_backend *b, tp_stream s)
{
    return s == TP_STREAM_COPY ? b->copy : b->compute;
}

static tp_status check_stream(cuda_backend *b, const char *op, tp_stream s)
{
    if (s != TP_STREAM_COMPUTE && s != TP_STREAM_COPY)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: unknown stream %d", op, (int)s);
    return TP_OK;
}

/* Grows one compute-stream arena. The old buffer is released in stream order, after the
 * work already enqueued on the compute stream that may still read it. */
static tp_status arena_reserve(cuda_backend *b, void **buf, size_t *size, size_t bytes,
                               const char *what, void **out)
{
    if (bytes > *size) {
        /* A recorded step must find its arenas grown by an unrecorded run of it. */
        tp_status forbidden =
            cuda_capture_forbid(b, "growing an arena (cuDNN workspace or scratch)");
        if (forbidden)
            return forbidden;
        size_t want = bytes + (bytes >> 3);  /* headroom: fewer regrowths */
        want = (want + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        if (*buf && b->live_recordings > 0) {
            /* A recording may point into the old buffer: keep it for the recording. */
            if (b->n_retired == b->retired_cap) {
                size_t cap = b->retired_cap ? 2 * b->retired_cap : 8;
                void **grown = b->host->realloc(b->retired, cap * sizeof *grown);
                if (!grown)
                    return b->host->fail(b->host, TP_ERR_NOMEM, "%s: out of host memory", what);
                b->retired = grown;
                b->retired_cap = cap;
            }
            b->retired[b->n_retired++] = *buf;
            *buf = NULL;
            *size = 0;
        } else if (*buf) {
            tp_status st = CUDA_RT(cudaFreeAsync(*buf, b->compute));
            *buf = NULL;
            *size = 0;
            if (st)
                return st;
        }
        cudaError_t e = cudaMallocAsync(buf, want, b->compute);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            *buf = NULL;
            return b->host->fail(b->host,
                                 e == cudaErrorMemoryAllocation ? TP_ERR_NOMEM : TP_ERR_LIBRARY,
                                 "cudaMallocAsync(%s, %zu bytes = %.1f MiB) failed: %s; try a "
                                 "smaller batch size or workspace_mb",
                                 what, want, (double)want / 1048576.0, cudaGetErrorString(e));
        }
        *size = want;
    }
    *out = *buf;
    return TP_OK;
}

tp_status cuda_workspace(cuda_backend *b, size_t bytes, void **out)
{
    return arena_reserve(b, &b->workspace, &b->workspace_size, bytes, "cuDNN workspace", out);
}

tp_status cuda_scratch(cuda_backend *b, size_t bytes, void **out)
{
    return arena_reserve(b, &b->scratch, &b->scratch_size, bytes, "scratch", out);
}

void cuda_retired_release(cuda_backend *b)
{
    for (size_t i = 0; i < b->n_retired; i++)
        (void)cudaFreeAsync(b->retired[i], b->compute);
    b->n_retired = 0;
}

void cuda_arenas_release(cuda_backend *b)
{
    cuda_retired_release(b);
    b->host->free(b->retired);
    b->retired = NULL;
    b->retired_cap = 0;
    if (b->workspace)
        cudaFreeAsync(b->workspace, b->compute);
    if (b->scratch)
        cudaFreeAsync(b->scratch, b->compute);
    b->workspace = b->scratch = NULL;
    b->workspace_size = b->scratch_size = 0;
}

tp_status cuda_alloc(cuda_backend *b, tp_tensor *t, const char *what)
{
    if (!what)
        what = "tensor";
    if (!t || t->ndim < 1 || t->ndim > TP_TENSOR_MAX_DIMS || tp_dtype_size(t->dtype) == 0)
        return b->host->fail(b->host, TP_ERR_INVALID, "alloc(%s): bad tensor descriptor", what);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return b->host->fail(b->host, TP_ERR_INVALID, "alloc(%s): negative dimension %lld",
                                 what, (long long)t->shape[i]);
    size_t bytes = tp_tensor_bytes(t);
    if (bytes == 0)
        bytes = 4; /* a valid pointer even for an empty tensor */
    t->data = NULL;
    cudaError_t e = cudaSuccess;
    switch (t->device) {
    case TP_DEVICE_HOST:
        t->data = b->host->alloc(bytes);
        if (!t->data)
            return b->host->fail(b->host, TP_ERR_NOMEM,
                                 "alloc(%s): out of host memory for %zu bytes", what, bytes);
        return TP_OK;
    case TP_DEVICE_PINNED:
        e = cudaMallocHost(&t->data, bytes);
        break;
    case TP_DEVICE_DEVICE:
        e = cudaMalloc(&t->data, bytes);
        break;
    default:
        return b->host->fail(b->host, TP_ERR_INVALID, "alloc(%s): unknown device %d", what,
                             (int)t->device);
    }
    if (e == cudaSuccess)
        return TP_OK;
    (void)cudaGetLastError();
    t->data = NULL;
    const char *call = t->device == TP_DEVICE_PINNED ? "cudaMallocHost" : "cudaMalloc";
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        if (t->device == TP_DEVICE_DEVICE)
            (void)cudaMemGetInfo(&free_b, &total_b);
        return b->host->fail(b->host, TP_ERR_NOMEM,
                             "%s(%s, %zu bytes = %.1f MiB): out of %s memory (%.1f MiB free of "
                             "%.1f MiB on GPU %d); try a smaller batch size",
                             call, what, bytes, (double)bytes / 1048576.0,
                             t->device == TP_DEVICE_PINNED ? "pinned host" : "device",
                             (double)free_b / 1048576.0, (double)total_b / 1048576.0, b->device);
    }
    return b->host->fail(b->host, TP_ERR_LIBRARY, "%s(%s, %zu bytes) failed: %s", call, what,
                         bytes, cudaGetErrorString(e));
}

void cuda_free(cuda_backend *b, tp_tensor *t)
{
    if (!t || !t->data)
        return;
    cudaError_t e = cudaSuccess;
    switch (t->device) {
    case TP_DEVICE_HOST: b->host->free(t->data); break;
    case TP_DEVICE_PINNED: e = cudaFreeHost(t->data); break;
    case TP_DEVICE_DEVICE: e = cudaFree(t->data); break;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        b->host->log(b->host, TP_LOG_WARN, "cuda", "freeing a tensor failed: %s",
                     cudaGetErrorString(e));
    }
    t->data = NULL;
}

/* Host-side permute for copies between two host buffers. */
static void host_permute(const void *src, ck_shape s, void *dst, size_t esize)
{
    const unsigned char *in = src;
    unsigned char *out = dst;
    int64_t i = 0;
    /* Walk the destination in its own order; the source offset follows the other layout. */
    for (int64_t n = 0; n < s.n; n++) {
        if (s.nhwc) { /* src NHWC -> dst NCHW */
            for (int64_t c = 0; c < s.c; c++)
                for (int64_t h = 0; h < s.h; h++)
                    for (int64_t w = 0; w < s.w; w++, i++)
                        memcpy(out + i * esize,
                               in + (((n * s.h + h) * s.w + w) * s.c + c) * esize, esize);
        } else { /* src NCHW -> dst NHWC */
            for (int64_t h = 0; h < s.h; h++)
                for (int64_t w = 0; w < s.w; w++)
                    for (int64_t c = 0; c < s.c; c++, i++)
                        memcpy(out + i * esize,
                               in + (((n * s.c + c) * s.h + h) * s.w + w) * esize, esize);
        }
    }
}

/* Device or pinned memory, in stream order on s: dst (described by dd) = src (described by sd), the
 * f32 <-> bf16 conversion when the dtypes differ (with any layout change), else the layout
 * permute. */
static tp_status device_transform(cuda_backend *b, const void *src, const tp_tensor *sd,
                                  void *dst, const tp_tensor *dd, cudaStream_t s)
{
    int dst_nhwc = dd->ndim == 4 && dd->layout == TP_LAYOUT_NHWC;
    if (sd->dtype != dd->dtype)
        return CUDA_RT(ck_convert(src, (int)sd->dtype, cuda_ck_shape(sd), dst, (int)dd->dtype,
                                  dst_nhwc, s));
    return CUDA_RT(ck_permute(src, cuda_ck_shape(sd), dst, dst_nhwc,
                              (int)tp_dtype_size(sd->dtype), s));
}

/* How near a tensor's memory is to the kernels: device memory, pinned memory (which kernels
 * reach at the same address under unified addressing, but across the bus), pageable host
 * memory (which they cannot reach). */
static int kernel_reach(const tp_tensor *t)
{
    return t->device == TP_DEVICE_DEVICE ? 2 : t->device == TP_DEVICE_PINNED ? 1 : 0;
}

/* device_transform between two kinds of memory: the farther side is copied whole through
 * a device temporary (a bulk copy at full bus speed, where a kernel gathering across the bus
 * would not be), and the kernel works on the nearer side, all in stream order. */
static tp_status staged_transform(cuda_backend *b, tp_tensor *dst, const tp_tensor *src,
                                  cudaStream_t s)
{
    tp_status st;
    void *tmp = NULL;
    int upload = kernel_reach(src) < kernel_reach(dst); /* the source is the farther side */
    size_t bytes = upload ? tp_tensor_bytes(src) : tp_tensor_bytes(dst);
    if ((st = cuda_temp_alloc(b, s, bytes,
                              src->dtype == dst->dtype ? "layout staging buffer"
                                                       : "dtype conversion staging buffer",
                              "a smaller batch size", &tmp)))
        return st;
    if (upload) {
        st = CUDA_RT(cudaMemcpyAsync(tmp, src->data, bytes, cudaMemcpyDefault, s));
        if (!st)
            st = device_transform(b, tmp, src, dst->data, dst, s);
    } else {
        st = device_transform(b, src->data, src, tmp, dst, s);
        if (!st)
            st = CUDA_RT(cudaMemcpyAsync(dst->data, tmp, bytes, cudaMemcpyDefault, s));
    }
    tp_status st2 = CUDA_RT(cudaFreeAsync(tmp, s));
    return st ? st : st2;
}

/* f32 <-> bf16 between two host buffers: the layout first, in the source dtype, then the
 * dtype. */
static tp_status host_convert(cuda_backend *b, tp_tensor *dst, const tp_tensor *src)
{
    tp_tensor relaid = *src;
    relaid.layout = dst->layout;
    int64_t n = tp_tensor_count(src);
    void *buf = malloc(tp_tensor_bytes(src) ? tp_tensor_bytes(src) : 1);
    if (!buf)
        return b->host->fail(b->host, TP_ERR_NOMEM, "copy: out of host memory");
    if (cuda_same_memory_order(src, &relaid))
        memcpy(buf, src->data, tp_tensor_bytes(src));
    else
        host_permute(src->data, cuda_ck_shape(src), buf, tp_dtype_size(src->dtype));
    if (src->dtype == TP_DTYPE_F32)
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst->data)[i] = tp_bf16_from_f32(((const float *)buf)[i]);
    else
        for (int64_t i = 0; i < n; i++)
            ((float *)dst->data)[i] = tp_f32_from_bf16(((const uint16_t *)buf)[i]);
    free(buf);
    return TP_OK;
}

/* A conversion or permute: on the CPU between two pageable buffers; as one kernel when both
 * sides are device memory, or both pinned (so it stays in stream order and is recorded under
 * step capture); otherwise staged. */
static tp_status transform(cuda_backend *b, tp_tensor *dst, const tp_tensor *src,
                           cudaStream_t s)
{
    int rs = kernel_reach(src), rd = kernel_reach(dst);
    if (rs == 0 && rd == 0) {
        if (src->dtype != dst->dtype)
            return host_convert(b, dst, src);
        host_permute(src->data, cuda_ck_shape(src), dst->data, tp_dtype_size(src->dtype));
        return TP_OK;
    }
    if (rs == rd)
        return device_transform(b, src->data, src, dst->data, dst, s);
    return staged_transform(b, dst, src, s);
}

tp_status cuda_copy(cuda_backend *b, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    tp_status st = check_stream(b, "copy", stream);
    if (st)
        return st;
    if (!dst || !src)
        return b->host->fail(b->host, TP_ERR_INVALID, "copy: missing tensor");
    int converts = dst->dtype != src->dtype;
    if (converts && !((src->dtype == TP_DTYPE_F32 && dst->dtype == TP_DTYPE_BF16) ||
                      (src->dtype == TP_DTYPE_BF16 && dst->dtype == TP_DTYPE_F32)))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "copy: dtypes differ (%s to %s); only f32 <-> bf16 converts",
                             tp_dtype_name(src->dtype), tp_dtype_name(dst->dtype));
    int64_t ds[4], dd[4];
    cuda_dims4(src, ds);
    cuda_dims4(dst, dd);
    if (memcmp(ds, dd, sizeof ds) != 0 || tp_tensor_count(src) != tp_tensor_count(dst))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "copy: shapes differ: (%lld,%lld,%lld,%lld) to (%lld,%lld,%lld,%lld)",
                             (long long)ds[0], (long long)ds[1], (long long)ds[2],
                             (long long)ds[3], (long long)dd[0], (long long)dd[1],
                             (long long)dd[2], (long long)dd[3]);
    size_t bytes = tp_tensor_bytes(src);
    if (bytes == 0)
        return TP_OK;
    if (!dst->data || !src->data)
        return b->host->fail(b->host, TP_ERR_INVALID, "copy: tensor without data");
    cudaStream_t s = cuda_stream(b, stream);
    if (stream == TP_STREAM_COPY && src->device == TP_DEVICE_DEVICE) {
        /* Reading device data on the copy stream: first let the compute work already
         * enqueued (which may be producing it) finish, in stream order. Uploads from host
         * memory do not wait, so prefetching still overlaps compute. */
        if ((st = CUDA_RT(cudaEventRecord(b->compute_mark, b->compute))) ||
            (st = CUDA_RT(cudaStreamWaitEvent(b->copy, b->compute_mark, 0))))
            return st;
    }
    if (converts)
        return transform(b, dst, src, s);
    int permute = !cuda_same_memory_order(src, dst);

    if (!permute) {
        if (dst->data == src->data)
            return TP_OK;
        if (src->device == TP_DEVICE_HOST && dst->device == TP_DEVICE_HOST) {
            memmove(dst->data, src->data, bytes);
            return TP_OK;
        }
        return CUDA_RT(cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyDefault, s));
    }
    if (dst->data == src->data)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "copy: a layout change cannot be done in place");
    return transform(b, dst, src, s);
}

tp_status cuda_temp_alloc(cuda_backend *b, cudaStream_t stream, size_t bytes,
                          const char *what, const char *advice, void **out)
{
    cudaError_t e = cudaMallocAsync(out, bytes, stream);
    if (e == cudaSuccess)
        return TP_OK;
    (void)cudaGetLastError();
    *out = NULL;
    return b->host->fail(b->host, e == cudaErrorMemoryAllocation ? TP_ERR_NOMEM : TP_ERR_LIBRARY,
                         "cudaMallocAsync(%s, %zu bytes) failed: %s; try %s", what, bytes,
                         cudaGetErrorString(e), advice);
}

tp_status cuda_view_begin_as(cuda_backend *b, const tp_tensor *t, tp_layout layout,
                             tp_dtype dtype, int load, tp_tensor *view)
{
    *view = *t;
    if (t->ndim == 4)
        view->layout = layout;
    view->dtype = dtype;
    if (dtype == t->dtype && cuda_same_memory_order(t, view))
        return TP_OK; /* the same bytes, only relabelled */
    tp_status st = cuda_temp_alloc(b, b->compute, tp_tensor_bytes(view),
                                   dtype == t->dtype ? "layout conversion buffer"
                                                     : "dtype conversion buffer",
                                   "a smaller batch size or a single layout", &view->data);
    if (st) {
        view->data = t->data;
        return st;
    }
    if (!load)
        return TP_OK;
    if ((st = device_transform(b, t->data, t, view->data, view, b->compute))) {
        (void)cudaFreeAsync(view->data, b->compute);
        view->data = t->data;
    }
    return st;
}

tp_status cuda_view_begin(cuda_backend *b, const tp_tensor *t, tp_layout layout, int load,
                          tp_tensor *view)
{
    return cuda_view_begin_as(b, t, layout, t->dtype, load, view);
}

tp_status cuda_view_end(cuda_backend *b, tp_tensor *view, const tp_tensor *t, int store)
{
    if (view->data == t->data)
        return TP_OK;
    tp_status st = TP_OK;
    if (store)
        st = device_transform(b, view->data, view, t->data, t, b->compute);
    tp_status st2 = CUDA_RT(cudaFreeAsync(view->data, b->compute));
    view->data = t->data;
    return st ? st : st2;
}

static tp_status host_fill(cuda_backend *b, tp_tensor *t, double value)
{
    int64_t n = tp_tensor_count(t);
    switch (t->dtype) {
    case TP_DTYPE_F32: {
        float *p = t->data, v = (float)value;
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
    case TP_DTYPE_U8:
        memset(t->data, (int)(uint8_t)value, (size_t)n);
        return TP_OK;
    case TP_DTYPE_BF16: {
        uint16_t h = tp_bf16_from_f32((float)value);
        uint16_t *p = t->data;
        for (int64_t i = 0; i < n; i++)
            p[i] = h;
        return TP_OK;
    }
    case TP_DTYPE_F16:
#ifdef __FLT16_MAX__
    {
        _Float16 h = (_Float16)value;
        _Float16 *p = t->data;
        for (int64_t i = 0; i < n; i++)
            p[i] = h;
        return TP_OK;
    }
#else
        break;
#endif
    }
    return b->host->fail(b->host, TP_ERR_UNSUPPORTED, "fill: dtype %s in host memory",
                         tp_dtype_name(t->dtype));
}

tp_status cuda_fill(cuda_backend *b, tp_tensor *t, double value)
{
    if (!t || (!t->data && tp_tensor_count(t) > 0))
        return b->host->fail(b->host, TP_ERR_INVALID, "fill: missing tensor or data");
    if (tp_dtype_size(t->dtype) == 0)
        return b->host->fail(b->host, TP_ERR_INVALID, "fill: unknown dtype %d", (int)t->dtype);
    if (t->device == TP_DEVICE_HOST)
        return host_fill(b, t, value);
    /* Device and pinned memory (pinned is device-accessible): a kernel, in stream order. */
    return CUDA_RT(ck_fill(t->data, tp_tensor_count(t), (int)t->dtype, value, b->compute));
}

tp_status cuda_event_create(cuda_backend *b, tp_event **ev)
{
    tp_event *e = b->host->calloc(1, sizeof *e);
    if (!e)
        return b->host->fail(b->host, TP_ERR_NOMEM, "event_create: out of host memory");
    tp_status st = CUDA_RT(cudaEventCreateWithFlags(&e->event, cudaEventDisableTiming));
    if (st) {
        b->host->free(e);
        return st;
    }
    *ev = e;
    return TP_OK;
}

void cuda_event_destroy(cuda_backend *b, tp_event *ev)
{
    if (!ev)
        return;
    cudaEventDestroy(ev->event);
    b->host->free(ev);
}

tp_status cuda_event_record(cuda_backend *b, tp_event *ev, tp_stream stream)
{
    tp_status st = check_stream(b, "event_record", stream);
    if (st)
        return st;
    if (!ev)
        return b->host->fail(b->host, TP_ERR_INVALID, "event_record: NULL event");
    return CUDA_RT(cudaEventRecord(ev->event, cuda_stream(b, stream)));
}

tp_status cuda_stream_wait(cuda_backend *b, tp_stream stream, tp_event *ev)
{
    tp_status st = check_stream(b, "stream_wait", stream);
    if (st)
        return st;
    if (!ev)
        return b->host->fail(b->host, TP_ERR_INVALID, "stream_wait: NULL event");
    return CUDA_RT(cudaStreamWaitEvent(cuda_stream(b, stream), ev->event, 0));
}

tp_status cuda_event_sync(cuda_backend *b, tp_event *ev)
{
    if (!ev)
        return b->host->fail(b->host, TP_ERR_INVALID, "event_sync: NULL event");
    return CUDA_RT(cudaEventSynchronize(ev->event));
}

tp_status cuda_sync(cuda_backend *b)
{
    tp_status st = CUDA_RT(cudaStreamSynchronize(b->compute));
    if (st)
        return st;
    return CUDA_RT(cudaStreamSynchronize(b->copy));
}
