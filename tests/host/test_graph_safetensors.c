/* safetensors: a graph's tensors round-trip bit-exactly with metadata; the file layout is the
 * format's (length, JSON, aligned data); odd names survive escaping; malformed headers are
 * refused with the file and byte offset; truncated and corrupted files never crash; loading
 * refuses missing, extra and mis-shaped tensors and skips PyTorch's num_batches_tracked. */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "graph.h"
#include "safetensors.h"
#include "services.h"
#include "test_graph_backend.h"

static registry *reg;
static tp_backend be;

static graph *tiny(const char *width, uint64_t seed)
{
    instance inst;
    const char *kv[] = {"depth=8", "shortcut=B", width, NULL};
    if (!test_instance(reg, TP_KIND_MODEL, "resnet", kv, &inst))
        return NULL;
    graph *g = test_build_graph(&inst, 3, 8, 8, 10);
    instance_destroy(&inst);
    if (g && (graph_bind(g, &be, 2, TP_LAYOUT_NCHW) != TP_OK || graph_init_params(g, seed))) {
        fprintf(stderr, "bind/init: %s\n", services_last_error());
        graph_free(g);
        return NULL;
    }
    return g;
}

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return b;
}

static void test_round_trip(const char *path)
{
    graph *a = tiny("width=16", 1), *b = tiny("width=16", 2);
    CHECK(a && b);
    if (!a || !b)
        return;
    const char *meta[] = {"format", "pt", "producer", "trainpipe \"test\"", NULL};
    CHECK(graph_save_safetensors(a, path, meta) == TP_OK);
    CHECK(graph_load_safetensors(b, path) == TP_OK);
    size_t n = graph_tensor_count(a), differ = 0;
    for (size_t i = 0; i < n; i++) {
        size_t count = (size_t)tp_tensor_count(graph_tensor_desc(a, i));
        float *x = malloc(count * sizeof *x), *y = malloc(count * sizeof *y);
        graph_tensor_get(a, i, x, count);
        graph_tensor_get(b, i, y, count);
        if (memcmp(x, y, count * sizeof *x) != 0)
            differ++;
        free(x);
        free(y);
    }
    printf("round trip: %zu tensors, %zu differ\n", n, differ);
    CHECK(differ == 0);

    safetensors_file *f;
    CHECK(safetensors_read(path, &f) == TP_OK);
    if (f) {
        CHECK(safetensors_count(f) == n);
        CHECK(strcmp(safetensors_metadata(f, "producer"), "trainpipe \"test\"") == 0);
        CHECK(safetensors_metadata(f, "absent") == NULL);
        const safetensors_entry *e = safetensors_find(f, "conv1.weight");
        CHECK(e && strcmp(e->dtype, "F32") == 0 && e->ndim == 4 && e->shape[0] == 16 &&
              e->shape[1] == 3 && e->shape[2] == 3 && e->shape[3] == 3);
        e = safetensors_find(f, "fc.weight");
        CHECK(e && e->ndim == 2 && e->shape[0] == 10 && e->shape[1] == 64);
        e = safetensors_find(f, "layer2.0.downsample.1.running_var");
        CHECK(e && e->ndim == 1 && e->shape[0] == 32);
        safetensors_free(f);
    }
    /* The raw layout: u64 LE length, JSON starting with '{', data 8-byte aligned. */
    size_t size;
    uint8_t *raw = slurp(path, &size);
    CHECK(raw != NULL);
    if (raw) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | raw[i];
        uint64_t floats = 0;
        for (size_t i = 0; i < n; i++)
            floats += (uint64_t)tp_tensor_count(graph_tensor_desc(a, i));
        CHECK(raw[8] == '{' && (8 + hl) % 8 == 0 && size == 8 + hl + 4 * floats);
        /* Every truncation and a sweep of corrupted header bytes must fail cleanly or load. */
        int crashes_avoided = 0;
        for (size_t cut = 0; cut < size; cut += (cut < 8 + hl + 64 ? 1 : 997)) {
            safetensors_file *t = NULL;
            CHECK(safetensors_parse(raw, cut, "truncated", &t) != TP_OK);
            safetensors_free(t);
            crashes_avoided++;
        }
        tp_rng r = tp_rng_make(5, 0, 0);
        for (int k = 0; k < 2000; k++) {
            uint8_t *copy = malloc(size);
            memcpy(copy, raw, size);
            size_t at = 8 + tp_rng_below(&r, hl);
            copy[at] = (uint8_t)tp_rng_below(&r, 256);
            safetensors_file *t = NULL;
            if (safetensors_parse(copy, size, "corrupted", &t) == TP_OK)
                safetensors_free(t);
            free(copy);
            crashes_avoided++;
        }
        printf("truncated/corrupted images handled: %d\n", crashes_avoided);
        free(raw);
    }
    graph_free(a);
    graph_free(b);
}

static void test_names(const char *path)
{
    const int64_t shape[2] = {2, 3};
    const float data[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    const int64_t scalar_shape[1] = {0};
    const safetensors_input in[] = {
        {"a \"quoted\" \\ name\t\xc3\xa9", 2, shape, data, 0},
        {"empty", 1, scalar_shape, data, 0},
    };
    CHECK(safetensors_write(path, in, 2, NULL) == TP_OK);
    safetensors_file *f;
    CHECK(safetensors_read(path, &f) == TP_OK);
    if (!f)
        return;
    const safetensors_entry *e = safetensors_find(f, in[0].name);
    CHECK(e && e->count == 6 && memcmp(e->data, data, sizeof data) == 0);
    e = safetensors_find(f, "empty");
    CHECK(e && e->count == 0 && e->nbytes == 0);
    safetensors_free(f);
}

/* A file image: header length, the JSON text, then `data_len` data bytes. */
static tp_status parse_image(const char *json, size_t data_len)
{
    size_t n = strlen(json);
    uint8_t *buf = calloc(1, 8 + n + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    safetensors_file *f = NULL;
    services_clear_error();
    tp_status st = safetensors_parse(buf, 8 + n + data_len, "bad.safetensors", &f);
    safetensors_free(f);
    free(buf);
    return st;
}

static void test_malformed(void)
{
    static const struct {
        const char *json;
        size_t data_len;
        const char *needle;
    } cases[] = {
        {"[]", 0, "must be a JSON object"},
        {"{\"a", 0, "unterminated string"},
        {"{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "do not match"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, "past the end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap or overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "gap or overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6, "follow the last"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "used twice"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "needs dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "leading zero"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "fraction"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
         4, "too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,4]}}", 4, "too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "end before"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
         "unknown or repeated key"},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "unknown or repeated key"},
        {"{} x", 0, "trailing bytes"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "values must be strings"},
        /* An empty first one went unnoticed. */
        {"{\"__metadata__\":{},\"__metadata__\":{\"k\":\"v\"}}", 0, "given twice"},
        {"{\"a\\q\":{}}", 0, "bad escape"},
        {"{\"a\x01\":{}}", 0, "control character"},
        {"{\"\\ud800x\":{}}", 0, "surrogate"},
        {"{\"\\u00zz\":{}}", 0, "bad hex digit"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "too many elements"},
        {"{\"a\" {}}", 0, "expected ':'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4,
         "expected a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tp_status st = parse_image(cases[i].json, cases[i].data_len);
        CHECK(st == TP_ERR_FORMAT);
        CHECK_CONTAINS(services_last_error(), cases[i].needle);
        CHECK_CONTAINS(services_last_error(), "bad.safetensors: byte ");
        printf("refused: %s\n", services_last_error());
    }
    /* Too short, and a length that does not fit. */
    safetensors_file *f = NULL;
    CHECK(safetensors_parse((const uint8_t *)"\x02\0\0", 3, "short", &f) == TP_ERR_FORMAT);
    CHECK_CONTAINS(services_last_error(), "too short");
    CHECK(safetensors_parse((const uint8_t *)"\xff\0\0\0\0\0\0\0{}", 10, "long", &f) ==
          TP_ERR_FORMAT);
    CHECK_CONTAINS(services_last_error(), "does not fit");
    /* Accepted: empty object, padding spaces, metadata only, escapes. */
    CHECK(parse_image("{}", 0) == TP_OK);
    CHECK(parse_image("{ }      ", 0) == TP_OK);
    CHECK(parse_image("{\"__metadata__\":{\"a\":\"b\\u00e9\\n\"}}", 0) == TP_OK);
    CHECK(parse_image("{\"\\ud83d\\ude00\":{\"dtype\":\"BF16\",\"shape\":[2,1],"
                      "\"data_offsets\":[0,4]}}", 4) == TP_OK);
    CHECK(safetensors_read("/nonexistent/x.safetensors", &f) == TP_ERR_IO);
    CHECK_CONTAINS(services_last_error(), "/nonexistent/x.safetensors");
}

/* Only floating-point tensors convert to f32, empty ones included: the dtype used to be
 * checked per element, so an empty U8 tensor converted (found by tests/fuzz). */
static void test_to_f32_dtypes(void)
{
    static const char json[] = "{\"empty\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                               "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}";
    uint8_t image[8 + sizeof json + 1] = {0};
    size_t n = sizeof json - 1;
    image[0] = (uint8_t)n;
    memcpy(image + 8, json, n);
    memcpy(image + 8 + n, "\x00\x3c", 2); /* 1.0 in half precision */
    safetensors_file *f = NULL;
    CHECK(safetensors_parse(image, 8 + n + 2, "dtypes", &f) == TP_OK);
    if (!f)
        return;
    float v = 0;
    CHECK(safetensors_to_f32(safetensors_find(f, "empty"), "t", &v) == TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(services_last_error(), "tensor empty has dtype U8");
    CHECK(safetensors_to_f32(safetensors_find(f, "h"), "t", &v) == TP_OK && v == 1.0f);
    safetensors_free(f);
}

static void test_load_checks(const char *path, const char *path2)
{
    graph *a = tiny("width=16", 1), *w8 = tiny("width=8", 1);
    CHECK(a && w8);
    if (!a || !w8)
        return;
    CHECK(graph_save_safetensors(w8, path, NULL) == TP_OK);
    CHECK(graph_load_safetensors(a, path) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "conv1.weight has shape [8x3x3x3], the model needs "
                                          "[16x3x3x3]");
    printf("refused: %s\n", services_last_error());

    /* A file with one tensor fewer, one extra, and PyTorch's counters. */
    size_t n = graph_tensor_count(a);
    safetensors_input *in = calloc(n + 2, sizeof *in);
    float **bufs = calloc(n + 2, sizeof *bufs);
    static const int64_t one = 1;
    static const float zero = 0;
    for (size_t i = 0; i < n; i++) {
        const tp_tensor *d = graph_tensor_desc(a, i);
        size_t count = (size_t)tp_tensor_count(d);
        bufs[i] = malloc(count * sizeof(float));
        graph_tensor_get(a, i, bufs[i], count);
        in[i] = (safetensors_input){graph_tensor_name(a, i), d->ndim, d->shape, bufs[i], 0};
    }
    in[n] = (safetensors_input){"bn1.num_batches_tracked", 1, &one, &zero, 0};
    CHECK(safetensors_write(path2, in, n + 1, NULL) == TP_OK);
    CHECK(graph_load_safetensors(a, path2) == TP_OK); /* the counter is skipped */
    in[n] = (safetensors_input){"head.weight", 1, &one, &zero, 0};
    CHECK(safetensors_write(path2, in, n + 1, NULL) == TP_OK);
    CHECK(graph_load_safetensors(a, path2) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "head.weight is not in the model");
    CHECK(safetensors_write(path2, in, n - 1, NULL) == TP_OK);
    CHECK(graph_load_safetensors(a, path2) == TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(services_last_error(), "fc.bias is missing");
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(in);
    graph_free(a);
    graph_free(w8);
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "model-resnet.so") != TP_OK) {
        fprintf(stderr, "model-resnet.so not built\n");
        return 1;
    }
    be = naive_backend(1);
    char path[64], path2[64];
    snprintf(path, sizeof path, "test_graph_safetensors.%ld.a", (long)getpid());
    snprintf(path2, sizeof path2, "test_graph_safetensors.%ld.b", (long)getpid());
    test_round_trip(path);
    test_names(path2);
    test_malformed();
    test_to_f32_dtypes();
    test_load_checks(path, path2);
    unlink(path);
    unlink(path2);
    CHECK(naive_backend_live_allocations() == 0);
    registry_free(reg);
    return CHECK_EXIT();
}
