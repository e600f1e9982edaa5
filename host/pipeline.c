/* Resolving an INI document into a pipeline of validated components. */
#include "config.h"

#include "pipeline.h"
#include "services.h"

#include <stdlib.h>
#include <string.h>

static const char *const layout_choices[] = { "auto", "nchw", "nhwc", NULL };
static const char *const loss_scaling_choices[] = { "auto", "dynamic", "off", NULL };
static const char *const lr_scaling_choices[] = { "none", "linear", NULL };
static const char *const capture_step_choices[] = { "auto", "true", "false", NULL };

#define PS pipeline_settings
static const tp_param_def settings_params[] = {
    TP_PARAM_DEF_STRING(PS, plugin_path, "plugin_path", NULL,
                        "directories searched for plugins first, ':'-separated (relative to this file)"),
    TP_PARAM_DEF_PATH(PS, run_dir, "run_dir", "run",
                      "output directory for logs and checkpoints (relative to this file)"),
    TP_PARAM_DEF_INT(PS, seed, "seed", "1", 0, 9.2e18, "seed of every random stream"),
    TP_PARAM_DEF_INT(PS, batch_size, "batch_size", "128", 1, 1048576, "samples per batch (per rank)"),
    TP_PARAM_DEF_INT(PS, epochs, "epochs", "1", 0, 1e9, "epochs to train (ignored when steps > 0)"),
    TP_PARAM_DEF_INT(PS, steps, "steps", "0", 0, 1e15, "steps to train; 0: run `epochs` epochs"),
    TP_PARAM_DEF_INT(PS, workers, "workers", "0", 0, 1024, "data worker threads; 0: one per core"),
    TP_PARAM_DEF_INT(PS, prefetch, "prefetch", "4", 1, 256, "prefetch depth: batches in the ring"),
    TP_PARAM_DEF_BOOL(PS, drop_last, "drop_last", "true", "drop the last partial training batch"),
    TP_PARAM_DEF_INT(PS, eval_every_epochs, "eval_every_epochs", "1", 0, 1e9,
                     "evaluate every N epochs (0: never by epochs)"),
    TP_PARAM_DEF_INT(PS, eval_every_steps, "eval_every_steps", "0", 0, 1e15,
                     "evaluate every N steps (0: never by steps)"),
    TP_PARAM_DEF_INT(PS, log_every_steps, "log_every_steps", "50", 1, 1e15,
                     "steps per logging interval"),
    TP_PARAM_DEF_BOOL(PS, deterministic, "deterministic", "false",
                      "bit-identical results for the same seed and thread count"),
    TP_PARAM_DEF_FLOAT(PS, label_smoothing, "label_smoothing", "0", 0, 1,
                       "label smoothing of the cross-entropy loss"),
    TP_PARAM_DEF_FLOAT(PS, input_scale, "input_scale", "0.00392156862745098", 1e-12, 1e12,
                       "pixels enter the network as input_scale x the uint8 value"),
    TP_PARAM_DEF_INT(PS, max_bad_records, "max_bad_records", "100", 0, 1e15,
                     "undecodable samples skipped before the run stops"),
    TP_PARAM_DEF_ENUM(PS, layout, "layout", "auto", layout_choices,
                      "activation layout; auto: what the backend prefers"),
    TP_PARAM_DEF_INT(PS, gpus, "gpus", "1", 1, 1024, "local GPUs (one process each)"),
    TP_PARAM_DEF_ENUM(PS, loss_scaling, "loss_scaling", "auto", loss_scaling_choices,
                      "dynamic loss scaling: auto (when the backend computes in fp16), "
                      "dynamic, off"),
    TP_PARAM_DEF_FLOAT(PS, loss_scale_init, "loss_scale_init", "65536", 1, 3e38,
                       "initial loss scale (halved after a non-finite gradient)"),
    TP_PARAM_DEF_INT(PS, loss_scale_interval, "loss_scale_interval", "2000", 1, 1e15,
                     "steps with finite gradients before the loss scale doubles"),
    TP_PARAM_DEF_ENUM(PS, lr_scaling, "lr_scaling", "none", lr_scaling_choices,
                      "data-parallel learning rate: none (as written) or linear (x ranks)"),
    TP_PARAM_DEF_BOOL(PS, sync_batchnorm, "sync_batchnorm", "false",
                      "data parallel: batch norm uses the statistics of all ranks' batches "
                      "together (false: each rank's own, as PyTorch's default)"),
    TP_PARAM_DEF_FLOAT(PS, comm_timeout, "comm_timeout", "300", 1, 86400,
                       "seconds a collective may wait for the other ranks before the job ends"),
    TP_PARAM_DEF_BOOL(PS, overlap_allreduce, "overlap_allreduce", "true",
                      "data parallel: sum gradient buckets across ranks while backward still "
                      "runs (false: all of them after backward; same results)"),
    TP_PARAM_DEF_ENUM(PS, capture_step, "capture_step", "auto", capture_step_choices,
                      "record forward, loss and backward of a full batch once and replay the "
                      "recording every step (a CUDA graph on backend-cuda; same results); "
                      "auto: where the backend can record"),
    TP_PARAM_DEF_BOOL(PS, overlap_steps, "overlap_steps", "true",
                      "queue the next training step before reading this step's loss where "
                      "nothing needs the host in between (same results; false: read every "
                      "loss before the next step)"),
    TP_PARAM_DEF_BOOL(PS, fuse_layers, "fuse_layers", "true",
                      "compute a ReLU inside the batch norm or addition before it when the "
                      "backend can (same results; false runs every layer on its own)"),
};
#undef PS

#define CS checkpoint_settings
static const tp_param_def checkpoint_params[] = {
    TP_PARAM_DEF_STRING(CS, dir, "dir", "checkpoints", "checkpoint directory (relative to run_dir)"),
    TP_PARAM_DEF_INT(CS, every_steps, "every_steps", "0", 0, 1e15, "save every N steps (0: off)"),
    TP_PARAM_DEF_INT(CS, every_epochs, "every_epochs", "1", 0, 1e9, "save every N epochs (0: off)"),
    TP_PARAM_DEF_INT(CS, keep_last, "keep_last", "3", 1, 1e6, "checkpoints kept besides the best"),
    TP_PARAM_DEF_BOOL(CS, keep_best, "keep_best", "true", "keep the one with the best validation error"),
};
#undef CS

static tp_status no_create(const tp_host *host, const void *config, void **self)
{
    (void)config;
    (void)self;
    return host->fail(host, TP_ERR_UNSUPPORTED, "host settings are not a component");
}
static void no_destroy(void *self) { (void)self; }

static const tp_component settings_component = {
    sizeof(tp_component), 0, "pipeline", "the host's settings ([pipeline])",
    settings_params, sizeof settings_params / sizeof settings_params[0],
    sizeof(pipeline_settings), no_create, no_destroy, settings_params,
};
static const tp_component checkpoint_component = {
    sizeof(tp_component), 0, "checkpoint", "checkpoint settings ([checkpoint])",
    checkpoint_params, sizeof checkpoint_params / sizeof checkpoint_params[0],
    sizeof(checkpoint_settings), no_create, no_destroy, checkpoint_params,
};

const tp_component *pipeline_settings_component(void) { return &settings_component; }
const tp_component *pipeline_checkpoint_component(void) { return &checkpoint_component; }

static const char *const fixed_sections[] = {
    "pipeline", "backend", "source.train", "source.val", "model",
    "optimizer", "schedule", "checkpoint", NULL,
};

static int has_prefix(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) == 0 && s[n] != '\0';
}

static tp_status check_section_names(const ini_document *doc)
{
    for (size_t i = 0; i < doc->n_sections; i++) {
        const ini_section *s = &doc->sections[i];
        int known = has_prefix(s->name, "augment.") || has_prefix(s->name, "logger.") ||
                    has_prefix(s->name, "backend.");
        for (size_t k = 0; fixed_sections[k] && !known; k++)
            known = strcmp(s->name, fixed_sections[k]) == 0;
        if (known)
            continue;
        const char *near = params_closest(s->name, fixed_sections);
        char hint[128] = "";
        if (near)
            snprintf(hint, sizeof hint, "did you mean [%s]? ", near);
        if (s->line > 0)
            return services_fail(TP_ERR_INVALID,
                                 "%s:%d: unknown section [%s] (%sknown: pipeline, backend, "
                                 "source.train, source.val, augment.NAME, model, optimizer, "
                                 "schedule, logger.NAME, checkpoint)",
                                 s->file, s->line, s->name, hint);
        return services_fail(TP_ERR_INVALID, "--set: unknown section [%s] (%sknown: pipeline, "
                             "backend, source.train, source.val, augment.NAME, model, optimizer, "
                             "schedule, logger.NAME, checkpoint)", s->name, hint);
    }
    return TP_OK;
}

/* "FILE:LINE: " for a key, or for the section header when kv is NULL. */
static void where(const ini_section *s, const param_kv *kv, char *buf, size_t size)
{
    if (kv && kv->line > 0)
        snprintf(buf, size, "%s:%d: [%s] ", kv->file, kv->line, s->name);
    else if (kv)
        snprintf(buf, size, "%s: [%s] ", kv->file, s->name);
    else if (s->line > 0)
        snprintf(buf, size, "%s:%d: [%s] ", s->file, s->line, s->name);
    else
        snprintf(buf, size, "--set: [%s] ", s->name);
}

static tp_status unknown_plugin(const registry *r, const ini_section *s, const param_kv *kv,
                                tp_kind kind, const char *name)
{
    char loc[512];
    where(s, kv, loc, sizeof loc);
    const registry_entry *other = registry_find_any(r, name);
    if (other)
        return services_fail(TP_ERR_INVALID, "%splugin = %s: '%s' is a %s, not a %s", loc, name,
                             name, registry_kind_name(other->component->kind),
                             registry_kind_name(kind));
    const char *names[128];
    size_t n = 0;
    char available[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < registry_count(r) && n < 127; i++) {
        const tp_component *c = registry_at(r, i)->component;
        if (c->kind != kind)
            continue;
        names[n++] = c->name;
        if (used < sizeof available)
            used += (size_t)snprintf(available + used, sizeof available - used, "%s%s",
                                     used ? ", " : "", c->name);
    }
    names[n] = NULL;
    const char *near = params_closest(name, names);
    char hint[160] = "";
    if (near)
        snprintf(hint, sizeof hint, "did you mean '%s'? ", near);
    return services_fail(TP_ERR_NOT_FOUND, "%splugin = %s: no %s plugin named '%s' (%savailable: %s)",
                         loc, name, registry_kind_name(kind), name, hint,
                         n ? available : "none found on the plugin path");
}

/* A value of [model] init that names a file rather than a scheme. */
static int looks_like_file(const char *v)
{
    size_t n = strlen(v);
    return strchr(v, '/') || (n > 12 && strcmp(v + n - 12, ".safetensors") == 0);
}

/* Resolves one component section: picks the plugin (key `plugin`, or `default_plugin`),
 * consumes host keys, and validates the rest against the component's table. */
static tp_status resolve_stage(pipeline *p, ini_section *s, tp_kind kind,
                               const char *default_plugin, pipeline_stage *stage)
{
    memset(stage, 0, sizeof *stage);
    stage->section = s->name;
    const param_kv *plugin_kv = NULL;
    const char *plugin = ini_get(s, "plugin", &plugin_kv);
    if (!plugin)
        plugin = default_plugin;
    if (!plugin || !*plugin) {
        char loc[512];
        where(s, NULL, loc, sizeof loc);
        return services_fail(TP_ERR_INVALID, "%smissing required key 'plugin' (the %s to use; "
                             "`trainpipe plugins` lists them)", loc, registry_kind_name(kind));
    }
    const registry_entry *e = registry_find(p->registry, kind, plugin);
    if (!e)
        return unknown_plugin(p->registry, s, plugin_kv, kind, plugin);
    stage->entry = e;
    /* Host keys, not the component's. */
    size_t n = 0;
    param_kv *kvs = calloc(s->n_kvs ? s->n_kvs : 1, sizeof *kvs);
    if (!kvs)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    tp_status st = TP_OK;
    const param_kv *init_kv = NULL;
    for (size_t i = 0; i < s->n_kvs; i++) {
        const param_kv *kv = &s->kvs[i];
        if (strcmp(kv->key, "plugin") == 0)
            continue;
        if (kind == TP_KIND_LOGGER && strcmp(kv->key, "required") == 0) {
            static const tp_param_def required_def = TP_PARAM_DEF_BOOL(
                pipeline_stage, required, "required", "false", "stop the run if this logger fails");
            st = params_set(&stage->config, s->name, &required_def, kv, &stage->required);
            if (st)
                break;
            continue;
        }
        /* [model] init = FILE: weights to start from, taken by the host. Other values of
         * `init` (an initialisation scheme) belong to the model plugin. */
        if (kind == TP_KIND_MODEL && strcmp(kv->key, "init") == 0 && looks_like_file(kv->value)) {
            init_kv = kv;
            continue;
        }
        kvs[n++] = *kv;
    }
    if (!st) {
        param_kv header = { s->name, "", s->file, s->line };
        st = params_build_at(e->component, s->name, s->line > 0 ? &header : NULL, kvs, n,
                             &stage->config);
    }
    if (!st && init_kv) {
        static const tp_param_def init_def = TP_PARAM_DEF_PATH(
            pipeline_stage, init_file, "init", NULL, "safetensors file to start from");
        st = params_set(&stage->config, s->name, &init_def, init_kv, &stage->init_file);
    }
    free(kvs);
    return st;
}

static tp_status append_stage(pipeline_stage **array, size_t *count, pipeline_stage **out)
{
    pipeline_stage *grown = realloc(*array, (*count + 1) * sizeof *grown);
    if (!grown)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    *array = grown;
    *out = &grown[(*count)++];
    memset(*out, 0, sizeof **out);
    return TP_OK;
}

static tp_status resolve_backends(pipeline *p)
{
    ini_section *s = ini_find_section(&p->doc, "backend");
    const param_kv *kv = NULL;
    const char *plugin = s ? ini_get(s, "plugin", &kv) : NULL;
    pipeline_stage *stage;
    tp_status st;
    if (plugin && strcmp(plugin, "auto") != 0) {
        /* An explicit backend: [backend] holds its keys (and [backend.NAME] may too). */
        if ((st = append_stage(&p->backends, &p->n_backends, &stage)))
            return st;
        ini_section *specific = NULL;
        char name[300];
        snprintf(name, sizeof name, "backend.%s", plugin);
        specific = ini_find_section(&p->doc, name);
        if (specific && s->n_kvs > 1) {
            char loc[512];
            where(s, kv, loc, sizeof loc);
            return services_fail(TP_ERR_INVALID, "%sbackend keys given both here and in [%s]: "
                                 "use one of them", loc, name);
        }
        if (specific)
            return resolve_stage(p, specific, TP_KIND_BACKEND, plugin, stage);
        return resolve_stage(p, s, TP_KIND_BACKEND, NULL, stage);
    }
    /* auto: [backend] may only say `plugin = auto`; per-backend keys live in
     * [backend.cuda] / [backend.cpu], and every backend found is a candidate, CUDA first. */
    p->backend_auto = 1;
    if (s)
        for (size_t i = 0; i < s->n_kvs; i++)
            if (strcmp(s->kvs[i].key, "plugin") != 0) {
                char loc[512];
                where(s, &s->kvs[i], loc, sizeof loc);
                return services_fail(TP_ERR_INVALID,
                                     "%s%s: with plugin = auto, put backend settings in "
                                     "[backend.cuda] or [backend.cpu]", loc, s->kvs[i].key);
            }
    static const char *const preference[] = { "cuda", "cpu" };
    for (size_t k = 0; k < 2; k++) {
        if (!registry_find(p->registry, TP_KIND_BACKEND, preference[k]))
            continue;
        char name[64];
        snprintf(name, sizeof name, "backend.%s", preference[k]);
        ini_section *specific = ini_find_section(&p->doc, name);
        ini_section empty = { .name = name, .file = p->doc.path, .line = 0 };
        if ((st = append_stage(&p->backends, &p->n_backends, &stage)))
            return st;
        if ((st = resolve_stage(p, specific ? specific : &empty, TP_KIND_BACKEND, preference[k],
                                stage)))
            return st;
        stage->implicit = specific == NULL;
        if (!specific)
            stage->section = preference[k][1] == 'u' ? "backend.cuda" : "backend.cpu";
    }
    if (!p->n_backends)
        return services_fail(TP_ERR_NOT_FOUND, "%s: no backend plugin found on the plugin path "
                             "(%s)", p->doc.path, p->search_path);
    /* [backend.X] for a backend that is not installed is still a configuration error. */
    for (size_t i = 0; i < p->doc.n_sections; i++) {
        ini_section *b = &p->doc.sections[i];
        if (!has_prefix(b->name, "backend."))
            continue;
        const char *want = b->name + strlen("backend.");
        if (!registry_find(p->registry, TP_KIND_BACKEND, want))
            return unknown_plugin(p->registry, b, NULL, TP_KIND_BACKEND, want);
    }
    return TP_OK;
}

/* [pipeline] deterministic = true switches on every backend's own `deterministic`
 * parameter, so one setting covers the whole run. */
static void request_determinism(pipeline *p)
{
    for (size_t i = 0; i < p->n_backends; i++) {
        int *deterministic = pipeline_stage_param(&p->backends[i], "deterministic",
                                                  TP_PARAM_BOOL);
        if (deterministic)
            *deterministic = 1;
    }
}

void *pipeline_stage_param(const pipeline_stage *stage, const char *name, tp_param_type type)
{
    const tp_component *c = stage->entry->component;
    for (size_t k = 0; k < c->n_params; k++)
        if (strcmp(c->params[k].name, name) == 0 && c->params[k].type == type)
            return (char *)stage->config.data + c->params[k].offset;
    return NULL;
}

static tp_status resolve_required(pipeline *p, const char *name, tp_kind kind,
                                  pipeline_stage *stage, const char *default_plugin)
{
    ini_section *s = ini_find_section(&p->doc, name);
    if (!s && default_plugin) {
        ini_section empty = { .name = (char *)name, .file = p->doc.path, .line = 0 };
        tp_status st = resolve_stage(p, &empty, kind, default_plugin, stage);
        stage->section = kind == TP_KIND_SCHEDULE ? "schedule" : name;
        stage->implicit = 1;
        return st;
    }
    if (!s)
        return services_fail(TP_ERR_INVALID, "%s: missing section [%s] (which %s to use)",
                             p->doc.path, name, registry_kind_name(kind));
    return resolve_stage(p, s, kind, NULL, stage);
}

static tp_status resolve_host_settings(pipeline *p, const char *name, const tp_component *c,
                                       param_config *cfg)
{
    ini_section *s = ini_find_section(&p->doc, name);
    param_kv header = { name, "", s ? s->file : p->doc.path, s ? s->line : 0 };
    return params_build_at(c, name, &header, s ? s->kvs : NULL, s ? s->n_kvs : 0, cfg);
}

tp_status pipeline_load(const char *path, const char *const *overrides, size_t n_overrides,
                        pipeline *p)
{
    memset(p, 0, sizeof *p);
    tp_status st = ini_load(path, &p->doc);
    if (st)
        return st;
    for (size_t i = 0; i < n_overrides && !st; i++)
        st = ini_override(&p->doc, overrides[i]);
    if (!st)
        st = check_section_names(&p->doc);
    if (!st)
        st = resolve_host_settings(p, "pipeline", &settings_component, &p->settings_config);
    if (st)
        goto fail;
    p->settings = p->settings_config.data;

    /* plugin_path entries are relative to the INI's folder, like every path in it. */
    char *ini_dirs = NULL;
    if (p->settings->plugin_path && *p->settings->plugin_path) {
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path) : 0;
        size_t cap = strlen(p->settings->plugin_path) * 2 + 64 + dir_len * 8;
        ini_dirs = calloc(1, cap);
        char *copy = strdup(p->settings->plugin_path);
        if (!ini_dirs || !copy) {
            free(ini_dirs);
            free(copy);
            st = services_fail(TP_ERR_NOMEM, "out of memory");
            goto fail;
        }
        char *save = NULL;
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            size_t used = strlen(ini_dirs);
            if (d[0] == '/' || !slash)
                snprintf(ini_dirs + used, cap - used, "%s%s", used ? ":" : "", d);
            else
                snprintf(ini_dirs + used, cap - used, "%s%.*s/%s", used ? ":" : "",
                         (int)dir_len, path, d);
        }
        free(copy);
    }
    p->search_path = registry_default_search_path(ini_dirs);
    free(ini_dirs);
    p->registry = registry_new();
    if (!p->search_path || !p->registry) {
        st = services_fail(TP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = registry_load_path(p->registry, p->search_path)))
        goto fail;
    if ((st = resolve_host_settings(p, "checkpoint", &checkpoint_component, &p->checkpoint_config)))
        goto fail;
    p->checkpoint = p->checkpoint_config.data;
    if ((st = resolve_backends(p)))
        goto fail;
    if (p->settings->deterministic)
        request_determinism(p);
    if ((st = resolve_required(p, "source.train", TP_KIND_SOURCE, &p->source_train, NULL)))
        goto fail;
    ini_section *val = ini_find_section(&p->doc, "source.val");
    if (val && (st = resolve_stage(p, val, TP_KIND_SOURCE, NULL, &p->source_val)))
        goto fail;
    if ((st = resolve_required(p, "model", TP_KIND_MODEL, &p->model, NULL)))
        goto fail;
    if ((st = resolve_required(p, "optimizer", TP_KIND_OPTIMIZER, &p->optimizer, NULL)))
        goto fail;
    if ((st = resolve_required(p, "schedule", TP_KIND_SCHEDULE, &p->schedule, "constant")))
        goto fail;
    for (size_t i = 0; i < p->doc.n_sections; i++) {
        ini_section *s = &p->doc.sections[i];
        pipeline_stage *stage;
        if (has_prefix(s->name, "augment.")) {
            if ((st = append_stage(&p->augments, &p->n_augments, &stage)) ||
                (st = resolve_stage(p, s, TP_KIND_AUGMENT, s->name + strlen("augment."), stage)))
                goto fail;
        } else if (has_prefix(s->name, "logger.")) {
            if ((st = append_stage(&p->loggers, &p->n_loggers, &stage)) ||
                (st = resolve_stage(p, s, TP_KIND_LOGGER, s->name + strlen("logger."), stage)))
                goto fail;
        }
    }
    if (!p->n_loggers && registry_find(p->registry, TP_KIND_LOGGER, "console")) {
        /* With no logger at all a run would be silent: default to the console. */
        pipeline_stage *stage;
        ini_section empty = { .name = "logger.console", .file = p->doc.path, .line = 0 };
        if ((st = append_stage(&p->loggers, &p->n_loggers, &stage)) ||
            (st = resolve_stage(p, &empty, TP_KIND_LOGGER, "console", stage)))
            goto fail;
        stage->section = "logger.console";
        stage->implicit = 1;
    }
    return TP_OK;
fail:
    pipeline_free(p);
    return st;
}

static void release_stage(pipeline_stage *s) { params_release(&s->config); }

void pipeline_free(pipeline *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_backends; i++)
        release_stage(&p->backends[i]);
    release_stage(&p->source_train);
    release_stage(&p->source_val);
    for (size_t i = 0; i < p->n_augments; i++)
        release_stage(&p->augments[i]);
    release_stage(&p->model);
    release_stage(&p->optimizer);
    release_stage(&p->schedule);
    for (size_t i = 0; i < p->n_loggers; i++)
        release_stage(&p->loggers[i]);
    free(p->backends);
    free(p->augments);
    free(p->loggers);
    params_release(&p->settings_config);
    params_release(&p->checkpoint_config);
    registry_free(p->registry);
    free(p->search_path);
    ini_free(&p->doc);
    memset(p, 0, sizeof *p);
}

/* Prints one section: its plugin line and every parameter, marking defaults. */
static void print_params(const pipeline *p, FILE *out, const char *section,
                         const tp_component *c, const void *data, const char *plugin_line)
{
    ini_section *s = ini_find_section((ini_document *)&p->doc, section);
    fprintf(out, "\n[%s]\n", section);
    if (plugin_line)
        fprintf(out, "%s\n", plugin_line);
    for (size_t i = 0; i < c->n_params; i++) {
        const tp_param_def *d = &c->params[i];
        char value[2048];
        params_format(d, data, value, sizeof value);
        int given = s && ini_get(s, d->name, NULL);
        if (!given && !d->default_value)
            fprintf(out, "; %s = (unset)\n", d->name);
        else
            fprintf(out, "%s = %s%s\n", d->name, value, given ? "" : "    ; default");
    }
}

static void print_stage(const pipeline *p, FILE *out, const pipeline_stage *st)
{
    if (!st->entry)
        return;
    char plugin_line[512];
    snprintf(plugin_line, sizeof plugin_line, "plugin = %s    ; %s%s", st->entry->component->name,
             st->implicit ? "not in the file, added by default; " : "", st->entry->path);
    print_params(p, out, st->section, st->entry->component, st->config.data, plugin_line);
    if (st->entry->component->kind == TP_KIND_LOGGER)
        fprintf(out, "required = %s\n", st->required ? "true" : "false");
    if (st->init_file)
        fprintf(out, "; init = %s    ; weights loaded by the host after the scheme above\n",
                st->init_file);
}

void pipeline_print(const pipeline *p, FILE *out)
{
    fprintf(out, "; resolved configuration of %s\n; plugin path: %s\n", p->doc.path,
            p->search_path);
    print_params(p, out, "pipeline", &settings_component, p->settings, NULL);
    if (p->backend_auto)
        fprintf(out, "\n[backend]\nplugin = auto    ; first that starts: %s%s\n",
                p->backends[0].entry->component->name, p->n_backends > 1 ? ", then cpu" : "");
    for (size_t i = 0; i < p->n_backends; i++)
        print_stage(p, out, &p->backends[i]);
    print_stage(p, out, &p->source_train);
    print_stage(p, out, &p->source_val);
    for (size_t i = 0; i < p->n_augments; i++)
        print_stage(p, out, &p->augments[i]);
    print_stage(p, out, &p->model);
    print_stage(p, out, &p->optimizer);
    print_stage(p, out, &p->schedule);
    for (size_t i = 0; i < p->n_loggers; i++)
        print_stage(p, out, &p->loggers[i]);
    print_params(p, out, "checkpoint", &checkpoint_component, p->checkpoint, NULL);
}
