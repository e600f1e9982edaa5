/* Bilinear resampling shared by the augment-resize components (see resize.h). */
#include "resize.h"

#include <math.h>
#include <stdlib.h>

/* Weights in 11-bit fixed point: products of two weights and a pixel fit in 32 bits. */
#define W_BITS 11
#define W_ONE (1 << W_BITS)

resize_axis resize_axis_span(double start, double len, int out, int lo, int hi)
{
    resize_axis a = {start, len / out, lo, hi};
    return a;
}

/* Horizontal results keep H_BITS fractional bits: 255 << 7 fits 16 bits. */
#define H_BITS 7

/* One source row resampled to out_w pixels (x0/x1 are byte offsets) into 16-bit values with
 * H_BITS fractional bits. */
static void horizontal_pass(const uint8_t *src, int ch, int out_w, const int *x0, const int *x1,
                            const int *wx, uint16_t *dst)
{
    const int shift = W_BITS - H_BITS;
    if (ch == 3) {
        for (int x = 0; x < out_w; x++) {
            const uint8_t *p = src + x0[x], *q = src + x1[x];
            const int w = wx[x], v = W_ONE - w;
            dst[0] = (uint16_t)((p[0] * v + q[0] * w + (1 << (shift - 1))) >> shift);
            dst[1] = (uint16_t)((p[1] * v + q[1] * w + (1 << (shift - 1))) >> shift);
            dst[2] = (uint16_t)((p[2] * v + q[2] * w + (1 << (shift - 1))) >> shift);
            dst += 3;
        }
        return;
    }
    for (int x = 0; x < out_w; x++) {
        const uint8_t *p = src + x0[x], *q = src + x1[x];
        const int w = wx[x], v = W_ONE - w;
        for (int c = 0; c < ch; c++)
            dst[c] = (uint16_t)((p[c] * v + q[c] * w + (1 << (shift - 1))) >> shift);
        dst += ch;
    }
}

/* Integer taps for one axis: index i0, i1 = i0 or i0 + 1, and the weight of i1. */
static void axis_taps(const resize_axis *a, int n, int *i0, int *i1, int *w1)
{
    for (int d = 0; d < n; d++) {
        double s = a->origin + (d + 0.5) * a->scale - 0.5;
        if (s < a->lo)
            s = a->lo;
        if (s > a->hi)
            s = a->hi;
        int f = (int)floor(s);
        int w = (int)lrint((s - f) * W_ONE);
        if (w >= W_ONE) { /* rounding reached the next pixel */
            f++;
            w = 0;
        }
        i0[d] = f;
        i1[d] = f + 1 <= a->hi ? f + 1 : f;
        w1[d] = w;
    }
}

tp_status resize_bilinear(const tp_host *host, const tp_image *in, tp_image *out, int out_h,
                          int out_w, const resize_axis *ay, const resize_axis *ax)
{
    const int ch = in->channels;
    if (ay->lo < 0 || ay->hi >= in->height || ax->lo < 0 || ax->hi >= in->width ||
        ay->lo > ay->hi || ax->lo > ax->hi)
        return host->fail(host, TP_ERR_INVALID,
                          "resize: window [%d, %d] x [%d, %d] outside a %dx%d image", ay->lo,
                          ay->hi, ax->lo, ax->hi, in->height, in->width);
    tp_status st = tp_image_reserve(host, out, out_h, out_w, ch);
    if (st)
        return st;
    int *taps = malloc(sizeof(int) * 3 * (size_t)(out_h + out_w));
    if (!taps)
        return host->fail(host, TP_ERR_NOMEM, "resize: out of memory");
    int *y0 = taps, *y1 = y0 + out_h, *wy = y1 + out_h;
    int *x0 = wy + out_h, *x1 = x0 + out_w, *wx = x1 + out_w;
    axis_taps(ay, out_h, y0, y1, wy);
    axis_taps(ax, out_w, x0, x1, wx);
    for (int x = 0; x < out_w; x++) { /* columns to byte offsets */
        x0[x] *= ch;
        x1[x] *= ch;
    }
    const size_t stride = (size_t)in->width * (size_t)ch;
    /* Two passes per output row: each of its two source rows resampled horizontally into
     * 16-bit rows (reused when the next output row needs the same source row), then a
     * vertical blend. Source rows are cached by index in two slots; -1 marks an empty slot,
     * which no tap matches (taps lie in [lo, hi] and lo >= 0 was checked above), so a cache
     * hit always reads a row horizontal_pass has filled. */
    const size_t row_len = (size_t)out_w * (size_t)ch;
    uint16_t *rows = malloc(2 * row_len * sizeof *rows);
    if (!rows) {
        free(taps);
        return host->fail(host, TP_ERR_NOMEM, "resize: out of memory");
    }
    int cached[2] = {-1, -1};
    for (int y = 0; y < out_h; y++) {
        const int want[2] = {y0[y], y1[y]};
        int used[2] = {-1, -1};
        for (int k = 0; k < 2; k++) {
            int slot = cached[0] == want[k] ? 0 : cached[1] == want[k] ? 1 : -1;
            if (slot < 0) {
                /* Evict a slot holding neither wanted row nor the row tap 0 just took. */
                slot = k == 1 ? 1 - used[0] : (cached[0] == want[1] ? 1 : 0);
                horizontal_pass(in->data + (size_t)want[k] * stride, ch, out_w, x0, x1, wx,
                                rows + (size_t)slot * row_len);
                cached[slot] = want[k];
            }
            used[k] = slot;
        }
        const uint16_t *h0 = rows + (size_t)used[0] * row_len;
        const uint16_t *h1 = rows + (size_t)used[1] * row_len;
        const unsigned b = (unsigned)wy[y], a = W_ONE - b;
        uint8_t *o = out->data + (size_t)y * row_len;
        for (size_t i = 0; i < row_len; i++)
            o[i] = (uint8_t)((h0[i] * a + h1[i] * b + (1u << (W_BITS + H_BITS - 1))) >>
                             (W_BITS + H_BITS));
    }
    free(rows);
    free(taps);
    return TP_OK;
}

resize_crop random_resized_crop_choose(int H, int W, double scale_min, double scale_max,
                                       double ratio_min, double ratio_max, int attempts,
                                       tp_rng *rng)
{
    const double area = (double)H * W, log_lo = log(ratio_min), log_hi = log(ratio_max);
    resize_crop c;
    for (int i = 0; i < attempts; i++) {
        double target = area * (scale_min + (scale_max - scale_min) * tp_rng_uniform(rng));
        double aspect = exp(log_lo + (log_hi - log_lo) * tp_rng_uniform(rng));
        int w = (int)lrint(sqrt(target * aspect)), h = (int)lrint(sqrt(target / aspect));
        if (w > 0 && h > 0 && w <= W && h <= H) {
            c.h = h;
            c.w = w;
            c.y = (int)tp_rng_below(rng, (uint64_t)(H - h + 1));
            c.x = (int)tp_rng_below(rng, (uint64_t)(W - w + 1));
            return c;
        }
    }
    double in_ratio = (double)W / H;
    if (in_ratio < ratio_min) {
        c.w = W;
        c.h = (int)lrint(W / ratio_min);
    } else if (in_ratio > ratio_max) {
        c.h = H;
        c.w = (int)lrint(H * ratio_max);
    } else {
        c.w = W;
        c.h = H;
    }
    if (c.h < 1)
        c.h = 1;
    if (c.w < 1)
        c.w = 1;
    if (c.h > H)
        c.h = H;
    if (c.w > W)
        c.w = W;
    c.y = (H - c.h) / 2;
    c.x = (W - c.w) / 2;
    return c;
}

tp_status resize_shorter_center_crop(const tp_host *host, const tp_image *in, tp_image *out,
                                     int shorter, int out_h, int out_w)
{
    const int H = in->height, W = in->width;
    /* The resized frame: shorter side = `shorter`, the other scaled and rounded. */
    int rh, rw;
    if (H <= W) {
        rh = shorter;
        rw = (int)lrint((double)W * shorter / H);
    } else {
        rw = shorter;
        rh = (int)lrint((double)H * shorter / W);
    }
    if (rh < 1)
        rh = 1;
    if (rw < 1)
        rw = 1;
    /* torchvision's center_crop: top = round((rh - out_h) / 2); may be negative when the
     * crop is larger than the frame, which clamping at the borders then pads by edge pixels. */
    int top = (int)lrint((rh - out_h) / 2.0), left = (int)lrint((rw - out_w) / 2.0);
    resize_axis ay = {top * ((double)H / rh), (double)H / rh, 0, H - 1};
    resize_axis ax = {left * ((double)W / rw), (double)W / rw, 0, W - 1};
    return resize_bilinear(host, in, out, out_h, out_w, &ay, &ax);
}
