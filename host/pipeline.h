/* A pipeline: an INI document resolved against the plugin registry. Every section is
 * matched to its component and every value converted and checked, so a pipeline that
 * resolves is one the trainer can run without meeting a configuration error. */
#ifndef TRAINPIPE_HOST_PIPELINE_H
#define TRAINPIPE_HOST_PIPELINE_H

#include <stdint.h>
#include <stdio.h>

#include "inifile.h"
#include "params.h"
#include "registry.h"

/* [pipeline]: the host's own settings. */
typedef struct pipeline_settings {
    const char *plugin_path;
    const char *run_dir;
    int64_t seed;
    int64_t batch_size;
    int64_t epochs;
    int64_t steps;
    int64_t workers;
    int64_t prefetch;
    int drop_last;
    int64_t eval_every_epochs;
    int64_t eval_every_steps;
    int64_t log_every_steps;
    int deterministic;
    double label_smoothing;
    double input_scale;
    int64_t max_bad_records;
    int layout; /* 0 auto, 1 nchw, 2 nhwc */
    int64_t gpus;
    int loss_scaling;               /* 0 auto, 1 dynamic, 2 off */
    double loss_scale_init;
    int64_t loss_scale_interval;    /* finite steps before the scale doubles */
    int lr_scaling;                 /* 0 none, 1 linear in the number of ranks */
    double comm_timeout;            /* seconds a collective may take */
    int sync_batchnorm;             /* batch-norm statistics over all ranks */
    int fuse_layers;                /* ReLUs folded into batch norms and additions */
    int overlap_allreduce;          /* gradient buckets reduced during backward */
    int capture_step;               /* CAPTURE_STEP_*: record the step once, replay it */
    int overlap_steps;              /* queue step n+1 before reading step n's loss */
} pipeline_settings;

/* [pipeline] capture_step, in the order of its choices. */
enum {
    CAPTURE_STEP_AUTO = 0, /* where the backend can record (API 1.4); quiet elsewhere */
    CAPTURE_STEP_ON = 1,   /* the same, and say why when it cannot be done */
    CAPTURE_STEP_OFF = 2
};

/* [checkpoint] */
typedef struct checkpoint_settings {
    const char *dir;
    int64_t every_steps;
    int64_t every_epochs;
    int64_t keep_last;
    int keep_best;
} checkpoint_settings;

/* One component of the pipeline: the section that configures it and its validated config. */
typedef struct pipeline_stage {
    const char *section;          /* INI section name (owned by the document) */
    const registry_entry *entry;  /* the component */
    param_config config;
    int required;                 /* loggers: a failure stops the run */
    int implicit;                 /* added by default, not written in the file */
    const char *init_file;        /* [model] init = FILE: safetensors weights to start from */
} pipeline_stage;

typedef struct pipeline {
    ini_document doc;
    char *search_path;
    registry *registry;
    param_config settings_config;
    const pipeline_settings *settings;
    param_config checkpoint_config;
    const checkpoint_settings *checkpoint;

    int backend_auto;             /* [backend] plugin = auto */
    pipeline_stage *backends;     /* the explicit backend, or every candidate for auto */
    size_t n_backends;
    pipeline_stage source_train;  /* entry NULL when absent */
    pipeline_stage source_val;
    pipeline_stage *augments;     /* in file order */
    size_t n_augments;
    pipeline_stage model;
    pipeline_stage optimizer;
    pipeline_stage schedule;
    pipeline_stage *loggers;
    size_t n_loggers;
} pipeline;

/* Loads path, applies the --set overrides, loads plugins, and resolves everything.
 * On failure the message (FILE:LINE: ...) is in services_last_error() and the return is
 * TP_ERR_INVALID or TP_ERR_NOT_FOUND for configuration errors, others for I/O. */
tp_status pipeline_load(const char *path, const char *const *overrides, size_t n_overrides,
                        pipeline *p);
void pipeline_free(pipeline *p);

/* The slot of a stage's parameter `name` of `type` in its validated config, or NULL when its
 * component has no such parameter (used to adjust backend settings the host derives). */
void *pipeline_stage_param(const pipeline_stage *stage, const char *name, tp_param_type type);

/* Writes the resolved configuration in INI syntax, defaults filled in and marked. */
void pipeline_print(const pipeline *p, FILE *out);

/* The host's settings tables (for `trainpipe plugins pipeline`/`checkpoint` help). */
const tp_component *pipeline_settings_component(void);
const tp_component *pipeline_checkpoint_component(void);

#endif
