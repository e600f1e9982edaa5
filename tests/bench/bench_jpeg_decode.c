/* Benchmark: JPEG decode + random_resized_crop to 224x224 on ONE core, through the real
 * source-tfrecord and augment-resize plugins.
 *
 * Writes a TFRecord of ImageNet-sized JPEGs (500x375, quality 90, smooth gradients plus
 * noise, about the file size of an ImageNet photo), then reads every record (pread, both
 * CRCs, Example parse, decode) and applies random_resized_crop, for a few seconds.
 * Rates are per second of this thread's CPU time (what one dedicated core would do; the wall
 * clock rate is printed too and is lower on a busy machine).
 * Reference: TensorFlow's pipeline with libjpeg-turbo measured 356 images/s per core; the
 * goal is >= 400. Usage: bench_jpeg_decode [seconds] [images] */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "crc32c.h"
#include "params.h"
#include "registry.h"
#include "services.h"

#define IMG_W 500
#define IMG_H 375

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of this thread: on a loaded machine wall time undercounts one core's rate. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct buf {
    uint8_t *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->n + n)
            cap *= 2;
        b->d = realloc(b->d, cap);
        if (!b->d) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->cap = cap;
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void varint(buf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    put(b, t, n);
}

static void field(buf *b, unsigned num, const void *p, size_t n)
{
    varint(b, num << 3 | 2);
    varint(b, n);
    put(b, p, n);
}

/* Example { features { "image/encoded": bytes, "image/class/label": int64 } } */
static void example(buf *out, const uint8_t *jpeg, size_t len, int64_t label)
{
    buf lst = {0}, feat = {0}, entry = {0}, feats = {0}, run = {0};
    field(&lst, 1, jpeg, len);
    field(&feat, 1, lst.d, lst.n);
    field(&entry, 1, "image/encoded", 13);
    field(&entry, 2, feat.d, feat.n);
    field(&feats, 1, entry.d, entry.n);
    lst.n = feat.n = entry.n = 0;
    varint(&run, (uint64_t)label);
    field(&lst, 1, run.d, run.n);
    field(&feat, 3, lst.d, lst.n);
    field(&entry, 1, "image/class/label", 17);
    field(&entry, 2, feat.d, feat.n);
    field(&feats, 1, entry.d, entry.n);
    field(out, 1, feats.d, feats.n);
    free(lst.d);
    free(feat.d);
    free(entry.d);
    free(feats.d);
    free(run.d);
}

static void frame(buf *out, const uint8_t *d, size_t n)
{
    uint8_t head[12], tail[4];
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint32_t a = crc32c_mask(crc32c(head, 8)), b = crc32c_mask(crc32c(d, n));
    for (int i = 0; i < 4; i++) {
        head[8 + i] = (uint8_t)(a >> (8 * i));
        tail[i] = (uint8_t)(b >> (8 * i));
    }
    put(out, head, 12);
    put(out, d, n);
    put(out, tail, 4);
}

/* A photo-like 500x375 image: smooth gradients, a few soft blobs, and pixel noise. */
static size_t make_jpeg(tjhandle tj, int seed, unsigned char **jpeg)
{
    static uint8_t px[IMG_H * IMG_W * 3];
    uint32_t z = 2463534242u + (uint32_t)seed * 7919u;
    double cx = 100 + (seed * 37) % 300, cy = 80 + (seed * 53) % 200;
    for (int y = 0; y < IMG_H; y++)
        for (int x = 0; x < IMG_W; x++) {
            z ^= z << 13;
            z ^= z >> 17;
            z ^= z << 5;
            double d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / 4000.0;
            double blob = 90.0 / (1.0 + d2);
            int n = (int)(z % 61) - 30;
            int v[3] = {(int)(40 + 150.0 * x / IMG_W + blob) + n,
                        (int)(60 + 120.0 * y / IMG_H + blob / 2) + n / 2,
                        (int)(180 - 100.0 * x / IMG_W + 60.0 * y / IMG_H) + n};
            for (int c = 0; c < 3; c++)
                px[(y * IMG_W + x) * 3 + c] = (uint8_t)(v[c] < 0 ? 0 : v[c] > 255 ? 255 : v[c]);
        }
    unsigned long len = 0;
    *jpeg = NULL;
    if (tjCompress2(tj, px, IMG_W, 0, IMG_H, TJPF_RGB, jpeg, &len, TJSAMP_420, 90, 0) != 0) {
        fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
        exit(1);
    }
    return len;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    int n_images = argc > 2 ? atoi(argv[2]) : 200;
    if (seconds <= 0 || n_images <= 0) {
        fprintf(stderr, "usage: %s [seconds] [images]\n", argv[0]);
        return 2;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
    sched_setaffinity(0, sizeof one, &one); /* one core, measured as such */

    char dir[] = "/tmp/bench_jpeg_decode.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/bench.tfrecord", dir);
    tjhandle tj = tjInitCompress();
    buf file = {0}, ex = {0};
    size_t jpeg_bytes = 0;
    for (int i = 0; i < n_images; i++) {
        unsigned char *j;
        size_t len = make_jpeg(tj, i, &j);
        jpeg_bytes += len;
        ex.n = 0;
        example(&ex, j, len, 1 + i % 1000);
        frame(&file, ex.d, ex.n);
        tjFree(j);
    }
    tjDestroy(tj);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(file.d, 1, file.n, f) != file.n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    printf("%d JPEGs of %dx%d, quality 90, mean %.1f KB\n", n_images, IMG_W, IMG_H,
           jpeg_bytes / 1024.0 / n_images);

    const char *pdir = getenv("TP_PLUGIN_DIR");
    if (!pdir)
        pdir = BENCH_PLUGIN_DIR;
    char so1[512], so2[512], files[300], idx[300];
    snprintf(so1, sizeof so1, "%s/source-tfrecord.so", pdir);
    snprintf(so2, sizeof so2, "%s/augment-resize.so", pdir);
    snprintf(files, sizeof files, "files=%s", path);
    snprintf(idx, sizeof idx, "index_dir=%s", dir);
    registry *r = registry_new();
    const registry_entry *src_e, *aug_e;
    instance src, aug;
    if (registry_load_file(r, so1) || registry_load_file(r, so2) ||
        !(src_e = registry_find(r, TP_KIND_SOURCE, "tfrecord")) ||
        !(aug_e = registry_find(r, TP_KIND_AUGMENT, "random_resized_crop")) ||
        instance_create(src_e->component, (const char *[]){files, idx, "label_offset=-1", NULL},
                        &src) ||
        instance_create(aug_e->component, (const char *[]){"size=224", NULL}, &aug)) {
        fprintf(stderr, "bench: %s\n", services_last_error());
        return 1;
    }
    const tp_source_ops *sops = src_e->component->ops;
    const tp_augment_ops *aops = aug_e->component->ops;
    tp_source_open_args args = {sizeof args, 0, 1, 224, 224};
    tp_source_info info = {sizeof info, 0, 0, 0, 0, 0, NULL};
    void *worker = NULL;
    if (sops->open(src.self, &args, &info) || sops->worker_init(src.self, &worker)) {
        fprintf(stderr, "bench: %s\n", services_last_error());
        return 1;
    }

    tp_image img = {0}, out = {0};
    int32_t label;
    const char *phase[3] = {"decode only", "decode + random_resized_crop 224",
                            "random_resized_crop 224 only"};
    double rate[3] = {0, 0, 0};
    for (int p = 0; p < 3; p++) {
        long done = 0;
        double t0 = now(), c0 = cpu_now(), t;
        do {
            for (int64_t i = 0; i < info.count; i++) {
                if (p < 2 && sops->read(src.self, worker, i, &img, &label)) {
                    fprintf(stderr, "bench: %s\n", services_last_error());
                    return 1;
                }
                if (p >= 1) {
                    tp_rng rng = tp_rng_make(1, (uint64_t)done, (uint64_t)i);
                    if (aops->apply_sample(aug.self, &img, &out, &rng, 1)) {
                        fprintf(stderr, "bench: %s\n", services_last_error());
                        return 1;
                    }
                }
                done++;
            }
            t = now() - t0;
        } while (t < seconds / 2);
        double cpu = cpu_now() - c0;
        rate[p] = done / cpu;
        printf("%-34s %8.1f images/s per core-second of CPU (%8.1f by wall clock; %ld images, "
               "%.2f s)\n",
               phase[p], rate[p], done / t, done, cpu);
    }
    printf("goal >= 400 images/s per core (TensorFlow + libjpeg-turbo: 356): %s\n",
           rate[1] >= 400 ? "met" : "NOT met");
    sops->worker_fini(src.self, worker);
    instance_destroy(&src);
    instance_destroy(&aug);
    registry_free(r);
    free(img.data);
    free(out.data);
    free(file.d);
    free(ex.d);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
