/* Drives the loggers as a trainer would, for the logger integration tests.
 *
 *   test_loggers train RUN_DIR STEPS ATTEMPT [RESUME_STEP]
 *       tensorboard + csv: train scalars every 10 steps, validation every 100, histograms
 *       and images where the logger wants them, a duplicate event at step 50 (its values
 *       must be skipped), progress every step, flush at evaluations. Values follow the
 *       formulas below (test_loggers_check.py computes the same ones); ATTEMPT shifts them
 *       so a resumed run's values differ from the ones it replaces.
 *   test_loggers console STEPS [key=value...]
 *       console: progress every step (0.5 s of run time each), validation every 50.
 *   test_loggers fail-dir TMP       loggers pointed at a path below a regular file
 *   test_loggers fail-write TMP     disk full (/dev/full, RLIMIT_FSIZE), removed directory
 *   test_loggers fail-header TMP    resuming onto a CSV with another header
 *
 * Like the host, a logger that fails is reported once, on one stderr line, and detached. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"
#include "services.h"

typedef struct logger {
    const char *name;
    instance inst;
    const tp_logger_ops *ops;
    int detached;
} logger;

static registry *reg;

/* The plugin .so: the build tree's plugins/.libs/NAME.so. */
static int load_plugin(const char *plugin)
{
    const char *b = getenv("TP_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/.libs/%s.so", b ? b : "..", plugin);
    if (registry_load_file(reg, path)) {
        fprintf(stderr, "test_loggers: %s\n", services_last_error());
        return -1;
    }
    return 0;
}

static int make_logger(logger *lg, const char *plugin, const char *name, const char *const *kv)
{
    memset(lg, 0, sizeof *lg);
    lg->name = name;
    if (!registry_find(reg, TP_KIND_LOGGER, name) && load_plugin(plugin))
        return -1;
    const registry_entry *e = registry_find(reg, TP_KIND_LOGGER, name);
    if (!e) {
        fprintf(stderr, "test_loggers: no logger '%s' in %s\n", name, plugin);
        return -1;
    }
    if (instance_create(e->component, kv, &lg->inst)) {
        fprintf(stderr, "test_loggers: %s: %s\n", name, services_last_error());
        return -1;
    }
    lg->ops = e->component->ops;
    return 0;
}

/* The host's rule: report a failure once, then detach the logger. Returns the status. */
static tp_status check(logger *lg, tp_status st)
{
    if (st && !lg->detached) {
        fprintf(stderr, "trainpipe: error: logger %s: %s\n", lg->name, services_last_error());
        lg->detached = 1;
    }
    return st;
}

#define CALL(lg, op, ...) \
    ((lg)->detached || !(lg)->ops->op ? TP_OK : check((lg), (lg)->ops->op((lg)->inst.self, ##__VA_ARGS__)))

/* ---------------------------------------------------------------- the synthetic run */

static double f_loss(int64_t s, int a) { return 2.0 / (1.0 + s / 100.0) + 0.25 * a; }
static double f_error(int64_t s, int a) { return 0.9 / (1.0 + s / 200.0) + 0.05 * a; }
static double f_lr(int64_t s) { return s < 300 ? 0.1 : s < 700 ? 0.01 : 0.001; }
static double f_ips(int64_t s) { return 1000.0 + (double)(s % 7); }
static double f_wait(int64_t s) { return 0.01 * (double)(s % 5); }

static int cmd_train(const char *run_dir, int64_t steps, int attempt, int64_t resume)
{
    logger lg[2];
    static const char *const tb_kv[] = { "flush_secs=0.05", "histograms_every=200",
                                         "images_every=250", "max_images=2", NULL };
    if (make_logger(&lg[0], "log-tensorboard", "tensorboard", tb_kv) ||
        make_logger(&lg[1], "log-csv", "csv", NULL))
        return 1;
    tp_run_info run = { .size = sizeof run, .run_dir = run_dir, .start_step = resume,
                        .resumed = resume > 0, .total_steps = steps, .steps_per_epoch = 100,
                        .rank = 0, .world_size = 1, .seed = 1, .config_text = "" };
    int failures = 0;
    for (int i = 0; i < 2; i++)
        failures += CALL(&lg[i], begin, &run) != TP_OK;

    const double t0 = 1.7e9 + 1000.0 * attempt;
    for (int64_t s = resume + 1; s <= steps && !failures; s++) {
        double epoch = (double)s / 100.0, wall = t0 + 0.01 * (double)s;
        tp_progress p = { .size = sizeof p, .step = s, .total_steps = steps, .epoch = s / 100,
                          .total_epochs = steps / 100, .seconds_elapsed = 0.01 * (double)s,
                          .images_per_sec = f_ips(s), .loss = f_loss(s, attempt),
                          .error_top1 = f_error(s, attempt) };
        for (int i = 0; i < 2; i++)
            failures += CALL(&lg[i], progress, &p) != TP_OK;
        if (s % 10 == 0) {
            tp_scalar sc[] = { { TP_TAG_LOSS, f_loss(s, attempt) },
                               { TP_TAG_ERROR_TOP1, f_error(s, attempt) },
                               { TP_TAG_LEARNING_RATE, f_lr(s) },
                               { TP_TAG_IMAGES_PER_SEC, f_ips(s) },
                               { TP_TAG_DATA_WAIT, f_wait(s) } };
            tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_TRAIN, .step = s,
                                .epoch = epoch, .wall_time = wall, .scalars = sc,
                                .n_scalars = 5 };
            for (int i = 0; i < 2; i++)
                failures += CALL(&lg[i], scalars, &ev) != TP_OK;
            if (s == 50) {
                /* A buggy trainer logs the step again: both loggers keep the first values. */
                tp_scalar dup[] = { { TP_TAG_LOSS, 99.0 }, { TP_TAG_ERROR_TOP1, 99.0 } };
                ev.scalars = dup;
                ev.n_scalars = 2;
                for (int i = 0; i < 2; i++)
                    failures += CALL(&lg[i], scalars, &ev) != TP_OK;
            }
        }
        if (s % 100 == 0) {
            tp_scalar sc[] = { { TP_TAG_LOSS, f_loss(s, attempt) + 0.1 },
                               { TP_TAG_ERROR_TOP1, f_error(s, attempt) + 0.02 },
                               { TP_TAG_ERROR_TOP5, f_error(s, attempt) / 3.0 } };
            tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_VAL, .step = s,
                                .epoch = epoch, .wall_time = wall + 0.005, .scalars = sc,
                                .n_scalars = 3 };
            for (int i = 0; i < 2; i++) {
                failures += CALL(&lg[i], scalars, &ev) != TP_OK;
                failures += CALL(&lg[i], flush) != TP_OK;
            }
        }
        for (int i = 0; i < 2; i++) {
            if (lg[i].detached || !lg[i].ops->wants)
                continue;
            if (lg[i].ops->wants(lg[i].inst.self, TP_LOG_HISTOGRAMS, s)) {
                /* 1000 values: a triangle-shaped spread around 0.1*attempt, plus one NaN
                 * that must be left out. */
                float v[1001];
                for (int k = 0; k < 1000; k++)
                    v[k] = (float)(0.1 * attempt + ((k % 100) + (k / 100) * 7 % 50 - 75) * 0.01);
                v[1000] = NAN;
                failures += CALL(&lg[i], histogram, TP_PHASE_TRAIN, s, "weights/conv1", v,
                                 (size_t)1001) != TP_OK;
            }
            if (lg[i].ops->wants(lg[i].inst.self, TP_LOG_IMAGES, s)) {
                enum { N = 3, H = 8, W = 12, C = 3 };
                static uint8_t px[N * H * W * C];
                for (int n = 0; n < N; n++)
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++)
                            for (int c = 0; c < C; c++)
                                px[((n * H + y) * W + x) * C + c] =
                                    (uint8_t)((x * 7 + y * 13 + c * 50 + n * 30 + s) & 255);
                failures += CALL(&lg[i], images, TP_PHASE_TRAIN, s, "input", px, N, H, W, C) !=
                            TP_OK;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        failures += CALL(&lg[i], end, TP_OK) != TP_OK;
        instance_destroy(&lg[i].inst);
    }
    return failures ? 1 : 0;
}

static int cmd_console(int64_t steps, const char *const *kv)
{
    logger lg;
    if (make_logger(&lg, "log-console", "console", kv))
        return 1;
    tp_run_info run = { .size = sizeof run, .run_dir = "/tmp/run", .total_steps = steps,
                        .steps_per_epoch = 50, .world_size = 1 };
    CALL(&lg, begin, &run);
    for (int64_t s = 1; s <= steps; s++) {
        tp_progress p = { .size = sizeof p, .step = s, .total_steps = steps, .epoch = 1 + s / 50,
                          .total_epochs = steps / 50, .seconds_elapsed = 0.5 * (double)s,
                          .images_per_sec = 256.0, .loss = f_loss(s, 0),
                          .error_top1 = f_error(s, 0) };
        CALL(&lg, progress, &p);
        if (s % 10 == 0) {
            tp_scalar sc[] = { { TP_TAG_LOSS, f_loss(s, 0) }, { TP_TAG_LEARNING_RATE, f_lr(s) } };
            tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_TRAIN, .step = s,
                                .epoch = s / 50.0, .wall_time = 1.7e9, .scalars = sc,
                                .n_scalars = 2 };
            CALL(&lg, scalars, &ev);
        }
        if (s % 50 == 0) {
            /* A hostile tag: its escape character must not reach the output. */
            tp_scalar sc[] = { { TP_TAG_LOSS, f_loss(s, 0) + 0.1 },
                               { TP_TAG_ERROR_TOP1, f_error(s, 0) },
                               { "odd\033[31mtag", 1.0 } };
            tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_VAL, .step = s,
                                .epoch = s / 50.0, .wall_time = 1.7e9, .scalars = sc,
                                .n_scalars = 3 };
            CALL(&lg, scalars, &ev);
            CALL(&lg, flush);
        }
        /* Real time passes too, so the terminal mode (rate-limited to 10 redraws a second)
         * gets to redraw. */
        usleep(2000);
    }
    CALL(&lg, end, TP_OK);
    instance_destroy(&lg.inst);
    return 0;
}

/* ---------------------------------------------------------------- failures */

static int expect(int cond, const char *what)
{
    printf("%s: %s\n", cond ? "ok" : "FAILED", what);
    return cond ? 0 : 1;
}

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

static int cmd_fail_dir(const char *tmp)
{
    char blocker[4096], tb_dir[4200], csv_file[4200];
    snprintf(blocker, sizeof blocker, "%s/not-a-directory", tmp);
    FILE *f = fopen(blocker, "w");
    if (!f || fclose(f) != 0)
        return 1;
    snprintf(tb_dir, sizeof tb_dir, "dir=%s/tb", blocker);
    snprintf(csv_file, sizeof csv_file, "file=%s/metrics.csv", blocker);
    const char *tb_kv[] = { tb_dir, NULL }, *csv_kv[] = { csv_file, NULL };
    logger lg[2];
    if (make_logger(&lg[0], "log-tensorboard", "tensorboard", tb_kv) ||
        make_logger(&lg[1], "log-csv", "csv", csv_kv))
        return 1;
    tp_run_info run = { .size = sizeof run, .run_dir = tmp, .total_steps = 10, .world_size = 1 };
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        tp_status st = CALL(&lg[i], begin, &run);
        char what[256];
        snprintf(what, sizeof what, "%s begin fails with an i/o error naming the path",
                 lg[i].name);
        bad += expect(st == TP_ERR_IO && contains(services_last_error(), blocker) &&
                          contains(services_last_error(), strerror(ENOTDIR)),
                      what);
        /* Detached loggers get no more calls; one that is still called stays quiet-failed. */
        tp_log_event ev = { .size = sizeof ev, .step = 1 };
        st = lg[i].ops->scalars(lg[i].inst.self, &ev);
        snprintf(what, sizeof what, "%s keeps failing after the error", lg[i].name);
        bad += expect(st != TP_OK, what);
        lg[i].ops->end(lg[i].inst.self, TP_OK);
        instance_destroy(&lg[i].inst);
    }
    return bad ? 1 : 0;
}

static int cmd_fail_write(const char *tmp)
{
    int bad = 0;
    tp_run_info run = { .size = sizeof run, .run_dir = tmp, .total_steps = 10, .world_size = 1 };
    tp_scalar sc[] = { { TP_TAG_LOSS, 1.0 } };
    tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_TRAIN, .step = 1, .scalars = sc,
                        .n_scalars = 1 };

    /* 1. CSV on a full disk. */
    {
        const char *kv[] = { "file=/dev/full", NULL };
        logger lg;
        if (make_logger(&lg, "log-csv", "csv", kv))
            return 1;
        tp_status st = CALL(&lg, begin, &run);
        bad += expect(st == TP_ERR_IO && contains(services_last_error(), "/dev/full") &&
                          contains(services_last_error(), strerror(ENOSPC)),
                      "csv on /dev/full fails with ENOSPC");
        instance_destroy(&lg.inst);
    }
    /* 2. TensorBoard over the file-size limit (a disk that fills up mid-run). */
    {
        char dir[4096];
        snprintf(dir, sizeof dir, "dir=%s/tb-full", tmp);
        const char *kv[] = { dir, "flush_secs=0", "images_every=1", "max_images=8", NULL };
        logger lg;
        if (make_logger(&lg, "log-tensorboard", "tensorboard", kv))
            return 1;
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit old, lim;
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = 20000;
        setrlimit(RLIMIT_FSIZE, &lim);
        tp_status st = CALL(&lg, begin, &run);
        static uint8_t noise[8 * 32 * 32 * 3];
        uint32_t x = 12345;
        for (size_t i = 0; i < sizeof noise; i++) {
            x = x * 1103515245u + 12345u;
            noise[i] = (uint8_t)(x >> 16); /* incompressible: the PNGs stay big */
        }
        for (int64_t s = 1; s <= 20 && !st; s++)
            st = CALL(&lg, images, TP_PHASE_TRAIN, s, "noise", noise, 8, 32, 32, 3);
        setrlimit(RLIMIT_FSIZE, &old);
        bad += expect(st == TP_ERR_IO && contains(services_last_error(), "tfevents") &&
                          contains(services_last_error(), strerror(EFBIG)),
                      "tensorboard past the file-size limit fails with EFBIG");
        lg.ops->end(lg.inst.self, TP_OK);
        instance_destroy(&lg.inst);
    }
    /* 3. TensorBoard whose directory is removed during the run. */
    {
        char dir[4096], kvdir[4200];
        snprintf(dir, sizeof dir, "%s/tb-removed", tmp);
        snprintf(kvdir, sizeof kvdir, "dir=%s", dir);
        const char *kv[] = { kvdir, NULL };
        logger lg;
        if (make_logger(&lg, "log-tensorboard", "tensorboard", kv))
            return 1;
        tp_status st = CALL(&lg, begin, &run);
        st = st ? st : CALL(&lg, scalars, &ev);
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            return 1;
        ev.step = 2;
        st = st ? st : CALL(&lg, scalars, &ev);
        st = st ? st : CALL(&lg, flush);
        bad += expect(st == TP_ERR_IO && contains(services_last_error(), dir) &&
                          contains(services_last_error(), "removed"),
                      "tensorboard notices its directory was removed at flush()");
        lg.ops->end(lg.inst.self, TP_OK);
        instance_destroy(&lg.inst);
    }
    return bad ? 1 : 0;
}

/* Resuming onto a CSV written by something else: a clear error, and the file untouched. */
static int cmd_fail_header(const char *tmp)
{
    char path[4200];
    static const char other[] = "step,loss\n1,0.5\n2,0.4\n";
    snprintf(path, sizeof path, "%s/metrics.csv", tmp);
    FILE *f = fopen(path, "w");
    if (!f || fputs(other, f) == EOF || fclose(f) != 0)
        return 1;
    logger lg;
    if (make_logger(&lg, "log-csv", "csv", NULL))
        return 1;
    tp_run_info run = { .size = sizeof run, .run_dir = tmp, .start_step = 1, .resumed = 1,
                        .total_steps = 10, .world_size = 1 };
    tp_status st = CALL(&lg, begin, &run);
    int bad = expect(st != TP_OK && contains(services_last_error(), path) &&
                         contains(services_last_error(), "header differs") &&
                         contains(services_last_error(), "found \"step,loss\""),
                     "csv refuses to resume onto a file with another header");
    char back[256] = "";
    f = fopen(path, "r");
    size_t n = f ? fread(back, 1, sizeof back - 1, f) : 0;
    if (f)
        fclose(f);
    back[n] = '\0';
    bad += expect(strcmp(back, other) == 0, "the foreign CSV is left untouched");
    instance_destroy(&lg.inst);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stderr, NULL, _IOLBF, 0);
    reg = registry_new();
    if (!reg)
        return 1;
    int rc = 2;
    if (argc >= 5 && strcmp(argv[1], "train") == 0)
        rc = cmd_train(argv[2], atoll(argv[3]), atoi(argv[4]), argc > 5 ? atoll(argv[5]) : 0);
    else if (argc >= 3 && strcmp(argv[1], "console") == 0)
        rc = cmd_console(atoll(argv[2]), (const char *const *)argv + 3);
    else if (argc == 3 && strcmp(argv[1], "fail-dir") == 0)
        rc = cmd_fail_dir(argv[2]);
    else if (argc == 3 && strcmp(argv[1], "fail-write") == 0)
        rc = cmd_fail_write(argv[2]);
    else if (argc == 3 && strcmp(argv[1], "fail-header") == 0)
        rc = cmd_fail_header(argv[2]);
    else
        fprintf(stderr, "usage: test_loggers train RUN_DIR STEPS ATTEMPT [RESUME_STEP] | "
                        "console STEPS [key=value...] | fail-dir TMP | fail-write TMP | "
                        "fail-header TMP\n");
    registry_free(reg);
    return rc;
}
