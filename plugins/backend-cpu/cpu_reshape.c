/* backend-cpu: global average pooling and the ResNet "shortcut A" subsample-and-zero-pad,
 * as plain loops over either layout (both are memory-bound and tiny next to convolutions).
 * The activation side may be f32 or bf16; the pool's output and its gradient are f32. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

/* global_avgpool_forward on bf16 x: each value widened exactly, summed in double as the f32
 * path does. */
static tp_status gap_forward_bf16(cpu_backend *be, const tp_tensor *x, tp_tensor *y)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const uint16_t *xp = x->data;
    float *yp = y->data;
    const double inv = 1.0 / (double)(H * W);
    double *acc = calloc((size_t)C, sizeof *acc);
    if (!acc)
        return be->host->fail(be->host, TP_ERR_NOMEM,
                              "backend-cpu global_avgpool_forward: out of memory");
    for (int64_t n = 0; n < N; n++) {
        memset(acc, 0, (size_t)C * sizeof *acc);
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    acc[c] += tp_f32_from_bf16(xp[cpu_offset4(x, n, c, h, w)]);
        for (int64_t c = 0; c < C; c++)
            yp[n * C + c] = (float)(acc[c] * inv);
    }
    free(acc);
    return TP_OK;
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
    if (x->dtype == TP_DTYPE_BF16)
        return gap_forward_bf16(be, x, y);
    const float *xp = x->data;
    float *yp = y->data;
    const double inv = 1.0 / (double)(H * W);
    if (x->layout == TP_LAYOUT_NHWC) {
        double *acc = calloc((size_t)C, sizeof *acc);
        if (!acc)
            return be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu %s: out of memory", op);
        for (int64_t n = 0; n < N; n++) {
            memset(acc, 0, (size_t)C * sizeof *acc);
            const float *img = xp + n * H * W * C;
            for (int64_t i = 0; i < H * W; i++)
                for (int64_t c = 0; c < C; c++)
                    acc[c] += img[i * C + c];
            for (int64_t c = 0; c < C; c++)
                yp[n * C + c] = (float)(acc[c] * inv);
        }
        free(acc);
    } else {
        for (int64_t nc = 0; nc < N * C; nc++) {
            const float *plane = xp + nc * H * W;
            double s = 0;
            for (int64_t i = 0; i < H * W; i++)
                s += plane[i];
            yp[nc] = (float)(s * inv);
        }
    }
    return TP_OK;
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
    if (dx->dtype == TP_DTYPE_BF16) { /* dy / (H W) in f32, as below, then rounded */
        const float inv = (float)(1.0 / (double)(H * W));
        uint16_t *d16 = dx->data;
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                const uint16_t v = tp_bf16_from_f32(g[n * C + c] * inv);
                for (int64_t h = 0; h < H; h++)
                    for (int64_t w = 0; w < W; w++)
                        d16[cpu_offset4(dx, n, c, h, w)] = v;
            }
        return TP_OK;
    }
    float *d = dx->data;
    const float inv = (float)(1.0 / (double)(H * W));
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float v = g[n * C + c] * inv;
            if (dx->layout == TP_LAYOUT_NHWC) {
                for (int64_t i = 0; i < H * W; i++)
                    d[(n * H * W + i) * C + c] = v;
            } else {
                float *plane = d + (n * C + c) * H * W;
                for (int64_t i = 0; i < H * W; i++)
                    plane[i] = v;
            }
        }
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

/* Writes the destination of shortcut A's subsampling, zeros included: to_y = 1 for the
 * forward pass (y[.., :Cx] = x[.., ::s, ::s], y[.., Cx:] = 0), 0 for the backward pass
 * (dx[.., ::s, ::s] = dy[.., :Cx], zero elsewhere). Both tensors in one layout take the fast
 * path: rows of channels (NHWC; forward in a single pass, each output pixel Cx copied channels
 * then Cy - Cx zeros) or strided rows (NCHW). */
static void subsample_copy(int stride, const tp_tensor *x, const tp_tensor *y, int to_y)
{
    const int64_t N = y->shape[0], Cx = x->shape[1], Cy = y->shape[1];
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const size_t es = tp_dtype_size(x->dtype); /* f32 or bf16: bits move unchanged */
    char *xp = x->data, *yp = y->data;
    const int nhwc = x->layout == TP_LAYOUT_NHWC && y->layout == TP_LAYOUT_NHWC;
    if (!(nhwc && to_y))
        memset(to_y ? yp : xp, 0, tp_tensor_bytes(to_y ? y : x)); /* zero in both dtypes */
    if (nhwc) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < OH; h++)
                for (int64_t w = 0; w < OW; w++) {
                    char *xs = xp + (size_t)(((n * H + h * stride) * W + w * stride) * Cx) * es;
                    char *ys = yp + (size_t)(((n * OH + h) * OW + w) * Cy) * es;
                    memcpy(to_y ? ys : xs, to_y ? xs : ys, (size_t)Cx * es);
                    if (to_y)
                        memset(ys + (size_t)Cx * es, 0, (size_t)(Cy - Cx) * es);
                }
    } else if (x->layout == TP_LAYOUT_NCHW && y->layout == TP_LAYOUT_NCHW && es == 4) {
        float *xf = x->data, *yf = y->data;
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < Cx; c++)
                for (int64_t h = 0; h < OH; h++) {
                    float *xr = xf + ((n * Cx + c) * H + h * stride) * W;
                    float *yr = yf + ((n * Cy + c) * OH + h) * OW;
                    if (to_y)
                        for (int64_t w = 0; w < OW; w++)
                            yr[w] = xr[w * stride];
                    else
                        for (int64_t w = 0; w < OW; w++)
                            xr[w * stride] = yr[w];
                }
    } else {
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < Cx; c++)
                for (int64_t h = 0; h < OH; h++)
                    for (int64_t w = 0; w < OW; w++) {
                        char *xv = xp + (size_t)cpu_offset4(x, n, c, h * stride, w * stride) * es;
                        char *yv = yp + (size_t)cpu_offset4(y, n, c, h, w) * es;
                        memcpy(to_y ? yv : xv, to_y ? xv : yv, es);
                    }
    }
}

tp_status cpu_subsample_pad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    cpu_backend *be = self;
    tp_status st = check_subsample(be, "subsample_pad_forward", stride, x, "x", y, "y");
    if (st)
        return st;
    subsample_copy(stride, x, y, 1);
    return TP_OK;
}

tp_status cpu_subsample_pad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    cpu_backend *be = self;
    tp_status st = check_subsample(be, "subsample_pad_backward", stride, dx, "dx", dy, "dy");
    if (st)
        return st;
    subsample_copy(stride, dx, dy, 0);
    return TP_OK;
}
