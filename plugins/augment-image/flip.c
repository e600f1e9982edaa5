/* augment-image: flip, mirror each image with a given probability. Only horizontal
 * mirroring exists for now. Training only; evaluation batches pass through unchanged. */
#include "config.h"

#include "augment_image.h"

#include <stddef.h>

typedef struct flip_config {
    double probability;
    int direction; /* index into flip_directions */
} flip_config;

typedef struct flip {
    const tp_host *host;
    double probability;
    augment_scratch scratch;
} flip;

static const char *const flip_directions[] = { "horizontal", NULL };

static const tp_param_def flip_params[] = {
    TP_PARAM_DEF_FLOAT(flip_config, probability, "probability", "0.5", 0.0, 1.0,
                       "Chance that a sample is mirrored."),
    TP_PARAM_DEF_ENUM(flip_config, direction, "direction", "horizontal", flip_directions,
                      "Mirror axis; only horizontal (left-right) is implemented for now."),
};

static tp_status flip_create(const tp_host *host, const void *config, void **self)
{
    const flip_config *cfg = (const flip_config *)config;
    flip *f = (flip *)host->calloc(1, sizeof *f);
    if (!f)
        return host->fail(host, TP_ERR_NOMEM, "flip: out of memory");
    f->host = host;
    f->probability = cfg->probability;
    augment_scratch_init(&f->scratch);
    *self = f;
    return TP_OK;
}

static void flip_destroy(void *self)
{
    flip *f = (flip *)self;
    if (!f)
        return;
    augment_scratch_fini(&f->scratch);
    f->host->free(f);
}

static tp_status flip_apply_batch(void *self, const tp_augment_batch *batch)
{
    flip *f = (flip *)self;
    const tp_host *host = f->host;
    tp_status st = augment_check_batch(host, "flip", batch,
                                       batch && batch->backend && batch->backend->ops
                                           ? batch->backend->ops->crop_flip != NULL
                                           : 0,
                                       "crop_flip");
    if (st)
        return st;
    const int64_t n = batch->images->shape[0];
    if (!batch->training || n == 0)
        return TP_OK;
    /* One block: n zero offsets (y and x share them), then n flip flags. */
    const size_t bytes = (size_t)n * sizeof(int32_t) + (size_t)n;
    int32_t *zeros = (int32_t *)host->calloc(1, bytes);
    if (!zeros)
        return host->fail(host, TP_ERR_NOMEM, "flip: cannot allocate flags for %lld images",
                          (long long)n);
    uint8_t *flags = (uint8_t *)(zeros + n);
    int any = 0;
    for (int64_t i = 0; i < n; i++) {
        const tp_sample_key *k = &batch->keys[i];
        tp_rng rng = tp_rng_make(k->seed ^ AUGMENT_FLIP_SALT, (uint64_t)k->epoch,
                                 (uint64_t)k->index);
        flags[i] = tp_rng_uniform(&rng) < f->probability;
        any |= flags[i];
    }
    /* pad = 0 and offset 0: crop_flip reduces to the per-sample mirror. */
    tp_crop_flip_desc d = { 0, 0.0f, zeros, zeros, flags };
    if (any)
        st = augment_crop_flip_in_place(host, "flip", &f->scratch, batch, &d);
    host->free(zeros);
    return st;
}

static const tp_augment_ops flip_ops = {
    .size = sizeof(tp_augment_ops),
    .place = augment_place_batch,
    .output_size = augment_same_size,
    .apply_sample = NULL,
    .apply_batch = flip_apply_batch,
};

const tp_component augment_flip_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "flip",
    .summary = "Mirror images left-right with a given probability (horizontal only; training "
               "only; per batch on the backend).",
    .params = flip_params,
    .n_params = sizeof flip_params / sizeof flip_params[0],
    .config_size = sizeof(flip_config),
    .create = flip_create,
    .destroy = flip_destroy,
    .ops = &flip_ops,
};
