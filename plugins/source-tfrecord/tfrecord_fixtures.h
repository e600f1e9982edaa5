/* Test and benchmark helpers: builds tf.train.Example records, TFRecord framing, JPEGs and
 * compressed streams in memory, so fixtures are generated at test time. Not part of the
 * plugin. Allocation failures abort the test program (these run only in tests). */
#ifndef TRAINPIPE_TFRECORD_FIXTURES_H
#define TRAINPIPE_TFRECORD_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

typedef struct fx_buf {
    uint8_t *data;
    size_t len, cap;
} fx_buf;

void fx_free(fx_buf *b);
void fx_put(fx_buf *b, const void *p, size_t n);
void fx_varint(fx_buf *b, uint64_t v);
/* A field tag followed by a length-delimited payload. */
void fx_bytes_field(fx_buf *b, uint32_t number, const void *p, size_t n);

/* Appends one map entry of Features (key -> Feature) to `features`. */
void fx_feature_bytes(fx_buf *features, const char *key, const void *p, size_t n);
/* Int64List, packed (one length-delimited run) or unpacked (one varint field per value). */
void fx_feature_int64(fx_buf *features, const char *key, const int64_t *v, size_t n,
                      int packed);
void fx_feature_float(fx_buf *features, const char *key, const float *v, size_t n, int packed);
/* Wraps the accumulated map entries into Example { Features { ... } } in `out`. */
void fx_example(fx_buf *out, const fx_buf *features);

/* An ImageNet-style Example (image/encoded, image/class/label, and the other keys of
 * TensorFlow's conversion script) for one image. */
void fx_imagenet_example(fx_buf *out, const uint8_t *jpeg, size_t jpeg_len, int height,
                         int width, int64_t label);

/* Appends a framed record (length, masked length CRC, data, masked data CRC). */
void fx_frame(fx_buf *out, const void *data, size_t len);

/* Kinds of test JPEG. */
enum { FX_RGB = 0, FX_GRAY = 1, FX_CMYK = 2 };
/* The pixel (r, g, b) of the test pattern at (y, x) of an h x w image: smooth gradients with
 * deterministic noise of amplitude `noise` (0 for none). */
void fx_pattern(int y, int x, int h, int w, int noise, uint8_t rgb[3]);
/* Encodes the test pattern as a JPEG (quality 1..100). FX_CMYK writes an Adobe-style
 * inverted CMYK JPEG whose RGB equivalent is the pattern. Returns a malloc'ed buffer. */
uint8_t *fx_jpeg(int h, int w, int kind, int quality, int noise, size_t *len);

/* Compresses `in` as a GZIP (gzip = 1) or ZLIB (gzip = 0) stream. */
void fx_compress(fx_buf *out, const uint8_t *in, size_t len, int gzip);

/* Writes a whole file; returns 0 or -1. */
int fx_write_file(const char *path, const void *p, size_t n);

#endif
