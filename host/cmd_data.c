/* `trainpipe data CONFIG [--split train|val] [--count N] [--dump DIR] [--bench SECONDS]`. */
#include "config.h"

#include "cmd_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dataloader.h"
#include "pipeline.h"
#include "png.h"
#include "services.h"
#include "stage.h"

#define SHEET_MAX_IMAGES 64
#define SHEET_COLUMNS 8
#define SHEET_GAP 2

typedef struct data_args {
    const char *config;
    const char **sets;
    size_t n_sets;
    int validation;     /* --split val */
    int64_t count;      /* samples to inspect; 0: the whole split */
    const char *dump_dir;
    double bench_seconds;
} data_args;

/* Everything the command creates, released in one place. */
typedef struct data_run {
    pipeline p;
    int have_pipeline;
    tp_backend backend;
    size_t backend_index;
    stage_data data;
    dataloader *loader;
} data_run;


static int usage_error(const char *what)
{
    fprintf(stderr, "trainpipe: error: data: %s\n"
                    "usage: trainpipe data CONFIG [--split train|val] [--count N] [--dump DIR] "
                    "[--bench SECONDS] [--set SECTION.KEY=VALUE]...\n", what);
    return 2;
}

static int parse_args(int argc, char **argv, data_args *a)
{
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    if (!a->sets)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(arg, "--set") == 0 && value) {
            a->sets[a->n_sets++] = value;
            i++;
        } else if (strcmp(arg, "--split") == 0 && value) {
            if (strcmp(value, "train") != 0 && strcmp(value, "val") != 0)
                return usage_error("--split takes train or val");
            a->validation = strcmp(value, "val") == 0;
            i++;
        } else if (strcmp(arg, "--count") == 0 && value) {
            errno = 0;
            a->count = strtoll(value, &end, 10);
            if (errno || *end || a->count < 1)
                return usage_error("--count takes a positive integer");
            i++;
        } else if (strcmp(arg, "--dump") == 0 && value) {
            a->dump_dir = value;
            i++;
        } else if (strcmp(arg, "--bench") == 0 && value) {
            a->bench_seconds = strtod(value, &end);
            if (*end || !(a->bench_seconds > 0) || a->bench_seconds > 86400)
                return usage_error("--bench takes a number of seconds in (0, 86400]");
            i++;
        } else if (arg[0] == '-') {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option or missing value: '%s'", arg);
            return usage_error(msg);
        } else if (!a->config) {
            a->config = arg;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unexpected argument '%s'", arg);
            return usage_error(msg);
        }
    }
    if (!a->config)
        return usage_error("missing CONFIG (an INI file)");
    return 0;
}

static void run_release(data_run *r)
{
    dataloader_destroy(r->loader);
    /* Augmenters hold scratch tensors on the backend: release them before it. */
    if (r->have_pipeline)
        stage_data_close(&r->p, &r->data);
    services_set_backend(NULL);
    if (r->backend.self)
        stage_destroy(&r->p.backends[r->backend_index], r->backend.self);
    if (r->have_pipeline)
        pipeline_free(&r->p);
}

/* Builds backend, source, augmenters and the loader for one pass over the split. */
static tp_status run_setup(data_run *r, const data_args *a, int64_t epochs)
{
    tp_status st = stage_create_backend(&r->p, &r->backend_index, &r->backend);
    if (st)
        return st;
    services_set_backend(&r->backend);
    const pipeline_stage *source = a->validation ? &r->p.source_val : &r->p.source_train;
    if (!source->entry)
        return services_fail(TP_ERR_INVALID, "%s: --split val needs a [source.val] section",
                             r->p.doc.path);
    tp_source_open_args open_args = { .size = sizeof open_args, .rank = 0, .world_size = 1 };
    if ((st = stage_data_open(&r->p, source, &open_args, &r->data)))
        return st;
    dataloader_config c;
    /* NCHW: the statistics below read it. */
    stage_loader_config(&r->p, &r->data, &r->backend, TP_LAYOUT_NCHW, !a->validation, &c);
    c.drop_last = 0; /* every sample counts in the statistics */
    c.epochs = epochs;
    return dataloader_create(&c, &r->loader);
}

/* Per-image min-max scaling to 0..255, so whitened or normalised samples stay visible. */
static void draw_tile(uint8_t *sheet, int sheet_w, int x0, int y0, const float *img, int c,
                      int h, int w)
{
    float lo = img[0], hi = img[0];
    for (int64_t i = 0; i < (int64_t)c * h * w; i++) {
        lo = img[i] < lo ? img[i] : lo;
        hi = img[i] > hi ? img[i] : hi;
    }
    float scale = hi > lo ? 255.0f / (hi - lo) : 0.0f;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) {
                float v = (img[((int64_t)ch * h + y) * w + x] - lo) * scale;
                sheet[((int64_t)(y0 + y) * sheet_w + x0 + x) * c + ch] = (uint8_t)lrintf(v);
            }
}

static tp_status write_sheet(const data_args *a, const float *images, int n, int c, int h,
                             int w)
{
    if (mkdir(a->dump_dir, 0777) != 0 && errno != EEXIST)
        return services_fail(TP_ERR_IO, "%s: cannot create directory: %s", a->dump_dir,
                             strerror(errno));
    int cols = n < SHEET_COLUMNS ? n : SHEET_COLUMNS;
    int rows = (n + cols - 1) / cols;
    int sheet_w = cols * (w + SHEET_GAP) + SHEET_GAP, sheet_h = rows * (h + SHEET_GAP) + SHEET_GAP;
    uint8_t *sheet = calloc((size_t)sheet_w * sheet_h * c, 1);
    if (!sheet)
        return services_fail(TP_ERR_NOMEM, "out of memory for a %dx%d contact sheet", sheet_w,
                             sheet_h);
    for (int i = 0; i < n; i++)
        draw_tile(sheet, sheet_w, SHEET_GAP + (i % cols) * (w + SHEET_GAP),
                  SHEET_GAP + (i / cols) * (h + SHEET_GAP), images + (int64_t)i * c * h * w, c,
                  h, w);
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/contact-sheet-%s.png", a->dump_dir,
             a->validation ? "val" : "train");
    int rc = png_write_file(path, sheet, sheet_w, sheet_h, c, err, sizeof err);
    free(sheet);
    if (rc)
        return services_fail(TP_ERR_IO, "%s: cannot write PNG: %s", path,
                             err[0] ? err : strerror(errno));
    printf("contact sheet: %s (%d samples, %d per row, as the network sees them, "
           "each scaled to its own min..max)\n", path, n, cols);
    return TP_OK;
}

/* One pass: count, label histogram, per-channel mean/std, first samples for the sheet. */
static tp_status inspect(data_run *r, const data_args *a)
{
    const int nc = r->data.info.num_classes > 0 ? r->data.info.num_classes : 1;
    int64_t *histogram = calloc((size_t)nc + 1, sizeof *histogram);
    float *host = NULL, *sheet = NULL;
    int32_t *labels = NULL;
    double *sum = NULL, *sumsq = NULL;
    int64_t seen = 0, per_channel = 0, sheet_n = 0, out_of_range = 0;
    int c = 0, h = 0, w = 0;
    tp_status st = histogram ? TP_OK : services_fail(TP_ERR_NOMEM, "out of memory");
    double start = services_monotonic_seconds();
    while (!st && (!a->count || seen < a->count)) {
        dataloader_batch b;
        st = dataloader_next(r->loader, &b);
        if (st == TP_ERR_END) {
            st = TP_OK;
            break;
        }
        if (st)
            break;
        if (!host) {
            c = (int)b.images.shape[1];
            h = (int)b.images.shape[2];
            w = (int)b.images.shape[3];
            host = malloc((size_t)b.images.shape[0] * c * h * w * sizeof(float));
            labels = malloc((size_t)b.images.shape[0] * sizeof(int32_t));
            sheet = malloc((size_t)SHEET_MAX_IMAGES * c * h * w * sizeof(float));
            sum = calloc((size_t)c, sizeof(double));
            sumsq = calloc((size_t)c, sizeof(double));
            if (!host || !labels || !sheet || !sum || !sumsq) {
                st = services_fail(TP_ERR_NOMEM, "out of memory");
                dataloader_release(r->loader, &b);
                break;
            }
        }
        tp_tensor hi = b.images, hl = b.labels;
        hi.device = hl.device = TP_DEVICE_HOST;
        hi.data = host;
        hl.data = labels;
        const tp_backend_ops *ops = r->backend.ops;
        if ((b.ready && (st = ops->event_sync(r->backend.self, b.ready))) ||
            (st = ops->copy(r->backend.self, &hi, &b.images, TP_STREAM_COMPUTE)) ||
            (st = ops->copy(r->backend.self, &hl, &b.labels, TP_STREAM_COMPUTE)) ||
            (st = ops->sync(r->backend.self))) {
            dataloader_release(r->loader, &b);
            break;
        }
        int64_t take = b.count;
        if (a->count && seen + take > a->count)
            take = a->count - seen;
        for (int64_t i = 0; i < take; i++) {
            const float *img = host + i * c * h * w;
            int32_t label = labels[i];
            if (label >= 0 && label < nc)
                histogram[label]++;
            else
                out_of_range++;
            for (int ch = 0; ch < c; ch++)
                for (int64_t k = 0; k < (int64_t)h * w; k++) {
                    double v = img[ch * h * w + k];
                    sum[ch] += v;
                    sumsq[ch] += v * v;
                }
            if (sheet_n < SHEET_MAX_IMAGES)
                memcpy(sheet + sheet_n++ * c * h * w, img, (size_t)c * h * w * sizeof(float));
        }
        seen += take;
        per_channel += take * h * w;
        st = dataloader_release(r->loader, &b);
    }
    double elapsed = services_monotonic_seconds() - start;
    if (!st) {
        const pipeline_stage *src = r->data.stage;
        printf("%s: %s (%s), %lld samples read of %lld, %dx%dx%d each as the network sees "
               "them, %.1f s\n", a->validation ? "val" : "train", src->section,
               src->entry->component->name, (long long)seen, (long long)r->data.info.count, c, h, w,
               elapsed);
        printf("bad records skipped: %lld\n", (long long)dataloader_bad_records(r->loader));
        printf("\nlabel histogram:\n");
        for (int k = 0; k < nc; k++)
            printf("  %3d %-16s %8lld  %5.2f%%\n", k,
                   r->data.info.class_names ? r->data.info.class_names[k] : "",
                   (long long)histogram[k], seen ? 100.0 * histogram[k] / seen : 0.0);
        if (out_of_range)
            printf("  labels outside [0, %d): %lld\n", nc, (long long)out_of_range);
        printf("\nper-channel statistics (after augmentation, input_scale %.6g):\n",
               r->p.settings->input_scale);
        for (int ch = 0; ch < c && per_channel; ch++) {
            double mean = sum[ch] / per_channel;
            double var = sumsq[ch] / per_channel - mean * mean;
            printf("  channel %d: mean %.6f  std %.6f\n", ch, mean, sqrt(var > 0 ? var : 0));
        }
        if (a->dump_dir && sheet_n)
            st = write_sheet(a, sheet, (int)sheet_n, c, h, w);
    }
    free(histogram);
    free(host);
    free(labels);
    free(sheet);
    free(sum);
    free(sumsq);
    return st;
}

/* Throughput: batches are taken and released without reading them back. */
static tp_status bench(data_run *r, const data_args *a)
{
    dataloader_batch b;
    tp_status st = dataloader_next(r->loader, &b); /* warm-up: threads started, caches hot */
    if (st)
        return st;
    dataloader_release(r->loader, &b);
    int64_t samples = 0, bytes = 0;
    double wait = 0, start = services_monotonic_seconds(), elapsed = 0;
    while (elapsed < a->bench_seconds) {
        if ((st = dataloader_next(r->loader, &b)))
            return st;
        samples += b.count;
        bytes += b.count * b.images.shape[1] * b.images.shape[2] * b.images.shape[3];
        wait += b.wait_seconds;
        if ((st = dataloader_release(r->loader, &b)))
            return st;
        elapsed = services_monotonic_seconds() - start;
    }
    if (r->backend.ops->sync)
        r->backend.ops->sync(r->backend.self);
    elapsed = services_monotonic_seconds() - start;
    printf("%s: %lld samples in %.2f s: %.1f samples/s, %.2f MB/s of uint8 pixels, "
           "consumer waited %.0f%% of the time\n", a->validation ? "val" : "train",
           (long long)samples, elapsed, samples / elapsed, bytes / elapsed / 1e6,
           100.0 * wait / elapsed);
    return TP_OK;
}

int cmd_data(int argc, char **argv)
{
    data_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        free(a.sets);
        return rc;
    }
    data_run r;
    memset(&r, 0, sizeof r);
    tp_status st = pipeline_load(a.config, a.sets, a.n_sets, &r.p);
    free(a.sets);
    if (st) {
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
        return st == TP_ERR_INVALID || st == TP_ERR_NOT_FOUND ? 2 : 1;
    }
    r.have_pipeline = 1;
    st = run_setup(&r, &a, a.bench_seconds > 0 ? 0 : 1);
    if (!st)
        st = a.bench_seconds > 0 ? bench(&r, &a) : inspect(&r, &a);
    if (st)
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
    run_release(&r);
    return st ? (st == TP_ERR_INVALID ? 2 : 1) : 0;
}
