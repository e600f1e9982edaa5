/* log-csv: one CSV row per logged event (RFC 4180), for spreadsheets and `trainpipe plot`.
 *
 * Columns are fixed (see csv_header) so files from different runs line up; a cell is empty
 * where the event does not carry that value. Rows are flushed one by one, so a crash loses
 * at most the row being written; a resumed run first drops the rows past its checkpoint. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

#define WHO "csv"

enum {
    COL_STEP,
    COL_EPOCH,
    COL_WALL_TIME,
    COL_PHASE,
    COL_TRAIN_LOSS,
    COL_TRAIN_ERROR,
    COL_VAL_LOSS,
    COL_VAL_ERROR,
    COL_VAL_ERROR_TOP5,
    COL_LEARNING_RATE,
    COL_IMAGES_PER_SEC,
    COL_DATA_WAIT,
    N_COLS
};

static const char csv_header[] =
    "step,epoch,wall_time,phase,train_loss,train_error,val_loss,val_error,val_error_top5,"
    "learning_rate,images_per_sec,data_wait_fraction";

typedef struct csv_config {
    const char *file;
} csv_config;

static const tp_param_def csv_params[] = {
    TP_PARAM_DEF_PATH(csv_config, file, "file", "metrics.csv",
                      "The CSV file (a relative default is taken relative to the run directory)."),
};

typedef struct csv_logger {
    const tp_host *host;
    csv_config cfg;
    pthread_mutex_t lock;
    FILE *fp;
    char *path;
    int active;
    tp_status failed;
    int64_t last_step[2][N_COLS]; /* per phase and column: never one cell twice at one step */
    int have_step[2][N_COLS];
    int warned_unknown, warned_duplicate;
} csv_logger;

/* The column a (phase, tag) pair goes to, or -1. */
static int column_for(tp_phase phase, const char *tag)
{
    int val = phase == TP_PHASE_VAL;
    if (strcmp(tag, TP_TAG_LOSS) == 0)
        return val ? COL_VAL_LOSS : COL_TRAIN_LOSS;
    if (strcmp(tag, TP_TAG_ERROR_TOP1) == 0)
        return val ? COL_VAL_ERROR : COL_TRAIN_ERROR;
    if (strcmp(tag, TP_TAG_ERROR_TOP5) == 0)
        return val ? COL_VAL_ERROR_TOP5 : -1;
    if (strcmp(tag, TP_TAG_LEARNING_RATE) == 0)
        return COL_LEARNING_RATE;
    if (strcmp(tag, TP_TAG_IMAGES_PER_SEC) == 0)
        return COL_IMAGES_PER_SEC;
    if (strcmp(tag, TP_TAG_DATA_WAIT) == 0)
        return COL_DATA_WAIT;
    return -1;
}

/* ---------------------------------------------------------------- a small string builder */

typedef struct strbuf {
    char *data;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_append(strbuf *s, const char *text, size_t n)
{
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->data, cap);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->data = p;
        s->cap = cap;
    }
    memcpy(s->data + s->len, text, n);
    s->len += n;
    s->data[s->len] = '\0';
}

static void sb_puts(strbuf *s, const char *text) { sb_append(s, text, strlen(text)); }

/* A field as RFC 4180 wants it: quoted when it holds a comma, a quote, CR or LF (quotes
 * doubled inside), verbatim otherwise. */
static void sb_csv_field(strbuf *s, const char *text)
{
    if (strpbrk(text, ",\"\r\n") == NULL) {
        sb_puts(s, text);
        return;
    }
    sb_append(s, "\"", 1);
    for (const char *c = text; *c; c++) {
        if (*c == '"')
            sb_append(s, "\"\"", 2);
        else
            sb_append(s, c, 1);
    }
    sb_append(s, "\"", 1);
}

static void sb_number(strbuf *s, double v, const char *fmt)
{
    char tmp[64];
    if (isnan(v))
        snprintf(tmp, sizeof tmp, "nan");
    else if (isinf(v))
        snprintf(tmp, sizeof tmp, v > 0 ? "inf" : "-inf");
    else
        snprintf(tmp, sizeof tmp, fmt, v);
    sb_puts(s, tmp);
}

/* ---------------------------------------------------------------- component */

static tp_status csv_create(const tp_host *host, const void *config, void **self)
{
    csv_logger *c = calloc(1, sizeof *c);
    if (!c)
        return host->fail(host, TP_ERR_NOMEM, WHO ": out of memory");
    c->host = host;
    c->cfg = *(const csv_config *)config;
    pthread_mutex_init(&c->lock, NULL);
    *self = c;
    return TP_OK;
}

static void close_file(csv_logger *c)
{
    if (c->fp)
        fclose(c->fp);
    c->fp = NULL;
}

static void csv_destroy(void *self)
{
    csv_logger *c = self;
    if (!c)
        return;
    close_file(c);
    free(c->path);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static tp_status set_failed(csv_logger *c, tp_status st)
{
    if (st && !c->failed)
        c->failed = st;
    c->active = 0;
    close_file(c);
    return st;
}

static tp_status inactive_status(csv_logger *c)
{
    if (c->failed)
        return c->host->fail(c->host, c->failed, WHO ": disabled after an earlier error");
    return TP_OK;
}

/* Reads a whole file into a NUL-terminated buffer. */
static tp_status read_file(const tp_host *host, const char *path, FILE *fp, char **out,
                           size_t *out_len)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return host->fail(host, TP_ERR_NOMEM, "%s: out of memory", path);
    for (;;) {
        if (cap - len < 2) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return host->fail(host, TP_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = p;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(fp)) {
        int e = errno;
        free(buf);
        return host->fail(host, TP_ERR_IO, "%s: read failed: %s", path, strerror(e));
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return TP_OK;
}

/* The end of the record starting at p (the offset of its terminating LF, or len when the
 * record is not terminated). LFs inside quoted fields belong to the record. */
static size_t record_end(const char *buf, size_t len, size_t p)
{
    int quoted = 0;
    for (; p < len; p++) {
        if (buf[p] == '"')
            quoted = !quoted;
        else if (buf[p] == '\n' && !quoted)
            return p;
    }
    return len;
}

/* Parses the step (first field) of a record; 0 on success. */
static int record_step(const char *rec, size_t n, int64_t *step)
{
    char field[32];
    size_t i = 0, k = 0;
    int quoted = i < n && rec[i] == '"';
    if (quoted)
        i++;
    for (; i < n && k + 1 < sizeof field; i++) {
        if (quoted ? rec[i] == '"' : (rec[i] == ',' || rec[i] == '\r'))
            break;
        field[k++] = rec[i];
    }
    field[k] = '\0';
    if (k == 0)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(field, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *step = v;
    return 0;
}

/* Resuming: keeps the header and the rows with step <= start_step; rewrites the file (to a
 * temporary file, then rename) when anything is dropped, including a half-written last row. */
static tp_status trim_for_resume(csv_logger *c, int64_t start_step)
{
    const tp_host *host = c->host;
    char *buf = NULL, *tmp = NULL;
    size_t len = 0;
    FILE *in = NULL, *out = NULL;
    tp_status st = TP_OK;

    in = fopen(c->path, "rb");
    if (!in) {
        if (errno == ENOENT)
            return TP_OK; /* nothing to keep: a fresh file is written */
        return host->fail(host, TP_ERR_IO, "%s: cannot open: %s", c->path, strerror(errno));
    }
    st = read_file(host, c->path, in, &buf, &len);
    fclose(in);
    if (st)
        return st;
    if (len == 0)
        goto done;

    size_t head_end = record_end(buf, len, 0);
    size_t head_len = head_end;
    if (head_len > 0 && buf[head_len - 1] == '\r')
        head_len--;
    if (head_len != strlen(csv_header) || memcmp(buf, csv_header, head_len) != 0) {
        st = host->fail(host, TP_ERR_FORMAT,
                        "%s: the header differs from the columns this logger writes "
                        "(expected \"%s\", found \"%.*s\"): move it away or choose another "
                        "file with file =",
                        c->path, csv_header, (int)(head_len > 200 ? 200 : head_len), buf);
        goto done;
    }

    /* keep = the byte length of the prefix that stays. Kept rows form a prefix because a
     * run only moves forward; a row past start_step ends it. */
    size_t keep = head_end < len ? head_end + 1 : len;
    int dropped = head_end >= len; /* header without its LF: rewrite to repair */
    int line = 2;
    for (size_t p = keep; p < len; line++) {
        size_t e = record_end(buf, len, p);
        if (e >= len) {
            host->log(host, TP_LOG_WARN, WHO, "%s:%d: dropping an incomplete last row", c->path,
                      line);
            dropped = 1;
            break;
        }
        int64_t step;
        if (record_step(buf + p, e - p, &step) != 0) {
            st = host->fail(host, TP_ERR_FORMAT, "%s:%d (byte %zu): the step column is not an "
                            "integer", c->path, line, p);
            goto done;
        }
        if (step > start_step) {
            dropped = 1;
            break;
        }
        p = e + 1;
        keep = p;
    }
    if (!dropped)
        goto done;

    size_t n = strlen(c->path) + 32;
    tmp = malloc(n);
    if (!tmp) {
        st = host->fail(host, TP_ERR_NOMEM, "%s: out of memory", c->path);
        goto done;
    }
    snprintf(tmp, n, "%s.tmp.%ld", c->path, (long)getpid());
    out = fopen(tmp, "wb");
    if (!out) {
        st = host->fail(host, TP_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    if (fwrite(buf, 1, keep, out) != keep || (keep > 0 && buf[keep - 1] != '\n' &&
                                             fputc('\n', out) == EOF) ||
        fflush(out) != 0 || fsync(fileno(out)) != 0) {
        st = host->fail(host, TP_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(out) != 0) {
        out = NULL;
        st = host->fail(host, TP_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
        goto done;
    }
    out = NULL;
    if (rename(tmp, c->path) != 0) {
        st = host->fail(host, TP_ERR_IO, "rename %s to %s: %s", tmp, c->path, strerror(errno));
        goto done;
    }
    host->log(host, TP_LOG_INFO, WHO, "%s: resuming at step %lld: dropped the rows after it",
              c->path, (long long)start_step);
done:
    if (out)
        fclose(out);
    if (st && tmp)
        unlink(tmp);
    free(tmp);
    free(buf);
    return st;
}

static tp_status write_text(csv_logger *c, const char *text)
{
    if (fputs(text, c->fp) == EOF || fflush(c->fp) != 0)
        return c->host->fail(c->host, TP_ERR_IO, "%s: write failed: %s", c->path,
                             strerror(errno));
    return TP_OK;
}

static tp_status csv_begin(void *self, const tp_run_info *run)
{
    csv_logger *c = self;
    tp_status st = TP_OK;
    pthread_mutex_lock(&c->lock);
    close_file(c);
    free(c->path);
    c->path = NULL;
    c->active = 0;
    c->failed = TP_OK;
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < N_COLS; k++)
            c->have_step[p][k] = 0;
    if (run->rank != 0)
        goto done; /* one writer per run directory: rank 0 */

    const char *file = c->cfg.file && c->cfg.file[0] ? c->cfg.file : "metrics.csv";
    if (file[0] == '/' || !run->run_dir || !run->run_dir[0]) {
        c->path = strdup(file);
    } else {
        size_t n = strlen(run->run_dir) + 1 + strlen(file) + 1;
        c->path = malloc(n);
        if (c->path)
            snprintf(c->path, n, "%s/%s", run->run_dir, file);
    }
    if (!c->path) {
        st = c->host->fail(c->host, TP_ERR_NOMEM, WHO ": out of memory");
        goto done;
    }

    int need_header = 1;
    if (run->resumed) {
        st = trim_for_resume(c, run->start_step);
        if (st)
            goto fail;
        struct stat sb;
        need_header = !(stat(c->path, &sb) == 0 && sb.st_size > 0);
    }
    /* A fresh run starts the file over; a resumed one appends to what was kept. */
    c->fp = fopen(c->path, need_header ? "w" : "a");
    if (!c->fp) {
        st = c->host->fail(c->host, TP_ERR_IO, "%s: cannot open for writing: %s", c->path,
                           strerror(errno));
        goto fail;
    }
    if (need_header) {
        st = write_text(c, csv_header);
        if (!st)
            st = write_text(c, "\n");
        if (st)
            goto fail;
    }
    c->active = 1;
    goto done;
fail:
    set_failed(c, st);
done:
    pthread_mutex_unlock(&c->lock);
    return st;
}

static tp_status csv_scalars(void *self, const tp_log_event *event)
{
    csv_logger *c = self;
    tp_status st = TP_OK;
    strbuf row = { 0 };
    pthread_mutex_lock(&c->lock);
    if (!c->active) {
        st = inactive_status(c);
        goto done;
    }
    int ph = event->phase == TP_PHASE_VAL ? 1 : 0;
    const tp_scalar *cell[N_COLS] = { 0 };
    int any = 0;
    for (size_t i = 0; i < event->n_scalars; i++) {
        const tp_scalar *s = &event->scalars[i];
        int col = s->tag ? column_for(event->phase, s->tag) : -1;
        if (col < 0) {
            if (!c->warned_unknown++)
                c->host->log(c->host, TP_LOG_INFO, WHO,
                             "%s: no column for %s tag '%s': not written (reported once)",
                             c->path, ph ? "validation" : "train", s->tag ? s->tag : "(null)");
            continue;
        }
        if (cell[col] || (c->have_step[ph][col] && event->step <= c->last_step[ph][col])) {
            if (!c->warned_duplicate++)
                c->host->log(c->host, TP_LOG_WARN, WHO,
                             "%s: '%s' at step %lld was already written: skipped (further "
                             "skips are not reported)",
                             c->path, s->tag, (long long)event->step);
            continue;
        }
        cell[col] = s;
        any = 1;
    }
    if (!any)
        goto done;

    char tmp[64];
    snprintf(tmp, sizeof tmp, "%lld,", (long long)event->step);
    sb_puts(&row, tmp);
    sb_number(&row, event->epoch, "%.9g");
    sb_puts(&row, ",");
    /* A host that leaves wall_time unset gets the time the row is written. */
    sb_number(&row, event->wall_time > 0 ? event->wall_time : (double)time(NULL), "%.3f");
    sb_puts(&row, ",");
    sb_csv_field(&row, ph ? "validation" : "train");
    for (int col = COL_PHASE + 1; col < N_COLS; col++) {
        sb_puts(&row, ",");
        if (cell[col]) {
            sb_number(&row, cell[col]->value, "%.9g");
            c->have_step[ph][col] = 1;
            c->last_step[ph][col] = event->step;
        }
    }
    sb_puts(&row, "\n");
    if (row.oom) {
        st = c->host->fail(c->host, TP_ERR_NOMEM, "%s: out of memory", c->path);
        goto done;
    }
    st = write_text(c, row.data);
    if (st)
        set_failed(c, st);
done:
    pthread_mutex_unlock(&c->lock);
    free(row.data);
    return st;
}

static tp_status csv_progress(void *self, const tp_progress *p) { return TP_OK; }

static tp_status sync_file(csv_logger *c)
{
    if (fflush(c->fp) != 0 || (fsync(fileno(c->fp)) != 0 && errno != EINVAL && errno != EROFS))
        return c->host->fail(c->host, TP_ERR_IO, "%s: flush failed: %s", c->path,
                             strerror(errno));
    return TP_OK;
}

static tp_status csv_flush(void *self)
{
    csv_logger *c = self;
    tp_status st;
    pthread_mutex_lock(&c->lock);
    if (!c->active)
        st = inactive_status(c);
    else if ((st = sync_file(c)) != TP_OK)
        set_failed(c, st);
    pthread_mutex_unlock(&c->lock);
    return st;
}

static tp_status csv_end(void *self, tp_status run_status)
{
    csv_logger *c = self;
    tp_status st;
    pthread_mutex_lock(&c->lock);
    if (!c->active) {
        st = inactive_status(c);
    } else {
        st = sync_file(c);
        if (fclose(c->fp) != 0 && !st)
            st = c->host->fail(c->host, TP_ERR_IO, "%s: close failed: %s", c->path,
                               strerror(errno));
        c->fp = NULL;
        if (st)
            set_failed(c, st);
    }
    c->active = 0;
    pthread_mutex_unlock(&c->lock);
    return st;
}

static const tp_logger_ops csv_ops = {
    .size = sizeof(tp_logger_ops),
    .begin = csv_begin,
    .scalars = csv_scalars,
    .wants = NULL,
    .histogram = NULL,
    .images = NULL,
    .progress = csv_progress,
    .flush = csv_flush,
    .end = csv_end,
};

static const tp_component csv_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_LOGGER,
    .name = "csv",
    .summary = "A CSV file of train/validation loss, error, learning rate and throughput",
    .params = csv_params,
    .n_params = sizeof csv_params / sizeof csv_params[0],
    .config_size = sizeof(csv_config),
    .create = csv_create,
    .destroy = csv_destroy,
    .ops = &csv_ops,
};

static const tp_component *const csv_components[] = { &csv_component };

static const tp_plugin_info csv_plugin = {
    TP_PLUGIN_INFO_HEADER,
    .name = "log-csv",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "CSV metrics logger",
    .components = csv_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &csv_plugin; }
