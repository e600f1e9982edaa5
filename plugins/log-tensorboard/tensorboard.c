/* log-tensorboard: TensorBoard event files (scalars, histograms, PNG images).
 *
 * Layout: <dir>/train and <dir>/validation hold one event file each per run (a resumed run
 * adds a new file). Both phases use the same tags, so TensorBoard draws them as two runs on
 * one chart. Messages are encoded by hand (pb_writer.c); event.proto documents them. */
#include "config.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <trainpipe/trainpipe.h>

#include "../common/png.h"
#include "event_file.h"
#include "pb_writer.h"

#define WHO "tensorboard"

/* Event field numbers (see event.proto). */
enum {
    EVENT_WALL_TIME = 1,
    EVENT_STEP = 2,
    EVENT_FILE_VERSION = 3,
    EVENT_SUMMARY = 5,
    EVENT_SESSION_LOG = 7,
    SESSION_LOG_STATUS = 1,
    SESSION_LOG_START = 1,
    SUMMARY_VALUE = 1,
    VALUE_TAG = 1,
    VALUE_SIMPLE_VALUE = 2,
    VALUE_IMAGE = 4,
    VALUE_HISTO = 5,
    IMAGE_HEIGHT = 1,
    IMAGE_WIDTH = 2,
    IMAGE_COLORSPACE = 3,
    IMAGE_ENCODED = 4,
    HISTO_MIN = 1,
    HISTO_MAX = 2,
    HISTO_NUM = 3,
    HISTO_SUM = 4,
    HISTO_SUM_SQUARES = 5,
    HISTO_BUCKET_LIMIT = 6,
    HISTO_BUCKET = 7
};

/* Queued bytes above this are written at once, whatever the flush timer says. */
#define WRITE_THRESHOLD (1u << 20)

typedef struct tb_config {
    const char *dir;
    double flush_secs;
    int64_t histograms_every;
    int64_t images_every;
    int64_t max_images;
} tb_config;

static const tp_param_def tb_params[] = {
    TP_PARAM_DEF_PATH(tb_config, dir, "dir", "tensorboard",
                      "Directory of the event files; train/ and validation/ go below it "
                      "(a relative default is taken relative to the run directory)."),
    TP_PARAM_DEF_FLOAT(tb_config, flush_secs, "flush_secs", "30", 0, 86400,
                       "Write queued events at least this often (seconds; 0 = every event)."),
    TP_PARAM_DEF_INT(tb_config, histograms_every, "histograms_every", "0", 0, 1e12,
                     "Parameter histograms every this many steps (0 = never)."),
    TP_PARAM_DEF_INT(tb_config, images_every, "images_every", "0", 0, 1e12,
                     "Sample input images every this many steps (0 = never)."),
    TP_PARAM_DEF_INT(tb_config, max_images, "max_images", "3", 1, 64,
                     "At most this many images per image summary."),
};

/* The last step written for one tag, so a tag is never written twice at one step. */
typedef struct tag_step {
    char *tag;
    int64_t step;
} tag_step;

typedef struct phase_out {
    event_file file;
    tag_step *tags;
    size_t n_tags, cap_tags;
} phase_out;

typedef struct tb_logger {
    const tp_host *host;
    tb_config cfg;
    pthread_mutex_t lock;
    int active;                /* begun, not ended, rank 0, no failure */
    tp_status failed;          /* first failure, or TP_OK */
    phase_out out[2];          /* indexed by tp_phase */
    double last_write;         /* monotonic seconds of the last write to disk */
    double *limits;            /* histogram bucket upper limits, ascending */
    size_t n_limits;
    int warned_duplicate, warned_nonfinite;
} tb_logger;

static const char *const phase_dirs[2] = { "train", "validation" };

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* TensorFlow's default histogram buckets: limits growing by 10% from 1e-12 to 1e20, mirrored
 * for negative values, with 0 in the middle and +-DBL_MAX at the ends (1551 limits). */
static int make_bucket_limits(double **out, size_t *n_out)
{
    size_t n_pos = 0;
    for (double v = 1e-12; v < 1e20; v *= 1.1)
        n_pos++;
    size_t n = 2 * (n_pos + 1) + 1;
    double *lim = malloc(n * sizeof *lim);
    if (!lim)
        return -1;
    size_t mid = n_pos + 1; /* index of 0.0 */
    lim[mid] = 0.0;
    size_t i = 0;
    for (double v = 1e-12; v < 1e20 && i < n_pos; v *= 1.1, i++) {
        lim[mid + 1 + i] = v;
        lim[mid - 1 - i] = -v;
    }
    lim[n - 1] = DBL_MAX;
    lim[0] = -DBL_MAX;
    *out = lim;
    *n_out = n;
    return 0;
}

static tp_status tb_create(const tp_host *host, const void *config, void **self)
{
    tb_logger *t = calloc(1, sizeof *t);
    if (!t)
        return host->fail(host, TP_ERR_NOMEM, WHO ": out of memory");
    t->host = host;
    t->cfg = *(const tb_config *)config;
    pthread_mutex_init(&t->lock, NULL);
    for (int p = 0; p < 2; p++)
        event_file_init(&t->out[p].file);
    if (make_bucket_limits(&t->limits, &t->n_limits)) {
        pthread_mutex_destroy(&t->lock);
        free(t);
        return host->fail(host, TP_ERR_NOMEM, WHO ": out of memory");
    }
    *self = t;
    return TP_OK;
}

static void close_outputs(tb_logger *t)
{
    for (int p = 0; p < 2; p++) {
        phase_out *o = &t->out[p];
        event_file_close(&o->file);
        for (size_t i = 0; i < o->n_tags; i++)
            free(o->tags[i].tag);
        free(o->tags);
        o->tags = NULL;
        o->n_tags = o->cap_tags = 0;
    }
}

static void tb_destroy(void *self)
{
    tb_logger *t = self;
    if (!t)
        return;
    close_outputs(t);
    free(t->limits);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Records a failure: the first one is reported, later calls return it quietly (the host
 * detaches a failed logger unless it is required). */
static tp_status set_failed(tb_logger *t, tp_status st)
{
    if (st && !t->failed)
        t->failed = st;
    t->active = 0;
    return st;
}

static tp_status inactive_status(tb_logger *t)
{
    if (t->failed)
        return t->host->fail(t->host, t->failed, WHO ": disabled after an earlier error");
    return TP_OK;
}

/* Whether `tag` may be written at `step` in this phase; remembers it when it may. */
static int claim_tag(tb_logger *t, phase_out *o, const char *tag, int64_t step)
{
    for (size_t i = 0; i < o->n_tags; i++) {
        if (strcmp(o->tags[i].tag, tag) != 0)
            continue;
        if (step <= o->tags[i].step) {
            if (!t->warned_duplicate++)
                t->host->log(t->host, TP_LOG_WARN, WHO,
                             "tag '%s' at step %lld: already written up to step %lld: skipped "
                             "(further skips are not reported)",
                             tag, (long long)step, (long long)o->tags[i].step);
            return 0;
        }
        o->tags[i].step = step;
        return 1;
    }
    if (o->n_tags == o->cap_tags) {
        size_t cap = o->cap_tags ? 2 * o->cap_tags : 16;
        tag_step *p = realloc(o->tags, cap * sizeof *p);
        if (!p)
            return 1; /* cannot remember it: write anyway rather than lose data */
        o->tags = p;
        o->cap_tags = cap;
    }
    char *copy = strdup(tag);
    if (!copy)
        return 1;
    o->tags[o->n_tags++] = (tag_step){ copy, step };
    return 1;
}

/* Frames and queues one Event holding `payload` as field `field`. */
static tp_status queue_event(tb_logger *t, phase_out *o, double wall_time, int64_t step,
                             uint32_t field, const pb_buf *payload)
{
    pb_buf ev;
    pb_init(&ev);
    pb_field_double(&ev, EVENT_WALL_TIME, wall_time);
    pb_field_varint(&ev, EVENT_STEP, (uint64_t)step);
    pb_field_message(&ev, field, payload);
    tp_status st;
    if (ev.oom)
        st = t->host->fail(t->host, TP_ERR_NOMEM, "%s: out of memory encoding an event",
                           o->file.path);
    else
        st = event_file_append(&o->file, t->host, ev.data, ev.len);
    pb_free(&ev);
    return st;
}

static tp_status write_all(tb_logger *t)
{
    for (int p = 0; p < 2; p++) {
        tp_status st = event_file_write(&t->out[p].file, t->host);
        if (st)
            return st;
    }
    t->last_write = monotonic_seconds();
    return TP_OK;
}

/* Writes queued events when the flush timer has run out or the queue is large. */
static tp_status maybe_write(tb_logger *t)
{
    size_t queued = event_file_pending(&t->out[0].file) + event_file_pending(&t->out[1].file);
    if (queued == 0)
        return TP_OK;
    if (queued < WRITE_THRESHOLD && monotonic_seconds() - t->last_write < t->cfg.flush_secs)
        return TP_OK;
    return write_all(t);
}

static tp_status open_phase(tb_logger *t, const char *root, int phase, const tp_run_info *run)
{
    phase_out *o = &t->out[phase];
    size_t n = strlen(root) + 1 + strlen(phase_dirs[phase]) + 1;
    char *dir = malloc(n);
    if (!dir)
        return t->host->fail(t->host, TP_ERR_NOMEM, WHO ": out of memory");
    snprintf(dir, n, "%s/%s", root, phase_dirs[phase]);
    double now = wall_seconds();
    tp_status st = event_file_mkdirs(t->host, dir);
    if (!st)
        st = event_file_open(&o->file, t->host, dir, now);
    free(dir);
    if (st)
        return st;

    /* First record: the file version, written at once so readers recognise the file. */
    pb_buf ev;
    pb_init(&ev);
    pb_field_double(&ev, EVENT_WALL_TIME, now);
    pb_field_string(&ev, EVENT_FILE_VERSION, "brain.Event:2");
    if (ev.oom)
        st = t->host->fail(t->host, TP_ERR_NOMEM, WHO ": out of memory");
    else
        st = event_file_append(&o->file, t->host, ev.data, ev.len);
    pb_free(&ev);
    if (st)
        return st;

    /* A resumed run says so: TensorBoard drops what earlier files hold at steps >= this one
     * (the part of the old run the checkpoint did not keep). */
    if (run->resumed) {
        pb_buf log;
        pb_init(&log);
        pb_field_varint(&log, SESSION_LOG_STATUS, SESSION_LOG_START);
        st = queue_event(t, o, now, run->start_step, EVENT_SESSION_LOG, &log);
        pb_free(&log);
        if (st)
            return st;
    }
    return event_file_write(&o->file, t->host);
}

static tp_status tb_begin(void *self, const tp_run_info *run)
{
    tb_logger *t = self;
    tp_status st = TP_OK;
    char *root = NULL;
    pthread_mutex_lock(&t->lock);
    close_outputs(t);
    t->active = 0;
    t->failed = TP_OK;
    if (run->rank != 0)
        goto done; /* one writer per run directory: rank 0 */

    const char *dir = t->cfg.dir && t->cfg.dir[0] ? t->cfg.dir : "tensorboard";
    if (dir[0] == '/' || !run->run_dir || !run->run_dir[0]) {
        root = strdup(dir);
    } else {
        size_t n = strlen(run->run_dir) + 1 + strlen(dir) + 1;
        root = malloc(n);
        if (root)
            snprintf(root, n, "%s/%s", run->run_dir, dir);
    }
    if (!root) {
        st = t->host->fail(t->host, TP_ERR_NOMEM, WHO ": out of memory");
        goto done;
    }
    for (int p = 0; p < 2 && !st; p++)
        st = open_phase(t, root, p, run);
    if (st) {
        close_outputs(t);
        set_failed(t, st);
        goto done;
    }
    t->active = 1;
    t->last_write = monotonic_seconds();
done:
    free(root);
    pthread_mutex_unlock(&t->lock);
    return st;
}

static phase_out *phase_output(tb_logger *t, tp_phase phase)
{
    return &t->out[phase == TP_PHASE_VAL ? 1 : 0];
}

static tp_status tb_scalars(void *self, const tp_log_event *event)
{
    tb_logger *t = self;
    tp_status st = TP_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->active) {
        st = inactive_status(t);
        goto done;
    }
    phase_out *o = phase_output(t, event->phase);
    pb_buf summary, value;
    pb_init(&summary);
    pb_init(&value);
    size_t written = 0;
    for (size_t i = 0; i < event->n_scalars; i++) {
        const tp_scalar *s = &event->scalars[i];
        if (!s->tag || !claim_tag(t, o, s->tag, event->step))
            continue;
        pb_reset(&value);
        pb_field_string(&value, VALUE_TAG, s->tag);
        pb_field_float(&value, VALUE_SIMPLE_VALUE, (float)s->value);
        pb_field_message(&summary, SUMMARY_VALUE, &value);
        written++;
    }
    if (written)
        st = queue_event(t, o, event->wall_time > 0 ? event->wall_time : wall_seconds(),
                         event->step, EVENT_SUMMARY, &summary);
    pb_free(&summary);
    pb_free(&value);
    if (!st)
        st = maybe_write(t);
    if (st)
        set_failed(t, st);
done:
    pthread_mutex_unlock(&t->lock);
    return st;
}

static int tb_wants(void *self, tp_log_content what, int64_t step)
{
    tb_logger *t = self;
    pthread_mutex_lock(&t->lock);
    int64_t every = what == TP_LOG_HISTOGRAMS ? t->cfg.histograms_every
                    : what == TP_LOG_IMAGES   ? t->cfg.images_every
                                              : 0;
    int yes = t->active && every > 0 && step % every == 0;
    pthread_mutex_unlock(&t->lock);
    return yes;
}

/* Index of the bucket holding v: the first limit >= v (bucket i is (limit[i-1], limit[i]]). */
static size_t bucket_index(const double *limits, size_t n, double v)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (limits[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Encodes a HistogramProto. Runs of empty buckets are merged into one (the next non-empty
 * bucket's lower edge stays exact), as TensorFlow does, so a typical histogram needs a few
 * dozen buckets rather than 1551. Non-finite values are left out. */
static tp_status encode_histogram(tb_logger *t, const float *values, size_t count,
                                  pb_buf *histo, size_t *n_used)
{
    double *counts = calloc(t->n_limits, sizeof *counts);
    double *out_limit = malloc(t->n_limits * sizeof *out_limit);
    double *out_count = malloc(t->n_limits * sizeof *out_count);
    tp_status st = TP_OK;
    if (!counts || !out_limit || !out_count) {
        st = t->host->fail(t->host, TP_ERR_NOMEM, WHO ": out of memory for a histogram");
        goto done;
    }
    double mn = 0, mx = 0, sum = 0, sum_sq = 0;
    size_t used = 0, skipped = 0;
    for (size_t i = 0; i < count; i++) {
        double v = values[i];
        if (!isfinite(v)) {
            skipped++;
            continue;
        }
        if (used == 0 || v < mn)
            mn = v;
        if (used == 0 || v > mx)
            mx = v;
        sum += v;
        sum_sq += v * v;
        counts[bucket_index(t->limits, t->n_limits, v)] += 1;
        used++;
    }
    if (skipped && !t->warned_nonfinite++)
        t->host->log(t->host, TP_LOG_WARN, WHO,
                     "%zu non-finite values left out of a histogram (reported once)", skipped);
    *n_used = used;
    if (used == 0)
        goto done;

    size_t n_out = 0;
    for (size_t i = 0; i < t->n_limits;) {
        double limit = t->limits[i], c = counts[i];
        i++;
        if (c == 0)
            while (i < t->n_limits && counts[i] == 0)
                limit = t->limits[i++];
        out_limit[n_out] = limit;
        out_count[n_out] = c;
        n_out++;
    }
    pb_field_double(histo, HISTO_MIN, mn);
    pb_field_double(histo, HISTO_MAX, mx);
    pb_field_double(histo, HISTO_NUM, (double)used);
    pb_field_double(histo, HISTO_SUM, sum);
    pb_field_double(histo, HISTO_SUM_SQUARES, sum_sq);
    pb_field_packed_doubles(histo, HISTO_BUCKET_LIMIT, out_limit, n_out);
    pb_field_packed_doubles(histo, HISTO_BUCKET, out_count, n_out);
done:
    free(counts);
    free(out_limit);
    free(out_count);
    return st;
}

static tp_status tb_histogram(void *self, tp_phase phase, int64_t step, const char *tag,
                              const float *values, size_t count)
{
    tb_logger *t = self;
    tp_status st = TP_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->active) {
        st = inactive_status(t);
        goto done;
    }
    if (!tag || (count && !values)) {
        st = t->host->fail(t->host, TP_ERR_INVALID, WHO ": histogram without a tag or values");
        goto done;
    }
    phase_out *o = phase_output(t, phase);
    pb_buf histo, value, summary;
    pb_init(&histo);
    pb_init(&value);
    pb_init(&summary);
    size_t used = 0;
    st = encode_histogram(t, values, count, &histo, &used);
    if (!st && used > 0 && claim_tag(t, o, tag, step)) {
        pb_field_string(&value, VALUE_TAG, tag);
        pb_field_message(&value, VALUE_HISTO, &histo);
        pb_field_message(&summary, SUMMARY_VALUE, &value);
        st = queue_event(t, o, wall_seconds(), step, EVENT_SUMMARY, &summary);
    }
    pb_free(&histo);
    pb_free(&value);
    pb_free(&summary);
    if (!st)
        st = maybe_write(t);
    if (st == TP_ERR_IO || st == TP_ERR_NOMEM)
        set_failed(t, st);
done:
    pthread_mutex_unlock(&t->lock);
    return st;
}

static tp_status tb_images(void *self, tp_phase phase, int64_t step, const char *tag,
                           const uint8_t *pixels, int count, int height, int width,
                           int channels)
{
    tb_logger *t = self;
    tp_status st = TP_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->active) {
        st = inactive_status(t);
        goto done;
    }
    if (!tag || !pixels || count <= 0 || height <= 0 || width <= 0 ||
        (channels != 1 && channels != 3 && channels != 4)) {
        st = t->host->fail(t->host, TP_ERR_INVALID,
                           WHO ": images '%s': %d images of %dx%dx%d: need 1, 3 or 4 channels "
                           "and positive sizes",
                           tag ? tag : "(null)", count, height, width, channels);
        goto done;
    }
    phase_out *o = phase_output(t, phase);
    int n = count < t->cfg.max_images ? count : (int)t->cfg.max_images;
    size_t image_bytes = (size_t)height * (size_t)width * (size_t)channels;
    pb_buf image, value, summary;
    pb_init(&image);
    pb_init(&value);
    pb_init(&summary);
    size_t written = 0;
    for (int i = 0; i < n && !st; i++) {
        /* TensorFlow's naming: "<tag>" for one image, "<tag>/image/<i>" for several. */
        char name[512];
        if (n == 1)
            snprintf(name, sizeof name, "%s", tag);
        else
            snprintf(name, sizeof name, "%s/image/%d", tag, i);
        if (!claim_tag(t, o, name, step))
            continue;
        uint8_t *png = NULL;
        size_t png_len = 0;
        if (png_encode(pixels + (size_t)i * image_bytes, width, height, channels, &png,
                       &png_len) != 0) {
            st = t->host->fail(t->host, TP_ERR_NOMEM,
                               WHO ": cannot encode a %dx%dx%d PNG for '%s' (out of memory?)",
                               height, width, channels, name);
            break;
        }
        pb_reset(&image);
        pb_field_varint(&image, IMAGE_HEIGHT, (uint64_t)height);
        pb_field_varint(&image, IMAGE_WIDTH, (uint64_t)width);
        pb_field_varint(&image, IMAGE_COLORSPACE, (uint64_t)channels);
        pb_field_bytes(&image, IMAGE_ENCODED, png, png_len);
        free(png);
        pb_reset(&value);
        pb_field_string(&value, VALUE_TAG, name);
        pb_field_message(&value, VALUE_IMAGE, &image);
        pb_field_message(&summary, SUMMARY_VALUE, &value);
        written++;
    }
    if (!st && written)
        st = queue_event(t, o, wall_seconds(), step, EVENT_SUMMARY, &summary);
    pb_free(&image);
    pb_free(&value);
    pb_free(&summary);
    if (!st)
        st = maybe_write(t);
    if (st)
        set_failed(t, st);
done:
    pthread_mutex_unlock(&t->lock);
    return st;
}

/* Called every step: a cheap place to honour the flush timer between summaries. */
static tp_status tb_progress(void *self, const tp_progress *p)
{
    tb_logger *t = self;
    tp_status st = TP_OK;
    pthread_mutex_lock(&t->lock);
    if (t->active) {
        st = maybe_write(t);
        if (st)
            set_failed(t, st);
    }
    pthread_mutex_unlock(&t->lock);
    return st;
}

static tp_status sync_all(tb_logger *t)
{
    for (int p = 0; p < 2; p++) {
        tp_status st = event_file_sync(&t->out[p].file, t->host);
        if (st)
            return st;
    }
    t->last_write = monotonic_seconds();
    return TP_OK;
}

static tp_status tb_flush(void *self)
{
    tb_logger *t = self;
    tp_status st;
    pthread_mutex_lock(&t->lock);
    if (!t->active) {
        st = inactive_status(t);
    } else {
        st = sync_all(t);
        if (st)
            set_failed(t, st);
    }
    pthread_mutex_unlock(&t->lock);
    return st;
}

static tp_status tb_end(void *self, tp_status run_status)
{
    tb_logger *t = self;
    tp_status st;
    pthread_mutex_lock(&t->lock);
    if (!t->active) {
        st = inactive_status(t);
    } else {
        st = sync_all(t);
        if (st)
            set_failed(t, st);
    }
    close_outputs(t);
    t->active = 0;
    pthread_mutex_unlock(&t->lock);
    return st;
}

static const tp_logger_ops tb_ops = {
    .size = sizeof(tp_logger_ops),
    .begin = tb_begin,
    .scalars = tb_scalars,
    .wants = tb_wants,
    .histogram = tb_histogram,
    .images = tb_images,
    .progress = tb_progress,
    .flush = tb_flush,
    .end = tb_end,
};

static const tp_component tb_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_LOGGER,
    .name = "tensorboard",
    .summary = "TensorBoard event files: scalars, histograms and images (train/ and validation/)",
    .params = tb_params,
    .n_params = sizeof tb_params / sizeof tb_params[0],
    .config_size = sizeof(tb_config),
    .create = tb_create,
    .destroy = tb_destroy,
    .ops = &tb_ops,
};

static const tp_component *const tb_components[] = { &tb_component };

static const tp_plugin_info tb_plugin = {
    TP_PLUGIN_INFO_HEADER,
    .name = "log-tensorboard",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "TensorBoard event-file logger",
    .components = tb_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &tb_plugin; }
