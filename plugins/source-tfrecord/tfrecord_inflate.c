/* Inflating GZIP/ZLIB TFRecord shards into a plain file (see tfrecord.h). Kept apart from
 * tfrecord.c so the framing code (and its fuzz target) needs no zlib. */
#include "tfrecord.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tfrecord_inflate(int in_fd, int out_fd, char *err, size_t errlen)
{
    enum { CHUNK = 1 << 18 };
    z_stream zs;
    uint8_t *in = malloc(CHUNK), *out = malloc(CHUNK);
    uint64_t consumed = 0;
    int rc = -1, zr = Z_OK, started = 0, at_end = 0, out_full = 0;
    memset(&zs, 0, sizeof zs);
    if (!in || !out) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {
        snprintf(err, errlen, "inflateInit2 failed");
        goto done;
    }
    started = 1;
    for (;;) {
        if (zs.avail_in == 0 && !out_full) {
            ssize_t r = read(in_fd, in, CHUNK);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                snprintf(err, errlen, "read failed at compressed offset %llu: %s",
                         (unsigned long long)consumed, strerror(errno));
                goto done;
            }
            if (r == 0)
                break;
            zs.next_in = in;
            zs.avail_in = (uInt)r;
        }
        /* After a member: zero padding is skipped; anything else starts another member. */
        if (at_end) {
            size_t i = 0;
            while (i < zs.avail_in && zs.next_in[i] == 0)
                i++;
            consumed += i;
            zs.next_in += i;
            zs.avail_in -= (uInt)i;
            if (zs.avail_in == 0)
                continue;
            inflateReset(&zs); /* another gzip member follows */
            at_end = 0;
        }
        uInt before = zs.avail_in;
        zs.next_out = out;
        zs.avail_out = CHUNK;
        zr = inflate(&zs, Z_NO_FLUSH);
        consumed += before - zs.avail_in;
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            snprintf(err, errlen, "corrupt compressed data near compressed offset %llu: %s",
                     (unsigned long long)consumed, zs.msg ? zs.msg : "inflate error");
            goto done;
        }
        size_t produced = CHUNK - zs.avail_out;
        out_full = zs.avail_out == 0;
        if (produced == 0 && before == zs.avail_in && zr != Z_STREAM_END && zs.avail_in) {
            snprintf(err, errlen, "inflate makes no progress at compressed offset %llu",
                     (unsigned long long)consumed);
            goto done;
        }
        if (write_all(out_fd, out, produced)) {
            snprintf(err, errlen, "cannot write the decompressed cache: %s", strerror(errno));
            goto done;
        }
        if (zr == Z_STREAM_END) {
            at_end = 1;
            out_full = 0;
        }
    }
    if (!at_end) {
        snprintf(err, errlen, "compressed stream ends early at compressed offset %llu",
                 (unsigned long long)consumed);
        goto done;
    }
    rc = 0;
done:
    if (started)
        inflateEnd(&zs);
    free(in);
    free(out);
    return rc;
}
