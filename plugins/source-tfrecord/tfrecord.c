/* TFRecord framing and index files (see tfrecord.h). */
#include "tfrecord.h"

#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void tfrecord_index_free(tfrecord_index *idx)
{
    free(idx->entries);
    idx->entries = NULL;
    idx->count = idx->capacity = 0;
}

int tfrecord_index_push(tfrecord_index *idx, uint64_t offset, uint64_t size)
{
    if (idx->count == idx->capacity) {
        size_t cap = idx->capacity ? idx->capacity * 2 : 256;
        tfrecord_entry *e = realloc(idx->entries, cap * sizeof *e);
        if (!e)
            return -1;
        idx->entries = e;
        idx->capacity = cap;
    }
    idx->entries[idx->count].offset = offset;
    idx->entries[idx->count].size = size;
    idx->count++;
    return 0;
}

int tfrecord_scan(tfrecord_read_fn read, void *ctx, uint64_t file_size, int verify_crc,
                  tfrecord_index *idx, tfrecord_end *end, uint64_t *end_offset)
{
    uint64_t off = 0;
    uint8_t head[12];
    while (off < file_size) {
        uint64_t left = file_size - off;
        if (left < 12) {
            *end = TFRECORD_END_TRUNCATED;
            *end_offset = off;
            return 0;
        }
        long got = read(ctx, off, head, 12);
        if (got < 0)
            return -1;
        if (got < 12) { /* the file shrank under us */
            *end = TFRECORD_END_TRUNCATED;
            *end_offset = off;
            return 0;
        }
        uint64_t length = load_le64(head);
        if (verify_crc && crc32c_unmask(load_le32(head + 8)) != crc32c(head, 8)) {
            *end = TFRECORD_END_BAD_LENGTH;
            *end_offset = off;
            return 0;
        }
        if (length > left - TFRECORD_FRAMING || left < TFRECORD_FRAMING) {
            *end = TFRECORD_END_TRUNCATED;
            *end_offset = off;
            return 0;
        }
        if (tfrecord_index_push(idx, off, length + TFRECORD_FRAMING))
            return -1;
        off += length + TFRECORD_FRAMING;
    }
    *end = TFRECORD_END_CLEAN;
    *end_offset = off;
    return 0;
}

long tfrecord_read_memory(void *ctx, uint64_t offset, void *buf, size_t n)
{
    const tfrecord_memory *m = ctx;
    if (offset >= m->len)
        return 0;
    size_t avail = m->len - (size_t)offset;
    if (n > avail)
        n = avail;
    memcpy(buf, m->data + offset, n);
    return (long)n;
}

/* Parses an unsigned decimal at *p (no sign, no overflow). */
static int parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (s >= end || *s < '0' || *s > '9')
        return -1;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

int tfrecord_index_parse(const char *text, size_t len, uint64_t file_size, tfrecord_index *idx,
                         size_t *bad_line)
{
    const char *p = text, *end = text + len;
    uint64_t prev_end = 0;
    size_t line = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        line++;
        const char *s = p;
        while (s < eol && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        if (s < eol) { /* blank lines are allowed */
            uint64_t offset, size;
            if (parse_u64(&s, eol, &offset))
                goto bad;
            if (s >= eol || (*s != ' ' && *s != '\t'))
                goto bad;
            while (s < eol && (*s == ' ' || *s == '\t'))
                s++;
            if (parse_u64(&s, eol, &size))
                goto bad;
            while (s < eol && (*s == ' ' || *s == '\t' || *s == '\r'))
                s++;
            if (s != eol || size < TFRECORD_FRAMING || offset < prev_end ||
                offset > file_size || size > file_size - offset)
                goto bad;
            if (tfrecord_index_push(idx, offset, size)) {
                *bad_line = 0;
                return -1;
            }
            prev_end = offset + size;
        }
        p = eol + 1;
    }
    return 0;
bad:
    *bad_line = line;
    return -1;
}

int tfrecord_index_write(FILE *f, const tfrecord_index *idx)
{
    for (size_t i = 0; i < idx->count; i++)
        if (fprintf(f, "%llu %llu\n", (unsigned long long)idx->entries[i].offset,
                    (unsigned long long)idx->entries[i].size) < 0)
            return -1;
    return 0;
}

int tfrecord_check_record(const uint8_t *rec, uint64_t size, int verify_crc,
                          const uint8_t **data, size_t *len, const char **why)
{
    if (size < TFRECORD_FRAMING) {
        *why = "record shorter than its 16 framing bytes";
        return -1;
    }
    uint64_t length = load_le64(rec);
    if (length != size - TFRECORD_FRAMING) {
        *why = "length field disagrees with the index (stale index?)";
        return -1;
    }
    if (verify_crc) {
        if (crc32c_unmask(load_le32(rec + 8)) != crc32c(rec, 8)) {
            *why = "corrupted record: length CRC mismatch";
            return -1;
        }
        if (crc32c_unmask(load_le32(rec + 12 + length)) != crc32c(rec + 12, (size_t)length)) {
            *why = "corrupted record: data CRC mismatch";
            return -1;
        }
    }
    *data = rec + 12;
    *len = (size_t)length;
    return 0;
}

tfrecord_compression tfrecord_detect(const uint8_t *head, size_t n)
{
    if (n >= 12 && crc32c_unmask(load_le32(head + 8)) == crc32c(head, 8))
        return TFRECORD_NONE;
    if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b)
        return TFRECORD_GZIP;
    if (n >= 2 && (head[0] & 0x0f) == 8 && (head[0] >> 4) <= 7 &&
        ((unsigned)head[0] * 256u + head[1]) % 31u == 0)
        return TFRECORD_ZLIB;
    return TFRECORD_NONE;
}

