/* Step capture: the training step's forward, loss and backward recorded once through the
 * backend's API 1.4 recordings (a CUDA graph on backend-cuda) and replayed every step
 * after, so the host enqueues one graph instead of hundreds of kernels.
 *
 * A recording keeps the data pointers and scalar arguments it was made with. So the step
 * always reads its batch from two input buffers owned here (new batches are copied into
 * them first), the caller invalidates the recording whenever the graph's buffers are
 * reallocated (binding another batch size), and a recording is made per `variant`, a
 * scalar argument the step depends on (the loss scale).
 *
 * The first run at a batch size goes op by op on the input buffers: it lets the backend
 * choose its algorithms and grow its workspaces, which a recording must not do. The next
 * run records and replays. A recording that fails (an operation the backend cannot record)
 * is reported once as a warning, and every later step runs op by op: slower, same
 * results. */
#ifndef TRAINPIPE_HOST_STEP_CAPTURE_H
#define TRAINPIPE_HOST_STEP_CAPTURE_H

#include <stdint.h>

#include <trainpipe/trainpipe.h>

typedef struct step_capture step_capture;

/* The work to record: enqueue the step for these inputs; no host waits inside. */
typedef tp_status (*step_capture_fn)(void *ctx, const tp_tensor *images,
                                     const tp_tensor *labels);

typedef struct step_capture_stats {
    int64_t recordings;   /* recordings made */
    int64_t replays;      /* steps run from a recording */
    int64_t unrecorded;   /* steps run op by op by step_capture_run */
    int disabled;         /* a recording failed: op by op from then on */
} step_capture_stats;

/* 1 when the backend offers API 1.4 recordings (all four operations). */
int step_capture_supported(const tp_backend *backend);

/* Fails (with a message) when the backend offers no recordings. */
tp_status step_capture_create(const tp_backend *backend, step_capture **out);

/* Runs fn for images/labels (device tensors of the batch) through a recording as described
 * above. Errors of the step itself are returned as they would be without recording. */
tp_status step_capture_run(step_capture *sc, const tp_tensor *images, const tp_tensor *labels,
                           double variant, step_capture_fn fn, void *ctx);

/* Forgets the recording: the buffers it used were reallocated. The next run at any batch
 * size starts with an unrecorded run again. */
void step_capture_invalidate(step_capture *sc);

void step_capture_get_stats(const step_capture *sc, step_capture_stats *out);

/* Frees the recording and the input buffers (NULL is ignored). */
void step_capture_free(step_capture *sc);

#endif
