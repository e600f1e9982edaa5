/* augment-image: whiten, TensorFlow's per_image_standardization:
 *     x = (x - mean) / max(stddev, 1 / sqrt(C*H*W))
 * over all pixels and channels of each image. Deterministic, so it also runs in evaluation. */
#include "config.h"

#include "augment_image.h"

typedef struct whiten {
    const tp_host *host;
} whiten;

static tp_status whiten_create(const tp_host *host, const void *config, void **self)
{
    (void)config;
    whiten *w = (whiten *)host->calloc(1, sizeof *w);
    if (!w)
        return host->fail(host, TP_ERR_NOMEM, "whiten: out of memory");
    w->host = host;
    *self = w;
    return TP_OK;
}

static void whiten_destroy(void *self)
{
    whiten *w = (whiten *)self;
    if (w)
        w->host->free(w);
}

static tp_status whiten_apply_batch(void *self, const tp_augment_batch *batch)
{
    whiten *w = (whiten *)self;
    tp_status st = augment_check_batch(w->host, "whiten", batch,
                                       batch && batch->backend && batch->backend->ops
                                           ? batch->backend->ops->standardize_images != NULL
                                           : 0,
                                       "standardize_images");
    if (st)
        return st;
    if (batch->images->shape[0] == 0)
        return TP_OK;
    return batch->backend->ops->standardize_images(batch->backend->self, batch->images);
}

static const tp_augment_ops whiten_ops = {
    .size = sizeof(tp_augment_ops),
    .place = augment_place_batch,
    .output_size = augment_same_size,
    .apply_sample = NULL,
    .apply_batch = whiten_apply_batch,
};

const tp_component augment_whiten_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_AUGMENT,
    .name = "whiten",
    .summary = "Per-image standardisation as TensorFlow's per_image_standardization "
               "(training and evaluation; per batch on the backend).",
    .params = NULL,
    .n_params = 0,
    .config_size = 0,
    .create = whiten_create,
    .destroy = whiten_destroy,
    .ops = &whiten_ops,
};
