/* Integration tests of the prefetch ring and the data loader (host/ring.c, host/dataloader.c)
 * with a source, augmenters and a device backend defined here:
 *   - the same seed gives bitwise identical batches with 1 and with 4 workers (also with bad
 *     records, also across ranks), on a backend with device memory (uploads, events) and on
 *     the real backend-cpu plugin when it loads (no device copy);
 *   - every sample is seen exactly once per epoch, and each batch's pixels, labels and keys
 *     match the sample they claim to be (through a sample and a batch augmenter);
 *   - drop_last both ways, rank sharding over 2 ranks, bad-record skipping and its limit,
 *     error propagation (read errors, worker_init, mixed image sizes, batch augmenter
 *     errors), and shutdown at any point without hanging (a watchdog alarm fails the test). */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

#include "cpu_image_ops.h"
#include "dataloader.h"
#include "params.h"
#include "registry.h"
#include "ring.h"
#include "services.h"

static int failures;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                             \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, " [last error: %s]\n", services_last_error());                   \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

/* ---------------------------------------------------------------- the in-test source */

#define MAX_SPECIAL 8

typedef struct test_source {
    int64_t count;
    int h, w, c, classes;
    int64_t bad[MAX_SPECIAL]; /* indexes that return TP_ERR_FORMAT */
    int n_bad;
    int64_t io_error_index;   /* index that returns TP_ERR_IO, or -1 */
    int64_t odd_size_index;   /* index returned one pixel wider, or -1 */
    int jitter;               /* sleep up to this many microseconds per read */
    int delay_us;             /* sleep exactly this long per read */
    int fail_worker_init;
    pthread_mutex_t lock;
    int inits, finis;
} test_source;

static uint8_t pixel(int64_t index, size_t i)
{
    return (uint8_t)((index * 131 + (int64_t)i * 7 + 3) & 255);
}

static tp_status ts_worker_init(void *self, void **worker)
{
    test_source *s = self;
    pthread_mutex_lock(&s->lock);
    s->inits++;
    pthread_mutex_unlock(&s->lock);
    if (s->fail_worker_init)
        return services_fail(TP_ERR_IO, "test source: worker_init refuses (as asked)");
    *worker = s; /* any non-NULL token: read() checks it */
    return TP_OK;
}

static void ts_worker_fini(void *self, void *worker)
{
    test_source *s = self;
    (void)worker;
    pthread_mutex_lock(&s->lock);
    s->finis++;
    pthread_mutex_unlock(&s->lock);
}

static tp_status ts_read(void *self, void *worker, int64_t index, tp_image *out, int32_t *label)
{
    test_source *s = self;
    if (worker != s)
        return services_fail(TP_ERR_INVALID, "test source: read got worker %p, not its own",
                             worker);
    if (index < 0 || index >= s->count)
        return services_fail(TP_ERR_INVALID, "test source: index %lld out of range",
                             (long long)index);
    if (s->delay_us)
        usleep((useconds_t)s->delay_us);
    if (s->jitter) {
        /* Scramble thread timing, differently per index and per call. */
        unsigned r = (unsigned)(index * 2654435761u) ^ (unsigned)clock();
        usleep(r % (unsigned)s->jitter);
    }
    for (int i = 0; i < s->n_bad; i++)
        if (s->bad[i] == index)
            return services_fail(TP_ERR_FORMAT, "test.bin: record %lld at byte %lld: bad CRC",
                                 (long long)index, (long long)index * 100);
    if (index == s->io_error_index)
        return services_fail(TP_ERR_IO, "test.bin: read at byte %lld: Input/output error",
                             (long long)index * 100);
    int w = s->w + (index == s->odd_size_index);
    tp_status st = tp_image_reserve(services_host(), out, s->h, w, s->c);
    if (st)
        return st;
    for (size_t i = 0; i < (size_t)s->h * w * s->c; i++)
        out->data[i] = pixel(index, i);
    *label = (int32_t)(index % s->classes);
    return TP_OK;
}

static const tp_source_ops test_source_ops = {
    .size = sizeof(tp_source_ops),
    .worker_init = ts_worker_init,
    .worker_fini = ts_worker_fini,
    .read = ts_read,
};

static void source_init(test_source *s, int64_t count)
{
    memset(s, 0, sizeof *s);
    s->count = count;
    s->h = 4;
    s->w = 3;
    s->c = 2;
    s->classes = 10;
    s->io_error_index = -1;
    s->odd_size_index = -1;
    pthread_mutex_init(&s->lock, NULL);
}

/* ---------------------------------------------------------------- in-test augmenters */

/* Sample augmenter: copies the image and sets pixel 0 from the sample's rng. */
static tp_augment_place sa_place(void *self) { (void)self; return TP_AUGMENT_SAMPLE; }
static tp_status sa_size(void *self, int h, int w, int c, int *oh, int *ow, int *oc)
{
    (void)self;
    *oh = h, *ow = w, *oc = c;
    return TP_OK;
}
static tp_status sa_apply(void *self, const tp_image *in, tp_image *out, tp_rng *rng, int training)
{
    (void)self;
    (void)training;
    tp_status st = tp_image_reserve(services_host(), out, in->height, in->width, in->channels);
    if (st)
        return st;
    memcpy(out->data, in->data, (size_t)in->height * in->width * in->channels);
    out->data[0] = (uint8_t)tp_rng_below(rng, 256);
    return TP_OK;
}
static const tp_augment_ops sample_aug_ops = {
    .size = sizeof(tp_augment_ops), .place = sa_place, .output_size = sa_size,
    .apply_sample = sa_apply,
};

/* Batch augmenter: adds index / 1024 to every value of a sample (host-visible memory on
 * both test backends); fails on a sample index when asked to. */
typedef struct batch_aug {
    int64_t fail_index;
    int delay_us; /* sleep this long per batch: a slow device stage */
} batch_aug;
static tp_augment_place ba_place(void *self) { (void)self; return TP_AUGMENT_BATCH; }
static tp_status ba_apply(void *self, const tp_augment_batch *b)
{
    batch_aug *a = self;
    if (a->delay_us)
        usleep((useconds_t)a->delay_us);
    const int64_t n = b->images->shape[0];
    const size_t per = (size_t)(b->images->shape[1] * b->images->shape[2] * b->images->shape[3]);
    for (int64_t i = 0; i < n; i++) {
        if (b->keys[i].index == a->fail_index)
            return services_fail(TP_ERR_LIBRARY, "batch augmenter: kernel failed on sample %lld",
                                 (long long)b->keys[i].index);
        float *img = (float *)b->images->data + (size_t)i * per;
        for (size_t k = 0; k < per; k++)
            img[k] += (float)b->keys[i].index / 1024.0f;
    }
    return TP_OK;
}
static const tp_augment_ops batch_aug_ops = {
    .size = sizeof(tp_augment_ops), .place = ba_place, .output_size = sa_size,
    .apply_batch = ba_apply,
};

/* ---------------------------------------------------------------- a backend with device memory */

/* "Device" memory is a separate malloc; copies are memcpy; events count. It checks the
 * ring's protocol: uploads only on the copy stream, conversion only from device memory. */
typedef struct fake_device {
    pthread_mutex_t lock;
    int uploads, stream_waits, records, syncs, bad_protocol;
} fake_device;

struct tp_event {
    int recorded;
};

static tp_status fd_info(void *self, tp_backend_info *out)
{
    (void)self;
    out->name = "fake-device";
    out->device_name = "test";
    out->preferred_layout = TP_LAYOUT_NCHW;
    out->has_device_memory = 1;
    out->threads = 0;
    return TP_OK;
}
static tp_status fd_alloc(void *self, tp_tensor *t, const char *what)
{
    (void)self;
    t->data = calloc(1, tp_tensor_bytes(t) ? tp_tensor_bytes(t) : 1);
    return t->data ? TP_OK : services_fail(TP_ERR_NOMEM, "fake device: cannot allocate %s", what);
}
static void fd_free(void *self, tp_tensor *t)
{
    (void)self;
    free(t->data);
    t->data = NULL;
}
static tp_status fd_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream)
{
    fake_device *fd = self;
    pthread_mutex_lock(&fd->lock);
    if (src->device != TP_DEVICE_DEVICE && dst->device == TP_DEVICE_DEVICE) {
        fd->uploads++;
        if (stream != TP_STREAM_COPY)
            fd->bad_protocol++;
    }
    pthread_mutex_unlock(&fd->lock);
    if (src->layout != dst->layout || tp_tensor_bytes(src) != tp_tensor_bytes(dst))
        return services_fail(TP_ERR_UNSUPPORTED, "fake device: copy with different layouts/sizes");
    memcpy(dst->data, src->data, tp_tensor_bytes(src));
    return TP_OK;
}
static tp_status fd_event_create(void *self, tp_event **ev)
{
    (void)self;
    *ev = calloc(1, sizeof **ev);
    return *ev ? TP_OK : TP_ERR_NOMEM;
}
static void fd_event_destroy(void *self, tp_event *ev)
{
    (void)self;
    free(ev);
}
static tp_status fd_event_record(void *self, tp_event *ev, tp_stream stream)
{
    fake_device *fd = self;
    (void)stream;
    pthread_mutex_lock(&fd->lock);
    fd->records++;
    ev->recorded = 1;
    pthread_mutex_unlock(&fd->lock);
    return TP_OK;
}
static tp_status fd_stream_wait(void *self, tp_stream stream, tp_event *ev)
{
    fake_device *fd = self;
    (void)stream;
    pthread_mutex_lock(&fd->lock);
    fd->stream_waits++;
    if (!ev->recorded)
        fd->bad_protocol++; /* waiting on an event never recorded */
    pthread_mutex_unlock(&fd->lock);
    return TP_OK;
}
static tp_status fd_event_sync(void *self, tp_event *ev)
{
    fake_device *fd = self;
    pthread_mutex_lock(&fd->lock);
    fd->syncs++;
    if (!ev->recorded)
        fd->bad_protocol++;
    pthread_mutex_unlock(&fd->lock);
    return TP_OK;
}
static tp_status fd_convert(void *self, const tp_tensor *src, double scale, tp_tensor *dst)
{
    fake_device *fd = self;
    if (src->device != TP_DEVICE_DEVICE) {
        pthread_mutex_lock(&fd->lock);
        fd->bad_protocol++;
        pthread_mutex_unlock(&fd->lock);
    }
    return cpu_convert_u8_batch(services_host(), src, scale, dst);
}
static const tp_backend_ops fake_device_ops = {
    .size = sizeof(tp_backend_ops),
    .info = fd_info,
    .alloc = fd_alloc,
    .free = fd_free,
    .copy = fd_copy,
    .event_create = fd_event_create,
    .event_destroy = fd_event_destroy,
    .event_record = fd_event_record,
    .stream_wait = fd_stream_wait,
    .event_sync = fd_event_sync,
    .convert_u8_batch = fd_convert,
};

/* ---------------------------------------------------------------- running a loader */

typedef struct run_result {
    tp_status status;         /* how the stream ended */
    char message[1024];
    int64_t batches, samples;
    float *images;            /* all image values, concatenated */
    int32_t *labels;
    tp_sample_key *keys;
    int64_t *batch_epochs, *batch_counts;
    size_t cap_samples, cap_batches;
    int content_errors;       /* batches whose pixels/labels do not match their keys */
    int64_t bad_records;
    double wait, wait_for_samples; /* summed over the batches */
    dataloader_stats stats;   /* at the end */
} run_result;

typedef struct run_opts {
    const tp_backend *be;
    tp_layout layout;
    test_source *src;
    int workers, batch, prefetch, drop_last, shuffle, rank, world, augment;
    int64_t epochs, max_bad, first_epoch;
    uint64_t seed;
    int64_t batch_aug_fail_index;
    int64_t stop_after;       /* stop consuming after this many batches (-1: run to the end) */
    int batch_aug_delay_us;
} run_opts;

static run_opts default_opts(const tp_backend *be, test_source *src)
{
    run_opts o = { .be = be, .layout = TP_LAYOUT_NCHW, .src = src, .workers = 1, .batch = 8,
                   .prefetch = 3, .drop_last = 0, .shuffle = 1, .rank = 0, .world = 1,
                   .augment = 0, .epochs = 2, .max_bad = 0, .first_epoch = 0, .seed = 7,
                   .batch_aug_fail_index = -1, .stop_after = -1 };
    return o;
}

static void result_free(run_result *r)
{
    free(r->images);
    free(r->labels);
    free(r->keys);
    free(r->batch_epochs);
    free(r->batch_counts);
    memset(r, 0, sizeof *r);
}

/* Checks that each sample of a batch holds exactly the data its key names. */
static int batch_content_ok(const run_opts *o, const dataloader_batch *b, const float *img)
{
    const test_source *s = o->src;
    const int C = s->c, H = s->h, W = s->w;
    const int32_t *labels = (const int32_t *)b->labels.data;
    for (int64_t n = 0; n < b->count; n++) {
        const tp_sample_key *k = &b->keys[n];
        if (k->seed != o->seed || k->epoch != b->epoch || labels[n] != k->index % s->classes)
            return 0;
        tp_rng rng = tp_rng_make(o->seed, (uint64_t)k->epoch, (uint64_t)k->index);
        uint8_t first = (uint8_t)tp_rng_below(&rng, 256);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t hwc = ((size_t)y * W + x) * C + c;
                    uint8_t u = o->augment && hwc == 0 ? first : pixel(k->index, hwc);
                    double want = u / 255.0 + (o->augment ? k->index / 1024.0 : 0.0);
                    size_t at = o->layout == TP_LAYOUT_NHWC
                                    ? (((size_t)n * H + y) * W + x) * C + c
                                    : (((size_t)n * C + c) * H + y) * W + x;
                    if (fabs(img[at] - want) > 1e-5)
                        return 0;
                }
    }
    return 1;
}

static tp_status run_loader(const run_opts *o, run_result *r)
{
    memset(r, 0, sizeof *r);
    batch_aug baug = { o->batch_aug_fail_index, o->batch_aug_delay_us };
    dataloader_augmenter augs[2] = { { &sample_aug_ops, NULL, "test-sample" },
                                     { &batch_aug_ops, &baug, "test-batch" } };
    dataloader_config c;
    dataloader_config_defaults(&c);
    c.source = &test_source_ops;
    c.source_self = o->src;
    c.info = (tp_source_info){ sizeof(tp_source_info), o->src->count, o->src->h, o->src->w,
                               o->src->c, o->src->classes, NULL };
    c.augmenters = o->augment ? augs : NULL;
    c.n_augmenters = o->augment ? 2 : 0;
    c.backend = o->be;
    c.layout = o->layout;
    c.batch_size = o->batch;
    c.workers = o->workers;
    c.prefetch = o->prefetch;
    c.seed = o->seed;
    c.shuffle = o->shuffle;
    c.drop_last = o->drop_last;
    c.rank = o->rank;
    c.world_size = o->world;
    c.max_bad_records = o->max_bad;
    c.epochs = o->epochs;
    c.first_epoch = o->first_epoch;
    c.name = "test";
    dataloader *dl;
    tp_status st = dataloader_create(&c, &dl);
    if (st) {
        r->status = st;
        snprintf(r->message, sizeof r->message, "%s", services_last_error());
        return st;
    }
    const size_t per = (size_t)o->src->h * o->src->w * o->src->c;
    for (;;) {
        if (o->stop_after >= 0 && r->batches >= o->stop_after) {
            st = TP_OK;
            break;
        }
        dataloader_batch b;
        st = dataloader_next(dl, &b);
        if (st) {
            snprintf(r->message, sizeof r->message, "%s", services_last_error());
            break;
        }
        if (b.ready && o->be->ops->event_sync)
            o->be->ops->event_sync(o->be->self, b.ready);
        CHECK(b.wait_seconds >= 0.0 && b.sequence == r->batches, "batch bookkeeping");
        CHECK(b.wait_for_samples_seconds >= 0.0 &&
                  b.wait_for_samples_seconds <= b.wait_seconds,
              "batch %lld: %g s of its %g s wait attributed to the workers",
              (long long)b.sequence, b.wait_for_samples_seconds, b.wait_seconds);
        r->wait += b.wait_seconds;
        r->wait_for_samples += b.wait_for_samples_seconds;
        if (r->samples + b.count > (int64_t)r->cap_samples) {
            r->cap_samples = 2 * (r->cap_samples + (size_t)b.count);
            r->images = realloc(r->images, r->cap_samples * per * sizeof(float));
            r->labels = realloc(r->labels, r->cap_samples * sizeof(int32_t));
            r->keys = realloc(r->keys, r->cap_samples * sizeof(tp_sample_key));
        }
        if (r->batches + 1 > (int64_t)r->cap_batches) {
            r->cap_batches = 2 * r->cap_batches + 8;
            r->batch_epochs = realloc(r->batch_epochs, r->cap_batches * sizeof(int64_t));
            r->batch_counts = realloc(r->batch_counts, r->cap_batches * sizeof(int64_t));
        }
        memcpy(r->images + (size_t)r->samples * per, b.images.data,
               (size_t)b.count * per * sizeof(float));
        memcpy(r->labels + r->samples, b.labels.data, (size_t)b.count * sizeof(int32_t));
        memcpy(r->keys + r->samples, b.keys, (size_t)b.count * sizeof(tp_sample_key));
        r->content_errors += !batch_content_ok(o, &b, (const float *)b.images.data);
        r->batch_epochs[r->batches] = b.epoch;
        r->batch_counts[r->batches] = b.count;
        r->batches++;
        r->samples += b.count;
        CHECK(dataloader_release(dl, &b) == TP_OK, "release");
    }
    r->status = st;
    r->bad_records = dataloader_bad_records(dl);
    dataloader_get_stats(dl, &r->stats);
    dataloader_destroy(dl);
    return st;
}

static int same_results(const run_result *a, const run_result *b, size_t per)
{
    return a->status == b->status && a->batches == b->batches && a->samples == b->samples &&
           memcmp(a->images, b->images, (size_t)a->samples * per * sizeof(float)) == 0 &&
           memcmp(a->labels, b->labels, (size_t)a->samples * sizeof(int32_t)) == 0 &&
           memcmp(a->keys, b->keys, (size_t)a->samples * sizeof(tp_sample_key)) == 0 &&
           memcmp(a->batch_counts, b->batch_counts, (size_t)a->batches * sizeof(int64_t)) == 0 &&
           memcmp(a->batch_epochs, b->batch_epochs, (size_t)a->batches * sizeof(int64_t)) == 0;
}

/* How often each index appears in epoch e; returns the number of indexes seen != once
 * (excluding those in `skip`). */
static int64_t epoch_coverage(const run_result *r, int64_t e, int64_t count, const int64_t *skip,
                              int n_skip, int64_t *seen_total)
{
    int *seen = calloc((size_t)count, sizeof *seen);
    int64_t total = 0, wrong = 0;
    for (int64_t i = 0; i < r->samples; i++)
        if (r->keys[i].epoch == e) {
            seen[r->keys[i].index]++;
            total++;
        }
    for (int64_t i = 0; i < count; i++) {
        int want = 1;
        for (int k = 0; k < n_skip; k++)
            if (skip[k] == i)
                want = 0;
        wrong += seen[i] != want;
    }
    free(seen);
    if (seen_total)
        *seen_total = total;
    return wrong;
}

/* ---------------------------------------------------------------- the tests */

static void test_determinism(const tp_backend *be, const char *bname, tp_layout layout)
{
    test_source s;
    source_init(&s, 103);
    s.jitter = 300;
    const size_t per = (size_t)s.h * s.w * s.c;
    run_opts o = default_opts(be, &s);
    o.layout = layout;
    o.epochs = 3;
    o.first_epoch = 5;
    o.augment = 1;
    run_result one, four;
    run_loader(&o, &one);
    o.workers = 4;
    run_loader(&o, &four);
    CHECK(one.status == TP_ERR_END && four.status == TP_ERR_END, "%s: ended with %s / %s (%s)",
          bname, tp_status_name(one.status), tp_status_name(four.status), four.message);
    CHECK(one.batches == 3 * 13 && one.samples == 3 * 103, "%s: %lld batches, %lld samples",
          bname, (long long)one.batches, (long long)one.samples);
    CHECK(same_results(&one, &four, per), "%s: 1 and 4 workers give different batches", bname);
    CHECK(one.content_errors == 0 && four.content_errors == 0,
          "%s: %d / %d batches hold data other than their keys name", bname, one.content_errors,
          four.content_errors);
    for (int64_t e = 5; e < 8; e++)
        CHECK(epoch_coverage(&four, e, 103, NULL, 0, NULL) == 0,
              "%s: epoch %lld does not see every sample exactly once", bname, (long long)e);
    /* Batches stay inside their epoch; only each epoch's last one is partial (103 = 12*8+7). */
    for (int64_t b = 0; b < four.batches; b++)
        CHECK(four.batch_epochs[b] == 5 + b / 13 && four.batch_counts[b] == (b % 13 == 12 ? 7 : 8),
              "%s: batch %lld epoch %lld count %lld", bname, (long long)b,
              (long long)four.batch_epochs[b], (long long)four.batch_counts[b]);
    /* Shuffled, and differently per epoch. */
    CHECK(memcmp(&four.keys[0], &four.keys[103], sizeof(tp_sample_key)) != 0 &&
              !(four.keys[0].index == 0 && four.keys[1].index == 1 && four.keys[2].index == 2),
          "%s: the order does not look shuffled", bname);
    /* Another seed gives another order. */
    o.seed = 8;
    run_result other;
    run_loader(&o, &other);
    int differs = 0;
    for (int64_t i = 0; i < 103 && i < other.samples; i++)
        differs += other.keys[i].index != four.keys[i].index;
    CHECK(differs > 50, "%s: seeds 7 and 8 give nearly the same order (%d of 103 differ)", bname,
          differs);
    printf("%s %s: 1 vs 4 workers bitwise identical over %lld batches (%lld samples), "
           "content and coverage exact\n",
           bname, layout == TP_LAYOUT_NHWC ? "NHWC" : "NCHW", (long long)four.batches,
           (long long)four.samples);
    result_free(&one);
    result_free(&four);
    result_free(&other);
}

/* Which stage a consumer waited for: with slow reads the wait is the workers' (the batch was
 * not yet filled), with a slow batch augmenter the device stage's. The delays (2 ms a
 * sample, 20 ms a batch) dwarf everything else, so the split is far from any threshold. */
static void test_wait_attribution(const tp_backend *be)
{
    test_source s;
    source_init(&s, 48);
    run_opts o = default_opts(be, &s);
    o.epochs = 1;
    o.shuffle = 0;
    run_result slow_reads, slow_device;
    s.delay_us = 2000;
    run_loader(&o, &slow_reads);
    s.delay_us = 0;
    o.augment = 1;
    o.batch_aug_delay_us = 20000;
    run_loader(&o, &slow_device);
    CHECK(slow_reads.status == TP_ERR_END && slow_device.status == TP_ERR_END,
          "wait attribution runs ended with %s / %s", tp_status_name(slow_reads.status),
          tp_status_name(slow_device.status));
    CHECK(slow_reads.wait > 0.05 && slow_reads.wait_for_samples >= 0.7 * slow_reads.wait,
          "slow reads: %.3f s of %.3f s waited attributed to the workers",
          slow_reads.wait_for_samples, slow_reads.wait);
    CHECK(slow_device.wait > 0.05 && slow_device.wait_for_samples <= 0.3 * slow_device.wait,
          "slow device stage: %.3f s of %.3f s waited attributed to the workers",
          slow_device.wait_for_samples, slow_device.wait);
    CHECK(slow_device.stats.device_batches == slow_device.batches &&
              slow_device.stats.device_seconds >= 0.9 * 0.02 * (double)slow_device.batches,
          "device stage: %lld batches in %.3f s (%lld consumed)",
          (long long)slow_device.stats.device_batches, slow_device.stats.device_seconds,
          (long long)slow_device.batches);
    printf("wait attribution: slow reads %.3f of %.3f s to the workers; slow device stage "
           "%.3f of %.3f s to the workers, %.1f ms a batch in the device stage\n",
           slow_reads.wait_for_samples, slow_reads.wait, slow_device.wait_for_samples,
           slow_device.wait,
           1e3 * slow_device.stats.device_seconds / (double)slow_device.stats.device_batches);
    result_free(&slow_reads);
    result_free(&slow_device);
}

static void test_drop_last_and_order(const tp_backend *be)
{
    test_source s;
    source_init(&s, 103);
    run_opts o = default_opts(be, &s);
    o.workers = 3;
    o.drop_last = 1;
    o.epochs = 2;
    run_result r;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_END && r.batches == 24 && r.samples == 192,
          "drop_last: %s, %lld batches, %lld samples", tp_status_name(r.status),
          (long long)r.batches, (long long)r.samples);
    for (int64_t b = 0; b < r.batches; b++)
        CHECK(r.batch_counts[b] == 8, "drop_last: batch %lld has %lld", (long long)b,
              (long long)r.batch_counts[b]);
    for (int64_t e = 0; e < 2; e++) {
        int64_t total;
        int64_t wrong = epoch_coverage(&r, e, 103, NULL, 0, &total);
        /* 96 distinct samples seen once, the 7 dropped ones never. */
        CHECK(total == 96 && wrong == 7, "drop_last epoch %lld: %lld seen, %lld not once",
              (long long)e, (long long)total, (long long)wrong);
    }
    result_free(&r);

    /* Without shuffling the order is 0, 1, 2, ... */
    o.drop_last = 0;
    o.shuffle = 0;
    o.epochs = 1;
    run_loader(&o, &r);
    int in_order = r.samples == 103;
    for (int64_t i = 0; in_order && i < r.samples; i++)
        in_order = r.keys[i].index == i;
    CHECK(in_order && r.content_errors == 0, "shuffle=0 is not in index order");
    result_free(&r);
    printf("drop_last: 24 full batches over 2 epochs, dropped tails never seen; keep: tail of 7\n");
}

static void test_sharding(const tp_backend *be)
{
    test_source s;
    source_init(&s, 101);
    run_opts o = default_opts(be, &s);
    o.world = 2;
    o.epochs = 2;
    o.workers = 2;
    run_result r0, r1;
    o.rank = 0;
    run_loader(&o, &r0);
    o.rank = 1;
    run_loader(&o, &r1);
    CHECK(r0.samples == 2 * 51 && r1.samples == 2 * 50, "shards of 101: %lld and %lld per 2 epochs",
          (long long)r0.samples, (long long)r1.samples);
    for (int64_t e = 0; e < 2; e++) {
        int *seen = calloc(101, sizeof *seen);
        for (int64_t i = 0; i < r0.samples; i++)
            if (r0.keys[i].epoch == e)
                seen[r0.keys[i].index]++;
        for (int64_t i = 0; i < r1.samples; i++)
            if (r1.keys[i].epoch == e)
                seen[r1.keys[i].index]++;
        int wrong = 0;
        for (int i = 0; i < 101; i++)
            wrong += seen[i] != 1;
        CHECK(wrong == 0, "epoch %lld: %d samples not covered exactly once across 2 ranks",
              (long long)e, wrong);
        free(seen);
    }
    CHECK(r0.content_errors == 0 && r1.content_errors == 0, "sharded content");
    printf("sharding: ranks 0 and 1 of 2 cover 101 samples exactly once per epoch (51 + 50)\n");
    result_free(&r0);
    result_free(&r1);
}

static void test_bad_records(const tp_backend *be)
{
    test_source s;
    source_init(&s, 60);
    s.bad[0] = 5;
    s.bad[1] = 17;
    s.bad[2] = 42;
    s.n_bad = 3;
    s.jitter = 200;
    const size_t per = (size_t)s.h * s.w * s.c;
    run_opts o = default_opts(be, &s);
    o.epochs = 1;
    o.max_bad = 3;
    run_result one, four;
    run_loader(&o, &one);
    o.workers = 4;
    run_loader(&o, &four);
    int64_t total;
    CHECK(four.status == TP_ERR_END && four.bad_records == 3,
          "bad records within budget: %s, %lld counted (%s)", tp_status_name(four.status),
          (long long)four.bad_records, four.message);
    CHECK(epoch_coverage(&four, 0, 60, s.bad, 3, &total) == 0 && total == 57,
          "bad records: the other 57 samples not each seen once (%lld)", (long long)total);
    /* 57 = 7 full batches of 8 and one of 1: bad samples are replaced by the next ones. */
    CHECK(four.batches == 8 && four.batch_counts[6] == 8 && four.batch_counts[7] == 1,
          "bad records: %lld batches", (long long)four.batches);
    CHECK(same_results(&one, &four, per), "bad records: 1 and 4 workers differ");
    result_free(&one);
    result_free(&four);

    /* One fewer allowed: the third bad record ends the stream with its message, after the
     * batches before it were delivered. */
    o.max_bad = 2;
    run_loader(&o, &four);
    CHECK(four.status == TP_ERR_FORMAT && strstr(four.message, "bad CRC") &&
              strstr(four.message, "max_bad_records"),
          "over budget: %s: %s", tp_status_name(four.status), four.message);
    CHECK(four.batches >= 1 && four.content_errors == 0, "over budget: %lld batches first",
          (long long)four.batches);
    printf("bad records: 3 skipped within max_bad_records=3 (1 vs 4 workers identical); "
           "max 2 -> \"%s\"\n",
           four.message);
    result_free(&four);
}

static void test_errors(const tp_backend *be)
{
    test_source s;
    source_init(&s, 50);
    run_opts o = default_opts(be, &s);
    run_result r;

    /* A read error ends the stream: batches before it arrive, then the error. */
    s.io_error_index = 30;
    o.workers = 4;
    o.shuffle = 0;
    o.epochs = 0; /* no end: the error must still arrive */
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_IO && strstr(r.message, "Input/output error") && r.batches == 3,
          "read error: %s after %lld batches: %s", tp_status_name(r.status), (long long)r.batches,
          r.message);
    printf("read error: \"%s\" after the %lld batches before it\n", r.message,
           (long long)r.batches);
    result_free(&r);
    s.io_error_index = -1;

    /* worker_init failure fails create, and every started worker is cleaned up. */
    s.fail_worker_init = 1;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_IO && strstr(r.message, "worker_init"), "worker_init: %s: %s",
          tp_status_name(r.status), r.message);
    result_free(&r);
    s.fail_worker_init = 0;

    /* Mixed image sizes inside one batch: a clear error. */
    s.odd_size_index = 12;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_INVALID && strstr(r.message, "one size") && r.batches == 1,
          "mixed sizes: %s: %s", tp_status_name(r.status), r.message);
    printf("mixed sizes: \"%s\"\n", r.message);
    result_free(&r);
    s.odd_size_index = -1;

    /* A batch augmenter failing on the device thread. */
    o.augment = 1;
    o.batch_aug_fail_index = 20;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_LIBRARY && strstr(r.message, "kernel failed") && r.batches == 2,
          "batch augmenter error: %s after %lld: %s", tp_status_name(r.status),
          (long long)r.batches, r.message);
    result_free(&r);
    o.augment = 0;
    o.batch_aug_fail_index = -1;

    /* Configuration errors. */
    o.drop_last = 1;
    o.batch = 64;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_INVALID && strstr(r.message, "drop_last"), "batch > shard: %s",
          r.message);
    result_free(&r);
    o.drop_last = 0;
    o.batch = 8;
    o.rank = 2;
    run_loader(&o, &r);
    CHECK(r.status == TP_ERR_INVALID && strstr(r.message, "rank"), "rank 2 of 1: %s", r.message);
    result_free(&r);
}

static void test_shutdown(const tp_backend *be)
{
    test_source s;
    source_init(&s, 500);
    s.jitter = 100;
    run_opts o = default_opts(be, &s);
    o.workers = 4;
    o.prefetch = 2;
    o.epochs = 0;
    run_result r;
    /* Destroy right after create, after one batch, and while the ring is full. */
    for (int64_t stop = 0; stop < 3; stop++) {
        o.stop_after = stop;
        run_loader(&o, &r);
        CHECK(r.status == TP_OK && r.batches == stop, "early stop after %lld", (long long)stop);
        result_free(&r);
    }
    /* Holding a batch while destroying. */
    dataloader_config c;
    dataloader_config_defaults(&c);
    c.source = &test_source_ops;
    c.source_self = &s;
    c.info = (tp_source_info){ sizeof(tp_source_info), s.count, s.h, s.w, s.c, s.classes, NULL };
    c.backend = be;
    c.batch_size = 4;
    c.workers = 3;
    c.prefetch = 2;
    dataloader *dl;
    CHECK(dataloader_create(&c, &dl) == TP_OK, "create");
    dataloader_batch b;
    CHECK(dataloader_next(dl, &b) == TP_OK, "next");
    usleep(20000); /* let the producer fill the ring and block */
    dataloader_destroy(dl);
    CHECK(s.inits == s.finis, "worker_init %d times but worker_fini %d", s.inits, s.finis);
    printf("shutdown: destroy at 0, 1, 2 batches and with a batch held returns; "
           "worker_init/fini balanced (%d)\n",
           s.inits);
}

/* A ring on its own: states, the end protocol and stop. */
static void test_ring(const tp_backend *be)
{
    ring *r;
    CHECK(ring_create(be, 2, 4, TP_LAYOUT_NCHW, 2, 2, 1, &r) == TP_OK, "ring_create");
    ring_slot *a, *b, *x;
    CHECK(ring_acquire(r, &a) == TP_OK && ring_acquire(r, &b) == TP_OK && a != b, "acquire 2");
    CHECK(ring_slot_state(r, a) == RING_FILLING, "FILLING");
    a->count = 4;
    a->epoch = 0;
    CHECK(ring_mark_filled(r, a) == 0 && ring_slot_state(r, a) == RING_FILLED, "FILLED");
    CHECK(ring_wait_filled(r, 0, &x) == TP_OK && x == a, "wait_filled");
    CHECK(ring_upload(r, a) == TP_OK && ring_mark_ready(r, a) == TP_OK, "upload/ready");
    CHECK(ring_wait_ready(r, 0, &x) == TP_OK && x == a && ring_slot_state(r, a) == RING_IN_USE,
          "IN_USE");
    CHECK(ring_release(r, a) == TP_OK && ring_slot_state(r, a) == RING_FREE, "FREE");
    ring_discard(r, b);
    ring_finish(r, 1, TP_ERR_END, "end");
    ring_finish(r, 3, TP_ERR_IO, "later error loses");
    CHECK(ring_wait_ready(r, 1, &x) == TP_ERR_END, "end at 1");
    ring_finish(r, 1, TP_ERR_IO, "error at the same place wins");
    char msg[64];
    CHECK(ring_end_status(r, msg, sizeof msg) == TP_ERR_IO && strstr(msg, "wins"), "tie");
    CHECK(ring_acquire(r, &x) == TP_ERR_IO, "no acquire after an end");
    ring_stop(r);
    CHECK(ring_wait_filled(r, 0, &x) == TP_ERR_INTERRUPTED, "stop");
    ring_destroy(r);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: test_dataloader hung (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(1);
    _exit(1);
}

static void run_all(const tp_backend *be, const char *name, tp_layout layout)
{
    printf("--- backend %s\n", name);
    test_ring(be);
    test_determinism(be, name, layout);
    test_wait_attribution(be);
    test_drop_last_and_order(be);
    test_sharding(be);
    test_bad_records(be);
    test_errors(be);
    test_shutdown(be);
}

int main(void)
{
    signal(SIGALRM, on_alarm);
    alarm(60);
    services_set_log_level(TP_LOG_ERROR);

    fake_device fd;
    memset(&fd, 0, sizeof fd);
    pthread_mutex_init(&fd.lock, NULL);
    tp_backend fake = { &fake_device_ops, &fd };
    run_all(&fake, "fake-device (device memory, events)", TP_LAYOUT_NCHW);
    test_determinism(&fake, "fake-device", TP_LAYOUT_NHWC);
    printf("fake-device: %d uploads, %d stream waits, %d records, %d host syncs, %d protocol "
           "violations\n",
           fd.uploads, fd.stream_waits, fd.records, fd.syncs, fd.bad_protocol);
    CHECK(fd.uploads > 0 && fd.stream_waits > 0 && fd.bad_protocol == 0,
          "device protocol: %d violations", fd.bad_protocol);

    /* The real backend-cpu (no device memory: the copy disappears). */
    const char *top = getenv("TP_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/.libs/backend-cpu.so", top ? top : "..");
    registry *reg = registry_new();
    const registry_entry *e = NULL;
    instance inst;
    if (registry_load_file(reg, path) == TP_OK &&
        (e = registry_find(reg, TP_KIND_BACKEND, "cpu")) &&
        ((const tp_backend_ops *)e->component->ops)->convert_u8_batch &&
        instance_create(e->component, NULL, &inst) == TP_OK) {
        tp_backend cpu = { (const tp_backend_ops *)e->component->ops, inst.self };
        tp_backend_info info;
        memset(&info, 0, sizeof info);
        info.size = sizeof info;
        cpu.ops->info(cpu.self, &info);
        CHECK(info.has_device_memory == 0, "backend-cpu reports device memory");
        run_all(&cpu, "backend-cpu.so", info.preferred_layout);
        instance_destroy(&inst);
    } else {
        printf("note: backend-cpu.so not usable here (%s); tested the fake device only\n",
               services_last_error());
    }
    registry_free(reg);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all dataloader checks passed\n");
    return 0;
}
