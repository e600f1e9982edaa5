/* source-synthetic: deterministic random images for measuring pipeline throughput without
 * touching a disk.
 *
 * Sample i is a pure function of (seed, i): its generator is tp_rng_make(seed, 0, i); the
 * label is the first draw (tp_rng_below(num_classes)), the pixels follow, eight per 64-bit
 * draw, in HWC order. Any thread may read any index in any order and gets the same bytes. */
#include <string.h>

#include <trainpipe/trainpipe.h>

typedef struct synthetic_config {
    int64_t height, width, channels;
    int64_t num_classes;
    int64_t count;
    int64_t seed;
} synthetic_config;

typedef struct synthetic {
    const tp_host *host;
    synthetic_config cfg;
} synthetic;

static const tp_param_def synthetic_params[] = {
    TP_PARAM_DEF_INT(synthetic_config, height, "height", "32", 1, 4096, "image height in pixels"),
    TP_PARAM_DEF_INT(synthetic_config, width, "width", "32", 1, 4096, "image width in pixels"),
    TP_PARAM_DEF_INT(synthetic_config, channels, "channels", "3", 1, 4,
                     "channels per pixel (1 gray, 3 RGB)"),
    TP_PARAM_DEF_INT(synthetic_config, num_classes, "num_classes", "10", 1, 1000000,
                     "labels are drawn uniformly from [0, num_classes)"),
    TP_PARAM_DEF_INT(synthetic_config, count, "count", "50000", 1, 1e15,
                     "number of samples the source reports"),
    TP_PARAM_DEF_INT(synthetic_config, seed, "seed", "0", 0, 9.007199254740992e15,
                     "seed of the per-sample generators"),
};

static tp_status synthetic_create(const tp_host *host, const void *config, void **self)
{
    synthetic *s = host->calloc(1, sizeof(*s));
    if (!s)
        return host->fail(host, TP_ERR_NOMEM, "synthetic: cannot allocate the source");
    s->host = host;
    memcpy(&s->cfg, config, sizeof(s->cfg));
    *self = s;
    return TP_OK;
}

static void synthetic_destroy(void *self)
{
    synthetic *s = self;
    if (s)
        s->host->free(s);
}

static tp_status synthetic_open(void *self, const tp_source_open_args *args,
                                tp_source_info *info)
{
    synthetic *s = self;
    (void)args;
    info->count = s->cfg.count;
    info->height = (int)s->cfg.height;
    info->width = (int)s->cfg.width;
    info->channels = (int)s->cfg.channels;
    info->num_classes = (int)s->cfg.num_classes;
    info->class_names = NULL;
    return TP_OK;
}

static tp_status synthetic_read(void *self, void *worker, int64_t index, tp_image *out,
                                int32_t *label)
{
    synthetic *s = self;
    (void)worker;
    if (index < 0 || index >= s->cfg.count)
        return s->host->fail(s->host, TP_ERR_INVALID,
                             "synthetic: sample %lld is outside [0, %lld)", (long long)index,
                             (long long)s->cfg.count);
    tp_status st = tp_image_reserve(s->host, out, (int)s->cfg.height, (int)s->cfg.width,
                                    (int)s->cfg.channels);
    if (st)
        return st;
    tp_rng r = tp_rng_make((uint64_t)s->cfg.seed, 0, (uint64_t)index);
    *label = (int32_t)tp_rng_below(&r, (uint64_t)s->cfg.num_classes);
    size_t n = (size_t)s->cfg.height * (size_t)s->cfg.width * (size_t)s->cfg.channels;
    uint8_t *p = out->data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = tp_rng_u64(&r);
        for (int b = 0; b < 8; b++)
            p[i + (size_t)b] = (uint8_t)(v >> (8 * b));
    }
    if (i < n) {
        uint64_t v = tp_rng_u64(&r);
        for (int b = 0; i < n; i++, b++)
            p[i] = (uint8_t)(v >> (8 * b));
    }
    return TP_OK;
}

static const tp_source_ops synthetic_ops = {
    .size = sizeof(tp_source_ops),
    .open = synthetic_open,
    .read = synthetic_read,
};

static const tp_component synthetic_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SOURCE,
    .name = "synthetic",
    .summary = "deterministic random images and labels, for throughput measurement",
    .params = synthetic_params,
    .n_params = sizeof(synthetic_params) / sizeof(synthetic_params[0]),
    .config_size = sizeof(synthetic_config),
    .create = synthetic_create,
    .destroy = synthetic_destroy,
    .ops = &synthetic_ops,
};

static const tp_component *const synthetic_components[] = {&synthetic_component};

static const tp_plugin_info synthetic_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "source-synthetic",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "synthetic images without a disk",
    .components = synthetic_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &synthetic_info; }
