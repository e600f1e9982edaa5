/* backend-cuda: the batch image operations behind device-side augmenters.
 *
 * The per-sample random choices arrive as small host arrays; they are validated here and
 * travel to the GPU as kernel arguments (no host-to-device copy, no synchronisation). */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

#include <math.h>

static tp_status need_4d(cuda_backend *b, const char *op, const char *name, const tp_tensor *t)
{
    if (t->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s must be 4-D (N,C,H,W)", op,
                             name);
    return TP_OK;
}

tp_status cuda_convert_u8_batch(cuda_backend *b, const tp_tensor *src, double scale,
                                tp_tensor *dst)
{
    tp_status st;
    if ((st = cuda_need_dtype(b, "convert_u8_batch", "src", src, TP_DTYPE_U8)) ||
        (st = cuda_need_f32(b, "convert_u8_batch", "dst", dst)) ||
        (st = need_4d(b, "convert_u8_batch", "src", src)) ||
        (st = need_4d(b, "convert_u8_batch", "dst", dst)) ||
        (st = cuda_need_shape4(b, "convert_u8_batch", "dst", dst, src->shape[0], src->shape[1],
                               src->shape[2], src->shape[3])))
        return st;
    return CUDA_RT(ck_convert_u8(src->data, cuda_ck_shape(src), (float)scale, dst->data,
                                 cuda_ck_shape(dst), b->compute));
}

tp_status cuda_crop_flip(cuda_backend *b, const tp_crop_flip_desc *d, const tp_tensor *src,
                         tp_tensor *dst)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "crop_flip", "src", src)) ||
        (st = cuda_need_f32(b, "crop_flip", "dst", dst)) ||
        (st = need_4d(b, "crop_flip", "src", src)) || (st = need_4d(b, "crop_flip", "dst", dst)) ||
        (st = cuda_need_shape4(b, "crop_flip", "dst", dst, src->shape[0], src->shape[1],
                               src->shape[2], src->shape[3])))
        return st;
    if (!d || !d->offset_y || !d->offset_x || d->pad < 0)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "crop_flip: descriptor needs offset_y, offset_x and pad >= 0");
    for (int64_t i = 0; i < src->shape[0]; i++)
        if (d->offset_y[i] < 0 || d->offset_y[i] > 2 * d->pad || d->offset_x[i] < 0 ||
            d->offset_x[i] > 2 * d->pad)
            return b->host->fail(b->host, TP_ERR_INVALID,
                                 "crop_flip: sample %lld: offset (%d,%d) outside [0, %d]",
                                 (long long)i, (int)d->offset_y[i], (int)d->offset_x[i],
                                 2 * d->pad);
    const float *in = src->data;
    if (src->data == dst->data) {
        /* In place: the kernel gathers from other pixels, so read from a snapshot. */
        void *snap = NULL;
        if ((st = cuda_scratch(b, tp_tensor_bytes(src), &snap)) ||
            (st = CUDA_RT(cudaMemcpyAsync(snap, src->data, tp_tensor_bytes(src),
                                          cudaMemcpyDeviceToDevice, b->compute))))
            return st;
        in = snap;
    }
    return CUDA_RT(ck_crop_flip(in, cuda_ck_shape(src), dst->data, cuda_ck_shape(dst), d->pad,
                                d->fill, d->offset_y, d->offset_x, d->flip, b->compute));
}

tp_status cuda_standardize_images(cuda_backend *b, tp_tensor *x)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "standardize_images", "x", x)) ||
        (st = need_4d(b, "standardize_images", "x", x)))
        return st;
    if (x->shape[0] > INT32_MAX)
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED, "standardize_images: batch too large");
    return CUDA_RT(ck_standardize(x->data, cuda_ck_shape(x), b->compute));
}

tp_status cuda_normalize_channels(cuda_backend *b, tp_tensor *x, const float *mean,
                                  const float *std)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "normalize_channels", "x", x)) ||
        (st = need_4d(b, "normalize_channels", "x", x)))
        return st;
    if (!mean || !std)
        return b->host->fail(b->host, TP_ERR_INVALID, "normalize_channels: NULL mean or std");
    for (int64_t c = 0; c < x->shape[1]; c++)
        if (!(std[c] != 0.0f) || !isfinite(std[c]))
            return b->host->fail(b->host, TP_ERR_INVALID,
                                 "normalize_channels: std[%lld] = %g must be finite and "
                                 "non-zero",
                                 (long long)c, (double)std[c]);
    return CUDA_RT(ck_normalize_channels(x->data, cuda_ck_shape(x), mean, std, b->compute));
}
