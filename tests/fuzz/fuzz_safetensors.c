// fuzz-sources: host/safetensors.c host/services.c
// fuzz-cflags: -I. -Isdk -Ihost -ffunction-sections -fdata-sections
// fuzz-ldflags: -Wl,--gc-sections,-z,start-stop-gc -lm
// fuzz-seeds: tests/fuzz/seeds/safetensors
/* libFuzzer target: the safetensors reader (checkpoints and weights given to --resume and
 * init_from) on arbitrary bytes. A parse must end in a one-line error naming the file, or
 * in entries whose bytes are the input's and tile its data section; every entry converts
 * to f32 (or is refused in one line), and the floating-point ones survive a write and a
 * read back. The graph code in safetensors.c is unused here: the linker drops it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "services.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LABEL "fuzz.safetensors"

#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        if (!(cond))                                                                           \
            __builtin_trap();                                                                  \
    } while (0)

static void require_one_line_naming_file(void)
{
    const char *err = services_last_error();
    REQUIRE(!strchr(err, '\n') && !strchr(err, '\r'));
    REQUIRE(strncmp(err, LABEL ": ", strlen(LABEL ": ")) == 0);
}

static int is_float_dtype(const char *dtype)
{
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F64") || !strcmp(dtype, "F16") ||
           !strcmp(dtype, "BF16");
}

/* The entry's description agrees with itself and its bytes are the input's, at its place
 * in the data section (which starts at data_start of the input, `base` in the copy). */
static void check_entry(const safetensors_file *f, const safetensors_entry *e,
                        const uint8_t *base, const uint8_t *data, size_t data_start, size_t size)
{
    REQUIRE(safetensors_find(f, e->name) == e);
    REQUIRE(e->ndim >= 0 && e->ndim <= SAFETENSORS_MAX_DIMS && e->elem_size);
    int64_t count = 1;
    for (int d = 0; d < e->ndim; d++)
        count *= e->shape[d]; /* parse_header() checked that this cannot overflow */
    REQUIRE(count == e->count && (size_t)count * e->elem_size == e->nbytes);
    REQUIRE(e->data >= base);
    size_t offset = (size_t)(e->data - base);
    REQUIRE(offset <= size - data_start && e->nbytes <= size - data_start - offset);
    REQUIRE(!e->nbytes || memcmp(e->data, data + data_start + offset, e->nbytes) == 0);
}

/* Converts e to f32; only the floating-point dtypes may be converted. */
static float *convert(const safetensors_entry *e)
{
    float *out = malloc(e->count ? (size_t)e->count * sizeof *out : 1);
    REQUIRE(out);
    if (safetensors_to_f32(e, LABEL, out) != TP_OK) {
        REQUIRE(!is_float_dtype(e->dtype));
        require_one_line_naming_file();
        free(out);
        return NULL;
    }
    REQUIRE(is_float_dtype(e->dtype));
    volatile float sink = 0; /* read every value: uninitialised or stray ones show under ASan */
    for (int64_t i = 0; i < e->count; i++)
        sink += out[i];
    (void)sink;
    return out;
}

/* Writes the F32 and I64 entries back out and reads the image: the same names, shapes and
 * bytes must come back. */
static void round_trip(const safetensors_file *f)
{
    size_t n = safetensors_count(f), kept = 0;
    safetensors_input *in = calloc(n ? n : 1, sizeof *in);
    REQUIRE(in);
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        int is_i64 = !strcmp(e->dtype, "I64");
        if (is_i64 || !strcmp(e->dtype, "F32"))
            in[kept++] = (safetensors_input){e->name, e->ndim, e->shape, e->data, is_i64};
    }
    const char *metadata[] = {"format", "pt", NULL};
    uint8_t *image;
    size_t image_size;
    REQUIRE(safetensors_serialize(in, kept, metadata, LABEL, &image, &image_size) == TP_OK);
    safetensors_file *back;
    REQUIRE(safetensors_parse(image, image_size, LABEL, &back) == TP_OK);
    REQUIRE(safetensors_count(back) == kept);
    REQUIRE(strcmp(safetensors_metadata(back, "format"), "pt") == 0);
    for (size_t i = 0; i < kept; i++) {
        const safetensors_entry *e = safetensors_find(back, in[i].name);
        REQUIRE(e && e->ndim == in[i].ndim);
        REQUIRE(strcmp(e->dtype, in[i].is_i64 ? "I64" : "F32") == 0);
        REQUIRE(!memcmp(e->shape, in[i].shape, (size_t)e->ndim * sizeof *e->shape));
        const safetensors_entry *original = safetensors_find(f, in[i].name);
        REQUIRE(e->nbytes == original->nbytes);
        REQUIRE(!e->nbytes || memcmp(e->data, original->data, e->nbytes) == 0);
    }
    safetensors_free(back);
    free(image);
    free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    safetensors_file *f;
    if (safetensors_parse(data, size, LABEL, &f) != TP_OK) {
        require_one_line_naming_file();
        REQUIRE(!f);
        return 0;
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | data[i];
    size_t data_start = 8 + (size_t)header_len;

    /* The data section starts where the lowest entry's data does (the entries tile it). */
    size_t n = safetensors_count(f), total = 0;
    const uint8_t *base = NULL;
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        REQUIRE(e);
        if (!base || e->data < base)
            base = e->data;
        total += e->nbytes;
    }
    REQUIRE(total == size - data_start);
    REQUIRE(!safetensors_at(f, n) && !safetensors_find(f, "__metadata__"));
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        check_entry(f, e, base, data, data_start, size);
        free(convert(e));
    }
    const char *format = safetensors_metadata(f, "format");
    REQUIRE(!format || strlen(format) <= size);
    round_trip(f);
    safetensors_free(f);
    return 0;
}
