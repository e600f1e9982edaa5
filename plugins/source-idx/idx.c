/* IDX parsing and loading (see idx.h). */
#include "idx.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static int idx_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int idx_error(char *err, size_t err_size, const char *fmt, ...)
{
    if (err && err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t idx_type_size(int type)
{
    switch (type) {
    case IDX_U8:
    case IDX_I8: return 1;
    case IDX_I16: return 2;
    case IDX_I32:
    case IDX_F32: return 4;
    case IDX_F64: return 8;
    }
    return 0;
}

int idx_parse(const uint8_t *buf, size_t len, idx_array *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof(*out));
    if (len < 4)
        return idx_error(err, err_size, "byte %zu: truncated IDX header (file is %zu bytes, "
                         "the magic needs 4)", len, len);
    out->magic = be32(buf);
    if (buf[0] != 0 || buf[1] != 0)
        return idx_error(err, err_size, "byte 0: bad IDX magic 0x%08x (must start 00 00)",
                         (unsigned)out->magic);
    out->type = buf[2];
    out->elem_size = idx_type_size(out->type);
    if (!out->elem_size)
        return idx_error(err, err_size, "byte 2: unknown IDX element type 0x%02x", out->type);
    out->ndims = buf[3];
    if (out->ndims < 1 || out->ndims > IDX_MAX_DIMS)
        return idx_error(err, err_size, "byte 3: IDX dimension count %d not in 1..%d",
                         out->ndims, IDX_MAX_DIMS);
    out->header_bytes = 4 + 4 * (size_t)out->ndims;
    if (len < out->header_bytes)
        return idx_error(err, err_size, "byte %zu: truncated IDX header (%d sizes need %zu "
                         "bytes, file is %zu)", len, out->ndims, out->header_bytes, len);
    /* Sizes are at most 2^32 - 1 each; the product is compared with what the file holds
     * as it grows, so it never overflows. */
    size_t avail = (len - out->header_bytes) / out->elem_size;
    int has_zero = 0, too_big = 0;
    for (int d = 0; d < out->ndims; d++) {
        out->dims[d] = be32(buf + 4 + 4 * (size_t)d);
        has_zero |= out->dims[d] == 0;
    }
    size_t count = has_zero ? 0 : 1;
    for (int d = 0; d < out->ndims && !has_zero; d++) {
        if (count > avail / out->dims[d]) {
            too_big = 1;
            break;
        }
        count *= out->dims[d];
    }
    if (too_big) {
        /* Describe the shortfall in bytes when it fits in 64 bits. */
        unsigned long long need = out->elem_size;
        int overflow = 0;
        for (int d = 0; d < out->ndims; d++) {
            if (out->dims[d] && need > ULLONG_MAX / out->dims[d])
                overflow = 1;
            else
                need *= out->dims[d];
        }
        if (overflow)
            return idx_error(err, err_size, "byte 4: IDX sizes overflow (the data would "
                             "exceed 2^64 bytes)");
        return idx_error(err, err_size, "byte %zu: truncated IDX data (the header promises "
                         "%llu data bytes after byte %zu, the file has %zu)", len, need,
                         out->header_bytes, len - out->header_bytes);
    }
    size_t data_bytes = count * out->elem_size;
    if (len - out->header_bytes != data_bytes)
        return idx_error(err, err_size, "byte %zu: %zu unexpected bytes after the IDX data "
                         "(the header promises %zu)", out->header_bytes + data_bytes,
                         len - out->header_bytes - data_bytes, data_bytes);
    out->count = count;
    out->data = buf + out->header_bytes;
    return 0;
}

int idx_is_gzip(const uint8_t *buf, size_t len)
{
    return len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b;
}

int idx_gunzip(const uint8_t *buf, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
               char *err, size_t err_size)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    *out = NULL;
    *out_len = 0;
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return idx_error(err, err_size, "byte 0: inflateInit2 failed");

    /* The gzip trailer's ISIZE (size mod 2^32) is a good first guess of the output size. */
    size_t cap = 1 << 16;
    if (len >= 18) {
        size_t isize = (size_t)buf[len - 4] | (size_t)buf[len - 3] << 8 |
                       (size_t)buf[len - 2] << 16 | (size_t)buf[len - 1] << 24;
        if (isize > cap && isize <= max_out)
            cap = isize;
    }
    if (cap > max_out)
        cap = max_out ? max_out : 1;
    uint8_t *dst = malloc(cap);
    size_t used = 0;
    int rc = -1;
    if (!dst) {
        idx_error(err, err_size, "byte 0: cannot allocate %zu bytes to inflate into", cap);
        goto done;
    }
    size_t pos = 0; /* input consumed by finished members */
    zs.next_in = (Bytef *)buf;
    zs.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
    for (;;) {
        if (used == cap) {
            if (cap >= max_out) {
                idx_error(err, err_size, "byte %zu: gzip data inflates to more than %zu "
                          "bytes", pos + (size_t)zs.total_in, max_out);
                goto done;
            }
            size_t ncap = cap > max_out / 2 ? max_out : cap * 2;
            uint8_t *n = realloc(dst, ncap);
            if (!n) {
                idx_error(err, err_size, "byte %zu: cannot allocate %zu bytes to inflate into",
                          pos + (size_t)zs.total_in, ncap);
                goto done;
            }
            dst = n;
            cap = ncap;
        }
        size_t room = cap - used;
        zs.next_out = dst + used;
        zs.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        uInt before = zs.avail_out;
        int z = inflate(&zs, Z_NO_FLUSH);
        used += before - zs.avail_out;
        if (z == Z_STREAM_END) {
            pos += zs.total_in;
            if (pos == len)
                break;
            /* Another member may follow; anything else is trailing garbage. */
            if (!idx_is_gzip(buf + pos, len - pos)) {
                idx_error(err, err_size, "byte %zu: unexpected bytes after the gzip stream",
                          pos);
                goto done;
            }
            if (inflateReset(&zs) != Z_OK) {
                idx_error(err, err_size, "byte %zu: inflateReset failed", pos);
                goto done;
            }
            zs.next_in = (Bytef *)buf + pos;
            zs.avail_in = len - pos > UINT32_MAX ? UINT32_MAX : (uInt)(len - pos);
            continue;
        }
        if (z == Z_OK)
            continue;
        if (z == Z_BUF_ERROR && zs.avail_out == 0)
            continue; /* the buffer grows on the next turn */
        if (z == Z_BUF_ERROR) {
            idx_error(err, err_size, "byte %zu: truncated gzip stream (the file ends inside "
                      "the compressed data)", len);
            goto done;
        }
        idx_error(err, err_size, "byte %zu: corrupt gzip data (%s)",
                  pos + (size_t)zs.total_in, zs.msg ? zs.msg : "inflate failed");
        goto done;
    }
    *out = dst;
    *out_len = used;
    dst = NULL;
    rc = 0;
done:
    inflateEnd(&zs);
    free(dst);
    return rc;
}

int idx_load_file(const char *path, size_t max_out, uint8_t **out, size_t *out_len,
                  int *gzipped, char *err, size_t err_size)
{
    char msg[256];
    uint8_t *raw = NULL;
    int rc = -1;
    *out = NULL;
    *out_len = 0;
    *gzipped = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return idx_error(err, err_size, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        idx_error(err, err_size, "%s: not a regular file", path);
        goto done;
    }
    if ((unsigned long long)sb.st_size > max_out) {
        idx_error(err, err_size, "%s: %lld bytes is more than the %zu allowed", path,
                  (long long)sb.st_size, max_out);
        goto done;
    }
    size_t size = (size_t)sb.st_size;
    raw = malloc(size ? size : 1);
    if (!raw) {
        idx_error(err, err_size, "%s: cannot allocate %zu bytes", path, size);
        goto done;
    }
    if (fread(raw, 1, size, f) != size) {
        idx_error(err, err_size, "%s: read failed: %s", path,
                  ferror(f) ? strerror(errno) : "file shrank");
        goto done;
    }
    if (idx_is_gzip(raw, size)) {
        *gzipped = 1;
        if (idx_gunzip(raw, size, max_out, out, out_len, msg, sizeof(msg))) {
            idx_error(err, err_size, "%s: %s", path, msg);
            goto done;
        }
    } else {
        *out = raw;
        *out_len = size;
        raw = NULL;
    }
    rc = 0;
done:
    free(raw);
    fclose(f);
    return rc;
}
