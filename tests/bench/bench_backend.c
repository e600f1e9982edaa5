/* bench_backend [BACKEND] [--batch N] [--steps S] [--layout nchw|nhwc] [--threads T]
 *
 * Times a ResNet-20 (CIFAR-10, 32x32x3 inputs, 10 classes) training step composed directly
 * from a backend's operations, issued in the order a forward + backward + SGD step issues
 * them: conv/bn/relu, basic blocks with shortcut A (subsample_pad + add), global average
 * pooling, linear, softmax cross-entropy, then the backward pass in reverse and one
 * sgd_update per parameter tensor. Every call is timed and grouped by operation and shape,
 * so the table shows where a step's time goes; the last line is the throughput in images/s.
 * A benchmark, not a test: built by `make bench`, never run by `make check`. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"
#include "services.h"

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

/* ------------------------------------------------------------------ main */

static int find_plugin(const char *name, char *path, size_t size)
{
    const char *dirs[3] = { getenv("TP_PLUGIN_DIR"), NULL, NULL };
    char a[2048], c[2048];
    snprintf(a, sizeof a, "%s/plugins/.libs", TP_BENCH_BUILDDIR);
    snprintf(c, sizeof c, "%s/plugins/backend-%s/.libs", TP_BENCH_BUILDDIR, name);
    dirs[1] = a, dirs[2] = c;
    for (int i = 0; i < 3; i++) {
        if (!dirs[i])
            continue;
        snprintf(path, size, "%s/backend-%s.so", dirs[i], name);
        if (access(path, R_OK) == 0)
            return 1;
    }
    return 0;
}

static int cmp_rows(const void *pa, const void *pb)
{
    const timing *a = pa, *b = pb;
    return a->seconds < b->seconds ? 1 : a->seconds > b->seconds ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *name = "cpu";
    int batch = 128, steps = 3;
    const char *threads = NULL;
    bench b;
    memset(&b, 0, sizeof b);
    b.layout = TP_LAYOUT_NHWC;
    int layout_given = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = argv[++i];
        else if (!strcmp(argv[i], "--layout") && i + 1 < argc) {
            const char *l = argv[++i];
            b.layout = !strcmp(l, "nchw") ? TP_LAYOUT_NCHW : TP_LAYOUT_NHWC;
            layout_given = 1;
        } else if (argv[i][0] != '-')
            name = argv[i];
        else {
            fprintf(stderr, "usage: %s [BACKEND] [--batch N] [--steps S] [--layout nchw|nhwc] "
                            "[--threads T]\n", argv[0]);
            return 2;
        }
    }
    if (batch < 1 || steps < 1) {
        fprintf(stderr, "%s: --batch and --steps must be >= 1\n", argv[0]);
        return 2;
    }
    char path[4096], thread_kv[64];
    if (!find_plugin(name, path, sizeof path)) {
        fprintf(stderr, "%s: backend-%s.so not found (set TP_PLUGIN_DIR)\n", argv[0], name);
        return 1;
    }
    registry *r = registry_new();
    if (!r || registry_load_file(r, path)) {
        fprintf(stderr, "%s: %s\n", argv[0], services_last_error());
        registry_free(r);
        return 1;
    }
    const registry_entry *e = registry_find(r, TP_KIND_BACKEND, name);
    instance inst;
    const char *kvs[2] = { NULL, NULL };
    if (threads) {
        snprintf(thread_kv, sizeof thread_kv, "threads=%s", threads);
        kvs[0] = thread_kv;
    }
    if (!e || instance_create(e->component, threads ? kvs : NULL, &inst)) {
        fprintf(stderr, "%s: cannot create backend %s: %s\n", argv[0], name,
                services_last_error());
        registry_free(r);
        return 1;
    }
    b.ops = e->component->ops;
    b.be = inst.self;
    b.batch = batch;
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    b.ops->info(b.be, &info);
    if (!layout_given)
        b.layout = info.preferred_layout;

    resnet m;
    resnet_init(&b, &m);
    /* Warm-up step: creates and caches every primitive; not timed. */
    double t0 = now();
    if (!b.failed)
        train_step(&b, &m);
    double warm = now() - t0;
    b.recording = 1;
    double total = 0, best = INFINITY;
    for (int s = 0; s < steps && !b.failed; s++) {
        /* Best of the steps as well as the mean: on a shared machine the mean is noisy. */
        t0 = now();
        train_step(&b, &m);
        double dt = now() - t0;
        total += dt;
        if (dt < best)
            best = dt;
    }
    int rc = 0;
    if (b.failed) {
        rc = 1;
    } else {
        double per_step = total / steps, ops_sum = 0;
        for (int i = 0; i < b.n_rows; i++)
            ops_sum += b.rows[i].seconds;
        qsort(b.rows, (size_t)b.n_rows, sizeof b.rows[0], cmp_rows);
        printf("ResNet-20 CIFAR-10 training step on backend \"%s\" (%s, %d threads), batch %d, "
               "%s, %d timed steps\n\n", info.name, info.device_name, info.threads, batch,
               b.layout == TP_LAYOUT_NHWC ? "NHWC" : "NCHW", steps);
        printf("%-44s %9s %12s %12s %7s\n", "operation and shape", "calls/step", "ms/call",
               "ms/step", "share");
        for (int i = 0; i < b.n_rows; i++) {
            const timing *t = &b.rows[i];
            double calls = (double)t->calls / steps;
            printf("%-44s %9.0f %12.3f %12.3f %6.1f%%\n", t->label, calls,
                   1e3 * t->seconds / t->calls, 1e3 * t->seconds / steps,
                   100.0 * t->seconds / ops_sum);
        }
        printf("\nfirst (warm-up) step, creating primitives: %.1f ms\n", 1e3 * warm);
        printf("step time: mean %.1f ms, best %.1f ms (operations %.1f ms)\n", 1e3 * per_step,
               1e3 * best, 1e3 * ops_sum / steps);
        printf("throughput: %.1f images/s (mean step), %.1f images/s (best step)\n",
               batch / per_step, batch / best);
    }
    resnet_free(&b, &m);
    instance_destroy(&inst);
    registry_free(r);
    return rc;
}
