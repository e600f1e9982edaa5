/* A small PNG encoder: signature, IHDR, one IDAT (zlib), IEND. Every row uses filter type 0
 * (None): the images trainpipe writes are small (TensorBoard samples, contact sheets), so
 * simplicity beats the few percent a filter search would save. */
#include "config.h"

#include "png.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

static const uint8_t png_signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes one chunk (length, type, data, CRC of type + data) at out; returns bytes written. */
static size_t put_chunk(uint8_t *out, const char type[4], const uint8_t *data, uint32_t len)
{
    put_be32(out, len);
    memcpy(out + 4, type, 4);
    if (len)
        memmove(out + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, out + 4, 4);
    /* zlib's crc32 takes a uInt length: feed large chunks in pieces. */
    for (uint32_t done = 0; done < len;) {
        uInt piece = (len - done) > (1u << 30) ? (1u << 30) : (uInt)(len - done);
        crc = crc32(crc, out + 8 + done, piece);
        done += piece;
    }
    put_be32(out + 8 + len, (uint32_t)crc);
    return 12u + len;
}

static int color_type_for(int channels)
{
    switch (channels) {
    case 1: return 0; /* grayscale */
    case 3: return 2; /* truecolour */
    case 4: return 6; /* truecolour with alpha */
    }
    return -1;
}

int png_encode(const uint8_t *pixels, int width, int height, int channels, uint8_t **out,
               size_t *out_len)
{
    if (!out || !out_len)
        return -1;
    *out = NULL;
    *out_len = 0;
    int color_type = color_type_for(channels);
    if (!pixels || width <= 0 || height <= 0 || color_type < 0)
        return -1;

    size_t row_bytes = (size_t)width * (size_t)channels;
    if (row_bytes > (SIZE_MAX - 1) / (size_t)height)
        return -1;
    size_t raw_len = (row_bytes + 1) * (size_t)height;
    /* One deflate call over the whole image keeps the code short; zlib's lengths are uInt. */
    if (raw_len > UINT_MAX / 2)
        return -1;

    uint8_t *raw = malloc(raw_len);
    if (!raw)
        return -1;
    for (int y = 0; y < height; y++) {
        uint8_t *row = raw + (size_t)y * (row_bytes + 1);
        row[0] = 0; /* filter: None */
        memcpy(row + 1, pixels + (size_t)y * row_bytes, row_bytes);
    }

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit(&zs, Z_DEFAULT_COMPRESSION) != Z_OK) {
        free(raw);
        return -1;
    }
    uLong bound = deflateBound(&zs, (uLong)raw_len);
    /* signature + IHDR (25) + IDAT framing (12) + IEND (12) */
    size_t total_cap = sizeof png_signature + 25 + 12 + (size_t)bound + 12;
    uint8_t *png = malloc(total_cap);
    if (!png || bound > UINT32_MAX) {
        deflateEnd(&zs);
        free(raw);
        free(png);
        return -1;
    }
    /* Compress straight into the IDAT data area (8 bytes after the IDAT chunk start). */
    size_t idat_at = sizeof png_signature + 25;
    zs.next_in = raw;
    zs.avail_in = (uInt)raw_len;
    zs.next_out = png + idat_at + 8;
    zs.avail_out = (uInt)bound;
    int zr = deflate(&zs, Z_FINISH);
    size_t idat_len = zs.total_out;
    deflateEnd(&zs);
    free(raw);
    if (zr != Z_STREAM_END) {
        free(png);
        return -1;
    }

    size_t at = 0;
    memcpy(png, png_signature, sizeof png_signature);
    at += sizeof png_signature;
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)width);
    put_be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;                    /* bit depth */
    ihdr[9] = (uint8_t)color_type;
    ihdr[10] = 0;                   /* compression: deflate */
    ihdr[11] = 0;                   /* filter method 0 */
    ihdr[12] = 0;                   /* no interlace */
    at += put_chunk(png + at, "IHDR", ihdr, sizeof ihdr);
    /* The IDAT data is already in place; put_chunk's memmove is then a no-op copy. */
    at += put_chunk(png + at, "IDAT", png + at + 8, (uint32_t)idat_len);
    at += put_chunk(png + at, "IEND", NULL, 0);

    *out = png;
    *out_len = at;
    return 0;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int png_write_file(const char *path, const uint8_t *pixels, int width, int height,
                   int channels, char *err, size_t errlen)
{
    static unsigned temp_counter;
    char tmp[4096];
    uint8_t *png = NULL;
    size_t len = 0;
    int fd = -1;
    int saved = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!path) {
        errno = EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "png: no output path");
        return -1;
    }
    if (png_encode(pixels, width, height, channels, &png, &len) != 0) {
        errno = EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot encode a %dx%dx%d PNG (bad size or no memory)",
                     path, width, height, channels);
        return -1;
    }
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                     __atomic_fetch_add(&temp_counter, 1, __ATOMIC_RELAXED));
    if (n < 0 || (size_t)n >= sizeof tmp) {
        free(png);
        errno = ENAMETOOLONG;
        if (err && errlen)
            snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        saved = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(saved));
        goto fail;
    }
    if (write_all(fd, png, len) != 0) {
        saved = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(saved));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        saved = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: close failed: %s", tmp, strerror(saved));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        saved = errno;
        if (err && errlen)
            snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(saved));
        goto fail;
    }
    free(png);
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(png);
    errno = saved;
    return -1;
}
