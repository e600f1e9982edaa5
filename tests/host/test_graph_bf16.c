/* bf16 activations (SDK API 1.5) in the graph, on the naive test backend's bf16 instance,
 * which enforces the SDK's dtype rule strictly (mixed activations or bf16 weights, batch-norm
 * state, linear or loss tensors fail) and counts the calls that received bf16.
 *
 * A CIFAR ResNet-8 (v1 shortcut A, and v2 shortcut B), batch 4, 3x16x16:
 *   - the backend itself: info() reports bf16 (f32 on naive_backend()) and writes the field
 *     only when the caller's size covers it; copy() rounds to nearest even and keeps NaN;
 *     fill() fills bf16; the f32 instance refuses bf16; the bf16 one refuses mixed calls;
 *   - graph_activation_dtype(): f32 unbound, bf16 when bound on the bf16 instance in its
 *     layout (and bf16 calls happen in forward and backward), f32 on naive_backend() and in
 *     another layout, f32 with graph_set_activation_dtype(TP_DTYPE_F32) (no bf16 calls, the
 *     same numbers bit for bit as naive_backend()), bf16 again after resetting it to 0;
 *   - the same seed, weights and data on an f32 and a bf16 binding: training losses within
 *     2e-2 relative, the whole gradient (all parameters) with cosine similarity > 0.98 and
 *     every parameter's > 0.9 (the worst are printed), with graph fusion on and off on the
 *     fused and the unfused backend (the bf16 results of those four plans must agree bit for
 *     bit: the naive fused operations compose the plain ones, and relu commutes with
 *     rounding). A cosine of 0.99 per parameter is out of reach on this network, and the
 *     whole gradient's is 0.991 for v2: at initialisation, with 4 random images and random
 *     labels, a weight gradient is a sum of ~1000 terms of mixed signs that mostly cancel,
 *     so the rounding of the forward activations (2^-9 per value, compounded over the layers)
 *     becomes a large part of the sum. The batch-norm parameters of the first blocks get
 *     cosines of 0.95-0.98; rounding only the forward pass gives the same, rounding only the
 *     backward pass keeps every cosine above 0.9998 (measured with the emulating backend);
 *   - the graph stores and converts exactly what the SDK says: the bf16 binding computes bit
 *     for bit (losses over all SGD steps, gradients) what an f32 binding computes on
 *     naive_backend_bf16_emulated(), which rounds the same values to bf16 precision in f32
 *     storage; a tensor kept in f32 where it should be bf16, or rounded once too often, or an
 *     input not converted, shows here;
 *   - 5 plain SGD steps (p -= lr g through axpby) on each binding: the bf16 losses track the
 *     f32 ones within 5e-2 relative, and both decrease;
 *   - re-binding for batch 2 (as evaluation does) keeps bf16 and runs training and inference;
 *   - parameters, their gradients and the logits stay f32; nothing leaks. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "graph.h"
#include "services.h"
#include "test_graph_backend.h"

#define BATCH 4
#define SMALL_BATCH 2
#define CH 3
#define SIZE 16
#define CLASSES 10
#define STEPS 5
#define LR 0.05

static registry *reg;
static float *xh;
static int32_t labels[BATCH];

/* What one binding did. */
typedef struct run {
    tp_dtype dtype;          /* graph_activation_dtype() after the bind */
    long bf16_calls;         /* naive_backend_bf16_calls() during the first forward + backward */
    int fused;               /* graph_fused_count() */
    double loss[STEPS + 1];  /* training loss before each SGD step, and after the last */
    float **grads;           /* per parameter, of the first step */
    size_t *counts;
    char **names;
    size_t n_params;
    int ok;
} run;

static void run_free(run *r)
{
    for (size_t i = 0; r->grads && i < r->n_params; i++)
        free(r->grads[i]);
    for (size_t i = 0; r->names && i < r->n_params; i++)
        free(r->names[i]);
    free(r->grads);
    free(r->counts);
    free(r->names);
    memset(r, 0, sizeof *r);
}

static graph *build(const char *const *kv)
{
    instance inst;
    if (!test_instance(reg, TP_KIND_MODEL, "resnet", kv, &inst))
        return NULL;
    graph *g = test_build_graph(&inst, CH, SIZE, SIZE, CLASSES);
    instance_destroy(&inst);
    if (!g)
        fprintf(stderr, "build: %s\n", services_last_error());
    return g;
}

/* One training forward + loss + backward on batch n; *loss gets the backend's loss. */
static tp_status step(graph *g, const tp_backend *be, const tp_tensor *x, const tp_tensor *lt,
                      tp_tensor *loss, tp_tensor *dlogits, double *lossh)
{
    float l = NAN;
    tp_status st = graph_forward(g, x, 1);
    if (st == TP_OK)
        st = be->ops->softmax_xent(be->self, graph_logits(g), lt, 0.0, 1.0, loss, dlogits);
    if (st == TP_OK)
        st = graph_backward(g, dlogits);
    if (st == TP_OK)
        st = test_download(be, loss, &l);
    *lossh = l;
    return st;
}

/* Builds the model, binds it on be (batch BATCH, NCHW), initialises it from seed 7, trains
 * STEPS SGD steps on the fixed batch, then re-binds for SMALL_BATCH and runs a training and
 * an inference pass. force_f32: graph_set_activation_dtype(TP_DTYPE_F32) first. */
static void train(const char *label, const tp_backend *be, const char *const *kv, int fuse,
                  int force_f32, run *r)
{
    memset(r, 0, sizeof *r);
    tp_tensor x = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, BATCH, CH, SIZE, SIZE);
    tp_tensor x2 = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, SMALL_BATCH, CH, SIZE, SIZE);
    tp_tensor lt = tp_tensor_2d(TP_DTYPE_I32, BATCH, 0), lt2 = tp_tensor_2d(TP_DTYPE_I32, SMALL_BATCH, 0);
    tp_tensor loss = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    tp_tensor dl = tp_tensor_2d(TP_DTYPE_F32, BATCH, CLASSES), dl2 = tp_tensor_2d(TP_DTYPE_F32, SMALL_BATCH, CLASSES);
    graph *g = build(kv);
    CHECK(g != NULL);
    if (!g)
        return;
    graph_set_fusion(g, fuse);
    if (force_f32)
        graph_set_activation_dtype(g, TP_DTYPE_F32);
    CHECK(graph_activation_dtype(g) == TP_DTYPE_F32); /* unbound */
    tp_status st = graph_bind(g, be, BATCH, TP_LAYOUT_NCHW);
    if (st == TP_OK)
        st = graph_init_params(g, 7);
    r->dtype = graph_activation_dtype(g);
    r->fused = graph_fused_count(g);
    if (st == TP_OK)
        st = test_upload(be, &x, xh);
    if (st == TP_OK)
        st = test_upload(be, &lt, labels);
    if (st == TP_OK)
        st = test_upload(be, &x2, xh);
    if (st == TP_OK)
        st = test_upload(be, &lt2, labels);
    if (st == TP_OK)
        st = be->ops->alloc(be->self, &loss, "loss");
    if (st == TP_OK)
        st = be->ops->alloc(be->self, &dl, "dlogits");
    if (st == TP_OK)
        st = be->ops->alloc(be->self, &dl2, "dlogits (batch 2)");
    const tp_param_ref *p = graph_params(g, &r->n_params);
    r->grads = calloc(r->n_params, sizeof *r->grads);
    r->counts = calloc(r->n_params, sizeof *r->counts);
    r->names = calloc(r->n_params, sizeof *r->names);
    for (int k = 0; st == TP_OK && k <= STEPS; k++) {
        long calls = naive_backend_bf16_calls();
        st = step(g, be, &x, &lt, &loss, &dl, &r->loss[k]);
        if (k == 0) {
            r->bf16_calls = naive_backend_bf16_calls() - calls;
            CHECK(graph_logits(g)->dtype == TP_DTYPE_F32);
            for (size_t i = 0; st == TP_OK && i < r->n_params; i++) {
                CHECK(p[i].value->dtype == TP_DTYPE_F32 && p[i].grad->dtype == TP_DTYPE_F32);
                r->names[i] = strdup(p[i].name);
                r->counts[i] = (size_t)tp_tensor_count(p[i].grad);
                r->grads[i] = malloc(r->counts[i] * sizeof(float));
                st = test_download(be, p[i].grad, r->grads[i]);
            }
        }
        for (size_t i = 0; st == TP_OK && k < STEPS && i < r->n_params; i++)
            st = be->ops->axpby(be->self, -LR, p[i].grad, 1.0, p[i].value);
    }
    if (st != TP_OK)
        fprintf(stderr, "%s: training: %s\n", label, services_last_error());
    CHECK(st == TP_OK);

    /* Evaluation re-binds for another batch size: same dtype, training and inference work. */
    if (st == TP_OK) {
        long calls = naive_backend_bf16_calls();
        double l2 = NAN;
        st = graph_bind(g, be, SMALL_BATCH, TP_LAYOUT_NCHW);
        CHECK(st == TP_OK);
        CHECK(graph_activation_dtype(g) == r->dtype);
        if (st == TP_OK)
            st = step(g, be, &x2, &lt2, &loss, &dl2, &l2);
        if (st == TP_OK)
            st = graph_forward(g, &x2, 0);
        if (st != TP_OK)
            fprintf(stderr, "%s: batch %d: %s\n", label, SMALL_BATCH, services_last_error());
        CHECK(st == TP_OK);
        CHECK(isfinite(l2) && l2 > 0);
        CHECK((naive_backend_bf16_calls() > calls) == (r->dtype == TP_DTYPE_BF16));
    }
    r->ok = st == TP_OK;
    printf("  %-40s %s, %2d ReLUs fused, %4ld bf16 calls in a step; loss %.6f -> %.6f\n", label,
           tp_dtype_name(r->dtype), r->fused, r->bf16_calls, r->loss[0], r->loss[STEPS]);
    tp_tensor *ts[] = {&x, &x2, &lt, &lt2, &loss, &dl, &dl2};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        be->ops->free(be->self, ts[i]);
    graph_free(g);
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0 && bb == 0)
        return 1;
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

static double rel(double a, double ref) { return fabs(a - ref) / fmax(fabs(ref), 1e-12); }

/* Worst numbers over all plans, for the summary. */
static double worst_loss, worst_steps, worst_cos = 2, worst_total_cos = 2;
static char worst_at[160] = "-";

static int identical(const run *a, const run *b);

/* The f32 and bf16 bindings of one plan agree within bf16's precision, and the bf16 one
 * computes exactly what the f32 binding on the emulating backend does. */
static void compare(const char *label, const run *f, const run *b, const run *e)
{
    CHECK(f->ok && b->ok && e->ok);
    if (!f->ok || !b->ok || !e->ok)
        return;
    CHECK(f->dtype == TP_DTYPE_F32 && b->dtype == TP_DTYPE_BF16 && e->dtype == TP_DTYPE_F32);
    CHECK(f->bf16_calls == 0 && b->bf16_calls > 0 && e->bf16_calls == 0);
    CHECK(f->fused == b->fused && e->fused == b->fused);
    CHECK(f->n_params == b->n_params);
    double l0 = rel(b->loss[0], f->loss[0]), lsteps = 0, cmin = 2, ab = 0, aa = 0, bb = 0;
    size_t at = 0;
    for (int k = 0; k <= STEPS; k++)
        lsteps = fmax(lsteps, rel(b->loss[k], f->loss[k]));
    for (size_t i = 0; i < f->n_params && i < b->n_params; i++) {
        double c = cosine(f->grads[i], b->grads[i], f->counts[i]);
        if (c < cmin) {
            cmin = c;
            at = i;
        }
        for (size_t k = 0; k < f->counts[i]; k++) {
            ab += (double)f->grads[i][k] * b->grads[i][k];
            aa += (double)f->grads[i][k] * f->grads[i][k];
            bb += (double)b->grads[i][k] * b->grads[i][k];
        }
    }
    double total = ab / sqrt(aa * bb);
    int same = identical(b, e);
    printf("  %s: bf16 vs f32: loss rel.diff %.3e (tolerance 2e-2), over %d SGD steps %.3e "
           "(5e-2); gradient cosine %.6f (> 0.98), worst parameter %.6f at %s (> 0.9); "
           "bf16 vs f32 rounded to bf16: %s\n", label, l0, STEPS, lsteps, total, cmin,
           b->names[at], same ? "bit for bit" : "DIFFERENT");
    CHECK(l0 < 2e-2);
    CHECK(lsteps < 5e-2);
    CHECK(total > 0.98);
    CHECK(cmin > 0.9);
    CHECK(same);
    /* bf16 really rounded something. */
    CHECK(b->loss[0] != f->loss[0]);
    /* Training works in both. */
    CHECK(f->loss[STEPS] < f->loss[0]);
    CHECK(b->loss[STEPS] < b->loss[0]);
    worst_loss = fmax(worst_loss, l0);
    worst_steps = fmax(worst_steps, lsteps);
    worst_total_cos = fmin(worst_total_cos, total);
    if (cmin < worst_cos) {
        worst_cos = cmin;
        snprintf(worst_at, sizeof worst_at, "%s, %s", label, b->names[at]);
    }
}

static int identical(const run *a, const run *b)
{
    if (a->n_params != b->n_params || memcmp(a->loss, b->loss, sizeof a->loss))
        return 0;
    for (size_t i = 0; i < a->n_params; i++)
        if (memcmp(a->grads[i], b->grads[i], a->counts[i] * sizeof(float)))
            return 0;
    return 1;
}

/* The backend's own dtype rules, which give the graph checks their teeth. */
static void check_backend(void)
{
    tp_backend b = naive_backend_bf16(1), f = naive_backend(1);
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    CHECK(b.ops->info(b.self, &info) == TP_OK && info.activation_dtype == TP_DTYPE_BF16);
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    CHECK(f.ops->info(f.self, &info) == TP_OK && info.activation_dtype == TP_DTYPE_F32);
    /* An API 1.4 caller's struct ends before the field: it must not be written. */
    memset(&info, 0, sizeof info);
    info.size = offsetof(tp_backend_info, activation_dtype);
    info.activation_dtype = (tp_dtype)77;
    CHECK(b.ops->info(b.self, &info) == TP_OK && info.activation_dtype == (tp_dtype)77);

    long calls = naive_backend_bf16_calls();
    /* Nearest even: 1 + 2^-8 ties down to 1, 1 + 3 * 2^-8 ties up to 1 + 2^-6. */
    float in[6] = {1.0f, 1.0f + 0x1p-8f, 1.0f + 0x1.8p-7f, -2.5f, NAN, 0x1.fffffep127f};
    float want[6] = {1.0f, 1.0f, 1.0f + 0x1p-6f, -2.5f, NAN, INFINITY};
    float out[6];
    tp_tensor h = tp_tensor_2d(TP_DTYPE_F32, 6, 0), t = tp_tensor_2d(TP_DTYPE_BF16, 6, 0);
    h.device = TP_DEVICE_HOST;
    h.data = in;
    CHECK(b.ops->alloc(b.self, &t, "bf16") == TP_OK);
    CHECK(b.ops->copy(b.self, &t, &h, TP_STREAM_COMPUTE) == TP_OK);
    h.data = out;
    CHECK(b.ops->copy(b.self, &h, &t, TP_STREAM_COMPUTE) == TP_OK);
    for (int i = 0; i < 6; i++)
        CHECK(isnan(want[i]) ? isnan(out[i]) : out[i] == want[i]);
    CHECK(b.ops->fill(b.self, &t, 0.5) == TP_OK);
    CHECK(b.ops->copy(b.self, &h, &t, TP_STREAM_COMPUTE) == TP_OK);
    CHECK(out[0] == 0.5f && out[5] == 0.5f);

    /* A bf16 add rounds its sum: 1 + 3 * 2^-8 -> 1 + 2^-6. */
    float av[6] = {1, 1, 1, 1, 1, 1}, bv[6] = {0x1.8p-7f, 0, 0, 0, 0, 0};
    tp_tensor a = tp_tensor_2d(TP_DTYPE_BF16, 6, 0), y32 = tp_tensor_2d(TP_DTYPE_F32, 6, 0);
    CHECK(b.ops->alloc(b.self, &a, "a") == TP_OK);
    CHECK(b.ops->alloc(b.self, &y32, "y32") == TP_OK);
    h.data = av;
    CHECK(b.ops->copy(b.self, &a, &h, TP_STREAM_COMPUTE) == TP_OK);
    h.data = bv;
    CHECK(b.ops->copy(b.self, &t, &h, TP_STREAM_COMPUTE) == TP_OK);
    CHECK(b.ops->add(b.self, &a, &t, &a) == TP_OK); /* y aliases a */
    h.data = out;
    CHECK(b.ops->copy(b.self, &h, &a, TP_STREAM_COMPUTE) == TP_OK);
    CHECK(out[0] == 1.0f + 0x1p-6f && out[1] == 1.0f);

    /* The strict rule: mixed activations, bf16 weights, bf16 into f32-only operations. */
    CHECK(b.ops->add(b.self, &a, &t, &y32) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "add: a is bf16 but y is f32");
    tp_conv_desc cd = {1, 1, 0, 0, 1, 1};
    tp_tensor x4 = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, 1, 1, 2, 3);
    tp_tensor w4 = tp_tensor_4d(TP_DTYPE_BF16, TP_LAYOUT_NCHW, 1, 1, 1, 1);
    tp_tensor y4 = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, 1, 1, 2, 3);
    x4.data = y32.data;
    y4.data = y32.data;
    w4.data = t.data;
    CHECK(b.ops->conv_forward(b.self, &cd, &x4, &w4, NULL, &y4) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "w is bf16 but must be f32");
    tp_tensor a2 = tp_tensor_2d(TP_DTYPE_BF16, 1, 6), w2 = tp_tensor_2d(TP_DTYPE_F32, 1, 6);
    tp_tensor y2 = tp_tensor_2d(TP_DTYPE_F32, 1, 1);
    a2.data = a.data;
    w2.data = y2.data = y32.data;
    CHECK(b.ops->linear_forward(b.self, &a2, &w2, NULL, &y2) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "linear_forward: x is bf16 but must be f32");

    /* The f32 instance refuses bf16 anywhere. */
    tp_tensor t2 = tp_tensor_2d(TP_DTYPE_BF16, 6, 0);
    CHECK(f.ops->alloc(f.self, &t2, "refused") == TP_ERR_UNSUPPORTED);
    CHECK(f.ops->add(f.self, &a, &t, &a) == TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(services_last_error(), "bf16");
    CHECK(f.ops->copy(f.self, &h, &a, TP_STREAM_COMPUTE) == TP_ERR_UNSUPPORTED);
    CHECK(f.ops->fill(f.self, &a, 0) == TP_ERR_UNSUPPORTED);
    CHECK(naive_backend_bf16_calls() > calls);
    long c2 = naive_backend_bf16_calls();
    CHECK(f.ops->fill(f.self, &y32, 0) == TP_OK); /* f32 calls are not counted */
    CHECK(naive_backend_bf16_calls() == c2);
    b.ops->free(b.self, &t);
    b.ops->free(b.self, &a);
    b.ops->free(b.self, &y32);
    printf("  backend: bf16 rounding, conversion and dtype rules checked\n");
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "model-resnet.so") != TP_OK) {
        fprintf(stderr, "model-resnet.so not built\n");
        return 1;
    }
    long live0 = naive_backend_live_allocations();
    xh = malloc(BATCH * CH * SIZE * SIZE * sizeof *xh);
    tp_rng r = tp_rng_make(42, 1, 0);
    for (int i = 0; i < BATCH * CH * SIZE * SIZE; i++)
        xh[i] = (float)tp_rng_normal(&r);
    for (int i = 0; i < BATCH; i++)
        labels[i] = (int32_t)tp_rng_below(&r, CLASSES);

    check_backend();

    static const char *const v1[] = {"depth=8", "version=v1", "shortcut=A", NULL};
    static const char *const v2[] = {"depth=8", "version=v2", "shortcut=B", NULL};

    /* v1: fusion on and off, on the fused and the unfused backend. */
    run bf[4];
    for (int k = 0; k < 4; k++) {
        int be_fused = k < 2, fuse = k % 2 == 0;
        char label[96];
        run f32, emu;
        tp_backend fb = naive_backend(be_fused), bb = naive_backend_bf16(be_fused);
        tp_backend eb = naive_backend_bf16_emulated(be_fused);
        snprintf(label, sizeof label, "v1/A, %s backend, fusion %s",
                 be_fused ? "fused" : "unfused", fuse ? "on" : "off");
        printf("== %s\n", label);
        train("f32 (naive_backend)", &fb, v1, fuse, 0, &f32);
        train("bf16 (naive_backend_bf16)", &bb, v1, fuse, 0, &bf[k]);
        train("f32 rounded (..._bf16_emulated)", &eb, v1, fuse, 0, &emu);
        compare(label, &f32, &bf[k], &emu);
        CHECK(bf[k].fused == (be_fused && fuse ? 7 : 0));
        if (k == 0) {
            /* Forced f32 on the bf16 backend: f32, no bf16 calls, the f32 numbers exactly. */
            run forced;
            train("bf16 backend, forced f32", &bb, v1, fuse, 1, &forced);
            CHECK(forced.ok && forced.dtype == TP_DTYPE_F32 && forced.bf16_calls == 0);
            CHECK(identical(&forced, &f32));
            run_free(&forced);
        }
        run_free(&f32);
        run_free(&emu);
    }
    /* The four bf16 plans give the same numbers. */
    for (int k = 1; k < 4; k++) {
        int same = identical(&bf[0], &bf[k]);
        if (!same)
            printf("  bf16 plan %d differs from plan 0: loss %.9g vs %.9g\n", k, bf[k].loss[0],
                   bf[0].loss[0]);
        CHECK(same);
    }
    printf("  the four bf16 plans agree bit for bit: %s\n",
           identical(&bf[0], &bf[1]) && identical(&bf[0], &bf[2]) && identical(&bf[0], &bf[3])
               ? "yes" : "no");
    for (int k = 0; k < 4; k++)
        run_free(&bf[k]);

    /* v2 with projection shortcuts (a second shape of graph: bn_final, 1x1 downsamples). */
    {
        run f32, b16, emu;
        tp_backend fb = naive_backend(1), bb = naive_backend_bf16(1);
        tp_backend eb = naive_backend_bf16_emulated(1);
        printf("== v2/B, fused backend, fusion on\n");
        train("f32 (naive_backend)", &fb, v2, 1, 0, &f32);
        train("bf16 (naive_backend_bf16)", &bb, v2, 1, 0, &b16);
        train("f32 rounded (..._bf16_emulated)", &eb, v2, 1, 0, &emu);
        compare("v2/B", &f32, &b16, &emu);
        run_free(&f32);
        run_free(&b16);
        run_free(&emu);
    }

    /* The choice is made at each bind: forced f32, back to the backend's choice, and f32 in
     * a layout that is not the backend's preferred one. */
    {
        tp_backend bb = naive_backend_bf16(1);
        graph *g = build(v1);
        CHECK(g != NULL);
        if (g) {
            CHECK(graph_bind(g, &bb, BATCH, TP_LAYOUT_NCHW) == TP_OK);
            CHECK(graph_activation_dtype(g) == TP_DTYPE_BF16);
            CHECK(graph_set_activation_dtype(g, TP_DTYPE_BF16) == TP_ERR_INVALID);
            CHECK(graph_set_activation_dtype(g, TP_DTYPE_F32) == TP_OK);
            CHECK(graph_activation_dtype(g) == TP_DTYPE_BF16); /* until the next bind */
            CHECK(graph_bind(g, &bb, BATCH, TP_LAYOUT_NCHW) == TP_OK);
            CHECK(graph_activation_dtype(g) == TP_DTYPE_F32);
            CHECK(graph_set_activation_dtype(g, (tp_dtype)0) == TP_OK);
            CHECK(graph_bind(g, &bb, BATCH, TP_LAYOUT_NCHW) == TP_OK);
            CHECK(graph_activation_dtype(g) == TP_DTYPE_BF16);
            tp_status st = graph_bind(g, &bb, BATCH, TP_LAYOUT_NHWC);
            printf("  re-binds: forced f32 -> f32, reset -> bf16; NHWC (not the backend's "
                   "layout): %s\n", st == TP_OK ? tp_dtype_name(graph_activation_dtype(g))
                                                 : "bind refused");
            CHECK(st != TP_OK || graph_activation_dtype(g) == TP_DTYPE_F32);
            graph_free(g);
        }
    }

    printf("worst bf16 vs f32: loss rel.diff %.3e, over the SGD steps %.3e, gradient cosine "
           "%.6f, parameter gradient cosine %.6f (%s)\n", worst_loss, worst_steps,
           worst_total_cos, worst_cos, worst_at);
    long live = naive_backend_live_allocations();
    printf("live allocations: %ld (at start %ld)\n", live, live0);
    CHECK(live == live0);
    free(xh);
    registry_free(reg);
    return CHECK_EXIT();
}
