/* JPEG decoding through TurboJPEG (see jpeg_decode.h). */
#include "jpeg_decode.h"

#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* Refuse images whose decoded size would exceed this many pixels (a 16k x 16k image): a
 * corrupt header must not make us allocate gigabytes. */
#define JPEG_MAX_PIXELS (16384LL * 16384LL)

struct jpeg_decoder {
    tjhandle tj;
    uint8_t *scratch; /* CMYK pixels before conversion */
    size_t scratch_cap;
};

jpeg_decoder *jpeg_decoder_new(void)
{
    jpeg_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->tj = tjInitDecompress();
    if (!d->tj) {
        free(d);
        return NULL;
    }
    return d;
}

void jpeg_decoder_free(jpeg_decoder *d)
{
    if (!d)
        return;
    tjDestroy(d->tj);
    free(d->scratch);
    free(d);
}

void jpeg_choose_scale(int width, int height, int target_height, int target_width, int *num,
                       int *denom)
{
    *num = 1;
    *denom = 1;
    if (target_height <= 0 || target_width <= 0)
        return;
    for (int den = 8; den >= 2; den /= 2) {
        /* TurboJPEG's scaled size rounds up (TJSCALED). */
        int h = (height + den - 1) / den, w = (width + den - 1) / den;
        if (h >= target_height && w >= target_width) {
            *denom = den;
            return;
        }
    }
}

const char *jpeg_sniff(const uint8_t *buf, size_t len)
{
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        return "JPEG";
    if (len >= 4 && buf[0] == 0x89 && buf[1] == 'P' && buf[2] == 'N' && buf[3] == 'G')
        return "PNG";
    if (len >= 4 && memcmp(buf, "GIF8", 4) == 0)
        return "GIF";
    if (len >= 2 && buf[0] == 'B' && buf[1] == 'M')
        return "BMP";
    if (len >= 12 && memcmp(buf, "RIFF", 4) == 0 && memcmp(buf + 8, "WEBP", 4) == 0)
        return "WebP";
    return NULL;
}

/* What the marker segments before the first scan say. Photoshop writes CMYK JPEGs with an
 * Adobe APP14 marker and the ink values inverted; without the marker CMYK is stored plainly.
 * A JPEG whose frame header (SOFn) or scan header is missing or cut is refused before
 * TurboJPEG sees it (its header reader leaves the size unset for such input). */
typedef struct jpeg_markers {
    int adobe, has_frame, has_scan;
} jpeg_markers;

static jpeg_markers scan_markers(const uint8_t *buf, size_t len)
{
    jpeg_markers mk = {0, 0, 0};
    size_t p = 2;
    while (p + 4 <= len) {
        if (buf[p] != 0xFF)
            return mk;
        uint8_t m = buf[p + 1];
        if (m == 0xFF) { /* fill byte */
            p++;
            continue;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length field */
            p += 2;
            continue;
        }
        if (m == 0xD9)
            return mk;
        size_t seg = (size_t)buf[p + 2] << 8 | buf[p + 3];
        if (seg < 2 || seg > len - p - 2)
            return mk;
        if (m == 0xDA) {
            mk.has_scan = 1;
            return mk;
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && seg >= 8)
            mk.has_frame = 1;
        if (m == 0xEE && seg >= 7 && memcmp(buf + p + 4, "Adobe", 5) == 0)
            mk.adobe = 1;
        p += 2 + seg;
    }
    return mk;
}

tp_status jpeg_decode(jpeg_decoder *d, const tp_host *host, const uint8_t *buf, size_t len,
                      int channels, int target_height, int target_width, tp_image *out,
                      const char *where)
{
    int width, height, subsamp, colorspace, num, denom;
    const char *kind = jpeg_sniff(buf, len);
    if (!kind || strcmp(kind, "JPEG") != 0) {
        if (kind)
            return host->fail(host, TP_ERR_FORMAT, "%s: image is a %s, not a JPEG", where, kind);
        return host->fail(host, TP_ERR_FORMAT,
                          "%s: image is not a JPEG (%zu bytes starting %02x %02x %02x %02x)",
                          where, len, len > 0 ? buf[0] : 0, len > 1 ? buf[1] : 0,
                          len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
    }
    if (len > (size_t)0xffffffffUL)
        return host->fail(host, TP_ERR_FORMAT, "%s: JPEG of %zu bytes is too large", where, len);
    jpeg_markers mk = scan_markers(buf, len);
    if (!mk.has_frame || !mk.has_scan)
        return host->fail(host, TP_ERR_FORMAT, "%s: JPEG header is cut short or has no %s",
                          where, mk.has_frame ? "scan" : "frame header");
    width = height = subsamp = colorspace = 0;
    if (tjDecompressHeader3(d->tj, buf, (unsigned long)len, &width, &height, &subsamp,
                            &colorspace) != 0)
        return host->fail(host, TP_ERR_FORMAT, "%s: bad JPEG header: %s", where,
                          tjGetErrorStr2(d->tj));
    if (width <= 0 || height <= 0)
        return host->fail(host, TP_ERR_FORMAT, "%s: JPEG has no pixels (%dx%d)", where, width,
                          height);
    jpeg_choose_scale(width, height, target_height, target_width, &num, &denom);
    tjscalingfactor sf = {num, denom};
    int w = TJSCALED(width, sf), h = TJSCALED(height, sf);
    if ((long long)w * h > JPEG_MAX_PIXELS)
        return host->fail(host, TP_ERR_FORMAT, "%s: JPEG of %dx%d pixels is too large", where,
                          width, height);

    tp_status st = tp_image_reserve(host, out, h, w, channels);
    if (st)
        return st;
    int cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
    uint8_t *dst = out->data;
    int pf = channels == 1 ? TJPF_GRAY : TJPF_RGB;
    if (cmyk) {
        /* TurboJPEG decodes CMYK/YCCK only to CMYK: convert to RGB ourselves. */
        size_t need = (size_t)w * (size_t)h * 4;
        if (need > d->scratch_cap) {
            uint8_t *p = realloc(d->scratch, need);
            if (!p)
                return host->fail(host, TP_ERR_NOMEM, "%s: cannot allocate %zu bytes", where,
                                  need);
            d->scratch = p;
            d->scratch_cap = need;
        }
        dst = d->scratch;
        pf = TJPF_CMYK;
    }
    if (tjDecompress2(d->tj, buf, (unsigned long)len, dst, w, 0, h, pf, 0) != 0 &&
        tjGetErrorCode(d->tj) != TJERR_WARNING)
        return host->fail(host, TP_ERR_FORMAT, "%s: cannot decode JPEG (%dx%d): %s", where,
                          width, height, tjGetErrorStr2(d->tj));
    if (cmyk) {
        int inverted = mk.adobe;
        size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *s = d->scratch + 4 * i;
            unsigned c = s[0], m = s[1], y = s[2], k = s[3];
            if (!inverted) {
                c = 255 - c;
                m = 255 - m;
                y = 255 - y;
                k = 255 - k;
            }
            /* Now c, m, y, k are "255 minus ink": R = (1 - C)(1 - K). */
            unsigned r = (c * k + 127) / 255, g = (m * k + 127) / 255, b = (y * k + 127) / 255;
            if (channels == 1) {
                out->data[i] = (uint8_t)((299 * r + 587 * g + 114 * b + 500) / 1000);
            } else {
                out->data[3 * i] = (uint8_t)r;
                out->data[3 * i + 1] = (uint8_t)g;
                out->data[3 * i + 2] = (uint8_t)b;
            }
        }
    }
    return TP_OK;
}
