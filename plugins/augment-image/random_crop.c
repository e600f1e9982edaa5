/* augment-image: random_crop, pad every side then crop back to the original size at a random
 * offset (the CIFAR-10 ResNet recipe: padding 4, 32x32 crops). Training only; evaluation
 * batches pass through unchanged. */
#include "config.h"

#include "augment_image.h"

#include <stddef.h>

typedef struct random_crop_config {
    int64_t padding;
    double fill;
} random_crop_config;

typedef struct random_crop {
    const tp_host *host;
    int pad;
    float fill;
    augment_scratch scratch;
} random_crop;

static const tp_param_def random_crop_params[] = {
    TP_PARAM_DEF_INT(random_crop_config, padding, "padding", "4", 0, 1024,
                     "Pixels of padding added on every side before the random crop."),
    { "fill", TP_PARAM_FLOAT, "0", 0, 0, 0, NULL, offsetof(random_crop_config, fill),
      "Value of the padded pixels (in the scaled f32 units, e.g. 0..1 for input_scale 1/255)." },
};

static tp_status random_crop_create(const tp_host *host, const void *config, void **self)
{
    const random_crop_config *cfg = (const random_crop_config *)config;
    random_crop *rc = (random_crop *)host->calloc(1, sizeof *rc);
    if (!rc)
        return host->fail(host, TP_ERR_NOMEM, "random_crop: out of memory");
    rc->host = host;
    rc->pad = (int)cfg->padding;
    rc->fill = (float)cfg->fill;
    augment_scratch_init(&rc->scratch);
    *self = rc;
    return TP_OK;
}

static void random_crop_destroy(void *self)
{
    random_crop *rc = (random_crop *)self;
    if (!rc)
        return;
    augment_scratch_fini(&rc->scratch);
    rc->host->free(rc);
}

static tp_status random_crop_apply_batch(void *self, const tp_augment_batch *batch)
{
    random_crop *rc = (random_crop *)self;
    const tp_host *host = rc->host;
    tp_status st = augment_check_batch(host, "random_crop", batch,
                                       batch && batch->backend && batch->backend->ops
                                           ? batch->backend->ops->crop_flip != NULL
                                           : 0,
                                       "crop_flip");
    if (st)
        return st;
    const int64_t n = batch->images->shape[0];
    if (!batch->training || rc->pad == 0 || n == 0)
        return TP_OK;
    int32_t *offsets = (int32_t *)host->alloc((size_t)n * 2 * sizeof(int32_t));
    if (!offsets)
        return host->fail(host, TP_ERR_NOMEM,
                          "random_crop: cannot allocate offsets for %lld images", (long long)n);
    const uint64_t choices = 2 * (uint64_t)rc->pad + 1;
    for (int64_t i = 0; i < n; i++) {
        const tp_sample_key *k = &batch->keys[i];
        tp_rng rng = tp_rng_make(k->seed ^ AUGMENT_RANDOM_CROP_SALT, (uint64_t)k->epoch,
                                 (uint64_t)k->index);
        offsets[i] = (int32_t)tp_rng_below(&rng, choices);     /* y first */
        offsets[n + i] = (int32_t)tp_rng_below(&rng, choices); /* then x */
    }
    tp_crop_flip_desc d = { rc->pad, rc->fill, offsets, offsets + n, NULL };
    st = augment_crop_flip_in_place(host, "random_crop", &rc->scratch, batch, &d);
    host->free(offsets);
    return st;
}

static const tp_augment_ops random_crop_ops = {
    .size = sizeof(tp_augment_ops),
    .place = augment_place_batch,
    .output_size = augment_same_size,
    .apply_sample = NULL,
    .apply_batch = random_crop_apply_batch,
};

const tp_component augment_random_crop_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "random_crop",
    .summary = "Pad every side, then crop back to the original size at a random offset "
               "(training only; per batch on the backend).",
    .params = random_crop_params,
    .n_params = sizeof random_crop_params / sizeof random_crop_params[0],
    .config_size = sizeof(random_crop_config),
    .create = random_crop_create,
    .destroy = random_crop_destroy,
    .ops = &random_crop_ops,
};
