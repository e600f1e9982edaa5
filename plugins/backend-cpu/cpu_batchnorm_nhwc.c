/* backend-cpu: batch normalisation of channels-last tensors on the plugin's own loops.
 *
 * oneDNN 2.6's channels-last batch norm runs at a third to a half of what memory allows on
 * ResNet's 32- and 64-channel layers (its blocked kernel, which backend-cpu uses for exactly
 * 16 channels, does not apply to wider NHWC tensors). Here a channels-last tensor is a
 * matrix of rows (pixels) by C channels: every pass walks rows with the channels innermost,
 * where the compiler vectorises, and the rows are cut into blocks shared out over OpenMP.
 *
 * Statistics and gradient sums take two levels: each block sums its rows in f32 (shifted by
 * a per-channel constant, so the squares do not cancel), and the block sums are added in
 * double, in block order, on one thread. The block size depends only on C, so the result is
 * the same bits for any thread count. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_batchnorm_nhwc.h"

/* A block of rows holds about this many elements (at least 8 rows). */
#define BN_BLOCK_ELEMENTS 8192

int cpu_bn_nhwc_applies(const tp_tensor *x)
{
    return x && x->ndim == 4 && x->layout == TP_LAYOUT_NHWC &&
           (x->dtype == TP_DTYPE_F32 || x->dtype == TP_DTYPE_BF16) && x->shape[1] > 16 &&
           x->shape[1] % 16 == 0;
}

static int64_t rows_per_block(int64_t C)
{
    const int64_t r = BN_BLOCK_ELEMENTS / C;
    return r < 8 ? 8 : r;
}

/* The SDK's tp_f32_from_bf16 and tp_bf16_from_f32 (same bits: exact widening; nearest even,
 * NaN kept NaN), restated always-inline: GCC inlines no plain inline function into the
 * per-instruction-set kernels below, and a call per element would cost more than the
 * arithmetic. */
static inline __attribute__((always_inline)) float widen_bf16(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline __attribute__((always_inline)) uint16_t round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Element i of an activation tensor's data, f32 or bf16 (bf16 is a constant at every call
 * site below, so each kernel compiles to one loop per dtype). */
static inline __attribute__((always_inline)) float load(const void *p, int64_t i, int bf16)
{
    return bf16 ? widen_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline __attribute__((always_inline)) void store(void *p, int64_t i, float v, int bf16)
{
    if (bf16)
        ((uint16_t *)p)[i] = round_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* The kernels run on one block of `rows` rows of C channels. They are instantiated per
 * dtype and instruction set below (BN_KERNELS). */

/* s[c] = sum of (x - shift[c]), q[c] = sum of its squares, over the block. */
static inline __attribute__((always_inline)) void stats_rows(const void *x, int64_t rows,
                                                             int64_t C, const float *shift,
                                                             float *restrict s,
                                                             float *restrict q, int bf16)
{
    for (int64_t c = 0; c < C; c++)
        s[c] = q[c] = 0;
    for (int64_t r = 0; r < rows; r++)
        CPU_OMP(omp simd)
        for (int64_t c = 0; c < C; c++) {
            const float v = load(x, r * C + c, bf16) - shift[c];
            s[c] += v;
            q[c] += v * v;
        }
}

/* y = (x - mean) * scale + beta, then max(0, y) with relu. */
static inline __attribute__((always_inline)) void normalize_rows(const void *x, void *y,
                                                                 int64_t rows, int64_t C,
                                                                 const float *mean,
                                                                 const float *scale,
                                                                 const float *beta, int relu,
                                                                 int bf16)
{
    for (int64_t r = 0; r < rows; r++)
        CPU_OMP(omp simd)
        for (int64_t c = 0; c < C; c++) {
            const float v = (load(x, r * C + c, bf16) - mean[c]) * scale[c] + beta[c];
            store(y, r * C + c, relu && !(v > 0) ? 0.0f : v, bf16);
        }
}

/* The gradient reaching the batch norm's output: dy, or with the fused ReLU dy where y > 0
 * (y is the ReLU's output, so y > 0 exactly where its input was). */
static inline __attribute__((always_inline)) float grad_at(const void *dy, const void *y,
                                                           int64_t i, int bf16)
{
    const float g = load(dy, i, bf16);
    return y && !(load(y, i, bf16) > 0) ? 0.0f : g;
}

/* sg[c] = sum of g, sgx[c] = sum of g * (x - mean[c]), over the block. */
static inline __attribute__((always_inline)) void grad_sums_rows(const void *x, const void *dy,
                                                                 const void *y, int64_t rows,
                                                                 int64_t C, const float *mean,
                                                                 float *restrict sg,
                                                                 float *restrict sgx, int bf16)
{
    for (int64_t c = 0; c < C; c++)
        sg[c] = sgx[c] = 0;
    for (int64_t r = 0; r < rows; r++)
        CPU_OMP(omp simd)
        for (int64_t c = 0; c < C; c++) {
            const int64_t i = r * C + c;
            const float g = grad_at(dy, y, i, bf16);
            sg[c] += g;
            sgx[c] += g * (load(x, i, bf16) - mean[c]);
        }
}

/* dx = a * g + b * (x - mean) + k, per channel (coefficients from cpu_bn_nhwc_backward). */
static inline __attribute__((always_inline)) void grad_input_rows(
    const void *x, const void *dy, const void *y, void *dx, int64_t rows, int64_t C,
    const float *mean, const float *a, const float *b, const float *k, int bf16)
{
    for (int64_t r = 0; r < rows; r++)
        CPU_OMP(omp simd)
        for (int64_t c = 0; c < C; c++) {
            const int64_t i = r * C + c;
            const float g = grad_at(dy, y, i, bf16);
            store(dx, i, a[c] * g + b[c] * (load(x, i, bf16) - mean[c]) + k[c], bf16);
        }
}

/* One instantiation of the four kernels, for one dtype on one instruction set. */
typedef struct bn_kernels {
    void (*stats)(const void *x, int64_t rows, int64_t C, const float *shift, float *s,
                  float *q);
    void (*normalize)(const void *x, void *y, int64_t rows, int64_t C, const float *mean,
                      const float *scale, const float *beta, int relu);
    void (*grad_sums)(const void *x, const void *dy, const void *y, int64_t rows, int64_t C,
                      const float *mean, float *sg, float *sgx);
    void (*grad_input)(const void *x, const void *dy, const void *y, void *dx, int64_t rows,
                       int64_t C, const float *mean, const float *a, const float *b,
                       const float *k);
} bn_kernels;

/* Runs CALL with BN_C bound to C, as a compile-time constant for the channel counts ResNets
 * have most (so the channel loop unrolls into whole vectors with no remainder handling) and
 * as the variable otherwise. */
#define BN_BY_WIDTH(C, CALL)                                                                   \
    switch (C) {                                                                               \
    case 32: {                                                                                 \
        const int64_t BN_C = 32;                                                               \
        CALL;                                                                                  \
        break;                                                                                 \
    }                                                                                          \
    case 64: {                                                                                 \
        const int64_t BN_C = 64;                                                               \
        CALL;                                                                                  \
        break;                                                                                 \
    }                                                                                          \
    case 128: {                                                                                \
        const int64_t BN_C = 128;                                                              \
        CALL;                                                                                  \
        break;                                                                                 \
    }                                                                                          \
    default: {                                                                                 \
        const int64_t BN_C = C;                                                                \
        CALL;                                                                                  \
        break;                                                                                 \
    }                                                                                          \
    }

/* Defines kernels_NAME: the four kernels compiled with attribute ATTR for dtype BF16. The
 * ReLU mask (y) is tested outside the loops, so each loop has a body without it. */
#define BN_KERNELS(NAME, ATTR, BF16)                                                           \
    ATTR static void stats_##NAME(const void *x, int64_t rows, int64_t C, const float *shift,  \
                                  float *s, float *q)                                          \
    {                                                                                          \
        BN_BY_WIDTH(C, stats_rows(x, rows, BN_C, shift, s, q, BF16))                           \
    }                                                                                          \
    ATTR static void normalize_##NAME(const void *x, void *y, int64_t rows, int64_t C,         \
                                      const float *mean, const float *scale,                   \
                                      const float *beta, int relu)                             \
    {                                                                                          \
        if (relu) {                                                                            \
            BN_BY_WIDTH(C, normalize_rows(x, y, rows, BN_C, mean, scale, beta, 1, BF16))       \
        } else {                                                                               \
            BN_BY_WIDTH(C, normalize_rows(x, y, rows, BN_C, mean, scale, beta, 0, BF16))       \
        }                                                                                      \
    }                                                                                          \
    ATTR static void grad_sums_##NAME(const void *x, const void *dy, const void *y,            \
                                      int64_t rows, int64_t C, const float *mean, float *sg,   \
                                      float *sgx)                                              \
    {                                                                                          \
        if (y) {                                                                               \
            BN_BY_WIDTH(C, grad_sums_rows(x, dy, y, rows, BN_C, mean, sg, sgx, BF16))          \
        } else {                                                                               \
            BN_BY_WIDTH(C, grad_sums_rows(x, dy, NULL, rows, BN_C, mean, sg, sgx, BF16))       \
        }                                                                                      \
    }                                                                                          \
    ATTR static void grad_input_##NAME(const void *x, const void *dy, const void *y,           \
                                       void *dx, int64_t rows, int64_t C, const float *mean,   \
                                       const float *a, const float *b, const float *k)         \
    {                                                                                          \
        if (y) {                                                                               \
            BN_BY_WIDTH(C, grad_input_rows(x, dy, y, dx, rows, BN_C, mean, a, b, k, BF16))     \
        } else {                                                                               \
            BN_BY_WIDTH(C, grad_input_rows(x, dy, NULL, dx, rows, BN_C, mean, a, b, k, BF16))  \
        }                                                                                      \
    }                                                                                          \
    static const bn_kernels kernels_##NAME = { stats_##NAME, normalize_##NAME,                 \
                                               grad_sums_##NAME, grad_input_##NAME };

/* AVX-512 with 16-bit element operations (BW) and full-width vectors (GCC otherwise prefers
 * 256 bits), AVX2 with FMA, and the x86-64 baseline. With FMA the kernels round once where
 * the baseline rounds twice: the bits depend on the instruction set, never on the threads. */
#if defined(__x86_64__) && (defined(__GNUC__) && !defined(__clang__))
#define BN_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,prefer-vector-width=512")))
#define BN_AVX2 __attribute__((target("avx2,fma")))
BN_KERNELS(f32_avx512, BN_AVX512, 0)
BN_KERNELS(bf16_avx512, BN_AVX512, 1)
BN_KERNELS(f32_avx2, BN_AVX2, 0)
BN_KERNELS(bf16_avx2, BN_AVX2, 1)
#define BN_HAVE_ISA_KERNELS 1
#endif
BN_KERNELS(f32_base, , 0)
BN_KERNELS(bf16_base, , 1)

/* The kernels for this CPU and dtype, on the instruction set oneDNN uses (so
 * ONEDNN_MAX_CPU_ISA caps these loops as it caps oneDNN's kernels; the tests run every
 * instantiation that way). oneDNN's avx512_core is AVX-512 F, BW, VL and DQ. */
static const bn_kernels *pick_kernels(int bf16)
{
#ifdef BN_HAVE_ISA_KERNELS
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    __builtin_cpu_init();
    if (cpu_isa_has(isa, dnnl_cpu_isa_avx512_core) && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return bf16 ? &kernels_bf16_avx512 : &kernels_f32_avx512;
    if (cpu_isa_has(isa, dnnl_cpu_isa_avx2) && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return bf16 ? &kernels_bf16_avx2 : &kernels_f32_avx2;
#endif
    return bf16 ? &kernels_bf16_base : &kernels_f32_base;
}

/* Row r of a channels-last tensor with C channels. */
static const char *row_ptr(const tp_tensor *t, int64_t r, int64_t C)
{
    return (const char *)t->data + (size_t)(r * C) * tp_dtype_size(t->dtype);
}

/* Adds the per-block sums a[b * C + c] (and bsum's) in double, in block order. */
static void sum_blocks(const float *a, const float *b, int64_t blocks, int64_t C, double *sa,
                       double *sb)
{
    for (int64_t c = 0; c < C; c++)
        sa[c] = sb[c] = 0;
    for (int64_t k = 0; k < blocks; k++)
        for (int64_t c = 0; c < C; c++) {
            sa[c] += a[k * C + c];
            sb[c] += b[k * C + c];
        }
}

/* Scratch for one call: 2 x blocks x C per-block f32 sums and 3 x C f32 per-channel
 * values (the training pass uses 2) in *part, 2 x C double totals in *sums. */
static tp_status alloc_block_sums(cpu_backend *be, const char *op, int64_t blocks, int64_t C,
                                  float **part, double **sums)
{
    *part = malloc((size_t)(2 * blocks * C + 3 * C) * sizeof **part);
    *sums = malloc((size_t)(2 * C) * sizeof **sums);
    if (*part && *sums)
        return TP_OK;
    free(*part);
    free(*sums);
    *part = NULL;
    *sums = NULL;
    be->host->fail(be->host, TP_ERR_NOMEM,
                   "backend-cpu %s: out of memory for %lld block sums of %lld channels", op,
                   (long long)blocks, (long long)C);
    return TP_ERR_NOMEM;
}

/* Rows in block k of `per` rows (the last one may be short). */
static int64_t block_rows(int64_t k, int64_t per, int64_t rows)
{
    return k * per + per < rows ? per : rows - k * per;
}

tp_status cpu_bn_nhwc_train(cpu_backend *be, const tp_tensor *x, const tp_tensor *gamma,
                            const tp_tensor *beta, double eps, int relu, tp_tensor *y,
                            float *mean_out, float *var_out)
{
    const int64_t C = x->shape[1], rows = x->shape[0] * x->shape[2] * x->shape[3];
    const int64_t per = rows_per_block(C), blocks = (rows + per - 1) / per;
    const int bf16 = x->dtype == TP_DTYPE_BF16;
    const bn_kernels *kern = pick_kernels(bf16);
    float *part;
    double *sums;
    tp_status st = alloc_block_sums(be, "batchnorm", blocks, C, &part, &sums);
    if (st)
        return st;
    float *ps = part, *pq = part + blocks * C, *shift = pq + blocks * C, *scale = shift + C;
    for (int64_t c = 0; c < C; c++) /* the first row: within the data's spread of the mean */
        shift[c] = rows ? load(x->data, c, bf16) : 0.0f;
    cpu_apply_threads(be);
    const int64_t work = rows * C;
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t k = 0; k < blocks; k++)
        kern->stats(row_ptr(x, k * per, C), block_rows(k, per, rows), C, shift, ps + k * C,
                    pq + k * C);
    sum_blocks(ps, pq, blocks, C, sums, sums + C);
    const float *g = gamma->data, *bt = beta->data;
    for (int64_t c = 0; c < C; c++) {
        const double m = rows ? sums[c] / (double)rows : 0; /* mean - shift */
        double var = rows ? sums[C + c] / (double)rows - m * m : 0;
        var = var > 0 ? var : 0;
        mean_out[c] = (float)(shift[c] + m);
        scale[c] = (float)(g[c] / sqrt(var + eps));
        var_out[c] = (float)var;
    }
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t k = 0; k < blocks; k++)
        kern->normalize(row_ptr(x, k * per, C), (void *)row_ptr(y, k * per, C),
                        block_rows(k, per, rows), C, mean_out, scale, bt, relu);
    free(part);
    free(sums);
    return TP_OK;
}

tp_status cpu_bn_nhwc_backward(cpu_backend *be, const tp_tensor *x, const tp_tensor *y,
                               const tp_tensor *dy, const tp_tensor *gamma,
                               const tp_tensor *save_mean, const tp_tensor *save_invstd,
                               tp_tensor *dx, float *dgamma, float *dbeta)
{
    const int64_t C = x->shape[1], rows = x->shape[0] * x->shape[2] * x->shape[3];
    const int64_t per = rows_per_block(C), blocks = (rows + per - 1) / per;
    const bn_kernels *kern = pick_kernels(x->dtype == TP_DTYPE_BF16);
    float *part;
    double *sums;
    tp_status st = alloc_block_sums(be, "batchnorm backward", blocks, C, &part, &sums);
    if (st)
        return st;
    float *psg = part, *psgx = part + blocks * C, *a = psgx + blocks * C, *b = a + C,
          *k0 = b + C;
    const float *mean = save_mean->data, *invstd = save_invstd->data, *g = gamma->data;
    cpu_apply_threads(be);
    const int64_t work = rows * C;
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t k = 0; k < blocks; k++) {
        const int64_t r0 = k * per;
        kern->grad_sums(row_ptr(x, r0, C), row_ptr(dy, r0, C), y ? row_ptr(y, r0, C) : NULL,
                        block_rows(k, per, rows), C, mean, psg + k * C, psgx + k * C);
    }
    sum_blocks(psg, psgx, blocks, C, sums, sums + C);
    /* dbeta = sum g, dgamma = invstd * sum g (x - mean), and
     * dx = gamma invstd (g - dbeta / n - (x - mean) invstd dgamma / n). */
    for (int64_t c = 0; c < C; c++) {
        const double s = invstd[c], db = sums[c], dg = s * sums[C + c];
        const double n = rows ? (double)rows : 1;
        dbeta[c] = (float)db;
        dgamma[c] = (float)dg;
        a[c] = (float)(g[c] * s);
        b[c] = (float)(-g[c] * s * s * dg / n);
        k0[c] = (float)(-g[c] * s * db / n);
    }
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t k = 0; k < blocks; k++) {
        const int64_t r0 = k * per;
        kern->grad_input(row_ptr(x, r0, C), row_ptr(dy, r0, C), y ? row_ptr(y, r0, C) : NULL,
                         (void *)row_ptr(dx, r0, C), block_rows(k, per, rows), C, mean, a, b,
                         k0);
    }
    free(part);
    free(sums);
    return TP_OK;
}
