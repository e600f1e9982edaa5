// fuzz-sources: plugins/source-tfrecord/example.c
// fuzz-cflags: -Isdk -Iplugins/source-tfrecord
/* Fuzzes the tf.train.Example decoder: finds a few keys, then counts and reads every value
 * of every list found (bytes, int64 and float accessors, including wrong-kind calls). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "example.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *keys[] = {"image/encoded", "image/class/label", "image/object/bbox/xmin", "",
                          "a"};
    example_feature f[5];
    size_t err = 0;
    if (example_find(data, size, keys, 5, f, &err) != EXAMPLE_OK) {
        if (err > size)
            abort();
        return 0;
    }
    for (int k = 0; k < 5; k++) {
        if (f[k].kind != EXAMPLE_NONE &&
            (f[k].list < data || f[k].list + f[k].list_len > data + size))
            abort();
        size_t count = 0;
        if (example_count(&f[k], &count) != EXAMPLE_OK)
            continue;
        for (size_t i = 0; i <= count && i < 4096; i++) {
            const uint8_t *b;
            size_t bl;
            int64_t v;
            float x;
            if (example_bytes_at(&f[k], i, &b, &bl) == EXAMPLE_OK &&
                (b < data || b + bl > data + size))
                abort();
            (void)example_int64_at(&f[k], i, &v);
            (void)example_float_at(&f[k], i, &x);
        }
        /* Past the end must be a range error, never a value. */
        int64_t v;
        if (f[k].kind == EXAMPLE_INT64 && example_int64_at(&f[k], count, &v) != EXAMPLE_RANGE)
            abort();
    }
    return 0;
}
