/* trainpipe SDK: tensors.
 *
 * A tensor is a plain descriptor over memory owned by a backend (or by the host for host
 * tensors). `shape` is always logical: for 4-D tensors it is (N, C, H, W) whatever the
 * layout; `layout` says how those dimensions are ordered in memory. 2-D tensors are
 * (rows, cols) row-major and 1-D tensors are vectors; their layout is TP_LAYOUT_NCHW. */
#ifndef TRAINPIPE_TENSOR_H
#define TRAINPIPE_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_dtype {
    TP_DTYPE_F32 = 1,
    TP_DTYPE_F16 = 2,
    TP_DTYPE_BF16 = 3,
    TP_DTYPE_U8 = 4,
    TP_DTYPE_I32 = 5
} tp_dtype;

typedef enum tp_layout {
    TP_LAYOUT_NCHW = 0,
    TP_LAYOUT_NHWC = 1
} tp_layout;

typedef enum tp_device {
    TP_DEVICE_HOST = 0,   /* ordinary host memory */
    TP_DEVICE_PINNED = 1, /* page-locked host memory (fast, asynchronous copies) */
    TP_DEVICE_DEVICE = 2  /* the backend's device memory (host memory on backend-cpu) */
} tp_device;

#define TP_TENSOR_MAX_DIMS 4

typedef struct tp_tensor {
    tp_dtype dtype;
    tp_layout layout;
    tp_device device;
    int ndim;
    int64_t shape[TP_TENSOR_MAX_DIMS]; /* logical; unused trailing entries are 1 */
    void *data;
} tp_tensor;

static inline size_t tp_dtype_size(tp_dtype t)
{
    switch (t) {
    case TP_DTYPE_F32: return 4;
    case TP_DTYPE_F16: return 2;
    case TP_DTYPE_BF16: return 2;
    case TP_DTYPE_U8: return 1;
    case TP_DTYPE_I32: return 4;
    }
    return 0;
}

static inline const char *tp_dtype_name(tp_dtype t)
{
    switch (t) {
    case TP_DTYPE_F32: return "f32";
    case TP_DTYPE_F16: return "f16";
    case TP_DTYPE_BF16: return "bf16";
    case TP_DTYPE_U8: return "u8";
    case TP_DTYPE_I32: return "i32";
    }
    return "?";
}

static inline int64_t tp_tensor_count(const tp_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static inline size_t tp_tensor_bytes(const tp_tensor *t)
{
    return (size_t)tp_tensor_count(t) * tp_dtype_size(t->dtype);
}

/* Non-zero when the memory of a and b (their data and tp_tensor_bytes) overlaps; tensors
 * without data overlap nothing. For operations whose output must not alias an input. */
static inline int tp_tensors_overlap(const tp_tensor *a, const tp_tensor *b)
{
    const char *pa = (const char *)a->data, *pb = (const char *)b->data;
    if (!pa || !pb)
        return 0;
    return pa < pb + tp_tensor_bytes(b) && pb < pa + tp_tensor_bytes(a);
}

/* bf16 on the host: the upper 16 bits of an IEEE 754 f32. tp_bf16_from_f32 rounds to
 * nearest even (overflow gives infinity, as IEEE rounding does); a NaN stays a NaN (made
 * quiet, sign kept) where the plain rounding carry would turn its payload into infinity.
 * tp_f32_from_bf16 is exact. */
static inline uint16_t tp_bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float tp_f32_from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A descriptor (no data) for a 4-D tensor. */
static inline tp_tensor tp_tensor_4d(tp_dtype dt, tp_layout lay, int64_t n, int64_t c,
                                     int64_t h, int64_t w)
{
    tp_tensor t;
    t.dtype = dt;
    t.layout = lay;
    t.device = TP_DEVICE_DEVICE;
    t.ndim = 4;
    t.shape[0] = n;
    t.shape[1] = c;
    t.shape[2] = h;
    t.shape[3] = w;
    t.data = NULL;
    return t;
}

/* A descriptor (no data) for a 1-D or 2-D tensor (cols = 0 makes it 1-D). */
static inline tp_tensor tp_tensor_2d(tp_dtype dt, int64_t rows, int64_t cols)
{
    tp_tensor t = tp_tensor_4d(dt, TP_LAYOUT_NCHW, rows, cols, 1, 1);
    t.ndim = cols ? 2 : 1;
    if (!cols)
        t.shape[1] = 1;
    return t;
}

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_TENSOR_H */
