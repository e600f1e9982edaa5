/* A small PNG encoder (8-bit gray, RGB or RGBA, zlib-compressed), linked statically into the
 * plugins and the host that need it (TensorBoard images, contact sheets). */
#ifndef TRAINPIPE_COMMON_PNG_H
#define TRAINPIPE_COMMON_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Encodes height x width x channels (1, 3 or 4) uint8 pixels, rows top to bottom, into a
 * malloc'ed PNG in *out (*out_len bytes). Returns 0, or -1 on bad arguments / no memory. */
int png_encode(const uint8_t *pixels, int width, int height, int channels, uint8_t **out,
               size_t *out_len);

/* Encodes and writes to path (via a temporary file and rename). Returns 0, or -1 with
 * errno set / a message in err (errlen bytes). */
int png_write_file(const char *path, const uint8_t *pixels, int width, int height,
                   int channels, char *err, size_t errlen);

#endif
