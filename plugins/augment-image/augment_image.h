/* augment-image: device-side batch augmenters built only from backend operations
 * (crop_flip, standardize_images, normalize_channels), so they run on every backend.
 *
 * Random choices are made on the host, per sample, from
 *     tp_rng_make(key.seed ^ SALT, key.epoch, key.index)
 * with a salt per augmenter, so random_crop and flip draw from independent streams that are
 * also independent of the host-side sample augmenters (which use the unsalted key). The
 * draw order inside one stream is fixed and documented beside each salt. */
#ifndef AUGMENT_IMAGE_H
#define AUGMENT_IMAGE_H

#include <pthread.h>

#include <trainpipe/trainpipe.h>

/* random_crop: draws offset_y = below(2*padding+1), then offset_x = below(2*padding+1). */
#define AUGMENT_RANDOM_CROP_SALT 0x72616e645f63726fULL /* "rand_cro" */
/* flip: draws one uniform u; the sample is mirrored when u < probability. */
#define AUGMENT_FLIP_SALT 0x666c69705f686f72ULL /* "flip_hor" */

extern const tp_component augment_random_crop_component;
extern const tp_component augment_flip_component;
extern const tp_component augment_whiten_component;
extern const tp_component augment_normalize_component;

/* A device tensor the crop/flip augmenters write into before copying back, since
 * crop_flip's src and dst must not alias on every backend. Grown on demand; the mutex
 * makes one instance safe to share between a training and an evaluation loader. */
typedef struct augment_scratch {
    pthread_mutex_t lock;
    const tp_backend *backend; /* the backend that allocated `t`, or NULL */
    tp_tensor t;
    int64_t capacity;          /* images allocated in t (t.shape[0] may be smaller) */
} augment_scratch;

void augment_scratch_init(augment_scratch *s);
/* Frees the tensor through the backend that allocated it (which must still exist). */
void augment_scratch_fini(augment_scratch *s);

/* Checks the batch a batch augmenter receives: a backend that implements the operation it
 * needs (`available`, named `needed_name` in the message), 4-D f32 images, N keys.
 * `who` names the augmenter in messages. */
tp_status augment_check_batch(const tp_host *host, const char *who,
                              const tp_augment_batch *batch, int available,
                              const char *needed_name);

/* images = crop_flip(images) through the scratch tensor: crop_flip into scratch, then copy
 * back on the compute stream (both stay in stream order on asynchronous backends). */
tp_status augment_crop_flip_in_place(const tp_host *host, const char *who, augment_scratch *s,
                                     const tp_augment_batch *batch, const tp_crop_flip_desc *d);

/* The same size out as in (batch augmenters never resize). */
tp_status augment_same_size(void *self, int in_height, int in_width, int in_channels,
                            int *out_height, int *out_width, int *out_channels);
tp_augment_place augment_place_batch(void *self);

#endif
