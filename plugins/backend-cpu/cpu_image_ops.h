/* backend-cpu: the batch image operations behind the device-side augmenters (plain C,
 * f32 tensors in host memory). Wired into tp_backend_ops by the backend. */
#ifndef TRAINPIPE_CPU_IMAGE_OPS_H
#define TRAINPIPE_CPU_IMAGE_OPS_H

#include <trainpipe/trainpipe.h>

/* dst (f32, N,C,H,W in dst->layout) = scale * src (u8, NHWC). */
tp_status cpu_convert_u8_batch(const tp_host *host, const tp_tensor *src, double scale,
                               tp_tensor *dst);
/* Per-sample pad + crop + optional horizontal flip; dst has src's shape and layout. */
tp_status cpu_crop_flip(const tp_host *host, const tp_crop_flip_desc *d, const tp_tensor *src,
                        tp_tensor *dst);
/* In place: per image (x - mean) / max(stddev, 1/sqrt(C*H*W)). */
tp_status cpu_standardize_images(const tp_host *host, tp_tensor *x);
/* In place: per channel (x - mean[c]) / std[c]. */
tp_status cpu_normalize_channels(const tp_host *host, tp_tensor *x, const float *mean,
                                 const float *std);

#endif
