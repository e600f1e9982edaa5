/* CRC32C test vectors from FORMATS.md, for the table path and the SSE4.2 path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static int check(const char *what, uint32_t got, uint32_t want)
{
    if (got != want) {
        printf("FAIL %s: got 0x%08x, want 0x%08x\n", what, got, want);
        return 1;
    }
    printf("ok   %s: 0x%08x\n", what, got);
    return 0;
}

static int run(const char *name, crc_fn fn)
{
    int bad = 0;
    char what[128];
    static const uint8_t zeros[32];
    uint8_t masked_input[2 + 17] = {0x1a, 0x11};
    memcpy(masked_input + 2, "CRC test, one two", 17);

    snprintf(what, sizeof what, "%s \"123456789\"", name);
    bad += check(what, fn(0, "123456789", 9), 0xE3069283u);
    snprintf(what, sizeof what, "%s 32 zero bytes", name);
    bad += check(what, fn(0, zeros, 32), 0x8A9136AAu);
    snprintf(what, sizeof what, "%s masked 1a 11 \"CRC test, one two\"", name);
    bad += check(what, crc32c_mask(fn(0, masked_input, sizeof masked_input)), 0x5794d08au);
    snprintf(what, sizeof what, "%s unmask(mask(x))", name);
    bad += check(what, crc32c_unmask(crc32c_mask(0x12345678u)), 0x12345678u);

    /* Extending in pieces (every split point, odd alignments) equals one call. */
    uint8_t buf[301];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131u + 7u);
    uint32_t whole = fn(0, buf + 1, 300);
    int split_bad = 0;
    for (size_t cut = 0; cut <= 300; cut++)
        if (fn(fn(0, buf + 1, cut), buf + 1 + cut, 300 - cut) != whole)
            split_bad++;
    snprintf(what, sizeof what, "%s split extends (bad splits)", name);
    bad += check(what, (uint32_t)split_bad, 0);
    /* Both paths agree with the dispatcher on every length. */
    int disagree = 0;
    for (size_t len = 0; len <= 300; len++)
        if (fn(0, buf, len) != crc32c_extend(0, buf, len))
            disagree++;
    snprintf(what, sizeof what, "%s agrees with crc32c_extend (bad lengths)", name);
    bad += check(what, (uint32_t)disagree, 0);
    return bad;
}

int main(void)
{
    int bad = run("table", crc32c_extend_table);
    if (crc32c_hw_available())
        bad += run("sse4.2", crc32c_extend_hw);
    else
        printf("note: this CPU has no SSE4.2: hardware path not tested\n");
    bad += check("crc32c() shorthand", crc32c("123456789", 9), 0xE3069283u);
    printf("%s (%d failures)\n", bad ? "FAIL" : "PASS", bad);
    return bad ? 1 : 0;
}
