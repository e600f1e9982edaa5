/* trainpipe SDK: optimizers (TP_KIND_OPTIMIZER) and learning-rate schedules
 * (TP_KIND_SCHEDULE).
 *
 * The host hands an optimizer the model's parameters with their gradients once (setup),
 * then calls step() after every backward pass with the learning rate the schedule gives
 * for that step: lr = base_lr (the optimizer's) x factor (the schedule's). */
#ifndef TRAINPIPE_OPTIMIZER_H
#define TRAINPIPE_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/backend.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_param_role {
    TP_ROLE_WEIGHT = 0,   /* convolution and linear weights */
    TP_ROLE_BIAS = 1,
    TP_ROLE_BN_GAMMA = 2,
    TP_ROLE_BN_BETA = 3
} tp_param_role;

/* One trainable parameter as the optimizer sees it (device tensors owned by the host). */
typedef struct tp_param_ref {
    const char *name;
    tp_param_role role;
    tp_tensor *value;
    tp_tensor *grad;
} tp_param_ref;

/* One tensor of optimizer state, for checkpoints ("velocity/layer1.0.conv1.weight"). */
typedef struct tp_state_ref {
    const char *name;
    tp_tensor *value;
} tp_state_ref;

typedef struct tp_optimizer_ops {
    size_t size; /* sizeof(tp_optimizer_ops) */

    /* The learning rate before scheduling. */
    double (*base_lr)(void *self);

    /* Receives the parameters (valid until destroy) and allocates state on the backend,
     * zero-initialised. */
    tp_status (*setup)(void *self, const tp_backend *backend, const tp_param_ref *params,
                       size_t n_params);

    /* Applies one update with learning rate lr; `step` counts from 1. */
    tp_status (*step)(void *self, double lr, int64_t step);

    /* Optimizer state for checkpoints: how many tensors, and each by position. */
    size_t (*state_count)(void *self);
    tp_status (*state_get)(void *self, size_t i, tp_state_ref *out);

    /* API 1.6, optional (both or neither): the update as step() makes it, but with the
     * numbers that change from step to step read from device memory, so a recording of
     * the training step (backend API 1.4) can include it. device_scalars() writes those
     * numbers for learning rate lr and step `step` (from 1) into out (room for
     * TP_OPTIM_MAX_SCALARS floats) and returns how many, or 0 when this configuration or
     * backend has no such update (the host then calls step()). The host copies them into
     * the f32 device tensor `scalars`; step_device() enqueues the update reading them,
     * which leaves every parameter and state tensor unchanged unless `gate` (an f32 device
     * scalar: the host passes the step's loss) is finite. */
    int (*device_scalars)(void *self, double lr, int64_t step, float *out);
    tp_status (*step_device)(void *self, const tp_tensor *scalars, const tp_tensor *gate);

    void *reserved[6];
} tp_optimizer_ops;

#define TP_OPTIM_MAX_SCALARS 8

/* Where training stands, for a schedule. */
typedef struct tp_schedule_pos {
    size_t size;
    int64_t step;            /* 0-based step about to be taken */
    int64_t total_steps;     /* planned length of the run */
    int64_t steps_per_epoch;
} tp_schedule_pos;

typedef struct tp_schedule_ops {
    size_t size; /* sizeof(tp_schedule_ops) */
    /* Multiplier applied to the optimizer's base learning rate at this position. */
    double (*factor)(void *self, const tp_schedule_pos *pos);
    void *reserved[4];
} tp_schedule_ops;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_OPTIMIZER_H */
