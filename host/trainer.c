/* The training loop, evaluation and export (see trainer.h). */
#include "config.h"

#include "trainer.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "comm.h"
#include "comm_launch.h"
#include "dataloader.h"
#include "graph.h"
#include "pipeline.h"
#include "safetensors.h"
#include "services.h"
#include "stage.h"
#include "step_capture.h"

#define CHECKPOINT_FORMAT "trainpipe-checkpoint-1"
#define BEST_CHECKPOINT "best.ckpt"
#define TRAINER_PATH_MAX 4096

/* Values per read-back, and the read-back slots: two for training steps (a step's slot is
 * its number's parity, so an overlapped step never lands on the one in flight before it),
 * one for read_scalars. */
#define READBACK_MAX 4
#define READBACK_SLOTS 3
#define READBACK_NOW 2

typedef struct logger_slot {
    const pipeline_stage *stage;
    const tp_logger_ops *ops;
    void *self;
    int begun;
    int detached; /* failed once and is not required: no more calls */
} logger_slot;

/* Where training stands; all of it goes into checkpoints. */
typedef struct position {
    int64_t step;             /* steps taken */
    int64_t epoch;            /* epoch of the last batch trained (-1: none yet) */
    int64_t epoch_position;   /* that batch's position_end */
    int64_t epochs_closed;    /* epochs whose end-of-epoch work (eval, checkpoint) is done */
    int64_t batches_in_epoch; /* batches trained in `epoch` */
    double best_val_error;    /* NaN: no evaluation yet */
    int64_t best_step;
} position;

typedef struct trainer {
    pipeline p;
    int have_pipeline;
    const pipeline_settings *s;
    tp_backend backend;
    size_t backend_index;
    int have_backend;
    tp_backend_info binfo;
    char backend_device[256];
    tp_layout layout;

    /* Separate instances: the training loader keeps prefetching while evaluation runs. */
    stage_data train, val;
    tp_model_input input;
    void *model;
    graph *g;
    int bound_batch;
    void *optim;
    const tp_optimizer_ops *optim_ops;
    void *sched;
    const tp_schedule_ops *sched_ops;
    logger_slot *loggers;
    size_t n_loggers;
    dataloader *loader;

    /* Device scalars and the loss gradient (sized for bound_batch). */
    tp_tensor loss, correct, correct5, dlogits; /* correct5: top-5, evaluation only */
    int have_scalars;

    /* Dynamic loss scaling (fp16): the loss gradient is multiplied by loss_scale, the
     * gradients are checked for overflow (grad_check) and divided back before the update;
     * an overflow skips the update and halves the scale. */
    int scaling;
    double loss_scale;
    int64_t scale_good_steps;
    /* The gradient check (queue_gradient_check): grad_check is finite exactly when every
     * gradient is. Loss scaling needs it; without scaling it runs wherever the backend has
     * API 1.8's check_finite_group (check_gradients), so a non-finite gradient stops the
     * run even when the loss is finite. grad_list: the gradients, for that call;
     * grad_check_part: the sum-of-squares form's partial sums, without it. */
    int check_gradients;
    tp_tensor grad_check, grad_check_part;
    const tp_tensor **grad_list;

    position pos;
    int64_t shard, steps_per_epoch, total_steps, total_epochs;
    char run_dir[TRAINER_PATH_MAX];
    char ckpt_dir[TRAINER_PATH_MAX];
    char *config_text;
    int in_loop;      /* errors from here on are runtime failures, not configuration ones */

    /* Data parallelism (distributed.md): this process is rank `rank` of `world`; only rank
     * 0 logs and writes checkpoints. */
    comm *comm;
    int rank, world;
    double epoch_images; /* images trained in this epoch by all ranks together */
    int launch;       /* [pipeline] gpus > 1 outside a launched job: start the ranks instead */
    int stop_requested;
    /* The gradients' reduction (comm.h) and where each parameter sits in its list. */
    comm_reducer *reducer;
    size_t *ready_position;
    double reducer_wait_logged; /* wait_seconds at the last epoch line */
    /* This run's waits for training batches: in all, and the part of it before the batch
     * was filled (the rest waited for the loader's device stage). */
    double data_wait, data_wait_for_samples;
    /* Host time between reading one step's loss and queuing the next step, data wait,
     * evaluations and checkpoints left out: a GPU has nothing queued then. */
    double between_steps;
    int64_t between_count;

    /* [pipeline] capture_step: full batches run as one recording (step_capture.h); NULL
     * when off or impossible. */
    step_capture *capture;
    /* The optimizer's update is queued with the step, and so recorded with it under step
     * capture (optimizer and backend API 1.6): its per-step numbers (the learning rate,
     * ...) are copied from opt_scalars_host (pinned) into opt_scalars (device) before each
     * step, and the update is gated on the device (enqueue_step_and_update). */
    int device_update;
    tp_tensor opt_scalars, opt_scalars_host;
    /* Without loss scaling, the queued update's gate (setup_gate): this step's loss, plus
     * the gradient check where there is one, plus with overlap a tiny multiple of the
     * previous step's gate (prev_gate). [pipeline] overlap_steps, where it applies (setup_overlap): step
     * n+1 is queued before step n's loss is read; through prev_gate a step queued behind a
     * non-finite loss or gradient skips its update too and the run stops with the weights
     * from before it. */
    int overlap;
    tp_tensor gate, prev_gate;
    int64_t overlapped_steps;
    /* Scalar read-backs: page-locked landing places and the events the host waits on, one
     * per slot (READBACK_SLOTS). */
    tp_tensor readback;
    tp_event *readback_ready[READBACK_SLOTS];
} trainer;

static int saved_argc;
static char **saved_argv;

void trainer_set_command_line(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
}


static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const tp_host *host(void) { return services_host(); }

#define LOG_INFO(...) host()->log(host(), TP_LOG_INFO, "train", __VA_ARGS__)
#define LOG_WARN(...) host()->log(host(), TP_LOG_WARN, "train", __VA_ARGS__)

/* mkdir -p */
static tp_status make_dirs(const char *path)
{
    char buf[TRAINER_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return services_fail(TP_ERR_INVALID, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST)
            return services_fail(TP_ERR_IO, "%s: cannot create directory: %s", buf,
                                 strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return services_fail(TP_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return TP_OK;
}

/* ------------------------------------------------------------------ setup and teardown */

static tp_status make_loader(trainer *t, stage_data *d, int training, int64_t first_epoch,
                             int64_t first_position, int64_t epochs, dataloader **out)
{
    dataloader_config c;
    stage_loader_config(&t->p, d, &t->backend, t->layout, training, &c);
    c.rank = t->rank;
    c.world_size = t->world;
    c.first_epoch = first_epoch;
    c.first_position = first_position;
    c.epochs = epochs;
    return dataloader_create(&c, out);
}

static void free_scalars(trainer *t)
{
    if (!t->have_scalars)
        return;
    t->backend.ops->free(t->backend.self, &t->loss);
    t->backend.ops->free(t->backend.self, &t->correct);
    t->backend.ops->free(t->backend.self, &t->correct5);
    t->backend.ops->free(t->backend.self, &t->dlogits);
    t->have_scalars = 0;
}

static tp_status read_scalars(trainer *t, const tp_tensor *const *dev, float *out, int n);

/* Loss scaling (when on) and the gradient check (where the backend has
 * check_finite_group, or when loss scaling needs it). */
static tp_status setup_loss_scaling(trainer *t)
{
    const tp_backend_ops *ops = t->backend.ops;
    void *be = t->backend.self;
    int backend_asks = t->binfo.size >= offsetof(tp_backend_info, wants_loss_scaling) +
                                            sizeof(int) && t->binfo.wants_loss_scaling;
    t->scaling = t->s->loss_scaling == 1 || (t->s->loss_scaling == 0 && backend_asks);
    t->loss_scale = t->s->loss_scale_init;
    t->check_gradients = TP_BACKEND_HAS(ops, check_finite_group);
    if (!t->scaling && !t->check_gradients)
        return TP_OK;
    size_t n;
    graph_params(t->g, &n);
    t->grad_list = calloc(n ? n : 1, sizeof *t->grad_list);
    if (!t->grad_list)
        return services_fail(TP_ERR_NOMEM, "out of memory for the gradient check");
    t->grad_check = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    t->grad_check_part = t->grad_check;
    tp_status st = ops->alloc(be, &t->grad_check, "gradient check");
    if (!st && !t->check_gradients &&
        (st = ops->alloc(be, &t->grad_check_part, "gradient check"))) {
        ops->free(be, &t->grad_check);
        t->grad_check.data = NULL;
    }
    if (!st && t->scaling)
        LOG_INFO("dynamic loss scaling from %g, doubling after %lld finite steps",
                 t->loss_scale, (long long)t->s->loss_scale_interval);
    return st;
}

/* Queues grad_check = a value that is finite exactly when every gradient is: API 1.8's
 * check_finite_group (0 or NaN, one pass over the gradients) where the backend has it,
 * else the sum of squares of every gradient (one reduction and one addition a tensor,
 * which also counts a sum beyond float range as an overflow). */
static tp_status queue_gradient_check(trainer *t)
{
    const tp_backend_ops *ops = t->backend.ops;
    size_t n;
    const tp_param_ref *params = graph_params(t->g, &n);
    if (t->check_gradients) {
        for (size_t i = 0; i < n; i++)
            t->grad_list[i] = params[i].grad;
        return ops->check_finite_group(t->backend.self, t->grad_list, n, &t->grad_check);
    }
    tp_status st = ops->fill(t->backend.self, &t->grad_check, 0.0);
    for (size_t i = 0; i < n && !st; i++)
        if (!(st = ops->sum_squares(t->backend.self, params[i].grad, &t->grad_check_part)))
            st = ops->axpby(t->backend.self, 1.0, &t->grad_check_part, 1.0, &t->grad_check);
    return st;
}

/* Queues the division of every gradient by the loss scale (exact for its powers of two). */
static tp_status queue_unscale(trainer *t)
{
    size_t n;
    const tp_param_ref *params = graph_params(t->g, &n);
    tp_status st = TP_OK;
    for (size_t i = 0; i < n && !st; i++)
        st = t->backend.ops->scale(t->backend.self, 1.0 / t->loss_scale, params[i].grad);
    return st;
}

/* After backward with a scaled loss: are all gradients finite? If so they are divided by
 * the scale and *finite is set. */
static tp_status unscale_gradients(trainer *t, int *finite)
{
    float total = 0;
    const tp_tensor *dev[] = { &t->grad_check };
    tp_status st = queue_gradient_check(t);
    if (!st)
        st = read_scalars(t, dev, &total, 1);
    *finite = !st && isfinite(total);
    return st || !*finite ? st : queue_unscale(t);
}

/* Binds the graph (and dlogits) for batches of `batch`; a no-op when already so. The last
 * batch of an evaluation (or of an epoch without drop_last) is smaller: the graph is bound
 * to it and back, keeping parameters and optimizer state. */
static tp_status bind_batch(trainer *t, int batch)
{
    if (t->bound_batch == batch && t->have_scalars)
        return TP_OK;
    step_capture_invalidate(t->capture); /* its graph buffers and dlogits go away */
    tp_status st = graph_bind(t->g, &t->backend, batch, t->layout);
    if (st)
        return st;
    t->bound_batch = batch;
    const tp_backend_ops *ops = t->backend.ops;
    if (t->have_scalars) {
        ops->free(t->backend.self, &t->dlogits);
    } else {
        t->loss = t->correct = t->correct5 = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
        if ((st = ops->alloc(t->backend.self, &t->loss, "loss")))
            return st;
        if ((st = ops->alloc(t->backend.self, &t->correct, "correct count"))) {
            ops->free(t->backend.self, &t->loss);
            return st;
        }
        if ((st = ops->alloc(t->backend.self, &t->correct5, "top-5 correct count"))) {
            ops->free(t->backend.self, &t->loss);
            ops->free(t->backend.self, &t->correct);
            return st;
        }
    }
    t->dlogits = tp_tensor_2d(TP_DTYPE_F32, batch, t->input.num_classes);
    if ((st = ops->alloc(t->backend.self, &t->dlogits, "loss gradient"))) {
        ops->free(t->backend.self, &t->loss);
        ops->free(t->backend.self, &t->correct);
        ops->free(t->backend.self, &t->correct5);
        t->have_scalars = 0;
        return st;
    }
    t->have_scalars = 1;
    return TP_OK;
}

/* Queues the copy of n one-value device tensors into read-back slot `slot` and records its
 * event. The values land in page-locked memory and the host waits on an event: a copy into
 * ordinary memory would make the backend call itself wait for the GPU (cudaMemcpyAsync to
 * pageable memory is synchronous), holding the backend while it does, so the loader's
 * device thread could not queue the next batch until the whole step had run. */
static tp_status readback_queue(trainer *t, int slot, const tp_tensor *const *dev, int n)
{
    const tp_backend_ops *ops = t->backend.ops;
    void *be = t->backend.self;
    tp_status st;
    if (!t->readback.data) {
        t->readback = tp_tensor_2d(TP_DTYPE_F32, READBACK_SLOTS * READBACK_MAX, 0);
        t->readback.device = TP_DEVICE_PINNED;
        if ((st = ops->alloc(be, &t->readback, "scalar read-back")))
            return st;
        for (int i = 0; i < READBACK_SLOTS; i++)
            if ((st = ops->event_create(be, &t->readback_ready[i])))
                return st;
    }
    if (n > READBACK_MAX)
        return services_fail(TP_ERR_INVALID, "read_scalars: %d values, at most %d", n,
                             READBACK_MAX);
    float *landing = (float *)t->readback.data + slot * READBACK_MAX;
    for (int i = 0; i < n; i++) {
        tp_tensor h = *dev[i];
        h.device = TP_DEVICE_PINNED;
        h.data = landing + i;
        if ((st = ops->copy(be, &h, dev[i], TP_STREAM_COMPUTE)))
            return st;
    }
    return ops->event_record(be, t->readback_ready[slot], TP_STREAM_COMPUTE);
}

/* Waits for the read-back queued in `slot` and copies its n values to out. */
static tp_status readback_wait(trainer *t, int slot, float *out, int n)
{
    tp_status st = t->backend.ops->event_sync(t->backend.self, t->readback_ready[slot]);
    if (!st)
        memcpy(out, (float *)t->readback.data + slot * READBACK_MAX, (size_t)n * sizeof *out);
    return st;
}

/* Copies n one-value device tensors to out and waits for them. */
static tp_status read_scalars(trainer *t, const tp_tensor *const *dev, float *out, int n)
{
    tp_status st = readback_queue(t, READBACK_NOW, dev, n);
    return st ? st : readback_wait(t, READBACK_NOW, out, n);
}

static void trainer_release(trainer *t)
{
    dataloader_destroy(t->loader);
    t->loader = NULL;
    for (size_t i = 0; i < t->n_loggers; i++)
        stage_destroy(t->loggers[i].stage, t->loggers[i].self);
    free(t->loggers);
    if (t->optim)
        stage_destroy(&t->p.optimizer, t->optim);
    if (t->sched)
        stage_destroy(&t->p.schedule, t->sched);
    if (t->have_backend) {
        free_scalars(t);
        free(t->grad_list);
        if (t->grad_check.data)
            t->backend.ops->free(t->backend.self, &t->grad_check);
        if (t->grad_check_part.data)
            t->backend.ops->free(t->backend.self, &t->grad_check_part);
        if (t->opt_scalars.data)
            t->backend.ops->free(t->backend.self, &t->opt_scalars);
        if (t->opt_scalars_host.data)
            t->backend.ops->free(t->backend.self, &t->opt_scalars_host);
        if (t->gate.data)
            t->backend.ops->free(t->backend.self, &t->gate);
        if (t->prev_gate.data)
            t->backend.ops->free(t->backend.self, &t->prev_gate);
        if (t->readback.data)
            t->backend.ops->free(t->backend.self, &t->readback);
        for (int i = 0; i < READBACK_SLOTS; i++)
            if (t->readback_ready[i])
                t->backend.ops->event_destroy(t->backend.self, t->readback_ready[i]);
    }
    step_capture_free(t->capture); /* before the graph whose buffers it recorded */
    t->capture = NULL;
    comm_reducer_free(t->reducer); /* before the graph: it reduces the graph's gradients */
    t->reducer = NULL;
    free(t->ready_position);
    t->ready_position = NULL;
    graph_free(t->g);
    if (t->model)
        stage_destroy(&t->p.model, t->model);
    /* Augmenters and sources may hold backend memory: release them before the backend. */
    stage_data_close(&t->p, &t->train);
    stage_data_close(&t->p, &t->val);
    services_set_backend(NULL);
    if (t->have_backend)
        stage_destroy(&t->p.backends[t->backend_index], t->backend.self);
    free(t->config_text);
    if (t->have_pipeline)
        pipeline_free(&t->p);
    comm_free(t->comm);
    t->comm = NULL;
}

/* The resolved configuration as text, for the loggers and the checkpoints. */
static char *config_as_text(const pipeline *p)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    pipeline_print(p, f);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Several ranks on one machine each running OpenMP on every core slow each other down by
 * orders of magnitude: a backend `threads` left at 0 (all cores) becomes cores / ranks. */
static void share_cpu_threads(trainer *t)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t share = cores > t->world ? cores / t->world : 1;
    for (size_t i = 0; i < t->p.n_backends; i++) {
        int64_t *threads = pipeline_stage_param(&t->p.backends[i], "threads", TP_PARAM_INT);
        if (threads && *threads == 0) {
            *threads = share;
            LOG_INFO("rank %d of %d: [%s] threads = %lld", t->rank, t->world,
                     t->p.backends[i].section, (long long)share);
        }
    }
}

/* Synchronised batch norm's reduction: a sum over ranks on the job's communicator. */
static tp_status allreduce_for_batchnorm(void *ctx, double *values, size_t count)
{
    return comm_allreduce_host(ctx, values, count);
}

/* Loads the pipeline and builds everything a training or evaluation run needs; with
 * `for_training` also the optimizer, the schedule and the run directory. */
static tp_status trainer_setup(trainer *t, const trainer_args *a, int for_training)
{
    tp_status st = pipeline_load(a->config, a->sets, a->n_sets, &t->p);
    if (st)
        return st;
    t->have_pipeline = 1;
    t->s = t->p.settings;
    t->world = 1;
    if (for_training && comm_launch_wanted((int)t->s->gpus)) {
        t->launch = 1; /* the launched ranks do the work */
        return TP_OK;
    }
    if (for_training) {
        if ((st = comm_create(t->s->comm_timeout, &t->comm)))
            return st;
        t->rank = comm_rank(t->comm);
        t->world = comm_size(t->comm);
        if (t->rank != 0)
            services_limit_log_level(TP_LOG_WARN); /* rank 0 speaks for the job */
        if (t->world > 1)
            share_cpu_threads(t);
        if (t->world > 1 && !t->s->drop_last)
            return services_fail(TP_ERR_INVALID, "%s: data-parallel training (%d ranks) needs "
                                 "drop_last = true so every rank takes the same steps",
                                 t->p.doc.path, t->world);
    }
    if ((st = stage_model_input(&t->p, &t->input)))
        return st;
    if (!for_training && !t->p.source_val.entry)
        return services_fail(TP_ERR_INVALID, "%s: evaluation needs a [source.val] section",
                             t->p.doc.path);

    if ((st = stage_create_backend(&t->p, &t->backend_index, &t->backend)))
        return st;
    t->have_backend = 1;
    services_set_backend(&t->backend);
    t->binfo.size = sizeof t->binfo;
    if ((st = t->backend.ops->info(t->backend.self, &t->binfo)))
        return st;
    snprintf(t->backend_device, sizeof t->backend_device, "%s",
             t->binfo.device_name ? t->binfo.device_name : "?");
    t->layout = t->s->layout == 1   ? TP_LAYOUT_NCHW
                : t->s->layout == 2 ? TP_LAYOUT_NHWC
                                    : t->binfo.preferred_layout;

    if ((st = stage_create(&t->p.model, &t->model)))
        return st;
    t->g = graph_build(t->p.model.entry->component->ops, t->model, &t->input);
    if (!t->g)
        return TP_ERR_INVALID;
    if (t->world > 1 && t->s->sync_batchnorm)
        graph_set_batchnorm_sync(t->g, allreduce_for_batchnorm, t->comm, t->world);
    graph_set_fusion(t->g, t->s->fuse_layers);
    if ((st = bind_batch(t, (int)t->s->batch_size)))
        return st;
    LOG_INFO("%d ReLUs computed inside the batch norm or addition before them%s; "
             "activations stored as %s",
             graph_fused_count(t->g), t->s->fuse_layers ? "" : " (fuse_layers = false)",
             tp_dtype_name(graph_activation_dtype(t->g)));
    if ((st = graph_init_params(t->g, (uint64_t)t->s->seed)))
        return st;
    if (t->p.model.init_file) {
        if ((st = graph_load_safetensors(t->g, t->p.model.init_file)))
            return st;
        LOG_INFO("weights from %s", t->p.model.init_file);
    }

    tp_source_open_args open_args = { .size = sizeof open_args, .rank = t->rank,
                                      .world_size = t->world, .target_height = t->input.height,
                                      .target_width = t->input.width };
    if (for_training && (st = stage_data_open(&t->p, &t->p.source_train, &open_args, &t->train)))
        return st;
    if (t->p.source_val.entry &&
        (st = stage_data_open(&t->p, &t->p.source_val, &open_args, &t->val)))
        return st;
    if (!for_training)
        return TP_OK;

    if (t->train.info.num_classes != t->input.num_classes)
        return services_fail(TP_ERR_INVALID, "%s: the training source has %d classes but the "
                             "model was built for %d", t->p.doc.path,
                             t->train.info.num_classes, t->input.num_classes);
    if ((st = stage_create(&t->p.optimizer, &t->optim)))
        return st;
    t->optim_ops = t->p.optimizer.entry->component->ops;
    size_t n_params;
    const tp_param_ref *params = graph_params(t->g, &n_params);
    if ((st = t->optim_ops->setup(t->optim, &t->backend, params, n_params)))
        return st;
    if ((st = stage_create(&t->p.schedule, &t->sched)))
        return st;
    t->sched_ops = t->p.schedule.entry->component->ops;
    if ((st = setup_loss_scaling(t)))
        return st;

    /* The length of the run. */
    int64_t b = t->s->batch_size;
    /* This rank's share of an epoch; every rank takes as many steps as the smallest share
     * allows (the larger shares' surplus batch is skipped). */
    t->shard = (t->train.info.count - t->rank + t->world - 1) / t->world;
    const int64_t smallest = t->train.info.count / t->world;
    t->steps_per_epoch = t->s->drop_last ? smallest / b : (smallest + b - 1) / b;
    if (t->steps_per_epoch < 1)
        return services_fail(TP_ERR_INVALID, "%s: batch_size %lld is larger than the %lld "
                             "training samples and drop_last is set", t->p.doc.path,
                             (long long)b, (long long)t->shard);
    if (t->s->steps > 0) {
        t->total_steps = t->s->steps;
        t->total_epochs = (t->total_steps + t->steps_per_epoch - 1) / t->steps_per_epoch;
    } else {
        t->total_epochs = t->s->epochs;
        t->total_steps = t->s->epochs * t->steps_per_epoch;
    }

    /* The run directory and the checkpoint directory (relative to it). */
    if (snprintf(t->run_dir, sizeof t->run_dir, "%s", t->s->run_dir) >= (int)sizeof t->run_dir)
        return services_fail(TP_ERR_INVALID, "%s: run_dir is too long", t->p.doc.path);
    const char *cd = t->p.checkpoint->dir;
    if (cd[0] == '/')
        snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s", cd);
    else if (snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s/%s", t->run_dir, cd) >=
             (int)sizeof t->ckpt_dir)
        return services_fail(TP_ERR_INVALID, "%s: the checkpoint directory path is too long",
                             t->p.doc.path);
    if (t->rank == 0 && ((st = make_dirs(t->run_dir)) || (st = make_dirs(t->ckpt_dir))))
        return st;
    if (!(t->config_text = config_as_text(&t->p)))
        return services_fail(TP_ERR_NOMEM, "out of memory");

    t->n_loggers = t->rank == 0 ? t->p.n_loggers : 0;
    t->loggers = calloc(t->n_loggers + 1, sizeof *t->loggers);
    if (!t->loggers)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_loggers; i++) {
        t->loggers[i].stage = &t->p.loggers[i];
        t->loggers[i].ops = t->p.loggers[i].entry->component->ops;
        if ((st = stage_create(&t->p.loggers[i], &t->loggers[i].self)))
            return st;
    }
    t->pos = (position){ .epoch = -1, .best_val_error = NAN, .best_step = -1 };
    return TP_OK;
}

/* ------------------------------------------------------------------ loggers */

/* A logger call's outcome: a required logger's failure stops the run; any other logger is
 * reported once and detached. */
static tp_status logger_outcome(logger_slot *l, tp_status st, const char *what)
{
    if (!st)
        return TP_OK;
    if (l->stage->required)
        return services_fail(st, "[%s] (required) failed in %s: %s", l->stage->section, what,
                             services_last_error());
    LOG_WARN("[%s] failed in %s and is switched off for the rest of the run: %s",
             l->stage->section, what, services_last_error());
    l->detached = 1;
    return TP_OK;
}

static tp_status loggers_begin(trainer *t, int resumed)
{
    tp_run_info run = { .size = sizeof run, .run_dir = t->run_dir,
                        .start_step = t->pos.step, .resumed = resumed,
                        .total_steps = t->total_steps, .steps_per_epoch = t->steps_per_epoch,
                        .rank = 0, .world_size = 1, .seed = (uint64_t)t->s->seed,
                        .config_text = t->config_text };
    for (size_t i = 0; i < t->n_loggers; i++) {
        logger_slot *l = &t->loggers[i];
        tp_status st = l->ops->begin ? l->ops->begin(l->self, &run) : TP_OK;
        l->begun = st == TP_OK;
        if ((st = logger_outcome(l, st, "begin")))
            return st;
    }
    return TP_OK;
}

static tp_status loggers_scalars(trainer *t, const tp_log_event *ev)
{
    for (size_t i = 0; i < t->n_loggers; i++) {
        logger_slot *l = &t->loggers[i];
        if (l->detached || !l->ops->scalars)
            continue;
        tp_status st = logger_outcome(l, l->ops->scalars(l->self, ev), "scalars");
        if (st)
            return st;
    }
    return TP_OK;
}

static tp_status loggers_progress(trainer *t, const tp_progress *pr)
{
    for (size_t i = 0; i < t->n_loggers; i++) {
        logger_slot *l = &t->loggers[i];
        if (l->detached || !l->ops->progress)
            continue;
        tp_status st = logger_outcome(l, l->ops->progress(l->self, pr), "progress");
        if (st)
            return st;
    }
    return TP_OK;
}

static tp_status loggers_flush(trainer *t)
{
    for (size_t i = 0; i < t->n_loggers; i++) {
        logger_slot *l = &t->loggers[i];
        if (l->detached || !l->ops->flush)
            continue;
        tp_status st = logger_outcome(l, l->ops->flush(l->self), "flush");
        if (st)
            return st;
    }
    return TP_OK;
}

/* Histograms of parameters and gradients for the loggers that want them at this step. */
static tp_status loggers_histograms(trainer *t, int64_t step)
{
    size_t n_params;
    const tp_param_ref *params = NULL;
    float *buf = NULL;
    size_t cap = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < t->n_loggers && !st; i++) {
        logger_slot *l = &t->loggers[i];
        if (l->detached || !l->ops->wants || !l->ops->histogram ||
            !l->ops->wants(l->self, TP_LOG_HISTOGRAMS, step))
            continue;
        if (!params)
            params = graph_params(t->g, &n_params);
        for (size_t k = 0; k < n_params && !st && !l->detached; k++) {
            for (int which = 0; which < 2 && !st && !l->detached; which++) {
                const tp_tensor *src = which ? params[k].grad : params[k].value;
                size_t count = (size_t)tp_tensor_count(src);
                if (count > cap) {
                    float *nb = realloc(buf, count * sizeof *nb);
                    if (!nb) {
                        st = services_fail(TP_ERR_NOMEM, "out of memory for a histogram");
                        break;
                    }
                    buf = nb;
                    cap = count;
                }
                tp_tensor h = *src;
                h.device = TP_DEVICE_HOST;
                h.data = buf;
                if ((st = t->backend.ops->copy(t->backend.self, &h, src, TP_STREAM_COMPUTE)) ||
                    (st = t->backend.ops->sync(t->backend.self)))
                    break;
                char tag[512];
                snprintf(tag, sizeof tag, "%s/%s", which ? "gradients" : "parameters",
                         params[k].name);
                st = logger_outcome(l, l->ops->histogram(l->self, TP_PHASE_TRAIN, step, tag, buf,
                                                         count), "histogram");
            }
        }
    }
    free(buf);
    return st;
}

/* An augmented training batch as the network sees it, for loggers that want images at this
 * step: each image scaled to its own min..max as 8-bit HWC. */
static tp_status loggers_images(trainer *t, const dataloader_batch *b, int64_t step)
{
    float *buf = NULL;
    uint8_t *px = NULL;
    tp_status st = TP_OK;
    const int c = (int)b->images.shape[1], h = (int)b->images.shape[2],
              w = (int)b->images.shape[3];
    const size_t per = (size_t)c * h * w;
    for (size_t i = 0; i < t->n_loggers && !st; i++) {
        logger_slot *l = &t->loggers[i];
        if (l->detached || !l->ops->wants || !l->ops->images ||
            !l->ops->wants(l->self, TP_LOG_IMAGES, step))
            continue;
        if (!buf) {
            buf = malloc(per * (size_t)b->count * sizeof *buf);
            px = malloc(per * (size_t)b->count);
            if (!buf || !px) {
                st = services_fail(TP_ERR_NOMEM, "out of memory for an image summary");
                break;
            }
            tp_tensor hostt = b->images;
            hostt.device = TP_DEVICE_HOST;
            hostt.layout = TP_LAYOUT_NCHW;
            hostt.data = buf;
            if ((b->ready && (st = t->backend.ops->event_sync(t->backend.self, b->ready))) ||
                (st = t->backend.ops->copy(t->backend.self, &hostt, &b->images,
                                           TP_STREAM_COMPUTE)) ||
                (st = t->backend.ops->sync(t->backend.self)))
                break;
            for (int64_t n = 0; n < b->count; n++) {
                const float *img = buf + (size_t)n * per;
                float lo = img[0], hi = img[0];
                for (size_t k = 1; k < per; k++) {
                    lo = img[k] < lo ? img[k] : lo;
                    hi = img[k] > hi ? img[k] : hi;
                }
                float scale = hi > lo ? 255.0f / (hi - lo) : 0.0f;
                uint8_t *out = px + (size_t)n * per;
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                        for (int ch = 0; ch < c; ch++)
                            out[((size_t)y * w + x) * c + ch] =
                                (uint8_t)lrintf((img[((size_t)ch * h + y) * w + x] - lo) * scale);
            }
        }
        st = logger_outcome(l, l->ops->images(l->self, TP_PHASE_TRAIN, step, "input", px,
                                              (int)b->count, h, w, c), "images");
    }
    free(buf);
    free(px);
    return st;
}

static void loggers_end(trainer *t, tp_status run_status)
{
    for (size_t i = 0; i < t->n_loggers; i++) {
        logger_slot *l = &t->loggers[i];
        if (!l->begun || l->detached)
            continue;
        if (l->ops->flush && l->ops->flush(l->self))
            LOG_WARN("[%s] flush failed: %s", l->stage->section, services_last_error());
        if (l->ops->end && l->ops->end(l->self, run_status))
            LOG_WARN("[%s] failed to finish: %s", l->stage->section, services_last_error());
    }
}

/* ------------------------------------------------------------------ checkpoints */

typedef struct tensor_list {
    safetensors_input *in;
    float **bufs;
    char **names;
    size_t n, cap;
} tensor_list;

static void tensor_list_free(tensor_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->bufs[i]);
        free(l->names[i]);
    }
    free(l->in);
    free(l->bufs);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Appends a host copy of a tensor (takes ownership of buf). */
static tp_status tensor_list_add(tensor_list *l, const char *name, const tp_tensor *desc,
                                 float *buf)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        safetensors_input *in = realloc(l->in, cap * sizeof *in);
        if (in)
            l->in = in;
        float **bufs = in ? realloc(l->bufs, cap * sizeof *bufs) : NULL;
        if (bufs)
            l->bufs = bufs;
        char **names = bufs ? realloc(l->names, cap * sizeof *names) : NULL;
        if (!names) {
            free(buf);
            return services_fail(TP_ERR_NOMEM, "out of memory");
        }
        l->names = names;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        free(buf);
        return services_fail(TP_ERR_NOMEM, "out of memory");
    }
    l->bufs[l->n] = buf;
    l->names[l->n] = copy;
    l->in[l->n] = (safetensors_input){ copy, desc->ndim, desc->shape, buf, 0 };
    l->n++;
    return TP_OK;
}

static tp_status download(trainer *t, const tp_tensor *src, float **out)
{
    size_t count = (size_t)tp_tensor_count(src);
    float *buf = malloc((count ? count : 1) * sizeof *buf);
    if (!buf)
        return services_fail(TP_ERR_NOMEM, "out of memory copying a tensor to the host");
    tp_tensor h = *src;
    h.device = TP_DEVICE_HOST;
    h.layout = src->layout;
    h.data = buf;
    tp_status st = t->backend.ops->copy(t->backend.self, &h, src, TP_STREAM_COMPUTE);
    if (!st)
        st = t->backend.ops->sync(t->backend.self);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    return TP_OK;
}

/* Everything a resumed run needs, as a safetensors image. */
static tp_status serialize_state(trainer *t, uint8_t **bytes, size_t *size)
{
    tensor_list l = { 0 };
    tp_status st = TP_OK;
    for (size_t i = 0; i < graph_tensor_count(t->g) && !st; i++) {
        const tp_tensor *d = graph_tensor_desc(t->g, i);
        size_t count = (size_t)tp_tensor_count(d);
        float *buf = malloc((count ? count : 1) * sizeof *buf);
        if (!buf)
            st = services_fail(TP_ERR_NOMEM, "out of memory");
        else if ((st = graph_tensor_get(t->g, i, buf, count)))
            free(buf);
        else
            st = tensor_list_add(&l, graph_tensor_name(t->g, i), d, buf);
    }
    size_t n_state = t->optim_ops->state_count ? t->optim_ops->state_count(t->optim) : 0;
    for (size_t i = 0; i < n_state && !st; i++) {
        tp_state_ref ref;
        float *buf = NULL;
        char name[512];
        if ((st = t->optim_ops->state_get(t->optim, i, &ref)) || (st = download(t, ref.value, &buf)))
            break;
        snprintf(name, sizeof name, "%s%s", CHECKPOINT_OPTIMIZER_PREFIX, ref.name);
        st = tensor_list_add(&l, name, ref.value, buf);
    }
    char v[16][64];
    snprintf(v[0], 64, "%" PRId64, t->pos.step);
    snprintf(v[1], 64, "%" PRId64, t->pos.epoch);
    snprintf(v[2], 64, "%" PRId64, t->pos.epoch_position);
    snprintf(v[3], 64, "%" PRId64, t->pos.epochs_closed);
    snprintf(v[4], 64, "%" PRId64, t->pos.batches_in_epoch);
    snprintf(v[5], 64, "%.17g", t->pos.best_val_error);
    snprintf(v[6], 64, "%" PRId64, t->pos.best_step);
    snprintf(v[7], 64, "%" PRId64, t->s->seed);
    snprintf(v[8], 64, "%" PRId64, t->s->batch_size);
    snprintf(v[9], 64, "%" PRId64, t->total_steps);
    snprintf(v[10], 64, "%dx%dx%d", t->input.channels, t->input.height, t->input.width);
    snprintf(v[11], 64, "%d", t->input.num_classes);
    snprintf(v[12], 64, "%" PRId64, t->train.info.count);
    snprintf(v[13], 64, "%d", t->world);
    snprintf(v[14], 64, "%.17g", t->loss_scale);
    snprintf(v[15], 64, "%" PRId64, t->scale_good_steps);
    const char *meta[] = { "format", CHECKPOINT_FORMAT,
                           "trainpipe_version", PACKAGE_VERSION,
                           "step", v[0], "epoch", v[1], "epoch_position", v[2],
                           "epochs_closed", v[3], "batches_in_epoch", v[4],
                           "best_val_error", v[5], "best_step", v[6],
                           "seed", v[7], "batch_size", v[8], "total_steps", v[9],
                           "input", v[10], "num_classes", v[11], "train_samples", v[12],
                           "world_size", v[13],
                           "loss_scale", v[14], "loss_scale_good_steps", v[15],
                           "model", t->p.model.entry->component->name,
                           "config", t->config_text,
                           NULL };
    if (!st)
        st = safetensors_serialize(l.in, l.n, meta, "checkpoint", bytes, size);
    tensor_list_free(&l);
    return st;
}

/* Parses step-NNNNNNNN.ckpt; -1 for other names. */
static int64_t checkpoint_step_of(const char *name)
{
    int64_t step;
    int used = 0;
    if (sscanf(name, "step-%" SCNd64 ".ckpt%n", &step, &used) == 1 && name[used] == '\0' &&
        step >= 0)
        return step;
    return -1;
}

typedef struct found_checkpoint {
    int64_t step;
    char name[256];
} found_checkpoint;

static int by_step(const void *a, const void *b)
{
    int64_t x = ((const found_checkpoint *)a)->step, y = ((const found_checkpoint *)b)->step;
    return x < y ? -1 : x > y;
}

/* The step-*.ckpt files of a directory, oldest first. */
static tp_status list_checkpoints(const char *dir, found_checkpoint **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? TP_OK
                               : services_fail(TP_ERR_IO, "%s: cannot list: %s", dir,
                                               strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    tp_status st = TP_OK;
    while ((e = readdir(d))) {
        int64_t step = checkpoint_step_of(e->d_name);
        if (step < 0 || strlen(e->d_name) >= sizeof((*out)->name))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            found_checkpoint *g = realloc(*out, cap * sizeof *g);
            if (!g) {
                st = services_fail(TP_ERR_NOMEM, "out of memory");
                break;
            }
            *out = g;
        }
        (*out)[*n].step = step;
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, by_step);
    return st;
}

/* Deletes the oldest step checkpoints beyond keep_last. */
static void prune_checkpoints(trainer *t)
{
    found_checkpoint *all;
    size_t n;
    if (list_checkpoints(t->ckpt_dir, &all, &n))
        return;
    for (size_t i = 0; i + (size_t)t->p.checkpoint->keep_last < n; i++) {
        char path[TRAINER_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", t->ckpt_dir, all[i].name);
        if (unlink(path) && errno != ENOENT)
            LOG_WARN("cannot remove old checkpoint %s: %s", path, strerror(errno));
    }
    free(all);
}

/* Writes step-N.ckpt (and best.ckpt when `best`), then prunes. */
static tp_status save_checkpoint(trainer *t, int best, const char *why)
{
    if (t->rank != 0)
        return TP_OK;
    uint8_t *bytes;
    size_t size;
    tp_status st = serialize_state(t, &bytes, &size);
    if (st)
        return st;
    char path[TRAINER_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/step-%08" PRId64 ".ckpt", t->ckpt_dir, t->pos.step);
    st = checkpoint_write(path, bytes, size);
    if (!st)
        LOG_INFO("checkpoint %s (%s)", path, why);
    if (!st && best && t->p.checkpoint->keep_best) {
        char bpath[TRAINER_PATH_MAX + 64];
        snprintf(bpath, sizeof bpath, "%s/%s", t->ckpt_dir, BEST_CHECKPOINT);
        st = checkpoint_write(bpath, bytes, size);
    }
    free(bytes);
    if (!st)
        prune_checkpoints(t);
    return st;
}

static tp_status meta_int(const safetensors_file *f, const char *path, const char *key,
                          int64_t *out)
{
    const char *v = safetensors_metadata(f, key);
    char *end;
    if (!v)
        return services_fail(TP_ERR_FORMAT, "%s: the checkpoint has no '%s' entry", path, key);
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return services_fail(TP_ERR_FORMAT, "%s: checkpoint entry %s = '%s' is not an integer",
                             path, key, v);
    *out = x;
    return TP_OK;
}

/* Model tensors of a checkpoint into the graph (the checkpoint's shapes must match). */
static tp_status load_model_tensors(trainer *t, const safetensors_file *f, const char *path)
{
    const char *fmt = safetensors_metadata(f, "format");
    if (!fmt || strcmp(fmt, CHECKPOINT_FORMAT) != 0)
        return services_fail(TP_ERR_FORMAT, "%s: not a trainpipe training checkpoint (format "
                             "'%s')", path, fmt ? fmt : "missing");
    return graph_load_tensors(t->g, f, path, CHECKPOINT_OPTIMIZER_PREFIX);
}

/* Restores weights, optimizer state and the position from a checkpoint. */
static tp_status restore(trainer *t, const char *path)
{
    safetensors_file *f;
    tp_status st = checkpoint_read(path, &f);
    if (st)
        return st;
    if ((st = load_model_tensors(t, f, path)))
        goto done;
    size_t n_state = t->optim_ops->state_count ? t->optim_ops->state_count(t->optim) : 0;
    size_t in_file = 0;
    for (size_t i = 0; i < safetensors_count(f); i++)
        in_file += strncmp(safetensors_at(f, i)->name, CHECKPOINT_OPTIMIZER_PREFIX,
                           strlen(CHECKPOINT_OPTIMIZER_PREFIX)) == 0;
    if (in_file != n_state) {
        st = services_fail(TP_ERR_INVALID, "%s: the checkpoint holds %zu optimizer tensors, "
                           "[optimizer] %s has %zu (was it written with another optimizer?)",
                           path, in_file, t->p.optimizer.entry->component->name, n_state);
        goto done;
    }
    for (size_t i = 0; i < n_state && !st; i++) {
        tp_state_ref ref;
        char name[512];
        if ((st = t->optim_ops->state_get(t->optim, i, &ref)))
            break;
        snprintf(name, sizeof name, "%s%s", CHECKPOINT_OPTIMIZER_PREFIX, ref.name);
        const safetensors_entry *e = safetensors_find(f, name);
        if (!e || e->count != tp_tensor_count(ref.value)) {
            st = services_fail(TP_ERR_INVALID, "%s: optimizer tensor %s is %s", path, name,
                               e ? "of another size" : "missing");
            break;
        }
        float *buf = malloc((size_t)(e->count ? e->count : 1) * sizeof *buf);
        if (!buf) {
            st = services_fail(TP_ERR_NOMEM, "out of memory");
            break;
        }
        tp_tensor h = *ref.value;
        h.device = TP_DEVICE_HOST;
        h.data = buf;
        if (!(st = safetensors_to_f32(e, path, buf)))
            st = t->backend.ops->copy(t->backend.self, ref.value, &h, TP_STREAM_COMPUTE);
        if (!st)
            st = t->backend.ops->sync(t->backend.self);
        free(buf);
    }
    int64_t seed, batch, shard;
    if (st || (st = meta_int(f, path, "step", &t->pos.step)) ||
        (st = meta_int(f, path, "epoch", &t->pos.epoch)) ||
        (st = meta_int(f, path, "epoch_position", &t->pos.epoch_position)) ||
        (st = meta_int(f, path, "epochs_closed", &t->pos.epochs_closed)) ||
        (st = meta_int(f, path, "batches_in_epoch", &t->pos.batches_in_epoch)) ||
        (st = meta_int(f, path, "best_step", &t->pos.best_step)) ||
        (st = meta_int(f, path, "seed", &seed)) || (st = meta_int(f, path, "batch_size", &batch)) ||
        (st = meta_int(f, path, "train_samples", &shard)))
        goto done;
    const char *best = safetensors_metadata(f, "best_val_error");
    t->pos.best_val_error = best ? strtod(best, NULL) : NAN;
    const char *scale = safetensors_metadata(f, "loss_scale");
    if (t->scaling && scale && strtod(scale, NULL) >= 1) {
        t->loss_scale = strtod(scale, NULL);
        if ((st = meta_int(f, path, "loss_scale_good_steps", &t->scale_good_steps)))
            goto done;
    }
    if (shard != t->train.info.count) {
        st = services_fail(TP_ERR_INVALID, "%s: written for a training set of %lld samples, "
                           "[source.train] has %lld: the epoch position cannot carry over",
                           path, (long long)shard, (long long)t->train.info.count);
        goto done;
    }
    if (seed != t->s->seed || batch != t->s->batch_size)
        LOG_WARN("%s was written with seed %lld and batch_size %lld; this run uses %lld and "
                 "%lld, so it will not repeat the original run's batches", path,
                 (long long)seed, (long long)batch, (long long)t->s->seed,
                 (long long)t->s->batch_size);
    if (t->pos.step > t->total_steps) {
        st = services_fail(TP_ERR_INVALID, "%s: the checkpoint is at step %lld, beyond this "
                           "run's %lld steps", path, (long long)t->pos.step,
                           (long long)t->total_steps);
        goto done;
    }
    LOG_INFO("resuming from %s at step %lld (epoch %lld, position %lld of %lld)", path,
             (long long)t->pos.step, (long long)t->pos.epoch, (long long)t->pos.epoch_position,
             (long long)t->shard);
done:
    safetensors_free(f);
    return st;
}

/* --resume auto: the newest step checkpoint, or none. */
static tp_status find_resume(trainer *t, char *path, size_t size)
{
    found_checkpoint *all;
    size_t n;
    path[0] = 0;
    tp_status st = list_checkpoints(t->ckpt_dir, &all, &n);
    if (st)
        return st;
    if (n)
        snprintf(path, size, "%s/%s", t->ckpt_dir, all[n - 1].name);
    free(all);
    return TP_OK;
}

/* ------------------------------------------------------------------ evaluation */

typedef struct eval_result {
    int64_t samples;
    double loss, error_top1, error_top5;
    double seconds;
} eval_result;

/* One pass over the validation source in inference mode. */
static tp_status evaluate(trainer *t, eval_result *r)
{
    memset(r, 0, sizeof *r);
    dataloader *dl;
    double start = services_monotonic_seconds();
    tp_status st = make_loader(t, &t->val, 0, 0, 0, 1, &dl);
    if (st)
        return st;
    const int train_batch = t->bound_batch;
    const int k5 = t->input.num_classes >= 5 ? 5 : t->input.num_classes;
    double loss_sum = 0, correct1 = 0, correct5 = 0;
    const tp_backend_ops *ops = t->backend.ops;
    for (;;) {
        if (services_interrupted()) {
            st = TP_ERR_INTERRUPTED;
            break;
        }
        dataloader_batch b;
        st = dataloader_next(dl, &b);
        if (st == TP_ERR_END) {
            st = TP_OK;
            break;
        }
        if (st)
            break;
        float h[3];
        const tp_tensor *dev[] = { &t->loss, &t->correct, &t->correct5 };
        if (!(st = bind_batch(t, (int)b.count)) && !(st = graph_forward(t->g, &b.images, 0)) &&
            !(st = ops->softmax_xent(t->backend.self, graph_logits(t->g), &b.labels, 0.0, 1.0,
                                     &t->loss, NULL)) &&
            !(st = ops->topk_correct(t->backend.self, graph_logits(t->g), &b.labels, 1,
                                     &t->correct)) &&
            !(st = ops->topk_correct(t->backend.self, graph_logits(t->g), &b.labels, k5,
                                     &t->correct5)))
            st = read_scalars(t, dev, h, 3); /* one wait per batch */
        dataloader_release(dl, &b);
        if (st)
            break;
        loss_sum += (double)h[0] * (double)b.count;
        correct1 += h[1];
        correct5 += h[2];
        r->samples += b.count;
    }
    dataloader_destroy(dl);
    tp_status rst = bind_batch(t, train_batch);
    if (!st)
        st = rst;
    if (!st && t->world > 1) {
        double sums[4] = { loss_sum, correct1, correct5, (double)r->samples };
        if (!(st = comm_allreduce_host(t->comm, sums, 4))) {
            loss_sum = sums[0];
            correct1 = sums[1];
            correct5 = sums[2];
            r->samples = (int64_t)sums[3];
        }
    }
    if (!st && r->samples == 0)
        st = services_fail(TP_ERR_INVALID, "%s: the validation source produced no samples",
                           t->p.doc.path);
    if (st)
        return st;
    r->loss = loss_sum / (double)r->samples;
    r->error_top1 = 1.0 - correct1 / (double)r->samples;
    r->error_top5 = 1.0 - correct5 / (double)r->samples;
    r->seconds = services_monotonic_seconds() - start;
    return TP_OK;
}

/* ------------------------------------------------------------------ training */

/* Where the run's data wait went: the workers (samples not yet read and augmented) or the
 * device stage (upload, conversion, batch augmenters), and how long the device thread took
 * per batch, so a run that waits says which stage to look at. */
static void log_data_wait(trainer *t, double training_seconds)
{
    if (!t->loader || training_seconds <= 0)
        return;
    dataloader_stats ds;
    dataloader_get_stats(t->loader, &ds);
    LOG_INFO("data wait: %.2f s, %.2f%% of %.1f s training (evaluations and checkpoints "
             "left out): %.2f s for samples (workers), %.2f s for the device stage, which "
             "took %.2f ms a batch on its thread (%lld batches)",
             t->data_wait, 100.0 * t->data_wait / training_seconds, training_seconds,
             t->data_wait_for_samples, t->data_wait - t->data_wait_for_samples,
             ds.device_batches ? 1e3 * ds.device_seconds / (double)ds.device_batches : 0.0,
             (long long)ds.device_batches);
    if (t->between_count > 0 || t->overlapped_steps > 0)
        LOG_INFO("between steps: %lld steps queued while the step before them was in flight "
                 "(overlap_steps); %lld waited for it, %.3f ms a step on the host from reading "
                 "its loss to queuing the next (data wait left out; a GPU has nothing queued "
                 "then)", (long long)t->overlapped_steps, (long long)t->between_count,
                 t->between_count ? 1e3 * t->between_steps / (double)t->between_count : 0.0);
}

/* Counters of one logging interval. */
typedef struct interval {
    double start;
    double wait;
    double loss_sum;
    double correct;
    int64_t samples;
    int64_t steps;
} interval;

static double fractional_epoch(const trainer *t)
{
    if (t->pos.epoch < 0)
        return 0;
    return (double)t->pos.epoch + (double)t->pos.epoch_position / (double)t->shard;
}

static tp_status log_interval(trainer *t, interval *iv, double lr)
{
    double now = services_monotonic_seconds(), elapsed = now - iv->start;
    if (iv->samples == 0 || elapsed <= 0)
        return TP_OK;
    tp_scalar sc[] = {
        { TP_TAG_LOSS, iv->loss_sum / (double)iv->samples },
        { TP_TAG_ERROR_TOP1, 1.0 - iv->correct / (double)iv->samples },
        { TP_TAG_LEARNING_RATE, lr },
        { TP_TAG_IMAGES_PER_SEC, (double)iv->samples / elapsed },
        { TP_TAG_DATA_WAIT, iv->wait / elapsed },
    };
    tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_TRAIN, .step = t->pos.step,
                        .epoch = fractional_epoch(t), .wall_time = wall_seconds(),
                        .scalars = sc, .n_scalars = sizeof sc / sizeof sc[0] };
    tp_status st = loggers_scalars(t, &ev);
    if (!st)
        st = loggers_histograms(t, t->pos.step);
    *iv = (interval){ .start = now };
    return st;
}

/* Evaluates, logs the result and tracks the best error; *improved says whether it is the
 * best so far. */
static tp_status eval_and_log(trainer *t, int *improved)
{
    eval_result r;
    *improved = 0;
    tp_status st = evaluate(t, &r);
    if (st)
        return st;
    tp_scalar sc[] = {
        { TP_TAG_LOSS, r.loss },
        { TP_TAG_ERROR_TOP1, r.error_top1 },
        { TP_TAG_ERROR_TOP5, r.error_top5 },
    };
    tp_log_event ev = { .size = sizeof ev, .phase = TP_PHASE_VAL, .step = t->pos.step,
                        .epoch = fractional_epoch(t), .wall_time = wall_seconds(),
                        .scalars = sc, .n_scalars = 3 };
    if (isnan(t->pos.best_val_error) || r.error_top1 < t->pos.best_val_error) {
        t->pos.best_val_error = r.error_top1;
        t->pos.best_step = t->pos.step;
        *improved = 1;
    }
    host()->log(host(), TP_LOG_DEBUG, "train", "step %lld: validation loss %.4f, top-1 error %.2f%% (accuracy %.2f%%), top-5 "
             "error %.2f%% on %lld samples in %.1f s", (long long)t->pos.step, r.loss,
             100 * r.error_top1, 100 * (1 - r.error_top1), 100 * r.error_top5,
             (long long)r.samples, r.seconds);
    if ((st = loggers_scalars(t, &ev)))
        return st;
    return loggers_flush(t);
}

/* Work at the end of an epoch: evaluation and a checkpoint when due. */
static tp_status close_epoch(trainer *t, int64_t epoch, double epoch_seconds, int64_t *last_eval,
                             int64_t *last_ckpt)
{
    tp_status st = TP_OK;
    int improved = 0;
    t->pos.epochs_closed = epoch + 1;
    double rate = epoch_seconds > 0 ? t->epoch_images / epoch_seconds : 0;
    if (t->world > 1)
    {
        comm_reducer_stats rs;
        comm_reducer_get_stats(t->reducer, &rs);
        LOG_INFO("epoch %lld done at step %lld: %.1f s, %.1f images/s (%.1f per rank, %d ranks; "
                 "%.2f s waiting for gradient sums after backward)",
                 (long long)epoch + 1, (long long)t->pos.step, epoch_seconds, rate,
                 rate / t->world, t->world, rs.wait_seconds - t->reducer_wait_logged);
        t->reducer_wait_logged = rs.wait_seconds;
    }
    else
        LOG_INFO("epoch %lld done at step %lld: %.1f s, %.1f images/s", (long long)epoch + 1,
                 (long long)t->pos.step, epoch_seconds, rate);
    t->epoch_images = 0;
    if (t->val.stage && t->s->eval_every_epochs > 0 &&
        (epoch + 1) % t->s->eval_every_epochs == 0 && *last_eval != t->pos.step) {
        if ((st = eval_and_log(t, &improved)))
            return st;
        *last_eval = t->pos.step;
    }
    if (t->p.checkpoint->every_epochs > 0 && (epoch + 1) % t->p.checkpoint->every_epochs == 0 &&
        *last_ckpt != t->pos.step) {
        if ((st = save_checkpoint(t, improved, "end of epoch")))
            return st;
        *last_ckpt = t->pos.step;
    }
    return TP_OK;
}

static tp_status gradient_ready(void *ctx, size_t param)
{
    trainer *t = ctx;
    return comm_reducer_ready(t->reducer, t->ready_position[param]);
}

/* The reducer that turns every rank's gradients into their mean: buckets in the order
 * backward finishes the gradients, reduced while backward goes on where the transport allows
 * (distributed.md). With one rank it does nothing, unless TRAINPIPE_COMM_NCCL=1 sends the
 * gradients through NCCL anyway (the 1-GPU check of the NCCL path). */
static tp_status make_reducer(trainer *t)
{
    size_t n;
    tp_status st = TP_OK;
    const tp_param_ref *params = graph_params(t->g, &n);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    tp_tensor **grads = malloc((n ? n : 1) * sizeof *grads);
    t->ready_position = malloc((n ? n : 1) * sizeof *t->ready_position);
    if (!order || !grads || !t->ready_position) {
        st = services_fail(TP_ERR_NOMEM, "out of memory");
        goto done;
    }
    graph_param_ready_order(t->g, order);
    for (size_t k = 0; k < n; k++) {
        grads[k] = params[order[k]].grad;
        t->ready_position[order[k]] = k;
    }
    if ((st = comm_reducer_create(t->comm, &t->backend, grads, n, 1.0 / t->world,
                                  t->s->overlap_allreduce, &t->reducer)))
        goto done;
    comm_reducer_stats rs;
    comm_reducer_get_stats(t->reducer, &rs);
    if (rs.buckets > 0) /* an overlapped mode */
        graph_set_grad_ready_hook(t->g, gradient_ready, t);
    if (strcmp(rs.mode, "none") && rs.buckets)
        LOG_INFO("gradients: mean over %d rank%s, reduced %s in %zu bucket%s", t->world,
                 t->world == 1 ? "" : "s", rs.mode, rs.buckets, rs.buckets == 1 ? "" : "s");
    else if (strcmp(rs.mode, "none"))
        LOG_INFO("gradients: mean over %d rank%s, reduced %s", t->world,
                 t->world == 1 ? "" : "s", rs.mode);
done:
    free(order);
    free(grads);
    return st;
}

/* What the loss gradient is multiplied by: the loss scale, or 1 without loss scaling. A
 * recording of the step holds it, so it also selects the recording. */
static double loss_gradient_scale(const trainer *t)
{
    return t->scaling ? t->loss_scale : 1.0;
}

/* One training step up to the gradients, for a batch of the bound size: forward, loss (its
 * gradient scaled), top-1 count, backward. Only enqueued: this is what step capture
 * records. */
static tp_status enqueue_step(void *ctx, const tp_tensor *images, const tp_tensor *labels)
{
    trainer *t = ctx;
    const tp_backend_ops *ops = t->backend.ops;
    tp_status st = graph_forward(t->g, images, 1);
    if (!st)
        st = ops->softmax_xent(t->backend.self, graph_logits(t->g), labels,
                               t->s->label_smoothing, loss_gradient_scale(t), &t->loss,
                               &t->dlogits);
    if (!st)
        st = ops->topk_correct(t->backend.self, graph_logits(t->g), labels, 1, &t->correct);
    if (!st)
        st = graph_backward(t->g, &t->dlogits);
    return st;
}

/* enqueue_step and then the optimizer's update reading this step's numbers from
 * opt_scalars: the whole training step, which step capture records when device_update is
 * on. The update is gated on the device: with loss scaling on the loss and the scaled
 * gradients' check (grad_check, which then holds loss + check: the gate the host reads
 * back), the gradients unscaled first as unscale_gradients() does on the host path;
 * otherwise on `gate` (t->gate's comment), or the loss alone where that is not needed. */
static tp_status enqueue_step_and_update(void *ctx, const tp_tensor *images,
                                         const tp_tensor *labels)
{
    trainer *t = ctx;
    const tp_backend_ops *ops = t->backend.ops;
    void *be = t->backend.self;
    tp_status st = enqueue_step(t, images, labels);
    const tp_tensor *gate = &t->loss;
    if (!st && t->scaling) {
        if (!(st = queue_gradient_check(t)))
            st = ops->axpby(be, 1.0, &t->loss, 1.0, &t->grad_check);
        if (!st)
            st = queue_unscale(t);
        gate = &t->grad_check;
    } else if (!st && t->gate.data) {
        /* gate = loss [+ gradient check] [+ 2^-100 x the previous step's gate, then
         * prev_gate = gate]: a NaN or infinity stays in every later gate, while finite
         * gates stay the size of one loss (no sum of many losses to overflow) */
        st = ops->copy(be, &t->gate, &t->loss, TP_STREAM_COMPUTE);
        if (!st && t->check_gradients && !(st = queue_gradient_check(t)))
            st = ops->axpby(be, 1.0, &t->grad_check, 1.0, &t->gate);
        if (!st && t->overlap && !(st = ops->axpby(be, 0x1p-100, &t->prev_gate, 1.0, &t->gate)))
            st = ops->copy(be, &t->prev_gate, &t->gate, TP_STREAM_COMPUTE);
        gate = &t->gate;
    }
    return st ? st : t->optim_ops->step_device(t->optim, &t->opt_scalars, gate);
}

/* [pipeline] overlap_steps: where the update is queued with the step (so one rank), without
 * loss scaling (the next step's recording holds a loss scale the host has not decided yet)
 * and with a ring deep enough to hold two batches. */
static tp_status setup_overlap(trainer *t)
{
    /* and with no gradient reducer at work: one with buckets (one rank can have NCCL's)
     * would see the next step's gradients before this step's round is finished */
    comm_reducer_stats rs;
    comm_reducer_get_stats(t->reducer, &rs);
    if (!t->s->overlap_steps || t->scaling || t->s->prefetch < 3 || !rs.mode ||
        strcmp(rs.mode, "none") != 0)
        return TP_OK;
    const tp_backend_ops *ops = t->backend.ops;
    void *be = t->backend.self;
    t->prev_gate = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    tp_status st = ops->alloc(be, &t->prev_gate, "previous step's gate");
    if (!st)
        st = ops->fill(be, &t->prev_gate, 0.0);
    if (!st) {
        t->overlap = 1;
        host()->log(host(), TP_LOG_DEBUG, "train",
                    "overlap_steps: a step is queued before the previous step's loss is read");
    }
    return st;
}

/* The queued update's own gate (t->gate), needed without loss scaling when the gradients
 * are checked or steps overlap. */
static tp_status setup_gate(trainer *t)
{
    if (t->scaling || (!t->check_gradients && !t->overlap))
        return TP_OK;
    t->gate = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    return t->backend.ops->alloc(t->backend.self, &t->gate, "update gate");
}

/* Whether the update is queued with the step: one rank (a NaN on any rank must stop every
 * rank before its update, and the ranks' gradients are averaged after backward, both on
 * the host), and an optimizer and backend with the API 1.6 device-side updates for this
 * configuration. Then it is part of the recording under step capture, and everywhere the
 * step needs no host decision between backward and update. */
static tp_status setup_device_update(trainer *t)
{
    const tp_optimizer_ops *o = t->optim_ops;
    float probe[TP_OPTIM_MAX_SCALARS];
    const char *on_host = getenv("TRAINPIPE_UPDATE_ON_HOST"); /* diagnostics and tests */
    if (t->world > 1 || (on_host && strcmp(on_host, "0") != 0) ||
        o->size < offsetof(tp_optimizer_ops, step_device) + sizeof o->step_device ||
        !o->device_scalars || !o->step_device || o->device_scalars(t->optim, 1.0, 1, probe) <= 0)
        return TP_OK;
    const tp_backend_ops *ops = t->backend.ops;
    t->opt_scalars = tp_tensor_2d(TP_DTYPE_F32, TP_OPTIM_MAX_SCALARS, 0);
    /* two staging halves, by the step number's parity: an overlapped step writes its
     * numbers while the copy of the step before it may still be queued */
    t->opt_scalars_host = tp_tensor_2d(TP_DTYPE_F32, 2 * TP_OPTIM_MAX_SCALARS, 0);
    t->opt_scalars_host.device = TP_DEVICE_PINNED;
    tp_status st = ops->alloc(t->backend.self, &t->opt_scalars, "optimizer step scalars");
    if (!st)
        st = ops->alloc(t->backend.self, &t->opt_scalars_host, "optimizer step scalars (host)");
    if (!st) {
        /* written by the host directly (pinned memory), never by a queued fill that could
         * land after the first step's values */
        memset(t->opt_scalars_host.data, 0, tp_tensor_bytes(&t->opt_scalars_host));
        t->device_update = 1;
        host()->log(host(), TP_LOG_DEBUG, "train",
                    "optimizer: the update is queued with the step (plugin API 1.6)");
        if (t->capture)
            LOG_INFO("step capture: the optimizer's update is recorded with the step (its "
                     "learning rate read on the device, skipped there on a non-finite %s)",
                     t->scaling || t->check_gradients ? "loss or gradient" : "loss");
    }
    if (!st)
        st = setup_overlap(t);
    if (!st)
        st = setup_gate(t);
    return st;
}

/* Writes the optimizer numbers of the step after `steps_before` steps into staging half
 * `half` and queues their copy to the device, ahead of the step that reads them (the copy
 * is ordered on the compute stream). The host has waited for the loss of the step two
 * before, and so for that step's copy from the same half, before rewriting it. */
static tp_status stage_optimizer_scalars(trainer *t, double lr, int64_t steps_before, int half)
{
    tp_tensor src = t->opt_scalars;
    src.device = TP_DEVICE_PINNED;
    src.data = (float *)t->opt_scalars_host.data + half * TP_OPTIM_MAX_SCALARS;
    int n = t->optim_ops->device_scalars(t->optim, lr, steps_before + 1, src.data);
    if (n <= 0 || n > TP_OPTIM_MAX_SCALARS)
        return services_fail(TP_ERR_INVALID,
                             "optimizer %s: device_scalars gave %d values at step %lld (1..%d "
                             "expected)",
                             t->p.optimizer.entry->component->name, n,
                             (long long)steps_before + 1, TP_OPTIM_MAX_SCALARS);
    return t->backend.ops->copy(t->backend.self, &t->opt_scalars, &src, TP_STREAM_COMPUTE);
}

/* [pipeline] capture_step: records the step where nothing in it needs the host (no
 * gradient bucket handed to a reducer during backward, no batch-norm statistics summed
 * across ranks during forward). */
static tp_status make_step_capture(trainer *t)
{
    if (t->s->capture_step == CAPTURE_STEP_OFF)
        return TP_OK;
    comm_reducer_stats rs;
    comm_reducer_get_stats(t->reducer, &rs);
    const char *why_not = NULL;
    if (!step_capture_supported(&t->backend)) {
        /* auto on a backend without recordings (backend-cpu): nothing worth saying */
        if (t->s->capture_step == CAPTURE_STEP_AUTO)
            return TP_OK;
        why_not = "the backend cannot record its work";
    } else if (rs.buckets > 0)
        why_not = "gradient buckets are reduced during backward (overlap_allreduce)";
    else if (t->world > 1 && t->s->sync_batchnorm)
        why_not = "batch norm sums statistics across ranks during forward (sync_batchnorm)";
    if (why_not) {
        LOG_INFO("step capture: off, %s; every step runs op by op", why_not);
        return TP_OK;
    }
    tp_status st = step_capture_create(&t->backend, &t->capture);
    if (!st)
        LOG_INFO("step capture: full batches of %lld run as one recording on backend %s after "
                 "one unrecorded step", (long long)t->s->batch_size, t->binfo.name);
    return st;
}

/* A non-finite loss or gradient (grads_bad): keep what came before it and stop. With
 * overlapped steps the next step may be queued already (next_queued), its update gated on
 * this step's gate too. */
static tp_status stop_on_nonfinite(trainer *t, double loss, int grads_bad,
                                   const dataloader_batch *b, int next_queued)
{
    char saved[TRAINER_PATH_MAX + 64] = "", what[96];
    tp_status st = save_checkpoint(t, 0, "state before the non-finite loss or gradient");
    if (!st)
        snprintf(saved, sizeof saved, "; the weights before it are in %s/step-%08" PRId64
                 ".ckpt", t->ckpt_dir, t->pos.step);
    else
        snprintf(saved, sizeof saved, "; saving the state before it failed too: %s",
                 services_last_error());
    if (!isfinite(loss))
        snprintf(what, sizeof what, "the training loss is %s", isnan(loss) ? "NaN" : "infinite");
    else if (grads_bad)
        snprintf(what, sizeof what, "a gradient is NaN or infinite (the loss is %.6g)", loss);
    else /* a gate gone non-finite otherwise: only a loss beyond float range does that */
        snprintf(what, sizeof what, "the update's gate is not finite (the loss is %g)", loss);
    return services_fail(TP_ERR_INVALID, "step %lld (epoch %lld, batch at position %lld): %s, "
                         "stopping before the update%s%s (lower the learning rate or check the "
                         "data, then --resume that file)",
                         (long long)t->pos.step + 1, (long long)b->epoch + 1,
                         (long long)b->position_end, what,
                         next_queued ? " (the next step, already queued, skipped its update "
                                       "too)" : "", saved);
}

/* A training step queued on the backend whose loss the host has not read yet. */
typedef struct queued_step {
    int active;
    dataloader_batch b;
    double lr;
    int slot;      /* read-back slot and staging half: the step number's parity */
    int n_scalars; /* read back: loss, top-1 count, then the gate and the gradient check */
    int gate_at, check_at; /* their places in the read-back, -1: not read */
} queued_step;

/* The training loop's state besides the trainer's position. */
typedef struct train_run {
    interval iv;
    double run_start, epoch_start, lr, side_total;
    double gap_start, gap_excluded; /* see trainer.between_steps */
    int64_t last_eval, last_ckpt, steps_this_run;
    queued_step pending; /* overlap_steps: the step queued before the one being queued */
    int next_queued;     /* finish_step: the step after the one finished is queued */
} train_run;

/* The position after a step on batch b, from the position before it. */
static void advance_position(position *p, const dataloader_batch *b)
{
    if (b->epoch != p->epoch)
        p->batches_in_epoch = 0;
    p->step++;
    p->epoch = b->epoch;
    p->epoch_position = b->position_end;
    p->batches_in_epoch++;
}

/* Whether the host has work after a step that needs the weights as that step leaves them,
 * so the next step must not be queued before it is finished: the last step, the end of an
 * epoch, an evaluation, a checkpoint or histograms. `after` is the position after it. */
static int step_needs_host_after(const trainer *t, const dataloader_batch *b,
                                 const position *after)
{
    const int64_t step = after->step;
    if (step >= t->total_steps || b->position_end >= t->shard ||
        after->batches_in_epoch >= t->steps_per_epoch)
        return 1;
    if (t->val.stage && t->s->eval_every_steps > 0 && step % t->s->eval_every_steps == 0)
        return 1;
    if (t->p.checkpoint->every_steps > 0 && step % t->p.checkpoint->every_steps == 0)
        return 1;
    if (step % t->s->log_every_steps == 0)
        for (size_t i = 0; i < t->n_loggers; i++) {
            const logger_slot *l = &t->loggers[i];
            if (!l->detached && l->ops->wants && l->ops->histogram &&
                l->ops->wants(l->self, TP_LOG_HISTOGRAMS, step))
                return 1;
        }
    return 0;
}

/* Queues the training step on batch b: learning rate, optimizer numbers, forward,
 * backward, the update when it runs on the device, and the read-back of the loss. Called
 * with the step before it possibly still pending (overlap_steps). */
static tp_status queue_step(trainer *t, train_run *r, const dataloader_batch *b,
                            double fetched_at, queued_step *q)
{
    const int64_t steps_before = t->pos.step + (r->pending.active ? 1 : 0);
    tp_schedule_pos sp = { .size = sizeof sp, .step = steps_before,
                           .total_steps = t->total_steps,
                           .steps_per_epoch = t->steps_per_epoch };
    *q = (queued_step){ .b = *b, .slot = (int)(steps_before & 1) };
    q->lr = t->optim_ops->base_lr(t->optim) * t->sched_ops->factor(t->sched, &sp) *
            (t->s->lr_scaling == 1 ? (double)t->world : 1.0);
    if (r->pending.active) {
        t->overlapped_steps++;
    } else if (r->gap_start > 0) {
        /* the batch's wait counts against the gap only if it came after the gap began (not
         * when the step before was finished early, after the batch was fetched) */
        t->between_steps += services_monotonic_seconds() - r->gap_start - r->gap_excluded -
                            (fetched_at > r->gap_start ? b->wait_seconds : 0.0);
        t->between_count++;
    }
    /* Backward is queued before the loss is read, so a GPU is not left idle while the
     * host waits for the loss and then issues the backward pass. A non-finite loss still
     * stops the run before the update: only gradients exist by then (or the update was
     * skipped on the device). Full batches replay the recording; with device_update it
     * holds the update too. */
    const int recorded = t->capture && b->count == t->s->batch_size;
    const int updated_on_device = t->device_update;
    step_capture_fn fn = updated_on_device ? enqueue_step_and_update : enqueue_step;
    tp_status st = bind_batch(t, (int)b->count);
    if (!st && updated_on_device)
        st = stage_optimizer_scalars(t, q->lr, steps_before, q->slot);
    if (!st)
        st = recorded ? step_capture_run(t->capture, &b->images, &b->labels,
                                         loss_gradient_scale(t), fn, t)
                      : fn(t, &b->images, &b->labels);
    /* with the update queued: its gate too, and the gradient check inside it */
    const tp_tensor *dev[READBACK_MAX] = { &t->loss, &t->correct };
    int n = 2;
    q->gate_at = q->check_at = -1;
    if (updated_on_device && t->scaling) {
        q->gate_at = n;
        dev[n++] = &t->grad_check;
    } else if (updated_on_device && t->gate.data) {
        q->gate_at = n;
        dev[n++] = &t->gate;
        if (t->check_gradients) {
            q->check_at = n;
            dev[n++] = &t->grad_check;
        }
    }
    q->n_scalars = n;
    if (!st)
        st = readback_queue(t, q->slot, dev, q->n_scalars);
    q->active = !st;
    return st;
}

/* Everything after a step's loss is back: the checks, the update when the host makes it,
 * the bookkeeping and logging, and the evaluations and checkpoints that are due. */
static tp_status finish_step(trainer *t, train_run *r, queued_step *q)
{
    q->active = 0;
    dataloader_batch *b = &q->b;
    float h[READBACK_MAX] = { 0 };
    tp_status st = readback_wait(t, q->slot, h, q->n_scalars);
    r->gap_start = services_monotonic_seconds();
    r->lr = q->lr;
    double count = (double)b->count;
    if (!st && t->world > 1) {
        /* The job's mean loss and correct count (a NaN anywhere stops every rank). */
        double sums[4] = { h[0] * count, h[1], count, services_interrupted() ? 1 : 0 };
        if (!(st = comm_allreduce_host(t->comm, sums, 4))) {
            h[0] = (float)(sums[0] / sums[2]);
            h[1] = (float)sums[1];
            count = sums[2];
            t->stop_requested = sums[3] > 0;
        }
    }
    const int gate_bad = q->gate_at >= 0 && !isfinite(h[q->gate_at]);
    const int grads_bad = q->check_at >= 0 && !isfinite(h[q->check_at]);
    if (!st && (!isfinite(h[0]) || (gate_bad && !t->scaling)))
        st = stop_on_nonfinite(t, h[0], grads_bad, b, r->next_queued);
    int finite = 1;
    if (!st)
        st = comm_reducer_finish(t->reducer);
    if (!st && t->scaling && t->device_update)
        finite = !gate_bad; /* the device already skipped the update if not */
    else if (!st && t->scaling)
        st = unscale_gradients(t, &finite);
    else if (!st && t->check_gradients && !t->device_update) {
        /* the host makes the update: the (summed) gradients are checked first */
        float check = 0;
        const tp_tensor *dev[] = { &t->grad_check };
        if (!(st = queue_gradient_check(t)) && !(st = read_scalars(t, dev, &check, 1)) &&
            !isfinite(check))
            st = stop_on_nonfinite(t, h[0], 1, b, 0);
    }
    if (!st && finite) {
        if (!t->device_update)
            st = t->optim_ops->step(t->optim, q->lr, t->pos.step + 1);
        if (t->scaling && ++t->scale_good_steps >= t->s->loss_scale_interval) {
            t->loss_scale *= 2;
            t->scale_good_steps = 0;
        }
    } else if (!st) {
        /* fp16 overflow: this update is skipped (the step still counts). */
        t->loss_scale = fmax(t->loss_scale / 2, 1.0);
        t->scale_good_steps = 0;
        LOG_INFO("step %lld: gradients overflowed; update skipped, loss scale now %g",
                 (long long)t->pos.step + 1, t->loss_scale);
    }
    if (!st)
        st = loggers_images(t, b, t->pos.step + 1);
    tp_status rst = dataloader_release(t->loader, b);
    if (!st)
        st = rst;
    if (st)
        return st;

    advance_position(&t->pos, b);
    r->steps_this_run++;
    const double last_loss = h[0], last_error = 1.0 - (double)h[1] / count;
    interval *iv = &r->iv;
    iv->wait += b->wait_seconds;
    iv->loss_sum += (double)h[0] * count;
    iv->correct += h[1];
    iv->samples += (int64_t)count;
    t->epoch_images += count;
    iv->steps++;

    double now = services_monotonic_seconds();
    tp_progress pr = { .size = sizeof pr, .step = t->pos.step, .total_steps = t->total_steps,
                       .epoch = b->epoch + 1, .total_epochs = t->total_epochs,
                       .seconds_elapsed = now - r->run_start,
                       .images_per_sec = (double)iv->samples / fmax(now - iv->start, 1e-9),
                       .loss = last_loss, .error_top1 = last_error, .learning_rate = q->lr };
    if ((st = loggers_progress(t, &pr)))
        return st;
    if (t->pos.step % t->s->log_every_steps == 0 && (st = log_interval(t, iv, q->lr)))
        return st;

    /* Evaluations and checkpoints below are not training time: keep them out of the
     * interval's images/s and the epoch's duration. */
    const double side_start = services_monotonic_seconds();
    int epoch_done = b->position_end >= t->shard ||
                     t->pos.batches_in_epoch >= t->steps_per_epoch;
    if (epoch_done && t->pos.epochs_closed <= b->epoch) {
        if (iv->steps && (st = log_interval(t, iv, q->lr)))
            return st;
        if ((st = close_epoch(t, b->epoch, now - r->epoch_start, &r->last_eval, &r->last_ckpt)))
            return st;
        r->epoch_start = services_monotonic_seconds();
    }
    if (t->val.stage && t->s->eval_every_steps > 0 &&
        t->pos.step % t->s->eval_every_steps == 0 && r->last_eval != t->pos.step) {
        int improved;
        if ((st = eval_and_log(t, &improved)))
            return st;
        r->last_eval = t->pos.step;
        if (improved && t->p.checkpoint->keep_best &&
            (st = save_checkpoint(t, 1, "best validation error")))
            return st;
        if (improved)
            r->last_ckpt = t->pos.step;
    }
    if (t->p.checkpoint->every_steps > 0 && t->pos.step % t->p.checkpoint->every_steps == 0 &&
        r->last_ckpt != t->pos.step) {
        if ((st = save_checkpoint(t, 0, "periodic")))
            return st;
        r->last_ckpt = t->pos.step;
    }
    const double side = services_monotonic_seconds() - side_start;
    r->side_total += side;
    r->gap_excluded = side;
    iv->start += side;
    if (!epoch_done)
        r->epoch_start += side;
    return TP_OK;
}

/* The steps: each batch is queued as a step, and with overlap_steps the step before it is
 * finished only then, unless the host has work after it (step_needs_host_after) or the
 * batch needs the host first (a new epoch, another batch size). */
static tp_status train_steps(trainer *t, train_run *r)
{
    queued_step *pending = &r->pending;
    tp_status st;
    while (t->loader) {
        /* Alone, a signal stops at once; in a job, every rank stops at the same step (the
         * flags are summed with the step's metrics). A step in flight is finished first,
         * so the checkpoint written for the signal holds it. */
        if (t->world > 1 ? t->stop_requested : services_interrupted()) {
            st = pending->active ? finish_step(t, r, pending) : TP_OK;
            return st ? st : TP_ERR_INTERRUPTED;
        }
        if (t->pos.step + pending->active >= t->total_steps)
            break;
        dataloader_batch b;
        st = dataloader_next(t->loader, &b);
        if (st == TP_ERR_END)
            break;
        if (st)
            return st;
        const double fetched_at = services_monotonic_seconds();
        if (pending->active && (b.epoch != pending->b.epoch || b.count != t->bound_batch) &&
            (st = finish_step(t, r, pending))) {
            dataloader_release(t->loader, &b);
            return st;
        }
        /* An epoch ended that the step count did not see (samples skipped as bad). */
        if (t->pos.epoch >= 0 && b.epoch > t->pos.epoch && t->pos.epochs_closed <= t->pos.epoch) {
            if ((st = close_epoch(t, t->pos.epoch, services_monotonic_seconds() - r->epoch_start,
                                  &r->last_eval, &r->last_ckpt))) {
                dataloader_release(t->loader, &b);
                return st;
            }
            r->epoch_start = services_monotonic_seconds();
        }
        if (b.epoch == t->pos.epoch && t->pos.batches_in_epoch >= t->steps_per_epoch) {
            /* A larger shard's surplus batch: the other ranks have none. */
            if ((st = dataloader_release(t->loader, &b)))
                return st;
            continue;
        }
        t->data_wait += b.wait_seconds;
        t->data_wait_for_samples += b.wait_for_samples_seconds;

        queued_step current;
        if ((st = queue_step(t, r, &b, fetched_at, &current))) {
            dataloader_release(t->loader, &b);
            return st;
        }
        if (pending->active) {
            r->next_queued = 1;
            st = finish_step(t, r, pending);
            r->next_queued = 0;
            if (st)
                return st;
        }
        *pending = current;
        position after = t->pos;
        advance_position(&after, &pending->b);
        if ((!t->overlap || step_needs_host_after(t, &pending->b, &after)) &&
            (st = finish_step(t, r, pending)))
            return st;
    }
    return pending->active ? finish_step(t, r, pending) : TP_OK;
}

static tp_status train_loop(trainer *t)
{
    /* Where the loader starts: after the last trained batch. */
    int64_t first_epoch = t->pos.epoch < 0 ? 0 : t->pos.epoch;
    int64_t first_position = t->pos.epoch < 0 ? 0 : t->pos.epoch_position;
    if (first_position >= t->shard) {
        first_epoch++;
        first_position = 0;
    }
    int64_t epochs_left = t->s->steps > 0 ? 0 : t->total_epochs - first_epoch;
    tp_status st = make_reducer(t);
    if (!st)
        st = make_step_capture(t);
    if (!st)
        st = setup_device_update(t);
    if (st)
        return st;
    if (t->pos.step >= t->total_steps || (t->s->steps == 0 && epochs_left <= 0)) {
        LOG_INFO("nothing left to train: %lld of %lld steps done", (long long)t->pos.step,
                 (long long)t->total_steps);
    } else if ((st = make_loader(t, &t->train, 1, first_epoch, first_position, epochs_left,
                                 &t->loader))) {
        return st;
    }
    const double start = services_monotonic_seconds();
    train_run r = { .iv = { .start = start }, .run_start = start, .epoch_start = start,
                    .last_eval = -1, .last_ckpt = t->pos.step };
    if ((st = train_steps(t, &r))) {
        /* a failed run may leave steps queued: let them end before what they use is freed
         * (keeping the first error's message if waiting fails too) */
        char why[1024];
        snprintf(why, sizeof why, "%s", services_last_error());
        if (t->backend.ops->sync(t->backend.self) && why[0])
            services_fail(st, "%s", why);
        return st;
    }
    const double training_seconds = services_monotonic_seconds() - r.run_start - r.side_total;
    if (r.iv.steps && (st = log_interval(t, &r.iv, r.lr)))
        return st;
    /* The end: a final evaluation and checkpoint unless this very step already had them. */
    int improved = 0;
    if (t->val.stage && r.last_eval != t->pos.step && r.steps_this_run > 0) {
        if ((st = eval_and_log(t, &improved)))
            return st;
    }
    if (r.last_ckpt != t->pos.step && (st = save_checkpoint(t, improved, "end of training")))
        return st;
    double total = services_monotonic_seconds() - r.run_start;
    LOG_INFO("finished: %lld steps in %.1f s (%.1f s per epoch of %lld steps)",
             (long long)r.steps_this_run, total,
             r.steps_this_run ? total / (double)r.steps_this_run * (double)t->steps_per_epoch
                              : 0.0,
             (long long)t->steps_per_epoch);
    log_data_wait(t, training_seconds);
    if (t->capture) {
        step_capture_stats cs;
        step_capture_get_stats(t->capture, &cs);
        LOG_INFO("step capture: %lld steps replayed from %lld recording%s, %lld full "
                 "batches run op by op%s", (long long)cs.replays, (long long)cs.recordings,
                 cs.recordings == 1 ? "" : "s", (long long)cs.unrecorded,
                 cs.disabled ? " (recording failed; see the warning)" : "");
    }
    comm_reducer_stats rs;
    comm_reducer_get_stats(t->reducer, &rs);
    if (t->world > 1)
        LOG_INFO("gradient sums (%s): %.2f s waited for after backward in %lld steps (%.1f ms "
                 "per step); %.2f s inside collectives on the communication thread", rs.mode,
                 rs.wait_seconds,
                 (long long)rs.rounds,
                 rs.rounds ? 1e3 * rs.wait_seconds / (double)rs.rounds : 0.0,
                 rs.thread_seconds);
    return TP_OK;
}

/* ------------------------------------------------------------------ commands */

static int exit_status(const trainer *t, tp_status st)
{
    if (st == TP_OK)
        return 0;
    if (st == TP_ERR_INTERRUPTED) {
        int sig = services_interrupt_signal();
        return 128 + (sig ? sig : SIGINT);
    }
    if (!t->in_loop && (st == TP_ERR_INVALID || st == TP_ERR_NOT_FOUND))
        return TRAINER_EXIT_CONFIG;
    return TRAINER_EXIT_RUNTIME;
}

int trainer_train(const trainer_args *a)
{
    trainer t;
    memset(&t, 0, sizeof t);
    services_install_signal_handlers();
    tp_status st = trainer_setup(&t, a, 1);
    if (!st && t.launch) {
        int gpus = (int)t.s->gpus;
        trainer_release(&t);
        if (!saved_argv)
            return TRAINER_EXIT_RUNTIME;
        (void)saved_argc;
        return comm_launch_run(gpus, saved_argv);
    }
    int resumed = 0;
    if (!st && a->resume) {
        char path[TRAINER_PATH_MAX + 300] = ""; /* "": no checkpoint to resume from */
        if (strcmp(a->resume, "auto") == 0) {
            /* Rank 0 decides which file; every rank loads that one. */
            st = t.rank == 0 ? find_resume(&t, path, sizeof path) : TP_OK;
            if (!st && t.world > 1)
                st = comm_broadcast_host(t.comm, path, sizeof path, 0);
            if (!st && !path[0])
                LOG_INFO("--resume auto: no checkpoint in %s, starting a new run", t.ckpt_dir);
        } else {
            snprintf(path, sizeof path, "%s", a->resume);
        }
        if (!st && path[0]) {
            st = restore(&t, path);
            resumed = st == TP_OK;
        }
    }
    if (!st) {
        LOG_INFO("%s on %s (%s): %lld steps of batch %lld (%lld per epoch, %lld epochs), "
                 "%lld parameters, run directory %s",
                 t.p.model.entry->component->name, t.backend_device,
                 t.p.backends[t.backend_index].entry->component->name,
                 (long long)t.total_steps, (long long)t.s->batch_size,
                 (long long)t.steps_per_epoch, (long long)t.total_epochs,
                 (long long)graph_param_count(t.g), t.run_dir);
        st = loggers_begin(&t, resumed);
    }
    if (!st) {
        t.in_loop = 1;
        st = train_loop(&t);
        if (st && st != TP_ERR_INTERRUPTED && t.world > 1) {
            char reason[1200];
            snprintf(reason, sizeof reason, "%s", services_last_error());
            loggers_end(&t, st);
            comm_abort(t.comm, exit_status(&t, st), reason); /* ends every rank */
        }
        if (st == TP_ERR_INTERRUPTED) {
            LOG_WARN("interrupted by signal %d at step %lld: saving a checkpoint",
                     services_interrupt_signal(), (long long)t.pos.step);
            tp_status cst = save_checkpoint(&t, 0, "interrupted");
            if (cst)
                fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
            else
                fprintf(stderr, "trainpipe: interrupted at step %lld; continue with "
                        "--resume auto\n", (long long)t.pos.step);
        } else if (st) {
            fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
        }
        loggers_end(&t, st);
    } else {
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
        if (t.world > 1)
            comm_abort(t.comm, exit_status(&t, st), services_last_error());
    }
    int rc = exit_status(&t, st);
    trainer_release(&t);
    return rc;
}

int trainer_eval(const trainer_args *a, const char *checkpoint)
{
    trainer t;
    memset(&t, 0, sizeof t);
    services_install_signal_handlers();
    tp_status st = trainer_setup(&t, a, 0);
    safetensors_file *f = NULL;
    if (!st)
        st = checkpoint_read(checkpoint, &f);
    if (!st)
        st = load_model_tensors(&t, f, checkpoint);
    eval_result r;
    if (!st) {
        t.in_loop = 1;
        st = evaluate(&t, &r);
    }
    if (!st) {
        const char *step = safetensors_metadata(f, "step");
        printf("checkpoint %s (step %s)\n", checkpoint, step ? step : "?");
        printf("validation: %lld samples from [%s] (%s)\n", (long long)r.samples,
               t.val.stage->section, t.val.stage->entry->component->name);
        printf("loss %.6f\ntop-1 error %.6f (accuracy %.2f%%)\ntop-5 error %.6f\n", r.loss,
               r.error_top1, 100 * (1 - r.error_top1), r.error_top5);
    } else {
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
    }
    safetensors_free(f);
    int rc = exit_status(&t, st);
    trainer_release(&t);
    return rc;
}

int trainer_export(const char *checkpoint, const char *out_path)
{
    safetensors_file *f = NULL;
    tp_status st = checkpoint_read(checkpoint, &f);
    const char *fmt = f ? safetensors_metadata(f, "format") : NULL;
    if (!st && (!fmt || strcmp(fmt, CHECKPOINT_FORMAT) != 0))
        st = services_fail(TP_ERR_FORMAT, "%s: not a trainpipe training checkpoint (format "
                           "'%s')", checkpoint, fmt ? fmt : "missing");
    size_t n = f ? safetensors_count(f) : 0, out_n = 0;
    safetensors_input *in = calloc(2 * n + 1, sizeof *in);
    float **bufs = calloc(n + 1, sizeof *bufs);
    char **names = calloc(n + 1, sizeof *names);
    int64_t *tracked = calloc(n + 1, sizeof *tracked);
    int64_t step = 0;
    if (!st && (!in || !bufs || !names || !tracked))
        st = services_fail(TP_ERR_NOMEM, "out of memory");
    if (!st)
        st = meta_int(f, checkpoint, "step", &step);
    for (size_t i = 0; i < n && !st; i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        if (strncmp(e->name, CHECKPOINT_OPTIMIZER_PREFIX, strlen(CHECKPOINT_OPTIMIZER_PREFIX)) == 0)
            continue;
        if (!(bufs[i] = malloc((size_t)(e->count ? e->count : 1) * sizeof(float)))) {
            st = services_fail(TP_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = safetensors_to_f32(e, checkpoint, bufs[i])))
            break;
        in[out_n++] = (safetensors_input){ e->name, e->ndim, e->shape, bufs[i], 0 };
        /* PyTorch's batch norm counts its updates; torchvision's strict loading wants it. */
        size_t len = strlen(e->name);
        const char *suffix = ".running_var";
        size_t sl = strlen(suffix);
        if (len > sl && strcmp(e->name + len - sl, suffix) == 0) {
            if (!(names[i] = malloc(len - sl + sizeof ".num_batches_tracked"))) {
                st = services_fail(TP_ERR_NOMEM, "out of memory");
                break;
            }
            snprintf(names[i], len - sl + sizeof ".num_batches_tracked", "%.*s.num_batches_tracked",
                     (int)(len - sl), e->name);
            tracked[i] = step;
            in[out_n++] = (safetensors_input){ names[i], 0, NULL, &tracked[i], 1 };
        }
    }
    char stepv[32];
    snprintf(stepv, sizeof stepv, "%" PRId64, step);
    const char *model = f ? safetensors_metadata(f, "model") : NULL;
    const char *meta[] = { "format", "pt", "producer", "trainpipe " PACKAGE_VERSION,
                           "model", model ? model : "?", "step", stepv, NULL };
    if (!st)
        st = safetensors_write(out_path, in, out_n, meta);
    if (!st)
        printf("%s: %zu tensors from %s (step %" PRId64 ")\n", out_path, out_n, checkpoint,
               step);
    else
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
    for (size_t i = 0; i < n; i++) {
        free(bufs ? bufs[i] : NULL);
        free(names ? names[i] : NULL);
    }
    free(bufs);
    free(names);
    free(tracked);
    free(in);
    safetensors_free(f);
    if (!st)
        return 0;
    return st == TP_ERR_FORMAT || st == TP_ERR_NOT_FOUND || st == TP_ERR_INVALID
               ? TRAINER_EXIT_CONFIG
               : TRAINER_EXIT_RUNTIME;
}
