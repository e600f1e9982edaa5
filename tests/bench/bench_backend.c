/* bench_backend [BACKEND] [--model resnet20|resnet50] [--mode train|infer] [--batch N]
 *               [--steps S] [--warmup W] [--layout nchw|nhwc] [--threads T]
 *               [--set KEY=VALUE]... [--json] [--profile] [--no-fuse] [--capture]
 *               [--per-tensor-update]
 *
 * --set passes a parameter to the backend (e.g. --set precision=bf16 for backend-cuda);
 * --threads T is short for --set threads=T.
 * Two ways to time a backend:
 *
 * Without --model: a ResNet-20 (CIFAR-10, 32x32x3 inputs, 10 classes) training step composed
 * directly from the backend's operations, issued in the order a forward + backward + SGD step
 * issues them: conv/bn/relu, basic blocks with shortcut A (subsample_pad + add), global
 * average pooling, linear, softmax cross-entropy, then the backward pass in reverse and one
 * sgd_update per parameter tensor. Every call is timed and grouped by operation and shape,
 * so the table shows where a step's time goes; the last line is the throughput in images/s.
 *
 * With --model: the network trainpipe itself runs, i.e. model-resnet built by the graph
 * executor (host/graph.c) and bound to the backend, timed per step as `trainpipe train` runs
 * it: training (graph_forward, softmax_xent, graph_backward, Nesterov sgd_update of every
 * parameter) or inference (graph_forward in inference mode). resnet20 is the CIFAR network
 * with shortcut A on 3x32x32 inputs and 10 classes, resnet50 torchvision's v1.5 network on
 * 3x224x224 inputs and 1000 classes; their parameter counts are printed and checked.
 *
 * --profile (with --model) times every backend call the graph makes and prints the table.
 * --no-fuse (with --model) keeps every ReLU a separate operation (graph_set_fusion), to
 * measure what the fused batch norm + ReLU and add + ReLU save.
 * --capture (with --model, training) runs forward, loss and backward through step capture
 * (host/step_capture.c, what `capture_step = true` does in the trainer): recorded once
 * during the warm-up, replayed in every timed step, the batch copied into the recording's
 * input buffers first. Where the backend has the API 1.6 device-side updates, the
 * optimizer is recorded with the step (its learning rate read on the device), as the
 * trainer does; otherwise it runs op by op after the replay. The recorded update is one
 * grouped call over every parameter tensor where the backend has the API 1.7 grouped form
 * (as optim-sgd makes it), or one call per tensor with --per-tensor-update, to measure what
 * the grouping saves; it is gated as the trainer gates it, on the loss plus the API 1.8
 * gradient check where the backend has it.
 * --json prints one machine-readable line instead of the human summary (the harness in
 * tests/bench/cpu reads it). A benchmark, not a test: built by `make bench`, never run by
 * `make check`. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph.h"
#include "params.h"
#include "registry.h"
#include "services.h"
#include "step_capture.h"

#ifndef TP_BENCH_BUILDDIR
#define TP_BENCH_BUILDDIR "."
#endif

/* ------------------------------------------------------------------ timing table */

typedef struct timing {
    char label[64];
    int calls;
    double seconds;
} timing;

typedef struct bench {
    const tp_backend_ops *ops;
    void *be;
    tp_layout layout;
    int batch;
    int recording; /* accumulate into the table (off during warm-up) */
    timing rows[96];
    int n_rows;
    tp_status failed;
} bench;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void record(bench *b, const char *label, double seconds)
{
    if (!b->recording)
        return;
    for (int i = 0; i < b->n_rows; i++)
        if (strcmp(b->rows[i].label, label) == 0) {
            b->rows[i].calls++;
            b->rows[i].seconds += seconds;
            return;
        }
    if (b->n_rows == (int)(sizeof b->rows / sizeof b->rows[0]))
        return;
    timing *t = &b->rows[b->n_rows++];
    snprintf(t->label, sizeof t->label, "%s", label);
    t->calls = 1;
    t->seconds = seconds;
}

/* Runs one backend call, synchronised so its time is its own, and books it under the label. */
#define TIMED(b, label, call)                                                          \
    do {                                                                               \
        if ((b)->failed)                                                               \
            break;                                                                     \
        double t0_ = now();                                                            \
        tp_status st_ = (call);                                                        \
        if (!st_)                                                                      \
            st_ = (b)->ops->sync((b)->be);                                             \
        record((b), (label), now() - t0_);                                             \
        if (st_) {                                                                     \
            fprintf(stderr, "bench_backend: %s failed: %s\n", #call, services_last_error()); \
            (b)->failed = st_;                                                         \
        }                                                                              \
    } while (0)

/* ------------------------------------------------------------------ tensors */

static tp_tensor new_tensor(bench *b, tp_tensor t, double fill)
{
    if (b->failed)
        return t;
    tp_status st = b->ops->alloc(b->be, &t, "benchmark tensor");
    if (!st)
        st = b->ops->fill(b->be, &t, fill);
    if (st) {
        fprintf(stderr, "bench_backend: allocation failed: %s\n", services_last_error());
        b->failed = st;
    }
    return t;
}

static tp_tensor act(bench *b, int c, int hw)
{
    return new_tensor(b, tp_tensor_4d(TP_DTYPE_F32, b->layout, b->batch, c, hw, hw), 0.01);
}

static tp_tensor vec(bench *b, int n, double fill)
{
    return new_tensor(b, tp_tensor_2d(TP_DTYPE_F32, n, 0), fill);
}

static void release(bench *b, tp_tensor *t)
{
    if (t->data)
        b->ops->free(b->be, t);
}

/* A trainable tensor with its gradient and momentum buffer. */
typedef struct param {
    tp_tensor value, grad, velocity;
} param;

static void param_init(bench *b, param *p, tp_tensor shape, double value)
{
    p->value = new_tensor(b, shape, value);
    p->grad = new_tensor(b, shape, 0);
    p->velocity = new_tensor(b, shape, 0);
}

static void param_free(bench *b, param *p)
{
    release(b, &p->value), release(b, &p->grad), release(b, &p->velocity);
}

/* conv (no bias) -> batch norm, with everything the backward pass needs. */
typedef struct conv_bn {
    int cin, cout, stride, in_hw, out_hw;
    tp_conv_desc desc;
    param w, gamma, beta;
    tp_tensor running_mean, running_var, save_mean, save_invstd;
    tp_tensor conv_out, bn_out; /* activations */
    char conv_label[48];
    char bn_label[48];
} conv_bn;

static void conv_bn_init(bench *b, conv_bn *l, int cin, int cout, int stride, int in_hw)
{
    l->cin = cin, l->cout = cout, l->stride = stride, l->in_hw = in_hw;
    l->out_hw = (in_hw + 2 - 3) / stride + 1;
    l->desc = (tp_conv_desc){ stride, stride, 1, 1, 1, 1 };
    param_init(b, &l->w, tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, cout, cin, 3, 3), 0.01);
    param_init(b, &l->gamma, tp_tensor_2d(TP_DTYPE_F32, cout, 0), 1);
    param_init(b, &l->beta, tp_tensor_2d(TP_DTYPE_F32, cout, 0), 0);
    l->running_mean = vec(b, cout, 0);
    l->running_var = vec(b, cout, 1);
    l->save_mean = vec(b, cout, 0);
    l->save_invstd = vec(b, cout, 1);
    l->conv_out = act(b, cout, l->out_hw);
    l->bn_out = act(b, cout, l->out_hw);
    snprintf(l->conv_label, sizeof l->conv_label, "%d->%d s%d %dx%d", cin, cout, stride, in_hw,
             in_hw);
    snprintf(l->bn_label, sizeof l->bn_label, "%d ch %dx%d", cout, l->out_hw, l->out_hw);
}

static void conv_bn_free(bench *b, conv_bn *l)
{
    param_free(b, &l->w), param_free(b, &l->gamma), param_free(b, &l->beta);
    release(b, &l->running_mean), release(b, &l->running_var);
    release(b, &l->save_mean), release(b, &l->save_invstd);
    release(b, &l->conv_out), release(b, &l->bn_out);
}

static void label2(char *out, size_t size, const char *op, const char *shape)
{
    snprintf(out, size, "%-20s %s", op, shape);
}

static void conv_bn_forward(bench *b, conv_bn *l, const tp_tensor *x)
{
    static const tp_bn_desc bn = { 1e-5, 0.1 };
    char lab[80];
    label2(lab, sizeof lab, "conv_forward", l->conv_label);
    TIMED(b, lab, b->ops->conv_forward(b->be, &l->desc, x, &l->w.value, NULL, &l->conv_out));
    label2(lab, sizeof lab, "batchnorm_train", l->bn_label);
    TIMED(b, lab, b->ops->batchnorm_train(b->be, &bn, &l->conv_out, &l->gamma.value,
                                          &l->beta.value, &l->bn_out, &l->running_mean,
                                          &l->running_var, &l->save_mean, &l->save_invstd));
}

/* dy (gradient of bn_out) -> parameter gradients, and dx unless dx is NULL. `scratch` has
 * conv_out's shape. */
static void conv_bn_backward(bench *b, conv_bn *l, const tp_tensor *x, const tp_tensor *dy,
                             tp_tensor *scratch, tp_tensor *dx)
{
    static const tp_bn_desc bn = { 1e-5, 0.1 };
    char lab[80];
    label2(lab, sizeof lab, "batchnorm_backward", l->bn_label);
    TIMED(b, lab, b->ops->batchnorm_backward(b->be, &bn, &l->conv_out, dy, &l->gamma.value,
                                             &l->save_mean, &l->save_invstd, scratch,
                                             &l->gamma.grad, &l->beta.grad));
    label2(lab, sizeof lab, "conv_backward_filter", l->conv_label);
    TIMED(b, lab, b->ops->conv_backward_filter(b->be, &l->desc, x, scratch, &l->w.grad, NULL));
    if (dx) {
        label2(lab, sizeof lab, "conv_backward_data", l->conv_label);
        TIMED(b, lab, b->ops->conv_backward_data(b->be, &l->desc, scratch, &l->w.value, dx));
    }
}

/* A basic block: conv-bn-relu-conv-bn, + shortcut (identity or subsample_pad), relu. */
typedef struct block {
    conv_bn a, b;
    tp_tensor relu_a, shortcut, sum, out;
    int projected; /* shortcut A needed */
} block;

#define STAGES 3
#define BLOCKS_PER_STAGE 3 /* ResNet-20: n = 3 */

typedef struct resnet {
    conv_bn stem;
    tp_tensor stem_out;
    block blocks[STAGES * BLOCKS_PER_STAGE];
    tp_tensor input, pooled, logits, labels, loss;
    param fc_w, fc_b;
    /* gradient buffers, one per activation size */
    tp_tensor g1[3], g2[3], g3[3], dpooled, dlogits;
} resnet;

static void resnet_init(bench *b, resnet *m)
{
    static const int widths[STAGES] = { 16, 32, 64 };
    static const int sizes[STAGES] = { 32, 16, 8 };
    memset(m, 0, sizeof *m);
    m->input = act(b, 3, 32);
    conv_bn_init(b, &m->stem, 3, 16, 1, 32);
    m->stem_out = act(b, 16, 32);
    int cin = 16, hw = 32;
    for (int s = 0; s < STAGES; s++)
        for (int k = 0; k < BLOCKS_PER_STAGE; k++) {
            block *bl = &m->blocks[s * BLOCKS_PER_STAGE + k];
            int stride = (s > 0 && k == 0) ? 2 : 1;
            conv_bn_init(b, &bl->a, cin, widths[s], stride, hw);
            conv_bn_init(b, &bl->b, widths[s], widths[s], 1, sizes[s]);
            bl->relu_a = act(b, widths[s], sizes[s]);
            bl->projected = stride != 1 || cin != widths[s];
            if (bl->projected)
                bl->shortcut = act(b, widths[s], sizes[s]);
            bl->sum = act(b, widths[s], sizes[s]);
            bl->out = act(b, widths[s], sizes[s]);
            cin = widths[s], hw = sizes[s];
        }
    for (int s = 0; s < STAGES; s++) {
        m->g1[s] = act(b, widths[s], sizes[s]);
        m->g2[s] = act(b, widths[s], sizes[s]);
        m->g3[s] = act(b, widths[s], sizes[s]);
    }
    m->pooled = new_tensor(b, tp_tensor_2d(TP_DTYPE_F32, b->batch, 64), 0);
    m->dpooled = new_tensor(b, tp_tensor_2d(TP_DTYPE_F32, b->batch, 64), 0);
    m->logits = new_tensor(b, tp_tensor_2d(TP_DTYPE_F32, b->batch, 10), 0);
    m->dlogits = new_tensor(b, tp_tensor_2d(TP_DTYPE_F32, b->batch, 10), 0);
    m->labels = new_tensor(b, tp_tensor_2d(TP_DTYPE_I32, b->batch, 0), 3);
    m->loss = vec(b, 1, 0);
    param_init(b, &m->fc_w, tp_tensor_2d(TP_DTYPE_F32, 10, 64), 0.01);
    param_init(b, &m->fc_b, tp_tensor_2d(TP_DTYPE_F32, 10, 0), 0);
}

static void resnet_free(bench *b, resnet *m)
{
    release(b, &m->input), conv_bn_free(b, &m->stem), release(b, &m->stem_out);
    for (int i = 0; i < STAGES * BLOCKS_PER_STAGE; i++) {
        block *bl = &m->blocks[i];
        conv_bn_free(b, &bl->a), conv_bn_free(b, &bl->b);
        release(b, &bl->relu_a), release(b, &bl->shortcut), release(b, &bl->sum);
        release(b, &bl->out);
    }
    for (int s = 0; s < STAGES; s++)
        release(b, &m->g1[s]), release(b, &m->g2[s]), release(b, &m->g3[s]);
    release(b, &m->pooled), release(b, &m->dpooled), release(b, &m->logits);
    release(b, &m->dlogits), release(b, &m->labels), release(b, &m->loss);
    param_free(b, &m->fc_w), param_free(b, &m->fc_b);
}

static int stage_of(const tp_tensor *t)
{
    return t->shape[1] == 16 ? 0 : t->shape[1] == 32 ? 1 : 2;
}

static void shape_label(char *out, size_t size, const char *op, const tp_tensor *t)
{
    char shape[48];
    snprintf(shape, sizeof shape, "%d ch %dx%d", (int)t->shape[1], (int)t->shape[2],
             (int)t->shape[3]);
    label2(out, size, op, shape);
}

static void sgd(bench *b, param *p)
{
    TIMED(b, "sgd_update           (all parameters)",
          b->ops->sgd_update(b->be, &p->value, &p->grad, &p->velocity, 0.1, 0.9, 1e-4, 0));
}

static void train_step(bench *b, resnet *m)
{
    char lab[80];
    const int nblocks = STAGES * BLOCKS_PER_STAGE;
    /* ---- forward */
    conv_bn_forward(b, &m->stem, &m->input);
    shape_label(lab, sizeof lab, "relu_forward", &m->stem_out);
    TIMED(b, lab, b->ops->relu_forward(b->be, &m->stem.bn_out, &m->stem_out));
    const tp_tensor *x = &m->stem_out;
    for (int i = 0; i < nblocks; i++) {
        block *bl = &m->blocks[i];
        conv_bn_forward(b, &bl->a, x);
        shape_label(lab, sizeof lab, "relu_forward", &bl->relu_a);
        TIMED(b, lab, b->ops->relu_forward(b->be, &bl->a.bn_out, &bl->relu_a));
        conv_bn_forward(b, &bl->b, &bl->relu_a);
        const tp_tensor *shortcut = x;
        if (bl->projected) {
            shape_label(lab, sizeof lab, "subsample_pad_fwd", &bl->shortcut);
            TIMED(b, lab, b->ops->subsample_pad_forward(b->be, bl->a.stride, x, &bl->shortcut));
            shortcut = &bl->shortcut;
        }
        shape_label(lab, sizeof lab, "add", &bl->sum);
        TIMED(b, lab, b->ops->add(b->be, &bl->b.bn_out, shortcut, &bl->sum));
        shape_label(lab, sizeof lab, "relu_forward", &bl->out);
        TIMED(b, lab, b->ops->relu_forward(b->be, &bl->sum, &bl->out));
        x = &bl->out;
    }
    TIMED(b, "global_avgpool_fwd   64 ch 8x8",
          b->ops->global_avgpool_forward(b->be, x, &m->pooled));
    TIMED(b, "linear_forward       64->10",
          b->ops->linear_forward(b->be, &m->pooled, &m->fc_w.value, &m->fc_b.value, &m->logits));
    TIMED(b, "softmax_xent         10 classes",
          b->ops->softmax_xent(b->be, &m->logits, &m->labels, 0.0, 1.0, &m->loss, &m->dlogits));
    /* ---- backward */
    TIMED(b, "linear_backward      64->10",
          b->ops->linear_backward(b->be, &m->pooled, &m->fc_w.value, &m->dlogits, &m->dpooled,
                                  &m->fc_w.grad, &m->fc_b.grad));
    tp_tensor *dout = &m->g1[2];
    TIMED(b, "global_avgpool_bwd   64 ch 8x8",
          b->ops->global_avgpool_backward(b->be, &m->dpooled, dout));
    for (int i = nblocks - 1; i >= 0; i--) {
        block *bl = &m->blocks[i];
        const tp_tensor *x_in = i ? &m->blocks[i - 1].out : &m->stem_out;
        int s = stage_of(&bl->out), s_in = stage_of(x_in);
        tp_tensor *dsum = &m->g2[s], *tmp = &m->g3[s];
        shape_label(lab, sizeof lab, "relu_backward", &bl->out);
        TIMED(b, lab, b->ops->relu_backward(b->be, &bl->out, dout, dsum));
        /* dsum flows into both the second conv-bn and the shortcut. */
        conv_bn_backward(b, &bl->b, &bl->relu_a, dsum, tmp, dout);
        shape_label(lab, sizeof lab, "relu_backward", &bl->relu_a);
        TIMED(b, lab, b->ops->relu_backward(b->be, &bl->relu_a, dout, dout));
        /* gradient w.r.t. the block input, in the input's stage buffers */
        tp_tensor *dx = &m->g1[s_in], *dx_main = s_in == s ? tmp : &m->g3[s_in];
        conv_bn_backward(b, &bl->a, x_in, dout, s_in == s ? &m->g1[s] : tmp, dx_main);
        if (bl->projected) {
            tp_tensor *dshort = &m->g2[s_in];
            shape_label(lab, sizeof lab, "subsample_pad_bwd", &bl->shortcut);
            TIMED(b, lab, b->ops->subsample_pad_backward(b->be, bl->a.stride, dsum, dshort));
            shape_label(lab, sizeof lab, "add", dx);
            TIMED(b, lab, b->ops->add(b->be, dx_main, dshort, dx));
        } else {
            shape_label(lab, sizeof lab, "add", dx);
            TIMED(b, lab, b->ops->add(b->be, dx_main, dsum, dx));
        }
        dout = dx;
    }
    shape_label(lab, sizeof lab, "relu_backward", &m->stem_out);
    TIMED(b, lab, b->ops->relu_backward(b->be, &m->stem_out, dout, &m->g2[0]));
    conv_bn_backward(b, &m->stem, &m->input, &m->g2[0], &m->g3[0], NULL);
    /* ---- optimizer */
    sgd(b, &m->stem.w), sgd(b, &m->stem.gamma), sgd(b, &m->stem.beta);
    for (int i = 0; i < nblocks; i++) {
        block *bl = &m->blocks[i];
        sgd(b, &bl->a.w), sgd(b, &bl->a.gamma), sgd(b, &bl->a.beta);
        sgd(b, &bl->b.w), sgd(b, &bl->b.gamma), sgd(b, &bl->b.beta);
    }
    sgd(b, &m->fc_w), sgd(b, &m->fc_b);
}

/* ------------------------------------------------------------------ plugins and options */

/* Finds plugin file `file` (e.g. "backend-cpu.so"): $TP_PLUGIN_DIR, then the build tree's
 * plugins/.libs. */
static int find_plugin(const char *file, char *path, size_t size)
{
    const char *dirs[2] = { getenv("TP_PLUGIN_DIR"), TP_BENCH_BUILDDIR "/plugins/.libs" };
    for (int i = 0; i < 2; i++) {
        if (!dirs[i])
            continue;
        snprintf(path, size, "%s/%s", dirs[i], file);
        if (access(path, R_OK) == 0)
            return 1;
    }
    return 0;
}

static tp_status load_plugin(registry *r, const char *file)
{
    char path[4096];
    if (!find_plugin(file, path, sizeof path)) {
        fprintf(stderr, "bench_backend: %s not found (set TP_PLUGIN_DIR)\n", file);
        return TP_ERR_NOT_FOUND;
    }
    tp_status st = registry_load_file(r, path);
    if (st)
        fprintf(stderr, "bench_backend: %s: %s\n", path, services_last_error());
    return st;
}

typedef struct options {
    const char *backend;
    const char *model; /* NULL: the per-operation table */
    int training;
    int batch, steps, warmup;
    const char *threads;
    const char *settings[16]; /* --set KEY=VALUE for the backend, NULL-terminated */
    int n_settings;
    int layout_given;
    tp_layout layout;
    int json;
    int profile; /* with --model: time every backend call */
    int no_fuse; /* with --model: graph_set_fusion(g, 0) */
    int capture; /* with --model, training: forward/loss/backward through step capture */
    int per_tensor_update; /* with --capture: no API 1.7 grouped update */
} options;

static int cmp_rows(const void *pa, const void *pb)
{
    const timing *a = pa, *b = pb;
    return a->seconds < b->seconds ? 1 : a->seconds > b->seconds ? -1 : 0;
}

static int cmp_double(const void *pa, const void *pb)
{
    const double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_json(const options *o, const tp_backend_info *info, const char *model,
                       int64_t params, double med, double best, double warm,
                       const char *update)
{
    printf("{\"impl\": \"trainpipe\", \"backend\": \"%s\", \"model\": \"%s\", \"mode\": \"%s\", "
           "\"batch\": %d, \"layout\": \"%s\", \"threads\": %d, \"params\": %lld, "
           "\"steps\": %d, \"median_step_s\": %.6f, \"best_step_s\": %.6f, "
           "\"first_step_s\": %.6f, \"images_per_s\": %.3f, \"capture\": %s, "
           "\"update\": \"%s\", \"settings\": \"",
           info->name, model, o->training ? "train" : "infer", o->batch,
           o->layout == TP_LAYOUT_NHWC ? "nhwc" : "nchw", info->threads, (long long)params,
           o->steps, med, best, warm, o->batch / med, o->capture ? "true" : "false", update);
    for (int i = 0; i < o->n_settings; i++)
        printf("%s%s", i ? " " : "", o->settings[i]);
    printf("\"}\n");
}

/* ------------------------------------------------------------------ per-operation table */

static int run_ops(const options *o, bench *b, const tp_backend_info *info)
{
    resnet m;
    double *times = calloc((size_t)o->steps, sizeof *times);
    if (!times)
        return 1;
    resnet_init(b, &m);
    /* Warm-up steps: create and cache every primitive; not timed. */
    double t0 = now(), warm = 0;
    for (int s = 0; s < o->warmup && !b->failed; s++) {
        train_step(b, &m);
        if (s == 0)
            warm = now() - t0;
    }
    b->recording = 1;
    double total = 0;
    for (int s = 0; s < o->steps && !b->failed; s++) {
        t0 = now();
        train_step(b, &m);
        times[s] = now() - t0;
        total += times[s];
    }
    int rc = 0;
    if (b->failed) {
        rc = 1;
    } else if (o->json) {
        double best = times[0];
        for (int s = 1; s < o->steps; s++)
            best = times[s] < best ? times[s] : best;
        print_json(o, info, "resnet20-ops", 269722, median(times, o->steps), best, warm, "per tensor");
    } else {
        double per_step = total / o->steps, ops_sum = 0;
        for (int i = 0; i < b->n_rows; i++)
            ops_sum += b->rows[i].seconds;
        qsort(b->rows, (size_t)b->n_rows, sizeof b->rows[0], cmp_rows);
        printf("ResNet-20 CIFAR-10 training step on backend \"%s\" (%s, %d threads), batch %d, "
               "%s, %d timed steps\n\n", info->name, info->device_name, info->threads, o->batch,
               b->layout == TP_LAYOUT_NHWC ? "NHWC" : "NCHW", o->steps);
        printf("%-44s %9s %12s %12s %7s\n", "operation and shape", "calls/step", "ms/call",
               "ms/step", "share");
        for (int i = 0; i < b->n_rows; i++) {
            const timing *t = &b->rows[i];
            double calls = (double)t->calls / o->steps;
            printf("%-44s %9.0f %12.3f %12.3f %6.1f%%\n", t->label, calls,
                   1e3 * t->seconds / t->calls, 1e3 * t->seconds / o->steps,
                   100.0 * t->seconds / ops_sum);
        }
        double med = median(times, o->steps);
        printf("\nfirst (warm-up) step, creating primitives: %.1f ms\n", 1e3 * warm);
        printf("step time: mean %.1f ms, median %.1f ms, best %.1f ms (operations %.1f ms)\n",
               1e3 * per_step, 1e3 * med, 1e3 * times[0], 1e3 * ops_sum / o->steps);
        printf("throughput: %.1f images/s (median step), %.1f images/s (best step)\n",
               o->batch / med, o->batch / times[0]);
    }
    resnet_free(b, &m);
    free(times);
    return rc;
}

/* ------------------------------------------------------------------ --profile */

/* With --profile the graph runs on a copy of the backend's operation table whose entries time
 * each call (synchronised) and book it by operation and output shape, as the per-operation
 * table does; the graph executor's own calls (copies and additions that sum gradients)
 * show up as well. One table at a time, hence the file-level state. */
static bench prof;
static const tp_backend_ops *prof_real;

static void prof_label(char *out, size_t size, const char *op, const tp_tensor *t)
{
    if (t && t->ndim == 4)
        snprintf(out, size, "%-22s %lld ch %lldx%lld", op, (long long)t->shape[1],
                 (long long)t->shape[2], (long long)t->shape[3]);
    else if (t)
        snprintf(out, size, "%-22s %lld values", op, (long long)tp_tensor_count(t));
    else
        snprintf(out, size, "%s", op);
}

/* Times `call` (an expression on prof_real) and books it under op and shape tensor t. */
#define PROF(op, t, call)                                                                  \
    do {                                                                                   \
        char lab_[80];                                                                     \
        double t0_ = now();                                                                \
        tp_status st_ = (call);                                                            \
        if (!st_)                                                                          \
            st_ = prof_real->sync(self);                                                   \
        prof_label(lab_, sizeof lab_, (op), (t));                                          \
        record(&prof, lab_, now() - t0_);                                                  \
        return st_;                                                                        \
    } while (0)

static tp_status p_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream s)
{
    PROF("copy", dst, prof_real->copy(self, dst, src, s));
}
static tp_status p_fill(void *self, tp_tensor *t, double v)
{
    PROF("fill", t, prof_real->fill(self, t, v));
}
static tp_status p_conv_fwd(void *self, const tp_conv_desc *d, const tp_tensor *x,
                            const tp_tensor *w, const tp_tensor *b, tp_tensor *y)
{
    PROF("conv_forward", y, prof_real->conv_forward(self, d, x, w, b, y));
}
static tp_status p_conv_bwd_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                 const tp_tensor *w, tp_tensor *dx)
{
    PROF("conv_backward_data", dy, prof_real->conv_backward_data(self, d, dy, w, dx));
}
static tp_status p_conv_bwd_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                   const tp_tensor *dy, tp_tensor *dw, tp_tensor *db)
{
    PROF("conv_backward_filter", dy, prof_real->conv_backward_filter(self, d, x, dy, dw, db));
}
static tp_status p_bn_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *g, const tp_tensor *b, tp_tensor *y, tp_tensor *rm,
                            tp_tensor *rv, tp_tensor *sm, tp_tensor *si)
{
    PROF("batchnorm_train", y, prof_real->batchnorm_train(self, d, x, g, b, y, rm, rv, sm, si));
}
static tp_status p_bn_infer(void *self, const tp_bn_desc *d, const tp_tensor *x,
                            const tp_tensor *g, const tp_tensor *b, const tp_tensor *rm,
                            const tp_tensor *rv, tp_tensor *y)
{
    PROF("batchnorm_infer", y, prof_real->batchnorm_infer(self, d, x, g, b, rm, rv, y));
}
static tp_status p_bn_bwd(void *self, const tp_bn_desc *d, const tp_tensor *x,
                          const tp_tensor *dy, const tp_tensor *g, const tp_tensor *sm,
                          const tp_tensor *si, tp_tensor *dx, tp_tensor *dg, tp_tensor *db)
{
    PROF("batchnorm_backward", dx,
         prof_real->batchnorm_backward(self, d, x, dy, g, sm, si, dx, dg, db));
}
static tp_status p_relu_fwd(void *self, const tp_tensor *x, tp_tensor *y)
{
    PROF("relu_forward", y, prof_real->relu_forward(self, x, y));
}
static tp_status p_relu_bwd(void *self, const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    PROF("relu_backward", dx, prof_real->relu_backward(self, y, dy, dx));
}
static tp_status p_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    PROF("add", y, prof_real->add(self, a, b, y));
}
static tp_status p_pool_fwd(void *self, const tp_pool_desc *d, const tp_tensor *x, tp_tensor *y)
{
    PROF("pool_forward", y, prof_real->pool_forward(self, d, x, y));
}
static tp_status p_pool_bwd(void *self, const tp_pool_desc *d, const tp_tensor *x,
                            const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    PROF("pool_backward", dx, prof_real->pool_backward(self, d, x, y, dy, dx));
}
static tp_status p_gap_fwd(void *self, const tp_tensor *x, tp_tensor *y)
{
    PROF("global_avgpool_fwd", x, prof_real->global_avgpool_forward(self, x, y));
}
static tp_status p_gap_bwd(void *self, const tp_tensor *dy, tp_tensor *dx)
{
    PROF("global_avgpool_bwd", dx, prof_real->global_avgpool_backward(self, dy, dx));
}
static tp_status p_linear_fwd(void *self, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *b, tp_tensor *y)
{
    PROF("linear_forward", w, prof_real->linear_forward(self, x, w, b, y));
}
static tp_status p_linear_bwd(void *self, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw, tp_tensor *db)
{
    PROF("linear_backward", w, prof_real->linear_backward(self, x, w, dy, dx, dw, db));
}
static tp_status p_xent(void *self, const tp_tensor *l, const tp_tensor *lab, double s,
                        double gs, tp_tensor *loss, tp_tensor *dl)
{
    PROF("softmax_xent", l, prof_real->softmax_xent(self, l, lab, s, gs, loss, dl));
}
static tp_status p_subpad_fwd(void *self, int stride, const tp_tensor *x, tp_tensor *y)
{
    PROF("subsample_pad_fwd", y, prof_real->subsample_pad_forward(self, stride, x, y));
}
static tp_status p_subpad_bwd(void *self, int stride, const tp_tensor *dy, tp_tensor *dx)
{
    PROF("subsample_pad_bwd", dy, prof_real->subsample_pad_backward(self, stride, dy, dx));
}
static tp_status p_sgd(void *self, tp_tensor *p, const tp_tensor *g, tp_tensor *v, double lr,
                       double mu, double wd, int nesterov)
{
    PROF("sgd_update", NULL, prof_real->sgd_update(self, p, g, v, lr, mu, wd, nesterov));
}

static tp_status p_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    PROF("add_relu", y, prof_real->add_relu(self, a, b, y));
}
static tp_status p_bn_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *g, const tp_tensor *b, tp_tensor *y,
                                 tp_tensor *rm, tp_tensor *rv, tp_tensor *sm, tp_tensor *si,
                                 tp_tensor *ws)
{
    PROF("batchnorm_relu_train", y,
         prof_real->batchnorm_relu_train(self, d, x, g, b, y, rm, rv, sm, si, ws));
}
static tp_status p_bn_relu_bwd(void *self, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *y, const tp_tensor *ws, const tp_tensor *dy,
                               const tp_tensor *g, const tp_tensor *sm, const tp_tensor *si,
                               tp_tensor *dx, tp_tensor *dg, tp_tensor *db)
{
    PROF("batchnorm_relu_bwd", dx,
         prof_real->batchnorm_relu_backward(self, d, x, y, ws, dy, g, sm, si, dx, dg, db));
}

/* A table that times every operation the graph uses and forwards it to `real`. */
static tp_backend_ops profiled_ops(const tp_backend_ops *real)
{
    tp_backend_ops o = *real;
    prof_real = real;
    o.copy = p_copy, o.fill = p_fill;
    o.conv_forward = p_conv_fwd, o.conv_backward_data = p_conv_bwd_data;
    o.conv_backward_filter = p_conv_bwd_filter;
    o.batchnorm_train = p_bn_train, o.batchnorm_infer = p_bn_infer;
    o.batchnorm_backward = p_bn_bwd;
    o.relu_forward = p_relu_fwd, o.relu_backward = p_relu_bwd, o.add = p_add;
    o.pool_forward = real->pool_forward ? p_pool_fwd : NULL;
    o.pool_backward = real->pool_backward ? p_pool_bwd : NULL;
    o.global_avgpool_forward = p_gap_fwd, o.global_avgpool_backward = p_gap_bwd;
    o.linear_forward = p_linear_fwd, o.linear_backward = p_linear_bwd;
    o.softmax_xent = p_xent;
    o.subsample_pad_forward = real->subsample_pad_forward ? p_subpad_fwd : NULL;
    o.subsample_pad_backward = real->subsample_pad_backward ? p_subpad_bwd : NULL;
    o.sgd_update = real->sgd_update ? p_sgd : NULL;
    o.add_relu = real->add_relu ? p_add_relu : NULL;
    o.batchnorm_relu_train = real->batchnorm_relu_train ? p_bn_relu_train : NULL;
    o.batchnorm_relu_backward = real->batchnorm_relu_backward ? p_bn_relu_bwd : NULL;
    return o;
}

static void print_profile(int steps)
{
    double sum = 0;
    for (int i = 0; i < prof.n_rows; i++)
        sum += prof.rows[i].seconds;
    qsort(prof.rows, (size_t)prof.n_rows, sizeof prof.rows[0], cmp_rows);
    printf("\n%-44s %9s %12s %12s %7s\n", "operation and output shape", "calls/step",
           "ms/call", "ms/step", "share");
    for (int i = 0; i < prof.n_rows; i++) {
        const timing *t = &prof.rows[i];
        printf("%-44s %9.1f %12.3f %12.3f %6.1f%%\n", t->label, (double)t->calls / steps,
               1e3 * t->seconds / t->calls, 1e3 * t->seconds / steps,
               100.0 * t->seconds / sum);
    }
    printf("operations: %.1f ms/step\n", 1e3 * sum / steps);
}

/* ------------------------------------------------------------------ the graph executor */

typedef struct model_spec {
    const char *name;
    const char *kv[6];
    int channels, size, classes;
    int64_t params; /* what the network must have (torchvision / He et al.) */
} model_spec;

static const model_spec models[] = {
    { "resnet20", { "family=cifar", "depth=20", "shortcut=A", "num_classes=10", NULL },
      3, 32, 10, 269722 },
    { "resnet50", { "family=imagenet", "depth=50", "num_classes=1000", NULL },
      3, 224, 1000, 25557032 },
};

typedef struct graph_bench {
    const tp_backend *be;
    graph *g;
    tp_tensor input, labels, loss, dlogits;
    tp_tensor *velocity; /* one per parameter */
    size_t n_params;
    int training;
    step_capture *capture; /* --capture */
    tp_tensor opt_scalars;  /* --capture with sgd_update_dev: [lr] on the device */
    tp_update_item *items;  /* the grouped update's items (API 1.7), or NULL */
    /* the trainer's gate where the backend checks gradients (API 1.8): gate = loss + check */
    tp_tensor gate, grad_check;
    const tp_tensor **grads;
} graph_bench;

/* Uploads n values from host memory into the freshly allocated t. */
static tp_status upload(const tp_backend *be, tp_tensor *t, const void *host)
{
    tp_status st = be->ops->alloc(be->self, t, "benchmark input");
    if (st)
        return st;
    tp_tensor h = *t;
    h.device = TP_DEVICE_HOST;
    h.data = (void *)host;
    if (h.ndim == 4)
        h.layout = TP_LAYOUT_NCHW;
    st = be->ops->copy(be->self, t, &h, TP_STREAM_COMPUTE);
    return st ? st : be->ops->sync(be->self);
}

/* Forward, loss and backward of a training step (what step capture records). */
static tp_status forward_backward(void *ctx, const tp_tensor *x, const tp_tensor *labels)
{
    graph_bench *gb = ctx;
    const tp_backend *be = gb->be;
    tp_status st = graph_forward(gb->g, x, 1);
    if (!st)
        st = be->ops->softmax_xent(be->self, graph_logits(gb->g), labels, 0.0, 1.0, &gb->loss,
                                   &gb->dlogits);
    if (!st)
        st = graph_backward(gb->g, &gb->dlogits);
    return st;
}

/* conf/default.ini's optimizer, recorded with the step: Nesterov SGD, lr (0.1) read from
 * the device, momentum 0.9, wd 5e-4, gated on the loss. */
static tp_status forward_backward_update(void *ctx, const tp_tensor *x, const tp_tensor *labels)
{
    graph_bench *gb = ctx;
    const tp_backend *be = gb->be;
    tp_status st = forward_backward(gb, x, labels);
    size_t n;
    const tp_param_ref *p = graph_params(gb->g, &n);
    const tp_tensor *gate = &gb->loss;
    if (!st && gb->grads) { /* as the trainer gates it: loss + gradient check */
        st = be->ops->check_finite_group(be->self, gb->grads, n, &gb->grad_check);
        if (!st)
            st = be->ops->copy(be->self, &gb->gate, &gb->loss, TP_STREAM_COMPUTE);
        if (!st)
            st = be->ops->axpby(be->self, 1.0, &gb->grad_check, 1.0, &gb->gate);
        gate = &gb->gate;
    }
    if (!st && gb->items)
        return be->ops->sgd_update_group_dev(be->self, gb->items, n, &gb->opt_scalars, gate,
                                             0.9, 1);
    for (size_t i = 0; !st && i < n; i++)
        st = be->ops->sgd_update_dev(be->self, p[i].value, p[i].grad, &gb->velocity[i],
                                     &gb->opt_scalars, gate, 0.9, 5e-4, 1);
    return st;
}

/* One step as the trainer runs it (the data already on the backend). */
static tp_status graph_step(graph_bench *gb)
{
    const tp_backend *be = gb->be;
    tp_status st;
    if (!gb->training)
        st = graph_forward(gb->g, &gb->input, 0);
    else if (gb->capture && gb->opt_scalars.data) {
        st = step_capture_run(gb->capture, &gb->input, &gb->labels, 1.0,
                              forward_backward_update, gb);
        return st ? st : be->ops->sync(be->self);
    } else if (gb->capture)
        st = step_capture_run(gb->capture, &gb->input, &gb->labels, 1.0, forward_backward, gb);
    else
        st = forward_backward(gb, &gb->input, &gb->labels);
    if (!st && gb->training) {
        /* conf/default.ini's optimizer: Nesterov SGD, lr 0.1, momentum 0.9, wd 5e-4 */
        size_t n;
        const tp_param_ref *p = graph_params(gb->g, &n);
        for (size_t i = 0; !st && i < n; i++)
            st = be->ops->sgd_update(be->self, p[i].value, p[i].grad, &gb->velocity[i], 0.1,
                                     0.9, 5e-4, 1);
    }
    return st ? st : be->ops->sync(be->self);
}

static int run_graph(const options *o, registry *r, const tp_backend *be,
                     const tp_backend_info *info)
{
    const model_spec *spec = NULL;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (!strcmp(models[i].name, o->model))
            spec = &models[i];
    if (!spec) {
        fprintf(stderr, "bench_backend: unknown model %s (resnet20, resnet50)\n", o->model);
        return 2;
    }
    if (load_plugin(r, "model-resnet.so"))
        return 1;
    const registry_entry *e = registry_find(r, TP_KIND_MODEL, "resnet");
    instance model;
    if (!e || instance_create(e->component, spec->kv, &model)) {
        fprintf(stderr, "bench_backend: cannot create model resnet: %s\n",
                services_last_error());
        return 1;
    }
    graph_bench gb;
    memset(&gb, 0, sizeof gb);
    gb.be = be;
    gb.training = o->training;
    int rc = 1;
    tp_status st = TP_OK;
    float *xh = NULL;
    int32_t *yh = NULL;
    double *times = calloc((size_t)o->steps, sizeof *times);
    tp_model_input in = { sizeof in, spec->channels, spec->size, spec->size, spec->classes };
    gb.g = graph_build(model.component->ops, model.self, &in);
    if (!gb.g || !times)
        goto done;
    int64_t params = graph_param_count(gb.g);
    if (params != spec->params) {
        fprintf(stderr, "bench_backend: %s has %lld parameters, expected %lld\n", spec->name,
                (long long)params, (long long)spec->params);
        goto done;
    }
    graph_set_fusion(gb.g, !o->no_fuse);
    if ((st = graph_bind(gb.g, be, o->batch, o->layout)) || (st = graph_init_params(gb.g, 1)))
        goto done;
    /* Inputs uniform in [0, 1) like scaled pixels, labels spread over the classes. */
    const size_t nx = (size_t)o->batch * spec->channels * spec->size * spec->size;
    xh = malloc(nx * sizeof *xh);
    yh = malloc((size_t)o->batch * sizeof *yh);
    if (!xh || !yh)
        goto done;
    tp_rng rng = tp_rng_make(1, 2, 3);
    for (size_t i = 0; i < nx; i++)
        xh[i] = (float)tp_rng_uniform(&rng);
    for (int i = 0; i < o->batch; i++)
        yh[i] = (int32_t)((i * 7) % spec->classes);
    gb.input = tp_tensor_4d(TP_DTYPE_F32, o->layout, o->batch, spec->channels, spec->size,
                            spec->size);
    gb.labels = tp_tensor_2d(TP_DTYPE_I32, o->batch, 0);
    gb.loss = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    gb.dlogits = tp_tensor_2d(TP_DTYPE_F32, o->batch, spec->classes);
    if ((st = upload(be, &gb.input, xh)) || (st = upload(be, &gb.labels, yh)) ||
        (st = be->ops->alloc(be->self, &gb.loss, "loss")) ||
        (st = be->ops->alloc(be->self, &gb.dlogits, "dlogits")))
        goto done;
    const tp_param_ref *p = graph_params(gb.g, &gb.n_params);
    gb.velocity = calloc(gb.n_params, sizeof *gb.velocity);
    if (!gb.velocity)
        goto done;
    for (size_t i = 0; i < gb.n_params; i++) {
        gb.velocity[i] = *p[i].value;
        gb.velocity[i].data = NULL;
        if ((st = be->ops->alloc(be->self, &gb.velocity[i], "velocity")) ||
            (st = be->ops->fill(be->self, &gb.velocity[i], 0.0)))
            goto done;
    }
    if (o->capture && (st = step_capture_create(be, &gb.capture)))
        goto done;
    if (gb.capture && be->ops->sgd_update_dev) {
        const float lr = 0.1f;
        gb.opt_scalars = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
        if ((st = upload(be, &gb.opt_scalars, &lr)))
            goto done;
        if (!o->per_tensor_update && TP_BACKEND_HAS(be->ops, sgd_update_group_dev)) {
            if (!(gb.items = calloc(gb.n_params, sizeof *gb.items)))
                goto done;
            for (size_t i = 0; i < gb.n_params; i++)
                gb.items[i] = (tp_update_item){p[i].value, p[i].grad, {&gb.velocity[i], NULL},
                                               5e-4};
        }
        if (TP_BACKEND_HAS(be->ops, check_finite_group)) {
            if (!(gb.grads = calloc(gb.n_params ? gb.n_params : 1, sizeof *gb.grads)))
                goto done;
            for (size_t i = 0; i < gb.n_params; i++)
                gb.grads[i] = p[i].grad;
            gb.gate = gb.grad_check = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
            if ((st = be->ops->alloc(be->self, &gb.gate, "gate")) ||
                (st = be->ops->alloc(be->self, &gb.grad_check, "gradient check")))
                goto done;
        }
    }
    const char *update = !gb.opt_scalars.data ? "op by op"
                         : gb.items           ? "grouped"
                                              : "per tensor";
    double t0 = now(), warm = 0;
    for (int s = 0; s < o->warmup && !st; s++) {
        st = graph_step(&gb);
        if (s == 0)
            warm = now() - t0;
    }
    double best = INFINITY, total = 0;
    prof.recording = 1;
    for (int s = 0; s < o->steps && !st; s++) {
        t0 = now();
        st = graph_step(&gb);
        times[s] = now() - t0;
        total += times[s];
        best = times[s] < best ? times[s] : best;
    }
    if (st)
        goto done;
    step_capture_stats cs;
    step_capture_get_stats(gb.capture, &cs);
    if (gb.capture && cs.replays < o->steps) {
        fprintf(stderr, "bench_backend: --capture: only %lld of %d timed steps were replayed "
                        "(recording failed?)\n", (long long)cs.replays, o->steps);
        goto done;
    }
    double med = median(times, o->steps);
    if (o->json) {
        print_json(o, info, spec->name, params, med, best, warm, update);
    } else {
        printf("%s (%lld parameters, %dx%dx%d, %d classes) %s on backend \"%s\" (%s, %d "
               "threads), batch %d, %s\n", spec->name, (long long)params, spec->channels,
               spec->size, spec->size, spec->classes,
               o->training ? "training step" : "inference", info->name, info->device_name,
               info->threads, o->batch, o->layout == TP_LAYOUT_NHWC ? "NHWC" : "NCHW");
        printf("activations stored as %s\n", tp_dtype_name(graph_activation_dtype(gb.g)));
        printf("ReLUs fused into the node before them: %d; batch norms computed with the "
               "addition after them: %d%s\n", graph_fused_count(gb.g),
               graph_fused_add_count(gb.g), o->no_fuse ? " (--no-fuse)" : "");
        if (gb.capture)
            printf("step capture: %lld recording(s), %lld replays, %lld steps op by op; the "
                   "optimizer %s%s\n",
                   (long long)cs.recordings, (long long)cs.replays, (long long)cs.unrecorded,
                   gb.opt_scalars.data ? "recorded with the step, " : "op by op after it",
                   gb.opt_scalars.data ? update : "");
        printf("first step %.1f ms; %d timed steps: mean %.1f ms, median %.1f ms, best %.1f "
               "ms\n", 1e3 * warm, o->steps, 1e3 * total / o->steps, 1e3 * med, 1e3 * best);
        printf("throughput: %.1f images/s (median step), %.1f images/s (best step)\n",
               o->batch / med, o->batch / best);
        if (o->profile)
            print_profile(o->steps);
    }
    rc = 0;
done:
    if (rc && st)
        fprintf(stderr, "bench_backend: %s: %s\n", spec->name, services_last_error());
    else if (rc && !gb.g)
        fprintf(stderr, "bench_backend: graph_build: %s\n", services_last_error());
    for (size_t i = 0; gb.velocity && i < gb.n_params; i++)
        if (gb.velocity[i].data)
            be->ops->free(be->self, &gb.velocity[i]);
    free(gb.velocity);
    free(gb.items);
    if (gb.opt_scalars.data)
        be->ops->free(be->self, &gb.opt_scalars);
    if (gb.gate.data)
        be->ops->free(be->self, &gb.gate);
    if (gb.grad_check.data)
        be->ops->free(be->self, &gb.grad_check);
    free(gb.grads);
    step_capture_free(gb.capture);
    tp_tensor *owned[4] = { &gb.input, &gb.labels, &gb.loss, &gb.dlogits };
    for (int i = 0; i < 4; i++)
        if (owned[i]->data)
            be->ops->free(be->self, owned[i]);
    graph_free(gb.g);
    instance_destroy(&model);
    free(times);
    free(xh);
    free(yh);
    return rc;
}

/* ------------------------------------------------------------------ main */

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [BACKEND] [--model resnet20|resnet50] [--mode train|infer] "
                    "[--batch N] [--steps S] [--warmup W] [--layout nchw|nhwc] [--threads T] "
                    "[--set KEY=VALUE]... [--json] [--profile] [--no-fuse] [--capture] "
                    "[--per-tensor-update]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    options o = { .backend = "cpu", .training = 1, .batch = 0, .steps = 0, .warmup = 0 };
    int batch_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has = i + 1 < argc;
        if (!strcmp(a, "--batch") && has)
            o.batch = atoi(argv[++i]), batch_given = 1;
        else if (!strcmp(a, "--steps") && has)
            o.steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has)
            o.warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && has)
            o.threads = argv[++i];
        else if (!strcmp(a, "--set") && has) {
            if (o.n_settings == (int)(sizeof o.settings / sizeof o.settings[0]) - 2 ||
                !strchr(argv[i + 1], '='))
                return usage(argv[0]);
            o.settings[o.n_settings++] = argv[++i];
        }
        else if (!strcmp(a, "--model") && has)
            o.model = argv[++i];
        else if (!strcmp(a, "--mode") && has) {
            const char *m = argv[++i];
            if (strcmp(m, "train") && strcmp(m, "infer"))
                return usage(argv[0]);
            o.training = !strcmp(m, "train");
        } else if (!strcmp(a, "--layout") && has) {
            const char *l = argv[++i];
            if (strcmp(l, "nchw") && strcmp(l, "nhwc"))
                return usage(argv[0]);
            o.layout = !strcmp(l, "nchw") ? TP_LAYOUT_NCHW : TP_LAYOUT_NHWC;
            o.layout_given = 1;
        } else if (!strcmp(a, "--json"))
            o.json = 1;
        else if (!strcmp(a, "--profile"))
            o.profile = 1;
        else if (!strcmp(a, "--no-fuse"))
            o.no_fuse = 1;
        else if (!strcmp(a, "--capture"))
            o.capture = 1;
        else if (!strcmp(a, "--per-tensor-update"))
            o.per_tensor_update = 1;
        else if (a[0] != '-')
            o.backend = a;
        else
            return usage(argv[0]);
    }
    if (!o.model && !o.training) {
        fprintf(stderr, "%s: the per-operation table times training only; use --model for "
                        "inference\n", argv[0]);
        return 2;
    }
    if (o.capture && (!o.model || !o.training || o.profile)) {
        fprintf(stderr, "%s: --capture needs --model in training mode, without --profile (its "
                        "per-call synchronisation cannot be recorded)\n", argv[0]);
        return 2;
    }
    if (o.per_tensor_update && !o.capture) {
        fprintf(stderr, "%s: --per-tensor-update applies to the update recorded with the step "
                        "(--capture)\n", argv[0]);
        return 2;
    }
    if (!batch_given) /* the shapes: ResNet-50 batch 16, ResNet-20 inference 256 */
        o.batch = o.model && !strcmp(o.model, "resnet50") ? 16 : o.training ? 128 : 256;
    if (!o.steps)
        o.steps = o.model && !strcmp(o.model, "resnet50") ? 5 : 10;
    if (!o.warmup)
        o.warmup = 2;
    if (o.capture && o.warmup < 2) {
        fprintf(stderr, "%s: --capture needs --warmup >= 2 (one unrecorded step, then the "
                        "recording), so that only replays are timed\n", argv[0]);
        return 2;
    }
    if (o.batch < 1 || o.steps < 1 || o.warmup < 1) {
        fprintf(stderr, "%s: --batch, --steps and --warmup must be >= 1\n", argv[0]);
        return 2;
    }
    char file[256], thread_kv[64];
    if (o.threads) {
        snprintf(thread_kv, sizeof thread_kv, "threads=%s", o.threads);
        o.settings[o.n_settings++] = thread_kv;
    }
    snprintf(file, sizeof file, "backend-%s.so", o.backend);
    registry *r = registry_new();
    if (!r || load_plugin(r, file)) {
        registry_free(r);
        return 1;
    }
    const registry_entry *e = registry_find(r, TP_KIND_BACKEND, o.backend);
    instance inst;
    /* o.settings stays NULL-terminated: --set leaves two slots, --threads takes one. */
    if (!e || instance_create(e->component, o.n_settings ? o.settings : NULL, &inst)) {
        fprintf(stderr, "%s: cannot create backend %s: %s\n", argv[0], o.backend,
                services_last_error());
        registry_free(r);
        return 1;
    }
    tp_backend be = { e->component->ops, inst.self };
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    be.ops->info(be.self, &info);
    if (!o.layout_given)
        o.layout = info.preferred_layout;
    int rc;
    tp_backend_ops timed_ops;
    if (o.model && o.profile) {
        timed_ops = profiled_ops(be.ops);
        be.ops = &timed_ops;
    }
    if (o.model) {
        rc = run_graph(&o, r, &be, &info);
    } else {
        bench b;
        memset(&b, 0, sizeof b);
        b.ops = be.ops;
        b.be = be.self;
        b.layout = o.layout;
        b.batch = o.batch;
        rc = run_ops(&o, &b, &info);
    }
    instance_destroy(&inst);
    registry_free(r);
    return rc;
}
