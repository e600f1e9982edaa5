/* tf.train.Example decoder: packed and unpacked lists, negative int64 (10-byte varints),
 * entries in any order, unknown fields, duplicate keys, and malformed input. */
#include <stdio.h>
#include <string.h>

#include "example.h"

static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            printf("FAIL line %d: ", __LINE__);                                                \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* A minimal protobuf writer into a fixed buffer. */
typedef struct wbuf {
    uint8_t d[4096];
    size_t n;
} wbuf;

static void put(wbuf *b, const void *p, size_t n)
{
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void varint(wbuf *b, uint64_t v)
{
    do {
        b->d[b->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void field_len(wbuf *b, uint32_t num, const void *p, size_t n)
{
    varint(b, (uint64_t)num << 3 | 2);
    varint(b, n);
    put(b, p, n);
}
/* Map entry written value-first when `swap`. */
static void entry(wbuf *features, const char *key, const wbuf *feature, int swap)
{
    wbuf e = {.n = 0};
    if (swap) {
        field_len(&e, 2, feature->d, feature->n);
        field_len(&e, 1, key, strlen(key));
    } else {
        field_len(&e, 1, key, strlen(key));
        field_len(&e, 2, feature->d, feature->n);
    }
    field_len(features, 1, e.d, e.n);
}

static void test_lists(void)
{
    wbuf features = {.n = 0}, ex = {.n = 0};
    const int64_t vals[] = {1, -1, 300, INT64_MIN, INT64_MAX, 0};
    const size_t nv = sizeof vals / sizeof vals[0];

    /* label: packed Int64List */
    wbuf run = {.n = 0}, list = {.n = 0}, feat = {.n = 0};
    for (size_t i = 0; i < nv; i++)
        varint(&run, (uint64_t)vals[i]);
    field_len(&list, 1, run.d, run.n);
    field_len(&feat, 3, list.d, list.n);
    entry(&features, "packed", &feat, 0);

    /* unpacked Int64List, written value-first in its map entry, with an unknown field */
    list.n = feat.n = 0;
    for (size_t i = 0; i < nv; i++) {
        varint(&list, 1 << 3 | 0);
        varint(&list, (uint64_t)vals[i]);
    }
    varint(&list, 7 << 3 | 0); /* unknown varint field 7 */
    varint(&list, 42);
    field_len(&feat, 3, list.d, list.n);
    entry(&features, "unpacked", &feat, 1);

    /* mixed: one packed run, then one unpacked value */
    list.n = feat.n = run.n = 0;
    varint(&run, 5);
    varint(&run, 6);
    field_len(&list, 1, run.d, run.n);
    varint(&list, 1 << 3 | 0);
    varint(&list, 7);
    field_len(&feat, 3, list.d, list.n);
    entry(&features, "mixed", &feat, 0);

    /* FloatList, packed and unpacked */
    const float fv[] = {0.5f, -2.25f, 1e-3f};
    list.n = feat.n = run.n = 0;
    put(&run, fv, sizeof fv); /* little-endian host */
    field_len(&list, 1, run.d, run.n);
    field_len(&feat, 2, list.d, list.n);
    entry(&features, "fpacked", &feat, 0);
    list.n = feat.n = 0;
    for (int i = 0; i < 3; i++) {
        varint(&list, 1 << 3 | 5);
        put(&list, &fv[i], 4);
    }
    field_len(&feat, 2, list.d, list.n);
    entry(&features, "funpacked", &feat, 0);

    /* BytesList with two values; then the same key again (the later one wins) */
    list.n = feat.n = 0;
    field_len(&list, 1, "first", 5);
    field_len(&list, 1, "second", 6);
    field_len(&feat, 1, list.d, list.n);
    entry(&features, "bytes", &feat, 0);
    list.n = feat.n = 0;
    field_len(&list, 1, "override", 8);
    field_len(&feat, 1, list.d, list.n);
    entry(&features, "dup", &feat, 0);
    list.n = feat.n = 0;
    field_len(&list, 1, "winner", 6);
    field_len(&feat, 1, list.d, list.n);
    entry(&features, "dup", &feat, 0);

    /* Example: an unknown fixed64 field before features, features split in two messages */
    varint(&ex, 9 << 3 | 1);
    put(&ex, "\1\2\3\4\5\6\7\x8", 8);
    size_t half = features.n / 2;
    /* find an entry boundary near the middle: walk entries */
    size_t pos = 0, cut = 0;
    while (pos < features.n) {
        size_t p = pos + 1, len = 0;
        int shift = 0;
        while (features.d[p] & 0x80) {
            len |= (size_t)(features.d[p++] & 0x7f) << shift;
            shift += 7;
        }
        len |= (size_t)features.d[p++] << shift;
        pos = p + len;
        if (pos <= half)
            cut = pos;
    }
    field_len(&ex, 1, features.d, cut);
    field_len(&ex, 1, features.d + cut, features.n - cut);

    const char *keys[] = {"packed", "unpacked", "mixed", "fpacked", "funpacked", "bytes", "dup",
                          "absent"};
    example_feature f[8];
    size_t err = 0;
    CHECK(example_find(ex.d, ex.n, keys, 8, f, &err) == EXAMPLE_OK, "find failed at %zu", err);
    for (int k = 0; k < 2; k++) {
        size_t count = 0;
        CHECK(f[k].kind == EXAMPLE_INT64, "%s kind %d", keys[k], f[k].kind);
        CHECK(example_count(&f[k], &count) == EXAMPLE_OK && count == nv, "%s count %zu", keys[k],
              count);
        for (size_t i = 0; i < nv; i++) {
            int64_t v = 12345;
            CHECK(example_int64_at(&f[k], i, &v) == EXAMPLE_OK && v == vals[i],
                  "%s[%zu] = %lld, want %lld", keys[k], i, (long long)v, (long long)vals[i]);
        }
        int64_t v;
        CHECK(example_int64_at(&f[k], nv, &v) == EXAMPLE_RANGE, "%s past the end", keys[k]);
    }
    for (int i = 0; i < 3; i++) {
        int64_t v = 0;
        CHECK(example_int64_at(&f[2], (size_t)i, &v) == EXAMPLE_OK && v == 5 + i,
              "mixed[%d] = %lld", i, (long long)v);
    }
    for (int k = 3; k <= 4; k++)
        for (int i = 0; i < 3; i++) {
            float v = 0;
            CHECK(example_float_at(&f[k], (size_t)i, &v) == EXAMPLE_OK && v == fv[i],
                  "%s[%d] = %g want %g", keys[k], i, v, fv[i]);
        }
    const uint8_t *d;
    size_t len;
    CHECK(example_bytes_at(&f[5], 1, &d, &len) == EXAMPLE_OK && len == 6 &&
              memcmp(d, "second", 6) == 0,
          "bytes[1]");
    CHECK(example_bytes_at(&f[6], 0, &d, &len) == EXAMPLE_OK && len == 6 &&
              memcmp(d, "winner", 6) == 0,
          "duplicate key keeps the last value");
    CHECK(f[7].kind == EXAMPLE_NONE, "absent key");
    CHECK(example_bytes_at(&f[7], 0, &d, &len) == EXAMPLE_RANGE, "absent bytes");
    int64_t v;
    CHECK(example_int64_at(&f[5], 0, &v) == EXAMPLE_MALFORMED, "int64 of a BytesList");

    /* The 10-byte varint of -1 exactly, and an 11-byte one refused. */
    uint8_t neg[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    size_t p = 0;
    uint64_t u = 0;
    CHECK(example_read_varint(neg, sizeof neg, &p, &u) == 0 && p == 10 && (int64_t)u == -1,
          "10-byte varint");
    uint8_t too_long[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x01};
    p = 0;
    CHECK(example_read_varint(too_long, sizeof too_long, &p, &u) != 0, "11-byte varint refused");
    uint8_t overflow[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    p = 0;
    CHECK(example_read_varint(overflow, sizeof overflow, &p, &u) != 0, "65-bit varint refused");

    /* Every truncation of the valid Example is rejected or parses without reading past the
     * end (the decoder is also fuzzed under ASan). */
    int truncated_ok = 0;
    for (size_t n = 0; n < ex.n; n++)
        if (example_find(ex.d, n, keys, 8, f, &err) == EXAMPLE_OK)
            truncated_ok++;
    printf("truncations that still parse (at entry boundaries): %d of %zu\n", truncated_ok,
           ex.n);
}

static void test_malformed(void)
{
    const char *keys[] = {"image/encoded"};
    example_feature f[1];
    size_t err = 0;
    struct {
        const char *what;
        uint8_t d[16];
        size_t n;
    } cases[] = {
        {"length past the end", {0x0a, 0x05, 0x0a}, 3},
        {"unterminated varint", {0x08, 0x80}, 2},
        {"group wire type", {0x0b, 0x0c}, 2},
        {"wire type 7", {0x0f, 0x00}, 2},
        {"field number 0", {0x02, 0x00}, 2},
        {"features field as varint", {0x08, 0x01}, 2},
        {"map entry as fixed32", {0x0a, 0x05, 0x0d, 1, 2, 3, 4}, 7},
        {"fixed64 cut short", {0x09, 1, 2, 3}, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(example_find(cases[i].d, cases[i].n, keys, 1, f, &err) == EXAMPLE_MALFORMED,
              "%s accepted", cases[i].what);
    /* Empty input is an empty Example. */
    CHECK(example_find(NULL, 0, keys, 1, f, &err) == EXAMPLE_OK && f[0].kind == EXAMPLE_NONE,
          "empty Example");
    /* A packed FloatList whose length is not a multiple of 4. */
    example_feature bad = {EXAMPLE_FLOAT, (const uint8_t *)"\x0a\x03\x01\x02\x03", 5};
    float fv;
    CHECK(example_float_at(&bad, 0, &fv) == EXAMPLE_MALFORMED, "ragged packed floats");
    /* A packed Int64List ending inside a varint. */
    example_feature bad2 = {EXAMPLE_INT64, (const uint8_t *)"\x0a\x02\x01\x80", 4};
    int64_t iv;
    CHECK(example_int64_at(&bad2, 1, &iv) == EXAMPLE_MALFORMED, "cut packed varint");
}

int main(void)
{
    test_lists();
    test_malformed();
    printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
