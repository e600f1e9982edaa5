/* Test fixtures built in memory (see tfrecord_fixtures.h). */
#include "tfrecord_fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zlib.h>

#include "crc32c.h"

static void fx_oom(void)
{
    fprintf(stderr, "tfrecord fixtures: out of memory\n");
    abort();
}

void fx_free(fx_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void fx_put(fx_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            fx_oom();
        b->data = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void fx_varint(fx_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    fx_put(b, tmp, n);
}

void fx_bytes_field(fx_buf *b, uint32_t number, const void *p, size_t n)
{
    fx_varint(b, (uint64_t)number << 3 | 2);
    fx_varint(b, n);
    fx_put(b, p, n);
}

static void fx_entry(fx_buf *features, const char *key, const fx_buf *feature)
{
    fx_buf entry = {0};
    fx_bytes_field(&entry, 1, key, strlen(key));
    fx_bytes_field(&entry, 2, feature->data, feature->len);
    fx_bytes_field(features, 1, entry.data, entry.len);
    fx_free(&entry);
}

void fx_feature_bytes(fx_buf *features, const char *key, const void *p, size_t n)
{
    fx_buf list = {0}, feature = {0};
    fx_bytes_field(&list, 1, p, n);
    fx_bytes_field(&feature, 1, list.data, list.len);
    fx_entry(features, key, &feature);
    fx_free(&list);
    fx_free(&feature);
}

void fx_feature_int64(fx_buf *features, const char *key, const int64_t *v, size_t n,
                      int packed)
{
    fx_buf list = {0}, run = {0}, feature = {0};
    for (size_t i = 0; i < n; i++) {
        if (packed) {
            fx_varint(&run, (uint64_t)v[i]);
        } else {
            fx_varint(&list, 1 << 3 | 0);
            fx_varint(&list, (uint64_t)v[i]);
        }
    }
    if (packed)
        fx_bytes_field(&list, 1, run.data, run.len);
    fx_bytes_field(&feature, 3, list.data, list.len);
    fx_entry(features, key, &feature);
    fx_free(&list);
    fx_free(&run);
    fx_free(&feature);
}

void fx_feature_float(fx_buf *features, const char *key, const float *v, size_t n, int packed)
{
    fx_buf list = {0}, run = {0}, feature = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        uint8_t le[4];
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++)
            le[k] = (uint8_t)(u >> (8 * k));
        if (packed) {
            fx_put(&run, le, 4);
        } else {
            fx_varint(&list, 1 << 3 | 5);
            fx_put(&list, le, 4);
        }
    }
    if (packed)
        fx_bytes_field(&list, 1, run.data, run.len);
    fx_bytes_field(&feature, 2, list.data, list.len);
    fx_entry(features, key, &feature);
    fx_free(&list);
    fx_free(&run);
    fx_free(&feature);
}

void fx_example(fx_buf *out, const fx_buf *features)
{
    fx_bytes_field(out, 1, features->data, features->len);
}

void fx_imagenet_example(fx_buf *out, const uint8_t *jpeg, size_t jpeg_len, int height,
                         int width, int64_t label)
{
    fx_buf f = {0};
    int64_t h = height, w = width, c = 3;
    fx_feature_int64(&f, "image/height", &h, 1, 1);
    fx_feature_int64(&f, "image/width", &w, 1, 1);
    fx_feature_bytes(&f, "image/colorspace", "RGB", 3);
    fx_feature_int64(&f, "image/channels", &c, 1, 1);
    fx_feature_int64(&f, "image/class/label", &label, 1, 1);
    fx_feature_bytes(&f, "image/class/synset", "n01440764", 9);
    fx_feature_bytes(&f, "image/class/text", "tench, Tinca tinca", 18);
    fx_feature_bytes(&f, "image/format", "JPEG", 4);
    fx_feature_bytes(&f, "image/filename", "n01440764_10026.JPEG", 20);
    fx_feature_bytes(&f, "image/encoded", jpeg, jpeg_len);
    fx_example(out, &f);
    fx_free(&f);
}

void fx_frame(fx_buf *out, const void *data, size_t len)
{
    uint8_t head[12], tail[4];
    uint64_t n = len;
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)(n >> (8 * i));
    uint32_t lc = crc32c_mask(crc32c(head, 8)), dc = crc32c_mask(crc32c(data, len));
    for (int i = 0; i < 4; i++) {
        head[8 + i] = (uint8_t)(lc >> (8 * i));
        tail[i] = (uint8_t)(dc >> (8 * i));
    }
    fx_put(out, head, 12);
    fx_put(out, data, len);
    fx_put(out, tail, 4);
}

void fx_pattern(int y, int x, int h, int w, int noise, uint8_t rgb[3])
{
    int r = 255 * x / (w > 1 ? w - 1 : 1);
    int g = 255 * y / (h > 1 ? h - 1 : 1);
    int b = 128 + (r - g) / 4;
    if (noise) {
        uint32_t z = (uint32_t)(y * 73856093) ^ (uint32_t)(x * 19349663);
        z ^= z >> 13;
        z *= 0x5bd1e995u;
        z ^= z >> 15;
        int d = (int)(z % (uint32_t)(2 * noise + 1)) - noise;
        r += d;
        g -= d;
        b += d / 2;
    }
    rgb[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    rgb[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
    rgb[2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
}

uint8_t *fx_jpeg(int h, int w, int kind, int quality, int noise, size_t *len)
{
    int ch = kind == FX_GRAY ? 1 : kind == FX_CMYK ? 4 : 3;
    uint8_t *px = malloc((size_t)h * (size_t)w * (size_t)ch);
    if (!px)
        fx_oom();
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t rgb[3], *p = px + ((size_t)y * (size_t)w + (size_t)x) * (size_t)ch;
            fx_pattern(y, x, h, w, noise, rgb);
            if (kind == FX_GRAY) {
                p[0] = rgb[1];
            } else if (kind == FX_CMYK) {
                /* Inks C = 255 - R, ..., K = 0, stored inverted as Adobe does. */
                p[0] = rgb[0];
                p[1] = rgb[1];
                p[2] = rgb[2];
                p[3] = 255;
            } else {
                memcpy(p, rgb, 3);
            }
        }
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long jlen = 0;
    int pf = kind == FX_GRAY ? TJPF_GRAY : kind == FX_CMYK ? TJPF_CMYK : TJPF_RGB;
    int ss = kind == FX_GRAY ? TJSAMP_GRAY : TJSAMP_420;
    if (!tj || tjCompress2(tj, px, w, 0, h, pf, &jpeg, &jlen, ss, quality, 0) != 0) {
        fprintf(stderr, "tfrecord fixtures: tjCompress2: %s\n", tjGetErrorStr2(tj));
        abort();
    }
    tjDestroy(tj);
    free(px);
    uint8_t *copy = malloc(jlen);
    if (!copy)
        fx_oom();
    memcpy(copy, jpeg, jlen);
    tjFree(jpeg);
    *len = jlen;
    return copy;
}

void fx_compress(fx_buf *out, const uint8_t *in, size_t len, int gzip)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, gzip ? 15 + 16 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        fx_oom();
    uint8_t chunk[65536];
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    int zr;
    do {
        zs.next_out = chunk;
        zs.avail_out = sizeof chunk;
        zr = deflate(&zs, Z_FINISH);
        fx_put(out, chunk, sizeof chunk - zs.avail_out);
    } while (zr == Z_OK);
    deflateEnd(&zs);
}

int fx_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int bad = fwrite(p, 1, n, f) != n;
    bad |= fclose(f) != 0;
    return bad ? -1 : 0;
}
