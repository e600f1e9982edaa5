/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2 crc32 instruction when
 * the CPU has it, else a slicing-by-8 table computed once. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_table_once = PTHREAD_ONCE_INIT;

static void crc32c_table_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc32c_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc32c_table[0][c & 0xff] ^ (c >> 8);
            crc32c_table[k][n] = c;
        }
    }
}

/* The raw (un-xored) table update, 8 bytes per step. */
static uint32_t crc32c_raw_table(uint32_t c, const uint8_t *p, size_t len)
{
    pthread_once(&crc32c_table_once, crc32c_table_init);
    while (len && ((uintptr_t)p & 7)) {
        c = crc32c_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        /* The word is little-endian on every CPU this code is built for (x86-64, aarch64 LE). */
        uint32_t lo = (uint32_t)w ^ c, hi = (uint32_t)(w >> 32);
        c = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
            crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
            crc32c_table[3][hi & 0xff] ^ crc32c_table[2][(hi >> 8) & 0xff] ^
            crc32c_table[1][(hi >> 16) & 0xff] ^ crc32c_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = crc32c_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HAVE_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc32c_raw_hw(uint32_t c, const uint8_t *p,
                                                                 size_t len)
{
    uint64_t c64 = c;
    while (len && ((uintptr_t)p & 7)) {
        c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
    return (uint32_t)c64;
}
#else
#define CRC32C_HAVE_HW 0
#endif

/* -1 until detected; then 0 or 1. Racing first callers compute the same value. */
static int crc32c_use_hw = -1;

static int crc32c_detect_hw(void)
{
    int use = __atomic_load_n(&crc32c_use_hw, __ATOMIC_RELAXED);
    if (use < 0) {
#if CRC32C_HAVE_HW
        __builtin_cpu_init();
        use = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
        use = 0;
#endif
        __atomic_store_n(&crc32c_use_hw, use, __ATOMIC_RELAXED);
    }
    return use;
}

uint32_t crc32c_extend(uint32_t crc, const void *data, size_t len)
{
    uint32_t c = crc ^ 0xFFFFFFFFu;
#if CRC32C_HAVE_HW
    if (crc32c_detect_hw())
        return crc32c_raw_hw(c, data, len) ^ 0xFFFFFFFFu;
#else
    (void)crc32c_detect_hw;
#endif
    return crc32c_raw_table(c, data, len) ^ 0xFFFFFFFFu;
}

uint32_t crc32c_extend_table(uint32_t crc, const void *data, size_t len)
{
    return crc32c_raw_table(crc ^ 0xFFFFFFFFu, data, len) ^ 0xFFFFFFFFu;
}

uint32_t crc32c_extend_hw(uint32_t crc, const void *data, size_t len)
{
#if CRC32C_HAVE_HW
    if (crc32c_detect_hw())
        return crc32c_raw_hw(crc ^ 0xFFFFFFFFu, data, len) ^ 0xFFFFFFFFu;
#endif
    return crc32c_extend_table(crc, data, len);
}

int crc32c_hw_available(void)
{
    return crc32c_detect_hw();
}
