/* backend-cuda: the backend's own kernels (everything cuDNN and cuBLAS do not cover):
 * layout permutes, fills, elementwise ops, reductions, the loss and metric, image batch
 * operations and the fused optimizer steps. Reductions run in a fixed order (no atomics)
 * so results are bitwise reproducible from run to run. See cuda_kernels.h. */
#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <type_traits>

#define CK_THREADS 256
#define CK_MAX_BLOCKS 65535

namespace {

/* Blocks for a grid-stride loop over count elements. */
unsigned grid_for(int64_t count)
{
    int64_t blocks = (count + CK_THREADS - 1) / CK_THREADS;
    if (blocks < 1)
        blocks = 1;
    if (blocks > CK_MAX_BLOCKS)
        blocks = CK_MAX_BLOCKS;
    return (unsigned)blocks;
}

#define GRID_STRIDE(i, count)                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count);      \
         i += (int64_t)blockDim.x * gridDim.x)

__device__ __forceinline__ int64_t offset4(const ck_shape &s, int64_t n, int64_t c,
                                           int64_t h, int64_t w)
{
    return s.nhwc ? ((n * s.h + h) * s.w + w) * s.c + c : ((n * s.c + c) * s.h + h) * s.w + w;
}

/* The logical coordinates of memory index i in shape s. */
__device__ __forceinline__ void coords4(const ck_shape &s, int64_t i, int64_t &n, int64_t &c,
                                        int64_t &h, int64_t &w)
{
    if (s.nhwc) {
        c = i % s.c;
        i /= s.c;
        w = i % s.w;
        i /= s.w;
        h = i % s.h;
        n = i / s.h;
    } else {
        w = i % s.w;
        i /= s.w;
        h = i % s.h;
        i /= s.h;
        c = i % s.c;
        n = i / s.c;
    }
}

/* Block-wide reductions over CK_THREADS threads; every thread gets the result. */
template <typename T> __device__ T block_sum(T v, T *shared)
{
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int step = CK_THREADS / 2; step > 0; step >>= 1) {
        if ((int)threadIdx.x < step)
            shared[threadIdx.x] += shared[threadIdx.x + step];
        __syncthreads();
    }
    T r = shared[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float *shared)
{
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int step = CK_THREADS / 2; step > 0; step >>= 1) {
        if ((int)threadIdx.x < step)
            shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + step]);
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------------ layout and fill */

template <typename T>
__global__ void permute_kernel(const T *src, ck_shape ss, T *dst, ck_shape ds, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(ds, i, n, c, h, w);
        dst[i] = src[offset4(ss, n, c, h, w)];
    }
}

template <typename T> __device__ T convert_value(float v);
template <> __device__ float convert_value<float>(float v) { return v; }
template <> __device__ uint8_t convert_value<uint8_t>(float v) { return (uint8_t)v; }
template <> __device__ __half convert_value<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __nv_bfloat16 convert_value<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

template <typename T> __global__ void fill_kernel(T *p, int64_t count, float value)
{
    T v = convert_value<T>(value);
    GRID_STRIDE(i, count)
    {
        p[i] = v;
    }
}

__global__ void fill_i32_kernel(int32_t *p, int64_t count, int32_t value)
{
    GRID_STRIDE(i, count)
    {
        p[i] = value;
    }
}

/* ------------------------------------------------------------------ activation dtypes */

/* Activation tensors are f32 or bf16 (SDK API 1.5); arithmetic is f32 and results are
 * rounded to the storage type to nearest even (convert_value). */
template <typename T> __device__ __forceinline__ float to_float(T v) { return (float)v; }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

/* Index arithmetic in I: 32-bit where the tensor allows (64-bit division is a long
 * instruction sequence, and the gather kernels below divide per element). */
template <typename I>
__device__ __forceinline__ I offset4t(const ck_shape &s, I n, I c, I h, I w)
{
    const I C = (I)s.c, H = (I)s.h, W = (I)s.w;
    return s.nhwc ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

template <typename I>
__device__ __forceinline__ void coords4t(const ck_shape &s, I i, I &n, I &c, I &h, I &w)
{
    const I C = (I)s.c, H = (I)s.h, W = (I)s.w;
    if (s.nhwc) {
        c = i % C;
        i /= C;
        w = i % W;
        i /= W;
        h = i % H;
        n = i / H;
    } else {
        w = i % W;
        i /= W;
        h = i % H;
        i /= H;
        c = i % C;
        n = i / C;
    }
}

#define GRID_STRIDE_T(I, i, count)                                                     \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (I)(count);               \
         i += (I)blockDim.x * gridDim.x)

/* dst (dst dtype, ds order) = src (src dtype, ss order), rounded to nearest even. */
template <typename S, typename D, typename I>
__global__ void convert_kernel(const S *src, ck_shape ss, D *dst, ck_shape ds, int64_t count)
{
    GRID_STRIDE_T(I, i, count)
    {
        I at = i;
        if (ss.nhwc != ds.nhwc) {
            I n, c, h, w;
            coords4t<I>(ds, i, n, c, h, w);
            at = offset4t<I>(ss, n, c, h, w);
        }
        dst[i] = convert_value<D>(to_float(src[at]));
    }
}

struct relu_op {
    __device__ float operator()(float x, float) const { return x > 0.0f ? x : 0.0f; }
};
struct relu_grad_op { /* (y, dy) */
    __device__ float operator()(float y, float dy) const { return y > 0.0f ? dy : 0.0f; }
};
struct add_op {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct add_relu_op {
    __device__ float operator()(float a, float b) const
    {
        float v = a + b;
        return v > 0.0f ? v : 0.0f;
    }
};

/* y[i] = op(a[i], b[i]); 16-byte packs when `packed` (all three 16-byte aligned), the rest
 * one by one. y may alias a or b: each element is read and written by one thread. */
template <typename T, typename Op>
__global__ void binary_kernel(const T *a, const T *b, T *y, int64_t count, int packed, Op op)
{
    constexpr int P = 16 / sizeof(T);
    const int64_t packs = packed ? count / P : 0;
    GRID_STRIDE(i, packs)
    {
        uint4 ua = reinterpret_cast<const uint4 *>(a)[i];
        uint4 ub = reinterpret_cast<const uint4 *>(b)[i];
        uint4 uy;
        const T *ea = reinterpret_cast<const T *>(&ua);
        const T *eb = reinterpret_cast<const T *>(&ub);
        T *ey = reinterpret_cast<T *>(&uy);
#pragma unroll
        for (int k = 0; k < P; k++)
            ey[k] = convert_value<T>(op(to_float(ea[k]), to_float(eb[k])));
        reinterpret_cast<uint4 *>(y)[i] = uy;
    }
    GRID_STRIDE(j, count - packs * P)
    {
        int64_t i = packs * P + j;
        y[i] = convert_value<T>(op(to_float(a[i]), to_float(b[i])));
    }
}

template <typename T, typename Op>
cudaError_t launch_binary(const void *a, const void *b, void *y, int64_t count, Op op,
                          cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    const int P = 16 / sizeof(T);
    int packed = (((uintptr_t)a | (uintptr_t)b | (uintptr_t)y) & 15u) == 0;
    binary_kernel<T, Op><<<grid_for(packed ? count / P + 1 : count), CK_THREADS, 0, stream>>>(
        (const T *)a, (const T *)b, (T *)y, count, packed, op);
    return cudaGetLastError();
}

template <typename Op>
cudaError_t binary(int dtype, const void *a, const void *b, void *y, int64_t count, Op op,
                   cudaStream_t stream)
{
    switch (dtype) {
    case CK_F32: return launch_binary<float>(a, b, y, count, op, stream);
    case CK_BF16: return launch_binary<__nv_bfloat16>(a, b, y, count, op, stream);
    }
    return cudaErrorInvalidValue;
}

/* Runs the statement(s) with T bound to the storage type of activation dtype `dtype`. */
#define CK_WITH_ACT_TYPE(dtype, ...)                                                           \
    switch (dtype) {                                                                           \
    case CK_F32: {                                                                             \
        typedef float T;                                                                       \
        __VA_ARGS__;                                                                           \
        break;                                                                                 \
    }                                                                                          \
    case CK_BF16: {                                                                            \
        typedef __nv_bfloat16 T;                                                               \
        __VA_ARGS__;                                                                           \
        break;                                                                                 \
    }                                                                                          \
    default:                                                                                   \
        return cudaErrorInvalidValue;                                                          \
    }

/* Whether a grid-stride loop over `count` elements can count in 32 bits: the last index a
 * thread tests before leaving is below count + the widest grid's stride, and must not
 * overflow. */
inline bool fits32(int64_t count)
{
    return count <= INT32_MAX - (int64_t)CK_THREADS * CK_MAX_BLOCKS;
}

/* KERNEL<T, I>, I the index type: int32_t when `small` (see fits32), else int64_t; for use
 * inside CK_WITH_ACT_TYPE, which binds T. */
#define CK_LAUNCH_INDEXED(small, KERNEL, grid, stream, ...)                                    \
    if (small)                                                                                 \
        KERNEL<T, int32_t><<<grid, CK_THREADS, 0, stream>>>(__VA_ARGS__);                      \
    else                                                                                       \
        KERNEL<T, int64_t><<<grid, CK_THREADS, 0, stream>>>(__VA_ARGS__)

/* ------------------------------------------------------------------ elementwise */

__global__ void axpby_kernel(float alpha, const float *x, float beta, float *y, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        y[i] = beta == 0.0f ? alpha * x[i] : alpha * x[i] + beta * y[i];
    }
}

__global__ void scale_kernel(float alpha, float *y, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        y[i] *= alpha;
    }
}

__global__ void sum_squares_partial_kernel(const float *x, int64_t count, double *partials)
{
    __shared__ double shared[CK_THREADS];
    double acc = 0.0;
    GRID_STRIDE(i, count)
    {
        double v = x[i];
        acc += v * v;
    }
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = total;
}

__global__ void sum_partials_kernel(const double *partials, int n, float *out)
{
    __shared__ double shared[CK_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += CK_THREADS)
        acc += partials[i];
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0)
        out[0] = (float)total;
}

/* ------------------------------------------------------------------ pooling */

template <typename T>
__global__ void gap_forward_kernel(const T *x, ck_shape xs, float *y)
{
    int64_t count = xs.n * xs.c;
    GRID_STRIDE(i, count)
    {
        int64_t n = i / xs.c, c = i % xs.c;
        double acc = 0.0;
        for (int64_t h = 0; h < xs.h; h++)
            for (int64_t w = 0; w < xs.w; w++)
                acc += to_float(x[offset4(xs, n, c, h, w)]);
        y[i] = (float)(acc / (double)(xs.h * xs.w));
    }
}

template <typename T, typename I>
__global__ void gap_backward_kernel(const float *dy, T *dx, ck_shape s)
{
    int64_t count = s.n * s.c * s.h * s.w;
    float inv = 1.0f / (float)(s.h * s.w);
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, h, w;
        coords4t<I>(s, i, n, c, h, w);
        dx[i] = convert_value<T>(dy[n * (I)s.c + c] * inv);
    }
}

/* The output windows [lo, hi] (one dimension) that contain input cell `at`. */
template <typename I>
__device__ __forceinline__ void windows_of(I at, int k, int stride, int pad, I out_size, I &lo,
                                           I &hi)
{
    I t = at + pad - k + 1;
    lo = t <= 0 ? 0 : (t + stride - 1) / stride;
    hi = (at + pad) / stride;
    if (hi > out_size - 1)
        hi = out_size - 1;
}

/* Max (first maximum wins, which only matters for backward) or average excluding padding;
 * with 0 <= pad < kernel every window holds at least one input cell. */
template <typename T, typename I>
__global__ void pool_forward_kernel(const T *x, ck_shape xs, T *y, ck_shape ys, ck_pool p,
                                    int average)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, oh, ow;
        coords4t<I>(ys, i, n, c, oh, ow);
        I h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
        I h_lo = h0 < 0 ? 0 : h0, w_lo = w0 < 0 ? 0 : w0;
        I h_hi = h0 + p.kh < (I)xs.h ? h0 + p.kh : (I)xs.h;
        I w_hi = w0 + p.kw < (I)xs.w ? w0 + p.kw : (I)xs.w;
        float acc = average ? 0.0f : -INFINITY;
        for (I h = h_lo; h < h_hi; h++)
            for (I w = w_lo; w < w_hi; w++) {
                float v = to_float(x[offset4t<I>(xs, n, c, h, w)]);
                acc = average ? acc + v : (v > acc ? v : acc);
            }
        if (average)
            acc /= (float)((h_hi - h_lo) * (w_hi - w_lo));
        y[i] = convert_value<T>(acc);
    }
}

/* dx of average pooling as a gather: each cell sums dy / (cells of the window) over the
 * windows containing it, in a fixed order. */
template <typename T, typename I>
__global__ void avgpool_backward_kernel(const T *dy, ck_shape ys, T *dx, ck_shape xs, ck_pool p)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, ih, iw, oh_lo, oh_hi, ow_lo, ow_hi;
        coords4t<I>(xs, i, n, c, ih, iw);
        windows_of<I>(ih, p.kh, p.sh, p.ph, (I)ys.h, oh_lo, oh_hi);
        windows_of<I>(iw, p.kw, p.sw, p.pw, (I)ys.w, ow_lo, ow_hi);
        float acc = 0.0f;
        for (I oh = oh_lo; oh <= oh_hi; oh++) {
            I h0 = oh * p.sh - p.ph;
            I rows = (h0 + p.kh < (I)xs.h ? h0 + p.kh : (I)xs.h) - (h0 < 0 ? 0 : h0);
            for (I ow = ow_lo; ow <= ow_hi; ow++) {
                I w0 = ow * p.sw - p.pw;
                I cols = (w0 + p.kw < (I)xs.w ? w0 + p.kw : (I)xs.w) - (w0 < 0 ? 0 : w0);
                acc += to_float(dy[offset4t<I>(ys, n, c, oh, ow)]) / (float)(rows * cols);
            }
        }
        dx[i] = convert_value<T>(acc);
    }
}

/* The window-local index (row-major, 0 .. kh*kw-1) of each output cell's first maximum,
 * padding excluded; CK_NO_ARGMAX for a window that lies wholly in the padding. */
#define CK_NO_ARGMAX (CK_MAXPOOL_MAX_WINDOW + 1)

template <typename T, typename I>
__global__ void maxpool_argmax_kernel(const T *x, ck_shape xs, ck_shape ys, uint8_t *arg,
                                      ck_pool p)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, oh, ow;
        coords4t<I>(ys, i, n, c, oh, ow);
        I h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
        int best_at = CK_NO_ARGMAX;
        float best = 0.0f;
        for (int kh = 0; kh < p.kh; kh++) {
            I h = h0 + kh;
            if (h < 0 || h >= (I)xs.h)
                continue;
            for (int kw = 0; kw < p.kw; kw++) {
                I w = w0 + kw;
                if (w < 0 || w >= (I)xs.w)
                    continue;
                float v = to_float(x[offset4t<I>(xs, n, c, h, w)]);
                if (best_at == CK_NO_ARGMAX || v > best) {
                    best = v;
                    best_at = kh * p.kw + kw;
                }
            }
        }
        arg[i] = (uint8_t)best_at;
    }
}

/* Each dx cell sums dy over the windows whose recorded first maximum is that cell. */
template <typename T, typename I>
__global__ void maxpool_backward_kernel(const uint8_t *arg, const T *dy, ck_shape ys, T *dx,
                                        ck_shape xs, ck_pool p)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, ih, iw, oh_lo, oh_hi, ow_lo, ow_hi;
        coords4t<I>(xs, i, n, c, ih, iw);
        windows_of<I>(ih, p.kh, p.sh, p.ph, (I)ys.h, oh_lo, oh_hi);
        windows_of<I>(iw, p.kw, p.sw, p.pw, (I)ys.w, ow_lo, ow_hi);
        float acc = 0.0f;
        for (I oh = oh_lo; oh <= oh_hi; oh++) {
            for (I ow = ow_lo; ow <= ow_hi; ow++) {
                I local = (ih - (oh * p.sh - p.ph)) * p.kw + (iw - (ow * p.sw - p.pw));
                I at = offset4t<I>(ys, n, c, oh, ow);
                if (arg[at] == local)
                    acc += to_float(dy[at]);
            }
        }
        dx[i] = convert_value<T>(acc);
    }
}

/* Channels-last pooling with V = 16 / sizeof(T) channels per thread (4 f32 or 8 bf16, one
 * 16-byte access each; the launchers check the alignment and that C is a multiple of V):
 * the window arithmetic and its integer divisions happen once per V channels instead of
 * once per element. Each channel computes exactly what the kernels above compute, in the
 * same order, so the two paths agree bit for bit. Thread i covers output (forward, argmax)
 * or input (backward) cell i / G, channels V * (i % G) onwards, G = C / V. */
template <typename T> struct pool_vec {
    static constexpr int V = (int)(16 / sizeof(T));
};

template <typename T>
__device__ __forceinline__ void load_v(const T *p, float *out)
{
    constexpr int V = pool_vec<T>::V;
    uint4 q = *reinterpret_cast<const uint4 *>(p);
    const T *e = reinterpret_cast<const T *>(&q);
#pragma unroll
    for (int k = 0; k < V; k++)
        out[k] = to_float(e[k]);
}

template <typename T>
__device__ __forceinline__ void store_v(T *p, const float *in)
{
    constexpr int V = pool_vec<T>::V;
    uint4 q;
    T *e = reinterpret_cast<T *>(&q);
#pragma unroll
    for (int k = 0; k < V; k++)
        e[k] = convert_value<T>(in[k]);
    *reinterpret_cast<uint4 *>(p) = q;
}

/* V argmax bytes as one 4- or 8-byte access. */
template <int V> struct arg_bytes {
    typedef typename std::conditional<V == 8, uint2, uint32_t>::type word;
    union {
        word w;
        uint8_t b[V];
    };
};

/* The (n, h, w) of cell `cell` in an NHWC shape s, and the first channel of group g. */
template <typename I>
__device__ __forceinline__ void cell_of(const ck_shape &s, I i, I groups, I &n, I &h, I &w,
                                       I &c0, int v)
{
    c0 = (i % groups) * (I)v;
    I r = i / groups;
    w = r % (I)s.w;
    r /= (I)s.w;
    h = r % (I)s.h;
    n = r / (I)s.h;
}

template <typename T, typename I>
__global__ void pool_forward_nhwc_kernel(const T *x, ck_shape xs, T *y, ck_shape ys, ck_pool p,
                                         int average)
{
    constexpr int V = pool_vec<T>::V;
    const I groups = (I)ys.c / V;
    const int64_t count = ys.n * ys.h * ys.w * (int64_t)groups;
    GRID_STRIDE_T(I, i, count)
    {
        I n, oh, ow, c0;
        cell_of<I>(ys, i, groups, n, oh, ow, c0, V);
        I h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
        I h_lo = h0 < 0 ? 0 : h0, w_lo = w0 < 0 ? 0 : w0;
        I h_hi = h0 + p.kh < (I)xs.h ? h0 + p.kh : (I)xs.h;
        I w_hi = w0 + p.kw < (I)xs.w ? w0 + p.kw : (I)xs.w;
        float acc[V], v[V];
#pragma unroll
        for (int k = 0; k < V; k++)
            acc[k] = average ? 0.0f : -INFINITY;
        for (I h = h_lo; h < h_hi; h++)
            for (I w = w_lo; w < w_hi; w++) {
                load_v<T>(x + ((n * (I)xs.h + h) * (I)xs.w + w) * (I)xs.c + c0, v);
#pragma unroll
                for (int k = 0; k < V; k++)
                    acc[k] = average ? acc[k] + v[k] : (v[k] > acc[k] ? v[k] : acc[k]);
            }
        if (average) {
#pragma unroll
            for (int k = 0; k < V; k++)
                acc[k] /= (float)((h_hi - h_lo) * (w_hi - w_lo));
        }
        store_v<T>(y + i * (I)V, acc);
    }
}

template <typename T, typename I>
__global__ void maxpool_argmax_nhwc_kernel(const T *x, ck_shape xs, ck_shape ys, uint8_t *arg,
                                           ck_pool p)
{
    constexpr int V = pool_vec<T>::V;
    const I groups = (I)ys.c / V;
    const int64_t count = ys.n * ys.h * ys.w * (int64_t)groups;
    GRID_STRIDE_T(I, i, count)
    {
        I n, oh, ow, c0;
        cell_of<I>(ys, i, groups, n, oh, ow, c0, V);
        I h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
        int best_at[V];
        float best[V], v[V];
#pragma unroll
        for (int k = 0; k < V; k++) {
            best_at[k] = CK_NO_ARGMAX;
            best[k] = 0.0f;
        }
        for (int kh = 0; kh < p.kh; kh++) {
            I h = h0 + kh;
            if (h < 0 || h >= (I)xs.h)
                continue;
            for (int kw = 0; kw < p.kw; kw++) {
                I w = w0 + kw;
                if (w < 0 || w >= (I)xs.w)
                    continue;
                load_v<T>(x + ((n * (I)xs.h + h) * (I)xs.w + w) * (I)xs.c + c0, v);
#pragma unroll
                for (int k = 0; k < V; k++)
                    if (best_at[k] == CK_NO_ARGMAX || v[k] > best[k]) {
                        best[k] = v[k];
                        best_at[k] = kh * p.kw + kw;
                    }
            }
        }
        arg_bytes<V> out;
#pragma unroll
        for (int k = 0; k < V; k++)
            out.b[k] = (uint8_t)best_at[k];
        *reinterpret_cast<typename arg_bytes<V>::word *>(arg + i * (I)V) = out.w;
    }
}

template <typename T, typename I>
__global__ void maxpool_backward_nhwc_kernel(const uint8_t *arg, const T *dy, ck_shape ys,
                                             T *dx, ck_shape xs, ck_pool p)
{
    constexpr int V = pool_vec<T>::V;
    const I groups = (I)xs.c / V;
    const int64_t count = xs.n * xs.h * xs.w * (int64_t)groups;
    GRID_STRIDE_T(I, i, count)
    {
        I n, ih, iw, c0, oh_lo, oh_hi, ow_lo, ow_hi;
        cell_of<I>(xs, i, groups, n, ih, iw, c0, V);
        windows_of<I>(ih, p.kh, p.sh, p.ph, (I)ys.h, oh_lo, oh_hi);
        windows_of<I>(iw, p.kw, p.sw, p.pw, (I)ys.w, ow_lo, ow_hi);
        float acc[V], d[V];
#pragma unroll
        for (int k = 0; k < V; k++)
            acc[k] = 0.0f;
        for (I oh = oh_lo; oh <= oh_hi; oh++) {
            for (I ow = ow_lo; ow <= ow_hi; ow++) {
                I local = (ih - (oh * p.sh - p.ph)) * p.kw + (iw - (ow * p.sw - p.pw));
                I at = ((n * (I)ys.h + oh) * (I)ys.w + ow) * (I)ys.c + c0;
                arg_bytes<V> a;
                a.w = *reinterpret_cast<const typename arg_bytes<V>::word *>(arg + at);
                load_v<T>(dy + at, d);
#pragma unroll
                for (int k = 0; k < V; k++)
                    if (a.b[k] == local)
                        acc[k] += d[k];
            }
        }
        store_v<T>(dx + i * (I)V, acc);
    }
}

/* Whether the channels-last kernels apply: both shapes NHWC with the same channel count, a
 * multiple of V, and every pointer 16-byte aligned. */
template <typename T>
bool pool_nhwc_ok(const ck_shape &a, const ck_shape &b, const void *p, const void *q,
                  const void *r)
{
    return a.nhwc && b.nhwc && a.c == b.c && a.c % pool_vec<T>::V == 0 &&
           (((uintptr_t)p | (uintptr_t)q | (uintptr_t)r) & 15u) == 0;
}

/* Convolution bias on an activation of any layout: y[n,c,h,w] += bias[c]; db[c] = sum of dy
 * over (n, h, w), one block per channel, in a fixed order. */
template <typename T, typename I>
__global__ void add_channel_bias_kernel(T *y, ck_shape s, const float *bias)
{
    int64_t count = s.n * s.c * s.h * s.w;
    GRID_STRIDE_T(I, i, count)
    {
        I n, c, h, w;
        coords4t<I>(s, i, n, c, h, w);
        y[i] = convert_value<T>(to_float(y[i]) + bias[c]);
    }
}

template <typename T>
__global__ void channel_sums_kernel(const T *dy, ck_shape s, float *db)
{
    __shared__ double shared[CK_THREADS];
    const int64_t c = blockIdx.x, per = s.n * s.h * s.w;
    double acc = 0.0;
    for (int64_t j = threadIdx.x; j < per; j += CK_THREADS) {
        int64_t hw = s.h * s.w, n = j / hw, h = (j % hw) / s.w, w = j % s.w;
        acc += to_float(dy[offset4(s, n, c, h, w)]);
    }
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0)
        db[c] = (float)total;
}

/* ------------------------------------------------------------------ linear helpers */

__global__ void add_row_bias_kernel(float *y, const float *bias, int64_t rows, int64_t cols)
{
    int64_t count = rows * cols;
    GRID_STRIDE(i, count)
    {
        y[i] += bias[i % cols];
    }
}

__global__ void column_sums_kernel(const float *dy, float *db, int64_t rows, int64_t cols)
{
    GRID_STRIDE(c, cols)
    {
        double acc = 0.0;
        for (int64_t r = 0; r < rows; r++)
            acc += dy[r * cols + c];
        db[c] = (float)acc;
    }
}

/* ------------------------------------------------------------------ loss and metric */

/* One block per row. */
__global__ void softmax_xent_kernel(const float *logits, const int32_t *labels, int64_t k,
                                    float smoothing, float grad_scale_over_n, float *row_loss,
                                    float *dlogits)
{
    __shared__ float fshared[CK_THREADS];
    __shared__ double dshared[CK_THREADS];
    int64_t row = blockIdx.x;
    const float *x = logits + row * k;

    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < k; j += CK_THREADS)
        m = fmaxf(m, x[j]);
    m = block_max(m, fshared);

    double se = 0.0, sx = 0.0;
    for (int64_t j = threadIdx.x; j < k; j += CK_THREADS) {
        se += (double)expf(x[j] - m);
        sx += (double)x[j];
    }
    se = block_sum(se, dshared);
    sx = block_sum(sx, dshared);

    int32_t label = labels[row];
    int valid = label >= 0 && label < k;
    double lse = (double)m + log(se);
    float off = smoothing / (float)k;
    if (threadIdx.x == 0) {
        double loss = valid ? lse - (1.0 - (double)smoothing) * (double)x[label] -
                                  (double)off * sx
                            : (double)NAN;
        row_loss[row] = (float)loss;
    }
    if (dlogits) {
        float *d = dlogits + row * k;
        float inv_se = (float)(1.0 / se);
        for (int64_t j = threadIdx.x; j < k; j += CK_THREADS) {
            float p = expf(x[j] - m) * inv_se;
            float target = off + (j == label ? 1.0f - smoothing : 0.0f);
            d[j] = valid ? (p - target) * grad_scale_over_n : NAN;
        }
    }
}

__global__ void mean_kernel(const float *v, int64_t n, float *out)
{
    __shared__ double shared[CK_THREADS];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += CK_THREADS)
        acc += v[i];
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0)
        out[0] = (float)(total / (double)n);
}

/* A single block: rows are few (a batch), classes at most thousands. */
__global__ void topk_correct_kernel(const float *logits, const int32_t *labels, int64_t n,
                                    int64_t k, int topk, float *correct)
{
    __shared__ double shared[CK_THREADS];
    double count = 0.0;
    for (int64_t row = threadIdx.x; row < n; row += CK_THREADS) {
        int32_t label = labels[row];
        if (label < 0 || label >= k)
            continue;
        const float *x = logits + row * k;
        float xl = x[label];
        if (isnan(xl))
            continue;
        int64_t rank = 0;
        for (int64_t j = 0; j < k && rank < topk; j++)
            if (x[j] > xl || (x[j] == xl && j < label))
                rank++;
        if (rank < topk)
            count += 1.0;
    }
    double total = block_sum(count, shared);
    if (threadIdx.x == 0)
        correct[0] = (float)total;
}

/* ------------------------------------------------------------------ shortcut A */

template <typename T>
__global__ void subsample_pad_forward_kernel(const T *x, ck_shape xs, T *y, ck_shape ys,
                                             int stride)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(ys, i, n, c, h, w);
        y[i] = c < xs.c ? x[offset4(xs, n, c, h * stride, w * stride)] : convert_value<T>(0.0f);
    }
}

template <typename T>
__global__ void subsample_pad_backward_kernel(const T *dy, ck_shape ys, T *dx, ck_shape xs,
                                              int stride)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(xs, i, n, c, h, w);
        dx[i] = (h % stride == 0 && w % stride == 0)
                    ? dy[offset4(ys, n, c, h / stride, w / stride)]
                    : convert_value<T>(0.0f);
    }
}

/* ------------------------------------------------------------------ images */

__global__ void convert_u8_kernel(const uint8_t *src, ck_shape ss, float scale, float *dst,
                                  ck_shape ds)
{
    int64_t count = ds.n * ds.c * ds.h * ds.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(ds, i, n, c, h, w);
        dst[i] = scale * (float)src[offset4(ss, n, c, h, w)];
    }
}

#define CK_CROP_CHUNK 256
struct crop_params {
    int32_t oy[CK_CROP_CHUNK];
    int32_t ox[CK_CROP_CHUNK];
    uint8_t flip[CK_CROP_CHUNK];
};

__global__ void crop_flip_kernel(const float *src, ck_shape ss, float *dst, ck_shape ds,
                                 int pad, float fill, int64_t n0, int64_t n_chunk,
                                 crop_params cp)
{
    int64_t per_image = ds.c * ds.h * ds.w;
    int64_t count = n_chunk * per_image;
    GRID_STRIDE(j, count)
    {
        /* Images are contiguous in both layouts, so the chunk is a contiguous range. */
        int64_t i = n0 * per_image + j;
        int64_t n, c, h, w;
        coords4(ds, i, n, c, h, w);
        int64_t s = n - n0;
        int64_t xw = cp.flip[s] ? ds.w - 1 - w : w;
        int64_t py = cp.oy[s] + h - pad, px = cp.ox[s] + xw - pad;
        dst[i] = (py >= 0 && py < ss.h && px >= 0 && px < ss.w) ? src[offset4(ss, n, c, py, px)]
                                                                 : fill;
    }
}

/* One block per image; an image is contiguous in both layouts. */
__global__ void standardize_kernel(float *x, int64_t per_image)
{
    __shared__ double shared[CK_THREADS];
    float *img = x + (int64_t)blockIdx.x * per_image;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < per_image; i += CK_THREADS)
        acc += img[i];
    double mean = block_sum(acc, shared) / (double)per_image;
    acc = 0.0;
    for (int64_t i = threadIdx.x; i < per_image; i += CK_THREADS) {
        double d = (double)img[i] - mean;
        acc += d * d;
    }
    double var = block_sum(acc, shared) / (double)per_image;
    double sd = sqrt(var);
    double floor_sd = 1.0 / sqrt((double)per_image);
    double adj = sd > floor_sd ? sd : floor_sd;
    for (int64_t i = threadIdx.x; i < per_image; i += CK_THREADS)
        img[i] = (float)(((double)img[i] - mean) / adj);
}

#define CK_NORM_CHUNK 128
struct norm_params {
    float mean[CK_NORM_CHUNK];
    float std[CK_NORM_CHUNK];
};

__global__ void normalize_channels_kernel(float *x, ck_shape s, int64_t c0, int64_t c_chunk,
                                          norm_params np)
{
    int64_t count = s.n * s.c * s.h * s.w;
    GRID_STRIDE(i, count)
    {
        int64_t c = s.nhwc ? i % s.c : (i / (s.h * s.w)) % s.c;
        if (c >= c0 && c < c0 + c_chunk)
            x[i] = (x[i] - np.mean[c - c0]) / np.std[c - c0];
    }
}

/* ------------------------------------------------------------------ optimizers */

/* The fused optimizer steps. One element's update is a function of its own, shared by the
 * per-tensor kernels and the grouped ones (API 1.7), so both round identically. */
__device__ __forceinline__ void sgd_element(float *p, const float *grad, float *vel, int64_t i,
                                            float lr, float momentum, float wd, int nesterov)
{
    float g = grad[i] + wd * p[i];
    float v = momentum * vel[i] + g;
    vel[i] = v;
    p[i] -= lr * (nesterov ? g + momentum * v : v);
}

__device__ __forceinline__ void adam_element(float *p, const float *grad, float *m, float *v,
                                             int64_t i, float lr, float b1, float b2,
                                             float eps, float wd, int decoupled, float bc1,
                                             float bc2)
{
    float pi = p[i];
    float g = grad[i];
    if (decoupled)
        pi -= lr * wd * pi;
    else
        g += wd * pi;
    float mi = b1 * m[i] + (1.0f - b1) * g;
    float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
}

/* With `scalars` (API 1.6) the learning rate (and Adam's bias corrections) come from device
 * memory, and nothing is written unless *gate is finite. */
__global__ void sgd_kernel(float *p, const float *grad, float *vel, int64_t count, float lr,
                           float momentum, float wd, int nesterov, const float *scalars,
                           const float *gate)
{
    if (gate && !isfinite(*gate))
        return;
    if (scalars)
        lr = scalars[0];
    GRID_STRIDE(i, count)
    sgd_element(p, grad, vel, i, lr, momentum, wd, nesterov);
}

__global__ void adam_kernel(float *p, const float *grad, float *m, float *v, int64_t count,
                            float lr, float b1, float b2, float eps, float wd, int decoupled,
                            float bc1, float bc2, const float *scalars, const float *gate)
{
    if (gate && !isfinite(*gate))
        return;
    if (scalars) {
        lr = scalars[0];
        bc1 = scalars[1];
        bc2 = scalars[2];
    }
    GRID_STRIDE(i, count)
    adam_element(p, grad, m, v, i, lr, b1, b2, eps, wd, decoupled, bc1, bc2);
}

/* Grouped updates (API 1.7): one launch covers up to CK_GROUP_MAX tensors, passed by value
 * as the kernel's argument (under the 4 KiB every architecture accepts). Block b works on
 * elements [CK_GROUP_CHUNK * (b - first_block[t]), + CK_GROUP_CHUNK) of tensor t, the last
 * t with first_block[t] <= b. */
#define CK_GROUP_MAX 48
#define CK_GROUP_CHUNK (CK_THREADS * 4)

struct group_args {
    float *p[CK_GROUP_MAX];
    const float *g[CK_GROUP_MAX];
    float *s0[CK_GROUP_MAX];
    float *s1[CK_GROUP_MAX];
    int64_t count[CK_GROUP_MAX];
    float wd[CK_GROUP_MAX];
    int first_block[CK_GROUP_MAX + 1]; /* [n] = the launch's blocks */
    int n;
};

__device__ __forceinline__ int group_tensor(const group_args &a, int block)
{
    int lo = 0, hi = a.n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (a.first_block[mid] <= block)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

__global__ void sgd_group_kernel(const group_args a, float momentum, int nesterov,
                                 const float *scalars, const float *gate)
{
    if (!isfinite(*gate))
        return;
    const float lr = scalars[0];
    const int t = group_tensor(a, (int)blockIdx.x);
    const int64_t begin = (int64_t)((int)blockIdx.x - a.first_block[t]) * CK_GROUP_CHUNK;
    const int64_t end = begin + CK_GROUP_CHUNK < a.count[t] ? begin + CK_GROUP_CHUNK : a.count[t];
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
        sgd_element(a.p[t], a.g[t], a.s0[t], i, lr, momentum, a.wd[t], nesterov);
}

__global__ void adam_group_kernel(const group_args a, float b1, float b2, float eps,
                                  int decoupled, const float *scalars, const float *gate)
{
    if (!isfinite(*gate))
        return;
    const float lr = scalars[0], bc1 = scalars[1], bc2 = scalars[2];
    const int t = group_tensor(a, (int)blockIdx.x);
    const int64_t begin = (int64_t)((int)blockIdx.x - a.first_block[t]) * CK_GROUP_CHUNK;
    const int64_t end = begin + CK_GROUP_CHUNK < a.count[t] ? begin + CK_GROUP_CHUNK : a.count[t];
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
        adam_element(a.p[t], a.g[t], a.s0[t], a.s1[t], i, lr, b1, b2, eps, a.wd[t], decoupled,
                     bc1, bc2);
}

/* API 1.8: a block that finds a non-finite element in its chunk of a.g[t] stores NaN to
 * *out (every writer stores the same value, so the race is harmless); the launcher zeroes
 * *out first. */
__global__ void finite_group_kernel(const group_args a, float *out)
{
    const int t = group_tensor(a, (int)blockIdx.x);
    const int64_t begin = (int64_t)((int)blockIdx.x - a.first_block[t]) * CK_GROUP_CHUNK;
    const int64_t end = begin + CK_GROUP_CHUNK < a.count[t] ? begin + CK_GROUP_CHUNK : a.count[t];
    int bad = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
        bad |= !isfinite(a.g[t][i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0)
        *out = __int_as_float(0x7fc00000);
}

/* Packs tensors into launches of at most CK_GROUP_MAX tensors and CK_GROUP_MAX_BLOCKS
 * blocks and hands each full pack to `launch`. Empty tensors are skipped. */
#define CK_GROUP_MAX_BLOCKS (1 << 30)

template <typename Launch>
cudaError_t for_each_group_launch(const ck_update_tensor *ts, int n, Launch launch)
{
    group_args a;
    a.n = 0;
    a.first_block[0] = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].count <= 0)
            continue;
        int64_t blocks = (ts[i].count + CK_GROUP_CHUNK - 1) / CK_GROUP_CHUNK;
        if (blocks > CK_GROUP_MAX_BLOCKS)
            return cudaErrorInvalidValue;
        if (a.n == CK_GROUP_MAX || a.first_block[a.n] + blocks > CK_GROUP_MAX_BLOCKS) {
            cudaError_t e = launch(a);
            if (e != cudaSuccess)
                return e;
            a.n = 0;
            a.first_block[0] = 0;
        }
        a.p[a.n] = ts[i].p;
        a.g[a.n] = ts[i].g;
        a.s0[a.n] = ts[i].s0;
        a.s1[a.n] = ts[i].s1;
        a.count[a.n] = ts[i].count;
        a.wd[a.n] = ts[i].wd;
        a.first_block[a.n + 1] = a.first_block[a.n] + (int)blocks;
        a.n++;
    }
    return a.n ? launch(a) : cudaSuccess;
}

} /* namespace */

/* ================================================================== launchers */

extern "C" {

cudaError_t ck_permute(const void *src, ck_shape src_shape, void *dst, int dst_nhwc,
                       int elem_size, cudaStream_t stream)
{
    ck_shape ds = src_shape;
    ds.nhwc = dst_nhwc;
    int64_t count = ds.n * ds.c * ds.h * ds.w;
    if (count == 0)
        return cudaSuccess;
    unsigned g = grid_for(count);
    switch (elem_size) {
    case 1:
        permute_kernel<uint8_t><<<g, CK_THREADS, 0, stream>>>((const uint8_t *)src, src_shape,
                                                              (uint8_t *)dst, ds, count);
        break;
    case 2:
        permute_kernel<uint16_t><<<g, CK_THREADS, 0, stream>>>(
            (const uint16_t *)src, src_shape, (uint16_t *)dst, ds, count);
        break;
    case 4:
        permute_kernel<uint32_t><<<g, CK_THREADS, 0, stream>>>(
            (const uint32_t *)src, src_shape, (uint32_t *)dst, ds, count);
        break;
    default:
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

cudaError_t ck_fill(void *p, int64_t count, int dtype, double value, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    unsigned g = grid_for(count);
    switch (dtype) {
    case CK_F32:
        fill_kernel<float><<<g, CK_THREADS, 0, stream>>>((float *)p, count, (float)value);
        break;
    case CK_F16:
        fill_kernel<__half><<<g, CK_THREADS, 0, stream>>>((__half *)p, count, (float)value);
        break;
    case CK_BF16:
        fill_kernel<__nv_bfloat16><<<g, CK_THREADS, 0, stream>>>((__nv_bfloat16 *)p, count,
                                                                  (float)value);
        break;
    case CK_U8:
        fill_kernel<uint8_t><<<g, CK_THREADS, 0, stream>>>((uint8_t *)p, count, (float)value);
        break;
    case CK_I32:
        fill_i32_kernel<<<g, CK_THREADS, 0, stream>>>((int32_t *)p, count, (int32_t)value);
        break;
    default:
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

cudaError_t ck_convert(const void *src, int src_dtype, ck_shape ss, void *dst, int dst_dtype,
                       int dst_nhwc, cudaStream_t stream)
{
    ck_shape ds = ss;
    ds.nhwc = dst_nhwc;
    int64_t count = ds.n * ds.c * ds.h * ds.w;
    if (count == 0)
        return cudaSuccess;
    unsigned g = grid_for(count);
    bool small = fits32(count);
#define CK_CONVERT(S, D)                                                                       \
    do {                                                                                       \
        if (small)                                                                             \
            convert_kernel<S, D, int32_t><<<g, CK_THREADS, 0, stream>>>((const S *)src, ss,   \
                                                                        (D *)dst, ds, count);  \
        else                                                                                   \
            convert_kernel<S, D, int64_t><<<g, CK_THREADS, 0, stream>>>((const S *)src, ss,   \
                                                                        (D *)dst, ds, count);  \
    } while (0)
    if (src_dtype == CK_F32 && dst_dtype == CK_BF16)
        CK_CONVERT(float, __nv_bfloat16);
    else if (src_dtype == CK_BF16 && dst_dtype == CK_F32)
        CK_CONVERT(__nv_bfloat16, float);
    else
        return cudaErrorInvalidValue;
#undef CK_CONVERT
    return cudaGetLastError();
}

cudaError_t ck_relu_forward(int dtype, const void *x, void *y, int64_t count,
                            cudaStream_t stream)
{
    return binary(dtype, x, x, y, count, relu_op(), stream);
}

cudaError_t ck_relu_backward(int dtype, const void *y, const void *dy, void *dx, int64_t count,
                             cudaStream_t stream)
{
    return binary(dtype, y, dy, dx, count, relu_grad_op(), stream);
}

cudaError_t ck_add(int dtype, const void *a, const void *b, void *y, int64_t count,
                   cudaStream_t stream)
{
    return binary(dtype, a, b, y, count, add_op(), stream);
}

cudaError_t ck_add_relu(int dtype, const void *a, const void *b, void *y, int64_t count,
                        cudaStream_t stream)
{
    return binary(dtype, a, b, y, count, add_relu_op(), stream);
}

cudaError_t ck_axpby(float alpha, const float *x, float beta, float *y, int64_t count,
                     cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    axpby_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(alpha, x, beta, y, count);
    return cudaGetLastError();
}

cudaError_t ck_scale(float alpha, float *y, int64_t count, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    scale_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(alpha, y, count);
    return cudaGetLastError();
}

cudaError_t ck_sum_squares(const float *x, int64_t count, double *partials, float *out,
                           cudaStream_t stream)
{
    sum_squares_partial_kernel<<<CK_REDUCE_BLOCKS, CK_THREADS, 0, stream>>>(x, count, partials);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    sum_partials_kernel<<<1, CK_THREADS, 0, stream>>>(partials, CK_REDUCE_BLOCKS, out);
    return cudaGetLastError();
}

cudaError_t ck_gap_forward(int dtype, const void *x, ck_shape xs, float *y, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c;
    if (count == 0)
        return cudaSuccess;
    CK_WITH_ACT_TYPE(dtype, (gap_forward_kernel<T><<<grid_for(count), CK_THREADS, 0, stream>>>(
                                (const T *)x, xs, y)));
    return cudaGetLastError();
}

cudaError_t ck_gap_backward(int dtype, const float *dy, void *dx, ck_shape dxs,
                            cudaStream_t stream)
{
    int64_t count = dxs.n * dxs.c * dxs.h * dxs.w;
    if (count == 0)
        return cudaSuccess;
    CK_WITH_ACT_TYPE(dtype, CK_LAUNCH_INDEXED(fits32(count), gap_backward_kernel,
                                              grid_for(count), stream, dy, (T *)dx, dxs));
    return cudaGetLastError();
}

cudaError_t ck_pool_forward(int dtype, const void *x, ck_shape xs, void *y, ck_shape ys,
                            ck_pool p, int average, cudaStream_t stream)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    if (count == 0)
        return cudaSuccess;
    bool small = fits32(xs.n * xs.c * xs.h * xs.w) && fits32(count);
    CK_WITH_ACT_TYPE(dtype, if (pool_nhwc_ok<T>(xs, ys, x, y, nullptr)) {
        CK_LAUNCH_INDEXED(small, pool_forward_nhwc_kernel, grid_for(count / pool_vec<T>::V),
                          stream, (const T *)x, xs, (T *)y, ys, p, average);
    } else {
        CK_LAUNCH_INDEXED(small, pool_forward_kernel, grid_for(count), stream, (const T *)x, xs,
                          (T *)y, ys, p, average);
    });
    return cudaGetLastError();
}

cudaError_t ck_avgpool_backward(int dtype, const void *dy, ck_shape ys, void *dx, ck_shape xs,
                                ck_pool p, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    if (count == 0)
        return cudaSuccess;
    bool small = fits32(count) && fits32(ys.n * ys.c * ys.h * ys.w);
    CK_WITH_ACT_TYPE(dtype, CK_LAUNCH_INDEXED(small, avgpool_backward_kernel,
                                              grid_for(count), stream, (const T *)dy, ys,
                                              (T *)dx, xs, p));
    return cudaGetLastError();
}

cudaError_t ck_maxpool_backward(int dtype, const void *x, ck_shape xs, const void *dy,
                                ck_shape ys, void *dx, ck_pool p, uint8_t *argmax,
                                cudaStream_t stream)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w, out = ys.n * ys.c * ys.h * ys.w;
    if (count == 0)
        return cudaSuccess;
    if (p.kh * p.kw > CK_MAXPOOL_MAX_WINDOW)
        return cudaErrorInvalidValue;
    /* Two passes: each window's maximum found once (not once per cell it covers), then a
     * gather that sums in a fixed order (no atomics, so the bits repeat). */
    bool small = fits32(count) && fits32(out);
    CK_WITH_ACT_TYPE(dtype, if (pool_nhwc_ok<T>(xs, ys, x, dy, dx) &&
                                ((uintptr_t)argmax & 15u) == 0) {
        constexpr int V = pool_vec<T>::V;
        if (out > 0) {
            CK_LAUNCH_INDEXED(small, maxpool_argmax_nhwc_kernel, grid_for(out / V), stream,
                              (const T *)x, xs, ys, argmax, p);
        }
        CK_LAUNCH_INDEXED(small, maxpool_backward_nhwc_kernel, grid_for(count / V), stream,
                          argmax, (const T *)dy, ys, (T *)dx, xs, p);
    } else {
        if (out > 0) {
            CK_LAUNCH_INDEXED(small, maxpool_argmax_kernel, grid_for(out), stream,
                              (const T *)x, xs, ys, argmax, p);
        }
        CK_LAUNCH_INDEXED(small, maxpool_backward_kernel, grid_for(count), stream, argmax,
                          (const T *)dy, ys, (T *)dx, xs, p);
    });
    return cudaGetLastError();
}

cudaError_t ck_add_channel_bias(int dtype, void *y, ck_shape s, const float *bias,
                                cudaStream_t stream)
{
    int64_t count = s.n * s.c * s.h * s.w;
    if (count == 0)
        return cudaSuccess;
    CK_WITH_ACT_TYPE(dtype, CK_LAUNCH_INDEXED(fits32(count), add_channel_bias_kernel,
                                              grid_for(count), stream, (T *)y, s, bias));
    return cudaGetLastError();
}

cudaError_t ck_channel_sums(int dtype, const void *dy, ck_shape s, float *db,
                            cudaStream_t stream)
{
    if (s.c == 0)
        return cudaSuccess;
    if (s.c > CK_MAX_BLOCKS)
        return cudaErrorInvalidValue;
    CK_WITH_ACT_TYPE(dtype, (channel_sums_kernel<T><<<(unsigned)s.c, CK_THREADS, 0, stream>>>(
                                (const T *)dy, s, db)));
    return cudaGetLastError();
}

cudaError_t ck_add_row_bias(float *y, const float *bias, int64_t rows, int64_t cols,
                            cudaStream_t stream)
{
    if (rows * cols == 0)
        return cudaSuccess;
    add_row_bias_kernel<<<grid_for(rows * cols), CK_THREADS, 0, stream>>>(y, bias, rows, cols);
    return cudaGetLastError();
}

cudaError_t ck_column_sums(const float *dy, float *db, int64_t rows, int64_t cols,
                           cudaStream_t stream)
{
    if (cols == 0)
        return cudaSuccess;
    column_sums_kernel<<<grid_for(cols), CK_THREADS, 0, stream>>>(dy, db, rows, cols);
    return cudaGetLastError();
}

cudaError_t ck_softmax_xent(const float *logits, const int32_t *labels, int64_t n, int64_t k,
                            float smoothing, float grad_scale, float *row_loss, float *loss,
                            float *dlogits, cudaStream_t stream)
{
    if (n > 0) {
        softmax_xent_kernel<<<(unsigned)n, CK_THREADS, 0, stream>>>(
            logits, labels, k, smoothing, grad_scale / (float)n, row_loss, dlogits);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    mean_kernel<<<1, CK_THREADS, 0, stream>>>(row_loss, n, loss);
    return cudaGetLastError();
}

cudaError_t ck_topk_correct(const float *logits, const int32_t *labels, int64_t n, int64_t k,
                            int topk, float *correct, cudaStream_t stream)
{
    topk_correct_kernel<<<1, CK_THREADS, 0, stream>>>(logits, labels, n, k, topk, correct);
    return cudaGetLastError();
}

cudaError_t ck_subsample_pad_forward(int dtype, const void *x, ck_shape xs, void *y,
                                     ck_shape ys, int stride, cudaStream_t stream)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    if (count == 0)
        return cudaSuccess;
    CK_WITH_ACT_TYPE(dtype,
                     (subsample_pad_forward_kernel<T><<<grid_for(count), CK_THREADS, 0, stream>>>(
                         (const T *)x, xs, (T *)y, ys, stride)));
    return cudaGetLastError();
}

cudaError_t ck_subsample_pad_backward(int dtype, const void *dy, ck_shape ys, void *dx,
                                      ck_shape xs, int stride, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    if (count == 0)
        return cudaSuccess;
    CK_WITH_ACT_TYPE(dtype,
                     (subsample_pad_backward_kernel<T><<<grid_for(count), CK_THREADS, 0, stream>>>(
                         (const T *)dy, ys, (T *)dx, xs, stride)));
    return cudaGetLastError();
}

cudaError_t ck_convert_u8(const uint8_t *src, ck_shape ss, float scale, float *dst,
                          ck_shape ds, cudaStream_t stream)
{
    int64_t count = ds.n * ds.c * ds.h * ds.w;
    if (count == 0)
        return cudaSuccess;
    convert_u8_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(src, ss, scale, dst, ds);
    return cudaGetLastError();
}

cudaError_t ck_crop_flip(const float *src, ck_shape ss, float *dst, ck_shape ds, int pad,
                         float fill, const int32_t *offset_y, const int32_t *offset_x,
                         const uint8_t *flip, cudaStream_t stream)
{
    int64_t per_image = ds.c * ds.h * ds.w;
    for (int64_t n0 = 0; n0 < ds.n; n0 += CK_CROP_CHUNK) {
        int64_t chunk = ds.n - n0 < CK_CROP_CHUNK ? ds.n - n0 : CK_CROP_CHUNK;
        crop_params cp;
        for (int64_t s = 0; s < chunk; s++) {
            cp.oy[s] = offset_y[n0 + s];
            cp.ox[s] = offset_x[n0 + s];
            cp.flip[s] = flip ? (flip[n0 + s] ? 1 : 0) : 0;
        }
        for (int64_t s = chunk; s < CK_CROP_CHUNK; s++) {
            cp.oy[s] = cp.ox[s] = 0;
            cp.flip[s] = 0;
        }
        int64_t count = chunk * per_image;
        if (count == 0)
            continue;
        crop_flip_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(src, ss, dst, ds, pad, fill,
                                                                     n0, chunk, cp);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t ck_standardize(float *x, ck_shape s, cudaStream_t stream)
{
    int64_t per_image = s.c * s.h * s.w;
    if (s.n == 0 || per_image == 0)
        return cudaSuccess;
    standardize_kernel<<<(unsigned)s.n, CK_THREADS, 0, stream>>>(x, per_image);
    return cudaGetLastError();
}

cudaError_t ck_normalize_channels(float *x, ck_shape s, const float *mean, const float *std,
                                  cudaStream_t stream)
{
    int64_t count = s.n * s.c * s.h * s.w;
    if (count == 0)
        return cudaSuccess;
    for (int64_t c0 = 0; c0 < s.c; c0 += CK_NORM_CHUNK) {
        int64_t chunk = s.c - c0 < CK_NORM_CHUNK ? s.c - c0 : CK_NORM_CHUNK;
        norm_params np;
        for (int64_t c = 0; c < CK_NORM_CHUNK; c++) {
            np.mean[c] = c < chunk ? mean[c0 + c] : 0.0f;
            np.std[c] = c < chunk ? std[c0 + c] : 1.0f;
        }
        normalize_channels_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(x, s, c0, chunk,
                                                                              np);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t ck_sgd_update(float *p, const float *g, float *v, int64_t count, float lr,
                          float momentum, float weight_decay, int nesterov,
                          const float *scalars, const float *gate, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    sgd_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(p, g, v, count, lr, momentum,
                                                           weight_decay, nesterov, scalars,
                                                           gate);
    return cudaGetLastError();
}

cudaError_t ck_adam_update(float *p, const float *g, float *m, float *v, int64_t count,
                           float lr, float beta1, float beta2, float eps, float weight_decay,
                           int decoupled, float bc1, float bc2, const float *scalars,
                           const float *gate, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    adam_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(p, g, m, v, count, lr, beta1, beta2,
                                                            eps, weight_decay, decoupled, bc1,
                                                            bc2, scalars, gate);
    return cudaGetLastError();
}


cudaError_t ck_sgd_update_group(const ck_update_tensor *ts, int n, float momentum,
                                int nesterov, const float *scalars, const float *gate,
                                cudaStream_t stream)
{
    return for_each_group_launch(ts, n, [&](const group_args &a) {
        sgd_group_kernel<<<a.first_block[a.n], CK_THREADS, 0, stream>>>(a, momentum, nesterov,
                                                                        scalars, gate);
        return cudaGetLastError();
    });
}

cudaError_t ck_adam_update_group(const ck_update_tensor *ts, int n, float beta1, float beta2,
                                 float eps, int decoupled, const float *scalars,
                                 const float *gate, cudaStream_t stream)
{
    return for_each_group_launch(ts, n, [&](const group_args &a) {
        adam_group_kernel<<<a.first_block[a.n], CK_THREADS, 0, stream>>>(a, beta1, beta2, eps,
                                                                         decoupled, scalars,
                                                                         gate);
        return cudaGetLastError();
    });
}

cudaError_t ck_check_finite_group(const ck_update_tensor *ts, int n, float *out,
                                  cudaStream_t stream)
{
    cudaError_t e = cudaMemsetAsync(out, 0, sizeof *out, stream);
    if (e != cudaSuccess)
        return e;
    return for_each_group_launch(ts, n, [&](const group_args &a) {
        finite_group_kernel<<<a.first_block[a.n], CK_THREADS, 0, stream>>>(a, out);
        return cudaGetLastError();
    });
}

} /* extern "C" */
