/* Live instances of a pipeline's components, and the input shape the model sees. */
#ifndef TRAINPIPE_HOST_STAGE_H
#define TRAINPIPE_HOST_STAGE_H

#include <trainpipe/trainpipe.h>

#include "dataloader.h"
#include "pipeline.h"

/* Creates the component of `stage` from its validated config; *self is the instance. */
tp_status stage_create(const pipeline_stage *stage, void **self);
void stage_destroy(const pipeline_stage *stage, void *self);

/* Creates the first backend that starts: the explicit one, or for `plugin = auto` CUDA,
 * then the CPU (a GPU-less machine makes CUDA's create() fail cleanly). *which is the index
 * into p->backends of the one created. */
tp_status stage_create_backend(const pipeline *p, size_t *which, tp_backend *backend);

/* Opens the training source and follows the sample augmenters' output sizes to find the
 * per-sample shape the model receives (and the number of classes). */
tp_status stage_model_input(const pipeline *p, tp_model_input *input);

/* A source instance, opened, with its own instances of the pipeline's augmenter chain (a
 * training and a validation loader each need their own: both may run at once). */
typedef struct stage_data {
    const pipeline_stage *stage; /* NULL until opened */
    void *source;
    tp_source_info info;
    void **aug_selves;
    dataloader_augmenter *augs;
    size_t n_augs;
} stage_data;

/* Creates and opens `source` with `args`, then creates the augmenters. On failure what was
 * created stays in *d for stage_data_close. */
tp_status stage_data_open(const pipeline *p, const pipeline_stage *source,
                          const tp_source_open_args *args, stage_data *d);
/* Destroys the augmenters, then the source (before the backend they may hold memory on). */
void stage_data_close(const pipeline *p, stage_data *d);

/* A loader configuration for d from [pipeline]: batch_size, workers (0: one per core),
 * prefetch, seed, input_scale, max_bad_records; training selects shuffling, the random
 * augmentations and drop_last. Callers adjust epochs, positions and ranks. */
void stage_loader_config(const pipeline *p, const stage_data *d, const tp_backend *backend,
                         tp_layout layout, int training, dataloader_config *c);

#endif
