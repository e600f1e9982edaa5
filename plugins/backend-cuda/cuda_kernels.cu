/* backend-cuda: the backend's own kernels (everything cuDNN and cuBLAS do not cover):
 * layout permutes, fills, elementwise ops, reductions, the loss and metric, image batch
 * operations and the fused optimizer steps. Reductions run in a fixed order (no atomics)
 * so results are bitwise reproducible from run to run. See cuda_kernels.h. */
#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

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

/* ------------------------------------------------------------------ elementwise */

__global__ void relu_forward_kernel(const float *x, float *y, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

__global__ void relu_backward_kernel(const float *y, const float *dy, float *dx, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

__global__ void add_kernel(const float *a, const float *b, float *y, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        y[i] = a[i] + b[i];
    }
}

__global__ void add_relu_kernel(const float *a, const float *b, float *y, int64_t count)
{
    GRID_STRIDE(i, count)
    {
        float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

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

__global__ void gap_forward_kernel(const float *x, ck_shape xs, float *y)
{
    int64_t count = xs.n * xs.c;
    GRID_STRIDE(i, count)
    {
        int64_t n = i / xs.c, c = i % xs.c;
        double acc = 0.0;
        for (int64_t h = 0; h < xs.h; h++)
            for (int64_t w = 0; w < xs.w; w++)
                acc += x[offset4(xs, n, c, h, w)];
        y[i] = (float)(acc / (double)(xs.h * xs.w));
    }
}

__global__ void gap_backward_kernel(const float *dy, float *dx, ck_shape s)
{
    int64_t count = s.n * s.c * s.h * s.w;
    float inv = 1.0f / (float)(s.h * s.w);
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(s, i, n, c, h, w);
        dx[i] = dy[n * s.c + c] * inv;
    }
}

/* The window-local index (row-major, 0 .. kh*kw-1) of each output cell's first maximum,
 * padding excluded; CK_NO_ARGMAX for a window that lies wholly in the padding. */
#define CK_NO_ARGMAX (CK_MAXPOOL_MAX_WINDOW + 1)

__global__ void maxpool_argmax_kernel(const float *x, ck_shape xs, ck_shape ys, uint8_t *arg,
                                      ck_pool p)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, oh, ow;
        coords4(ys, i, n, c, oh, ow);
        int64_t h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
        int best_at = CK_NO_ARGMAX;
        float best = 0.0f;
        for (int kh = 0; kh < p.kh; kh++) {
            int64_t h = h0 + kh;
            if (h < 0 || h >= xs.h)
                continue;
            for (int kw = 0; kw < p.kw; kw++) {
                int64_t w = w0 + kw;
                if (w < 0 || w >= xs.w)
                    continue;
                float v = x[offset4(xs, n, c, h, w)];
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
__global__ void maxpool_backward_kernel(const uint8_t *arg, const float *dy, ck_shape ys,
                                        float *dx, ck_shape xs, ck_pool p)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, ih, iw;
        coords4(xs, i, n, c, ih, iw);
        /* Output windows that contain (ih, iw). */
        int64_t t = ih + p.ph - p.kh + 1;
        int64_t oh_lo = t <= 0 ? 0 : (t + p.sh - 1) / p.sh;
        int64_t oh_hi = (ih + p.ph) / p.sh;
        if (oh_hi > ys.h - 1)
            oh_hi = ys.h - 1;
        t = iw + p.pw - p.kw + 1;
        int64_t ow_lo = t <= 0 ? 0 : (t + p.sw - 1) / p.sw;
        int64_t ow_hi = (iw + p.pw) / p.sw;
        if (ow_hi > ys.w - 1)
            ow_hi = ys.w - 1;
        float acc = 0.0f;
        for (int64_t oh = oh_lo; oh <= oh_hi; oh++) {
            for (int64_t ow = ow_lo; ow <= ow_hi; ow++) {
                int64_t local = (ih - (oh * p.sh - p.ph)) * p.kw + (iw - (ow * p.sw - p.pw));
                int64_t at = offset4(ys, n, c, oh, ow);
                if (arg[at] == local)
                    acc += dy[at];
            }
        }
        dx[i] = acc;
    }
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

__global__ void subsample_pad_forward_kernel(const float *x, ck_shape xs, float *y, ck_shape ys,
                                             int stride)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(ys, i, n, c, h, w);
        y[i] = c < xs.c ? x[offset4(xs, n, c, h * stride, w * stride)] : 0.0f;
    }
}

__global__ void subsample_pad_backward_kernel(const float *dy, ck_shape ys, float *dx,
                                              ck_shape xs, int stride)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    GRID_STRIDE(i, count)
    {
        int64_t n, c, h, w;
        coords4(xs, i, n, c, h, w);
        dx[i] = (h % stride == 0 && w % stride == 0)
                    ? dy[offset4(ys, n, c, h / stride, w / stride)]
                    : 0.0f;
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

__global__ void sgd_kernel(float *p, const float *grad, float *vel, int64_t count, float lr,
                           float momentum, float wd, int nesterov)
{
    GRID_STRIDE(i, count)
    {
        float g = grad[i] + wd * p[i];
        float v = momentum * vel[i] + g;
        vel[i] = v;
        p[i] -= lr * (nesterov ? g + momentum * v : v);
    }
}

__global__ void adam_kernel(float *p, const float *grad, float *m, float *v, int64_t count,
                            float lr, float b1, float b2, float eps, float wd, int decoupled,
                            float bc1, float bc2)
{
    GRID_STRIDE(i, count)
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

cudaError_t ck_relu_forward(const float *x, float *y, int64_t count, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    relu_forward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(x, y, count);
    return cudaGetLastError();
}

cudaError_t ck_relu_backward(const float *y, const float *dy, float *dx, int64_t count,
                             cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    relu_backward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(y, dy, dx, count);
    return cudaGetLastError();
}

cudaError_t ck_add(const float *a, const float *b, float *y, int64_t count, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    add_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(a, b, y, count);
    return cudaGetLastError();
}

cudaError_t ck_add_relu(const float *a, const float *b, float *y, int64_t count,
                        cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    add_relu_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(a, b, y, count);
    return cudaGetLastError();
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

cudaError_t ck_gap_forward(const float *x, ck_shape xs, float *y, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c;
    if (count == 0)
        return cudaSuccess;
    gap_forward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(x, xs, y);
    return cudaGetLastError();
}

cudaError_t ck_gap_backward(const float *dy, float *dx, ck_shape dxs, cudaStream_t stream)
{
    int64_t count = dxs.n * dxs.c * dxs.h * dxs.w;
    if (count == 0)
        return cudaSuccess;
    gap_backward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(dy, dx, dxs);
    return cudaGetLastError();
}

cudaError_t ck_maxpool_backward(const float *x, ck_shape xs, const float *dy, ck_shape ys,
                                float *dx, ck_pool p, uint8_t *argmax, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w, out = ys.n * ys.c * ys.h * ys.w;
    if (count == 0)
        return cudaSuccess;
    if (p.kh * p.kw > CK_MAXPOOL_MAX_WINDOW)
        return cudaErrorInvalidValue;
    /* Two passes: each window's maximum found once (not once per cell it covers), then a
     * gather that sums in a fixed order (no atomics, so the bits repeat). */
    if (out > 0)
        maxpool_argmax_kernel<<<grid_for(out), CK_THREADS, 0, stream>>>(x, xs, ys, argmax, p);
    maxpool_backward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(argmax, dy, ys, dx,
                                                                        xs, p);
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

cudaError_t ck_subsample_pad_forward(const float *x, ck_shape xs, float *y, ck_shape ys,
                                     int stride, cudaStream_t stream)
{
    int64_t count = ys.n * ys.c * ys.h * ys.w;
    if (count == 0)
        return cudaSuccess;
    subsample_pad_forward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(x, xs, y, ys,
                                                                             stride);
    return cudaGetLastError();
}

cudaError_t ck_subsample_pad_backward(const float *dy, ck_shape ys, float *dx, ck_shape xs,
                                      int stride, cudaStream_t stream)
{
    int64_t count = xs.n * xs.c * xs.h * xs.w;
    if (count == 0)
        return cudaSuccess;
    subsample_pad_backward_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(dy, ys, dx, xs,
                                                                              stride);
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
                          cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    sgd_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(p, g, v, count, lr, momentum,
                                                           weight_decay, nesterov);
    return cudaGetLastError();
}

cudaError_t ck_adam_update(float *p, const float *g, float *m, float *v, int64_t count,
                           float lr, float beta1, float beta2, float eps, float weight_decay,
                           int decoupled, float bc1, float bc2, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    adam_kernel<<<grid_for(count), CK_THREADS, 0, stream>>>(p, g, m, v, count, lr, beta1, beta2,
                                                            eps, weight_decay, decoupled, bc1,
                                                            bc2);
    return cudaGetLastError();
}

} /* extern "C" */
