/* `trainpipe plot`: metrics.csv -> gnuplot -> PNG or SVG.
 *
 * Nothing the user controls reaches a shell: gnuplot is started with posix_spawn() and reads
 * a generated script and data files from a private temporary directory; the image arrives on
 * gnuplot's standard output, redirected into a temporary file next to the output that is
 * renamed into place on success. */
#include "config.h"

#include "cmd_plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define GNUPLOT_MISSING "gnuplot not found: install the Debian package gnuplot-nox"

static void usage(FILE *to)
{
    fprintf(to, "usage: trainpipe plot RUN_DIR [-o FILE]\n"
                "  Draws loss, top-1 error and learning rate from RUN_DIR/metrics.csv.\n"
                "  -o FILE  output image (default RUN_DIR/curves.png); .png or .svg\n");
}

/* ---------------------------------------------------------------- reading the CSV */

typedef struct series {
    double *step, *a, *b, *c; /* train: loss, error, lr; validation: loss, error, unused */
    size_t n, cap;
} series;

static int series_add(series *s, double step, double a, double b, double c)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *p[4] = { realloc(s->step, cap * sizeof(double)), NULL, NULL, NULL };
        if (!p[0])
            return -1;
        s->step = p[0];
        if (!(p[1] = realloc(s->a, cap * sizeof(double))))
            return -1;
        s->a = p[1];
        if (!(p[2] = realloc(s->b, cap * sizeof(double))))
            return -1;
        s->b = p[2];
        if (!(p[3] = realloc(s->c, cap * sizeof(double))))
            return -1;
        s->c = p[3];
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->a[s->n] = a;
    s->b[s->n] = b;
    s->c[s->n] = c;
    s->n++;
    return 0;
}

static void series_free(series *s)
{
    free(s->step);
    free(s->a);
    free(s->b);
    free(s->c);
}

/* Splits one RFC 4180 record starting at *pos into fields (unquoted in place, so `buf` is
 * modified). Returns the number of fields (at most max), or -1 at the end of the buffer.
 * Too many fields are ignored. */
static int next_record(char *buf, size_t len, size_t *pos, char **fields, int max)
{
    size_t p = *pos;
    if (p >= len)
        return -1;
    int n = 0;
    for (;;) {
        char *out = buf + p, *start = out;
        if (p < len && buf[p] == '"') {
            p++;
            while (p < len) {
                if (buf[p] == '"') {
                    if (p + 1 < len && buf[p + 1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = buf[p++];
            }
            /* Anything between the closing quote and the separator is kept as is. */
            while (p < len && buf[p] != ',' && buf[p] != '\n')
                *out++ = buf[p++];
        } else {
            while (p < len && buf[p] != ',' && buf[p] != '\n')
                out++, p++;
        }
        char sep = p < len ? buf[p] : '\n';
        if (out > start && out[-1] == '\r' && sep == '\n')
            out--;
        *out = '\0';
        if (n < max)
            fields[n] = start;
        n++;
        p++; /* past the separator */
        if (sep == '\n')
            break;
    }
    *pos = p;
    return n < max ? n : max;
}

/* A number from a cell: NaN for an empty or unparseable cell. */
static double cell_number(char **fields, int n, int col)
{
    if (col < 0 || col >= n || !fields[col][0])
        return NAN;
    char *end;
    double v = strtod(fields[col], &end);
    return *end == '\0' ? v : NAN;
}

static int read_metrics(const char *path, series *train, series *val)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "trainpipe plot: %s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int rc = 1;
    while (buf) {
        if (cap - len < 2) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (!buf) {
        fprintf(stderr, "trainpipe plot: %s: out of memory\n", path);
        fclose(fp);
        return 1;
    }
    if (ferror(fp)) {
        fprintf(stderr, "trainpipe plot: %s: read failed: %s\n", path, strerror(errno));
        goto done;
    }
    buf[len] = '\0';

    enum { MAX_FIELDS = 64 };
    char *fields[MAX_FIELDS];
    size_t pos = 0;
    int n = next_record(buf, len, &pos, fields, MAX_FIELDS);
    if (n <= 0) {
        fprintf(stderr, "trainpipe plot: %s: empty file (no header)\n", path);
        goto done;
    }
    static const char *const wanted[] = { "step",     "phase",      "train_loss", "train_error",
                                          "val_loss", "val_error", "learning_rate" };
    enum { C_STEP, C_PHASE, C_TLOSS, C_TERR, C_VLOSS, C_VERR, C_LR, N_WANTED };
    int col[N_WANTED];
    for (int w = 0; w < N_WANTED; w++) {
        col[w] = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(fields[i], wanted[w]) == 0)
                col[w] = i;
    }
    if (col[C_STEP] < 0 || col[C_PHASE] < 0) {
        fprintf(stderr, "trainpipe plot: %s: not a trainpipe metrics file (no step or phase "
                        "column in the header)\n", path);
        goto done;
    }
    int line = 1;
    while ((n = next_record(buf, len, &pos, fields, MAX_FIELDS)) >= 0) {
        line++;
        if (n == 1 && fields[0][0] == '\0')
            continue; /* blank line */
        double step = cell_number(fields, n, col[C_STEP]);
        if (!isfinite(step) || col[C_PHASE] >= n) {
            fprintf(stderr, "trainpipe plot: %s:%d: malformed row (no step or phase): skipped\n",
                    path, line);
            continue;
        }
        const char *phase = fields[col[C_PHASE]];
        int r = 0;
        if (strcmp(phase, "train") == 0)
            r = series_add(train, step, cell_number(fields, n, col[C_TLOSS]),
                           cell_number(fields, n, col[C_TERR]), cell_number(fields, n, col[C_LR]));
        else if (strcmp(phase, "validation") == 0)
            r = series_add(val, step, cell_number(fields, n, col[C_VLOSS]),
                           cell_number(fields, n, col[C_VERR]), NAN);
        if (r) {
            fprintf(stderr, "trainpipe plot: %s: out of memory\n", path);
            goto done;
        }
    }
    rc = 0;
done:
    free(buf);
    fclose(fp);
    return rc;
}

/* ---------------------------------------------------------------- gnuplot */

/* The gnuplot executable on PATH (malloc'ed), or NULL. */
static char *find_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        if (n > 0) {
            char *cand = malloc(n + sizeof "/gnuplot");
            if (!cand)
                return NULL;
            memcpy(cand, path, n);
            memcpy(cand + n, "/gnuplot", sizeof "/gnuplot");
            struct stat sb;
            if (stat(cand, &sb) == 0 && S_ISREG(sb.st_mode) && access(cand, X_OK) == 0)
                return cand;
            free(cand);
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return NULL;
}

/* Writes s as a gnuplot single-quoted string (a quote is written twice; nothing else is
 * special there). Control characters would end the line: they become '?'. */
static void gp_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("''", f);
        else if ((unsigned char)*s < 0x20 || *s == 0x7f)
            fputc('?', f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}

static void put_value(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, " %.9g", v);
    else
        fputs(" ?", f);
}

static int count_finite(const double *v, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += isfinite(v[i]) != 0;
    return k;
}

static int write_data(const char *path, const series *s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (size_t i = 0; i < s->n; i++) {
        fprintf(f, "%.17g", s->step[i]);
        put_value(f, s->a[i]);
        put_value(f, s->b[i]);
        put_value(f, s->c[i]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    return (fclose(f) != 0 || bad) ? -1 : 0;
}

/* One panel: the train and validation series of one column that have data. */
static void plot_panel(FILE *f, const char *ylabel, const char *train_dat, const char *val_dat,
                       const char *using, int train_has, int val_has)
{
    fprintf(f, "set ylabel ");
    gp_quoted(f, ylabel);
    fputs("\nplot ", f);
    if (train_has) {
        gp_quoted(f, train_dat);
        fprintf(f, " using %s with lines lw 1.5 title 'train'", using);
    }
    if (val_has) {
        if (train_has)
            fputs(", ", f);
        gp_quoted(f, val_dat);
        fprintf(f, " using %s with linespoints pt 7 ps 0.6 lw 1.5 title 'validation'", using);
    }
    fputc('\n', f);
}

static int write_script(const char *path, const char *train_dat, const char *val_dat,
                        const series *train, const series *val, int svg, const char *title)
{
    int t_loss = count_finite(train->a, train->n), v_loss = count_finite(val->a, val->n);
    int t_err = count_finite(train->b, train->n), v_err = count_finite(val->b, val->n);
    int lr = count_finite(train->c, train->n);
    int panels = (t_loss || v_loss) + (t_err || v_err) + (lr > 0);
    if (panels == 0)
        return 1;
    int lr_positive = 1;
    for (size_t i = 0; i < train->n; i++)
        if (isfinite(train->c[i]) && train->c[i] <= 0)
            lr_positive = 0;

    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    if (svg)
        fprintf(f, "set terminal svg size 900,%d dynamic noenhanced background rgb 'white'\n",
                300 * panels + 40);
    else
        fprintf(f, "set terminal pngcairo size 900,%d noenhanced font ',10'\n", 300 * panels + 40);
    fputs("set datafile missing '?'\n"
          "set grid\n"
          "set key top right\n"
          "set xlabel 'step'\n"
          "set format y '%g'\n",
          f);
    fprintf(f, "set multiplot layout %d,1 title ", panels);
    gp_quoted(f, title);
    fputc('\n', f);
    if (t_loss || v_loss)
        plot_panel(f, "loss", train_dat, val_dat, "1:2", t_loss, v_loss);
    if (t_err || v_err)
        plot_panel(f, "top-1 error (%)", train_dat, val_dat, "1:($3*100)", t_err, v_err);
    if (lr) {
        if (lr_positive)
            fputs("set logscale y\n", f);
        fputs("set ylabel 'learning rate'\nplot ", f);
        gp_quoted(f, train_dat);
        fputs(" using 1:4 with steps lw 1.5 title 'learning rate'\n", f);
        fputs("unset logscale y\n", f);
    }
    fputs("unset multiplot\n", f);
    int bad = ferror(f);
    return (fclose(f) != 0 || bad) ? -1 : 0;
}

/* Runs `gnuplot SCRIPT` with standard output into out_fd; returns its exit status or -1. */
static int run_gnuplot(const char *gnuplot, const char *script, int out_fd)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    char *argv[] = { (char *)"gnuplot", (char *)script, NULL };
    pid_t pid;
    int err = posix_spawn(&pid, gnuplot, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        errno = err;
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int cmd_plot(int argc, char **argv)
{
    const char *run_dir = NULL, *output = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trainpipe plot: %s needs a file name\n", a);
                usage(stderr);
                return 2;
            }
            output = argv[++i];
        } else if (strncmp(a, "--output=", 9) == 0) {
            output = a + 9;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "trainpipe plot: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!run_dir) {
            run_dir = a;
        } else {
            fprintf(stderr, "trainpipe plot: one run directory only ('%s' is extra)\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!run_dir) {
        fprintf(stderr, "trainpipe plot: no run directory given\n");
        usage(stderr);
        return 2;
    }
    if (output && (!*output || (!ends_with(output, ".png") && !ends_with(output, ".svg")))) {
        fprintf(stderr, "trainpipe plot: -o %s: the file name must end in .png or .svg\n",
                output);
        return 2;
    }

    int rc = 1;
    char *csv = NULL, *out = NULL, *gnuplot = NULL, *tmpdir = NULL;
    char *train_dat = NULL, *val_dat = NULL, *script = NULL, *tmp_out = NULL;
    series train = { 0 }, val = { 0 };
    int out_fd = -1;

    csv = join_path(run_dir, "metrics.csv");
    out = output ? strdup(output) : join_path(run_dir, "curves.png");
    if (!csv || !out) {
        fprintf(stderr, "trainpipe plot: out of memory\n");
        goto done;
    }
    gnuplot = find_gnuplot();
    if (!gnuplot) {
        fprintf(stderr, "%s\n", GNUPLOT_MISSING);
        goto done;
    }
    if (read_metrics(csv, &train, &val))
        goto done;
    if (train.n + val.n == 0) {
        fprintf(stderr, "trainpipe plot: %s: no rows to plot\n", csv);
        goto done;
    }

    const char *base = getenv("TMPDIR");
    tmpdir = join_path(base && *base ? base : "/tmp", "trainpipe-plot-XXXXXX");
    if (!tmpdir || !mkdtemp(tmpdir)) {
        fprintf(stderr, "trainpipe plot: cannot create a temporary directory: %s\n",
                strerror(errno));
        free(tmpdir);
        tmpdir = NULL;
        goto done;
    }
    train_dat = join_path(tmpdir, "train.dat");
    val_dat = join_path(tmpdir, "validation.dat");
    script = join_path(tmpdir, "plot.gp");
    if (!train_dat || !val_dat || !script) {
        fprintf(stderr, "trainpipe plot: out of memory\n");
        goto done;
    }
    if (write_data(train_dat, &train) || write_data(val_dat, &val)) {
        fprintf(stderr, "trainpipe plot: %s: cannot write data files: %s\n", tmpdir,
                strerror(errno));
        goto done;
    }
    const char *slash = strrchr(run_dir, '/');
    char title[512];
    snprintf(title, sizeof title, "trainpipe: %s", slash && slash[1] ? slash + 1 : run_dir);
    int sr = write_script(script, train_dat, val_dat, &train, &val, ends_with(out, ".svg"),
                          title);
    if (sr > 0) {
        fprintf(stderr, "trainpipe plot: %s: no loss, error or learning-rate values to plot\n",
                csv);
        goto done;
    }
    if (sr < 0) {
        fprintf(stderr, "trainpipe plot: %s: cannot write: %s\n", script, strerror(errno));
        goto done;
    }

    size_t n = strlen(out) + 32;
    tmp_out = malloc(n);
    if (!tmp_out) {
        fprintf(stderr, "trainpipe plot: out of memory\n");
        goto done;
    }
    snprintf(tmp_out, n, "%s.tmp.%ld", out, (long)getpid());
    out_fd = open(tmp_out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out_fd < 0) {
        fprintf(stderr, "trainpipe plot: %s: cannot create: %s\n", tmp_out, strerror(errno));
        free(tmp_out);
        tmp_out = NULL;
        goto done;
    }
    int status = run_gnuplot(gnuplot, script, out_fd);
    if (status < 0) {
        if (errno == ENOENT)
            fprintf(stderr, "%s\n", GNUPLOT_MISSING);
        else
            fprintf(stderr, "trainpipe plot: cannot run %s: %s\n", gnuplot, strerror(errno));
        goto done;
    }
    if (status != 0) {
        fprintf(stderr, "trainpipe plot: gnuplot failed (exit status %d) drawing %s\n", status,
                out);
        goto done;
    }
    struct stat sb;
    if (fstat(out_fd, &sb) != 0 || sb.st_size == 0) {
        fprintf(stderr, "trainpipe plot: gnuplot wrote nothing for %s\n", out);
        goto done;
    }
    if (close(out_fd) != 0) {
        out_fd = -1;
        fprintf(stderr, "trainpipe plot: %s: write failed: %s\n", tmp_out, strerror(errno));
        goto done;
    }
    out_fd = -1;
    if (rename(tmp_out, out) != 0) {
        fprintf(stderr, "trainpipe plot: rename %s to %s: %s\n", tmp_out, out, strerror(errno));
        goto done;
    }
    free(tmp_out);
    tmp_out = NULL;
    printf("%s: %zu train and %zu validation rows plotted\n", out, train.n, val.n);
    rc = 0;
done:
    if (out_fd >= 0)
        close(out_fd);
    if (tmp_out) {
        unlink(tmp_out);
        free(tmp_out);
    }
    if (tmpdir) {
        if (train_dat)
            unlink(train_dat);
        if (val_dat)
            unlink(val_dat);
        if (script)
            unlink(script);
        rmdir(tmpdir);
    }
    free(train_dat);
    free(val_dat);
    free(script);
    free(tmpdir);
    series_free(&train);
    series_free(&val);
    free(gnuplot);
    free(csv);
    free(out);
    return rc;
}
