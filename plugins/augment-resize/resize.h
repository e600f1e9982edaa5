/* augment-resize: host-side (per-sample, uint8 HWC) resizing augmenters.
 *
 *   random_resized_crop  Inception-style random crop of area and aspect ratio, resized to a
 *                        square (evaluation: resize + center crop)
 *   resize_center_crop   shorter side to `resize`, then a centered `crop` x `crop` square
 *
 * Both map every output pixel straight to the source (no intermediate image) and resample
 * bilinearly with half-pixel centers and no antialiasing, clamping at the crop's borders. */
#ifndef AUGMENT_RESIZE_H
#define AUGMENT_RESIZE_H

#include <trainpipe/trainpipe.h>

extern const tp_component random_resized_crop_component;
extern const tp_component resize_center_crop_component;

/* Where output coordinate d (0-based) samples the source along one axis:
 *     s = origin + (d + 0.5) * scale - 0.5,   clamped to [lo, hi]. */
typedef struct resize_axis {
    double origin, scale;
    int lo, hi;
} resize_axis;

/* The axis that resizes source span [start, start + len) to `out` pixels. */
resize_axis resize_axis_span(double start, double len, int out, int lo, int hi);

/* Bilinear resampling of `in` into out (out_h x out_w x in->channels, grown with
 * tp_image_reserve). Returns TP_OK or TP_ERR_NOMEM after host->fail. */
tp_status resize_bilinear(const tp_host *host, const tp_image *in, tp_image *out, int out_h,
                          int out_w, const resize_axis *ay, const resize_axis *ax);

/* A crop rectangle in source pixels. */
typedef struct resize_crop {
    int y, x, h, w;
} resize_crop;

/* random_resized_crop's choice for an H x W image, drawing from rng in this order per
 * attempt: u(scale), u(log ratio), then (only for a crop that fits) below(H - h + 1) and
 * below(W - w + 1). After `attempts` misses, the fallback is the centered crop of the whole
 * image with its aspect ratio clamped into [ratio_min, ratio_max] (torchvision's rule). */
resize_crop random_resized_crop_choose(int H, int W, double scale_min, double scale_max,
                                       double ratio_min, double ratio_max, int attempts,
                                       tp_rng *rng);

/* Resizes the shorter side of `in` to `shorter` and takes the centered out_h x out_w
 * window (offsets rounded as torchvision's center_crop does). */
tp_status resize_shorter_center_crop(const tp_host *host, const tp_image *in, tp_image *out,
                                     int shorter, int out_h, int out_w);

#endif
