/* The data loader: worker threads read samples from a source, run the host-side (sample)
 * augmenters, collate batches into the prefetch ring; one device thread uploads each batch,
 * converts it to f32 and runs the batch augmenters; the trainer takes READY batches.
 *
 * Order and determinism. Epoch e visits the source's samples in the order of
 * tp_rng_permutation(tp_rng_make(seed, e, DATALOADER_PERMUTATION_INDEX)) (or 0..count-1
 * without shuffling); rank r of world_size takes positions r, r + world_size, ... of it.
 * Workers claim positions in order and read them concurrently, but commit them to batches
 * strictly in position order (a ticket per position), so batch contents and order depend
 * only on the seed, never on the number of workers or on timing. Sample augmenters get
 * tp_rng_make(seed, epoch, index); batch augmenters get the sample keys (seed, epoch,
 * index). Batches never span epochs; the last partial batch of an epoch is kept or dropped
 * per drop_last. A sample the source reports as TP_ERR_FORMAT is counted, logged and
 * skipped (its batch takes the next position instead) until more than max_bad_records
 * were seen; then that error ends the stream.
 *
 * Errors from any thread end the stream at the batch where they happened: earlier batches
 * are still delivered, then dataloader_next returns the error with its message. Nothing
 * blocks forever: dataloader_destroy stops and joins every thread at any point. */
#ifndef TRAINPIPE_HOST_DATALOADER_H
#define TRAINPIPE_HOST_DATALOADER_H

#include <stdint.h>

#include <trainpipe/trainpipe.h>

/* The rng index of the epoch permutation: no sample index reaches it. */
#define DATALOADER_PERMUTATION_INDEX UINT64_MAX

/* One augmenter instance of the chain (its component's ops and the instance). */
typedef struct dataloader_augmenter {
    const tp_augment_ops *ops;
    void *self;
    const char *name; /* for messages */
} dataloader_augmenter;

typedef struct dataloader_config {
    /* The source, already opened; `info` is what its open() reported. */
    const tp_source_ops *source;
    void *source_self;
    tp_source_info info;

    /* Sample augmenters first, then batch augmenters (checked). */
    const dataloader_augmenter *augmenters;
    size_t n_augmenters;

    const tp_backend *backend;
    tp_layout layout;          /* layout of the f32 device batch (the backend's preferred) */

    int batch_size;            /* >= 1 */
    int workers;               /* worker threads, >= 1 */
    int prefetch;              /* ring slots, >= 1 (2 or more to overlap) */
    uint64_t seed;
    int shuffle;               /* 0: every epoch visits 0..count-1 in order */
    int drop_last;             /* drop an epoch's last partial batch */
    int training;              /* passed to augmenters (0: random ones pass through) */
    double input_scale;        /* f32 = input_scale * u8 */
    int rank, world_size;      /* data-parallel shard */
    int64_t max_bad_records;   /* TP_ERR_FORMAT samples tolerated in total */
    int64_t first_epoch;       /* epoch number of the first batch (resuming) */
    int64_t first_position;    /* positions of first_epoch already consumed (resuming
                                * mid-epoch: a batch's position_end), 0..shard size */
    int64_t epochs;            /* epochs to produce, then TP_ERR_END; 0: without end */
    const char *name;          /* "train", "val": prefixes messages */
} dataloader_config;

/* A batch handed to the consumer. Tensors are views into a ring slot, valid until
 * dataloader_release. */
typedef struct dataloader_batch {
    tp_tensor images;            /* f32 (count, C, H, W), device memory, config layout */
    tp_tensor labels;            /* i32 (count), device memory */
    const tp_sample_key *keys;   /* count keys, host memory */
    int64_t count;
    int64_t epoch;
    int64_t position_end;        /* the epoch position after this batch's last sample (the
                                  * shard size when the batch ends the epoch): resuming with
                                  * first_position = position_end continues after it */
    int64_t sequence;            /* 0, 1, 2, ... over the loader's life */
    double wait_seconds;         /* how long dataloader_next blocked for this batch */
    double wait_for_samples_seconds; /* the part of wait_seconds before the batch's last
                                  * sample was committed (the workers were behind); the
                                  * rest waited for the device stage (upload, conversion,
                                  * batch augmenters) */
    tp_event *ready;             /* recorded on the compute stream after the batch
                                  * augmenters (NULL without events): event_sync it before
                                  * reading the images on the host */
    void *slot;                  /* internal */
} dataloader_batch;

typedef struct dataloader dataloader;

/* Defaults: batch 128, 4 workers, prefetch 3, shuffle, keep the last batch, training,
 * input_scale 1/255, rank 0 of 1, no bad records, epochs 0 (without end), NCHW. */
void dataloader_config_defaults(dataloader_config *c);

/* Validates the configuration, allocates the ring, starts the threads (each worker runs the
 * source's worker_init on its own thread; a failure there fails create). */
tp_status dataloader_create(const dataloader_config *c, dataloader **out);

/* The next batch in order. Returns TP_ERR_END after the last epoch, or the error that ended
 * the stream (its message through services_last_error). One consumer thread; hold at most
 * prefetch - 1 batches at a time, or the producer cannot proceed. */
tp_status dataloader_next(dataloader *dl, dataloader_batch *batch);

/* Gives the batch's slot back to the ring (after the work enqueued on it). */
tp_status dataloader_release(dataloader *dl, dataloader_batch *batch);

/* Stops and joins every thread (also mid-epoch, also with batches held), frees everything. */
void dataloader_destroy(dataloader *dl);

/* What the device thread has done so far: batches through the device stage and the time
 * it spent on them (enqueueing the upload, conversion and batch augmenters, waiting for a
 * backend another thread holds included). */
typedef struct dataloader_stats {
    int64_t device_batches;
    double device_seconds;
} dataloader_stats;
void dataloader_get_stats(dataloader *dl, dataloader_stats *out);

/* Samples per epoch of this rank's shard, and bad records skipped so far. */
int64_t dataloader_shard_size(const dataloader *dl);
int64_t dataloader_bad_records(dataloader *dl);

#endif
