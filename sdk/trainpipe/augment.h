/* trainpipe SDK: augmenters (TP_KIND_AUGMENT).
 *
 * An augmenter runs in one of two places, which it declares:
 *   - TP_AUGMENT_SAMPLE: on the host, per sample, in the data worker threads, on uint8 HWC
 *     images (random-resized-crop and resize on decoded JPEGs, for example);
 *   - TP_AUGMENT_BATCH: on the compute backend, per batch, on the f32 (N,C,H,W) batch in the
 *     ring slot (crop, flip, whitening, normalisation), through backend operations.
 * The [augment.NAME] sections form a chain in file order; sample augmenters must come before
 * batch augmenters.
 *
 * Random choices come from a tp_rng the host seeds with (seed, epoch, sample index), so the
 * same seed gives the same batches whatever the number of worker threads. */
#ifndef TRAINPIPE_AUGMENT_H
#define TRAINPIPE_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/backend.h>
#include <trainpipe/rng.h>
#include <trainpipe/source.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_augment_place {
    TP_AUGMENT_SAMPLE = 1,
    TP_AUGMENT_BATCH = 2
} tp_augment_place;

/* Identifies one sample for seeding: rng = tp_rng_make(seed, epoch, index). */
typedef struct tp_sample_key {
    uint64_t seed;
    int64_t epoch;
    int64_t index;
} tp_sample_key;

/* A batch handed to a batch augmenter. */
typedef struct tp_augment_batch {
    size_t size;
    const tp_backend *backend;
    tp_tensor *images;           /* f32 (N,C,H,W) in device memory; modified in place */
    const tp_sample_key *keys;   /* N keys, host memory */
    int training;                /* 0 during evaluation: random augmenters pass through */
} tp_augment_batch;

typedef struct tp_augment_ops {
    size_t size; /* sizeof(tp_augment_ops) */

    tp_augment_place (*place)(void *self);

    /* The output size for an input size (0 = varies per sample). Sample augmenters that
     * resize report their fixed output here; batch augmenters keep the size. */
    tp_status (*output_size)(void *self, int in_height, int in_width, int in_channels,
                             int *out_height, int *out_width, int *out_channels);

    /* TP_AUGMENT_SAMPLE: transform `in` into `out` (distinct images; grow out with
     * tp_image_reserve). Called concurrently from worker threads. */
    tp_status (*apply_sample)(void *self, const tp_image *in, tp_image *out, tp_rng *rng,
                              int training);

    /* TP_AUGMENT_BATCH: transform the batch in place. */
    tp_status (*apply_batch)(void *self, const tp_augment_batch *batch);

    void *reserved[8];
} tp_augment_ops;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_AUGMENT_H */
