/* A plugin for the host's tests: one component of every kind, with a parameter of every
 * type, so INI validation and pipeline resolution can be tested without real plugins.
 * Building it with -DFIXTURE_VARIANT selects a deliberately broken variant (another ABI, a
 * newer API, a duplicate component, an unresolved symbol). */
#include <stdlib.h>
#include <string.h>

#include <trainpipe/trainpipe.h>

typedef struct fixture_config {
    int flag;
    int64_t count;
    double rate;
    const char *label;
    const char *file;
    int mode;
    tp_int_list steps;
    tp_float_list factors;
} fixture_config;

static const char *const modes[] = { "fast", "careful", NULL };

static const tp_param_def fixture_params[] = {
    TP_PARAM_DEF_BOOL(fixture_config, flag, "flag", "false", "a boolean"),
    TP_PARAM_DEF_INT(fixture_config, count, "count", "3", 1, 100, "an integer in [1, 100]"),
    TP_PARAM_DEF_FLOAT(fixture_config, rate, "rate", "0.5", 0, 1, "a float in [0, 1]"),
    TP_PARAM_DEF_STRING(fixture_config, label, "label", "none", "a string"),
    TP_PARAM_DEF_PATH(fixture_config, file, "file", NULL, "an optional path"),
    TP_PARAM_DEF_ENUM(fixture_config, mode, "mode", "fast", modes, "an enum"),
    { "steps", TP_PARAM_INT_LIST, "", TP_PARAM_FLAG_HAS_MIN, 0, 0, NULL,
      offsetof(fixture_config, steps), "non-negative integers" },
    { "factors", TP_PARAM_FLOAT_LIST, "", 0, 0, 0, NULL, offsetof(fixture_config, factors),
      "floats" },
};

static const tp_param_def required_params[] = {
    TP_PARAM_DEF_REQUIRED_PATH(fixture_config, file, "path", "the data to read"),
    TP_PARAM_DEF_INT(fixture_config, count, "count", "3", 1, 100, "an integer in [1, 100]"),
};

static tp_status fixture_create(const tp_host *host, const void *config, void **self)
{
    fixture_config *copy = host->alloc(sizeof *copy);
    if (!copy)
        return host->fail(host, TP_ERR_NOMEM, "fixture: out of memory");
    memcpy(copy, config, sizeof *copy);
    *self = copy;
    return TP_OK;
}

static void fixture_destroy(void *self) { free(self); }

/* The ops tables are never called by the host's configuration tests; each kind still gets
 * a table of its own type so the descriptor is well-formed. */
static const tp_backend_ops backend_ops = { .size = sizeof(tp_backend_ops) };
static const tp_source_ops source_ops = { .size = sizeof(tp_source_ops) };
static const tp_augment_ops augment_ops = { .size = sizeof(tp_augment_ops) };
static const tp_model_ops model_ops = { .size = sizeof(tp_model_ops) };
static const tp_optimizer_ops optimizer_ops = { .size = sizeof(tp_optimizer_ops) };
static const tp_schedule_ops schedule_ops = { .size = sizeof(tp_schedule_ops) };
static const tp_logger_ops logger_ops = { .size = sizeof(tp_logger_ops) };

#define PARAMS(table) table, sizeof table / sizeof table[0], sizeof(fixture_config)
#define COMPONENT(var, kind, name, table, ops)                                             \
    static const tp_component var = { sizeof(tp_component), kind, name, "test fixture",    \
                                      PARAMS(table), fixture_create, fixture_destroy, &ops }

#ifndef FIXTURE_PREFIX
#define FIXTURE_PREFIX "fixture_"
#endif

COMPONENT(backend, TP_KIND_BACKEND, FIXTURE_PREFIX "backend", fixture_params, backend_ops);
COMPONENT(source, TP_KIND_SOURCE, FIXTURE_PREFIX "source", required_params, source_ops);
COMPONENT(augment, TP_KIND_AUGMENT, FIXTURE_PREFIX "augment", fixture_params, augment_ops);
COMPONENT(model, TP_KIND_MODEL, FIXTURE_PREFIX "model", fixture_params, model_ops);
COMPONENT(optimizer, TP_KIND_OPTIMIZER, FIXTURE_PREFIX "optimizer", fixture_params, optimizer_ops);
COMPONENT(schedule, TP_KIND_SCHEDULE, FIXTURE_PREFIX "schedule", fixture_params, schedule_ops);
COMPONENT(logger, TP_KIND_LOGGER, FIXTURE_PREFIX "logger", fixture_params, logger_ops);

static const tp_component *const components[] = {
    &backend, &source, &augment, &model, &optimizer, &schedule, &logger,
};

#if defined(FIXTURE_UNRESOLVED)
/* Defined nowhere: dlopen(RTLD_NOW) must fail and name it. */
extern int fixture_symbol_that_does_not_exist(void);
int (*volatile fixture_unresolved_ref)(void) = fixture_symbol_that_does_not_exist;
#endif

static const tp_plugin_info info = {
#if defined(FIXTURE_OTHER_ABI)
    TP_ABI_MAJOR + 1, TP_API_MINOR, sizeof(tp_plugin_info),
#elif defined(FIXTURE_NEWER_API)
    TP_ABI_MAJOR, 99 /* far beyond this host */, sizeof(tp_plugin_info),
#else
    TP_PLUGIN_INFO_HEADER,
#endif
    "test-fixture", "0.0.1", "MIT", "fixtures for the host's tests",
    components, sizeof components / sizeof components[0], { NULL },
};

const tp_plugin_info *trainpipe_plugin_entry(void)
{
#if defined(FIXTURE_UNRESOLVED)
    (void)fixture_unresolved_ref;
#endif
    return &info;
}
