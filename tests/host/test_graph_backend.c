/* The naive test backend (see test_graph_backend.h). Every 4-D tensor must be NCHW.
 *
 * The plain loops below (k_*) compute in f32 storage with double accumulators. The
 * operations the ops tables expose (nv_*) check the dtypes of every tensor first. The f32
 * instances refuse bf16 anywhere (TP_ERR_UNSUPPORTED). The bf16 instances follow the SDK's
 * "Activation dtype" rule strictly: bf16 only for the activation-shaped tensors, all of one
 * call in one dtype (else TP_ERR_INVALID); a bf16 call widens each bf16 input into a float
 * temporary, runs the same loop, and rounds the outputs to bf16 (nearest even), with the
 * convolution weights rounded to bf16 first, as a bf16 library would. The emulating
 * instance does the same rounding on f32 tensors (inputs, weights and outputs of the calls
 * that may take bf16), so a graph bound in f32 on it must compute what a bf16 binding
 * computes, bit for bit. */
#include "config.h"

#include "test_graph_backend.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services.h"

static long live_allocations;
static long bf16_calls;

long naive_backend_live_allocations(void) { return live_allocations; }

long naive_backend_bf16_calls(void) { return bf16_calls; }

#define F(t) ((float *)(t)->data)
#define N_(t) ((t)->shape[0])
#define C_(t) ((t)->shape[1])
#define H_(t) ((t)->shape[2])
#define W_(t) ((t)->shape[3])
#define AT(t, n, c, y, x) F(t)[(((n) * C_(t) + (c)) * H_(t) + (y)) * W_(t) + (x)]

/* An instance: self points at one of these (NULL, as older callers pass, means f32). */
typedef struct nv_instance {
    int bf16;     /* accepts bf16 activations (and reports them in info()) */
    int emulate;  /* f32 storage, but every value a bf16 call would round is rounded */
} nv_instance;

static nv_instance nv_f32 = {0, 0}, nv_bf16 = {1, 0}, nv_emulated = {0, 1};

static int allows_bf16(const void *self)
{
    return self && ((const nv_instance *)self)->bf16;
}

static int emulates_bf16(const void *self)
{
    return self && ((const nv_instance *)self)->emulate;
}

/* bf16 is the upper half of an IEEE float. */
static float round_bf16(float f) { return tp_f32_from_bf16(tp_bf16_from_f32(f)); }

static tp_status need_nchw(const tp_tensor *t)
{
    return t->ndim == 4 && t->layout != TP_LAYOUT_NCHW ? TP_ERR_UNSUPPORTED : TP_OK;
}

static tp_status nv_info(void *self, tp_backend_info *out)
{
    out->name = "naive";
    out->device_name = allows_bf16(self)     ? "host loops, bf16 activations"
                       : emulates_bf16(self) ? "host loops, f32 activations rounded to bf16"
                                             : "host loops";
    out->preferred_layout = TP_LAYOUT_NCHW;
    out->has_device_memory = 0;
    out->threads = 1;
    /* API 1.5, appended: written only when the caller's struct has room for it. */
    if (out->size >= offsetof(tp_backend_info, activation_dtype) + sizeof out->activation_dtype)
        out->activation_dtype = allows_bf16(self) ? TP_DTYPE_BF16 : TP_DTYPE_F32;
    return TP_OK;
}

static tp_status refuse_bf16(const char *op, const char *name)
{
    return services_fail(TP_ERR_UNSUPPORTED,
                         "naive backend: %s: %s is bf16, but this instance reports f32 "
                         "activations and computes in f32 only", op, name);
}

static tp_status nv_alloc(void *self, tp_tensor *t, const char *what)
{
    if (t->dtype == TP_DTYPE_BF16 && !allows_bf16(self)) {
        bf16_calls++;
        return refuse_bf16("alloc", what ? what : "the tensor");
    }
    t->data = malloc(tp_tensor_bytes(t) ? tp_tensor_bytes(t) : 1);
    if (!t->data)
        return TP_ERR_NOMEM;
    live_allocations++;
    return TP_OK;
}

static void nv_free(void *self, tp_tensor *t)
{
    (void)self;
    if (t->data) {
        free(t->data);
        live_allocations--;
    }
    t->data = NULL;
}

/* Same dtype: a byte copy. f32 <-> bf16 (bf16 instances only): converted per element. */
static tp_status nv_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream s)
{
    (void)s;
    int dst_bf16 = dst->dtype == TP_DTYPE_BF16, src_bf16 = src->dtype == TP_DTYPE_BF16;
    if (need_nchw(dst) || need_nchw(src))
        return TP_ERR_INVALID;
    if (!dst_bf16 && !src_bf16) {
        if (tp_tensor_bytes(dst) != tp_tensor_bytes(src))
            return TP_ERR_INVALID;
        memmove(dst->data, src->data, tp_tensor_bytes(src));
        return TP_OK;
    }
    bf16_calls++;
    if (!allows_bf16(self))
        return refuse_bf16("copy", dst_bf16 ? "dst" : "src");
    if ((!dst_bf16 && dst->dtype != TP_DTYPE_F32) || (!src_bf16 && src->dtype != TP_DTYPE_F32))
        return services_fail(TP_ERR_UNSUPPORTED, "naive backend: copy: %s to %s is not a "
                             "conversion it offers (f32 <-> bf16 only)",
                             tp_dtype_name(src->dtype), tp_dtype_name(dst->dtype));
    if (tp_tensor_count(dst) != tp_tensor_count(src))
        return services_fail(TP_ERR_INVALID, "naive backend: copy: %lld values into %lld",
                             (long long)tp_tensor_count(src), (long long)tp_tensor_count(dst));
    int64_t n = tp_tensor_count(src);
    if (dst_bf16 && src_bf16) {
        memmove(dst->data, src->data, tp_tensor_bytes(src));
    } else if (dst_bf16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst->data)[i] = tp_bf16_from_f32(F(src)[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            F(dst)[i] = tp_f32_from_bf16(((const uint16_t *)src->data)[i]);
    }
    return TP_OK;
}

static tp_status nv_fill(void *self, tp_tensor *t, double v)
{
    if (t->dtype == TP_DTYPE_BF16) {
        bf16_calls++;
        if (!allows_bf16(self))
            return refuse_bf16("fill", "t");
        uint16_t h = tp_bf16_from_f32((float)v);
        for (int64_t i = 0; i < tp_tensor_count(t); i++)
            ((uint16_t *)t->data)[i] = h;
        return TP_OK;
    }
    for (int64_t i = 0; i < tp_tensor_count(t); i++)
        F(t)[i] = (float)v;
    return TP_OK;
}

static tp_status nv_sync(void *self)
{
    (void)self;
    return TP_OK;
}

static tp_status k_conv_forward(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                const tp_tensor *w, const tp_tensor *b, tp_tensor *y)
{
    (void)self;
    if (need_nchw(x) || need_nchw(y))
        return TP_ERR_UNSUPPORTED;
    int64_t kh = H_(w), kw = W_(w);
    for (int64_t n = 0; n < N_(y); n++)
        for (int64_t o = 0; o < C_(y); o++)
            for (int64_t oy = 0; oy < H_(y); oy++)
                for (int64_t ox = 0; ox < W_(y); ox++) {
                    double acc = b ? F(b)[o] : 0.0;
                    for (int64_t i = 0; i < C_(x); i++)
                        for (int64_t ky = 0; ky < kh; ky++)
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t iy = oy * d->stride_h - d->pad_h + ky;
                                int64_t ix = ox * d->stride_w - d->pad_w + kx;
                                if (iy < 0 || ix < 0 || iy >= H_(x) || ix >= W_(x))
                                    continue;
                                acc += (double)AT(x, n, i, iy, ix) * AT(w, o, i, ky, kx);
                            }
                    AT(y, n, o, oy, ox) = (float)acc;
                }
    return TP_OK;
}

static tp_status k_conv_backward_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                      const tp_tensor *w, tp_tensor *dx)
{
    (void)self;
    int64_t count = tp_tensor_count(dx);
    double *acc = calloc((size_t)count, sizeof *acc);
    if (!acc)
        return TP_ERR_NOMEM;
    for (int64_t n = 0; n < N_(dy); n++)
        for (int64_t o = 0; o < C_(dy); o++)
            for (int64_t oy = 0; oy < H_(dy); oy++)
                for (int64_t ox = 0; ox < W_(dy); ox++) {
                    double g = AT(dy, n, o, oy, ox);
                    for (int64_t i = 0; i < C_(dx); i++)
                        for (int64_t ky = 0; ky < H_(w); ky++)
                            for (int64_t kx = 0; kx < W_(w); kx++) {
                                int64_t iy = oy * d->stride_h - d->pad_h + ky;
                                int64_t ix = ox * d->stride_w - d->pad_w + kx;
                                if (iy < 0 || ix < 0 || iy >= H_(dx) || ix >= W_(dx))
                                    continue;
                                acc[((n * C_(dx) + i) * H_(dx) + iy) * W_(dx) + ix] +=
                                    g * AT(w, o, i, ky, kx);
                            }
                }
    for (int64_t k = 0; k < count; k++)
        F(dx)[k] = (float)acc[k];
    free(acc);
    return TP_OK;
}

static tp_status k_conv_backward_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                        const tp_tensor *dy, tp_tensor *dw, tp_tensor *db)
{
    (void)self;
    for (int64_t o = 0; o < N_(dw); o++) {
        for (int64_t i = 0; i < C_(dw); i++)
            for (int64_t ky = 0; ky < H_(dw); ky++)
                for (int64_t kx = 0; kx < W_(dw); kx++) {
                    double acc = 0;
                    for (int64_t n = 0; n < N_(dy); n++)
                        for (int64_t oy = 0; oy < H_(dy); oy++)
                            for (int64_t ox = 0; ox < W_(dy); ox++) {
                                int64_t iy = oy * d->stride_h - d->pad_h + ky;
                                int64_t ix = ox * d->stride_w - d->pad_w + kx;
                                if (iy < 0 || ix < 0 || iy >= H_(x) || ix >= W_(x))
                                    continue;
                                acc += (double)AT(dy, n, o, oy, ox) * AT(x, n, i, iy, ix);
                            }
                    AT(dw, o, i, ky, kx) = (float)acc;
                }
        if (db) {
            double acc = 0;
            for (int64_t n = 0; n < N_(dy); n++)
                for (int64_t k = 0; k < H_(dy) * W_(dy); k++)
                    acc += F(dy)[(n * C_(dy) + o) * H_(dy) * W_(dy) + k];
            F(db)[o] = (float)acc;
        }
    }
    return TP_OK;
}

/* Batch norm: statistics over N, H, W per channel. */
static void channel_stats(const tp_tensor *x, int64_t c, double *mean, double *var)
{
    int64_t hw = H_(x) * W_(x), m = N_(x) * hw;
    double s = 0, ss = 0;
    for (int64_t n = 0; n < N_(x); n++)
        for (int64_t k = 0; k < hw; k++)
            s += F(x)[(n * C_(x) + c) * hw + k];
    *mean = s / m;
    for (int64_t n = 0; n < N_(x); n++)
        for (int64_t k = 0; k < hw; k++) {
            double dlt = F(x)[(n * C_(x) + c) * hw + k] - *mean;
            ss += dlt * dlt;
        }
    *var = ss / m;
}

static tp_status k_bn_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                            tp_tensor *rm, tp_tensor *rv, tp_tensor *sm, tp_tensor *si)
{
    (void)self;
    int64_t hw = H_(x) * W_(x), m = N_(x) * hw;
    for (int64_t c = 0; c < C_(x); c++) {
        double mean, var;
        channel_stats(x, c, &mean, &var);
        double inv = 1.0 / sqrt(var + d->eps);
        for (int64_t n = 0; n < N_(x); n++)
            for (int64_t k = 0; k < hw; k++) {
                int64_t i = (n * C_(x) + c) * hw + k;
                F(y)[i] = (float)((F(x)[i] - mean) * inv * F(gamma)[c] + F(beta)[c]);
            }
        double unbiased = m > 1 ? var * m / (m - 1) : var;
        F(rm)[c] = (float)((1 - d->momentum) * F(rm)[c] + d->momentum * mean);
        F(rv)[c] = (float)((1 - d->momentum) * F(rv)[c] + d->momentum * unbiased);
        F(sm)[c] = (float)mean;
        F(si)[c] = (float)inv;
    }
    return TP_OK;
}

static tp_status k_bn_infer(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *gamma, const tp_tensor *beta, const tp_tensor *rm,
                            const tp_tensor *rv, tp_tensor *y)
{
    (void)self;
    int64_t hw = H_(x) * W_(x);
    for (int64_t n = 0; n < N_(x); n++)
        for (int64_t c = 0; c < C_(x); c++) {
            double inv = 1.0 / sqrt(F(rv)[c] + d->eps);
            for (int64_t k = 0; k < hw; k++) {
                int64_t i = (n * C_(x) + c) * hw + k;
                F(y)[i] = (float)((F(x)[i] - F(rm)[c]) * inv * F(gamma)[c] + F(beta)[c]);
            }
        }
    return TP_OK;
}

static tp_status k_bn_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *dy, const tp_tensor *gamma,
                               const tp_tensor *sm, const tp_tensor *si, tp_tensor *dx,
                               tp_tensor *dgamma, tp_tensor *dbeta)
{
    (void)self;
    (void)d;
    int64_t hw = H_(x) * W_(x), m = N_(x) * hw;
    for (int64_t c = 0; c < C_(x); c++) {
        double mean = F(sm)[c], inv = F(si)[c], sdy = 0, sdyx = 0;
        for (int64_t n = 0; n < N_(x); n++)
            for (int64_t k = 0; k < hw; k++) {
                int64_t i = (n * C_(x) + c) * hw + k;
                sdy += F(dy)[i];
                sdyx += F(dy)[i] * (F(x)[i] - mean) * inv;
            }
        F(dgamma)[c] = (float)sdyx;
        F(dbeta)[c] = (float)sdy;
        for (int64_t n = 0; n < N_(x); n++)
            for (int64_t k = 0; k < hw; k++) {
                int64_t i = (n * C_(x) + c) * hw + k;
                double xh = (F(x)[i] - mean) * inv;
                F(dx)[i] = (float)(F(gamma)[c] * inv * (F(dy)[i] - sdy / m - xh * sdyx / m));
            }
    }
    return TP_OK;
}

static tp_status k_relu_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    for (int64_t i = 0; i < tp_tensor_count(x); i++)
        F(y)[i] = F(x)[i] > 0 ? F(x)[i] : 0.0f;
    return TP_OK;
}

static tp_status k_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy,
                                 tp_tensor *dx)
{
    (void)self;
    for (int64_t i = 0; i < tp_tensor_count(y); i++)
        F(dx)[i] = F(y)[i] > 0 ? F(dy)[i] : 0.0f;
    return TP_OK;
}

static tp_status k_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    (void)self;
    if (tp_tensor_count(a) != tp_tensor_count(b) || tp_tensor_count(a) != tp_tensor_count(y))
        return TP_ERR_INVALID;
    for (int64_t i = 0; i < tp_tensor_count(y); i++)
        F(y)[i] = F(a)[i] + F(b)[i];
    return TP_OK;
}

/* The API 1.2 fused operations, composed from the plain ones: bit for bit what the graph
 * computes without fusion, so the tests can demand exact equality of the two plans. No
 * workspace: the backward pass takes its mask from y. */
static tp_status k_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    tp_status st = k_add(self, a, b, y);
    return st ? st : k_relu_forward(self, y, y);
}

static tp_status k_bn_relu_workspace_bytes(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                           int64_t *bytes)
{
    (void)self, (void)d, (void)x;
    *bytes = 0;
    return TP_OK;
}

static tp_status k_bn_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                 tp_tensor *rm, tp_tensor *rv, tp_tensor *sm, tp_tensor *si,
                                 tp_tensor *ws)
{
    if (ws)
        return TP_ERR_INVALID; /* it asked for none */
    tp_status st = k_bn_train(self, d, x, gamma, beta, y, rm, rv, sm, si);
    return st ? st : k_relu_forward(self, y, y);
}

static tp_status k_bn_relu_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                    const tp_tensor *y, const tp_tensor *ws, const tp_tensor *dy,
                                    const tp_tensor *gamma, const tp_tensor *sm,
                                    const tp_tensor *si, tp_tensor *dx, tp_tensor *dgamma,
                                    tp_tensor *dbeta)
{
    if (ws)
        return TP_ERR_INVALID;
    tp_tensor masked = *dy;
    masked.data = malloc((size_t)tp_tensor_bytes(dy));
    if (!masked.data)
        return TP_ERR_NOMEM;
    tp_status st = k_relu_backward(self, y, dy, &masked);
    if (st == TP_OK)
        st = k_bn_backward(self, d, x, &masked, gamma, sm, si, dx, dgamma, dbeta);
    free(masked.data);
    return st;
}

static tp_status k_pool_forward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                tp_tensor *y)
{
    (void)self;
    for (int64_t n = 0; n < N_(y); n++)
        for (int64_t c = 0; c < C_(y); c++)
            for (int64_t oy = 0; oy < H_(y); oy++)
                for (int64_t ox = 0; ox < W_(y); ox++) {
                    double best = -DBL_MAX, sum = 0;
                    int count = 0;
                    for (int ky = 0; ky < d->kernel_h; ky++)
                        for (int kx = 0; kx < d->kernel_w; kx++) {
                            int64_t iy = oy * d->stride_h - d->pad_h + ky;
                            int64_t ix = ox * d->stride_w - d->pad_w + kx;
                            if (iy < 0 || ix < 0 || iy >= H_(x) || ix >= W_(x))
                                continue;
                            double v = AT(x, n, c, iy, ix);
                            if (v > best)
                                best = v;
                            sum += v;
                            count++;
                        }
                    AT(y, n, c, oy, ox) =
                        (float)(d->mode == TP_POOL_MAX ? best : sum / (count ? count : 1));
                }
    return TP_OK;
}

static tp_status k_pool_backward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                 const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    (void)y;
    memset(dx->data, 0, tp_tensor_bytes(dx));
    for (int64_t n = 0; n < N_(y); n++)
        for (int64_t c = 0; c < C_(y); c++)
            for (int64_t oy = 0; oy < H_(y); oy++)
                for (int64_t ox = 0; ox < W_(y); ox++) {
                    double best = -DBL_MAX;
                    int64_t by = -1, bx = -1;
                    int count = 0;
                    for (int pass = 0; pass < 2; pass++)
                        for (int ky = 0; ky < d->kernel_h; ky++)
                            for (int kx = 0; kx < d->kernel_w; kx++) {
                                int64_t iy = oy * d->stride_h - d->pad_h + ky;
                                int64_t ix = ox * d->stride_w - d->pad_w + kx;
                                if (iy < 0 || ix < 0 || iy >= H_(x) || ix >= W_(x))
                                    continue;
                                double v = AT(x, n, c, iy, ix);
                                if (pass == 0) {
                                    count++;
                                    if (v > best) {
                                        best = v;
                                        by = iy;
                                        bx = ix;
                                    }
                                } else if (d->mode == TP_POOL_AVG) {
                                    AT(dx, n, c, iy, ix) += AT(dy, n, c, oy, ox) / count;
                                }
                            }
                    if (d->mode == TP_POOL_MAX && by >= 0)
                        AT(dx, n, c, by, bx) += AT(dy, n, c, oy, ox);
                }
    return TP_OK;
}

static tp_status k_gap_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    int64_t hw = H_(x) * W_(x);
    for (int64_t i = 0; i < N_(x) * C_(x); i++) {
        double s = 0;
        for (int64_t k = 0; k < hw; k++)
            s += F(x)[i * hw + k];
        F(y)[i] = (float)(s / hw);
    }
    return TP_OK;
}

static tp_status k_gap_backward(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    int64_t hw = H_(dx) * W_(dx);
    for (int64_t i = 0; i < N_(dx) * C_(dx); i++)
        for (int64_t k = 0; k < hw; k++)
            F(dx)[i * hw + k] = (float)(F(dy)[i] / (double)hw);
    return TP_OK;
}

static tp_status k_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                                  const tp_tensor *b, tp_tensor *y)
{
    (void)self;
    int64_t n = x->shape[0], k = x->shape[1], m = w->shape[0];
    if (w->shape[1] != k || y->shape[0] != n || y->shape[1] != m)
        return TP_ERR_INVALID;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < m; j++) {
            double acc = b ? F(b)[j] : 0;
            for (int64_t i = 0; i < k; i++)
                acc += (double)F(x)[r * k + i] * F(w)[j * k + i];
            F(y)[r * m + j] = (float)acc;
        }
    return TP_OK;
}

static tp_status k_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                                   const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                                   tp_tensor *db)
{
    (void)self;
    int64_t n = x->shape[0], k = x->shape[1], m = w->shape[0];
    if (dx)
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < k; i++) {
                double acc = 0;
                for (int64_t j = 0; j < m; j++)
                    acc += (double)F(dy)[r * m + j] * F(w)[j * k + i];
                F(dx)[r * k + i] = (float)acc;
            }
    for (int64_t j = 0; j < m; j++) {
        for (int64_t i = 0; i < k; i++) {
            double acc = 0;
            for (int64_t r = 0; r < n; r++)
                acc += (double)F(dy)[r * m + j] * F(x)[r * k + i];
            F(dw)[j * k + i] = (float)acc;
        }
        if (db) {
            double acc = 0;
            for (int64_t r = 0; r < n; r++)
                acc += F(dy)[r * m + j];
            F(db)[j] = (float)acc;
        }
    }
    return TP_OK;
}

static tp_status k_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                                double s, double grad_scale, tp_tensor *loss,
                                tp_tensor *dlogits)
{
    (void)self;
    int64_t n = logits->shape[0], k = logits->shape[1];
    double total = 0;
    for (int64_t r = 0; r < n; r++) {
        const float *z = F(logits) + r * k;
        int32_t label = ((const int32_t *)labels->data)[r];
        double mx = z[0], sum = 0;
        for (int64_t j = 1; j < k; j++)
            if (z[j] > mx)
                mx = z[j];
        for (int64_t j = 0; j < k; j++)
            sum += exp(z[j] - mx);
        double lse = mx + log(sum);
        for (int64_t j = 0; j < k; j++) {
            double t = (1 - s) * (j == label) + s / k;
            total -= t * (z[j] - lse);
            if (dlogits)
                F(dlogits)[r * k + j] = (float)(grad_scale * (exp(z[j] - lse) - t) / n);
        }
    }
    F(loss)[0] = (float)(total / n);
    return TP_OK;
}

static tp_status k_subpad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    (void)self;
    for (int64_t n = 0; n < N_(y); n++)
        for (int64_t c = 0; c < C_(y); c++)
            for (int64_t oy = 0; oy < H_(y); oy++)
                for (int64_t ox = 0; ox < W_(y); ox++)
                    AT(y, n, c, oy, ox) = c < C_(x) ? AT(x, n, c, oy * stride, ox * stride) : 0;
    return TP_OK;
}

static tp_status k_subpad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    (void)self;
    memset(dx->data, 0, tp_tensor_bytes(dx));
    for (int64_t n = 0; n < N_(dy); n++)
        for (int64_t c = 0; c < C_(dx); c++)
            for (int64_t oy = 0; oy < H_(dy); oy++)
                for (int64_t ox = 0; ox < W_(dy); ox++)
                    AT(dx, n, c, oy * stride, ox * stride) = AT(dy, n, c, oy, ox);
    return TP_OK;
}

static tp_status k_axpby(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y)
{
    (void)self;
    for (int64_t i = 0; i < tp_tensor_count(y); i++)
        F(y)[i] = (float)(alpha * F(x)[i] + beta * F(y)[i]);
    return TP_OK;
}

static tp_status k_scale(void *self, double alpha, tp_tensor *y)
{
    (void)self;
    for (int64_t i = 0; i < tp_tensor_count(y); i++)
        F(y)[i] = (float)(alpha * F(y)[i]);
    return TP_OK;
}

static tp_status k_sum_squares(void *self, const tp_tensor *x, tp_tensor *out)
{
    (void)self;
    double s = 0;
    for (int64_t i = 0; i < tp_tensor_count(x); i++)
        s += (double)F(x)[i] * F(x)[i];
    F(out)[0] = (float)s;
    return TP_OK;
}

static tp_status k_sgd_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *v,
                              double lr, double m, double wd, int nesterov)
{
    (void)self;
    for (int64_t i = 0; i < tp_tensor_count(p); i++) {
        double gi = F(g)[i] + wd * F(p)[i];
        double vi = m * F(v)[i] + gi;
        F(v)[i] = (float)vi;
        F(p)[i] = (float)(F(p)[i] - lr * (nesterov ? gi + m * vi : vi));
    }
    return TP_OK;
}

static tp_status k_adam_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *m,
                               tp_tensor *v, double lr, double b1, double b2, double eps,
                               double wd, int decoupled, int64_t step)
{
    (void)self;
    double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step);
    for (int64_t i = 0; i < tp_tensor_count(p); i++) {
        double pi = F(p)[i], gi = F(g)[i];
        if (decoupled)
            pi *= 1 - lr * wd;
        else
            gi += wd * pi;
        double mi = b1 * F(m)[i] + (1 - b1) * gi, vi = b2 * F(v)[i] + (1 - b2) * gi * gi;
        F(m)[i] = (float)mi;
        F(v)[i] = (float)vi;
        F(p)[i] = (float)(pi - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));
    }
    return TP_OK;
}

/* ------------------------------------------------------------------ dtype rules */

/* What a tensor argument of an operation is, for the dtype rules. */
enum slot_kind {
    SLOT_ACT_IN,  /* activation-shaped input: f32 or (bf16 instances) bf16 */
    SLOT_ACT_OUT, /* activation-shaped output, same dtype as the call's other activations */
    SLOT_F32,     /* always f32: parameters, statistics, their gradients, linear, loss, ... */
    SLOT_WEIGHT   /* always f32; a bf16 call computes with a copy rounded to bf16 */
};

typedef struct slot {
    const char *name;
    const tp_tensor *t; /* the caller's tensor; NULL when absent (no bias, ...) */
    enum slot_kind kind;
    tp_tensor use;      /* what the f32 loop gets: *t, or a float temporary */
    int owned;          /* use.data is a temporary of ours */
} slot;

#define ACT_IN(x) {.name = #x, .t = (x), .kind = SLOT_ACT_IN}
#define ACT_OUT(x) {.name = #x, .t = (x), .kind = SLOT_ACT_OUT}
#define F32(x) {.name = #x, .t = (x), .kind = SLOT_F32}
#define WEIGHT(x) {.name = #x, .t = (x), .kind = SLOT_WEIGHT}
#define NSLOTS(s) ((int)(sizeof(s) / sizeof((s)[0])))
/* The tensor the loop gets for argument i. */
#define U(s, i) ((s)[i].t ? &(s)[i].use : NULL)

static int is_act(const slot *s) { return s->kind == SLOT_ACT_IN || s->kind == SLOT_ACT_OUT; }

/* How a call runs: on the caller's tensors, or on float temporaries of its activations and
 * weights (bf16 storage, or f32 storage rounded as bf16 storage would be). */
enum frame_mode { FRAME_PLAIN, FRAME_BF16, FRAME_EMULATE };

/* Checks the dtypes of op's arguments and, for a bf16 (or emulated) call, points each
 * activation and weight at a float temporary (inputs widened or rounded, weights rounded to
 * bf16). *mode tells frame_end() what to do; call it whatever this returns. */
static tp_status frame_begin(void *self, const char *op, slot *s, int n, int *mode)
{
    const slot *act = NULL;
    int any_bf16 = 0;
    *mode = FRAME_PLAIN;
    for (int i = 0; i < n; i++) {
        s[i].owned = 0;
        if (s[i].t) {
            s[i].use = *s[i].t;
            any_bf16 |= s[i].t->dtype == TP_DTYPE_BF16;
        }
    }
    if (any_bf16)
        bf16_calls++;
    for (int i = 0; i < n; i++)
        if (s[i].t && s[i].t->dtype == TP_DTYPE_BF16 && !allows_bf16(self))
            return refuse_bf16(op, s[i].name);
    for (int i = 0; i < n; i++) {
        const tp_tensor *t = s[i].t;
        if (!t)
            continue;
        if (!is_act(&s[i])) {
            if (t->dtype != TP_DTYPE_F32)
                return services_fail(TP_ERR_INVALID, "naive backend: %s: %s is %s but must be "
                                     "f32 (only activations may be bf16)", op, s[i].name,
                                     tp_dtype_name(t->dtype));
            continue;
        }
        if (t->dtype != TP_DTYPE_F32 && t->dtype != TP_DTYPE_BF16)
            return services_fail(TP_ERR_UNSUPPORTED, "naive backend: %s: %s is %s; activations "
                                 "are f32 or bf16", op, s[i].name, tp_dtype_name(t->dtype));
        if (!act)
            act = &s[i];
        else if (act->t->dtype != t->dtype)
            return services_fail(TP_ERR_INVALID, "naive backend: %s: %s is %s but %s is %s",
                                 op, act->name, tp_dtype_name(act->t->dtype), s[i].name,
                                 tp_dtype_name(t->dtype));
    }
    if (act && act->t->dtype == TP_DTYPE_BF16)
        *mode = FRAME_BF16;
    else if (act && emulates_bf16(self))
        *mode = FRAME_EMULATE;
    else
        return TP_OK;
    for (int i = 0; i < n; i++) {
        const tp_tensor *t = s[i].t;
        if (!t || !(is_act(&s[i]) || s[i].kind == SLOT_WEIGHT))
            continue;
        int64_t count = tp_tensor_count(t);
        s[i].use.dtype = TP_DTYPE_F32;
        s[i].use.data = calloc(count ? (size_t)count : 1, sizeof(float));
        if (!s[i].use.data)
            return services_fail(TP_ERR_NOMEM, "naive backend: %s: no memory for a float copy "
                                 "of %s", op, s[i].name);
        s[i].owned = 1;
        float *f = s[i].use.data;
        if (s[i].kind == SLOT_ACT_IN && *mode == FRAME_BF16)
            for (int64_t k = 0; k < count; k++)
                f[k] = tp_f32_from_bf16(((const uint16_t *)t->data)[k]);
        else if (s[i].kind == SLOT_ACT_IN || s[i].kind == SLOT_WEIGHT)
            for (int64_t k = 0; k < count; k++)
                f[k] = round_bf16(F(t)[k]);
    }
    return TP_OK;
}

/* After the loop: a successful bf16 (emulated) call rounds its outputs into the caller's
 * bf16 (f32) tensors; temporaries are freed either way. Returns st. */
static tp_status frame_end(slot *s, int n, int mode, tp_status st)
{
    for (int i = 0; i < n; i++) {
        if (!s[i].owned)
            continue;
        if (mode != FRAME_PLAIN && st == TP_OK && s[i].kind == SLOT_ACT_OUT) {
            int64_t count = tp_tensor_count(s[i].t);
            const float *f = s[i].use.data;
            if (mode == FRAME_BF16)
                for (int64_t k = 0; k < count; k++)
                    ((uint16_t *)s[i].t->data)[k] = tp_bf16_from_f32(f[k]);
            else
                for (int64_t k = 0; k < count; k++)
                    F(s[i].t)[k] = round_bf16(f[k]);
        }
        free(s[i].use.data);
        s[i].owned = 0;
    }
    return st;
}

/* Runs `call` (a k_* loop over U(s, i)) under the dtype rules for the slots s. */
#define RUN(op, s, call)                                                                 \
    do {                                                                                 \
        int mode_;                                                                       \
        tp_status st_ = frame_begin(self, (op), (s), NSLOTS(s), &mode_);                 \
        if (st_ == TP_OK)                                                                \
            st_ = (call);                                                                \
        return frame_end((s), NSLOTS(s), mode_, st_);                                    \
    } while (0)

static tp_status nv_conv_forward(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                 const tp_tensor *w, const tp_tensor *b, tp_tensor *y)
{
    slot s[] = {ACT_IN(x), WEIGHT(w), F32(b), ACT_OUT(y)};
    RUN("conv_forward", s, k_conv_forward(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3)));
}

static tp_status nv_conv_backward_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                       const tp_tensor *w, tp_tensor *dx)
{
    slot s[] = {ACT_IN(dy), WEIGHT(w), ACT_OUT(dx)};
    RUN("conv_backward_data", s, k_conv_backward_data(self, d, U(s, 0), U(s, 1), U(s, 2)));
}

static tp_status nv_conv_backward_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                         const tp_tensor *dy, tp_tensor *dw, tp_tensor *db)
{
    slot s[] = {ACT_IN(x), ACT_IN(dy), F32(dw), F32(db)};
    RUN("conv_backward_filter", s,
        k_conv_backward_filter(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3)));
}

static tp_status nv_bn_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                             const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                             tp_tensor *running_mean, tp_tensor *running_var,
                             tp_tensor *save_mean, tp_tensor *save_invstd)
{
    slot s[] = {ACT_IN(x),          F32(gamma),        F32(beta),      ACT_OUT(y),
                F32(running_mean),  F32(running_var),  F32(save_mean), F32(save_invstd)};
    RUN("batchnorm_train", s, k_bn_train(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3), U(s, 4),
                                         U(s, 5), U(s, 6), U(s, 7)));
}

static tp_status nv_bn_infer(void *self, const tp_bn_desc *d, const tp_tensor *x,
                             const tp_tensor *gamma, const tp_tensor *beta,
                             const tp_tensor *running_mean, const tp_tensor *running_var,
                             tp_tensor *y)
{
    slot s[] = {ACT_IN(x),         F32(gamma),       F32(beta),
                F32(running_mean), F32(running_var), ACT_OUT(y)};
    RUN("batchnorm_infer",
        s, k_bn_infer(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3), U(s, 4), U(s, 5)));
}

static tp_status nv_bn_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                const tp_tensor *dy, const tp_tensor *gamma,
                                const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta)
{
    slot s[] = {ACT_IN(x),        ACT_IN(dy),  F32(gamma),  F32(save_mean),
                F32(save_invstd), ACT_OUT(dx), F32(dgamma), F32(dbeta)};
    RUN("batchnorm_backward", s, k_bn_backward(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3),
                                               U(s, 4), U(s, 5), U(s, 6), U(s, 7)));
}

static tp_status nv_relu_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    slot s[] = {ACT_IN(x), ACT_OUT(y)};
    RUN("relu_forward", s, k_relu_forward(self, U(s, 0), U(s, 1)));
}

static tp_status nv_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy,
                                  tp_tensor *dx)
{
    slot s[] = {ACT_IN(y), ACT_IN(dy), ACT_OUT(dx)};
    RUN("relu_backward", s, k_relu_backward(self, U(s, 0), U(s, 1), U(s, 2)));
}

static tp_status nv_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    slot s[] = {ACT_IN(a), ACT_IN(b), ACT_OUT(y)};
    RUN("add", s, k_add(self, U(s, 0), U(s, 1), U(s, 2)));
}

static tp_status nv_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    slot s[] = {ACT_IN(a), ACT_IN(b), ACT_OUT(y)};
    RUN("add_relu", s, k_add_relu(self, U(s, 0), U(s, 1), U(s, 2)));
}

static tp_status nv_bn_relu_workspace_bytes(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                            int64_t *bytes)
{
    slot s[] = {ACT_IN(x)};
    RUN("batchnorm_relu_workspace_bytes", s, k_bn_relu_workspace_bytes(self, d, U(s, 0), bytes));
}

static tp_status nv_bn_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                  const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                  tp_tensor *running_mean, tp_tensor *running_var,
                                  tp_tensor *save_mean, tp_tensor *save_invstd,
                                  tp_tensor *ws)
{
    slot s[] = {ACT_IN(x),          F32(gamma),        F32(beta),      ACT_OUT(y),
                F32(running_mean),  F32(running_var),  F32(save_mean), F32(save_invstd)};
    RUN("batchnorm_relu_train", s, k_bn_relu_train(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3),
                                                   U(s, 4), U(s, 5), U(s, 6), U(s, 7), ws));
}

static tp_status nv_bn_relu_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                     const tp_tensor *y, const tp_tensor *ws, const tp_tensor *dy,
                                     const tp_tensor *gamma, const tp_tensor *save_mean,
                                     const tp_tensor *save_invstd, tp_tensor *dx,
                                     tp_tensor *dgamma, tp_tensor *dbeta)
{
    slot s[] = {ACT_IN(x),      ACT_IN(y),        ACT_IN(dy),  F32(gamma),  F32(save_mean),
                F32(save_invstd), ACT_OUT(dx),    F32(dgamma), F32(dbeta)};
    RUN("batchnorm_relu_backward",
        s, k_bn_relu_backward(self, d, U(s, 0), U(s, 1), ws, U(s, 2), U(s, 3), U(s, 4), U(s, 5),
                              U(s, 6), U(s, 7), U(s, 8)));
}

static tp_status nv_pool_forward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                 tp_tensor *y)
{
    slot s[] = {ACT_IN(x), ACT_OUT(y)};
    RUN("pool_forward", s, k_pool_forward(self, d, U(s, 0), U(s, 1)));
}

static tp_status nv_pool_backward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                                  const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    slot s[] = {ACT_IN(x), ACT_IN(y), ACT_IN(dy), ACT_OUT(dx)};
    RUN("pool_backward", s, k_pool_backward(self, d, U(s, 0), U(s, 1), U(s, 2), U(s, 3)));
}

/* Global average pooling: only x (forward) and dx (backward) may be bf16. */
static tp_status nv_gap_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    slot s[] = {ACT_IN(x), F32(y)};
    RUN("global_avgpool_forward", s, k_gap_forward(self, U(s, 0), U(s, 1)));
}

static tp_status nv_gap_backward(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    slot s[] = {F32(dy), ACT_OUT(dx)};
    RUN("global_avgpool_backward", s, k_gap_backward(self, U(s, 0), U(s, 1)));
}

/* f32 only from here on. */
static tp_status nv_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                                   const tp_tensor *b, tp_tensor *y)
{
    slot s[] = {F32(x), F32(w), F32(b), F32(y)};
    RUN("linear_forward", s, k_linear_forward(self, U(s, 0), U(s, 1), U(s, 2), U(s, 3)));
}

static tp_status nv_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                                    const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                                    tp_tensor *db)
{
    slot s[] = {F32(x), F32(w), F32(dy), F32(dx), F32(dw), F32(db)};
    RUN("linear_backward",
        s, k_linear_backward(self, U(s, 0), U(s, 1), U(s, 2), U(s, 3), U(s, 4), U(s, 5)));
}

static tp_status nv_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                                 double smoothing, double grad_scale, tp_tensor *loss,
                                 tp_tensor *dlogits)
{
    slot s[] = {F32(logits), F32(loss), F32(dlogits)};
    RUN("softmax_xent", s, k_softmax_xent(self, U(s, 0), labels, smoothing, grad_scale, U(s, 1),
                                          U(s, 2)));
}

static tp_status nv_subpad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    slot s[] = {ACT_IN(x), ACT_OUT(y)};
    RUN("subsample_pad_forward", s, k_subpad_forward(self, stride, U(s, 0), U(s, 1)));
}

static tp_status nv_subpad_backward(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    slot s[] = {ACT_IN(dy), ACT_OUT(dx)};
    RUN("subsample_pad_backward", s, k_subpad_backward(self, stride, U(s, 0), U(s, 1)));
}

static tp_status nv_axpby(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y)
{
    slot s[] = {F32(x), F32(y)};
    RUN("axpby", s, k_axpby(self, alpha, U(s, 0), beta, U(s, 1)));
}

static tp_status nv_scale(void *self, double alpha, tp_tensor *y)
{
    slot s[] = {F32(y)};
    RUN("scale", s, k_scale(self, alpha, U(s, 0)));
}

static tp_status nv_sum_squares(void *self, const tp_tensor *x, tp_tensor *out)
{
    slot s[] = {F32(x), F32(out)};
    RUN("sum_squares", s, k_sum_squares(self, U(s, 0), U(s, 1)));
}

static tp_status nv_sgd_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *v,
                               double lr, double m, double wd, int nesterov)
{
    slot s[] = {F32(p), F32(g), F32(v)};
    RUN("sgd_update", s, k_sgd_update(self, U(s, 0), U(s, 1), U(s, 2), lr, m, wd, nesterov));
}

static tp_status nv_adam_update(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *m,
                                tp_tensor *v, double lr, double b1, double b2, double eps,
                                double wd, int decoupled, int64_t step)
{
    slot s[] = {F32(p), F32(g), F32(m), F32(v)};
    RUN("adam_update", s, k_adam_update(self, U(s, 0), U(s, 1), U(s, 2), U(s, 3), lr, b1, b2,
                                        eps, wd, decoupled, step));
}

/* API 1.7: backward-data into a temporary, then the addition, as the graph does without it. */
static tp_status nv_conv_backward_data_add(void *self, const tp_conv_desc *d,
                                           const tp_tensor *dy, const tp_tensor *w,
                                           tp_tensor *dx)
{
    tp_tensor t = *dx;
    t.data = NULL;
    tp_status st = nv_alloc(self, &t, "conv_backward_data_add temporary");
    if (st)
        return st;
    st = nv_conv_backward_data(self, d, dy, w, &t);
    if (!st)
        st = nv_add(self, dx, &t, dx);
    nv_free(self, &t);
    return st;
}

/* API 1.7, composed of the two plain operations (each rounding its output as it does), so
 * the fused plan stays bit for bit the unfused one. */
static tp_status nv_bn_add_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                      const tp_tensor *residual, const tp_tensor *gamma,
                                      const tp_tensor *beta, tp_tensor *y,
                                      tp_tensor *running_mean, tp_tensor *running_var,
                                      tp_tensor *save_mean, tp_tensor *save_invstd)
{
    if (tp_tensors_overlap(y, x) || tp_tensors_overlap(y, residual))
        return TP_ERR_INVALID; /* the SDK forbids it */
    tp_status st = nv_bn_train(self, d, x, gamma, beta, y, running_mean, running_var,
                               save_mean, save_invstd);
    return st ? st : nv_add_relu(self, y, residual, y);
}

static const tp_backend_ops naive_ops_fused = {
    .size = sizeof(tp_backend_ops),
    .info = nv_info,
    .alloc = nv_alloc,
    .free = nv_free,
    .copy = nv_copy,
    .fill = nv_fill,
    .sync = nv_sync,
    .conv_forward = nv_conv_forward,
    .conv_backward_data = nv_conv_backward_data,
    .conv_backward_filter = nv_conv_backward_filter,
    .batchnorm_train = nv_bn_train,
    .batchnorm_infer = nv_bn_infer,
    .batchnorm_backward = nv_bn_backward,
    .relu_forward = nv_relu_forward,
    .relu_backward = nv_relu_backward,
    .add = nv_add,
    .pool_forward = nv_pool_forward,
    .pool_backward = nv_pool_backward,
    .global_avgpool_forward = nv_gap_forward,
    .global_avgpool_backward = nv_gap_backward,
    .linear_forward = nv_linear_forward,
    .linear_backward = nv_linear_backward,
    .softmax_xent = nv_softmax_xent,
    .subsample_pad_forward = nv_subpad_forward,
    .subsample_pad_backward = nv_subpad_backward,
    .axpby = nv_axpby,
    .scale = nv_scale,
    .sum_squares = nv_sum_squares,
    .sgd_update = nv_sgd_update,
    .adam_update = nv_adam_update,
    .add_relu = nv_add_relu,
    .batchnorm_relu_workspace_bytes = nv_bn_relu_workspace_bytes,
    .batchnorm_relu_train = nv_bn_relu_train,
    .batchnorm_relu_backward = nv_bn_relu_backward,
    .batchnorm_add_relu_train = nv_bn_add_relu_train,
    .conv_backward_data_add = nv_conv_backward_data_add,
};

static tp_backend_ops naive_ops_plain;

/* The table without the optional fused operations. */
static const tp_backend_ops *naive_ops(int fused)
{
    if (fused)
        return &naive_ops_fused;
    naive_ops_plain = naive_ops_fused;
    naive_ops_plain.sgd_update = NULL;
    naive_ops_plain.adam_update = NULL;
    naive_ops_plain.add_relu = NULL;
    naive_ops_plain.batchnorm_relu_workspace_bytes = NULL;
    naive_ops_plain.batchnorm_relu_train = NULL;
    naive_ops_plain.batchnorm_relu_backward = NULL;
    naive_ops_plain.batchnorm_add_relu_train = NULL;
    naive_ops_plain.conv_backward_data_add = NULL;
    return &naive_ops_plain;
}

tp_backend naive_backend(int fused)
{
    return (tp_backend){naive_ops(fused), &nv_f32};
}

tp_backend naive_backend_bf16(int fused)
{
    return (tp_backend){naive_ops(fused), &nv_bf16};
}

tp_backend naive_backend_bf16_emulated(int fused)
{
    return (tp_backend){naive_ops(fused), &nv_emulated};
}

/* ------------------------------------------------------------------ test helpers */

tp_status test_load_plugin(registry *r, const char *file)
{
    const char *top = getenv("TP_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/.libs/%s", top ? top : "..", file);
    if (access(path, R_OK) != 0)
        return TP_ERR_NOT_FOUND;
    tp_status st = registry_load_file(r, path);
    if (st != TP_OK)
        fprintf(stderr, "cannot load %s: %s\n", path, services_last_error());
    return st;
}

int test_instance(registry *r, tp_kind kind, const char *name, const char *const *kv,
                  instance *out)
{
    const registry_entry *e = registry_find(r, kind, name);
    if (!e) {
        fprintf(stderr, "component %s not found\n", name);
        return 0;
    }
    if (instance_create(e->component, kv, out) != TP_OK) {
        fprintf(stderr, "creating %s failed: %s\n", name, services_last_error());
        return 0;
    }
    return 1;
}

graph *test_build_graph(instance *model, int channels, int height, int width, int classes)
{
    tp_model_input in = {sizeof in, channels, height, width, classes};
    return graph_build(model->component->ops, model->self, &in);
}

tp_status test_backend_cpu(registry *r, instance *inst, tp_backend *out)
{
    if (test_load_plugin(r, "backend-cpu.so") != TP_OK)
        return TP_ERR_NOT_FOUND;
    if (!test_instance(r, TP_KIND_BACKEND, "cpu", NULL, inst))
        return TP_ERR_INVALID;
    out->ops = inst->component->ops;
    out->self = inst->self;
    return TP_OK;
}

/* A device tensor on `be` filled from host data. */
tp_status test_upload(const tp_backend *be, tp_tensor *t, const void *host)
{
    tp_status st = be->ops->alloc(be->self, t, "test tensor");
    if (st != TP_OK)
        return st;
    tp_tensor h = *t;
    h.device = TP_DEVICE_HOST;
    h.data = (void *)host;
    st = be->ops->copy(be->self, t, &h, TP_STREAM_COMPUTE);
    return st ? st : be->ops->sync(be->self);
}

tp_status test_download(const tp_backend *be, const tp_tensor *t, void *host)
{
    tp_tensor h = *t;
    h.device = TP_DEVICE_HOST;
    h.data = host;
    tp_status st = be->ops->copy(be->self, &h, t, TP_STREAM_COMPUTE);
    return st ? st : be->ops->sync(be->self);
}

double test_loss64(graph *g, const tp_backend *be, const tp_tensor *x, const int32_t *labels)
{
    if (graph_forward(g, x, 1) != TP_OK) {
        fprintf(stderr, "forward: %s\n", services_last_error());
        return NAN;
    }
    const tp_tensor *lt = graph_logits(g);
    int64_t n = lt->shape[0], k = lt->shape[1];
    float *z = malloc((size_t)(n * k) * sizeof *z);
    if (!z || test_download(be, lt, z) != TP_OK) {
        free(z);
        return NAN;
    }
    double total = 0;
    for (int64_t r = 0; r < n; r++) {
        double mx = z[r * k];
        for (int64_t j = 1; j < k; j++)
            mx = fmax(mx, z[r * k + j]);
        double s = 0;
        for (int64_t j = 0; j < k; j++)
            s += exp(z[r * k + j] - mx);
        total += mx + log(s) - z[r * k + labels[r]];
    }
    free(z);
    return total / n;
}
