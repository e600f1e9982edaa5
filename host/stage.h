/* Live instances of a pipeline's components, and the input shape the model sees. */
#ifndef TRAINPIPE_HOST_STAGE_H
#define TRAINPIPE_HOST_STAGE_H

#include <trainpipe/trainpipe.h>

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

#endif
