// fuzz-sources: plugins/source-tfrecord/tfrecord.c plugins/source-tfrecord/example.c plugins/common/crc32c.c
// fuzz-cflags: -Isdk -Iplugins/common -Iplugins/source-tfrecord
/* Fuzzes the TFRecord framing over a memory buffer: the index scan (with and without CRC
 * checks), the record check of every indexed record and the Example decoder on its payload,
 * the DALI index parser on the same bytes as text, and compression detection. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "example.h"
#include "tfrecord.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tfrecord_memory m = {data, size};
    for (int verify = 0; verify < 2; verify++) {
        tfrecord_index idx = {0};
        tfrecord_end end;
        uint64_t at;
        if (tfrecord_scan(tfrecord_read_memory, &m, size, verify, &idx, &end, &at) == 0) {
            if (at > size)
                abort();
            for (size_t i = 0; i < idx.count; i++) {
                const tfrecord_entry *e = &idx.entries[i];
                if (e->offset + e->size > size)
                    abort(); /* the index must never point outside the file */
                const uint8_t *payload;
                size_t len;
                const char *why;
                if (tfrecord_check_record(data + e->offset, e->size, verify, &payload, &len,
                                          &why) == 0) {
                    const char *keys[] = {"image/encoded", "image/class/label"};
                    example_feature f[2];
                    size_t err;
                    if (example_find(payload, len, keys, 2, f, &err) == EXAMPLE_OK) {
                        const uint8_t *b;
                        size_t bl;
                        int64_t v;
                        (void)example_bytes_at(&f[0], 0, &b, &bl);
                        (void)example_int64_at(&f[1], 0, &v);
                    }
                }
            }
        }
        tfrecord_index_free(&idx);
    }
    tfrecord_index parsed = {0};
    size_t bad_line;
    if (tfrecord_index_parse((const char *)data, size, (uint64_t)size * 4, &parsed, &bad_line) ==
        0) {
        for (size_t i = 0; i < parsed.count; i++)
            if (parsed.entries[i].size < 16 || parsed.entries[i].offset > (uint64_t)size * 4 ||
                parsed.entries[i].size > (uint64_t)size * 4 - parsed.entries[i].offset)
                abort();
    }
    tfrecord_index_free(&parsed);
    (void)tfrecord_detect(data, size);
    return 0;
}
