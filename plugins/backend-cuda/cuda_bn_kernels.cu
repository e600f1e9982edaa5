/* backend-cuda: batch normalisation over channels-last data (NHWC, or a 2-D (N, C) tensor),
 * seen as `rows` rows of `c` channels. cuDNN's NHWC batch norm in fp32 ran 20-100x under
 * memory bandwidth on an H200 (2026-12-04: 33 ms for 256x56x56x256 where about 0.5 ms is the
 * bandwidth floor), so the channels-last path is ours; NCHW stays on cuDNN.
 *
 * Training forward is three launches: per-block partial statistics (Welford), a per-channel
 * merge of the partials in a fixed order (mean, 1/sqrt(var + eps), running statistics), and
 * the normalisation (optionally followed by ReLU). Backward likewise: partial sums of dy and
 * dy * (x - mean), their merge into dbeta and dgamma, and dx. A warp reads consecutive
 * channels of one row (coalesced); when c is a multiple of a 16-byte vector (4 f32 or 8 bf16
 * channels) and the data are 16-byte aligned, each thread takes one vector per row.
 * Activations (x, y, dy, dx) are f32 or bf16 (SDK API 1.5); statistics, parameters and all
 * arithmetic are f32 (fp64 in the merges), and bf16 outputs are rounded to nearest even. The partition into blocks depends only on rows and c,
 * never on the device, and nothing uses atomics, so results are bitwise reproducible. */
#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int kBlockThreads = 512;   /* threads per block: TX channel lanes x TY rows */
constexpr int kTargetBlocks = 1024;  /* blocks to aim for: several per multiprocessor */
constexpr int kMaxSplits = 2048;     /* row partitions (partial results per channel) */
constexpr int kMinRowsPerThread = 8; /* fewer splits for small tensors: less to merge */

/* How one launch covers the tensor: lanes of V channels each, TX lanes by TY rows a block,
 * gx blocks across the channels, gy blocks (splits) down the rows. */
struct bn_plan {
    int v, tx, ty;
    int64_t lanes;
    unsigned gx, gy;
};

bn_plan make_plan(int64_t rows, int64_t c, int vec)
{
    bn_plan p;
    p.v = vec;
    p.lanes = (c + vec - 1) / vec;
    int tx = 1;
    while (tx < 32 && tx < p.lanes)
        tx <<= 1;
    p.tx = tx;
    p.ty = kBlockThreads / tx;
    p.gx = (unsigned)((p.lanes + tx - 1) / tx);
    int64_t gy = (kTargetBlocks + p.gx - 1) / p.gx;
    int64_t row_blocks = (rows + (int64_t)p.ty * kMinRowsPerThread - 1) / ((int64_t)p.ty * kMinRowsPerThread);
    if (gy > row_blocks)
        gy = row_blocks;
    if (gy > kMaxSplits)
        gy = kMaxSplits;
    if (gy < 1)
        gy = 1;
    p.gy = (unsigned)gy;
    return p;
}

int can_vectorise(int64_t c, int v, const void *a, const void *b, const void *d, const void *e)
{
    const void *ptrs[] = {a, b, d, e};
    if (c % v != 0)
        return 0;
    for (const void *q : ptrs)
        if (q && ((uintptr_t)q & 15u) != 0)
            return 0;
    return 1;
}

/* V consecutive channels, as floats. */
template <int V> struct vec_t {
    float v[V];
};

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T narrow(float v);
template <> __device__ __forceinline__ float narrow<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* V elements of T at p: one 16-byte access when V * sizeof(T) == 16 (then p is aligned). */
template <int V, typename T> __device__ __forceinline__ vec_t<V> load(const T *p)
{
    vec_t<V> r;
    if constexpr (V * sizeof(T) == 16) {
        uint4 q = *reinterpret_cast<const uint4 *>(p);
        const T *e = reinterpret_cast<const T *>(&q);
#pragma unroll
        for (int k = 0; k < V; k++)
            r.v[k] = widen(e[k]);
    } else {
#pragma unroll
        for (int k = 0; k < V; k++)
            r.v[k] = widen(p[k]);
    }
    return r;
}

template <int V, typename T> __device__ __forceinline__ void store(T *p, const vec_t<V> &r)
{
    if constexpr (V * sizeof(T) == 16) {
        uint4 q;
        T *e = reinterpret_cast<T *>(&q);
#pragma unroll
        for (int k = 0; k < V; k++)
            e[k] = narrow<T>(r.v[k]);
        *reinterpret_cast<uint4 *>(p) = q;
    } else {
#pragma unroll
        for (int k = 0; k < V; k++)
            p[k] = narrow<T>(r.v[k]);
    }
}

/* Chan et al.'s merge of two Welford states (count, mean, M2) into the first. */
template <typename T>
__device__ __forceinline__ void welford_merge(T &n, T &mean, T &m2, T nb, T meanb, T m2b)
{
    if (nb == T(0))
        return;
    if (n == T(0)) {
        n = nb;
        mean = meanb;
        m2 = m2b;
        return;
    }
    T total = n + nb;
    T delta = meanb - mean;
    T fb = nb / total;
    mean += delta * fb;
    m2 += m2b + delta * delta * n * fb;
    n = total;
}

/* Adds one row's V values to a thread's Welford states (count n shared by the V channels). */
template <int V>
__device__ __forceinline__ void welford_add(float &n, float *mean, float *m2, const vec_t<V> &a)
{
    n += 1.0f;
    for (int k = 0; k < V; k++) {
        float d = a.v[k] - mean[k];
        mean[k] += d / n;
        m2[k] += d * (a.v[k] - mean[k]);
    }
}

/* Lane index and first channel of this thread; false when past the last channel. */
__device__ __forceinline__ bool lane_channel(int v, int64_t lanes, int64_t &c0)
{
    int64_t lane = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    c0 = lane * v;
    return lane < lanes;
}

/* Partial Welford statistics of rows by, by + gy, ... (in units of TY rows) per channel:
 * part holds count, mean and M2 planes of gy x c floats each. */
template <int V, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    stats_partial_kernel(const T *__restrict__ x, int64_t rows, int64_t c,
                         int64_t lanes, float *__restrict__ part)
{
    extern __shared__ float shared[];
    const int tx = threadIdx.x, ty = threadIdx.y, n_tx = blockDim.x, n_ty = blockDim.y;
    float *sn = shared, *smean = shared + kBlockThreads, *sm2 = shared + 2 * kBlockThreads;
    int64_t c0;
    bool active = lane_channel(V, lanes, c0);
    float n = 0.0f, mean[V], m2[V];
    for (int k = 0; k < V; k++)
        mean[k] = m2[k] = 0.0f;
    if (active) {
        const int64_t step = (int64_t)gridDim.y * n_ty;
        int64_t r = (int64_t)blockIdx.y * n_ty + ty;
        /* two rows in flight per iteration: the loads are independent of the updates */
        for (; r + step < rows; r += 2 * step) {
            vec_t<V> a = load<V>(x + r * c + c0), b = load<V>(x + (r + step) * c + c0);
            welford_add<V>(n, mean, m2, a);
            welford_add<V>(n, mean, m2, b);
        }
        if (r < rows)
            welford_add<V>(n, mean, m2, load<V>(x + r * c + c0));
    }
    /* Merge down the block's rows, one channel of the lane at a time, in a fixed tree. */
    for (int k = 0; k < V; k++) {
        const int at = ty * n_tx + tx;
        sn[at] = n;
        smean[at] = mean[k];
        sm2[at] = m2[k];
        __syncthreads();
        for (int half = n_ty / 2; half > 0; half >>= 1) {
            if (ty < half) {
                const int other = (ty + half) * n_tx + tx;
                float mn = sn[at], mm = smean[at], mq = sm2[at];
                welford_merge(mn, mm, mq, sn[other], smean[other], sm2[other]);
                sn[at] = mn;
                smean[at] = mm;
                sm2[at] = mq;
            }
            __syncthreads();
        }
        if (ty == 0 && active) {
            const int64_t plane = (int64_t)gridDim.y * c, at_out = (int64_t)blockIdx.y * c + c0 + k;
            part[at_out] = sn[tx];
            part[plane + at_out] = smean[tx];
            part[2 * plane + at_out] = sm2[tx];
        }
        __syncthreads();
    }
}

/* One block of kFinalizeThreads per channel: each thread merges splits t, t + T, ... in
 * order, then the block merges the threads' states in a fixed tree; thread 0 writes the
 * saved and running statistics. */
constexpr int kFinalizeThreads = 256;

__global__ void __launch_bounds__(kFinalizeThreads)
    stats_finalize_kernel(const float *__restrict__ part, int64_t splits, int64_t rows,
                          int64_t c, float momentum, float eps, float *running_mean,
                          float *running_var, float *save_mean, float *save_invstd)
{
    __shared__ double sn[kFinalizeThreads], smean[kFinalizeThreads], sm2[kFinalizeThreads];
    const int64_t ch = blockIdx.x;
    const int t = threadIdx.x;
    const int64_t plane = splits * c;
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int64_t s = t; s < splits; s += kFinalizeThreads)
        welford_merge(n, mean, m2, (double)part[s * c + ch], (double)part[plane + s * c + ch],
                      (double)part[2 * plane + s * c + ch]);
    sn[t] = n;
    smean[t] = mean;
    sm2[t] = m2;
    __syncthreads();
    for (int half = kFinalizeThreads / 2; half > 0; half >>= 1) {
        if (t < half) {
            double mn = sn[t], mm = smean[t], mq = sm2[t];
            welford_merge(mn, mm, mq, sn[t + half], smean[t + half], sm2[t + half]);
            sn[t] = mn;
            smean[t] = mm;
            sm2[t] = mq;
        }
        __syncthreads();
    }
    if (t != 0)
        return;
    mean = smean[0];
    m2 = sm2[0];
    double var = m2 / (double)rows;
    save_mean[ch] = (float)mean;
    save_invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
    double unbiased = rows > 1 ? m2 / (double)(rows - 1) : var;
    running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
    running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
}

/* y = (x - mean) * scale + beta, scale = gamma * invstd (or gamma / sqrt(var + eps) when
 * `var` is given: inference), plus the residual when `res` is given, then ReLU when RELU. */
template <int V, bool RELU, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    normalise_kernel(const T *x, const T *res, T *y, int64_t rows,
                     int64_t c, int64_t lanes, const float *__restrict__ gamma,
                     const float *__restrict__ beta, const float *__restrict__ mean,
                     const float *__restrict__ invstd, const float *__restrict__ var,
                     float eps)
{
    int64_t c0;
    if (!lane_channel(V, lanes, c0))
        return;
    float m[V], s[V], sh[V];
    for (int k = 0; k < V; k++) {
        float is = var ? 1.0f / sqrtf(var[c0 + k] + eps) : invstd[c0 + k];
        m[k] = mean[c0 + k];
        s[k] = gamma[c0 + k] * is;
        sh[k] = beta[c0 + k];
    }
    const int64_t step = (int64_t)gridDim.y * blockDim.y;
    for (int64_t r = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += step) {
        vec_t<V> a = load<V>(x + r * c + c0);
        for (int k = 0; k < V; k++)
            a.v[k] = (a.v[k] - m[k]) * s[k] + sh[k];
        if (res) {
            vec_t<V> b = load<V>(res + r * c + c0);
            for (int k = 0; k < V; k++)
                a.v[k] += b.v[k];
        }
        if (RELU)
            for (int k = 0; k < V; k++)
                a.v[k] = a.v[k] > 0.0f ? a.v[k] : 0.0f;
        store<V>(y + r * c + c0, a);
    }
}

/* dy as batch norm's backward sees it: masked by y > 0 after a fused ReLU. */
template <int V, bool RELU, typename T>
__device__ __forceinline__ vec_t<V> load_dy(const T *dy, const T *y, int64_t at)
{
    vec_t<V> g = load<V>(dy + at);
    if constexpr (RELU) {
        vec_t<V> out = load<V>(y + at);
        for (int k = 0; k < V; k++)
            g.v[k] = out.v[k] > 0.0f ? g.v[k] : 0.0f;
    }
    return g;
}

/* Partial sums per channel of dy and dy * (x - mean): two planes of gy x c floats. */
template <int V, bool RELU, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    grad_partial_kernel(const T *__restrict__ x, const T *__restrict__ y,
                        const T *__restrict__ dy, int64_t rows, int64_t c, int64_t lanes,
                        const float *__restrict__ mean, float *__restrict__ part)
{
    extern __shared__ float shared[];
    const int tx = threadIdx.x, ty = threadIdx.y, n_tx = blockDim.x, n_ty = blockDim.y;
    float *sdy = shared, *sdyx = shared + kBlockThreads;
    int64_t c0;
    bool active = lane_channel(V, lanes, c0);
    float m[V], sum_dy[V], sum_dyx[V];
    for (int k = 0; k < V; k++) {
        sum_dy[k] = sum_dyx[k] = 0.0f;
        m[k] = active ? mean[c0 + k] : 0.0f;
    }
    if (active) {
        const int64_t step = (int64_t)gridDim.y * n_ty;
        for (int64_t r = (int64_t)blockIdx.y * n_ty + ty; r < rows; r += step) {
            vec_t<V> a = load<V>(x + r * c + c0);
            vec_t<V> g = load_dy<V, RELU, T>(dy, y, r * c + c0);
            for (int k = 0; k < V; k++) {
                sum_dy[k] += g.v[k];
                sum_dyx[k] += g.v[k] * (a.v[k] - m[k]);
            }
        }
    }
    for (int k = 0; k < V; k++) {
        const int at = ty * n_tx + tx;
        sdy[at] = sum_dy[k];
        sdyx[at] = sum_dyx[k];
        __syncthreads();
        for (int half = n_ty / 2; half > 0; half >>= 1) {
            if (ty < half) {
                sdy[at] += sdy[(ty + half) * n_tx + tx];
                sdyx[at] += sdyx[(ty + half) * n_tx + tx];
            }
            __syncthreads();
        }
        if (ty == 0 && active) {
            const int64_t plane = (int64_t)gridDim.y * c, at_out = (int64_t)blockIdx.y * c + c0 + k;
            part[at_out] = sdy[tx];
            part[plane + at_out] = sdyx[tx];
        }
        __syncthreads();
    }
}

/* One block per channel, as stats_finalize_kernel: dbeta = sum dy,
 * dgamma = invstd * sum dy * (x - mean). */
__global__ void __launch_bounds__(kFinalizeThreads)
    grad_finalize_kernel(const float *__restrict__ part, int64_t splits, int64_t c,
                         const float *__restrict__ invstd, float *dgamma, float *dbeta)
{
    __shared__ double sdy[kFinalizeThreads], sdyx[kFinalizeThreads];
    const int64_t ch = blockIdx.x;
    const int t = threadIdx.x;
    const int64_t plane = splits * c;
    double sum_dy = 0.0, sum_dyx = 0.0;
    for (int64_t s = t; s < splits; s += kFinalizeThreads) {
        sum_dy += part[s * c + ch];
        sum_dyx += part[plane + s * c + ch];
    }
    sdy[t] = sum_dy;
    sdyx[t] = sum_dyx;
    __syncthreads();
    for (int half = kFinalizeThreads / 2; half > 0; half >>= 1) {
        if (t < half) {
            sdy[t] += sdy[t + half];
            sdyx[t] += sdyx[t + half];
        }
        __syncthreads();
    }
    if (t == 0) {
        dbeta[ch] = (float)sdy[0];
        dgamma[ch] = (float)(sdyx[0] * (double)invstd[ch]);
    }
}

/* dx = gamma * invstd * (dy - dbeta / rows - (x - mean) * invstd * dgamma / rows). */
template <int V, bool RELU, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    grad_input_kernel(const T *__restrict__ x, const T *y, const T *dy, T *dx,
                      int64_t rows, int64_t c, int64_t lanes, const float *__restrict__ gamma,
                      const float *__restrict__ mean, const float *__restrict__ invstd,
                      const float *__restrict__ dgamma, const float *__restrict__ dbeta)
{
    int64_t c0;
    if (!lane_channel(V, lanes, c0))
        return;
    /* dy and dx may be one buffer: each element is read, then written, by one thread. */
    float m[V], k1[V], cb[V], cx[V];
    const float inv_rows = 1.0f / (float)rows;
    for (int k = 0; k < V; k++) {
        float is = invstd[c0 + k];
        m[k] = mean[c0 + k];
        k1[k] = gamma[c0 + k] * is;
        cb[k] = dbeta[c0 + k] * inv_rows;
        cx[k] = dgamma[c0 + k] * is * inv_rows;
    }
    const int64_t step = (int64_t)gridDim.y * blockDim.y;
    for (int64_t r = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += step) {
        vec_t<V> a = load<V>(x + r * c + c0);
        vec_t<V> g = load_dy<V, RELU, T>(dy, y, r * c + c0);
        for (int k = 0; k < V; k++)
            g.v[k] = k1[k] * (g.v[k] - cb[k] - (a.v[k] - m[k]) * cx[k]);
        store<V>(dx + r * c + c0, g);
    }
}

template <int V, typename T>
cudaError_t train(const T *x, const T *res, T *y, int64_t rows, int64_t c, const float *gamma,
                  const float *beta, float *running_mean, float *running_var,
                  float *save_mean, float *save_invstd, float momentum, float eps, int relu,
                  float *part, cudaStream_t stream)
{
    bn_plan p = make_plan(rows, c, V);
    dim3 block(p.tx, p.ty), grid(p.gx, p.gy);
    stats_partial_kernel<V, T><<<grid, block, 3 * kBlockThreads * sizeof(float), stream>>>(
        x, rows, c, p.lanes, part);
    stats_finalize_kernel<<<(unsigned)c, kFinalizeThreads, 0, stream>>>(
        part, p.gy, rows, c, momentum, eps, running_mean, running_var, save_mean, save_invstd);
    if (relu)
        normalise_kernel<V, true, T><<<grid, block, 0, stream>>>(
            x, res, y, rows, c, p.lanes, gamma, beta, save_mean, save_invstd, nullptr, eps);
    else
        normalise_kernel<V, false, T><<<grid, block, 0, stream>>>(
            x, res, y, rows, c, p.lanes, gamma, beta, save_mean, save_invstd, nullptr, eps);
    return cudaGetLastError();
}

/* Normalisation with the running statistics. */
template <int V, typename T>
cudaError_t infer(const T *x, T *y, int64_t rows, int64_t c, const float *gamma,
                  const float *beta, const float *mean, const float *var, float eps,
                  cudaStream_t stream)
{
    bn_plan p = make_plan(rows, c, V);
    normalise_kernel<V, false, T><<<dim3(p.gx, p.gy), dim3(p.tx, p.ty), 0, stream>>>(
        x, nullptr, y, rows, c, p.lanes, gamma, beta, mean, nullptr, var, eps);
    return cudaGetLastError();
}

template <int V, bool RELU, typename T>
cudaError_t backward(const T *x, const T *y, const T *dy, T *dx, int64_t rows,
                     int64_t c, const float *gamma, const float *save_mean,
                     const float *save_invstd, float *dgamma, float *dbeta, float *part,
                     cudaStream_t stream)
{
    bn_plan p = make_plan(rows, c, V);
    dim3 block(p.tx, p.ty), grid(p.gx, p.gy);
    grad_partial_kernel<V, RELU, T><<<grid, block, 2 * kBlockThreads * sizeof(float), stream>>>(
        x, y, dy, rows, c, p.lanes, save_mean, part);
    grad_finalize_kernel<<<(unsigned)c, kFinalizeThreads, 0, stream>>>(part, p.gy, c, save_invstd,
                                                                dgamma, dbeta);
    grad_input_kernel<V, RELU, T><<<grid, block, 0, stream>>>(
        x, y, dy, dx, rows, c, p.lanes, gamma, save_mean, save_invstd, dgamma, dbeta);
    return cudaGetLastError();
}

/* The vector width for T: 16 bytes. */
template <typename T> constexpr int vec_of() { return (int)(16 / sizeof(T)); }

template <typename T>
cudaError_t train_as(const void *x, const void *res, void *y, int64_t rows, int64_t c,
                     const float *gamma, const float *beta, float *running_mean,
                     float *running_var, float *save_mean, float *save_invstd, float momentum,
                     float eps, int relu, float *part, cudaStream_t stream)
{
    constexpr int V = vec_of<T>();
    if (can_vectorise(c, V, x, y, res, nullptr))
        return train<V, T>((const T *)x, (const T *)res, (T *)y, rows, c, gamma, beta,
                           running_mean, running_var, save_mean, save_invstd, momentum, eps,
                           relu, part, stream);
    return train<1, T>((const T *)x, (const T *)res, (T *)y, rows, c, gamma, beta,
                       running_mean, running_var, save_mean, save_invstd, momentum, eps, relu,
                       part, stream);
}

template <typename T>
cudaError_t infer_as(const void *x, void *y, int64_t rows, int64_t c, const float *gamma,
                     const float *beta, const float *mean, const float *var, float eps,
                     cudaStream_t stream)
{
    constexpr int V = vec_of<T>();
    if (can_vectorise(c, V, x, y, nullptr, nullptr))
        return infer<V, T>((const T *)x, (T *)y, rows, c, gamma, beta, mean, var, eps, stream);
    return infer<1, T>((const T *)x, (T *)y, rows, c, gamma, beta, mean, var, eps, stream);
}

template <typename T, bool RELU>
cudaError_t backward_as(const void *x, const void *y, const void *dy, void *dx, int64_t rows,
                        int64_t c, const float *gamma, const float *save_mean,
                        const float *save_invstd, float *dgamma, float *dbeta, float *part,
                        cudaStream_t stream)
{
    constexpr int V = vec_of<T>();
    if (can_vectorise(c, V, x, dy, dx, y))
        return backward<V, RELU, T>((const T *)x, (const T *)y, (const T *)dy, (T *)dx, rows,
                                    c, gamma, save_mean, save_invstd, dgamma, dbeta, part,
                                    stream);
    return backward<1, RELU, T>((const T *)x, (const T *)y, (const T *)dy, (T *)dx, rows, c,
                                gamma, save_mean, save_invstd, dgamma, dbeta, part, stream);
}

} // namespace

extern "C" size_t ck_bn_scratch_bytes(int64_t rows, int64_t c)
{
    /* the largest of the plans that may run: which one depends on dtype and alignment */
    int64_t splits = make_plan(rows, c, 1).gy;
    for (int v = 4; v <= 8; v += 4)
        if (c % v == 0 && make_plan(rows, c, v).gy > splits)
            splits = make_plan(rows, c, v).gy;
    return (size_t)(3 * splits * c) * sizeof(float);
}

extern "C" cudaError_t ck_bn_train(int dtype, const void *x, const void *residual, void *y,
                                   int64_t rows, int64_t c, const float *gamma,
                                   const float *beta, float *running_mean, float *running_var,
                                   float *save_mean, float *save_invstd, float momentum,
                                   float eps, int relu, void *scratch, cudaStream_t stream)
{
    if (rows < 1 || c < 1)
        return cudaErrorInvalidValue;
    float *part = static_cast<float *>(scratch);
    switch (dtype) {
    case CK_F32:
        return train_as<float>(x, residual, y, rows, c, gamma, beta, running_mean, running_var,
                               save_mean, save_invstd, momentum, eps, relu, part, stream);
    case CK_BF16:
        return train_as<__nv_bfloat16>(x, residual, y, rows, c, gamma, beta, running_mean,
                                       running_var, save_mean, save_invstd, momentum, eps, relu,
                                       part, stream);
    }
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t ck_bn_infer(int dtype, const void *x, void *y, int64_t rows, int64_t c,
                                   const float *gamma, const float *beta, const float *mean,
                                   const float *var, float eps, cudaStream_t stream)
{
    if (rows < 1 || c < 1)
        return cudaErrorInvalidValue;
    switch (dtype) {
    case CK_F32: return infer_as<float>(x, y, rows, c, gamma, beta, mean, var, eps, stream);
    case CK_BF16:
        return infer_as<__nv_bfloat16>(x, y, rows, c, gamma, beta, mean, var, eps, stream);
    }
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t ck_bn_backward(int dtype, const void *x, const void *y, const void *dy,
                                      void *dx, int64_t rows, int64_t c, const float *gamma,
                                      const float *save_mean, const float *save_invstd,
                                      float *dgamma, float *dbeta, void *scratch,
                                      cudaStream_t stream)
{
    if (rows < 1 || c < 1)
        return cudaErrorInvalidValue;
    float *part = static_cast<float *>(scratch);
#define CK_BN_BACKWARD(T)                                                                      \
    return y ? backward_as<T, true>(x, y, dy, dx, rows, c, gamma, save_mean, save_invstd,      \
                                    dgamma, dbeta, part, stream)                               \
             : backward_as<T, false>(x, y, dy, dx, rows, c, gamma, save_mean, save_invstd,     \
                                     dgamma, dbeta, part, stream)
    switch (dtype) {
    case CK_F32: CK_BN_BACKWARD(float);
    case CK_BF16: CK_BN_BACKWARD(__nv_bfloat16);
    }
#undef CK_BN_BACKWARD
    return cudaErrorInvalidValue;
}
