// fuzz-sources: plugins/source-idx/idx.c
// fuzz-cflags: -Iplugins/source-idx
// fuzz-ldflags: -lz
// fuzz-seeds: tests/fuzz/seeds/idx
/* libFuzzer target: the IDX parser of source-idx (and its gzip inflation) on arbitrary
 * bytes. Success must describe data that lies inside the buffer (every byte is read back);
 * failure must be one line; nothing may leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_line(const char *err, size_t size)
{
    if (strnlen(err, size) == size || strchr(err, '\n') || strncmp(err, "byte ", 5) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    const uint8_t *buf = data;
    uint8_t *inflated = NULL;
    size_t len = size;
    err[0] = 0;
    if (idx_is_gzip(data, size)) {
        if (idx_gunzip(data, size, (size_t)16 << 20, &inflated, &len, err, sizeof(err))) {
            one_line(err, sizeof(err));
            return 0;
        }
        buf = inflated;
    }
    idx_array a;
    if (idx_parse(buf, len, &a, err, sizeof(err)) == 0) {
        volatile unsigned sink = 0;
        size_t bytes = a.count * a.elem_size;
        if (a.data < buf || a.data + bytes != buf + len)
            __builtin_trap();
        for (size_t i = 0; i < bytes; i++)
            sink += a.data[i];
        (void)sink;
    } else {
        one_line(err, sizeof(err));
    }
    free(inflated);
    return 0;
}
