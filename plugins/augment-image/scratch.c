/* augment-image: helpers shared by the batch augmenters (scratch tensor, batch checks). */
#include "config.h"

#include "augment_image.h"

#include <string.h>

void augment_scratch_init(augment_scratch *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
}

static void scratch_release(augment_scratch *s)
{
    if (s->backend && s->t.data)
        s->backend->ops->free(s->backend->self, &s->t);
    s->t.data = NULL;
    s->backend = NULL;
    s->capacity = 0;
}

void augment_scratch_fini(augment_scratch *s)
{
    scratch_release(s);
    pthread_mutex_destroy(&s->lock);
}

tp_status augment_check_batch(const tp_host *host, const char *who,
                              const tp_augment_batch *batch, int available,
                              const char *needed_name)
{
    if (!batch || batch->size < sizeof(tp_augment_batch) || !batch->backend ||
        !batch->backend->ops || !batch->images)
        return host->fail(host, TP_ERR_INVALID, "%s: malformed batch (no backend or images)",
                          who);
    if (!available)
        return host->fail(host, TP_ERR_UNSUPPORTED,
                          "%s: the active backend does not implement %s", who, needed_name);
    const tp_tensor *x = batch->images;
    if (x->ndim != 4 || x->dtype != TP_DTYPE_F32)
        return host->fail(host, TP_ERR_INVALID,
                          "%s: images must be a 4-D f32 batch, got %d-D %s", who, x->ndim,
                          tp_dtype_name(x->dtype));
    if (x->shape[0] > 0 && !batch->keys)
        return host->fail(host, TP_ERR_INVALID, "%s: batch of %lld images has no sample keys",
                          who, (long long)x->shape[0]);
    return TP_OK;
}

tp_status augment_crop_flip_in_place(const tp_host *host, const char *who, augment_scratch *s,
                                     const tp_augment_batch *batch, const tp_crop_flip_desc *d)
{
    const tp_backend *be = batch->backend;
    const tp_tensor *x = batch->images;
    tp_status st = TP_OK;
    if (!be->ops->copy || !be->ops->alloc || !be->ops->free)
        return host->fail(host, TP_ERR_UNSUPPORTED,
                          "%s: the active backend lacks alloc/free/copy", who);
    pthread_mutex_lock(&s->lock);
    const int fits = s->backend == be && s->t.data && s->t.layout == x->layout &&
                     s->capacity >= x->shape[0] && s->t.shape[1] == x->shape[1] &&
                     s->t.shape[2] == x->shape[2] && s->t.shape[3] == x->shape[3];
    if (!fits) {
        scratch_release(s);
        s->t = tp_tensor_4d(TP_DTYPE_F32, x->layout, x->shape[0], x->shape[1], x->shape[2],
                            x->shape[3]);
        s->t.device = x->device;
        st = be->ops->alloc(be->self, &s->t, who);
        if (st) {
            s->t.data = NULL;
            goto done;
        }
        s->backend = be;
        s->capacity = x->shape[0];
    }
    /* A view of the first N images of the scratch tensor. */
    tp_tensor view = s->t;
    view.shape[0] = x->shape[0];
    if ((st = be->ops->crop_flip(be->self, d, x, &view)))
        goto done;
    st = be->ops->copy(be->self, batch->images, &view, TP_STREAM_COMPUTE);
done:
    pthread_mutex_unlock(&s->lock);
    return st;
}

tp_status augment_same_size(void *self, int in_height, int in_width, int in_channels,
                            int *out_height, int *out_width, int *out_channels)
{
    (void)self;
    *out_height = in_height;
    *out_width = in_width;
    *out_channels = in_channels;
    return TP_OK;
}

tp_augment_place augment_place_batch(void *self)
{
    (void)self;
    return TP_AUGMENT_BATCH;
}
