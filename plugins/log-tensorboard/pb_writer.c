/* Protocol-buffers wire encoding (little-endian fixed-width fields, base-128 varints). */
#include "config.h"

#include "pb_writer.h"

#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

void pb_init(pb_buf *b) { memset(b, 0, sizeof *b); }

void pb_free(pb_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void pb_reset(pb_buf *b)
{
    b->len = 0;
    b->oom = 0;
}

int pb_reserve(pb_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void pb_raw(pb_buf *b, const void *data, size_t len)
{
    if (len == 0 || pb_reserve(b, len))
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void pb_varint(pb_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        tmp[n++] = byte | (v ? 0x80 : 0);
    } while (v);
    pb_raw(b, tmp, n);
}

static void put_tag(pb_buf *b, uint32_t field, int wire)
{
    pb_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

static void put_le(pb_buf *b, uint64_t v, int bytes)
{
    uint8_t tmp[8];
    for (int i = 0; i < bytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    pb_raw(b, tmp, (size_t)bytes);
}

void pb_field_varint(pb_buf *b, uint32_t field, uint64_t v)
{
    put_tag(b, field, WIRE_VARINT);
    pb_varint(b, v);
}

void pb_field_double(pb_buf *b, uint32_t field, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_tag(b, field, WIRE_FIXED64);
    put_le(b, bits, 8);
}

void pb_field_float(pb_buf *b, uint32_t field, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_tag(b, field, WIRE_FIXED32);
    put_le(b, bits, 4);
}

void pb_field_bytes(pb_buf *b, uint32_t field, const void *data, size_t len)
{
    put_tag(b, field, WIRE_LEN);
    pb_varint(b, len);
    pb_raw(b, data, len);
}

void pb_field_string(pb_buf *b, uint32_t field, const char *s)
{
    pb_field_bytes(b, field, s, strlen(s));
}

void pb_field_message(pb_buf *b, uint32_t field, const pb_buf *inner)
{
    if (inner->oom) {
        b->oom = 1;
        return;
    }
    pb_field_bytes(b, field, inner->data, inner->len);
}

void pb_field_packed_doubles(pb_buf *b, uint32_t field, const double *v, size_t n)
{
    if (n > SIZE_MAX / 8) {
        b->oom = 1;
        return;
    }
    put_tag(b, field, WIRE_LEN);
    pb_varint(b, (uint64_t)n * 8);
    if (pb_reserve(b, n * 8))
        return;
    for (size_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        put_le(b, bits, 8);
    }
}
