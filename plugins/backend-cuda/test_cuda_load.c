/* Loads backend-cuda through the plugin registry and checks that
 *   - the descriptor is sane and every tp_backend_ops entry is implemented;
 *   - create() either succeeds (a GPU is present) or fails with TP_ERR_UNSUPPORTED and a
 *     message naming CUDA (no GPU) -- it must never crash;
 *   - with a GPU: a smoke test of copies (layout changes), convolution in both layouts,
 *     linear, softmax cross-entropy, batch-norm running statistics, sum_squares and the
 *     SGD step against float64 host references, printing the max difference of each;
 *     and the API 1.4 recordings (replays, nothing run while recording, another thread's
 *     work kept out, a refused allocation spoiling the recording).
 * The full per-op accuracy suite is tests/backend/test_ops (`test_ops cuda`). */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"
#include "services.h"

static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* ------------------------------------------------------------------ GPU smoke test helpers */

typedef struct gpu {
    const tp_backend_ops *ops;
    void *self;
} gpu;

static uint32_t rng_state = 12345u;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0) - 1.0);
}

static void randomize(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
}

/* A device tensor holding `data` (NCHW order on the host for 4-D) in `layout`. */
static int upload(gpu *g, tp_tensor *t, float *data, tp_layout layout)
{
    tp_tensor host = *t;
    host.device = TP_DEVICE_HOST;
    host.layout = TP_LAYOUT_NCHW;
    host.data = data;
    t->layout = t->ndim == 4 ? layout : TP_LAYOUT_NCHW;
    t->device = TP_DEVICE_DEVICE;
    if (g->ops->alloc(g->self, t, "test tensor") ||
        g->ops->copy(g->self, t, &host, TP_STREAM_COMPUTE)) {
        fprintf(stderr, "upload: %s\n", services_last_error());
        return -1;
    }
    return 0;
}

/* Copies device tensor t into `out` (NCHW order) and waits. */
static int download(gpu *g, const tp_tensor *t, float *out)
{
    tp_tensor host = *t;
    host.device = TP_DEVICE_HOST;
    host.layout = TP_LAYOUT_NCHW;
    host.data = out;
    if (g->ops->copy(g->self, &host, t, TP_STREAM_COMPUTE) || g->ops->sync(g->self)) {
        fprintf(stderr, "download: %s\n", services_last_error());
        return -1;
    }
    return 0;
}

static double max_diff(const float *a, const double *ref, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= m)) /* NaN counts as infinitely wrong */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static void report(const char *what, double diff, double tol)
{
    printf("%-40s max |diff| = %.3g (tolerance %.1g)\n", what, diff, tol);
    CHECK(diff <= tol, "%s: max difference %g exceeds %g", what, diff, tol);
}

static void smoke_copy(gpu *g)
{
    enum { N = 2, C = 3, H = 4, W = 5, COUNT = N * C * H * W };
    float in[COUNT], out[COUNT];
    double ref[COUNT];
    randomize(in, COUNT);
    for (int i = 0; i < COUNT; i++)
        ref[i] = in[i];
    tp_tensor a = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NHWC, N, C, H, W);
    tp_tensor b = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, N, C, H, W);
    if (upload(g, &a, in, TP_LAYOUT_NHWC))
        goto fail;
    b.device = TP_DEVICE_DEVICE;
    if (g->ops->alloc(g->self, &b, "b") || g->ops->copy(g->self, &b, &a, TP_STREAM_COPY) ||
        g->ops->sync(g->self) || download(g, &b, out))
        goto fail;
    report("copy host->NHWC->NCHW->host", max_diff(out, ref, COUNT), 0.0);
    g->ops->free(g->self, &a);
    g->ops->free(g->self, &b);
    return;
fail:
    CHECK(0, "copy: %s", services_last_error());
    g->ops->free(g->self, &a);
    g->ops->free(g->self, &b);
}

static void smoke_conv(gpu *g, tp_layout layout)
{
    enum { N = 2, CI = 3, H = 6, W = 5, CO = 4, K = 3 };
    const tp_conv_desc d = {1, 1, 1, 1, 1, 1};
    float x[N * CI * H * W], w[CO * CI * K * K], bias[CO], y[N * CO * H * W];
    double ref[N * CO * H * W];
    randomize(x, sizeof x / sizeof x[0]);
    randomize(w, sizeof w / sizeof w[0]);
    randomize(bias, CO);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < CO; o++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double acc = bias[o];
                    for (int c = 0; c < CI; c++)
                        for (int u = 0; u < K; u++)
                            for (int v = 0; v < K; v++) {
                                int ii = i + u - 1, jj = j + v - 1;
                                if (ii < 0 || ii >= H || jj < 0 || jj >= W)
                                    continue;
                                acc += (double)x[((n * CI + c) * H + ii) * W + jj] *
                                       w[((o * CI + c) * K + u) * K + v];
                            }
                    ref[((n * CO + o) * H + i) * W + j] = acc;
                }
    tp_tensor tx = tp_tensor_4d(TP_DTYPE_F32, layout, N, CI, H, W);
    tp_tensor tw = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, CO, CI, K, K);
    tp_tensor tb = tp_tensor_2d(TP_DTYPE_F32, CO, 0);
    tp_tensor ty = tp_tensor_4d(TP_DTYPE_F32, layout, N, CO, H, W);
    int ok = !upload(g, &tx, x, layout) && !upload(g, &tw, w, TP_LAYOUT_NCHW) &&
             !upload(g, &tb, bias, TP_LAYOUT_NCHW) && !g->ops->alloc(g->self, &ty, "y") &&
             !g->ops->conv_forward(g->self, &d, &tx, &tw, &tb, &ty) && !download(g, &ty, y);
    CHECK(ok, "conv_forward: %s", services_last_error());
    if (ok)
        report(layout == TP_LAYOUT_NHWC ? "conv_forward 3x3 NHWC (fp32)"
                                        : "conv_forward 3x3 NCHW (fp32)",
               max_diff(y, ref, sizeof ref / sizeof ref[0]), 1e-5);
    g->ops->free(g->self, &tx);
    g->ops->free(g->self, &tw);
    g->ops->free(g->self, &tb);
    g->ops->free(g->self, &ty);
}

static void smoke_linear_xent(gpu *g)
{
    enum { N = 4, K = 7, M = 5 };
    float x[N * K], w[M * K], y[N * M], dl[N * M], loss;
    double ref[N * M], dref[N * M], lref = 0.0;
    const double s = 0.1;
    int32_t labels[N] = {0, 4, 2, 3};
    randomize(x, N * K);
    randomize(w, M * K);
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)x[n * K + k] * w[m * K + k];
            ref[n * M + m] = acc;
        }
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, se = 0.0;
        for (int m = 0; m < M; m++)
            mx = fmax(mx, ref[n * M + m]);
        for (int m = 0; m < M; m++)
            se += exp(ref[n * M + m] - mx);
        for (int m = 0; m < M; m++) {
            double t = s / M + (m == labels[n] ? 1.0 - s : 0.0);
            double logp = ref[n * M + m] - mx - log(se);
            lref -= t * logp / N;
            dref[n * M + m] = (exp(logp) - t) / N;
        }
    }
    tp_tensor tx = tp_tensor_2d(TP_DTYPE_F32, N, K), tw = tp_tensor_2d(TP_DTYPE_F32, M, K);
    tp_tensor ty = tp_tensor_2d(TP_DTYPE_F32, N, M), td = tp_tensor_2d(TP_DTYPE_F32, N, M);
    tp_tensor tl = tp_tensor_2d(TP_DTYPE_F32, 1, 0), tlab = tp_tensor_2d(TP_DTYPE_I32, N, 0);
    tp_tensor hlab = tlab;
    hlab.device = TP_DEVICE_HOST;
    hlab.data = labels;
    int ok = !upload(g, &tx, x, TP_LAYOUT_NCHW) && !upload(g, &tw, w, TP_LAYOUT_NCHW) &&
             !g->ops->alloc(g->self, &ty, "y") && !g->ops->alloc(g->self, &td, "dlogits") &&
             !g->ops->alloc(g->self, &tl, "loss") && !g->ops->alloc(g->self, &tlab, "labels") &&
             !g->ops->copy(g->self, &tlab, &hlab, TP_STREAM_COMPUTE) &&
             !g->ops->linear_forward(g->self, &tx, &tw, NULL, &ty) && !download(g, &ty, y) &&
             !g->ops->softmax_xent(g->self, &ty, &tlab, s, 1.0, &tl, &td) &&
             !download(g, &td, dl) && !download(g, &tl, &loss);
    CHECK(ok, "linear/softmax_xent: %s", services_last_error());
    if (ok) {
        report("linear_forward (fp32)", max_diff(y, ref, N * M), 1e-5);
        report("softmax_xent loss (smoothing 0.1)", fabs(loss - lref), 1e-5);
        report("softmax_xent dlogits", max_diff(dl, dref, N * M), 1e-6);
    }
    tp_tensor *all[] = {&tx, &tw, &ty, &td, &tl, &tlab};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        g->ops->free(g->self, all[i]);
}

static void smoke_batchnorm(gpu *g)
{
    enum { N = 3, C = 2, H = 2, W = 3, HW = H * W };
    const tp_bn_desc d = {1e-5, 0.1};
    float x[N * C * HW], gamma[C] = {1.5f, -0.5f}, beta[C] = {0.1f, 0.2f};
    float rmean[C] = {0.0f, 0.5f}, rvar[C] = {1.0f, 2.0f}, out_mean[C], out_var[C];
    double ref_mean[C], ref_var[C];
    randomize(x, sizeof x / sizeof x[0]);
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0;
        int cnt = N * HW;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                sum += x[(n * C + c) * HW + i];
        double mean = sum / cnt;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                double dv = x[(n * C + c) * HW + i] - mean;
                sq += dv * dv;
            }
        ref_mean[c] = 0.9 * rmean[c] + 0.1 * mean;
        ref_var[c] = 0.9 * rvar[c] + 0.1 * sq / (cnt - 1); /* unbiased, PyTorch */
    }
    tp_tensor tx = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, N, C, H, W), ty = tx;
    tp_tensor tg = tp_tensor_2d(TP_DTYPE_F32, C, 0), tb = tg, tm = tg, tv = tg, sm = tg, si = tg;
    int ok = !upload(g, &tx, x, TP_LAYOUT_NCHW) && !upload(g, &tg, gamma, TP_LAYOUT_NCHW) &&
             !upload(g, &tb, beta, TP_LAYOUT_NCHW) && !upload(g, &tm, rmean, TP_LAYOUT_NCHW) &&
             !upload(g, &tv, rvar, TP_LAYOUT_NCHW) && !g->ops->alloc(g->self, &ty, "y") &&
             !g->ops->alloc(g->self, &sm, "save_mean") &&
             !g->ops->alloc(g->self, &si, "save_invstd") &&
             !g->ops->batchnorm_train(g->self, &d, &tx, &tg, &tb, &ty, &tm, &tv, &sm, &si) &&
             !download(g, &tm, out_mean) && !download(g, &tv, out_var);
    CHECK(ok, "batchnorm_train: %s", services_last_error());
    if (ok) {
        report("batchnorm_train running_mean", max_diff(out_mean, ref_mean, C), 1e-5);
        report("batchnorm_train running_var (unbiased)", max_diff(out_var, ref_var, C), 1e-5);
    }
    tp_tensor *all[] = {&tx, &ty, &tg, &tb, &tm, &tv, &sm, &si};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        g->ops->free(g->self, all[i]);
}

static void smoke_optim(gpu *g)
{
    enum { COUNT = 1000 };
    static float p[COUNT], gr[COUNT], v[COUNT], out_p[COUNT], ss;
    static double ref_p[COUNT];
    double ref_ss = 0.0;
    const double lr = 0.1, mom = 0.9, wd = 1e-4;
    randomize(p, COUNT);
    randomize(gr, COUNT);
    randomize(v, COUNT);
    for (int i = 0; i < COUNT; i++) {
        ref_ss += (double)gr[i] * gr[i];
        double gi = gr[i] + wd * p[i];
        double vi = mom * v[i] + gi;
        ref_p[i] = p[i] - lr * (gi + mom * vi); /* nesterov */
    }
    tp_tensor tp = tp_tensor_2d(TP_DTYPE_F32, COUNT, 0), tg = tp, tv = tp;
    tp_tensor ts = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    int ok = !upload(g, &tp, p, TP_LAYOUT_NCHW) && !upload(g, &tg, gr, TP_LAYOUT_NCHW) &&
             !upload(g, &tv, v, TP_LAYOUT_NCHW) && !g->ops->alloc(g->self, &ts, "ss") &&
             !g->ops->sum_squares(g->self, &tg, &ts) &&
             !g->ops->sgd_update(g->self, &tp, &tg, &tv, lr, mom, wd, 1) &&
             !download(g, &tp, out_p) && !download(g, &ts, &ss);
    CHECK(ok, "sum_squares/sgd_update: %s", services_last_error());
    if (ok) {
        report("sum_squares (relative)", fabs(ss - ref_ss) / ref_ss, 1e-6);
        report("sgd_update (nesterov, wd)", max_diff(out_p, ref_p, COUNT), 1e-6);
    }
    tp_tensor *all[] = {&tp, &tg, &tv, &ts};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        g->ops->free(g->self, all[i]);
}

/* API 1.4: a recording replays what was recorded and nothing else, does not run while it
 * is recorded, refuses an allocation, and keeps other threads' work out of it. */
typedef struct filler {
    gpu *g;
    tp_tensor *t;
    tp_status st;
} filler;

static void *fill_from_thread(void *arg)
{
    filler *f = arg;
    f->st = f->g->ops->fill(f->g->self, f->t, 7.0); /* waits while main records */
    return NULL;
}

static void smoke_capture(gpu *g)
{
    enum { COUNT = 1000 };
    static float x[COUNT], out[COUNT], other[COUNT];
    randomize(x, COUNT);
    const tp_backend_ops *o = g->ops;
    tp_tensor tx = tp_tensor_2d(TP_DTYPE_F32, COUNT, 0), ty = tx, tz = tx, extra = tx;
    tp_recording *rec = NULL;
    int ok = !upload(g, &tx, x, TP_LAYOUT_NCHW) && !o->alloc(g->self, &ty, "y") &&
             !o->alloc(g->self, &tz, "z") && !o->fill(g->self, &ty, 0.0) &&
             !o->fill(g->self, &tz, 0.0) && !o->sync(g->self);
    CHECK(ok, "capture setup: %s", services_last_error());
    /* y += x recorded while another thread fills z: the fill waits and is not recorded. */
    filler f = {g, &tz, TP_ERR_INVALID};
    pthread_t th;
    int started = 0;
    if (ok) {
        ok = o->capture_begin(g->self) == TP_OK;
        CHECK(ok, "capture_begin: %s", services_last_error());
    }
    if (ok) {
        started = pthread_create(&th, NULL, fill_from_thread, &f) == 0;
        usleep(50000);
        tp_status st = o->axpby(g->self, 1.0, &tx, 1.0, &ty);
        CHECK(st == TP_OK, "axpby while recording: %s", services_last_error());
        ok = o->capture_end(g->self, &rec) == TP_OK && rec;
        CHECK(ok, "capture_end: %s", services_last_error());
    }
    if (started)
        pthread_join(th, NULL);
    CHECK(!started || f.st == TP_OK, "fill from another thread: %d", (int)f.st);
    if (ok && !download(g, &ty, out) && !download(g, &tz, other)) {
        CHECK(out[0] == 0.0f && out[COUNT - 1] == 0.0f, "the recorded axpby ran while recording");
        CHECK(other[0] == 7.0f, "the other thread's fill did not run (z = %g)", other[0]);
    }
    /* Three replays: y = 3x; z, filled again with 0, is untouched by them. */
    if (ok)
        ok = !o->fill(g->self, &tz, 0.0) && !o->replay(g->self, rec) &&
             !o->replay(g->self, rec) && !o->replay(g->self, rec) && !download(g, &ty, out) &&
             !download(g, &tz, other);
    CHECK(ok, "replay: %s", services_last_error());
    if (ok) {
        double worst = 0;
        for (int i = 0; i < COUNT; i++)
            worst = fmax(worst, fabs((double)out[i] - 3.0 * x[i]));
        report("capture: 3 replays of y += x", worst, 1e-6);
        CHECK(other[0] == 0.0f, "a replay touched the other thread's tensor");
    }
    o->recording_free(g->self, rec);
    /* An allocation while recording fails, spoils the recording, and leaves the backend
     * working. */
    if (o->capture_begin(g->self) == TP_OK) {
        tp_status st = o->alloc(g->self, &extra, "inside a recording");
        CHECK(st == TP_ERR_INVALID, "alloc while recording returned %d", (int)st);
        tp_recording *spoiled = NULL;
        st = o->capture_end(g->self, &spoiled);
        CHECK(st != TP_OK && spoiled == NULL, "a spoiled recording was kept (%d)", (int)st);
        printf("spoiled recording: %s\n", services_last_error());
        if (extra.data)
            o->free(g->self, &extra);
    } else {
        CHECK(0, "capture_begin: %s", services_last_error());
    }
    CHECK(!o->fill(g->self, &ty, 1.0) && !download(g, &ty, out) && out[0] == 1.0f,
          "the backend does not work after a spoiled recording: %s", services_last_error());
    tp_tensor *all[] = {&tx, &ty, &tz};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        o->free(g->self, all[i]);
}

static void smoke_errors(gpu *g)
{
    /* A host tensor handed to a compute op must be refused, not dereferenced. */
    float buf[4] = {0};
    tp_tensor h = tp_tensor_2d(TP_DTYPE_F32, 4, 0);
    h.device = TP_DEVICE_HOST;
    h.data = buf;
    tp_status st = g->ops->relu_forward(g->self, &h, &h);
    CHECK(st == TP_ERR_INVALID, "relu_forward on host memory returned %d", (int)st);
    /* An impossible allocation reports out of memory with the tensor's name. */
    tp_tensor big = tp_tensor_2d(TP_DTYPE_F32, (int64_t)1 << 50, 0);
    st = g->ops->alloc(g->self, &big, "huge activations");
    CHECK(st == TP_ERR_NOMEM && strstr(services_last_error(), "huge activations"),
          "1 PiB alloc: status %d, message '%s'", (int)st, services_last_error());
    printf("out-of-memory message: %s\n", services_last_error());
}

/* ------------------------------------------------------------------ main */

static int all_ops_present(const tp_backend_ops *o)
{
    int missing = 0;
#define NEED(field)                                                                            \
    if (!o->field) {                                                                           \
        fprintf(stderr, "FAIL: ops->" #field " is NULL\n");                                    \
        missing++;                                                                             \
    }
    NEED(info) NEED(alloc) NEED(free) NEED(copy) NEED(fill) NEED(event_create)
    NEED(event_destroy) NEED(event_record) NEED(stream_wait) NEED(event_sync) NEED(sync)
    NEED(conv_forward) NEED(conv_backward_data) NEED(conv_backward_filter) NEED(batchnorm_train)
    NEED(batchnorm_infer) NEED(batchnorm_backward) NEED(relu_forward) NEED(relu_backward)
    NEED(add) NEED(pool_forward) NEED(pool_backward) NEED(global_avgpool_forward)
    NEED(global_avgpool_backward) NEED(linear_forward) NEED(linear_backward) NEED(softmax_xent)
    NEED(topk_correct) NEED(subsample_pad_forward) NEED(subsample_pad_backward) NEED(axpby)
    NEED(scale) NEED(sum_squares) NEED(convert_u8_batch) NEED(crop_flip)
    NEED(standardize_images) NEED(normalize_channels) NEED(sgd_update) NEED(adam_update)
    NEED(add_relu) NEED(batchnorm_relu_workspace_bytes) NEED(batchnorm_relu_train)
    NEED(batchnorm_relu_backward) NEED(native_stream) NEED(capture_begin) NEED(capture_end)
    NEED(replay) NEED(recording_free) NEED(sgd_update_dev) NEED(adam_update_dev)
    NEED(sgd_update_group_dev) NEED(adam_update_group_dev) NEED(batchnorm_add_relu_train)
    NEED(conv_backward_data_add) NEED(check_finite_group)
#undef NEED
    return missing == 0 && o->size == sizeof(tp_backend_ops);
}

int main(void)
{
    const char *dir = getenv("TP_PLUGIN_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/backend-cuda.so", dir ? dir : ".libs");
    registry *r = registry_new();
    if (!r || registry_load_file(r, path) != TP_OK) {
        fprintf(stderr, "FAIL: cannot load %s: %s\n", path, services_last_error());
        return 1;
    }
    const registry_entry *e = registry_find(r, TP_KIND_BACKEND, "cuda");
    if (!e) {
        fprintf(stderr, "FAIL: %s provides no backend named cuda\n", path);
        registry_free(r);
        return 1;
    }
    const tp_backend_ops *ops = e->component->ops;
    CHECK(ops && all_ops_present(ops), "the ops table is incomplete");
    CHECK(e->component->n_params == 6, "expected 6 parameters, found %zu",
          e->component->n_params);

    instance inst;
    tp_status st = instance_create(e->component, NULL, &inst);
    if (st == TP_OK) {
        gpu g = {ops, inst.self};
        tp_backend_info info = {.size = sizeof info};
        CHECK(ops->info(inst.self, &info) == TP_OK && strcmp(info.name, "cuda") == 0,
              "info() failed");
        printf("GPU present: %s\n", info.device_name ? info.device_name : "?");
        smoke_copy(&g);
        smoke_conv(&g, TP_LAYOUT_NCHW);
        smoke_conv(&g, TP_LAYOUT_NHWC);
        smoke_linear_xent(&g);
        smoke_batchnorm(&g);
        smoke_optim(&g);
        smoke_errors(&g);
        smoke_capture(&g);
        /* API 1.3: two distinct native streams for NCCL to follow. */
        void *compute = ops->native_stream(inst.self, TP_STREAM_COMPUTE);
        void *copy = ops->native_stream(inst.self, TP_STREAM_COPY);
        CHECK(compute && copy && compute != copy, "native_stream: compute %p, copy %p",
              compute, copy);
        instance_destroy(&inst);
    } else {
        const char *msg = services_last_error();
        printf("create() without a usable GPU: status %d (%s): %s\n", (int)st,
               tp_status_name(st), msg);
        CHECK(st == TP_ERR_UNSUPPORTED, "create() returned %d, expected TP_ERR_UNSUPPORTED",
              (int)st);
        CHECK(strstr(msg, "CUDA") != NULL, "the message does not mention CUDA: %s", msg);
        /* A bad device index must fail the same clean way (or as invalid with a GPU). */
        instance bad;
        st = instance_create(e->component, (const char *[]){"device=7", NULL}, &bad);
        CHECK(st == TP_ERR_UNSUPPORTED || st == TP_ERR_INVALID,
              "device=7 returned %d", (int)st);
        if (st == TP_OK)
            instance_destroy(&bad);
    }
    registry_free(r);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
