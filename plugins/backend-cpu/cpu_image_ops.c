/* backend-cpu: the batch image operations behind the device-side augmenters.
 *
 * Plain C loops over host memory: these run once per batch on small images, so clarity wins
 * over vectorisation. Every function accepts both layouts; the logical shape is always
 * (N, C, H, W) and `at()` maps it to the memory offset. */
#include "config.h"

#include "cpu_image_ops.h"

#include <math.h>
#include <string.h>

/* Offset of logical element (n, c, y, x) in a 4-D tensor of shape (N, C, H, W). */
static inline size_t at(tp_layout layout, int64_t C, int64_t H, int64_t W, int64_t n,
                        int64_t c, int64_t y, int64_t x)
{
    if (layout == TP_LAYOUT_NHWC)
        return (size_t)(((n * H + y) * W + x) * C + c);
    return (size_t)(((n * C + c) * H + y) * W + x);
}

/* Checks that t is a usable 4-D tensor of dtype dt; `what` names it in the message. */
static tp_status check_4d(const tp_host *host, const char *op, const char *what,
                          const tp_tensor *t, tp_dtype dt)
{
    if (!t)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops %s: %s is NULL", op, what);
    if (t->ndim != 4)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops %s: %s has %d dimensions, need 4",
                          op, what, t->ndim);
    if (t->dtype != dt)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops %s: %s is %s, need %s", op, what,
                          tp_dtype_name(t->dtype), tp_dtype_name(dt));
    if (t->layout != TP_LAYOUT_NCHW && t->layout != TP_LAYOUT_NHWC)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops %s: %s has unknown layout %d", op,
                          what, (int)t->layout);
    for (int i = 0; i < 4; i++)
        if (t->shape[i] < 0)
            return host->fail(host, TP_ERR_INVALID,
                              "cpu_image_ops %s: %s has negative dimension %d (%lld)", op, what,
                              i, (long long)t->shape[i]);
    if (!t->data && tp_tensor_count(t) > 0)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops %s: %s has no data", op, what);
    return TP_OK;
}

static tp_status check_same_shape(const tp_host *host, const char *op, const tp_tensor *a,
                                  const tp_tensor *b)
{
    for (int i = 0; i < 4; i++)
        if (a->shape[i] != b->shape[i])
            return host->fail(host, TP_ERR_INVALID,
                              "cpu_image_ops %s: src is (%lld,%lld,%lld,%lld) but dst is "
                              "(%lld,%lld,%lld,%lld)",
                              op, (long long)a->shape[0], (long long)a->shape[1],
                              (long long)a->shape[2], (long long)a->shape[3],
                              (long long)b->shape[0], (long long)b->shape[1],
                              (long long)b->shape[2], (long long)b->shape[3]);
    return TP_OK;
}

tp_status cpu_convert_u8_batch(const tp_host *host, const tp_tensor *src, double scale,
                               tp_tensor *dst)
{
    tp_status st;
    if ((st = check_4d(host, "convert_u8_batch", "src", src, TP_DTYPE_U8)) ||
        (st = check_4d(host, "convert_u8_batch", "dst", dst, TP_DTYPE_F32)) ||
        (st = check_same_shape(host, "convert_u8_batch", src, dst)))
        return st;
    if (src->layout != TP_LAYOUT_NHWC)
        return host->fail(host, TP_ERR_INVALID,
                          "cpu_image_ops convert_u8_batch: src must be NHWC (u8 batches are "
                          "collated as interleaved HWC images)");
    const int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    const uint8_t *s = (const uint8_t *)src->data;
    float *d = (float *)dst->data;
    const float k = (float)scale;
    if (dst->layout == TP_LAYOUT_NHWC) {
        size_t total = (size_t)(N * C * H * W);
        for (size_t i = 0; i < total; i++)
            d[i] = k * (float)s[i];
        return TP_OK;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++)
                for (int64_t c = 0; c < C; c++)
                    d[at(TP_LAYOUT_NCHW, C, H, W, n, c, y, x)] =
                        k * (float)s[at(TP_LAYOUT_NHWC, C, H, W, n, c, y, x)];
    return TP_OK;
}

tp_status cpu_crop_flip(const tp_host *host, const tp_crop_flip_desc *d, const tp_tensor *src,
                        tp_tensor *dst)
{
    tp_status st;
    if (!d)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops crop_flip: descriptor is NULL");
    if ((st = check_4d(host, "crop_flip", "src", src, TP_DTYPE_F32)) ||
        (st = check_4d(host, "crop_flip", "dst", dst, TP_DTYPE_F32)) ||
        (st = check_same_shape(host, "crop_flip", src, dst)))
        return st;
    if (src->layout != dst->layout)
        return host->fail(host, TP_ERR_INVALID,
                          "cpu_image_ops crop_flip: src and dst layouts differ");
    if (d->pad < 0)
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops crop_flip: pad %d is negative",
                          d->pad);
    const int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    if (N > 0 && (!d->offset_y || !d->offset_x))
        return host->fail(host, TP_ERR_INVALID, "cpu_image_ops crop_flip: offsets are NULL");
    for (int64_t n = 0; n < N; n++)
        if (d->offset_y[n] < 0 || d->offset_y[n] > 2 * d->pad || d->offset_x[n] < 0 ||
            d->offset_x[n] > 2 * d->pad)
            return host->fail(host, TP_ERR_INVALID,
                              "cpu_image_ops crop_flip: sample %lld offset (%d, %d) is outside "
                              "[0, %d]",
                              (long long)n, (int)d->offset_y[n], (int)d->offset_x[n],
                              2 * d->pad);

    const tp_layout lay = src->layout;
    const size_t per_image = (size_t)(C * H * W);
    const float *s = (const float *)src->data;
    float *o = (float *)dst->data;
    /* In place (src aliases dst): each image is read from a private copy. */
    float *scratch = NULL;
    if (src->data == dst->data && per_image > 0) {
        scratch = (float *)host->alloc(per_image * sizeof(float));
        if (!scratch)
            return host->fail(host, TP_ERR_NOMEM,
                              "cpu_image_ops crop_flip: cannot allocate %zu bytes of scratch",
                              per_image * sizeof(float));
    }
    for (int64_t n = 0; n < N; n++) {
        /* Both layouts keep one image contiguous, so image n starts at n * per_image. */
        const float *img = s + (size_t)n * per_image;
        if (scratch) {
            memcpy(scratch, img, per_image * sizeof(float));
            img = scratch;
        }
        const int64_t oy = d->offset_y[n] - d->pad, ox = d->offset_x[n] - d->pad;
        const int flip = d->flip && d->flip[n];
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    /* Flip after cropping: output column x shows cropped column W-1-x. */
                    const int64_t cx = flip ? W - 1 - x : x;
                    const int64_t sy = y + oy, sx = cx + ox;
                    float v = d->fill;
                    if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                        v = img[at(lay, C, H, W, 0, c, sy, sx)];
                    o[at(lay, C, H, W, n, c, y, x)] = v;
                }
    }
    host->free(scratch);
    return TP_OK;
}

tp_status cpu_standardize_images(const tp_host *host, tp_tensor *x)
{
    tp_status st;
    if ((st = check_4d(host, "standardize_images", "x", x, TP_DTYPE_F32)))
        return st;
    const int64_t N = x->shape[0];
    const size_t per_image = (size_t)(x->shape[1] * x->shape[2] * x->shape[3]);
    if (per_image == 0)
        return TP_OK;
    /* Mean and variance are layout-independent: they cover the whole image. */
    const double min_std = 1.0 / sqrt((double)per_image);
    for (int64_t n = 0; n < N; n++) {
        float *img = (float *)x->data + (size_t)n * per_image;
        double sum = 0.0;
        for (size_t i = 0; i < per_image; i++)
            sum += img[i];
        const double mean = sum / (double)per_image;
        double sq = 0.0;
        for (size_t i = 0; i < per_image; i++) {
            const double dv = img[i] - mean;
            sq += dv * dv;
        }
        double stddev = sqrt(sq / (double)per_image); /* population, as TensorFlow */
        if (stddev < min_std)
            stddev = min_std;
        for (size_t i = 0; i < per_image; i++)
            img[i] = (float)((img[i] - mean) / stddev);
    }
    return TP_OK;
}

tp_status cpu_normalize_channels(const tp_host *host, tp_tensor *x, const float *mean,
                                 const float *std)
{
    tp_status st;
    if ((st = check_4d(host, "normalize_channels", "x", x, TP_DTYPE_F32)))
        return st;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (C > 0 && (!mean || !std))
        return host->fail(host, TP_ERR_INVALID,
                          "cpu_image_ops normalize_channels: mean or std is NULL");
    for (int64_t c = 0; c < C; c++)
        if (!(std[c] != 0.0f) || !isfinite(std[c]))
            return host->fail(host, TP_ERR_INVALID,
                              "cpu_image_ops normalize_channels: std[%lld] = %g is not a "
                              "non-zero finite number",
                              (long long)c, (double)std[c]);
    float *d = (float *)x->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float m = mean[c], sd = std[c];
            for (int64_t y = 0; y < H; y++)
                for (int64_t xx = 0; xx < W; xx++) {
                    float *p = &d[at(x->layout, C, H, W, n, c, y, xx)];
                    *p = (*p - m) / sd;
                }
        }
    return TP_OK;
}
