/* log-console: live progress on standard output.
 *
 * Standard output, because progress is the run's main output and diagnostics go to standard
 * error: `trainpipe train x.ini 2>errors.log` keeps a clean display and `>progress.log` a
 * clean record. On a terminal, progress() redraws one line in place (\r, then ANSI "erase
 * line"), at most ten times a second, cut to the terminal's width so it never wraps.
 * Anywhere else (a pipe, a file, TERM=dumb) it prints plain lines at most every
 * interval_secs of run time, with no control characters at all. Validation results always
 * get a line of their own; `quiet` keeps only those and the closing summary. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

#define WHO "console"
#define LINE_MAX_BYTES 512
#define REDRAW_INTERVAL 0.1 /* seconds between terminal redraws */

typedef struct console_config {
    double interval_secs;
    int quiet;
    int64_t bar_width;
} console_config;

static const tp_param_def console_params[] = {
    TP_PARAM_DEF_FLOAT(console_config, interval_secs, "interval_secs", "10", 0, 86400,
                       "Seconds between progress lines when standard output is not a terminal."),
    TP_PARAM_DEF_BOOL(console_config, quiet, "quiet", "false",
                      "Print only validation results and the closing summary."),
    TP_PARAM_DEF_INT(console_config, bar_width, "bar_width", "30", 0, 200,
                     "Width of the terminal progress bar in characters (0 = no bar)."),
};

typedef struct console_logger {
    const tp_host *host;
    console_config cfg;
    pthread_mutex_t lock;
    int active;
    int fancy;              /* a terminal that understands ANSI: redraw in place */
    int line_drawn;         /* a progress line is on screen (terminal mode) */
    double last_draw;       /* monotonic time of the last redraw */
    int have_progress;
    tp_progress last;       /* the latest progress event */
    char last_line[LINE_MAX_BYTES];
    int64_t first_step;     /* for the rate behind the ETA */
    double first_elapsed;
    double last_print;      /* run time of the last plain progress line */
    int64_t total_steps;
    double learning_rate;   /* latest from the train scalars, NaN if none */
    double val_error, best_val_error;
    int64_t best_val_step;
    int have_val;
} console_logger;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Appends printf output to a fixed line buffer, silently truncating. */
static void line_add(char *line, size_t size, const char *fmt, ...) TP_PRINTF(3, 4);
static void line_add(char *line, size_t size, const char *fmt, ...)
{
    size_t used = strlen(line);
    if (used + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + used, size - used, fmt, ap);
    va_end(ap);
}

/* Replaces control characters (anything below 0x20, and DEL) so nothing a plugin hands us
 * can move the cursor or change colours. */
static void strip_controls(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static void format_duration(char *out, size_t size, double seconds)
{
    if (!isfinite(seconds) || seconds < 0) {
        snprintf(out, size, "--:--:--");
        return;
    }
    long long s = (long long)(seconds + 0.5);
    if (s >= 86400)
        snprintf(out, size, "%lldd %02lld:%02lld:%02lld", s / 86400, s / 3600 % 24, s / 60 % 60,
                 s % 60);
    else
        snprintf(out, size, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
}

static tp_status console_create(const tp_host *host, const void *config, void **self)
{
    console_logger *c = calloc(1, sizeof *c);
    if (!c)
        return host->fail(host, TP_ERR_NOMEM, WHO ": out of memory");
    c->host = host;
    c->cfg = *(const console_config *)config;
    pthread_mutex_init(&c->lock, NULL);
    *self = c;
    return TP_OK;
}

static void console_destroy(void *self)
{
    console_logger *c = self;
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Writes text in one call and flushes; output errors (a closed pipe) are not worth failing
 * a training run for, so they are ignored. */
static void emit(const char *text)
{
    fputs(text, stdout);
    fflush(stdout);
}

static tp_status console_begin(void *self, const tp_run_info *run)
{
    console_logger *c = self;
    pthread_mutex_lock(&c->lock);
    c->active = run->rank == 0;
    const char *term = getenv("TERM");
    c->fancy = isatty(STDOUT_FILENO) && !(term && strcmp(term, "dumb") == 0);
    c->line_drawn = 0;
    c->have_progress = 0;
    c->last_line[0] = '\0';
    c->last_draw = -1e30;
    c->total_steps = run->total_steps;
    c->learning_rate = NAN;
    c->have_val = 0;
    c->best_val_error = INFINITY;
    c->best_val_step = 0;
    if (c->active && !c->cfg.quiet) {
        char line[LINE_MAX_BYTES];
        if (run->resumed)
            snprintf(line, sizeof line, "resuming at step %lld of %lld, output in %s",
                     (long long)run->start_step, (long long)run->total_steps,
                     run->run_dir ? run->run_dir : ".");
        else
            snprintf(line, sizeof line, "starting: %lld steps, output in %s",
                     (long long)run->total_steps, run->run_dir ? run->run_dir : ".");
        strip_controls(line);
        line_add(line, sizeof line, "\n");
        emit(line);
    }
    pthread_mutex_unlock(&c->lock);
    return TP_OK;
}

/* One rendering of the progress text: a bar of bar_w cells (0: none), the learning rate or
 * not, and fields two spaces apart, or one when `narrow` (which also rounds images/s). */
static void progress_compose(console_logger *c, const tp_progress *p, int bar_w, int with_lr,
                             int narrow, char *line, size_t size)
{
    const char *sep = narrow ? " " : "  ";
    line[0] = '\0';
    double frac = p->total_steps > 0 ? (double)p->step / (double)p->total_steps : NAN;
    if (p->total_epochs > 0)
        line_add(line, size, "epoch %lld/%lld%s", (long long)p->epoch,
                 (long long)p->total_epochs, sep);
    else
        line_add(line, size, "epoch %lld%s", (long long)p->epoch, sep);
    line_add(line, size, "step %lld/%lld", (long long)p->step, (long long)p->total_steps);
    if (bar_w > 0 && isfinite(frac)) {
        double f = frac < 0 ? 0 : frac > 1 ? 1 : frac;
        int filled = (int)(f * bar_w);
        char bar[256];
        int k = 0;
        bar[k++] = '[';
        for (int i = 0; i < bar_w && k < (int)sizeof bar - 3; i++)
            bar[k++] = i < filled ? '=' : (i == filled ? '>' : ' ');
        bar[k++] = ']';
        bar[k] = '\0';
        line_add(line, size, " %s", bar);
    }
    if (isfinite(frac))
        line_add(line, size, " %5.1f%%", 100.0 * frac);

    double eta = NAN;
    if (p->step > c->first_step && p->seconds_elapsed > c->first_elapsed && p->total_steps > 0)
        eta = (double)(p->total_steps - p->step) * (p->seconds_elapsed - c->first_elapsed) /
              (double)(p->step - c->first_step);
    char dur[32];
    format_duration(dur, sizeof dur, eta);
    line_add(line, size, "%sETA %s", sep, dur);
    if (isfinite(p->images_per_sec))
        line_add(line, size, "%s%.*f img/s", sep, narrow ? 0 : 1, p->images_per_sec);
    if (isfinite(p->loss))
        line_add(line, size, "%sloss %.4f", sep, p->loss);
    if (isfinite(p->error_top1))
        line_add(line, size, "%serr %.2f%%", sep, 100.0 * p->error_top1);
    if (with_lr && isfinite(c->learning_rate))
        line_add(line, size, "%slr %.4g", sep, c->learning_rate);
    strip_controls(line);
}

/* The progress text (no control characters, no newline) for event p, at most width - 1
 * columns (width <= 0: no limit) so that it never wraps. Where the full line does not fit,
 * the bar shrinks, then goes, then the learning rate, then the fields close up, so that
 * step, ETA, images/s, loss and error stay visible on an 80-column terminal. */
static void progress_text(console_logger *c, const tp_progress *p, int with_bar, int width,
                          char *line, size_t size)
{
    int bar_w = with_bar ? (int)c->cfg.bar_width : 0;
    progress_compose(c, p, bar_w, 1, 0, line, size);
    if (width <= 0 || strlen(line) < (size_t)width)
        return;
    if (bar_w > 0) {
        /* the full line did not fit, so any bar that does is shorter: the line without one,
         * plus " [" and "]", leaves `room` cells */
        progress_compose(c, p, 0, 1, 0, line, size);
        int room = width - 1 - (int)strlen(line) - 3;
        if (room >= 10)
            progress_compose(c, p, room, 1, 0, line, size);
        if (room >= 10 || strlen(line) < (size_t)width)
            return;
    }
    progress_compose(c, p, 0, 0, 0, line, size);
    if (strlen(line) < (size_t)width)
        return;
    progress_compose(c, p, 0, 0, 1, line, size);
    if (strlen(line) >= (size_t)width)
        line[width > 1 ? width - 1 : 0] = '\0'; /* never wrap: \r only returns one row */
}

/* Terminal mode: clear the current row and draw the progress line on it (no newline). */
static void redraw(console_logger *c)
{
    char out[LINE_MAX_BYTES + 16];
    snprintf(out, sizeof out, "\r\033[2K%s", c->last_line);
    emit(out);
    c->line_drawn = 1;
    c->last_draw = monotonic_seconds();
}

static tp_status console_progress(void *self, const tp_progress *p)
{
    console_logger *c = self;
    pthread_mutex_lock(&c->lock);
    if (!c->active)
        goto done;
    if (!c->have_progress || p->step < c->last.step) {
        c->first_step = p->step;
        c->first_elapsed = p->seconds_elapsed;
        c->last_print = p->seconds_elapsed;
    }
    /* Copy only what the host's struct has (an older host's is shorter). */
    size_t n = p->size < sizeof c->last ? p->size : sizeof c->last;
    memset(&c->last, 0, sizeof c->last);
    memcpy(&c->last, p, n);
    c->last.size = sizeof c->last;
    if (n >= offsetof(tp_progress, learning_rate) + sizeof p->learning_rate &&
        isfinite(p->learning_rate))
        c->learning_rate = p->learning_rate; /* every step, not only per logging interval */
    c->have_progress = 1;
    if (c->cfg.quiet)
        goto done;
    if (c->fancy) {
        int final = p->total_steps > 0 && p->step >= p->total_steps;
        if (final || monotonic_seconds() - c->last_draw >= REDRAW_INTERVAL) {
            progress_text(c, p, 1, terminal_width(), c->last_line, sizeof c->last_line);
            redraw(c);
        }
    } else if (p->seconds_elapsed - c->last_print >= c->cfg.interval_secs ||
               p->seconds_elapsed < c->last_print) {
        char line[LINE_MAX_BYTES];
        progress_text(c, p, 0, 0, line, sizeof line - 1);
        strcat(line, "\n");
        emit(line);
        c->last_print = p->seconds_elapsed;
    }
done:
    pthread_mutex_unlock(&c->lock);
    return TP_OK;
}

/* Prints a full line; on a terminal the progress line is cleared first and drawn again
 * below it. */
static void print_line(console_logger *c, const char *text)
{
    char out[LINE_MAX_BYTES + 16];
    if (c->fancy && c->line_drawn)
        snprintf(out, sizeof out, "\r\033[2K%s\n", text);
    else
        snprintf(out, sizeof out, "%s\n", text);
    emit(out);
    c->line_drawn = 0;
    if (c->fancy && !c->cfg.quiet && c->last_line[0])
        redraw(c);
}

static tp_status console_scalars(void *self, const tp_log_event *event)
{
    console_logger *c = self;
    pthread_mutex_lock(&c->lock);
    if (!c->active)
        goto done;
    if (event->phase == TP_PHASE_TRAIN) {
        for (size_t i = 0; i < event->n_scalars; i++)
            if (event->scalars[i].tag &&
                strcmp(event->scalars[i].tag, TP_TAG_LEARNING_RATE) == 0)
                c->learning_rate = event->scalars[i].value;
        goto done;
    }
    char line[LINE_MAX_BYTES] = "";
    line_add(line, sizeof line, "validation at step %lld (epoch %.2f):", (long long)event->step,
             event->epoch);
    for (size_t i = 0; i < event->n_scalars; i++) {
        const tp_scalar *s = &event->scalars[i];
        if (!s->tag)
            continue;
        if (strcmp(s->tag, TP_TAG_LOSS) == 0) {
            line_add(line, sizeof line, "  loss %.4f", s->value);
        } else if (strcmp(s->tag, TP_TAG_ERROR_TOP1) == 0) {
            line_add(line, sizeof line, "  error %.2f%%", 100.0 * s->value);
            c->val_error = s->value;
            c->have_val = 1;
            if (s->value < c->best_val_error) {
                c->best_val_error = s->value;
                c->best_val_step = event->step;
            }
        } else if (strcmp(s->tag, TP_TAG_ERROR_TOP5) == 0) {
            line_add(line, sizeof line, "  top-5 error %.2f%%", 100.0 * s->value);
        } else {
            line_add(line, sizeof line, "  %s %.4g", s->tag, s->value);
        }
    }
    strip_controls(line);
    print_line(c, line);
done:
    pthread_mutex_unlock(&c->lock);
    return TP_OK;
}

static tp_status console_flush(void *self)
{
    fflush(stdout);
    return TP_OK;
}

static tp_status console_end(void *self, tp_status run_status)
{
    console_logger *c = self;
    pthread_mutex_lock(&c->lock);
    if (!c->active)
        goto done;
    if (c->fancy && c->line_drawn) {
        /* Leave the last progress line in place, finished with a newline. */
        if (c->have_progress && !c->cfg.quiet)
            progress_text(c, &c->last, 1, terminal_width(), c->last_line, sizeof c->last_line);
        char out[LINE_MAX_BYTES + 16];
        snprintf(out, sizeof out, "\r\033[2K%s\n", c->last_line);
        emit(out);
        c->line_drawn = 0;
    }
    char line[LINE_MAX_BYTES] = "";
    const char *how = run_status == TP_OK                ? "finished"
                      : run_status == TP_ERR_INTERRUPTED ? "interrupted"
                                                         : "stopped by an error";
    line_add(line, sizeof line, "%s", how);
    if (run_status != TP_OK && run_status != TP_ERR_INTERRUPTED)
        line_add(line, sizeof line, " (%s)", tp_status_name(run_status));
    if (c->have_progress) {
        char dur[32];
        format_duration(dur, sizeof dur, c->last.seconds_elapsed);
        line_add(line, sizeof line, " at step %lld/%lld after %s", (long long)c->last.step,
                 (long long)c->total_steps, dur);
        if (c->last.step > c->first_step && c->last.seconds_elapsed > c->first_elapsed &&
            isfinite(c->last.images_per_sec))
            line_add(line, sizeof line, ", %.1f img/s", c->last.images_per_sec);
    }
    if (c->have_val)
        line_add(line, sizeof line, "; last validation error %.2f%% (best %.2f%% at step %lld)",
                 100.0 * c->val_error, 100.0 * c->best_val_error, (long long)c->best_val_step);
    strip_controls(line);
    line_add(line, sizeof line, "\n");
    emit(line);
    c->active = 0;
done:
    pthread_mutex_unlock(&c->lock);
    return TP_OK;
}

static const tp_logger_ops console_ops = {
    .size = sizeof(tp_logger_ops),
    .begin = console_begin,
    .scalars = console_scalars,
    .wants = NULL,
    .histogram = NULL,
    .images = NULL,
    .progress = console_progress,
    .flush = console_flush,
    .end = console_end,
};

static const tp_component console_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_LOGGER,
    .name = "console",
    .summary = "Live progress on standard output (redrawn in place on a terminal)",
    .params = console_params,
    .n_params = sizeof console_params / sizeof console_params[0],
    .config_size = sizeof(console_config),
    .create = console_create,
    .destroy = console_destroy,
    .ops = &console_ops,
};

static const tp_component *const console_components[] = { &console_component };

static const tp_plugin_info console_plugin = {
    TP_PLUGIN_INFO_HEADER,
    .name = "log-console",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "Console progress logger",
    .components = console_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &console_plugin; }
