/* An example third-party trainpipe plugin: a logger that appends every scalar event to a
 * JSON Lines file, one object per line:
 *
 *   {"phase":"train","step":100,"epoch":0.25,"wall_time":1763800000.5,"loss":1.93,...}
 *
 * It is built outside trainpipe's tree with nothing but the installed SDK:
 *   cc -shared -fPIC $(pkg-config --cflags trainpipe) jsonl_logger.c -o jsonl-logger.so
 * and is loaded by an installed trainpipe from TRAINPIPE_PLUGIN_PATH or [pipeline] plugin_path. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <trainpipe/trainpipe.h>

typedef struct jsonl_config {
    const char *file; /* where to write; relative to the run directory */
    int flush_every_line;
} jsonl_config;

typedef struct jsonl_logger {
    const tp_host *host;
    jsonl_config config;
    FILE *out;
    char path[4096];
} jsonl_logger;

static const tp_param_def jsonl_params[] = {
    TP_PARAM_DEF_STRING(jsonl_config, file, "file", "metrics.jsonl",
                        "output file, relative to the run directory"),
    TP_PARAM_DEF_BOOL(jsonl_config, flush_every_line, "flush_every_line", "true",
                      "flush after every line (safe to tail -f)"),
};

static tp_status jsonl_create(const tp_host *host, const void *config, void **self)
{
    jsonl_logger *l = host->calloc(1, sizeof *l);
    if (!l)
        return host->fail(host, TP_ERR_NOMEM, "jsonl: out of memory");
    l->host = host;
    l->config = *(const jsonl_config *)config;
    *self = l;
    return TP_OK;
}

static void jsonl_destroy(void *self)
{
    jsonl_logger *l = self;
    if (l->out)
        fclose(l->out);
    l->host->free(l);
}

static tp_status jsonl_begin(void *self, const tp_run_info *run)
{
    jsonl_logger *l = self;
    if (l->config.file[0] == '/')
        snprintf(l->path, sizeof l->path, "%s", l->config.file);
    else
        snprintf(l->path, sizeof l->path, "%s/%s", run->run_dir, l->config.file);
    l->out = fopen(l->path, "a");
    if (!l->out)
        return l->host->fail(l->host, TP_ERR_IO, "jsonl: cannot open %s: %s", l->path,
                             strerror(errno));
    return TP_OK;
}

/* Writes s as a JSON string (tags are plain ASCII in practice; escape the specials). */
static void write_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static tp_status jsonl_scalars(void *self, const tp_log_event *ev)
{
    jsonl_logger *l = self;
    fprintf(l->out, "{\"phase\":\"%s\",\"step\":%lld,\"epoch\":%.6f,\"wall_time\":%.3f",
            ev->phase == TP_PHASE_TRAIN ? "train" : "val", (long long)ev->step, ev->epoch,
            ev->wall_time);
    for (size_t i = 0; i < ev->n_scalars; i++) {
        fputc(',', l->out);
        write_json_string(l->out, ev->scalars[i].tag);
        /* JSON has no NaN or infinity: write null. */
        if (isfinite(ev->scalars[i].value))
            fprintf(l->out, ":%.9g", ev->scalars[i].value);
        else
            fputs(":null", l->out);
    }
    fputs("}\n", l->out);
    if (l->config.flush_every_line && fflush(l->out) != 0)
        return l->host->fail(l->host, TP_ERR_IO, "jsonl: cannot write %s: %s", l->path,
                             strerror(errno));
    return ferror(l->out) ? l->host->fail(l->host, TP_ERR_IO, "jsonl: cannot write %s",
                                          l->path)
                          : TP_OK;
}

static tp_status jsonl_flush(void *self)
{
    jsonl_logger *l = self;
    if (l->out && fflush(l->out) != 0)
        return l->host->fail(l->host, TP_ERR_IO, "jsonl: cannot write %s: %s", l->path,
                             strerror(errno));
    return TP_OK;
}

static tp_status jsonl_end(void *self, tp_status run_status)
{
    (void)run_status;
    return jsonl_flush(self);
}

static const tp_logger_ops jsonl_ops = {
    .size = sizeof(tp_logger_ops),
    .begin = jsonl_begin,
    .scalars = jsonl_scalars,
    .flush = jsonl_flush,
    .end = jsonl_end,
};

static const tp_component jsonl_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_LOGGER,
    .name = "jsonl",
    .summary = "scalars as JSON Lines (an example of an out-of-tree plugin)",
    .params = jsonl_params,
    .n_params = sizeof jsonl_params / sizeof jsonl_params[0],
    .config_size = sizeof(jsonl_config),
    .create = jsonl_create,
    .destroy = jsonl_destroy,
    .ops = &jsonl_ops,
};

static const tp_component *const jsonl_components[] = { &jsonl_component };

static const tp_plugin_info jsonl_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "jsonl-logger",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "example third-party logger",
    .components = jsonl_components,
    .n_components = 1,
};

const tp_plugin_info *trainpipe_plugin_entry(void) { return &jsonl_info; }
