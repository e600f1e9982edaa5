/* tf.train.Example decoding straight from the protobuf wire format (see example.h). */
#include "example.h"

#include <string.h>

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

/* One field of a message: its number, wire type, and value (varint / fixed bits in `num`,
 * length-delimited bytes in data/len). */
typedef struct pb_field {
    uint32_t number;
    int wire;
    uint64_t num;
    const uint8_t *data;
    size_t len;
} pb_field;

int example_read_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *value)
{
    uint64_t v = 0;
    size_t p = *pos;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= len)
            return -1;
        uint8_t b = buf[p++];
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (shift == 63 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pos = p;
            *value = v;
            return 0;
        }
    }
    return -1;
}

/* Reads the field at *pos. Returns 1 with *f filled, 0 at the end of the message, -1 when
 * malformed (with *pos left at the failing field). */
static int pb_next(const uint8_t *buf, size_t len, size_t *pos, pb_field *f)
{
    size_t p = *pos;
    uint64_t tag, v;
    if (p >= len)
        return 0;
    if (example_read_varint(buf, len, &p, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return -1;
    f->number = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    f->data = NULL;
    f->len = 0;
    f->num = 0;
    switch (f->wire) {
    case WIRE_VARINT:
        if (example_read_varint(buf, len, &p, &v))
            return -1;
        f->num = v;
        break;
    case WIRE_I64:
        if (len - p < 8)
            return -1;
        for (int i = 7; i >= 0; i--)
            f->num = (f->num << 8) | buf[p + (size_t)i];
        p += 8;
        break;
    case WIRE_I32:
        if (len - p < 4)
            return -1;
        for (int i = 3; i >= 0; i--)
            f->num = (f->num << 8) | buf[p + (size_t)i];
        p += 4;
        break;
    case WIRE_LEN:
        if (example_read_varint(buf, len, &p, &v) || v > len - p)
            return -1;
        f->data = buf + p;
        f->len = (size_t)v;
        p += (size_t)v;
        break;
    default: /* groups (3, 4) are not used by these messages; 6 and 7 do not exist */
        return -1;
    }
    *pos = p;
    return 1;
}

/* Decodes a Feature message into *out (the last list field wins, as a oneof does). */
static example_status decode_feature(const uint8_t *buf, size_t len, example_feature *out)
{
    size_t pos = 0;
    pb_field f;
    int r;
    out->kind = EXAMPLE_NONE;
    out->list = NULL;
    out->list_len = 0;
    while ((r = pb_next(buf, len, &pos, &f)) > 0) {
        if (f.number >= 1 && f.number <= 3) {
            if (f.wire != WIRE_LEN)
                return EXAMPLE_MALFORMED;
            out->kind = (example_kind)f.number;
            out->list = f.data;
            out->list_len = f.len;
        }
    }
    return r < 0 ? EXAMPLE_MALFORMED : EXAMPLE_OK;
}

example_status example_find(const uint8_t *buf, size_t len, const char *const *keys,
                            size_t n_keys, example_feature *out, size_t *err_offset)
{
    size_t ex_pos = 0, where = 0;
    pb_field ex_f;
    int r;
    for (size_t i = 0; i < n_keys; i++)
        memset(&out[i], 0, sizeof out[i]);
    /* Example.features (1): a repeated occurrence merges, so every one is walked. */
    while ((r = pb_next(buf, len, &ex_pos, &ex_f)) > 0) {
        if (ex_f.number != 1)
            continue;
        if (ex_f.wire != WIRE_LEN)
            goto malformed_ex;
        const uint8_t *fs = ex_f.data;
        size_t fs_len = ex_f.len, fs_pos = 0;
        pb_field fs_f;
        int r2;
        /* Features.feature (1): map entries { key = 1, value = 2 }. */
        while ((r2 = pb_next(fs, fs_len, &fs_pos, &fs_f)) > 0) {
            if (fs_f.number != 1)
                continue;
            if (fs_f.wire != WIRE_LEN) {
                where = (size_t)(fs - buf) + fs_pos;
                goto malformed;
            }
            const uint8_t *key = (const uint8_t *)"", *value = NULL;
            size_t key_len = 0, value_len = 0, e_pos = 0;
            pb_field e_f;
            int r3;
            while ((r3 = pb_next(fs_f.data, fs_f.len, &e_pos, &e_f)) > 0) {
                if (e_f.number != 1 && e_f.number != 2)
                    continue;
                if (e_f.wire != WIRE_LEN) {
                    r3 = -1;
                    break;
                }
                if (e_f.number == 1) {
                    key = e_f.data;
                    key_len = e_f.len;
                } else {
                    value = e_f.data;
                    value_len = e_f.len;
                }
            }
            if (r3 < 0) {
                where = (size_t)(fs_f.data - buf) + e_pos;
                goto malformed;
            }
            for (size_t i = 0; i < n_keys; i++) {
                if (strlen(keys[i]) != key_len || memcmp(keys[i], key, key_len) != 0)
                    continue;
                if (decode_feature(value ? value : (const uint8_t *)"", value_len, &out[i])) {
                    where = value ? (size_t)(value - buf) : 0;
                    goto malformed;
                }
            }
        }
        if (r2 < 0) {
            where = (size_t)(fs - buf) + fs_pos;
            goto malformed;
        }
    }
    if (r >= 0)
        return EXAMPLE_OK;
malformed_ex:
    where = ex_pos;
malformed:
    if (err_offset)
        *err_offset = where;
    return EXAMPLE_MALFORMED;
}

/* Visits the values of a list feature in order; stops at value `index` (or counts them all
 * when index is SIZE_MAX). For EXAMPLE_BYTES the value is data/len; for the numeric kinds
 * its raw bits are *bits. */
static example_status list_walk(const example_feature *f, size_t index, size_t *count,
                                uint64_t *bits, const uint8_t **data, size_t *len)
{
    size_t pos = 0, n = 0;
    pb_field lf;
    int r;
    if (f->kind == EXAMPLE_NONE) {
        *count = 0;
        return index == SIZE_MAX ? EXAMPLE_OK : EXAMPLE_RANGE;
    }
    while ((r = pb_next(f->list, f->list_len, &pos, &lf)) > 0) {
        if (lf.number != 1)
            continue;
        if (f->kind == EXAMPLE_BYTES) {
            if (lf.wire != WIRE_LEN)
                return EXAMPLE_MALFORMED;
            if (n == index) {
                *data = lf.data;
                *len = lf.len;
                return EXAMPLE_OK;
            }
            n++;
        } else if (lf.wire == WIRE_LEN) { /* packed */
            if (f->kind == EXAMPLE_FLOAT) {
                if (lf.len % 4)
                    return EXAMPLE_MALFORMED;
                size_t k = lf.len / 4;
                if (index != SIZE_MAX && index - n < k) {
                    const uint8_t *p = lf.data + 4 * (index - n);
                    *bits = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
                            (uint64_t)p[3] << 24;
                    return EXAMPLE_OK;
                }
                n += k;
            } else {
                size_t p = 0;
                uint64_t v;
                while (p < lf.len) {
                    if (example_read_varint(lf.data, lf.len, &p, &v))
                        return EXAMPLE_MALFORMED;
                    if (n == index) {
                        *bits = v;
                        return EXAMPLE_OK;
                    }
                    n++;
                }
            }
        } else if ((f->kind == EXAMPLE_FLOAT && lf.wire == WIRE_I32) ||
                   (f->kind == EXAMPLE_INT64 && lf.wire == WIRE_VARINT)) {
            if (n == index) {
                *bits = lf.num;
                return EXAMPLE_OK;
            }
            n++;
        } else {
            return EXAMPLE_MALFORMED;
        }
    }
    if (r < 0)
        return EXAMPLE_MALFORMED;
    *count = n;
    return index == SIZE_MAX ? EXAMPLE_OK : EXAMPLE_RANGE;
}

example_status example_count(const example_feature *f, size_t *count)
{
    uint64_t bits;
    const uint8_t *data;
    size_t len;
    return list_walk(f, SIZE_MAX, count, &bits, &data, &len);
}

example_status example_bytes_at(const example_feature *f, size_t index, const uint8_t **data,
                                size_t *len)
{
    size_t count;
    uint64_t bits;
    if (f->kind != EXAMPLE_BYTES)
        return f->kind == EXAMPLE_NONE ? EXAMPLE_RANGE : EXAMPLE_MALFORMED;
    if (index == SIZE_MAX)
        return EXAMPLE_RANGE;
    return list_walk(f, index, &count, &bits, data, len);
}

example_status example_int64_at(const example_feature *f, size_t index, int64_t *value)
{
    size_t count, len;
    uint64_t bits = 0;
    const uint8_t *data;
    if (f->kind != EXAMPLE_INT64)
        return f->kind == EXAMPLE_NONE ? EXAMPLE_RANGE : EXAMPLE_MALFORMED;
    if (index == SIZE_MAX)
        return EXAMPLE_RANGE;
    example_status st = list_walk(f, index, &count, &bits, &data, &len);
    if (st == EXAMPLE_OK)
        *value = (int64_t)bits; /* two's complement: a negative int64 is a 10-byte varint */
    return st;
}

example_status example_float_at(const example_feature *f, size_t index, float *value)
{
    size_t count, len;
    uint64_t bits = 0;
    const uint8_t *data;
    if (f->kind != EXAMPLE_FLOAT)
        return f->kind == EXAMPLE_NONE ? EXAMPLE_RANGE : EXAMPLE_MALFORMED;
    if (index == SIZE_MAX)
        return EXAMPLE_RANGE;
    example_status st = list_walk(f, index, &count, &bits, &data, &len);
    if (st == EXAMPLE_OK) {
        uint32_t u = (uint32_t)bits;
        memcpy(value, &u, 4);
    }
    return st;
}
