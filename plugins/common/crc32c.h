/* CRC32C (Castagnoli) and TFRecord's masked CRC, shared by source-tfrecord and
 * log-tensorboard. Uses the SSE4.2 crc32 instruction when the CPU has it. */
#ifndef TRAINPIPE_COMMON_CRC32C_H
#define TRAINPIPE_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC32C: start with crc = 0 (the init/final xors are applied inside). */
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t len);
static inline uint32_t crc32c(const void *data, size_t len) { return crc32c_extend(0, data, len); }

/* TFRecord's mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8. */
static inline uint32_t crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
static inline uint32_t crc32c_unmask(uint32_t masked)
{
    uint32_t rot = masked - 0xa282ead8u;
    return (rot >> 17) | (rot << 15);
}

/* The two implementations, for tests and benchmarks: crc32c_extend() picks one.
 * crc32c_extend_hw() falls back to the table when the CPU lacks SSE4.2. */
uint32_t crc32c_extend_table(uint32_t crc, const void *data, size_t len);
uint32_t crc32c_extend_hw(uint32_t crc, const void *data, size_t len);
/* Non-zero when crc32c_extend() uses the SSE4.2 instruction. */
int crc32c_hw_available(void);

#endif
