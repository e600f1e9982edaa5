/* The graph executor on a tiny CIFAR ResNet (depth 8, n = 1, batch 4, 3x32x32, shortcuts A and
 * B, post-activation v1 and pre-activation v2): forward and backward, gradients checked
 * against float64 central differences of the loss (the loss is evaluated in double on the host
 * from the f32 logits), on the naive test backend and on backend-cpu when it is built; both
 * backends must then agree. Also: inference mode, re-binding with another batch size, no
 * leaked tensors, and the fused plan (ReLUs folded into batch norms and additions) against the
 * unfused one: bit for bit on the naive backend, whose fused operations compose the plain
 * ones, and within rounding on backend-cpu. And the gradient-ready hook of data-parallel
 * training: every parameter is reported once, in graph_param_ready_order(), with its gradient
 * already final. */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "graph.h"
#include "services.h"
#include "test_graph_backend.h"

#define BATCH 4
#define CH 3
#define SIZE 32
#define CLASSES 10
#ifndef FD_STEP
#define FD_STEP 3e-4
#endif

static registry *reg;

typedef struct result {
    double loss;
    float *logits;      /* BATCH x CLASSES */
    float **grads;      /* per parameter */
    size_t *counts;     /* values per parameter */
    size_t n_params;
    int fused;          /* ReLUs the binding folded into the node before them */
    int fused_add;      /* batch norms computed with the addition after them (API 1.7) */
} result;

/* The gradient-ready hook's record: what was reported, and each gradient as it was then. */
typedef struct ready_log {
    graph *g;
    const tp_backend *be;
    size_t *order;     /* reported parameters, in report order */
    float **snapshot;  /* per parameter: its gradient when reported */
    size_t n;
    int fail_at;       /* > 0: the fail_at-th call fails (stops backward) */
} ready_log;

static ready_log *step_log; /* set: train_step installs the hook with it */

static tp_status record_ready(void *ctx, size_t param)
{
    ready_log *log = ctx;
    size_t np;
    const tp_param_ref *p = graph_params(log->g, &np);
    if (log->fail_at > 0 && (int)log->n + 1 == log->fail_at)
        return services_fail(TP_ERR_INTERRUPTED, "hook stops at call %d", log->fail_at);
    if (param >= np || log->n >= np)
        return services_fail(TP_ERR_INVALID, "hook: parameter %zu, call %zu", param, log->n);
    log->order[log->n++] = param;
    free(log->snapshot[param]);
    log->snapshot[param] = malloc(tp_tensor_bytes(p[param].grad));
    return test_download(log->be, p[param].grad, log->snapshot[param]);
}

static void result_free(result *r)
{
    for (size_t i = 0; r->grads && i < r->n_params; i++)
        free(r->grads[i]);
    free(r->grads);
    free(r->counts);
    free(r->logits);
}

/* L(w + eps d) for the named tensor's values w moved along d (host arrays of count). */
static double loss_along(graph *g, const tp_backend *be, const tp_tensor *x,
                         const int32_t *labels, size_t ti, const float *w, const double *d,
                         double eps, float *tmp, size_t count)
{
    for (size_t k = 0; k < count; k++)
        tmp[k] = (float)(w[k] + eps * d[k]);
    graph_tensor_set(g, ti, tmp, count);
    return test_loss64(g, be, x, labels);
}

/* Directional central differences for one parameter tensor: along the analytic gradient
 * itself and along a random direction (both unit length over the whole tensor), which
 * averages away the f32 rounding and the ReLU kinks that make single-entry differences
 * unreliable. The step makes the loss move by about 1e-3. Returns the worst error relative
 * to the directional derivative's scale |g|. */
static double fd_check(graph *g, const tp_backend *be, const tp_tensor *x, const int32_t *labels,
                       const result *res, const char *name, double eps_scale)
{
    int64_t ti = graph_tensor_find(g, name);
    CHECK(ti >= 0);
    if (ti < 0)
        return INFINITY;
    size_t np;
    const tp_param_ref *params = graph_params(g, &np);
    size_t pi = 0;
    while (pi < np && strcmp(params[pi].name, name) != 0)
        pi++;
    size_t count = (size_t)tp_tensor_count(graph_tensor_desc(g, (size_t)ti));
    float *w = malloc(count * sizeof *w), *tmp = malloc(count * sizeof *tmp);
    double *d = malloc(count * sizeof *d);
    const float *an = res->grads[pi];
    graph_tensor_get(g, (size_t)ti, w, count);
    double gnorm = 0;
    for (size_t k = 0; k < count; k++)
        gnorm += (double)an[k] * an[k];
    gnorm = sqrt(gnorm);
    double worst = 0;
    tp_rng r = tp_rng_make(3, 9, (uint64_t)ti);
    for (int dir = 0; dir < 2; dir++) {
        double dn = 0, expect = 0;
        for (size_t k = 0; k < count; k++) {
            d[k] = dir == 0 ? an[k] : tp_rng_normal(&r);
            dn += d[k] * d[k];
        }
        dn = sqrt(dn);
        for (size_t k = 0; k < count; k++) {
            d[k] /= dn;
            expect += an[k] * d[k];
        }
        double eps = eps_scale / fmax(gnorm, 1e-3);
        double lp = loss_along(g, be, x, labels, (size_t)ti, w, d, eps, tmp, count);
        double lm = loss_along(g, be, x, labels, (size_t)ti, w, d, -eps, tmp, count);
        double fd = (lp - lm) / (2 * eps);
        double err = fabs(fd - expect) / fmax(gnorm, 1e-6);
        printf("  %-30s %-8s |g| %.4e  g.d % .6e  numeric % .6e  err %.2e\n", name,
               dir == 0 ? "along g" : "random", gnorm, expect, fd, err);
        worst = fmax(worst, err);
    }
    graph_tensor_set(g, (size_t)ti, w, count);
    free(w);
    free(tmp);
    free(d);
    return worst;
}

/* Builds, binds, initialises and runs one forward/backward; fills res. Returns the graph
 * (still bound) for further checks, or NULL. */
static graph *train_step(const tp_backend *be, const char *version, const char *shortcut,
                         int fuse, tp_tensor *x, tp_tensor *labels_t, const float *xh,
                         const int32_t *labels, result *res)
{
    instance inst;
    const char *kv[] = {"depth=8", version, shortcut, NULL};
    if (!test_instance(reg, TP_KIND_MODEL, "resnet", kv, &inst))
        return NULL;
    graph *g = test_build_graph(&inst, CH, SIZE, SIZE, CLASSES);
    instance_destroy(&inst);
    if (!g) {
        fprintf(stderr, "build: %s\n", services_last_error());
        return NULL;
    }
    graph_set_fusion(g, fuse);
    if (step_log) {
        step_log->g = g;
        graph_set_grad_ready_hook(g, record_ready, step_log);
    }
    tp_status st = graph_bind(g, be, BATCH, TP_LAYOUT_NCHW);
    if (st == TP_OK)
        st = graph_init_params(g, 7);
    res->fused = graph_fused_count(g);
    res->fused_add = graph_fused_add_count(g);
    *x = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, BATCH, CH, SIZE, SIZE);
    *labels_t = tp_tensor_2d(TP_DTYPE_I32, BATCH, 0);
    if (st == TP_OK)
        st = test_upload(be, x, xh);
    if (st == TP_OK)
        st = test_upload(be, labels_t, labels);
    tp_tensor loss = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    tp_tensor dlogits = tp_tensor_2d(TP_DTYPE_F32, BATCH, CLASSES);
    loss.data = dlogits.data = NULL;
    if (st == TP_OK)
        st = be->ops->alloc(be->self, &loss, "loss");
    if (st == TP_OK)
        st = be->ops->alloc(be->self, &dlogits, "dlogits");
    if (st == TP_OK)
        st = graph_forward(g, x, 1);
    if (st == TP_OK)
        st = be->ops->softmax_xent(be->self, graph_logits(g), labels_t, 0.0, 1.0, &loss,
                                   &dlogits);
    if (st == TP_OK)
        st = graph_backward(g, &dlogits);
    int fused = res->fused, fused_add = res->fused_add;
    memset(res, 0, sizeof *res);
    res->fused = fused;
    res->fused_add = fused_add;
    float lossh = 0;
    res->logits = malloc(BATCH * CLASSES * sizeof(float));
    if (st == TP_OK)
        st = test_download(be, &loss, &lossh);
    if (st == TP_OK)
        st = test_download(be, graph_logits(g), res->logits);
    res->loss = lossh;
    const tp_param_ref *p = graph_params(g, &res->n_params);
    res->grads = calloc(res->n_params, sizeof *res->grads);
    res->counts = calloc(res->n_params, sizeof *res->counts);
    for (size_t i = 0; st == TP_OK && i < res->n_params; i++) {
        res->counts[i] = (size_t)tp_tensor_count(p[i].grad);
        res->grads[i] = malloc(tp_tensor_bytes(p[i].grad));
        st = test_download(be, p[i].grad, res->grads[i]);
    }
    be->ops->free(be->self, &loss);
    be->ops->free(be->self, &dlogits);
    if (st != TP_OK) {
        fprintf(stderr, "train step: %s\n", services_last_error());
        graph_free(g);
        return NULL;
    }
    return g;
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double scale = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(a[i]));
        diff = fmax(diff, fabs((double)a[i] - b[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

static void run_backend(const char *label, const tp_backend *be, const char *version,
                        const char *shortcut, const float *xh, const int32_t *labels,
                        result *res)
{
    tp_tensor x, lt;
    int v2 = strcmp(version, "version=v2") == 0;
    printf("== %s, %s, %s\n", label, version, shortcut);
    graph *g = train_step(be, version, shortcut, 1, &x, &lt, xh, labels, res);
    CHECK(g != NULL);
    if (!g)
        return;
    double l64 = test_loss64(g, be, &x, labels);
    printf("  loss: backend %.7f, host float64 %.7f\n", res->loss, l64);
    CHECK(fabs(res->loss - l64) < 1e-5 * fmax(1.0, l64));
    CHECK(l64 > 1.0 && l64 < 10.0);
    static const char *const names[] = {
        "conv1.weight",          "bn1.weight",           "bn1.bias",
        "layer1.0.conv1.weight", "layer1.0.bn2.weight",  "layer2.0.conv1.weight",
        "layer3.0.conv2.weight", "layer3.0.bn2.bias",    "fc.weight",
        "fc.bias"};
    /* v2 (pre-activation): no stem BN; each block starts with bn1 (whose ReLU output also
     * feeds a changing shortcut, e.g. layer2.0's), and bn_final precedes the pooling. */
    static const char *const names_v2[] = {
        "conv1.weight",          "layer1.0.bn1.weight",  "layer1.0.bn1.bias",
        "layer1.0.conv1.weight", "layer1.0.bn2.weight",  "layer2.0.bn1.weight",
        "layer2.0.bn1.bias",     "layer2.0.conv1.weight", "layer3.0.conv2.weight",
        "layer3.0.bn2.bias",     "bn_final.weight",      "bn_final.bias",
        "fc.weight",             "fc.bias"};
    const char *const *list = v2 ? names_v2 : names;
    size_t n_list = v2 ? sizeof names_v2 / sizeof names_v2[0] : sizeof names / sizeof names[0];
    /* Convolution and linear weights are checked tightly; batch-norm parameters see the
     * curvature of statistics over a batch of 4 (their error shrinks with the step). */
    double worst_w = 0, worst_bn = 0;
    for (size_t i = 0; i < n_list; i++) {
        /* v2's block-input batch norms (bn1, straight after an addition) are more curved: at
         * FD_STEP their truncation error reaches 3.8e-2 and falls to 1.2e-2 at FD_STEP / 3,
         * so they take the smaller step. */
        double step = v2 && strstr(list[i], "bn") ? FD_STEP / 3 : FD_STEP;
        double e = fd_check(g, be, &x, labels, res, list[i], step);
        if (strstr(list[i], "bn"))
            worst_bn = fmax(worst_bn, e);
        else
            worst_w = fmax(worst_w, e);
    }
    if (strcmp(shortcut, "shortcut=B") == 0) {
        worst_w = fmax(worst_w, fd_check(g, be, &x, labels, res, "layer2.0.downsample.0.weight",
                                         FD_STEP));
        if (v2) /* a v2 projection has no BN */
            CHECK(graph_tensor_find(g, "layer2.0.downsample.1.weight") < 0);
        else
            worst_bn = fmax(worst_bn, fd_check(g, be, &x, labels, res,
                                               "layer2.0.downsample.1.weight", FD_STEP));
    }
    printf("  worst gradient error vs central differences: weights %.3e (tolerance 5e-3), "
           "batch norm %.3e (tolerance 4e-2)\n", worst_w, worst_bn);
    CHECK(worst_w < 5e-3);
    CHECK(worst_bn < 4e-2);

    /* Inference mode runs with the running statistics and gives different logits. */
    float inf[BATCH * CLASSES];
    CHECK(graph_forward(g, &x, 0) == TP_OK);
    CHECK(test_download(be, graph_logits(g), inf) == TP_OK);
    CHECK(graph_backward(g, graph_logits(g)) != TP_OK); /* backward needs a training pass */
    CHECK(max_rel_diff(inf, res->logits, BATCH * CLASSES) > 1e-4);

    /* A backend with its own layout (backend-cpu) must give the same results in NHWC. */
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (be->ops->info && be->ops->info(be->self, &info) == TP_OK && strcmp(info.name, "naive")) {
        float nhwc[BATCH * CLASSES];
        CHECK(graph_bind(g, be, BATCH, TP_LAYOUT_NHWC) == TP_OK);
        CHECK(graph_forward(g, &x, 1) == TP_OK);
        CHECK(test_download(be, graph_logits(g), nhwc) == TP_OK);
        double d = max_rel_diff(res->logits, nhwc, BATCH * CLASSES);
        printf("  NHWC vs NCHW logits rel.diff %.3e\n", d);
        CHECK(d < 1e-4);
    }

    /* Re-binding to another batch size keeps the parameters. */
    size_t i0 = (size_t)graph_tensor_find(g, "layer1.0.conv2.weight");
    size_t cnt = (size_t)tp_tensor_count(graph_tensor_desc(g, i0));
    float *before = malloc(cnt * sizeof *before), *after = malloc(cnt * sizeof *after);
    CHECK(graph_tensor_get(g, i0, before, cnt) == TP_OK);
    CHECK(graph_bind(g, be, 2, TP_LAYOUT_NCHW) == TP_OK);
    CHECK(graph_tensor_get(g, i0, after, cnt) == TP_OK);
    CHECK(memcmp(before, after, cnt * sizeof *before) == 0);
    CHECK(graph_forward(g, &x, 1) != TP_OK); /* the batch of 4 no longer fits */
    CHECK_CONTAINS(services_last_error(), "2x3x32x32");
    free(before);
    free(after);

    be->ops->free(be->self, &x);
    be->ops->free(be->self, &lt);
    graph_free(g);
}

/* One training step with fusion off, compared with the fused step `fused`: exactly equal
 * when `exact`, else within 1e-5 (logits) and 1e-4 (gradients) relative. */
static void compare_unfused(const char *label, const tp_backend *be, const char *version,
                            const char *shortcut, const float *xh, const int32_t *labels,
                            const result *fused, int exact)
{
    tp_tensor x, lt;
    result plain;
    graph *g = train_step(be, version, shortcut, 0, &x, &lt, xh, labels, &plain);
    CHECK(g != NULL);
    if (!g)
        return;
    double d = max_rel_diff(plain.logits, fused->logits, BATCH * CLASSES), dg = 0;
    int identical = memcmp(plain.logits, fused->logits, BATCH * CLASSES * sizeof(float)) == 0;
    for (size_t i = 0; i < plain.n_params && i < fused->n_params; i++) {
        dg = fmax(dg, max_rel_diff(plain.grads[i], fused->grads[i], plain.counts[i]));
        identical &= memcmp(plain.grads[i], fused->grads[i], plain.counts[i] * sizeof(float)) == 0;
    }
    printf("  %s, %s, %s: %d ReLUs and %d batch norm + addition pairs fused vs %d and %d; "
           "logits rel.diff %.3e, worst gradient rel.diff %.3e%s\n", label, version, shortcut,
           fused->fused, fused->fused_add, plain.fused, plain.fused_add, d, dg,
           identical ? " (bit for bit)" : "");
    /* depth 8, v1: the stem and each of the 3 blocks' two ReLUs (both after a BN, the second
     * after the addition); v2: each block's two BN ReLUs and bn_final's (no ReLU follows
     * a v2 addition). */
    CHECK(fused->fused == 7);
    CHECK(plain.fused == 0);
    /* v1: each block's addition computes the batch norm before it (API 1.7); a v2 addition
     * has no batch norm as an input. */
    CHECK(fused->fused_add == (strstr(version, "v1") ? 3 : 0));
    CHECK(plain.fused_add == 0);
    CHECK(plain.n_params == fused->n_params);
    if (exact) {
        CHECK(identical);
        CHECK(plain.loss == fused->loss);
    } else {
        CHECK(d < 1e-5);
        CHECK(dg < 1e-4);
    }
    be->ops->free(be->self, &x);
    be->ops->free(be->self, &lt);
    graph_free(g);
    result_free(&plain);
}

/* The data-parallel hook: one report per parameter, in the announced order, each with its
 * final gradient; a failing hook stops backward with its status. */
static void check_ready_hook(const char *label, const tp_backend *be, const char *version,
                             const float *xh, const int32_t *labels, const result *ref)
{
    tp_tensor x, lt;
    result res;
    ready_log log;
    memset(&log, 0, sizeof log);
    log.be = be;
    log.order = calloc(ref->n_params, sizeof *log.order);
    log.snapshot = calloc(ref->n_params, sizeof *log.snapshot);
    step_log = &log;
    graph *g = train_step(be, version, "shortcut=B", 1, &x, &lt, xh, labels, &res);
    step_log = NULL;
    CHECK(g != NULL);
    if (!g)
        goto out;
    size_t np;
    graph_params(g, &np);
    size_t *want = calloc(np, sizeof *want);
    graph_param_ready_order(g, want);
    int in_order = log.n == np && !memcmp(want, log.order, np * sizeof *want);
    size_t final = 0, seen = 0;
    for (size_t i = 0; i < np; i++) {
        seen += log.snapshot[i] != NULL;
        final += log.snapshot[i] &&
                 !memcmp(log.snapshot[i], res.grads[i], res.counts[i] * sizeof(float));
    }
    /* The ready order starts at the classifier and ends at the stem. */
    const tp_param_ref *params = graph_params(g, &np);
    const char *first = np ? params[want[0]].name : "-", *last = np ? params[want[np - 1]].name : "-";
    printf("  %s, %s: ready hook: %zu reports for %zu parameters, %s, %zu final when "
           "reported; first %s, last %s\n", label, version, log.n, np,
           in_order ? "in the announced order" : "NOT in the announced order", final, first,
           last);
    CHECK(in_order);
    CHECK(np == ref->n_params && seen == np && final == np);
    CHECK(!strcmp(first, "fc.weight"));
    CHECK(!strcmp(last, "conv1.weight"));
    /* The same gradients as a pass without the hook. */
    for (size_t i = 0; i < np && i < ref->n_params; i++)
        CHECK(!memcmp(res.grads[i], ref->grads[i], res.counts[i] * sizeof(float)));

    /* A failing hook stops backward with its status and message. */
    log.n = 0;
    log.fail_at = 3;
    graph_set_grad_ready_hook(g, record_ready, &log);
    tp_tensor dl = tp_tensor_2d(TP_DTYPE_F32, BATCH, CLASSES);
    dl.data = NULL;
    CHECK(be->ops->alloc(be->self, &dl, "dlogits") == TP_OK);
    CHECK(be->ops->fill(be->self, &dl, 0.01) == TP_OK);
    CHECK(graph_forward(g, &x, 1) == TP_OK);
    CHECK(graph_backward(g, &dl) == TP_ERR_INTERRUPTED);
    CHECK_CONTAINS(services_last_error(), "hook stops at call 3");
    CHECK(log.n == 2);
    graph_set_grad_ready_hook(g, NULL, NULL);
    CHECK(graph_forward(g, &x, 1) == TP_OK);
    CHECK(graph_backward(g, &dl) == TP_OK);
    be->ops->free(be->self, &dl);
    free(want);
    be->ops->free(be->self, &x);
    be->ops->free(be->self, &lt);
    graph_free(g);
    result_free(&res);
out:
    for (size_t i = 0; i < ref->n_params; i++)
        free(log.snapshot[i]);
    free(log.snapshot);
    free(log.order);
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "model-resnet.so") != TP_OK) {
        fprintf(stderr, "model-resnet.so not built\n");
        return 1;
    }
    float *xh = malloc(BATCH * CH * SIZE * SIZE * sizeof *xh);
    int32_t labels[BATCH];
    tp_rng r = tp_rng_make(42, 1, 0);
    for (int i = 0; i < BATCH * CH * SIZE * SIZE; i++)
        xh[i] = (float)tp_rng_normal(&r);
    for (int i = 0; i < BATCH; i++)
        labels[i] = (int32_t)tp_rng_below(&r, CLASSES);

    tp_backend naive = naive_backend(1);
    instance cpu_inst;
    tp_backend cpu;
    tp_status cpu_st = test_backend_cpu(reg, &cpu_inst, &cpu);
    if (cpu_st == TP_ERR_NOT_FOUND)
        printf("note: backend-cpu is not built; only the naive backend is checked\n");
    CHECK(cpu_st == TP_OK || cpu_st == TP_ERR_NOT_FOUND);

    static const char *const versions[] = {"version=v1", "version=v2"};
    static const char *const shortcuts[] = {"shortcut=A", "shortcut=B"};
    for (int k = 0; k < 4; k++) {
        int s = k % 2;
        const char *v = versions[k / 2];
        result rn, rc;
        run_backend("naive backend", &naive, v, shortcuts[s], xh, labels, &rn);
        compare_unfused("naive backend", &naive, v, shortcuts[s], xh, labels, &rn, 1);
        if (s == 1)
            check_ready_hook("naive backend", &naive, v, xh, labels, &rn);
        if (cpu_st == TP_OK) {
            run_backend("backend-cpu", &cpu, v, shortcuts[s], xh, labels, &rc);
            compare_unfused("backend-cpu", &cpu, v, shortcuts[s], xh, labels, &rc, 0);
            if (s == 1)
                check_ready_hook("backend-cpu", &cpu, v, xh, labels, &rc);
            double d = max_rel_diff(rn.logits, rc.logits, BATCH * CLASSES), dg = 0;
            CHECK(rn.n_params == rc.n_params);
            for (size_t i = 0; i < rn.n_params && i < rc.n_params; i++)
                dg = fmax(dg, max_rel_diff(rn.grads[i], rc.grads[i], rn.counts[i]));
            printf("  naive vs backend-cpu: logits rel.diff %.3e, loss diff %.3e, worst "
                   "gradient rel.diff %.3e\n", d, fabs(rn.loss - rc.loss), dg);
            CHECK(d < 1e-4);
            CHECK(fabs(rn.loss - rc.loss) < 1e-5);
            CHECK(dg < 1e-3);
            result_free(&rc);
        }
        result_free(&rn);
    }
    CHECK(naive_backend_live_allocations() == 0);
    if (cpu_st == TP_OK)
        instance_destroy(&cpu_inst);
    free(xh);
    registry_free(reg);
    return CHECK_EXIT();
}
