/* resize_center_crop: the standard ImageNet evaluation transform on decoded samples: the
 * shorter side resized to `resize` (aspect kept), then the centered crop x crop window.
 * Deterministic: the same in training and evaluation. */
#include "resize.h"

typedef struct rcc_config {
    int64_t resize;
    int64_t crop;
} rcc_config;

#define CFG rcc_config
static const tp_param_def rcc_params[] = {
    TP_PARAM_DEF_INT(CFG, resize, "resize", "256", 1, 16384,
                     "the shorter side is resized to this many pixels"),
    TP_PARAM_DEF_INT(CFG, crop, "crop", "224", 1, 16384, "side of the centered square crop"),
};
#undef CFG

typedef struct rcc {
    const tp_host *host;
    const rcc_config *cfg;
} rcc;

static tp_status rcc_create(const tp_host *host, const void *config, void **self)
{
    rcc *r = host->calloc(1, sizeof *r);
    if (!r)
        return host->fail(host, TP_ERR_NOMEM, "resize_center_crop: out of memory");
    r->host = host;
    r->cfg = config;
    if (r->cfg->crop > r->cfg->resize)
        host->log(host, TP_LOG_WARN, "resize_center_crop",
                  "crop = %lld is larger than resize = %lld: borders repeat edge pixels",
                  (long long)r->cfg->crop, (long long)r->cfg->resize);
    *self = r;
    return TP_OK;
}

static void rcc_destroy(void *self)
{
    rcc *r = self;
    if (r)
        r->host->free(r);
}

static tp_augment_place rcc_place(void *self)
{
    (void)self;
    return TP_AUGMENT_SAMPLE;
}

static tp_status rcc_output_size(void *self, int in_height, int in_width, int in_channels,
                                 int *out_height, int *out_width, int *out_channels)
{
    rcc *r = self;
    *out_height = *out_width = (int)r->cfg->crop;
    *out_channels = in_channels;
    return TP_OK;
}

static tp_status rcc_apply(void *self, const tp_image *in, tp_image *out, tp_rng *rng,
                           int training)
{
    rcc *r = self;
    (void)rng;
    (void)training;
    if (in->height <= 0 || in->width <= 0 || in->channels <= 0)
        return r->host->fail(r->host, TP_ERR_INVALID, "resize_center_crop: empty %dx%dx%d input",
                             in->height, in->width, in->channels);
    return resize_shorter_center_crop(r->host, in, out, (int)r->cfg->resize, (int)r->cfg->crop,
                                      (int)r->cfg->crop);
}

static const tp_augment_ops rcc_ops = {
    .size = sizeof(tp_augment_ops),
    .place = rcc_place,
    .output_size = rcc_output_size,
    .apply_sample = rcc_apply,
};

const tp_component resize_center_crop_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "resize_center_crop",
    .summary = "shorter side to `resize`, then a centered `crop` square (ImageNet evaluation)",
    .params = rcc_params,
    .n_params = sizeof rcc_params / sizeof rcc_params[0],
    .config_size = sizeof(rcc_config),
    .create = rcc_create,
    .destroy = rcc_destroy,
    .ops = &rcc_ops,
};
