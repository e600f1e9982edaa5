/* augment-image: normalize, per-channel (x - mean[c]) / std[c] with fixed statistics (the
 * ImageNet recipe). Deterministic, so it also runs in evaluation. */
#include "config.h"

#include "augment_image.h"

#include <math.h>
#include <stddef.h>

typedef struct normalize_config {
    tp_float_list mean;
    tp_float_list std;
} normalize_config;

typedef struct normalize {
    const tp_host *host;
    size_t channels;
    float *mean; /* channels values, then channels values of std */
    float *std;
} normalize;

static const tp_param_def normalize_params[] = {
    { "mean", TP_PARAM_FLOAT_LIST, NULL, TP_PARAM_FLAG_REQUIRED, 0, 0, NULL,
      offsetof(normalize_config, mean),
      "Per-channel mean to subtract, comma-separated, in the scaled f32 units." },
    { "std", TP_PARAM_FLOAT_LIST, NULL, TP_PARAM_FLAG_REQUIRED, 0, 0, NULL,
      offsetof(normalize_config, std),
      "Per-channel standard deviation to divide by, comma-separated, same count as mean." },
};

static tp_status normalize_create(const tp_host *host, const void *config, void **self)
{
    const normalize_config *cfg = (const normalize_config *)config;
    if (cfg->mean.count == 0 || cfg->mean.count != cfg->std.count)
        return host->fail(host, TP_ERR_INVALID,
                          "normalize: mean has %zu values and std has %zu: give one of each "
                          "per channel",
                          cfg->mean.count, cfg->std.count);
    for (size_t c = 0; c < cfg->std.count; c++)
        if (!(fabs(cfg->std.values[c]) > 0.0) || !isfinite(cfg->std.values[c]) ||
            !isfinite(cfg->mean.values[c]))
            return host->fail(host, TP_ERR_INVALID,
                              "normalize: channel %zu has mean %g, std %g: std must be a "
                              "non-zero finite number and mean finite",
                              c, cfg->mean.values[c], cfg->std.values[c]);
    normalize *nz = (normalize *)host->calloc(1, sizeof *nz);
    float *values = (float *)host->alloc(2 * cfg->mean.count * sizeof(float));
    if (!nz || !values) {
        host->free(nz);
        host->free(values);
        return host->fail(host, TP_ERR_NOMEM, "normalize: out of memory");
    }
    nz->host = host;
    nz->channels = cfg->mean.count;
    nz->mean = values;
    nz->std = values + nz->channels;
    for (size_t c = 0; c < nz->channels; c++) {
        nz->mean[c] = (float)cfg->mean.values[c];
        nz->std[c] = (float)cfg->std.values[c];
    }
    *self = nz;
    return TP_OK;
}

static void normalize_destroy(void *self)
{
    normalize *nz = (normalize *)self;
    if (!nz)
        return;
    nz->host->free(nz->mean);
    nz->host->free(nz);
}

static tp_status normalize_apply_batch(void *self, const tp_augment_batch *batch)
{
    normalize *nz = (normalize *)self;
    tp_status st = augment_check_batch(nz->host, "normalize", batch,
                                       batch && batch->backend && batch->backend->ops
                                           ? batch->backend->ops->normalize_channels != NULL
                                           : 0,
                                       "normalize_channels");
    if (st)
        return st;
    if ((size_t)batch->images->shape[1] != nz->channels)
        return nz->host->fail(nz->host, TP_ERR_INVALID,
                              "normalize: mean and std have %zu values but the images have "
                              "%lld channel(s)",
                              nz->channels, (long long)batch->images->shape[1]);
    if (batch->images->shape[0] == 0)
        return TP_OK;
    return batch->backend->ops->normalize_channels(batch->backend->self, batch->images,
                                                   nz->mean, nz->std);
}

static const tp_augment_ops normalize_ops = {
    .size = sizeof(tp_augment_ops),
    .place = augment_place_batch,
    .output_size = augment_same_size,
    .apply_sample = NULL,
    .apply_batch = normalize_apply_batch,
};

const tp_component augment_normalize_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "normalize",
    .summary = "Per-channel (x - mean) / std with fixed statistics (training and evaluation; "
               "per batch on the backend).",
    .params = normalize_params,
    .n_params = sizeof normalize_params / sizeof normalize_params[0],
    .config_size = sizeof(normalize_config),
    .create = normalize_create,
    .destroy = normalize_destroy,
    .ops = &normalize_ops,
};
