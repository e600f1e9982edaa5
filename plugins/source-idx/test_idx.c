/* source-idx on small IDX files written by the test: raw and gzipped files give the exact
 * pixels and labels written; folder + split picks the standard names; class names follow the
 * folder name; corrupt files fail with a message naming the file and the byte offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"
#include "params.h"
#include "registry.h"
#include "services.h"

#define N 7
#define ROWS 5
#define COLS 4

static const registry_entry *entry;
static int failed;

static uint8_t pixel(int i, int r, int c) { return (uint8_t)(i * 37 + r * 11 + c * 3 + 1); }
static uint8_t label_of(int i) { return (uint8_t)((i * 3) % 10); }

/* An IDX image file's bytes (malloc'ed); count images of ROWS x COLS. */
static uint8_t *images_bytes(uint32_t magic, int count, size_t *len)
{
    *len = 16 + (size_t)count * ROWS * COLS;
    uint8_t *b = malloc(*len);
    uint32_t hdr[4] = {magic, (uint32_t)count, ROWS, COLS};
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++)
            b[4 * k + j] = (uint8_t)(hdr[k] >> (24 - 8 * j));
    for (int i = 0; i < count; i++)
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < COLS; c++)
                b[16 + (size_t)i * ROWS * COLS + r * COLS + c] = pixel(i, r, c);
    return b;
}

static uint8_t *labels_bytes(int count, size_t *len)
{
    *len = 8 + (size_t)count;
    uint8_t *b = malloc(*len);
    uint8_t hdr[8] = {0, 0, 8, 1, 0, 0, 0, (uint8_t)count};
    memcpy(b, hdr, 8);
    for (int i = 0; i < count; i++)
        b[8 + i] = label_of(i);
    return b;
}

static void write_raw(const char *path, const uint8_t *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, len, f) != len) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void write_gz(const char *path, const uint8_t *b, size_t len)
{
    gzFile g = gzopen(path, "wb9");
    if (!g || gzwrite(g, b, (unsigned)len) != (int)len) {
        perror(path);
        exit(1);
    }
    gzclose(g);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Opens a source with the given parameters; checks count, shape, every pixel and label and
 * the first class name. */
static void expect_ok(const char *what, const char *const *kv, const char *first_class)
{
    instance inst = {0};
    tp_image img = {0};
    const tp_source_ops *ops = entry->component->ops;
    tp_source_open_args args = {.size = sizeof(args), .rank = 0, .world_size = 1};
    tp_source_info info = {.size = sizeof(info)};
    int bad = 0;
    if (instance_create(entry->component, kv, &inst) || ops->open(inst.self, &args, &info)) {
        printf("FAIL %s: %s\n", what, services_last_error());
        failed++;
        goto done;
    }
    if (info.count != N || info.height != ROWS || info.width != COLS || info.channels != 1 ||
        info.num_classes != 10) {
        printf("FAIL %s: info %lld %dx%dx%d %d\n", what, (long long)info.count, info.height,
               info.width, info.channels, info.num_classes);
        failed++;
        goto done;
    }
    int max_diff = 0;
    for (int i = N - 1; i >= 0; i--) {
        int32_t label;
        if (ops->read(inst.self, NULL, i, &img, &label)) {
            bad++;
            continue;
        }
        bad += label != label_of(i);
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < COLS; c++) {
                int d = abs((int)img.data[r * COLS + c] - (int)pixel(i, r, c));
                max_diff = d > max_diff ? d : max_diff;
            }
    }
    const char *name = info.class_names ? info.class_names[0] : "(none)";
    int name_ok = strcmp(name, first_class) == 0;
    printf("%s %s: max pixel difference %d, %d bad labels, class 0 = \"%s\"\n",
           (bad || max_diff || !name_ok) ? "FAIL" : "ok  ", what, max_diff, bad, name);
    failed += bad || max_diff || !name_ok;
done:
    free(img.data);
    instance_destroy(&inst);
}

/* Opening must fail with `status` and a message containing each of the given strings. */
static void expect_fail(const char *what, const char *const *kv, tp_status status,
                        const char *s1, const char *s2)
{
    instance inst = {0};
    const tp_source_ops *ops = entry->component->ops;
    tp_source_open_args args = {.size = sizeof(args), .rank = 0, .world_size = 1};
    tp_source_info info = {.size = sizeof(info)};
    services_clear_error();
    tp_status st = instance_create(entry->component, kv, &inst);
    if (!st)
        st = ops->open(inst.self, &args, &info);
    const char *msg = services_last_error();
    int ok = st == status && strchr(msg, '\n') == NULL && (!s1 || strstr(msg, s1)) &&
             (!s2 || strstr(msg, s2));
    printf("%s %s: %s: %s\n", ok ? "ok  " : "FAIL", what, tp_status_name(st), msg);
    failed += !ok;
    instance_destroy(&inst);
}

/* The memory parser itself on general IDX files the plugin does not accept. */
static void parser_cases(void)
{
    char err[256];
    idx_array a;
    /* f64, 2 x 1: 16 data bytes. */
    uint8_t f64[4 + 8 + 16] = {0, 0, 0x0e, 2, 0, 0, 0, 2, 0, 0, 0, 1};
    int ok = idx_parse(f64, sizeof(f64), &a, err, sizeof(err)) == 0 && a.type == IDX_F64 &&
             a.ndims == 2 && a.count == 2 && a.elem_size == 8 && a.data == f64 + 12;
    printf("%s parser: f64 2x1\n", ok ? "ok  " : "FAIL");
    failed += !ok;
    struct {
        uint8_t bytes[12];
        size_t len;
        const char *msg;
    } cases[] = {
        {{0, 0, 0x07, 1, 0, 0, 0, 0}, 8, "byte 2: unknown IDX element type 0x07"},
        {{0, 0, 0x08, 12}, 4, "byte 3: IDX dimension count 12"},
        {{0, 0, 0x08, 0}, 4, "byte 3: IDX dimension count 0"},
        {{1, 0, 0x08, 1}, 4, "byte 0: bad IDX magic"},
        {{0, 0, 0x08}, 3, "byte 3: truncated IDX header"},
        {{0, 0, 0x0c, 1, 0, 0, 0, 1, 1, 2}, 10, "byte 10: truncated IDX data"},
        {{0, 0, 0x08, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 12,
         "byte 12: truncated IDX data (the header promises 18446744065119617025"},
        {{0, 0, 0x0d, 1, 0, 0, 0, 0, 9}, 9, "byte 8: 1 unexpected bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = 0;
        int rc = idx_parse(cases[i].bytes, cases[i].len, &a, err, sizeof(err));
        ok = rc == -1 && strstr(err, cases[i].msg) != NULL;
        printf("%s parser case %zu: %s\n", ok ? "ok  " : "FAIL", i, err);
        failed += !ok;
    }
}

int main(void)
{
    const char *dir = getenv("TP_PLUGIN_DIR");
    char path[4096], tmp[] = "/tmp/tp-test-idx-XXXXXX";
    char digits[4200], fashion[4200], bad[4200], p1[4300], p2[4300], kv1[4400], kv2[4400];
    char off[64];
    snprintf(path, sizeof(path), "%s/source-idx.so", dir ? dir : ".libs");
    registry *r = registry_new();
    if (registry_load_file(r, path) || !(entry = registry_find(r, TP_KIND_SOURCE, "idx"))) {
        printf("FAIL load: %s\n", services_last_error());
        return 1;
    }
    parser_cases();
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    size_t ilen, llen;
    uint8_t *img = images_bytes(2051, N, &ilen), *lab = labels_bytes(N, &llen);

    /* digits-set: raw images, gzipped labels (train); fashion-set: both gzipped (t10k). */
    snprintf(digits, sizeof(digits), "%s/digits-set", tmp);
    snprintf(fashion, sizeof(fashion), "%s/My-Fashion-set", tmp);
    snprintf(bad, sizeof(bad), "%s/bad", tmp);
    mkdir(digits, 0700);
    mkdir(fashion, 0700);
    mkdir(bad, 0700);
    snprintf(p1, sizeof(p1), "%s/train-images-idx3-ubyte", digits);
    write_raw(p1, img, ilen);
    snprintf(p1, sizeof(p1), "%s/train-labels-idx1-ubyte.gz", digits);
    write_gz(p1, lab, llen);
    snprintf(p1, sizeof(p1), "%s/t10k-images-idx3-ubyte.gz", fashion);
    write_gz(p1, img, ilen);
    snprintf(p1, sizeof(p1), "%s/t10k-labels-idx1-ubyte.gz", fashion);
    write_gz(p1, lab, llen);

    snprintf(kv1, sizeof(kv1), "path=%s", digits);
    expect_ok("raw images + gz labels, split=train", (const char *[]){kv1, NULL}, "0");
    snprintf(kv1, sizeof(kv1), "path=%s", fashion);
    expect_ok("gz images + gz labels, split=test", (const char *[]){kv1, "split=test", NULL},
              "T-shirt/top");
    snprintf(kv1, sizeof(kv1), "images=%s/t10k-images-idx3-ubyte.gz", fashion);
    snprintf(kv2, sizeof(kv2), "labels=%s/train-labels-idx1-ubyte.gz", digits);
    expect_ok("explicit images= labels=, class_names=digits",
              (const char *[]){kv1, kv2, "class_names=digits", NULL}, "0");
    snprintf(kv1, sizeof(kv1), "path=%s", digits);
    expect_fail("split=test missing", (const char *[]){kv1, "split=test", NULL},
                TP_ERR_NOT_FOUND, "t10k-images-idx3-ubyte", NULL);
    snprintf(kv1, sizeof(kv1), "images=%s/train-images-idx3-ubyte", digits);
    expect_fail("images without labels", (const char *[]){kv1, NULL}, TP_ERR_INVALID,
                "both images and labels", NULL);

    /* Corrupt files: each in bad/, labels always the good gz file from digits-set. */
    snprintf(kv2, sizeof(kv2), "labels=%s/train-labels-idx1-ubyte.gz", digits);
    snprintf(p1, sizeof(p1), "%s/images", bad);
    snprintf(kv1, sizeof(kv1), "images=%s", p1);
    const char *kv[] = {kv1, kv2, NULL};

    uint8_t *wrong = images_bytes(2049, N, &ilen);
    write_raw(p1, wrong, ilen);
    expect_fail("labels magic in the image file", kv, TP_ERR_FORMAT, p1, "byte 0");
    free(wrong);

    write_raw(p1, img, ilen - 3);
    snprintf(off, sizeof(off), "byte %zu: truncated IDX data", ilen - 3);
    expect_fail("truncated pixels", kv, TP_ERR_FORMAT, p1, off);

    write_raw(p1, img, 10);
    expect_fail("truncated header", kv, TP_ERR_FORMAT, p1, "byte 10: truncated IDX header");

    uint8_t *longer = malloc(ilen + 5);
    memcpy(longer, img, ilen);
    memset(longer + ilen, 0, 5);
    write_raw(p1, longer, ilen + 5);
    snprintf(off, sizeof(off), "byte %zu: 5 unexpected bytes", ilen);
    expect_fail("trailing bytes", kv, TP_ERR_FORMAT, p1, off);

    longer[2] = 0x07;
    write_raw(p1, longer, ilen);
    expect_fail("unknown element type", kv, TP_ERR_FORMAT, p1, "byte 0: magic 1795");
    longer[2] = 0x08;
    longer[3] = 0x0c;
    write_raw(p1, longer, ilen);
    expect_fail("12 dimensions", kv, TP_ERR_FORMAT, p1, "byte 0: magic 2060");
    longer[3] = 0x03;
    longer[4] = longer[5] = longer[6] = longer[7] = 0xff;
    write_raw(p1, longer, ilen);
    expect_fail("huge count", kv, TP_ERR_FORMAT, p1, "truncated IDX data");
    free(longer);

    uint8_t *fewer = images_bytes(2051, N - 1, &ilen);
    write_raw(p1, fewer, ilen);
    expect_fail("6 images for 7 labels", kv, TP_ERR_FORMAT, p1, "6 images but");
    free(fewer);

    /* A gzip stream cut in half. */
    snprintf(p2, sizeof(p2), "%s/t10k-images-idx3-ubyte.gz", fashion);
    FILE *f = fopen(p2, "rb");
    uint8_t gz[4096];
    size_t gzlen = fread(gz, 1, sizeof(gz), f);
    fclose(f);
    snprintf(p1, sizeof(p1), "%s/images.gz", bad);
    write_raw(p1, gz, gzlen / 2);
    snprintf(kv1, sizeof(kv1), "images=%s", p1);
    snprintf(off, sizeof(off), "byte %zu: truncated gzip", gzlen / 2);
    expect_fail("truncated gzip", kv, TP_ERR_FORMAT, p1, off);
    /* Corrupt deflate data (the stored CRC no longer matches or the codes break). */
    for (size_t i = 12; i < gzlen - 8; i++)
        gz[i] ^= 0x5a;
    write_raw(p1, gz, gzlen);
    expect_fail("corrupt gzip", kv, TP_ERR_FORMAT, p1, "corrupt gzip data");
    printf("(files in %s: %ld bytes of gz)\n", tmp, file_size(p2));

    /* Clean up the temporary tree. */
    const char *files[] = {"digits-set/train-images-idx3-ubyte",
                           "digits-set/train-labels-idx1-ubyte.gz",
                           "My-Fashion-set/t10k-images-idx3-ubyte.gz",
                           "My-Fashion-set/t10k-labels-idx1-ubyte.gz", "bad/images",
                           "bad/images.gz", NULL};
    for (int i = 0; files[i]; i++) {
        snprintf(p1, sizeof(p1), "%s/%s", tmp, files[i]);
        unlink(p1);
    }
    rmdir(digits);
    rmdir(fashion);
    rmdir(bad);
    rmdir(tmp);
    free(img);
    free(lab);
    registry_free(r);
    printf("%s\n", failed ? "FAIL" : "PASS");
    return failed ? 1 : 0;
}
