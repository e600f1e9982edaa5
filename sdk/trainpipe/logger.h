/* trainpipe SDK: loggers (TP_KIND_LOGGER).
 *
 * Any number of loggers may be active; each receives every event. A logger that fails says
 * why through host->fail() and returns non-zero: the host reports it once and detaches that
 * logger, unless the INI marks it `required = true`, in which case the run stops. */
#ifndef TRAINPIPE_LOGGER_H
#define TRAINPIPE_LOGGER_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Standard scalar tags. Training and validation use the same tags (phase tells them
 * apart), so TensorBoard draws them on one chart from sibling run directories. */
#define TP_TAG_LOSS "loss"
#define TP_TAG_ERROR_TOP1 "error_top1"
#define TP_TAG_ERROR_TOP5 "error_top5"
#define TP_TAG_LEARNING_RATE "learning_rate"
#define TP_TAG_IMAGES_PER_SEC "images_per_sec"
#define TP_TAG_DATA_WAIT "data_wait_fraction"

typedef enum tp_phase {
    TP_PHASE_TRAIN = 0,
    TP_PHASE_VAL = 1
} tp_phase;

/* Facts about the run, given to begin(). */
typedef struct tp_run_info {
    size_t size;
    const char *run_dir;      /* the run's output directory (exists) */
    int64_t start_step;       /* 0 for a fresh run, the step resumed from otherwise */
    int resumed;              /* non-zero when continuing from a checkpoint */
    int64_t total_steps;
    int64_t steps_per_epoch;
    int rank, world_size;
    uint64_t seed;
    const char *config_text;  /* the resolved configuration, INI syntax */
} tp_run_info;

typedef struct tp_scalar {
    const char *tag;
    double value;
} tp_scalar;

/* A set of scalars at one step: one per logging interval (train) or evaluation (val). */
typedef struct tp_log_event {
    size_t size;
    tp_phase phase;
    int64_t step;
    double epoch;     /* fractional epoch */
    double wall_time; /* seconds since the Unix epoch */
    const tp_scalar *scalars;
    size_t n_scalars;
} tp_log_event;

/* Progress on every step, for live displays (cheap: no device synchronisation). */
typedef struct tp_progress {
    size_t size;
    int64_t step, total_steps;
    int64_t epoch, total_epochs;
    double seconds_elapsed;
    double images_per_sec;
    double loss;        /* latest known training loss, NaN if none yet */
    double error_top1;  /* latest known training error, NaN if none yet */
    /* API 1.1: appended; read it only when size covers it. */
    double learning_rate; /* of the step just taken */
} tp_progress;

typedef enum tp_log_content {
    TP_LOG_HISTOGRAMS = 1,
    TP_LOG_IMAGES = 2
} tp_log_content;

typedef struct tp_logger_ops {
    size_t size; /* sizeof(tp_logger_ops) */

    tp_status (*begin)(void *self, const tp_run_info *run);
    tp_status (*scalars)(void *self, const tp_log_event *event);

    /* Optional. Whether the logger wants that content at this step (the host only gathers
     * parameters or images to the host when some logger says yes). */
    int (*wants)(void *self, tp_log_content what, int64_t step);
    tp_status (*histogram)(void *self, tp_phase phase, int64_t step, const char *tag,
                           const float *values, size_t count);
    /* images: count images of height x width x channels uint8, one after another. */
    tp_status (*images)(void *self, tp_phase phase, int64_t step, const char *tag,
                        const uint8_t *pixels, int count, int height, int width, int channels);
    tp_status (*progress)(void *self, const tp_progress *p);

    /* Flush buffered output to stable storage (called at evaluations, on a timer, on
     * SIGINT/SIGTERM and before end). */
    tp_status (*flush)(void *self);
    /* The run is over; run_status is TP_OK, TP_ERR_INTERRUPTED or the failure. */
    tp_status (*end)(void *self, tp_status run_status);

    void *reserved[8];
} tp_logger_ops;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_LOGGER_H */
