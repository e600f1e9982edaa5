// fuzz-sources: host/checkpoint.c host/safetensors.c host/services.c host/atomic_file.c
// fuzz-cflags: -I. -Isdk -Ihost -ffunction-sections -fdata-sections
// fuzz-ldflags: -Wl,--gc-sections,-z,start-stop-gc -llz4 -lz -lm
// fuzz-seeds: tests/fuzz/seeds/checkpoint tests/fuzz/seeds/safetensors
/* libFuzzer target: checkpoint_decode() (what --resume, eval and export read) on three views
 * of each input, since random bytes almost never get past the header's CRC-32:
 *   1. the input as it is;
 *   2. the input with a sound header (magic, version, flags and header CRC made right, the
 *      payload size and CRC kept), so the size checks and the LZ4 frame decoder see fuzzed
 *      frames;
 *   3. the input as a payload, wrapped the way checkpoint_write() wraps it (and in variants
 *      the format allows or forbids), so the safetensors parser sees fuzzed data behind
 *      valid checksums. An honest container must decode exactly as its payload parses.
 * Every failure must be one line naming the label; every success a file whose entries can
 * be walked. The graph code in safetensors.c is unused here: the linker drops it. */
#include <lz4frame.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "services.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LABEL "fuzz.ckpt"

#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        if (!(cond))                                                                           \
            __builtin_trap();                                                                  \
    } while (0)

static void require_one_line_naming_label(void)
{
    const char *err = services_last_error();
    REQUIRE(!strchr(err, '\n') && !strchr(err, '\r'));
    REQUIRE(strncmp(err, LABEL ": ", strlen(LABEL ": ")) == 0);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The checksum checkpoint.h names: zlib's CRC-32. The inputs here are far below uInt's range. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Every entry is reachable by name and index, describes itself consistently, and its bytes
 * can be read (ASan sees a stray pointer). */
static void walk_entries(const safetensors_file *f)
{
    size_t n = safetensors_count(f);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        REQUIRE(e && e->name && safetensors_find(f, e->name) == e);
        REQUIRE(e->ndim >= 0 && e->ndim <= SAFETENSORS_MAX_DIMS && e->elem_size);
        int64_t count = 1;
        for (int d = 0; d < e->ndim; d++)
            count *= e->shape[d];
        REQUIRE(count == e->count && (size_t)count * e->elem_size == e->nbytes);
        for (size_t b = 0; b < e->nbytes; b++)
            sink ^= e->data[b];
    }
    (void)sink;
    REQUIRE(!safetensors_at(f, n));
}

/* Decodes an image; returns the file or NULL after checking the message. */
static safetensors_file *decode(const uint8_t *image, size_t size)
{
    safetensors_file *f;
    if (checkpoint_decode(image, size, LABEL, &f) != TP_OK) {
        REQUIRE(!f);
        require_one_line_naming_label();
        return NULL;
    }
    REQUIRE(f);
    walk_entries(f);
    return f;
}

/* Two parses of the same payload must agree entry by entry. */
static void require_same(const safetensors_file *a, const safetensors_file *b)
{
    REQUIRE(safetensors_count(a) == safetensors_count(b));
    for (size_t i = 0; i < safetensors_count(a); i++) {
        const safetensors_entry *x = safetensors_at(a, i), *y = safetensors_at(b, i);
        REQUIRE(!strcmp(x->name, y->name) && !strcmp(x->dtype, y->dtype));
        REQUIRE(x->ndim == y->ndim && x->nbytes == y->nbytes);
        REQUIRE(!memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof *x->shape));
        REQUIRE(!x->nbytes || !memcmp(x->data, y->data, x->nbytes));
    }
}

/* View 2: the input's header made sound, its payload size, payload CRC and frame kept. */
static void decode_with_sound_header(const uint8_t *data, size_t size)
{
    if (size < CHECKPOINT_HEADER_SIZE)
        return;
    uint8_t *image = malloc(size);
    REQUIRE(image);
    memcpy(image, data, size);
    memcpy(image, CHECKPOINT_MAGIC, 8);
    put_u32(image + 8, CHECKPOINT_VERSION);
    put_u32(image + 12, 0);
    put_u32(image + 28, crc32_of(image, 28));
    safetensors_free(decode(image, size));
    free(image);
}

/* How view 3 wraps the payload: what checkpoint_write() does, other frames the format
 * allows (the reader must take them), and damage it must refuse. */
enum wrapping {
    WRAP_AS_WRITER,         /* content size and checksum, 4 MiB blocks */
    WRAP_SMALL_BLOCKS,      /* 64 KiB linked blocks with block checksums */
    WRAP_NO_CONTENT_SIZE,   /* the frame does not announce its size */
    WRAP_SIZE_ONE_MORE,     /* the header announces one byte more than the frame holds */
    WRAP_SIZE_ONE_LESS,     /* ... one byte less */
    WRAP_SIZE_HUGE,         /* ... far more than any frame of this length can hold */
    WRAP_TRAILING_BYTE,     /* a byte after the frame */
    WRAP_TRUNCATED,         /* the frame's last byte missing */
    WRAP_COUNT
};

static void decode_wrapped(const uint8_t *payload, size_t size, enum wrapping how,
                           const safetensors_file *direct)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.contentSize = size;
    prefs.frameInfo.blockSizeID = LZ4F_max4MB;
    if (how == WRAP_SMALL_BLOCKS) {
        prefs.frameInfo.blockSizeID = LZ4F_max64KB;
        prefs.frameInfo.blockMode = LZ4F_blockLinked;
        prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
    } else if (how == WRAP_NO_CONTENT_SIZE) {
        prefs.frameInfo.contentSize = 0;
    }
    size_t bound = LZ4F_compressFrameBound(size, &prefs);
    uint8_t *image = malloc(CHECKPOINT_HEADER_SIZE + bound + 1);
    REQUIRE(image);
    size_t frame_size =
        LZ4F_compressFrame(image + CHECKPOINT_HEADER_SIZE, bound, payload, size, &prefs);
    REQUIRE(!LZ4F_isError(frame_size));
    size_t image_size = CHECKPOINT_HEADER_SIZE + frame_size;
    uint64_t announced = size;
    if (how == WRAP_SIZE_ONE_MORE)
        announced = (uint64_t)size + 1;
    else if (how == WRAP_SIZE_ONE_LESS && size > 0)
        announced = size - 1;
    else if (how == WRAP_SIZE_HUGE)
        announced = (uint64_t)1 << 39;
    else if (how == WRAP_TRAILING_BYTE)
        image[image_size++] = 0;
    else if (how == WRAP_TRUNCATED)
        image_size--;
    memcpy(image, CHECKPOINT_MAGIC, 8);
    put_u32(image + 8, CHECKPOINT_VERSION);
    put_u32(image + 12, 0);
    put_u64(image + 16, announced);
    put_u32(image + 24, crc32_of(payload, size));
    put_u32(image + 28, crc32_of(image, 28));

    safetensors_file *f = decode(image, image_size);
    int honest = how == WRAP_AS_WRITER || how == WRAP_SMALL_BLOCKS || how == WRAP_NO_CONTENT_SIZE ||
                 (how == WRAP_SIZE_ONE_LESS && size == 0);
    if (!honest) {
        REQUIRE(!f);
    } else if (direct) {
        REQUIRE(f);
        require_same(f, direct);
    } else {
        REQUIRE(!f);
    }
    safetensors_free(f);
    free(image);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    safetensors_free(decode(data, size));
    decode_with_sound_header(data, size);

    /* View 3: the payload's own verdict first, then it wrapped as written and in one
     * variant picked by the input (so each variant sees many payloads). */
    safetensors_file *direct;
    char direct_error[1024] = "";
    if (safetensors_parse(data, size, LABEL, &direct) != TP_OK)
        snprintf(direct_error, sizeof direct_error, "%s", services_last_error());
    decode_wrapped(data, size, WRAP_AS_WRITER, direct);
    if (!direct) /* the container is fine, so the payload's message must come through */
        REQUIRE(!strcmp(services_last_error(), direct_error));
    enum wrapping variant = (enum wrapping)(1 + (size ? data[size - 1] : 0) % (WRAP_COUNT - 1));
    decode_wrapped(data, size, variant, direct);
    if (variant != WRAP_SIZE_HUGE) /* the size field's lie that once reached malloc() */
        decode_wrapped(data, size, WRAP_SIZE_HUGE, direct);
    safetensors_free(direct);
    return 0;
}
