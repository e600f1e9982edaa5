/* Checkpoint files (see checkpoint.h for the layout). */
#include "config.h"

#include "checkpoint.h"

#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "atomic_file.h"
#include "services.h"

/* Payloads beyond this are refused on reading before anything is allocated: no real
 * checkpoint comes near it, and a corrupted size field must not trigger a huge malloc. */
#define CHECKPOINT_MAX_PAYLOAD ((uint64_t)1 << 40)
/* LZ4 expands at most 255-fold (a match length byte of 255 per input byte), so a frame of
 * n bytes cannot hold more than this many times n: a larger size field is a lie to refuse
 * before allocating, even when the header's CRC was forged to match it. */
#define LZ4_MAX_EXPANSION 256u

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* zlib's crc32 takes uInt lengths: feed large buffers in pieces. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

tp_status checkpoint_write(const char *path, const uint8_t *payload, size_t size)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.contentSize = size;
    prefs.frameInfo.blockSizeID = LZ4F_max4MB;
    size_t bound = LZ4F_compressFrameBound(size, &prefs);
    uint8_t *frame = malloc(bound);
    if (!frame)
        return services_fail(TP_ERR_NOMEM, "%s: cannot allocate %zu bytes to compress the "
                             "checkpoint", path, bound);
    size_t frame_size = LZ4F_compressFrame(frame, bound, payload, size, &prefs);
    if (LZ4F_isError(frame_size)) {
        tp_status st = services_fail(TP_ERR_LIBRARY, "%s: LZ4F_compressFrame: %s", path,
                                     LZ4F_getErrorName(frame_size));
        free(frame);
        return st;
    }
    uint8_t header[CHECKPOINT_HEADER_SIZE];
    memcpy(header, CHECKPOINT_MAGIC, 8);
    put_u32(header + 8, CHECKPOINT_VERSION);
    put_u32(header + 12, 0);
    put_u64(header + 16, size);
    put_u32(header + 24, crc32_of(payload, size));
    put_u32(header + 28, crc32_of(header, 28));
    atomic_piece pieces[2] = { { header, sizeof header }, { frame, frame_size } };
    tp_status st = atomic_write_file(path, pieces, 2);
    free(frame);
    return st;
}

tp_status checkpoint_decode(const uint8_t *bytes, size_t size, const char *label,
                            safetensors_file **out)
{
    *out = NULL;
    if (size < CHECKPOINT_HEADER_SIZE)
        return services_fail(TP_ERR_FORMAT, "%s: truncated: %zu bytes, a checkpoint has at "
                             "least a %u-byte header", label, size, CHECKPOINT_HEADER_SIZE);
    if (memcmp(bytes, CHECKPOINT_MAGIC, 8) != 0)
        return services_fail(TP_ERR_FORMAT, "%s: offset 0: not a trainpipe checkpoint (the "
                             "magic bytes \"TPCKPT\\r\\n\" are missing)", label);
    uint32_t header_crc = crc32_of(bytes, 28);
    if (header_crc != get_u32(bytes + 28))
        return services_fail(TP_ERR_FORMAT, "%s: offset 28: header checksum mismatch (stored "
                             "%08x, computed %08x): the header is corrupted", label,
                             get_u32(bytes + 28), header_crc);
    uint32_t version = get_u32(bytes + 8), flags = get_u32(bytes + 12);
    if (version != CHECKPOINT_VERSION)
        return services_fail(TP_ERR_FORMAT, "%s: offset 8: format version %u; this trainpipe "
                             "reads version %u", label, version, CHECKPOINT_VERSION);
    if (flags != 0)
        return services_fail(TP_ERR_FORMAT, "%s: offset 12: unknown flags 0x%x", label, flags);
    uint64_t payload_size = get_u64(bytes + 16);
    uint32_t payload_crc = get_u32(bytes + 24);
    if (payload_size > CHECKPOINT_MAX_PAYLOAD || payload_size > SIZE_MAX - 1)
        return services_fail(TP_ERR_FORMAT, "%s: offset 16: payload size %llu is implausible",
                             label, (unsigned long long)payload_size);
    size_t frame_size = size - CHECKPOINT_HEADER_SIZE;
    if (payload_size / LZ4_MAX_EXPANSION > frame_size)
        return services_fail(TP_ERR_FORMAT, "%s: offset 16: payload size %llu is implausible: "
                             "an LZ4 frame of %zu bytes cannot hold it (the file is truncated "
                             "or corrupted)", label, (unsigned long long)payload_size,
                             frame_size);

    LZ4F_dctx *dctx = NULL;
    size_t rc = LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION);
    if (LZ4F_isError(rc))
        return services_fail(TP_ERR_LIBRARY, "%s: LZ4F_createDecompressionContext: %s", label,
                             LZ4F_getErrorName(rc));
    tp_status st = TP_OK;
    uint8_t *payload = malloc(payload_size ? (size_t)payload_size : 1);
    if (!payload) {
        st = services_fail(TP_ERR_NOMEM, "%s: cannot allocate %llu bytes for the payload",
                           label, (unsigned long long)payload_size);
        goto done;
    }
    const uint8_t *src = bytes + CHECKPOINT_HEADER_SIZE;
    size_t src_left = frame_size, produced = 0;
    size_t hint = 1;
    while (hint != 0) {
        if (src_left == 0) {
            st = services_fail(TP_ERR_FORMAT, "%s: offset %zu: truncated: the LZ4 frame ends "
                               "early (%zu of %llu payload bytes decoded)", label, size,
                               produced, (unsigned long long)payload_size);
            goto done;
        }
        size_t in = src_left, outn = (size_t)payload_size - produced;
        hint = LZ4F_decompress(dctx, payload + produced, &outn, src, &in, NULL);
        if (LZ4F_isError(hint)) {
            st = services_fail(TP_ERR_FORMAT, "%s: offset %zu: corrupted LZ4 data: %s", label,
                               (size_t)(src - bytes), LZ4F_getErrorName(hint));
            goto done;
        }
        if (in == 0 && outn == 0 && hint != 0 && produced == payload_size) {
            /* The frame wants more output than the header announced. */
            st = services_fail(TP_ERR_FORMAT, "%s: the LZ4 frame holds more than the %llu "
                               "bytes the header announces", label,
                               (unsigned long long)payload_size);
            goto done;
        }
        src += in;
        src_left -= in;
        produced += outn;
    }
    if (src_left != 0) {
        st = services_fail(TP_ERR_FORMAT, "%s: offset %zu: %zu unexpected bytes after the LZ4 "
                           "frame", label, (size_t)(src - bytes), src_left);
        goto done;
    }
    if (produced != payload_size) {
        st = services_fail(TP_ERR_FORMAT, "%s: the payload has %zu bytes, the header says %llu",
                           label, produced, (unsigned long long)payload_size);
        goto done;
    }
    uint32_t crc = crc32_of(payload, produced);
    if (crc != payload_crc) {
        st = services_fail(TP_ERR_FORMAT, "%s: payload checksum mismatch (stored %08x, computed "
                           "%08x): the file is corrupted", label, payload_crc, crc);
        goto done;
    }
    st = safetensors_parse(payload, produced, label, out);
done:
    free(payload);
    LZ4F_freeDecompressionContext(dctx);
    return st;
}

tp_status checkpoint_read(const char *path, safetensors_file **out)
{
    uint8_t *bytes;
    size_t size;
    *out = NULL;
    tp_status st = read_whole_file(path, &bytes, &size);
    if (st)
        return st;
    st = checkpoint_decode(bytes, size, path, out);
    free(bytes);
    return st;
}
