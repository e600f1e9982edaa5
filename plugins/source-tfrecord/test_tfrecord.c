/* source-tfrecord on shards written by the test (tfrecord_fixtures.c): framing and index
 * parsing over memory; then the plugin itself on good shards, a bad data CRC, a bad length
 * CRC, a truncated tail, GZIP and ZLIB shards, a DALI index, CMYK / grayscale / PNG / junk
 * images and out-of-range labels; and the choice of scaled decoding. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "jpeg_decode.h"
#include "params.h"
#include "registry.h"
#include "services.h"
#include "tfrecord.h"
#include "tfrecord_fixtures.h"

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

static char dir[256];

static const char *path_in(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

/* Image i of the test set: sizes differ per sample; label 1..1000 stored (1-based). */
static int img_h(int i) { return 40 + 8 * (i % 5); }
static int img_w(int i) { return 56 + 16 * (i % 3); }
static int64_t img_label(int i) { return 1 + (i * 37) % 1000; }

/* Appends framed ImageNet-style records for images first..first+n-1. */
static void add_records(fx_buf *file, int first, int n)
{
    for (int i = first; i < first + n; i++) {
        size_t jl;
        uint8_t *j = fx_jpeg(img_h(i), img_w(i), FX_RGB, 95, 0, &jl);
        fx_buf ex = {0};
        fx_imagenet_example(&ex, j, jl, img_h(i), img_w(i), img_label(i));
        fx_frame(file, ex.data, ex.len);
        fx_free(&ex);
        free(j);
    }
}

/* Largest |decoded - pattern| over an image. */
static int pattern_diff(const tp_image *im, int channels)
{
    int worst = 0;
    for (int y = 0; y < im->height; y++)
        for (int x = 0; x < im->width; x++) {
            uint8_t rgb[3];
            fx_pattern(y, x, im->height, im->width, 0, rgb);
            const uint8_t *p = im->data + ((size_t)y * (size_t)im->width + (size_t)x) *
                                              (size_t)im->channels;
            for (int c = 0; c < channels; c++) {
                int want = channels == 1 ? rgb[1] : rgb[c];
                int d = abs(p[c] - want);
                if (d > worst)
                    worst = d;
            }
        }
    return worst;
}

/* ------------------------------------------------------------------ memory-level tests */

static void test_framing(void)
{
    fx_buf f = {0};
    add_records(&f, 0, 3);
    tfrecord_memory m = {f.data, f.len};
    tfrecord_index idx = {0};
    tfrecord_end end;
    uint64_t at;
    CHECK(tfrecord_scan(tfrecord_read_memory, &m, f.len, 1, &idx, &end, &at) == 0 &&
              end == TFRECORD_END_CLEAN && idx.count == 3 && at == f.len,
          "clean scan: %zu records, end %d", idx.count, (int)end);
    uint64_t rec2 = idx.count == 3 ? idx.entries[2].offset : 0;
    for (size_t i = 0; i < idx.count; i++) {
        const uint8_t *d;
        size_t len;
        const char *why = "";
        CHECK(tfrecord_check_record(f.data + idx.entries[i].offset, idx.entries[i].size, 1, &d,
                                    &len, &why) == 0,
              "record %zu: %s", i, why);
    }
    /* A flipped data byte: the scan still indexes it; the record check names the data CRC. */
    fx_buf g = {0};
    fx_put(&g, f.data, f.len);
    g.data[idx.entries[1].offset + 40] ^= 0x55;
    const uint8_t *d;
    size_t len;
    const char *why = "";
    CHECK(tfrecord_check_record(g.data + idx.entries[1].offset, idx.entries[1].size, 1, &d, &len,
                                &why) != 0 &&
              strstr(why, "data CRC"),
          "bad data CRC not caught (%s)", why);
    CHECK(tfrecord_check_record(g.data + idx.entries[1].offset, idx.entries[1].size, 0, &d, &len,
                                &why) == 0,
          "verify_crc = 0 still checks");
    /* A flipped length byte of record 2: the rest is dropped at its offset. */
    g.data[rec2 + 1] ^= 0x01;
    tfrecord_index idx2 = {0};
    m = (tfrecord_memory){g.data, g.len};
    CHECK(tfrecord_scan(tfrecord_read_memory, &m, g.len, 1, &idx2, &end, &at) == 0 &&
              end == TFRECORD_END_BAD_LENGTH && at == rec2 && idx2.count == 2,
          "bad length CRC: end %d at %llu (want %llu), %zu records", (int)end,
          (unsigned long long)at, (unsigned long long)rec2, idx2.count);
    tfrecord_index_free(&idx2);
    /* Every truncation ends in TRUNCATED at the last whole record (or CLEAN at a boundary). */
    int bad_cuts = 0;
    for (size_t cut = 0; cut < f.len; cut++) {
        tfrecord_index t = {0};
        m = (tfrecord_memory){f.data, cut};
        int ok = tfrecord_scan(tfrecord_read_memory, &m, cut, 1, &t, &end, &at) == 0;
        size_t whole = 0;
        for (size_t i = 0; i < idx.count; i++)
            if (idx.entries[i].offset + idx.entries[i].size <= cut)
                whole++;
        int boundary = cut == 0 || (whole && idx.entries[whole - 1].offset +
                                                     idx.entries[whole - 1].size == cut);
        if (!ok || t.count != whole || end != (boundary ? TFRECORD_END_CLEAN : TFRECORD_END_TRUNCATED))
            bad_cuts++;
        tfrecord_index_free(&t);
    }
    CHECK(bad_cuts == 0, "%d truncation points misreported", bad_cuts);

    /* DALI text index: accepted, written back identically; malformed lines refused. */
    char text[512];
    int n = 0;
    for (size_t i = 0; i < idx.count; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, "%llu %llu\n",
                      (unsigned long long)idx.entries[i].offset,
                      (unsigned long long)idx.entries[i].size);
    tfrecord_index p = {0};
    size_t bad_line = 99;
    CHECK(tfrecord_index_parse(text, (size_t)n, f.len, &p, &bad_line) == 0 && p.count == 3 &&
              memcmp(p.entries, idx.entries, 3 * sizeof *p.entries) == 0,
          "DALI index not parsed (line %zu)", bad_line);
    tfrecord_index_free(&p);
    const char *bad_texts[] = {"0 15\n", "0 20\n10 20\n", "x 20\n", "0 20 30\n", "5\n",
                               "0 99999999\n", "-1 20\n"};
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        CHECK(tfrecord_index_parse(bad_texts[i], strlen(bad_texts[i]), f.len, &p, &bad_line) != 0,
              "bad index '%s' accepted", bad_texts[i]);
        tfrecord_index_free(&p);
    }
    CHECK(tfrecord_index_parse("\n0 16\r\n\n", 8, 100, &p, &bad_line) == 0 && p.count == 1,
          "blank lines and CRLF");
    tfrecord_index_free(&p);

    /* Compression detection. */
    fx_buf gz = {0}, zl = {0};
    fx_compress(&gz, f.data, f.len, 1);
    fx_compress(&zl, f.data, f.len, 0);
    CHECK(tfrecord_detect(f.data, 12) == TFRECORD_NONE, "plain detected as compressed");
    CHECK(tfrecord_detect(gz.data, 12) == TFRECORD_GZIP, "gzip not detected");
    CHECK(tfrecord_detect(zl.data, 12) == TFRECORD_ZLIB, "zlib not detected");
    fx_free(&gz);
    fx_free(&zl);
    tfrecord_index_free(&idx);
    fx_free(&f);
    fx_free(&g);
}

static void test_scale_choice(void)
{
    struct {
        int w, h, th, tw, want_den;
    } c[] = {
        {500, 375, 224, 224, 1}, /* ImageNet-sized: 1/2 would be 188 high, below the target */
        {640, 480, 224, 224, 2}, {1024, 768, 224, 224, 2}, {2000, 1800, 224, 224, 8},
        {1000, 900, 224, 224, 4}, {500, 375, 0, 0, 1},      {448, 448, 224, 224, 2},
        {447, 448, 224, 224, 2}, /* ceil(447/2) = 224 */
        {445, 448, 224, 224, 1},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int num, den;
        jpeg_choose_scale(c[i].w, c[i].h, c[i].th, c[i].tw, &num, &den);
        CHECK(num == 1 && den == c[i].want_den, "%dx%d for %dx%d: 1/%d, want 1/%d", c[i].w,
              c[i].h, c[i].tw, c[i].th, den, c[i].want_den);
    }
}

static void test_decoder(void)
{
    const tp_host *host = services_host();
    jpeg_decoder *d = jpeg_decoder_new();
    tp_image im = {0};
    size_t len;
    /* CMYK (Adobe, inverted) decodes to the pattern's RGB. */
    uint8_t *j = fx_jpeg(32, 48, FX_CMYK, 98, 0, &len);
    CHECK(jpeg_decode(d, host, j, len, 3, 0, 0, &im, "cmyk") == TP_OK && im.height == 32 &&
              im.width == 48 && im.channels == 3,
          "CMYK decode: %s", services_last_error());
    int diff = pattern_diff(&im, 3);
    printf("CMYK JPEG -> RGB: max difference %d\n", diff);
    CHECK(diff <= 16, "CMYK colours off by %d", diff);
    free(j);
    /* Grayscale expands to RGB, or stays one channel. */
    j = fx_jpeg(30, 20, FX_GRAY, 98, 0, &len);
    CHECK(jpeg_decode(d, host, j, len, 3, 0, 0, &im, "gray") == TP_OK && im.channels == 3,
          "gray decode");
    int gd = 0;
    for (size_t i = 0; i < (size_t)im.height * (size_t)im.width; i++)
        if (im.data[3 * i] != im.data[3 * i + 1] || im.data[3 * i] != im.data[3 * i + 2])
            gd++;
    CHECK(gd == 0, "gray->RGB channels differ at %d pixels", gd);
    diff = pattern_diff(&im, 1);
    printf("gray JPEG -> RGB: max difference %d\n", diff);
    CHECK(diff <= 8, "gray values off by %d", diff);
    CHECK(jpeg_decode(d, host, j, len, 1, 0, 0, &im, "gray") == TP_OK && im.channels == 1,
          "gray decode, 1 channel");
    free(j);
    /* Scaled decoding: 640x480 for a 224 target decodes at 1/2. */
    j = fx_jpeg(480, 640, FX_RGB, 90, 0, &len);
    CHECK(jpeg_decode(d, host, j, len, 3, 224, 224, &im, "big") == TP_OK && im.height == 240 &&
              im.width == 320,
          "scaled decode gave %dx%d, want 320x240", im.width, im.height);
    diff = pattern_diff(&im, 3);
    printf("1/2-scaled decode: max difference %d\n", diff);
    CHECK(diff <= 16, "scaled decode off by %d", diff);
    CHECK(jpeg_decode(d, host, j, len, 3, 0, 0, &im, "big") == TP_OK && im.height == 480,
          "full decode");
    /* A cut JPEG decodes with a warning or fails cleanly, never crashes. */
    for (size_t cut = 0; cut < len; cut += len / 50 + 1)
        (void)jpeg_decode(d, host, j, cut, 3, 0, 0, &im, "cut");
    free(j);
    /* PNG and junk are reported by name. */
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13};
    CHECK(jpeg_decode(d, host, png, sizeof png, 3, 0, 0, &im, "x.JPEG") == TP_ERR_FORMAT &&
              strstr(services_last_error(), "PNG") && strstr(services_last_error(), "x.JPEG"),
          "PNG: '%s'", services_last_error());
    CHECK(jpeg_decode(d, host, (const uint8_t *)"hello", 5, 3, 0, 0, &im, "junk") ==
                  TP_ERR_FORMAT &&
              strstr(services_last_error(), "not a JPEG"),
          "junk: '%s'", services_last_error());
    free(im.data);
    jpeg_decoder_free(d);
}

/* ------------------------------------------------------------------ the plugin */

static const registry_entry *entry;

typedef struct opened {
    instance inst;
    const tp_source_ops *ops;
    tp_source_info info;
    void *worker;
    tp_status st;
} opened;

static opened open_source(const char *const *kv, int th, int tw)
{
    opened o;
    memset(&o, 0, sizeof o);
    o.st = instance_create(entry->component, kv, &o.inst);
    if (o.st)
        return o;
    o.ops = entry->component->ops;
    tp_source_open_args args = {sizeof args, 0, 1, th, tw};
    o.info.size = sizeof o.info;
    o.st = o.ops->open(o.inst.self, &args, &o.info);
    if (o.st == TP_OK)
        o.st = o.ops->worker_init(o.inst.self, &o.worker);
    return o;
}

static void close_source(opened *o)
{
    if (o->worker)
        o->ops->worker_fini(o->inst.self, o->worker);
    if (o->inst.self)
        instance_destroy(&o->inst);
}

/* Reads every sample; checks size, pixels and label of the good ones against `expect`
 * (image number per sample, -1 where a read must fail). Returns the failed-read count. */
static int read_all(opened *o, const int *expect, int n, const char *what)
{
    tp_image im = {0};
    int bad = 0, worst = 0;
    CHECK(o->info.count == n, "%s: %lld samples, want %d", what, (long long)o->info.count, n);
    for (int s = 0; s < n && s < o->info.count; s++) {
        int32_t label = -7;
        tp_status st = o->ops->read(o->inst.self, o->worker, s, &im, &label);
        if (expect[s] < 0) {
            CHECK(st == TP_ERR_FORMAT, "%s: sample %d should fail, got %d", what, s, (int)st);
            bad++;
            continue;
        }
        int i = expect[s];
        CHECK(st == TP_OK, "%s: sample %d: %s", what, s, services_last_error());
        if (st)
            continue;
        CHECK(im.height == img_h(i) && im.width == img_w(i) && im.channels == 3,
              "%s: sample %d is %dx%dx%d, want %dx%dx3", what, s, im.height, im.width,
              im.channels, img_h(i), img_w(i));
        CHECK(label == img_label(i) - 1, "%s: sample %d label %d, want %lld", what, s, label,
              (long long)img_label(i) - 1);
        int d = pattern_diff(&im, 3);
        if (d > worst)
            worst = d;
    }
    printf("%s: %d samples, max pixel difference %d\n", what, n, worst);
    CHECK(worst <= 16, "%s: pixels off by %d", what, worst);
    free(im.data);
    return bad;
}

static void test_plugin(void)
{
    fx_buf a = {0}, b = {0}, c = {0}, dd = {0}, e = {0}, gz = {0}, zl = {0};
    /* a: 5 good records */
    add_records(&a, 0, 5);
    CHECK(fx_write_file(path_in("a.tfrecord"), a.data, a.len) == 0, "write a");
    /* b: 3 records, the middle one with a bad data CRC */
    add_records(&b, 5, 3);
    {
        tfrecord_memory m = {b.data, b.len};
        tfrecord_index idx = {0};
        tfrecord_end end;
        uint64_t at;
        tfrecord_scan(tfrecord_read_memory, &m, b.len, 1, &idx, &end, &at);
        b.data[idx.entries[1].offset + idx.entries[1].size - 1] ^= 0xff; /* its data CRC */
        tfrecord_index_free(&idx);
    }
    CHECK(fx_write_file(path_in("b.tfrecord"), b.data, b.len) == 0, "write b");
    /* c: 2 good records, then one whose length CRC is wrong, then one more */
    add_records(&c, 8, 2);
    size_t c_bad_at = c.len;
    add_records(&c, 10, 2);
    c.data[c_bad_at + 8] ^= 0x01;
    CHECK(fx_write_file(path_in("c.tfrecord"), c.data, c.len) == 0, "write c");
    /* d: 2 good records and a record cut short */
    add_records(&dd, 12, 3);
    CHECK(fx_write_file(path_in("d.tfrecord"), dd.data, dd.len - 100) == 0, "write d");
    /* e: gzip and zlib variants of 3 records each */
    add_records(&e, 15, 3);
    fx_compress(&gz, e.data, e.len, 1);
    fx_compress(&zl, e.data, e.len, 0);
    CHECK(fx_write_file(path_in("e.tfrecord.gz"), gz.data, gz.len) == 0, "write e.gz");
    CHECK(fx_write_file(path_in("f.tfrecord.zz"), zl.data, zl.len) == 0, "write f.zz");

    char files[1024], idxdir[600], idxarg[700], filesarg[1100];
    snprintf(files, sizeof files, "%s/*.tfrecord,%s,%s", dir, path_in("e.tfrecord.gz"),
             path_in("f.tfrecord.zz"));
    snprintf(filesarg, sizeof filesarg, "files=%s", files);
    snprintf(idxdir, sizeof idxdir, "%s/idx", dir);
    snprintf(idxarg, sizeof idxarg, "index_dir=%s", idxdir);
    const char *kv[] = {filesarg, idxarg, "label_offset=-1", "max_bad_records=5", NULL};
    /* a: 0..4; b: 5, bad, 7; c: 8, 9 (rest dropped); d: 12, 13; e: 15..17; f: 15..17 */
    const int expect[] = {0, 1, 2, 3, 4, 5, -1, 7, 8, 9, 12, 13, 15, 16, 17, 15, 16, 17};
    const int n = (int)(sizeof expect / sizeof expect[0]);
    for (int pass = 0; pass < 2; pass++) { /* the second pass loads the cached indexes */
        opened o = open_source(kv, 0, 0);
        CHECK(o.st == TP_OK, "open (pass %d): %s", pass, services_last_error());
        if (o.st == TP_OK) {
            CHECK(o.info.height == 0 && o.info.width == 0 && o.info.channels == 3 &&
                      o.info.num_classes == 1000,
                  "info %dx%dx%d classes %d", o.info.height, o.info.width, o.info.channels,
                  o.info.num_classes);
            int bad = read_all(&o, expect, n, pass ? "cached indexes" : "fresh indexes");
            CHECK(bad == 1, "bad reads %d", bad);
            int32_t label;
            tp_image im = {0};
            tp_status st = o.ops->read(o.inst.self, o.worker, 6, &im, &label);
            CHECK(st == TP_ERR_FORMAT && strstr(services_last_error(), "b.tfrecord") &&
                      strstr(services_last_error(), "data CRC") &&
                      strstr(services_last_error(), "offset"),
                  "bad data CRC message: '%s'", services_last_error());
            /* The same bad record read again is not counted twice; a NULL worker works. */
            st = o.ops->read(o.inst.self, NULL, 0, &im, &label);
            CHECK(st == TP_OK && label == img_label(0) - 1, "read without a worker");
            free(im.data);
        }
        close_source(&o);
    }
    struct stat sb;
    CHECK(stat(path_in("idx/a.tfrecord.idx"), &sb) == 0, "index a.tfrecord.idx not written");
    CHECK(stat(path_in("idx/e.tfrecord.gz.raw"), &sb) == 0 && (size_t)sb.st_size == e.len,
          "decompressed cache missing or wrong size");

    /* Forced compression on a plain file: inflating fails with a message naming it. */
    {
        char f1[600];
        snprintf(f1, sizeof f1, "files=%s", path_in("a.tfrecord"));
        const char *kv2[] = {f1, idxarg, "compression=gzip", "label_offset=-1", NULL};
        opened o = open_source(kv2, 0, 0);
        CHECK(o.st == TP_ERR_FORMAT && strstr(services_last_error(), "a.tfrecord"),
              "gzip forced on a plain file: %d '%s'", (int)o.st, services_last_error());
        close_source(&o);
    }

    /* A DALI index (one written by hand, listing only the first 2 of a's 5 records) in its
     * own index_dir is used as is. */
    {
        char dali[600], f1[600], ia[700];
        snprintf(dali, sizeof dali, "%s/dali", dir);
        mkdir(dali, 0755);
        tfrecord_memory m = {a.data, a.len};
        tfrecord_index idx = {0};
        tfrecord_end end;
        uint64_t at;
        tfrecord_scan(tfrecord_read_memory, &m, a.len, 1, &idx, &end, &at);
        FILE *f = fopen(path_in("dali/a.tfrecord.idx"), "w");
        for (int i = 0; f && i < 2; i++)
            fprintf(f, "%llu %llu\n", (unsigned long long)idx.entries[i].offset,
                    (unsigned long long)idx.entries[i].size);
        if (f)
            fclose(f);
        tfrecord_index_free(&idx);
        snprintf(f1, sizeof f1, "files=%s", path_in("a.tfrecord"));
        snprintf(ia, sizeof ia, "index_dir=%s", dali);
        const char *kv2[] = {f1, ia, "label_offset=-1", NULL};
        opened o = open_source(kv2, 0, 0);
        CHECK(o.st == TP_OK, "open with DALI index: %s", services_last_error());
        if (o.st == TP_OK)
            read_all(&o, (const int[]){0, 1}, 2, "DALI index");
        close_source(&o);
    }

    /* Odd images: CMYK, grayscale, PNG, junk, a label out of range, a bad protobuf. */
    {
        fx_buf g = {0}, ex = {0};
        size_t len;
        uint8_t *j = fx_jpeg(24, 40, FX_CMYK, 95, 0, &len);
        fx_imagenet_example(&ex, j, len, 24, 40, 3);
        fx_frame(&g, ex.data, ex.len);
        free(j);
        ex.len = 0;
        j = fx_jpeg(24, 40, FX_GRAY, 95, 0, &len);
        fx_imagenet_example(&ex, j, len, 24, 40, 4);
        fx_frame(&g, ex.data, ex.len);
        ex.len = 0;
        static const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13};
        fx_imagenet_example(&ex, png, sizeof png, 24, 40, 5);
        size_t png_at = g.len;
        fx_frame(&g, ex.data, ex.len);
        ex.len = 0;
        fx_imagenet_example(&ex, (const uint8_t *)"GIF89a", 6, 24, 40, 6);
        fx_frame(&g, ex.data, ex.len);
        ex.len = 0;
        fx_imagenet_example(&ex, j, len, 24, 40, 1001); /* 1000 after the offset */
        fx_frame(&g, ex.data, ex.len);
        fx_frame(&g, "\x0a\x05\x0a", 3); /* length past the end */
        free(j);
        fx_free(&ex);
        CHECK(fx_write_file(path_in("odd.JPEG.tfrecord"), g.data, g.len) == 0, "write odd");
        char f1[600];
        snprintf(f1, sizeof f1, "files=%s", path_in("odd.JPEG.tfrecord"));
        const char *kv2[] = {f1, idxarg, "label_offset=-1", "max_bad_records=3", NULL};
        opened o = open_source(kv2, 0, 0);
        CHECK(o.st == TP_OK && o.info.count == 6, "open odd: %s", services_last_error());
        if (o.st == TP_OK) {
            tp_image im = {0};
            int32_t label;
            CHECK(o.ops->read(o.inst.self, o.worker, 0, &im, &label) == TP_OK && label == 2 &&
                      im.channels == 3 && im.width == 40,
                  "CMYK sample: %s", services_last_error());
            int d = pattern_diff(&im, 3);
            printf("CMYK sample: max difference %d\n", d);
            CHECK(d <= 16, "CMYK sample off by %d", d);
            CHECK(o.ops->read(o.inst.self, o.worker, 1, &im, &label) == TP_OK && label == 3 &&
                      im.channels == 3,
                  "gray sample: %s", services_last_error());
            char want[64];
            snprintf(want, sizeof want, "offset %zu", png_at);
            CHECK(o.ops->read(o.inst.self, o.worker, 2, &im, &label) == TP_ERR_FORMAT &&
                      strstr(services_last_error(), "PNG") &&
                      strstr(services_last_error(), want) &&
                      strstr(services_last_error(), "odd.JPEG.tfrecord"),
                  "PNG sample: '%s'", services_last_error());
            CHECK(o.ops->read(o.inst.self, o.worker, 3, &im, &label) == TP_ERR_FORMAT &&
                      strstr(services_last_error(), "GIF"),
                  "GIF sample: '%s'", services_last_error());
            /* The 4th distinct bad record exceeds max_bad_records = 3: a stopping error. */
            CHECK(o.ops->read(o.inst.self, o.worker, 2, &im, &label) == TP_ERR_FORMAT,
                  "repeat bad record counted again");
            tp_status st = o.ops->read(o.inst.self, o.worker, 4, &im, &label);
            CHECK(st == TP_ERR_FORMAT, "label out of range: %d '%s'", (int)st,
                  services_last_error());
            st = o.ops->read(o.inst.self, o.worker, 5, &im, &label);
            CHECK(st == TP_ERR_IO && strstr(services_last_error(), "max_bad_records"),
                  "budget: %d '%s'", (int)st, services_last_error());
            free(im.data);
        }
        close_source(&o);
        fx_free(&g);
    }

    /* Scaled decoding through open's target hint; and a glob matching nothing. */
    {
        fx_buf g = {0}, ex = {0};
        size_t len;
        uint8_t *j = fx_jpeg(480, 640, FX_RGB, 90, 0, &len);
        fx_imagenet_example(&ex, j, len, 480, 640, 1);
        fx_frame(&g, ex.data, ex.len);
        free(j);
        fx_free(&ex);
        CHECK(fx_write_file(path_in("big.tfrecord"), g.data, g.len) == 0, "write big");
        fx_free(&g);
        char f1[600];
        snprintf(f1, sizeof f1, "files=%s", path_in("big.tfrecord"));
        for (int scaled = 0; scaled < 2; scaled++) {
            const char *kv2[] = {f1, idxarg, scaled ? "scaled_decode=true" : "scaled_decode=false",
                                 NULL};
            opened o = open_source(kv2, 224, 224);
            tp_image im = {0};
            int32_t label;
            CHECK(o.st == TP_OK && o.ops->read(o.inst.self, o.worker, 0, &im, &label) == TP_OK &&
                      im.width == (scaled ? 320 : 640) && im.height == (scaled ? 240 : 480),
                  "scaled_decode=%d gave %dx%d", scaled, im.width, im.height);
            free(im.data);
            close_source(&o);
        }
        char f2[600];
        snprintf(f2, sizeof f2, "files=%s", path_in("nothing-*.tfrecord"));
        const char *kv3[] = {f2, NULL};
        opened o = open_source(kv3, 0, 0);
        CHECK(o.st == TP_ERR_NOT_FOUND && strstr(services_last_error(), "matches no file"),
              "empty glob: '%s'", services_last_error());
        close_source(&o);
    }
    fx_free(&a);
    fx_free(&b);
    fx_free(&c);
    fx_free(&dd);
    fx_free(&e);
    fx_free(&gz);
    fx_free(&zl);
}

/* share/scripts/make_tfrecords.py on class folders of test JPEGs, plain and gzip: the plugin
 * reads back every image with label = class index (label_offset = -1). Skipped (with a note)
 * when python3 is not on PATH. */
static void test_script(void)
{
    const char *src = getenv("TP_SRCDIR");
    char script[600], cmd[2400];
    snprintf(script, sizeof script, "%s/../share/scripts/make_tfrecords.py",
             src ? src : "..");
    if (access(script, R_OK) != 0 || system("python3 -c 'import sys' 2>/dev/null") != 0) {
        printf("note: python3 or %s missing: make_tfrecords.py not tested\n", script);
        return;
    }
    const char *classes[] = {"n0001", "n0002", "n0003"};
    mkdir(path_in("imgs"), 0755);
    int n = 0;
    for (int c = 0; c < 3; c++) {
        char folder[600];
        snprintf(folder, sizeof folder, "%s/imgs/%s", dir, classes[c]);
        mkdir(folder, 0755);
        for (int k = 0; k < 2 + c; k++, n++) {
            size_t len;
            int i = n; /* image number: gives size via img_h / img_w */
            uint8_t *j = fx_jpeg(img_h(i), img_w(i), FX_RGB, 95, 0, &len);
            char file[700];
            snprintf(file, sizeof file, "%s/img%02d.JPEG", folder, k);
            CHECK(fx_write_file(file, j, len) == 0, "write %s", file);
            free(j);
        }
    }
    for (int gz = 0; gz < 2; gz++) {
        snprintf(cmd, sizeof cmd,
                 "python3 '%s' --input '%s/imgs' --output '%s/made%d' --shards 2 --name train "
                 "%s > /dev/null",
                 script, dir, dir, gz, gz ? "--compression gzip" : "");
        CHECK(system(cmd) == 0, "%s failed", cmd);
        char f1[700], ia[700];
        snprintf(f1, sizeof f1, "files=%s/made%d/train-*-of-00002%s", dir, gz, gz ? ".gz" : "");
        snprintf(ia, sizeof ia, "index_dir=%s/made%d/idx", dir, gz);
        const char *kv[] = {f1, ia, "label_offset=-1", "num_classes=3", NULL};
        opened o = open_source(kv, 0, 0);
        CHECK(o.st == TP_OK && o.info.count == n, "open script output: %lld samples, %s",
              (long long)o.info.count, services_last_error());
        tp_image im = {0};
        int worst = 0, m = 0;
        for (int c = 0; c < 3 && o.st == TP_OK; c++)
            for (int k = 0; k < 2 + c; k++, m++) {
                int32_t label = -1;
                tp_status st = o.ops->read(o.inst.self, o.worker, m, &im, &label);
                CHECK(st == TP_OK && label == c && im.height == img_h(m) && im.width == img_w(m),
                      "script sample %d: label %d (want %d), %dx%d: %s", m, label, c, im.height,
                      im.width, st ? services_last_error() : "");
                if (st == TP_OK) {
                    int d = pattern_diff(&im, 3);
                    worst = d > worst ? d : worst;
                }
            }
        printf("make_tfrecords.py (%s): %d samples, max pixel difference %d\n",
               gz ? "gzip" : "plain", m, worst);
        CHECK(worst <= 16, "script samples off by %d", worst);
        free(im.data);
        close_source(&o);
    }
}

static void remove_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test_tfrecord.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_framing();
    test_scale_choice();
    test_decoder();

    const char *plugdir = getenv("TP_PLUGIN_DIR");
    char so[512];
    snprintf(so, sizeof so, "%s/source-tfrecord.so", plugdir ? plugdir : ".libs");
    registry *r = registry_new();
    if (registry_load_file(r, so) != TP_OK ||
        !(entry = registry_find(r, TP_KIND_SOURCE, "tfrecord"))) {
        printf("FAIL cannot load %s: %s\n", so, services_last_error());
        failures++;
    } else {
        test_plugin();
        test_script();
    }
    registry_free(r);
    remove_tree(dir);
    printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
