/* random_resized_crop: the Inception / torchvision RandomResizedCrop on decoded samples.
 * Training: a crop of random area fraction in [scale_min, scale_max] and aspect ratio
 * (log-uniform) in [ratio_min, ratio_max], up to `attempts` tries, else the centered
 * ratio-clamped crop; resized bilinearly to size x size. Evaluation (training == 0): the
 * shorter side resized to size / eval_crop_fraction (256 for 224), then a centered
 * size x size crop. Random numbers come only from the tp_rng the host passes in. */
#include <math.h>

#include "resize.h"

typedef struct rrc_config {
    int64_t size;
    double scale_min, scale_max, ratio_min, ratio_max;
    int64_t attempts;
    double eval_crop_fraction;
} rrc_config;

#define CFG rrc_config
static const tp_param_def rrc_params[] = {
    TP_PARAM_DEF_INT(CFG, size, "size", "224", 1, 16384, "output side (square) in pixels"),
    TP_PARAM_DEF_FLOAT(CFG, scale_min, "scale_min", "0.08", 1e-6, 1,
                       "smallest crop area as a fraction of the image"),
    TP_PARAM_DEF_FLOAT(CFG, scale_max, "scale_max", "1.0", 1e-6, 1,
                       "largest crop area as a fraction of the image"),
    TP_PARAM_DEF_FLOAT(CFG, ratio_min, "ratio_min", "0.75", 1e-3, 1e3,
                       "smallest crop aspect ratio (width / height)"),
    TP_PARAM_DEF_FLOAT(CFG, ratio_max, "ratio_max", "1.3333333333333333", 1e-3, 1e3,
                       "largest crop aspect ratio (width / height)"),
    TP_PARAM_DEF_INT(CFG, attempts, "attempts", "10", 1, 1000,
                     "random tries before falling back to a center crop"),
    TP_PARAM_DEF_FLOAT(CFG, eval_crop_fraction, "eval_crop_fraction", "0.875", 0.01, 1,
                       "evaluation resizes the shorter side to size / this, then center-crops"),
};
#undef CFG

typedef struct rrc {
    const tp_host *host;
    const rrc_config *cfg;
    int eval_shorter;
} rrc;

static tp_status rrc_create(const tp_host *host, const void *config, void **self)
{
    const rrc_config *cfg = config;
    if (cfg->scale_min > cfg->scale_max || cfg->ratio_min > cfg->ratio_max)
        return host->fail(host, TP_ERR_INVALID,
                          "random_resized_crop: scale_min/ratio_min must not exceed "
                          "scale_max/ratio_max (scale %g..%g, ratio %g..%g)",
                          cfg->scale_min, cfg->scale_max, cfg->ratio_min, cfg->ratio_max);
    rrc *r = host->calloc(1, sizeof *r);
    if (!r)
        return host->fail(host, TP_ERR_NOMEM, "random_resized_crop: out of memory");
    r->host = host;
    r->cfg = cfg;
    r->eval_shorter = (int)lrint((double)cfg->size / cfg->eval_crop_fraction);
    *self = r;
    return TP_OK;
}

static void rrc_destroy(void *self)
{
    rrc *r = self;
    if (r)
        r->host->free(r);
}

static tp_augment_place rrc_place(void *self)
{
    (void)self;
    return TP_AUGMENT_SAMPLE;
}

static tp_status rrc_output_size(void *self, int in_height, int in_width, int in_channels,
                                 int *out_height, int *out_width, int *out_channels)
{
    rrc *r = self;
    *out_height = *out_width = (int)r->cfg->size;
    *out_channels = in_channels;
    return TP_OK;
}

static tp_status rrc_apply(void *self, const tp_image *in, tp_image *out, tp_rng *rng,
                           int training)
{
    rrc *r = self;
    const rrc_config *c = r->cfg;
    const int size = (int)c->size;
    if (in->height <= 0 || in->width <= 0 || in->channels <= 0)
        return r->host->fail(r->host, TP_ERR_INVALID, "random_resized_crop: empty %dx%dx%d input",
                             in->height, in->width, in->channels);
    if (!training)
        return resize_shorter_center_crop(r->host, in, out, r->eval_shorter, size, size);
    resize_crop crop = random_resized_crop_choose(in->height, in->width, c->scale_min,
                                                  c->scale_max, c->ratio_min, c->ratio_max,
                                                  (int)c->attempts, rng);
    resize_axis ay = resize_axis_span(crop.y, crop.h, size, crop.y, crop.y + crop.h - 1);
    resize_axis ax = resize_axis_span(crop.x, crop.w, size, crop.x, crop.x + crop.w - 1);
    return resize_bilinear(r->host, in, out, size, size, &ay, &ax);
}

static const tp_augment_ops rrc_ops = {
    .size = sizeof(tp_augment_ops),
    .place = rrc_place,
    .output_size = rrc_output_size,
    .apply_sample = rrc_apply,
};

const tp_component random_resized_crop_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "random_resized_crop",
    .summary = "random area/aspect crop resized to a square (Inception); eval: resize + center crop",
    .params = rrc_params,
    .n_params = sizeof rrc_params / sizeof rrc_params[0],
    .config_size = sizeof(rrc_config),
    .create = rrc_create,
    .destroy = rrc_destroy,
    .ops = &rrc_ops,
};
