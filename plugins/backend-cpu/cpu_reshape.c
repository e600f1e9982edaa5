/* backend-cpu: global average pooling and the ResNet "shortcut A" subsample-and-zero-pad,
 * as plain loops over either layout (both are memory-bound and tiny next to convolutions).
 * The activation side may be f32 or bf16; the pool's output and its gradient are f32. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

/* Sums of one image's channels into acc[0..C), each channel in (h, w) order: NHWC walks
 * rows of C channels (the inner loop vectorises), NCHW walks planes. Sums are in double, so
 * the order is the only thing that could change the bits, and it is fixed. */
static void gap_sum_image(const tp_tensor *x, int64_t n, double *acc)
{
    const int64_t C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int nhwc = x->layout == TP_LAYOUT_NHWC;
    for (int64_t c = 0; c < C; c++)
        acc[c] = 0;
    if (x->dtype == TP_DTYPE_BF16) {
        const uint16_t *img = (const uint16_t *)x->data + n * C * HW;
        if (nhwc) {
            for (int64_t i = 0; i < HW; i++)
                for (int64_t c = 0; c < C; c++)
                    acc[c] += tp_f32_from_bf16(img[i * C + c]);
        } else {
            for (int64_t c = 0; c < C; c++)
                for (int64_t i = 0; i < HW; i++)
                    acc[c] += tp_f32_from_bf16(img[c * HW + i]);
        }
        return;
    }
    const float *img = (const float *)x->data + n * C * HW;
    if (nhwc) {
        for (int64_t i = 0; i < HW; i++)
            for (int64_t c = 0; c < C; c++)
                acc[c] += img[i * C + c];
    } else {
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < HW; i++)
                acc[c] += img[c * HW + i];
    }
}

tp_status cpu_global_avgpool_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    cpu_backend *be = self;
    const char *op = "global_avgpool_forward";
    tp_status st;
    if ((st = cpu_check_act(be, op, "x", x, 4)) || (st = cpu_check_f32(be, op, "y", y, 2)))
        return st;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t ydims[2] = { N, C };
    if ((st = cpu_check_dims(be, op, "y", y, 2, ydims)))
        return st;
    double *sums = malloc((size_t)(N * C > 0 ? N * C : 1) * sizeof *sums);
    if (!sums)
        return be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu %s: out of memory", op);
    float *yp = y->data;
    const double inv = 1.0 / (double)(H * W);
    const int64_t work = N * C * H * W;
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t n = 0; n < N; n++) {
        gap_sum_image(x, n, sums + n * C);
        for (int64_t c = 0; c < C; c++)
            yp[n * C + c] = (float)(sums[n * C + c] * inv);
    }
    free(sums);
    return TP_OK;
}

/* dx[n, c, h, w] = dy[n, c] / (H W), the quotient taken in f32 (and rounded once to bf16 for
 * a bf16 dx), one image per iteration. */
static void gap_spread_image(const float *g, tp_tensor *dx, int64_t n, float inv)
{
    const int64_t C = dx->shape[1], HW = dx->shape[2] * dx->shape[3];
    const int nhwc = dx->layout == TP_LAYOUT_NHWC;
    const float *gn = g + n * C;
    if (dx->dtype == TP_DTYPE_BF16) {
        uint16_t *img = (uint16_t *)dx->data + n * C * HW;
        for (int64_t c = 0; c < C; c++) {
            const uint16_t v = tp_bf16_from_f32(gn[c] * inv);
            if (nhwc) {
                for (int64_t i = 0; i < HW; i++)
                    img[i * C + c] = v;
            } else {
                for (int64_t i = 0; i < HW; i++)
                    img[c * HW + i] = v;
            }
        }
        return;
    }
    float *img = (float *)dx->data + n * C * HW;
    if (nhwc) {
        for (int64_t i = 0; i < HW; i++)
            for (int64_t c = 0; c < C; c++)
                img[i * C + c] = gn[c] * inv;
    } else {
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < HW; i++)
                img[c * HW + i] = gn[c] * inv;
    }
}

tp_status cpu_global_avgpool_backward(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    cpu_backend *be = self;
    const char *op = "global_avgpool_backward";
    tp_status st;
    if ((st = cpu_check_f32(be, op, "dy", dy, 2)) || (st = cpu_check_act(be, op, "dx", dx, 4)))
        return st;
    const int64_t N = dx->shape[0], C = dx->shape[1], H = dx->shape[2], W = dx->shape[3];
    const int64_t dydims[2] = { N, C };
    if ((st = cpu_check_dims(be, op, "dy", dy, 2, dydims)))
        return st;
    const float *g = dy->data;
    const float inv = (float)(1.0 / (double)(H * W));
    const int64_t work = N * C * H * W;
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
    for (int64_t n = 0; n < N; n++)
        gap_spread_image(g, dx, n, inv);
    return TP_OK;
}

/* Checks y = subsample(x) shapes: same N, Cy >= Cx, spatial ceil(H / stride). */
static tp_status check_subsample(cpu_backend *be, const char *op, int stride,
                                 const tp_tensor *x, const char *xn, const tp_tensor *y,
                                 const char *yn)
{
    tp_status st;
    if ((st = cpu_check_act(be, op, xn, x, 4)) || (st = cpu_check_act(be, op, yn, y, 4)) ||
        (st = cpu_check_same_dtype(be, op, xn, x, yn, y)))
        return st;
    if (stride < 1)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: stride %d must be >= 1",
                              op, stride);
    const int64_t OH = (x->shape[2] + stride - 1) / stride;
    const int64_t OW = (x->shape[3] + stride - 1) / stride;
    if (y->shape[0] != x->shape[0] || y->shape[1] < x->shape[1] || y->shape[2] != OH ||
        y->shape[3] != OW)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: %s (%lld,%lld,%lld,%lld) does not match %s "
                              "(%lld,%lld,%lld,%lld) subsampled by %d (expected (%lld,>=%lld,"
                              "%lld,%lld))", op, yn, (long long)y->shape[0],
                              (long long)y->shape[1], (long long)y->shape[2],
                              (long long)y->shape[3], xn, (long long)x->shape[0],
                              (long long)x->shape[1], (long long)x->shape[2],
                              (long long)x->shape[3], stride, (long long)x->shape[0],
                              (long long)x->shape[1], (long long)OH, (long long)OW);
    return TP_OK;
}

/* One image of shortcut A's subsampling, both tensors NHWC: to_y = 1 for the forward pass
 * (each output pixel: Cx copied channels, then Cy - Cx zeros, in a single pass), 0 for the
 * backward pass (the image of dx zeroed, then every stride-th pixel taken from dy). */
static void subsample_image_nhwc(int stride, const tp_tensor *x, const tp_tensor *y, int to_y,
                                 int64_t n)
{
    const int64_t Cx = x->shape[1], Cy = y->shape[1];
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const size_t es = tp_dtype_size(x->dtype); /* f32 or bf16: bits move unchanged */
    char *xp = x->data, *yp = y->data;
    if (!to_y)
        memset(xp + (size_t)(n * H * W * Cx) * es, 0, (size_t)(H * W * Cx) * es);
    for (int64_t h = 0; h < OH; h++)
        for (int64_t w = 0; w < OW; w++) {
            char *xs = xp + (size_t)(((n * H + h * stride) * W + w * stride) * Cx) * es;
            char *ys = yp + (size_t)(((n * OH + h) * OW + w) * Cy) * es;
            memcpy(to_y ? ys : xs, to_y ? xs : ys, (size_t)Cx * es);
            if (to_y)
                memset(ys + (size_t)Cx * es, 0, (size_t)(Cy - Cx) * es);
        }
}

/* count elements of es bytes (4 or 2) from every src_step-th of src to every dst_step-th of
 * dst. */
static void copy_strided(char *dst, int64_t dst_step, const char *src, int64_t src_step,
                         int64_t count, size_t es)
{
    if (es == 4) {
        float *d = (float *)dst;
        const float *s = (const float *)src;
        for (int64_t i = 0; i < count; i++)
            d[i * dst_step] = s[i * src_step];
    } else {
        uint16_t *d = (uint16_t *)dst;
        const uint16_t *s = (const uint16_t *)src;
        for (int64_t i = 0; i < count; i++)
            d[i * dst_step] = s[i * src_step];
    }
}

/* The same for one image with both tensors NCHW: the image of the destination zeroed, then
 * strided rows of the Cx shared channels. */
static void subsample_image_nchw(int stride, const tp_tensor *x, const tp_tensor *y, int to_y,
                                 int64_t n)
{
    const int64_t Cx = x->shape[1], Cy = y->shape[1];
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const size_t es = tp_dtype_size(x->dtype);
    char *xp = x->data, *yp = y->data;
    if (to_y)
        memset(yp + (size_t)(n * Cy * OH * OW) * es, 0, (size_t)(Cy * OH * OW) * es);
    else
        memset(xp + (size_t)(n * Cx * H * W) * es, 0, (size_t)(Cx * H * W) * es);
    for (int64_t c = 0; c < Cx; c++)
        for (int64_t h = 0; h < OH; h++) {
            char *xr = xp + (size_t)(((n * Cx + c) * H + h * stride) * W) * es;
            char *yr = yp + (size_t)(((n * Cy + c) * OH + h) * OW) * es;
            if (to_y)
                copy_strided(yr, 1, xr, stride, OW, es);
            else
                copy_strided(xr, stride, yr, 1, OW, es);
        }
}

/* Writes the destination of shortcut A's subsampling, zeros included: to_y = 1 for the
 * forward pass (y[.., :Cx] = x[.., ::s, ::s], y[.., Cx:] = 0), 0 for the backward pass
 * (dx[.., ::s, ::s] = dy[.., :Cx], zero elsewhere). Tensors in one layout go image by image
 * on every thread; mixed layouts (never on the training path) element by element. */
static void subsample_copy(cpu_backend *be, int stride, const tp_tensor *x, const tp_tensor *y,
                           int to_y)
{
    const int64_t N = y->shape[0], Cx = x->shape[1];
    const int64_t OH = y->shape[2], OW = y->shape[3];
    const size_t es = tp_dtype_size(x->dtype);
    const int64_t work = (int64_t)cpu_count(x) + (int64_t)cpu_count(y);
    if (x->layout == y->layout) {
        const int nhwc = x->layout == TP_LAYOUT_NHWC;
        cpu_apply_threads(be);
        CPU_OMP(omp parallel for schedule(static) if (work >= CPU_PARALLEL_MIN))
        for (int64_t n = 0; n < N; n++) {
            if (nhwc)
                subsample_image_nhwc(stride, x, y, to_y, n);
            else
                subsample_image_nchw(stride, x, y, to_y, n);
        }
        return;
    }
    char *xp = x->data, *yp = y->data;
    memset(to_y ? yp : xp, 0, tp_tensor_bytes(to_y ? y : x)); /* zero in both dtypes */
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < Cx; c++)
            for (int64_t h = 0; h < OH; h++)
                for (int64_t w = 0; w < OW; w++) {
                    char *xv = xp + (size_t)cpu_offset4(x, n, c, h * stride, w * stride) * es;
                    char *yv = yp + (size_t)cpu_offset4(y, n, c, h, w) * es;
                    memcpy(to_y ? yv : xv, to_y ? xv : yv, es);
                }
}

tp_status cpu_subsample_pad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    cpu_backend *be = self;
    tp_status st = check_subsample(be, "subsample_pad_forward", stride, x, "x", y, "y");
    if (st)
        return st;
    subsample_copy(be, stride, x, y, 1);
    return TP_OK;
}

tp_status cpu_subsample_pad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    cpu_backend *be = self;
    tp_status st = check_subsample(be, "subsample_pad_backward", stride, dx, "dx", dy, "dy");
    if (st)
        return st;
    subsample_copy(be, stride, dx, dy, 0);
    return TP_OK;
}
