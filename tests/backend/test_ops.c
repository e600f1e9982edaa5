/* test_ops BACKEND [KEY=VALUE]...: runs every operation of a compute backend on random shapes (odd sizes,
 * batch 1, strides 1 and 2, padding 0..3, kernels 1/3/7, NCHW and NHWC and mixed layouts)
 * and compares it with the float64 reference in reference.c; then checks the backend's
 * backward pass through a small conv -> bn -> relu -> add -> pool -> gap -> linear ->
 * softmax-xent network against central finite differences of the reference forward.
 *
 * Relative error of an output = max|backend - reference| / max(max|reference|, 1e-6); every
 * fp32 operation must stay within 1e-4, and so must each gradient against finite differences
 * (normalised by max(max|fd|, 1e-2)). Exit 0 pass, 1 fail, 77 skip (backend cannot be
 * created here, e.g. "cuda" without a GPU). The plugin is found in $TP_PLUGIN_DIR, else under
 * $TP_BUILDDIR/plugins.
 *
 * KEY=VALUE arguments are the backend's parameters (threads=1, precision=bf16). A reduced
 * `precision` (backend-cuda's tf32, fp16, bf16: convolutions and matrix products on tensor
 * cores with f32 tensors around them) relaxes the tolerance of those operations and of the
 * gradient checks to what the format's mantissa allows: 5e-3 for tf32 and fp16 (10 bits),
 * 3e-2 for bf16 (7 bits); every other operation keeps 1e-4. backend-cpu's precision=bf16
 * changes only the activations' storage, so its f32 operations keep 1e-4.
 *
 * A backend whose info() reports activation_dtype = bf16 (API 1.5; backend-cuda or
 * backend-cpu with precision=bf16) then also runs the "bf16 activations" section (test_bf16_activations):
 * copy() conversions f32 <-> bf16 checked bit for bit against the host's rounding, and the
 * activation operations again with bf16 x, y, dy and dx in channels-last, reported as
 * bf16act_* rows with the tolerances given at bf16_tolerance(). */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"
#include "services.h"

#include "backend_test_support.h"
#include "reference.h"

#define OP_TOLERANCE 1e-4
#define GRAD_TOLERANCE 1e-4

/* ------------------------------------------------------------------ bookkeeping */

typedef struct op_stat {
    char name[48];
    int cases;
    double max_abs, max_rel;
} op_stat;

typedef struct ctx {
    const tp_backend_ops *ops;
    void *be;
    uint64_t rng;
    int failures;
    op_stat stats[256]; /* f32 rows, and the bf16act_ rows of a bf16 backend */
    int n_stats;
    double reduced_tol; /* > 0: the tolerance of tensor-core operations (see the top) */
    /* The dtype of the activation tensors the cases create (x, y, dy, dx; see a4()) and of
     * the inputs they round: TP_DTYPE_F32, or TP_DTYPE_BF16 inside test_bf16_activations,
     * which also selects the bf16act_ names and tolerances in compare_scaled(). */
    tp_dtype act;
    /* backend-cuda: its channels-last pooling kernels must give its generic (NCHW) kernels'
     * bits (pool_layouts_case). */
    int pool_layouts_exact;
} ctx;

/* Operations a reduced precision computes on tensor cores, and the gradient checks through
 * them. */
static int on_tensor_cores(const char *name)
{
    return !strncmp(name, "conv", 4) || !strncmp(name, "linear", 6) ||
           !strncmp(name, "gradcheck", 9);
}

static op_stat *stat_for(ctx *c, const char *name)
{
    for (int i = 0; i < c->n_stats; i++)
        if (strcmp(c->stats[i].name, name) == 0)
            return &c->stats[i];
    if (c->n_stats == (int)(sizeof c->stats / sizeof c->stats[0])) {
        c->failures++;
        printf("FAIL test_ops: more than %d operation names; enlarge ctx.stats\n", c->n_stats);
        return &c->stats[c->n_stats - 1];
    }
    op_stat *s = &c->stats[c->n_stats++];
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

/* ------------------------------------------------------------------ bf16 on the host */

/* f32 <-> bf16 on the host: the SDK's tp_bf16_from_f32 / tp_f32_from_bf16 (tensor.h), checked
 * against worked-out cases by check_bf16_helpers() before they judge a backend. */

/* v rounded to float, then to bf16 (the inputs of the bf16 cases are generated this way;
 * the exact operations' references are bf16 values already, unchanged by it). */
static double round_bf16(double v)
{
    return tp_f32_from_bf16(tp_bf16_from_f32((float)v));
}

/* The tolerance of operation `name` (unprefixed) on bf16 activations, relative to
 * max|reference| like every other; *exact set where the reference rounded to bf16 must be
 * matched exactly. Inputs are bf16 values, so the reference sees what the backend sees, and
 * arithmetic inside stays f32 (backend.h): what remains is the rounding of the stored
 * outputs to bf16's 8 significant bits: half an ulp, at most 2^-8 = 3.9e-3 of the value (the
 * worst case, just above a power of two).
 *   0 (exact): relu_forward / _backward (an input value or 0), max pooling forward (one of
 *     the inputs), subsample_pad forward / backward (copies and zeros).
 *   1e-4 (the f32 limit): outputs that stay f32 and are computed in f32 from exact inputs:
 *     global_avgpool_forward's y and the batch-norm statistics (running mean / var, saved
 *     mean / invstd).
 *   1e-2: one rounding of an f32 result: add, add_relu, max pooling backward (a sum of a
 *     few dy), average pooling, global_avgpool_backward, batch norm train / infer (and the
 *     fused trains, with ReLU and with residual + ReLU) y.
 *   3e-2: reductions with bf16 operands and intermediates: the convolutions (outputs,
 *     weight and bias gradients; the backend rounds its copy of the weights, which the test
 *     generates as bf16 values), batch-norm backward dx, dgamma, dbeta (fused too), and any
 *     operation not named here. */
static double bf16_tolerance(const char *name, int *exact)
{
    static const char *const exact_ops[] = { "relu_forward", "relu_backward", "maxpool_forward",
                                             "subsample_pad_forward", "subsample_pad_backward",
                                             "pool_nhwc_vs_nchw" };
    static const char *const f32_outputs[] = {
        "global_avgpool_forward", "batchnorm_running_mean", "batchnorm_running_var",
        "batchnorm_save_mean", "batchnorm_save_invstd", "batchnorm_relu_running_var",
        "batchnorm_relu_save_invstd", "batchnorm_add_relu_running_var",
        "batchnorm_add_relu_save_invstd"
    };
    static const char *const one_rounding[] = { "add", "add_relu", "maxpool_backward",
                                                "avgpool_forward", "avgpool_backward",
                                                "global_avgpool_backward", "batchnorm_train",
                                                "batchnorm_infer", "batchnorm_relu_train",
                                                "batchnorm_add_relu_train" };
    *exact = 0;
    for (size_t i = 0; i < sizeof exact_ops / sizeof exact_ops[0]; i++)
        if (!strcmp(name, exact_ops[i])) {
            *exact = 1;
            return 0.0;
        }
    for (size_t i = 0; i < sizeof f32_outputs / sizeof f32_outputs[0]; i++)
        if (!strcmp(name, f32_outputs[i]))
            return OP_TOLERANCE;
    for (size_t i = 0; i < sizeof one_rounding / sizeof one_rounding[0]; i++)
        if (!strcmp(name, one_rounding[i]))
            return 1e-2;
    return 3e-2;
}

/* Compares n values and records the worst error under `name`; prints failures at once.
 * Inside the bf16 section (c->act bf16) the row is bf16act_NAME and the tolerance comes
 * from bf16_tolerance() instead of `tol`. */
static void compare_scaled(ctx *c, const char *name, const char *what, const double *got,
                           const double *ref, int64_t n, double tol, double floor_scale)
{
    double max_abs = 0, max_ref = 0;
    int64_t worst = 0;
    const char *base = name;
    char row[64];
    double *rounded = NULL;
    if (c->act == TP_DTYPE_BF16) {
        int exact;
        tol = bf16_tolerance(base, &exact);
        if (exact) { /* the reference rounded as the backend stores it, matched exactly */
            rounded = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
            for (int64_t i = 0; i < n; i++)
                rounded[i] = round_bf16(ref[i]);
            ref = rounded;
        }
        snprintf(row, sizeof row, "bf16act_%s", base);
        name = row;
    }
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        if (!(d <= max_abs)) { /* NaN counts as the worst */
            max_abs = isnan(d) ? INFINITY : d;
            worst = i;
        }
        if (fabs(ref[i]) > max_ref)
            max_ref = fabs(ref[i]);
    }
    double rel = max_abs / (max_ref > floor_scale ? max_ref : floor_scale);
    if (c->reduced_tol > tol && on_tensor_cores(base))
        tol = c->reduced_tol;
    op_stat *s = stat_for(c, name);
    s->cases++;
    if (max_abs > s->max_abs)
        s->max_abs = max_abs;
    if (rel > s->max_rel)
        s->max_rel = rel;
    if (!(rel <= tol)) {
        c->failures++;
        printf("FAIL %s (%s): relative error %.3g > %.1g (max |diff| %.3g at %lld: got %.9g, "
               "reference %.9g)\n", name, what, rel, tol, max_abs, (long long)worst, got[worst],
               ref[worst]);
    }
    free(rounded);
}

static void compare(ctx *c, const char *name, const char *what, const double *got,
                    const double *ref, int64_t n, double tol)
{
    compare_scaled(c, name, what, got, ref, n, tol, 1e-6);
}

static uint64_t next_u64(ctx *c)
{
    /* splitmix64: tiny, seedable, good enough for test data */
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int irand(ctx *c, int lo, int hi) /* inclusive */
{
    return lo + (int)(next_u64(c) % (uint64_t)(hi - lo + 1));
}

static double urand(ctx *c, double lo, double hi)
{
    double u = (double)(next_u64(c) >> 11) / 9007199254740992.0;
    return lo + (hi - lo) * u;
}

/* Random values already rounded to float, so backend and reference see the same inputs. */
static double *rand_array(ctx *c, int64_t n, double lo, double hi)
{
    double *a = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        a[i] = (double)(float)urand(c, lo, hi);
    return a;
}

/* Activation inputs: rand_array's values, rounded to bf16 inside the bf16 section (the same
 * random draws either way). */
static double *rand_act(ctx *c, int64_t n, double lo, double hi)
{
    double *a = rand_array(c, n, lo, hi);
    if (c->act == TP_DTYPE_BF16)
        for (int64_t i = 0; i < n; i++)
            a[i] = round_bf16(a[i]);
    return a;
}

/* v as an activation input: rounded to float, or to bf16 inside the bf16 section. */
static double round_act(const ctx *c, double v)
{
    return c->act == TP_DTYPE_BF16 ? round_bf16(v) : (double)(float)v;
}

static double *zeros(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

#define CALL(c, expr)                                                                    \
    do {                                                                                 \
        tp_status st_ = (expr);                                                          \
        if (st_ != TP_OK) {                                                              \
            printf("FAIL %s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr,       \
                   tp_status_name(st_), services_last_error());                         \
            (c)->failures++;                                                             \
            goto out;                                                                    \
        }                                                                                \
    } while (0)

/* ------------------------------------------------------------------ device tensors */

static tp_tensor t4(tp_layout lay, int64_t n, int64_t ch, int64_t h, int64_t w)
{
    return tp_tensor_4d(TP_DTYPE_F32, lay, n, ch, h, w);
}

/* An activation tensor (x, y, dy, dx of the activation operations): f32, or bf16 inside
 * the bf16 section. */
static tp_tensor a4(const ctx *c, tp_layout lay, int64_t n, int64_t ch, int64_t h, int64_t w)
{
    return tp_tensor_4d(c->act == TP_DTYPE_BF16 ? TP_DTYPE_BF16 : TP_DTYPE_F32, lay, n, ch, h,
                        w);
}

static tp_tensor t2(int64_t rows, int64_t cols)
{
    return tp_tensor_2d(TP_DTYPE_F32, rows, cols);
}

static tp_tensor t1(int64_t n)
{
    return tp_tensor_2d(TP_DTYPE_F32, n, 0);
}

/* Logical NCHW index -> offset in t's layout (2-D and 1-D: identity). */
static int64_t offset_of(const tp_tensor *t, int64_t i)
{
    if (t->ndim != 4 || t->layout == TP_LAYOUT_NCHW)
        return i;
    const int64_t C = t->shape[1], H = t->shape[2], W = t->shape[3];
    int64_t w = i % W, h = (i / W) % H, ch = (i / (W * H)) % C, n = i / (W * H * C);
    return ((n * H + h) * W + w) * C + ch;
}

static tp_status dev_alloc(ctx *c, tp_tensor *t)
{
    t->device = TP_DEVICE_DEVICE;
    return c->ops->alloc(c->be, t, "test tensor");
}

static void dev_free(ctx *c, tp_tensor *t)
{
    if (t->data)
        c->ops->free(c->be, t);
    t->data = NULL;
}

/* Copies logical NCHW doubles into device tensor t (allocating it when needed). The layout
 * conversion happens on the host so uploads do not depend on the backend's copy; the host
 * side is always f32, so a bf16 t is converted by copy() (checked by test_bf16_copy; the
 * bf16 cases upload bf16 values, which convert exactly). */
static tp_status upload(ctx *c, tp_tensor *t, const double *v)
{
    tp_status st;
    if (!t->data && (st = dev_alloc(c, t)))
        return st;
    int64_t n = tp_tensor_count(t);
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        buf[offset_of(t, i)] = (float)v[i];
    tp_tensor h = *t;
    h.dtype = TP_DTYPE_F32;
    h.device = TP_DEVICE_HOST;
    h.data = buf;
    st = c->ops->copy(c->be, t, &h, TP_STREAM_COMPUTE);
    if (!st)
        st = c->ops->sync(c->be);
    free(buf);
    return st;
}

static tp_status upload_i32(ctx *c, tp_tensor *t, const int32_t *v, int64_t n)
{
    tp_status st;
    *t = tp_tensor_2d(TP_DTYPE_I32, n, 0);
    if ((st = dev_alloc(c, t)))
        return st;
    tp_tensor h = *t;
    h.device = TP_DEVICE_HOST;
    h.data = (void *)v;
    st = c->ops->copy(c->be, t, &h, TP_STREAM_COMPUTE);
    return st ? st : c->ops->sync(c->be);
}

/* Device tensor t (f32, or bf16 converted exactly by copy()) -> logical NCHW doubles. */
static tp_status download(ctx *c, const tp_tensor *t, double *v)
{
    int64_t n = tp_tensor_count(t);
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    tp_tensor h = *t;
    h.dtype = TP_DTYPE_F32;
    h.device = TP_DEVICE_HOST;
    h.data = buf;
    tp_status st = c->ops->copy(c->be, &h, t, TP_STREAM_COMPUTE);
    if (!st)
        st = c->ops->sync(c->be);
    if (!st)
        for (int64_t i = 0; i < n; i++)
            v[i] = buf[offset_of(t, i)];
    free(buf);
    return st;
}

/* Allocates t and poisons it with NaN, so an output the backend forgets to write shows. */
static tp_status alloc_poisoned(ctx *c, tp_tensor *t)
{
    tp_status st = dev_alloc(c, t);
    return st ? st : c->ops->fill(c->be, t, NAN);
}

/* Downloads t and compares it with ref. */
static tp_status check(ctx *c, const char *name, const char *what, const tp_tensor *t,
                       const double *ref)
{
    int64_t n = tp_tensor_count(t);
    double *got = zeros(n);
    tp_status st = download(c, t, got);
    if (!st)
        compare(c, name, what, got, ref, n, OP_TOLERANCE);
    free(got);
    return st;
}

static const char *lname(tp_layout l)
{
    return l == TP_LAYOUT_NHWC ? "NHWC" : "NCHW";
}

/* ------------------------------------------------------------------ convolution */

static void conv_case(ctx *c, ref_conv s, int with_bias, tp_layout lx, tp_layout ly)
{
    char what[160];
    snprintf(what, sizeof what, "N%d C%d %dx%d -> O%d k%dx%d s%d p%d d%d bias%d %s->%s", s.N,
             s.C, s.H, s.W, s.O, s.KH, s.KW, s.stride_h, s.pad_h, s.dil_h, with_bias, lname(lx),
             lname(ly));
    const int64_t nx = (int64_t)s.N * s.C * s.H * s.W, nw = (int64_t)s.O * s.C * s.KH * s.KW;
    const int64_t ny = (int64_t)s.N * s.O * s.OH * s.OW;
    /* The weights stay f32 tensors; with bf16 activations they are drawn as bf16 values, so
     * the backend's rounded copy of them is exact and the reference sees the same. */
    double *x = rand_act(c, nx, -1, 1), *w = rand_act(c, nw, -1, 1);
    double *b = rand_array(c, s.O, -1, 1), *dy = rand_act(c, ny, -1, 1);
    double *y = zeros(ny), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(s.O);
    tp_tensor tx = a4(c, lx, s.N, s.C, s.H, s.W), tw = t4(TP_LAYOUT_NCHW, s.O, s.C, s.KH, s.KW);
    tp_tensor tb = t1(s.O), ty = a4(c, ly, s.N, s.O, s.OH, s.OW), tdy = ty;
    tp_tensor tdx = tx, tdw = tw, tdb = tb, tdx_add = tx;
    tdy.data = tdx.data = tdw.data = tdb.data = tdx_add.data = NULL;
    double *prior = NULL;
    tp_conv_desc d = { s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dil_h, s.dil_w };

    ref_conv_forward(&s, x, w, with_bias ? b : NULL, y);
    ref_conv_backward_data(&s, dy, w, dx);
    ref_conv_backward_filter(&s, x, dy, dw, with_bias ? db : NULL);

    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tw, w));
    CALL(c, upload(c, &tb, b));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, alloc_poisoned(c, &tdw));
    CALL(c, alloc_poisoned(c, &tdb));
    /* Twice: the second call runs the cached primitive. */
    for (int rep = 0; rep < 2; rep++) {
        CALL(c, c->ops->conv_forward(c->be, &d, &tx, &tw, with_bias ? &tb : NULL, &ty));
        CALL(c, check(c, "conv_forward", what, &ty, y));
    }
    CALL(c, c->ops->conv_backward_data(c->be, &d, &tdy, &tw, &tdx));
    CALL(c, check(c, "conv_backward_data", what, &tdx, dx));
    if (c->ops->conv_backward_data_add) { /* API 1.7: dx += the same, onto a prior value */
        prior = rand_act(c, nx, -1, 1);
        tdx_add = tx;
        tdx_add.data = NULL;
        CALL(c, upload(c, &tdx_add, prior));
        for (int64_t i = 0; i < nx; i++)
            prior[i] += dx[i];
        CALL(c, c->ops->conv_backward_data_add(c->be, &d, &tdy, &tw, &tdx_add));
        CALL(c, check(c, "conv_backward_data_add", what, &tdx_add, prior));
    }
    CALL(c, c->ops->conv_backward_filter(c->be, &d, &tx, &tdy, &tdw, with_bias ? &tdb : NULL));
    CALL(c, check(c, "conv_backward_filter", what, &tdw, dw));
    if (with_bias)
        CALL(c, check(c, "conv_backward_bias", what, &tdb, db));
out:
    dev_free(c, &tx), dev_free(c, &tw), dev_free(c, &tb), dev_free(c, &ty);
    dev_free(c, &tdy), dev_free(c, &tdx), dev_free(c, &tdw), dev_free(c, &tdb);
    dev_free(c, &tdx_add);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(prior);
}

/* The geometry of test_conv's case i. */
static ref_conv random_conv(ctx *c, int i)
{
    static const int kernels[] = { 1, 3, 7 };
    ref_conv s;
    memset(&s, 0, sizeof s);
    s.KH = s.KW = kernels[i % 3];
    s.N = i % 4 == 0 ? 1 : irand(c, 2, 3);
    s.C = irand(c, 1, 6);
    s.O = irand(c, 1, 8);
    s.stride_h = s.stride_w = 1 + (i / 3) % 2;
    s.pad_h = s.pad_w = irand(c, 0, 3);
    s.dil_h = s.dil_w = (i % 11 == 5) ? 2 : 1;
    int min_in = (s.KH - 1) * s.dil_h + 1 - 2 * s.pad_h;
    if (min_in < 1)
        min_in = 1;
    s.H = irand(c, min_in, min_in + 8);
    s.W = irand(c, min_in, min_in + 8);
    if (i % 5 == 0) { /* rectangular kernel and asymmetric stride/padding now and then */
        s.KW = kernels[(i + 1) % 3];
        s.pad_w = irand(c, 0, 3);
        s.stride_w = 3 - s.stride_h;
        int min_w = (s.KW - 1) * s.dil_w + 1 - 2 * s.pad_w;
        s.W = irand(c, min_w < 1 ? 1 : min_w, (min_w < 1 ? 1 : min_w) + 8);
    }
    s.OH = ref_out_size(s.H, s.KH, s.stride_h, s.pad_h, s.dil_h);
    s.OW = ref_out_size(s.W, s.KW, s.stride_w, s.pad_w, s.dil_w);
    return s;
}

/* A square convolution, dilation 1. */
static ref_conv conv_geom(int N, int C, int H, int W, int O, int K, int stride, int pad)
{
    ref_conv s = { N, C, H, W, O, K, K, ref_out_size(H, K, stride, pad, 1),
                   ref_out_size(W, K, stride, pad, 1), stride, stride, pad, pad, 1, 1 };
    return s;
}

static void test_conv(ctx *c)
{
    for (int i = 0; i < 36; i++) {
        ref_conv s = random_conv(c, i);
        int with_bias = irand(c, 0, 1);
        tp_layout lx = i % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW;
        tp_layout ly = i % 6 == 4 ? (lx == TP_LAYOUT_NHWC ? TP_LAYOUT_NCHW : TP_LAYOUT_NHWC) : lx;
        conv_case(c, s, with_bias, lx, ly);
    }
}

/* ------------------------------------------------------------------ batch normalisation */

/* The fused batch norm + ReLU (API 1.2) against the reference batch norm followed by the
 * reference ReLU. The backward reference masks dy with the backend's own y > 0, so that an
 * output within rounding of zero cannot flip the mask between the two. */
static void bn_relu_case(ctx *c, const char *what, int N, int C, int H, int W,
                         const tp_bn_desc *d, const tp_tensor *tx, const double *x,
                         const tp_tensor *tg, const double *gamma, const tp_tensor *tb,
                         const double *beta, const tp_tensor *tdy, const double *dy,
                         tp_layout ly)
{
    if (!c->ops->batchnorm_relu_train)
        return; /* optional; test_fused_ops_offered checks that all three come together */
    const int64_t n = (int64_t)N * C * H * W;
    int64_t ws_bytes = -1;
    double *y = zeros(n), *yb = zeros(n), *dz = zeros(n), *dx = zeros(n);
    double *rm = zeros(C), *rv = zeros(C), *sm = zeros(C), *si = zeros(C);
    double *dg = zeros(C), *dbt = zeros(C);
    tp_tensor ty = a4(c, ly, N, C, H, W), tdx = *tx, trm = t1(C), trv = t1(C), tsm = t1(C);
    tp_tensor tsi = t1(C), tdg = t1(C), tdb = t1(C), tws = t1(0), tdy2 = t1(0);
    tdx.data = NULL;
    CALL(c, c->ops->batchnorm_relu_workspace_bytes(c->be, d, tx, &ws_bytes));
    if (ws_bytes < 0) {
        c->failures++;
        printf("FAIL batchnorm_relu_workspace_bytes (%s): %lld bytes\n", what,
               (long long)ws_bytes);
        goto out;
    }
    tws = tp_tensor_2d(TP_DTYPE_U8, ws_bytes, 0);
    if (ws_bytes > 0)
        CALL(c, dev_alloc(c, &tws));
    for (int64_t i = 0; i < C; i++)
        rv[i] = 1;
    CALL(c, upload(c, &trm, rm));
    CALL(c, upload(c, &trv, rv));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, alloc_poisoned(c, &tsm));
    CALL(c, alloc_poisoned(c, &tsi));
    CALL(c, alloc_poisoned(c, &tdg));
    CALL(c, alloc_poisoned(c, &tdb));
    ref_bn_train(N, C, H, W, x, gamma, beta, d->eps, d->momentum, y, rm, rv, sm, si);
    ref_relu_forward(n, y, y);
    CALL(c, c->ops->batchnorm_relu_train(c->be, d, tx, tg, tb, &ty, &trm, &trv, &tsm, &tsi,
                                         ws_bytes > 0 ? &tws : NULL));
    CALL(c, check(c, "batchnorm_relu_train", what, &ty, y));
    CALL(c, check(c, "batchnorm_relu_running_var", what, &trv, rv));
    CALL(c, check(c, "batchnorm_relu_save_invstd", what, &tsi, si));

    CALL(c, download(c, &ty, yb));
    ref_relu_backward(n, yb, dy, dz);
    ref_bn_backward(N, C, H, W, x, dz, gamma, sm, si, dx, dg, dbt);
    CALL(c, c->ops->batchnorm_relu_backward(c->be, d, tx, &ty, ws_bytes > 0 ? &tws : NULL, tdy,
                                            tg, &tsm, &tsi, &tdx, &tdg, &tdb));
    CALL(c, check(c, "batchnorm_relu_backward", what, &tdx, dx));
    CALL(c, check(c, "batchnorm_relu_backward_dgamma", what, &tdg, dg));
    CALL(c, check(c, "batchnorm_relu_backward_dbeta", what, &tdb, dbt));
    if (ly == TP_LAYOUT_NHWC) {
        /* dy in the other layout than y (backend-cpu: its channels-last loops wrote no
         * workspace, so it masks dy by y itself). */
        tdy2 = a4(c, TP_LAYOUT_NCHW, N, C, H, W);
        CALL(c, upload(c, &tdy2, dy));
        CALL(c, c->ops->batchnorm_relu_backward(c->be, d, tx, &ty, ws_bytes > 0 ? &tws : NULL,
                                                &tdy2, tg, &tsm, &tsi, &tdx, &tdg, &tdb));
        CALL(c, check(c, "batchnorm_relu_backward", what, &tdx, dx));
        CALL(c, check(c, "batchnorm_relu_backward_dgamma", what, &tdg, dg));
    }
out:
    dev_free(c, &tdy2);
    dev_free(c, &ty), dev_free(c, &tdx), dev_free(c, &trm), dev_free(c, &trv);
    dev_free(c, &tsm), dev_free(c, &tsi), dev_free(c, &tdg), dev_free(c, &tdb);
    dev_free(c, &tws);
    free(y), free(yb), free(dz), free(dx), free(rm), free(rv), free(sm), free(si);
    free(dg), free(dbt);
}

static void expect_refused(ctx *c, const char *what, tp_status st);

/* API 1.7: batch norm + residual + ReLU against the reference (the residual in x's layout, y
 * in ly), then its refusal of a y that is the residual. */
static void bn_add_relu_case(ctx *c, const char *what, int N, int C, int H, int W,
                             const tp_bn_desc *d, const tp_tensor *tx, const double *x,
                             const tp_tensor *tg, const double *gamma, const tp_tensor *tb,
                             const double *beta, tp_layout ly)
{
    if (!c->ops->batchnorm_add_relu_train)
        return; /* optional */
    const int64_t n = (int64_t)N * C * H * W;
    double *y = zeros(n), *res = rand_act(c, n, -1, 1);
    double *rm = zeros(C), *rv = zeros(C), *sm = zeros(C), *si = zeros(C);
    tp_tensor ty = a4(c, ly, N, C, H, W), tr = a4(c, tx->layout, N, C, H, W);
    tp_tensor trm = t1(C), trv = t1(C), tsm = t1(C), tsi = t1(C);
    for (int64_t i = 0; i < C; i++)
        rv[i] = 1;
    CALL(c, upload(c, &tr, res));
    CALL(c, upload(c, &trm, rm));
    CALL(c, upload(c, &trv, rv));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tsm));
    CALL(c, alloc_poisoned(c, &tsi));
    ref_bn_train(N, C, H, W, x, gamma, beta, d->eps, d->momentum, y, rm, rv, sm, si);
    ref_add(n, y, res, y);
    ref_relu_forward(n, y, y);
    CALL(c, c->ops->batchnorm_add_relu_train(c->be, d, tx, &tr, tg, tb, &ty, &trm, &trv, &tsm,
                                             &tsi));
    CALL(c, check(c, "batchnorm_add_relu_train", what, &ty, y));
    CALL(c, check(c, "batchnorm_add_relu_running_var", what, &trv, rv));
    CALL(c, check(c, "batchnorm_add_relu_save_invstd", what, &tsi, si));
    if (ly == tx->layout)
        expect_refused(c, "batchnorm_add_relu_train with y the residual",
                       c->ops->batchnorm_add_relu_train(c->be, d, tx, &tr, tg, tb, &tr, &trm,
                                                        &trv, &tsm, &tsi));
out:
    dev_free(c, &ty), dev_free(c, &tr), dev_free(c, &trm), dev_free(c, &trv);
    dev_free(c, &tsm), dev_free(c, &tsi);
    free(y), free(res), free(rm), free(rv), free(sm), free(si);
}

/* The API 1.2 fused operations come all together or not at all (the graph relies on it). */
static void test_fused_ops_offered(ctx *c)
{
    int offered = !!c->ops->add_relu + !!c->ops->batchnorm_relu_workspace_bytes +
                  !!c->ops->batchnorm_relu_train + !!c->ops->batchnorm_relu_backward;
    printf("fused operations (API 1.2): %s\n", offered == 4 ? "offered" : offered ? "partial"
                                                                                  : "not offered");
    if (offered != 0 && offered != 4) {
        c->failures++;
        printf("FAIL fused operations: %d of the 4 are offered; offer all or none\n", offered);
    }
}

static void bn_case(ctx *c, int N, int C, int H, int W, tp_layout lx, tp_layout ly)
{
    char what[96];
    snprintf(what, sizeof what, "N%d C%d %dx%d %s->%s", N, C, H, W, lname(lx), lname(ly));
    const int64_t n = (int64_t)N * C * H * W;
    const double eps = 1e-5, momentum = 0.1;
    double *x = rand_array(c, n, -1, 1);
    for (int64_t i = 0; i < n; i++) /* a per-channel offset, so the mean matters */
        x[i] = round_act(c, x[i] * 2 + 0.5 * (double)((i / (H * W)) % C));
    double *gamma = rand_array(c, C, 0.5, 1.5), *beta = rand_array(c, C, -0.5, 0.5);
    double *rm = rand_array(c, C, -0.2, 0.2), *rv = rand_array(c, C, 0.5, 1.5);
    double *dy = rand_act(c, n, -1, 1), *y = zeros(n), *dx = zeros(n);
    double *sm = zeros(C), *si = zeros(C), *dg = zeros(C), *dbt = zeros(C), *yi = zeros(n);
    tp_tensor tx = a4(c, lx, N, C, H, W), ty = a4(c, ly, N, C, H, W), tdy = ty, tdx = tx;
    tp_tensor tg = t1(C), tb = t1(C), trm = t1(C), trv = t1(C), tsm = t1(C), tsi = t1(C);
    tp_tensor tdg = t1(C), tdb = t1(C), tyi = ty;
    tp_bn_desc d = { eps, momentum };

    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tg, gamma));
    CALL(c, upload(c, &tb, beta));
    CALL(c, upload(c, &trm, rm));
    CALL(c, upload(c, &trv, rv));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tyi));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, alloc_poisoned(c, &tsm));
    CALL(c, alloc_poisoned(c, &tsi));
    CALL(c, alloc_poisoned(c, &tdg));
    CALL(c, alloc_poisoned(c, &tdb));

    ref_bn_train(N, C, H, W, x, gamma, beta, eps, momentum, y, rm, rv, sm, si);
    CALL(c, c->ops->batchnorm_train(c->be, &d, &tx, &tg, &tb, &ty, &trm, &trv, &tsm, &tsi));
    CALL(c, check(c, "batchnorm_train", what, &ty, y));
    CALL(c, check(c, "batchnorm_running_mean", what, &trm, rm));
    CALL(c, check(c, "batchnorm_running_var", what, &trv, rv));
    CALL(c, check(c, "batchnorm_save_mean", what, &tsm, sm));
    CALL(c, check(c, "batchnorm_save_invstd", what, &tsi, si));

    ref_bn_infer(N, C, H, W, x, gamma, beta, rm, rv, eps, yi);
    CALL(c, c->ops->batchnorm_infer(c->be, &d, &tx, &tg, &tb, &trm, &trv, &tyi));
    CALL(c, check(c, "batchnorm_infer", what, &tyi, yi));

    ref_bn_backward(N, C, H, W, x, dy, gamma, sm, si, dx, dg, dbt);
    CALL(c, c->ops->batchnorm_backward(c->be, &d, &tx, &tdy, &tg, &tsm, &tsi, &tdx, &tdg, &tdb));
    CALL(c, check(c, "batchnorm_backward", what, &tdx, dx));
    CALL(c, check(c, "batchnorm_backward_dgamma", what, &tdg, dg));
    CALL(c, check(c, "batchnorm_backward_dbeta", what, &tdb, dbt));
    bn_relu_case(c, what, N, C, H, W, &d, &tx, x, &tg, gamma, &tb, beta, &tdy, dy, ly);
    bn_add_relu_case(c, what, N, C, H, W, &d, &tx, x, &tg, gamma, &tb, beta, ly);
out:
    dev_free(c, &tx), dev_free(c, &ty), dev_free(c, &tdy), dev_free(c, &tdx);
    dev_free(c, &tg), dev_free(c, &tb), dev_free(c, &trm), dev_free(c, &trv);
    dev_free(c, &tsm), dev_free(c, &tsi), dev_free(c, &tdg), dev_free(c, &tdb);
    dev_free(c, &tyi);
    free(x), free(gamma), free(beta), free(rm), free(rv), free(dy), free(y), free(dx);
    free(sm), free(si), free(dg), free(dbt), free(yi);
}

static void test_batchnorm(ctx *c)
{
    for (int i = 0; i < 12; i++) {
        int N = i % 3 == 0 ? 1 : irand(c, 2, 4);
        int H = irand(c, 1, 9), W = irand(c, 2, 9);
        tp_layout lx = i % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW;
        tp_layout ly = i % 4 == 3 ? TP_LAYOUT_NCHW : lx;
        bn_case(c, N, irand(c, 1, 17), H, W, lx, ly);
    }
    /* Wider and longer channels-last tensors, for backends that split the rows and channels
     * of NHWC data over many thread blocks (backend-cuda's own kernels): channel counts
     * that are and are not multiples of 4, more channels than one block covers, and enough
     * rows for many partial results per channel. */
    bn_case(c, 8, 64, 16, 16, TP_LAYOUT_NHWC, TP_LAYOUT_NHWC);
    bn_case(c, 4, 160, 5, 7, TP_LAYOUT_NHWC, TP_LAYOUT_NCHW);
    bn_case(c, 3, 37, 9, 9, TP_LAYOUT_NHWC, TP_LAYOUT_NHWC);
    bn_case(c, 32, 8, 32, 32, TP_LAYOUT_NHWC, TP_LAYOUT_NHWC);
    /* backend-cpu's own channels-last loops (multiples of 16 channels above 16) sum rows in
     * blocks of 8192 / C: here 3 blocks of 256 rows, the last one partial. */
    bn_case(c, 5, 32, 11, 13, TP_LAYOUT_NHWC, TP_LAYOUT_NHWC);
}

/* ------------------------------------------------------------------ relu, add */

static void elementwise_case(ctx *c, tp_tensor shape, tp_layout lout)
{
    char what[64];
    snprintf(what, sizeof what, "%d-D %lld elements %s", shape.ndim,
             (long long)tp_tensor_count(&shape), lname(shape.layout));
    const int64_t n = tp_tensor_count(&shape);
    double *x = rand_act(c, n, -1, 1), *b = rand_act(c, n, -1, 1);
    double *dy = rand_act(c, n, -1, 1), *y = zeros(n), *dx = zeros(n), *s = zeros(n);
    tp_tensor tx = shape, tb = shape, tdy = shape, ty = shape, tdx = shape, ts = shape;
    ty.layout = tdx.layout = lout;
    tx.data = tb.data = tdy.data = ty.data = tdx.data = ts.data = NULL;
    ref_relu_forward(n, x, y);
    ref_relu_backward(n, y, dy, dx);
    ref_add(n, x, b, s);
    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tb, b));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, alloc_poisoned(c, &ts));
    CALL(c, c->ops->relu_forward(c->be, &tx, &ty));
    CALL(c, check(c, "relu_forward", what, &ty, y));
    CALL(c, c->ops->relu_backward(c->be, &ty, &tdy, &tdx));
    CALL(c, check(c, "relu_backward", what, &tdx, dx));
    CALL(c, c->ops->add(c->be, &tx, &tb, &ts));
    CALL(c, check(c, "add", what, &ts, s));
    if (c->ops->add_relu) { /* API 1.2, optional */
        double *r = zeros(n);
        ref_relu_forward(n, s, r);
        CALL(c, c->ops->add_relu(c->be, &tx, &tb, &ts));
        CALL(c, check(c, "add_relu", what, &ts, r));
        free(r);
        /* With the fused operations comes relu_backward in place (dx == dy). */
        if (ty.layout == tdy.layout) {
            CALL(c, c->ops->relu_backward(c->be, &ty, &tdy, &tdy));
            CALL(c, check(c, "relu_backward", "in place", &tdy, dx));
            CALL(c, upload(c, &tdy, dy));
        }
    }
    /* ReLU in place, as the graph runs it after a batch norm it could not fuse. */
    ref_relu_forward(n, dy, dx);
    CALL(c, c->ops->relu_forward(c->be, &tdy, &tdy));
    CALL(c, check(c, "relu_forward", "in place", &tdy, dx));
    /* In place (y aliases a), as residual blocks use it. */
    CALL(c, c->ops->add(c->be, &tx, &tb, &tx));
    CALL(c, check(c, "add", "in place", &tx, s));
out:
    dev_free(c, &tx), dev_free(c, &tb), dev_free(c, &tdy), dev_free(c, &ty);
    dev_free(c, &tdx), dev_free(c, &ts);
    free(x), free(b), free(dy), free(y), free(dx), free(s);
}

static void test_elementwise(ctx *c)
{
    for (int i = 0; i < 8; i++) {
        tp_layout l = i % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW;
        tp_layout lout = i == 5 ? TP_LAYOUT_NCHW : l;
        elementwise_case(c, t4(l, irand(c, 1, 3), irand(c, 1, 9), irand(c, 1, 9), irand(c, 1, 9)),
                         lout);
    }
    elementwise_case(c, t2(7, 13), TP_LAYOUT_NCHW);
    elementwise_case(c, t1(1001), TP_LAYOUT_NCHW);
}

/* ------------------------------------------------------------------ pooling */

static void pool_case(ctx *c, ref_pool p, tp_layout l)
{
    char what[128];
    snprintf(what, sizeof what, "%s N%d C%d %dx%d k%dx%d s%dx%d p%dx%d %s",
             p.max ? "max" : "avg", p.N, p.C, p.H, p.W, p.KH, p.KW, p.SH, p.SW, p.PH, p.PW,
             lname(l));
    const int64_t nx = (int64_t)p.N * p.C * p.H * p.W, ny = (int64_t)p.N * p.C * p.OH * p.OW;
    /* With bf16 inputs, ties for a window's maximum occur: the rule of the first maximum is
     * exercised. */
    double *x = rand_act(c, nx, -1, 1), *dy = rand_act(c, ny, -1, 1);
    double *y = zeros(ny), *dx = zeros(nx);
    tp_tensor tx = a4(c, l, p.N, p.C, p.H, p.W), ty = a4(c, l, p.N, p.C, p.OH, p.OW), tdy = ty;
    tp_tensor tdx = tx;
    tp_pool_desc d = { p.max ? TP_POOL_MAX : TP_POOL_AVG, p.KH, p.KW, p.SH, p.SW, p.PH, p.PW };
    ref_pool_forward(&p, x, y);
    ref_pool_backward(&p, x, dy, dx);
    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, c->ops->pool_forward(c->be, &d, &tx, &ty));
    CALL(c, check(c, p.max ? "maxpool_forward" : "avgpool_forward", what, &ty, y));
    CALL(c, c->ops->pool_backward(c->be, &d, &tx, &ty, &tdy, &tdx));
    CALL(c, check(c, p.max ? "maxpool_backward" : "avgpool_backward", what, &tdx, dx));
out:
    dev_free(c, &tx), dev_free(c, &ty), dev_free(c, &tdy), dev_free(c, &tdx);
    free(x), free(dy), free(y), free(dx);
}

/* The geometry of test_pool's case i (odd i: max pooling). */
static ref_pool random_pool(ctx *c, int i)
{
    static const int kernels[] = { 1, 2, 3, 7 };
    ref_pool p;
    memset(&p, 0, sizeof p);
    p.max = i % 2;
    p.KH = p.KW = kernels[(i / 2) % 4];
    if (i % 7 == 3)
        p.KW = 2;
    p.SH = irand(c, 1, 3);
    p.SW = i % 5 == 0 ? 1 : p.SH;
    p.PH = irand(c, 0, p.KH / 2 < 3 ? p.KH / 2 : 3);
    p.PW = irand(c, 0, p.KW / 2 < 3 ? p.KW / 2 : 3);
    p.N = i % 4 == 1 ? 1 : irand(c, 2, 3);
    p.C = irand(c, 1, 9);
    p.H = irand(c, p.KH, p.KH + 8);
    p.W = irand(c, p.KW, p.KW + 8);
    p.OH = ref_out_size(p.H, p.KH, p.SH, p.PH, 1);
    p.OW = ref_out_size(p.W, p.KW, p.SW, p.PW, 1);
    return p;
}

/* The same pooling in both layouts, compared bit for bit (backend-cuda, pool_layouts_exact):
 * channels-last with C a multiple of 8 takes the vectorised kernels, NCHW the generic ones,
 * which must agree exactly (max pooling both ways; average pooling forward where both run
 * on the own kernels, i.e. bf16 activations: f32 average pooling forward is cuDNN's). */
static void pool_layouts_case(ctx *c, ref_pool p)
{
    if (!c->pool_layouts_exact || (!p.max && c->act != TP_DTYPE_BF16))
        return;
    char what[128];
    snprintf(what, sizeof what, "%s N%d C%d %dx%d k%d s%d p%d", p.max ? "max" : "avg", p.N,
             p.C, p.H, p.W, p.KH, p.SH, p.PH);
    const int64_t nx = (int64_t)p.N * p.C * p.H * p.W, ny = (int64_t)p.N * p.C * p.OH * p.OW;
    double *x = rand_act(c, nx, -1, 1), *dy = rand_act(c, ny, -1, 1);
    double *y[2] = {zeros(ny), zeros(ny)}, *dx[2] = {zeros(nx), zeros(nx)};
    tp_tensor tx[2], ty[2], tdy[2], tdx[2];
    tp_pool_desc d = { p.max ? TP_POOL_MAX : TP_POOL_AVG, p.KH, p.KW, p.SH, p.SW, p.PH, p.PW };
    for (int k = 0; k < 2; k++) {
        tp_layout l = k ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW;
        tx[k] = tdx[k] = a4(c, l, p.N, p.C, p.H, p.W);
        ty[k] = tdy[k] = a4(c, l, p.N, p.C, p.OH, p.OW);
    }
    for (int k = 0; k < 2; k++) {
        CALL(c, upload(c, &tx[k], x));
        CALL(c, upload(c, &tdy[k], dy));
        CALL(c, alloc_poisoned(c, &ty[k]));
        CALL(c, alloc_poisoned(c, &tdx[k]));
        CALL(c, c->ops->pool_forward(c->be, &d, &tx[k], &ty[k]));
        CALL(c, download(c, &ty[k], y[k]));
        if (p.max) {
            CALL(c, c->ops->pool_backward(c->be, &d, &tx[k], &ty[k], &tdy[k], &tdx[k]));
            CALL(c, download(c, &tdx[k], dx[k]));
        }
    }
    compare(c, "pool_nhwc_vs_nchw", what, y[1], y[0], ny, 0.0);
    if (p.max)
        compare(c, "pool_nhwc_vs_nchw", what, dx[1], dx[0], nx, 0.0);
out:
    for (int k = 0; k < 2; k++) {
        dev_free(c, &tx[k]), dev_free(c, &ty[k]), dev_free(c, &tdy[k]), dev_free(c, &tdx[k]);
        free(y[k]), free(dx[k]);
    }
    free(x), free(dy);
}

/* A pooling geometry with output sizes filled in. */
static ref_pool pool_geom(int max, int N, int C, int H, int W, int K, int S, int P)
{
    ref_pool p;
    memset(&p, 0, sizeof p);
    p.max = max, p.N = N, p.C = C, p.H = H, p.W = W;
    p.KH = p.KW = K, p.SH = p.SW = S, p.PH = p.PW = P;
    p.OH = ref_out_size(H, K, S, P, 1);
    p.OW = ref_out_size(W, K, S, P, 1);
    return p;
}

static void test_pool(ctx *c)
{
    for (int i = 0; i < 24; i++)
        pool_case(c, random_pool(c, i), (i / 2) % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW);
    /* Channels-last with C a multiple of 16 bytes' worth of values (backend-cuda's vectorised
     * kernels: 4 f32 or 8 bf16 channels a thread), ResNet's stem pooling among them, and C =
     * 12, vectorised in f32 but not in bf16. */
    const ref_pool nhwc[] = {
        pool_geom(1, 2, 16, 11, 11, 3, 2, 1), pool_geom(1, 1, 8, 9, 7, 2, 2, 0),
        pool_geom(0, 2, 16, 6, 6, 3, 1, 1),   pool_geom(1, 3, 12, 7, 7, 3, 2, 1),
        pool_geom(1, 2, 24, 5, 8, 3, 1, 1),
    };
    for (size_t i = 0; i < sizeof nhwc / sizeof nhwc[0]; i++) {
        pool_case(c, nhwc[i], TP_LAYOUT_NHWC);
        pool_layouts_case(c, nhwc[i]);
    }
}

/* ------------------------------------------------------------------ gap, linear, shortcut */

/* x and dx are activations; y and dy are f32 in every mode. */
static void gap_case(ctx *c, int N, int C, int H, int W, tp_layout l)
{
    char what[64];
    snprintf(what, sizeof what, "N%d C%d %dx%d %s", N, C, H, W, lname(l));
    const int64_t nx = (int64_t)N * C * H * W;
    double *x = rand_act(c, nx, -1, 1), *dy = rand_array(c, N * C, -1, 1);
    double *y = zeros(N * C), *dx = zeros(nx);
    tp_tensor tx = a4(c, l, N, C, H, W), ty = t2(N, C), tdy = ty, tdx = tx;
    ref_gap_forward(N, C, H, W, x, y);
    ref_gap_backward(N, C, H, W, dy, dx);
    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, c->ops->global_avgpool_forward(c->be, &tx, &ty));
    CALL(c, check(c, "global_avgpool_forward", what, &ty, y));
    CALL(c, c->ops->global_avgpool_backward(c->be, &tdy, &tdx));
    CALL(c, check(c, "global_avgpool_backward", what, &tdx, dx));
out:
    dev_free(c, &tx), dev_free(c, &ty), dev_free(c, &tdy), dev_free(c, &tdx);
    free(x), free(dy), free(y), free(dx);
}

static void test_gap(ctx *c)
{
    for (int i = 0; i < 6; i++) {
        int N = irand(c, 1, 4), C = irand(c, 1, 17), H = irand(c, 1, 9), W = irand(c, 1, 9);
        gap_case(c, N, C, H, W, i % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW);
    }
}

static void test_linear(ctx *c)
{
    for (int i = 0; i < 8; i++) {
        int N = i % 3 == 0 ? 1 : irand(c, 2, 33), K = irand(c, 1, 70), M = irand(c, 1, 20);
        int with_bias = i % 2, with_dx = i % 4 != 3;
        char what[64];
        snprintf(what, sizeof what, "N%d K%d M%d bias%d dx%d", N, K, M, with_bias, with_dx);
        double *x = rand_array(c, (int64_t)N * K, -1, 1), *w = rand_array(c, (int64_t)M * K, -1, 1);
        double *b = rand_array(c, M, -1, 1), *dy = rand_array(c, (int64_t)N * M, -1, 1);
        double *y = zeros((int64_t)N * M), *dx = zeros((int64_t)N * K), *dw = zeros((int64_t)M * K);
        double *db = zeros(M);
        tp_tensor tx = t2(N, K), tw = t2(M, K), tb = t1(M), tdy = t2(N, M), ty = tdy;
        tp_tensor tdx = tx, tdw = tw, tdb = tb;
        ref_linear_forward(N, K, M, x, w, with_bias ? b : NULL, y);
        ref_linear_backward(N, K, M, x, w, dy, dx, dw, db);
        CALL(c, upload(c, &tx, x));
        CALL(c, upload(c, &tw, w));
        CALL(c, upload(c, &tb, b));
        CALL(c, upload(c, &tdy, dy));
        CALL(c, alloc_poisoned(c, &ty));
        CALL(c, alloc_poisoned(c, &tdx));
        CALL(c, alloc_poisoned(c, &tdw));
        CALL(c, alloc_poisoned(c, &tdb));
        CALL(c, c->ops->linear_forward(c->be, &tx, &tw, with_bias ? &tb : NULL, &ty));
        CALL(c, check(c, "linear_forward", what, &ty, y));
        CALL(c, c->ops->linear_backward(c->be, &tx, &tw, &tdy, with_dx ? &tdx : NULL, &tdw,
                                        with_bias ? &tdb : NULL));
        if (with_dx)
            CALL(c, check(c, "linear_backward_dx", what, &tdx, dx));
        CALL(c, check(c, "linear_backward_dw", what, &tdw, dw));
        if (with_bias)
            CALL(c, check(c, "linear_backward_db", what, &tdb, db));
    out:
        dev_free(c, &tx), dev_free(c, &tw), dev_free(c, &tb), dev_free(c, &tdy);
        dev_free(c, &ty), dev_free(c, &tdx), dev_free(c, &tdw), dev_free(c, &tdb);
        free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    }
}

static void subsample_case(ctx *c, int stride, int N, int C, int Cout, int H, int W,
                           tp_layout l)
{
    int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    char what[64];
    snprintf(what, sizeof what, "s%d C%d->%d %dx%d %s", stride, C, Cout, H, W, lname(l));
    const int64_t nx = (int64_t)N * C * H * W, ny = (int64_t)N * Cout * OH * OW;
    double *x = rand_act(c, nx, -1, 1), *dy = rand_act(c, ny, -1, 1);
    double *y = zeros(ny), *dx = zeros(nx);
    tp_tensor tx = a4(c, l, N, C, H, W), ty = a4(c, l, N, Cout, OH, OW), tdy = ty, tdx = tx;
    ref_subsample_pad_forward(N, C, H, W, Cout, stride, x, y);
    ref_subsample_pad_backward(N, C, H, W, Cout, stride, dy, dx);
    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &tdy, dy));
    CALL(c, alloc_poisoned(c, &ty));
    CALL(c, alloc_poisoned(c, &tdx));
    CALL(c, c->ops->subsample_pad_forward(c->be, stride, &tx, &ty));
    CALL(c, check(c, "subsample_pad_forward", what, &ty, y));
    CALL(c, c->ops->subsample_pad_backward(c->be, stride, &tdy, &tdx));
    CALL(c, check(c, "subsample_pad_backward", what, &tdx, dx));
out:
    dev_free(c, &tx), dev_free(c, &ty), dev_free(c, &tdy), dev_free(c, &tdx);
    free(x), free(dy), free(y), free(dx);
}

static void test_subsample_pad(ctx *c)
{
    for (int i = 0; i < 8; i++) {
        int stride = 1 + i % 2, N = irand(c, 1, 3), C = irand(c, 1, 6);
        int Cout = C + irand(c, 0, 6), H = irand(c, 1, 9), W = irand(c, 1, 9);
        subsample_case(c, stride, N, C, Cout, H, W,
                       (i / 2) % 2 ? TP_LAYOUT_NHWC : TP_LAYOUT_NCHW);
    }
}

/* ------------------------------------------------------------------ loss and metrics */

static void test_loss(ctx *c)
{
    for (int i = 0; i < 8; i++) {
        int N = i % 4 == 0 ? 1 : irand(c, 2, 40), K = irand(c, 2, 20);
        double smoothing = i % 2 ? 0.1 : 0.0, grad_scale = i % 3 == 2 ? 128.0 : 1.0;
        char what[64];
        snprintf(what, sizeof what, "N%d K%d smoothing %.1f scale %g", N, K, smoothing, grad_scale);
        double *z = rand_array(c, (int64_t)N * K, -8, 8), *dz = zeros((int64_t)N * K);
        int32_t *lab = malloc(sizeof(int32_t) * (size_t)N);
        double loss_ref, loss_got[1];
        for (int n = 0; n < N; n++)
            lab[n] = irand(c, 0, K - 1);
        tp_tensor tz = t2(N, K), tl, tloss = t1(1), tdz = tz;
        tl.data = NULL;
        loss_ref = ref_softmax_xent(N, K, z, lab, smoothing, grad_scale, dz);
        CALL(c, upload(c, &tz, z));
        CALL(c, upload_i32(c, &tl, lab, N));
        CALL(c, alloc_poisoned(c, &tloss));
        CALL(c, alloc_poisoned(c, &tdz));
        CALL(c, c->ops->softmax_xent(c->be, &tz, &tl, smoothing, grad_scale, &tloss, &tdz));
        CALL(c, download(c, &tloss, loss_got));
        compare(c, "softmax_xent_loss", what, loss_got, &loss_ref, 1, OP_TOLERANCE);
        CALL(c, check(c, "softmax_xent_grad", what, &tdz, dz));
        /* Evaluation: no gradient tensor. */
        CALL(c, c->ops->softmax_xent(c->be, &tz, &tl, smoothing, grad_scale, &tloss, NULL));
        CALL(c, download(c, &tloss, loss_got));
        compare(c, "softmax_xent_loss", "no gradient", loss_got, &loss_ref, 1, OP_TOLERANCE);
    out:
        dev_free(c, &tz), dev_free(c, &tl), dev_free(c, &tloss), dev_free(c, &tdz);
        free(z), free(dz), free(lab);
    }
}

static void test_topk(ctx *c)
{
    for (int i = 0; i < 6; i++) {
        int N = irand(c, 1, 50), K = irand(c, 2, 12), k = 1 + (i % 3) * 2;
        /* Small integers make ties common, exercising the tie rule. */
        double *z = zeros((int64_t)N * K);
        int32_t *lab = malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t j = 0; j < (int64_t)N * K; j++)
            z[j] = irand(c, 0, 3);
        for (int n = 0; n < N; n++)
            lab[n] = irand(c, 0, K - 1);
        double want = ref_topk_correct(N, K, z, lab, k), got[1] = { -1 };
        char what[48];
        snprintf(what, sizeof what, "N%d K%d k%d", N, K, k);
        tp_tensor tz = t2(N, K), tl, tc = t1(1);
        tl.data = NULL;
        CALL(c, upload(c, &tz, z));
        CALL(c, upload_i32(c, &tl, lab, N));
        CALL(c, alloc_poisoned(c, &tc));
        CALL(c, c->ops->topk_correct(c->be, &tz, &tl, k, &tc));
        CALL(c, download(c, &tc, got));
        compare(c, "topk_correct", what, got, &want, 1, 0.0);
    out:
        dev_free(c, &tz), dev_free(c, &tl), dev_free(c, &tc);
        free(z), free(lab);
    }
}

/* ------------------------------------------------------------------ optimizer arithmetic */

static void test_arithmetic(ctx *c)
{
    const int64_t n = 1037;
    double *x = rand_array(c, n, -1, 1), *y = rand_array(c, n, -1, 1), *got = zeros(n);
    double ss_ref, ss_got[1];
    tp_tensor tx = t1(n), ty = t1(n), tss = t1(1);
    CALL(c, upload(c, &tx, x));
    CALL(c, upload(c, &ty, y));
    CALL(c, alloc_poisoned(c, &tss));
    CALL(c, c->ops->axpby(c->be, 0.75, &tx, -1.5, &ty));
    ref_axpby(n, 0.75, x, -1.5, y);
    CALL(c, check(c, "axpby", "beta -1.5", &ty, y));
    CALL(c, c->ops->fill(c->be, &ty, NAN));
    CALL(c, c->ops->axpby(c->be, 2.0, &tx, 0.0, &ty)); /* beta 0 ignores NaN in y */
    for (int64_t i = 0; i < n; i++)
        y[i] = 2.0 * x[i];
    CALL(c, check(c, "axpby", "beta 0", &ty, y));
    CALL(c, c->ops->scale(c->be, -0.3, &ty));
    ref_scale(n, -0.3, y);
    CALL(c, check(c, "scale", "", &ty, y));
    CALL(c, c->ops->sum_squares(c->be, &tx, &tss));
    ss_ref = ref_sum_squares(n, x);
    CALL(c, download(c, &tss, ss_got));
    compare(c, "sum_squares", "", ss_got, &ss_ref, 1, OP_TOLERANCE);
    CALL(c, c->ops->fill(c->be, &ty, 0.25));
    for (int64_t i = 0; i < n; i++)
        y[i] = 0.25;
    CALL(c, check(c, "fill", "", &ty, y));
out:
    dev_free(c, &tx), dev_free(c, &ty), dev_free(c, &tss);
    free(x), free(y), free(got);
}

/* The fused optimizer updates against the reference over four steps with a falling
 * learning rate; with `dev`, the API 1.6 forms, whose step numbers come from device memory
 * and whose third step is gated off by a NaN loss: that step must leave parameters and
 * state exactly as they were (the reference skips it, and Adam's step count with it). */
static void test_optimizers(ctx *c, int dev)
{
    if (dev && (!c->ops->sgd_update_dev || !c->ops->adam_update_dev)) {
        printf("ok   sgd_update_dev / adam_update_dev: not offered (optional, API 1.6)\n");
        return;
    }
    const int64_t n = 777;
    for (int variant = 0; variant < 4; variant++) {
        double *p = rand_array(c, n, -1, 1), *m = zeros(n), *v = zeros(n);
        tp_tensor tp = t1(n), tg = t1(n), tm = t1(n), tv = t1(n), ts = t1(3), tgate = t1(1);
        double *g = NULL;
        char what[48], name[48];
        int sgd = variant < 2;
        const char *op = sgd ? "sgd_update" : "adam_update";
        snprintf(what, sizeof what, "%s variant %d", sgd ? "sgd" : "adam", variant);
        CALL(c, upload(c, &tp, p));
        CALL(c, upload(c, &tm, m));
        CALL(c, upload(c, &tv, v));
        for (int step = 1, t = 1; step <= 4; step++) {
            free(g);
            g = rand_array(c, n, -1, 1);
            CALL(c, upload(c, &tg, g));
            const int gated = dev && step == 3;
            const double lr = (sgd ? 0.1 : 1e-2) / step;
            const double gate[1] = { gated ? NAN : 2.5 };
            const double sc[3] = { (float)lr, (float)(1.0 - pow(0.9, t)),
                                   (float)(1.0 - pow(0.999, t)) };
            if (dev) {
                CALL(c, upload(c, &tgate, gate));
                CALL(c, upload(c, &ts, sc));
            }
            if (sgd) {
                int nesterov = variant == 1;
                if (!gated)
                    ref_sgd_update(n, p, g, m, lr, 0.9, 5e-4, nesterov);
                CALL(c, dev ? c->ops->sgd_update_dev(c->be, &tp, &tg, &tm, &ts, &tgate, 0.9,
                                                     5e-4, nesterov)
                            : c->ops->sgd_update(c->be, &tp, &tg, &tm, lr, 0.9, 5e-4,
                                                 nesterov));
            } else {
                int decoupled = variant == 3;
                if (!gated)
                    ref_adam_update(n, p, g, m, v, lr, 0.9, 0.999, 1e-8, 1e-2, decoupled, t);
                CALL(c, dev ? c->ops->adam_update_dev(c->be, &tp, &tg, &tm, &tv, &ts, &tgate,
                                                      0.9, 0.999, 1e-8, 1e-2, decoupled)
                            : c->ops->adam_update(c->be, &tp, &tg, &tm, &tv, lr, 0.9, 0.999,
                                                  1e-8, 1e-2, decoupled, t));
            }
            if (gated) { /* as it was */
                snprintf(name, sizeof name, "%s_dev_gated", op);
                CALL(c, check(c, name, what, &tp, p));
                CALL(c, check(c, name, what, &tm, m));
            } else {
                t++;
            }
        }
        snprintf(name, sizeof name, "%s%s", op, dev ? "_dev" : "");
        CALL(c, check(c, name, what, &tp, p));
        snprintf(name, sizeof name, "%s%s_%s", op, dev ? "_dev" : "", sgd ? "velocity" : "m");
        CALL(c, check(c, name, what, &tm, m));
        if (!sgd) {
            snprintf(name, sizeof name, "%s%s_v", op, dev ? "_dev" : "");
            CALL(c, check(c, name, what, &tv, v));
        }
    out:
        dev_free(c, &tp), dev_free(c, &tg), dev_free(c, &tm), dev_free(c, &tv);
        dev_free(c, &ts), dev_free(c, &tgate);
        free(p), free(m), free(v), free(g);
    }
}

/* The backend's own copy between layouts (uploads above convert on the host). */
static void test_copy(ctx *c)
{
    const int N = 2, C = 5, H = 3, W = 7;
    const int64_t n = (int64_t)N * C * H * W;
    double *x = rand_array(c, n, -1, 1);
    tp_tensor a = t4(TP_LAYOUT_NCHW, N, C, H, W), b = t4(TP_LAYOUT_NHWC, N, C, H, W), a2 = a;
    a2.data = NULL;
    CALL(c, upload(c, &a, x));
    CALL(c, alloc_poisoned(c, &b));
    CALL(c, alloc_poisoned(c, &a2));
    CALL(c, c->ops->copy(c->be, &b, &a, TP_STREAM_COMPUTE));
    CALL(c, check(c, "copy", "NCHW->NHWC", &b, x));
    CALL(c, c->ops->copy(c->be, &a2, &b, TP_STREAM_COPY));
    CALL(c, c->ops->sync(c->be));
    CALL(c, check(c, "copy", "NHWC->NCHW", &a2, x));
out:
    dev_free(c, &a), dev_free(c, &b), dev_free(c, &a2);
    free(x);
}

/* Events on a synchronous or asynchronous backend must at least order and complete. */
static void test_events(ctx *c)
{
    tp_event *ev = NULL;
    CALL(c, c->ops->event_create(c->be, &ev));
    CALL(c, c->ops->event_record(c->be, ev, TP_STREAM_COPY));
    CALL(c, c->ops->stream_wait(c->be, TP_STREAM_COMPUTE, ev));
    CALL(c, c->ops->event_sync(c->be, ev));
    CALL(c, c->ops->sync(c->be));
out:
    if (ev)
        c->ops->event_destroy(c->be, ev);
}

/* Bad input must fail cleanly with TP_ERR_INVALID and a message, not crash. */
static void test_errors(ctx *c)
{
    tp_tensor x = t4(TP_LAYOUT_NCHW, 1, 3, 5, 5), w = t4(TP_LAYOUT_NCHW, 4, 2, 3, 3);
    tp_tensor y = t4(TP_LAYOUT_NCHW, 1, 4, 5, 5);
    tp_conv_desc d = { 1, 1, 1, 1, 1, 1 };
    CALL(c, dev_alloc(c, &x));
    CALL(c, dev_alloc(c, &w));
    CALL(c, dev_alloc(c, &y));
    services_clear_error();
    tp_status st = c->ops->conv_forward(c->be, &d, &x, &w, NULL, &y);
    if (st != TP_ERR_INVALID || !services_last_error()[0]) {
        printf("FAIL conv_forward with mismatched channels returned %s, message \"%s\"\n",
               tp_status_name(st), services_last_error());
        c->failures++;
    } else {
        printf("ok   error path: %s\n", services_last_error());
    }
out:
    dev_free(c, &x), dev_free(c, &w), dev_free(c, &y);
}

/* One call that must be refused: an error status and a message, never TP_OK or a crash. */
static void expect_refused(ctx *c, const char *what, tp_status st)
{
    if (st == TP_OK || !services_last_error()[0]) {
        printf("FAIL %s returned %s, message \"%s\"; expected a refusal with a message\n", what,
               tp_status_name(st), services_last_error());
        c->failures++;
    } else {
        printf("ok   error path: %s\n", services_last_error());
    }
    services_clear_error();
}

/* API 1.7: the grouped updates against the API 1.6 single-tensor forms, bit for bit, over
 * 53 tensors (more than one launch on backend-cuda, which packs up to 48) with sizes on both
 * sides of its 1024-element blocks and a weight decay each; then a NaN gate and an invalid
 * item, after either of which every tensor must be as it was. */
#define GROUP_TENSORS 53
static void test_optimizer_groups(ctx *c)
{
    if (!c->ops->sgd_update_group_dev || !c->ops->adam_update_group_dev) {
        printf("ok   sgd_update_group_dev / adam_update_group_dev: not offered (optional, API "
               "1.7)\n");
        return;
    }
    static const int64_t sizes[] = {1, 7, 1023, 1024, 1025, 3000, 4096, 16, 432, 2304, 4097};
    const int n_sizes = (int)(sizeof sizes / sizeof sizes[0]);
    for (int variant = 0; variant < 4; variant++) {
        const int adam = variant >= 2, flag = variant & 1; /* nesterov / decoupled */
        const char *op = adam ? "adam_update_group_dev" : "sgd_update_group_dev";
        char what[64];
        snprintf(what, sizeof what, "%s, %s", adam ? "adam" : "sgd",
                 flag ? (adam ? "decoupled" : "nesterov") : "plain");
        /* [0]: updated by the grouped call; [1]: by the single calls. */
        tp_tensor p[2][GROUP_TENSORS], s0[2][GROUP_TENSORS], s1[2][GROUP_TENSORS];
        tp_tensor g[GROUP_TENSORS], wrong = t1(2), ts = t1(3), tgate = t1(1);
        tp_update_item items[GROUP_TENSORS];
        double *want = NULL, *got = NULL;
        memset(p, 0, sizeof p), memset(s0, 0, sizeof s0), memset(s1, 0, sizeof s1);
        memset(g, 0, sizeof g);
        for (int i = 0; i < GROUP_TENSORS; i++) {
            const int64_t n = sizes[i % n_sizes];
            double *pv = rand_array(c, n, -1, 1), *sv0 = rand_array(c, n, -0.1, 0.1),
                   *sv1 = rand_array(c, n, 0, 0.01);
            for (int k = 0; k < 2; k++) {
                p[k][i] = s0[k][i] = s1[k][i] = t1(n);
                tp_status st = upload(c, &p[k][i], pv);
                if (!st)
                    st = upload(c, &s0[k][i], sv0);
                if (!st)
                    st = upload(c, &s1[k][i], sv1);
                if (st) {
                    free(pv), free(sv0), free(sv1);
                    CALL(c, st);
                }
            }
            g[i] = t1(n);
            free(pv), free(sv0), free(sv1);
            CALL(c, dev_alloc(c, &g[i]));
            items[i] = (tp_update_item){&p[0][i], &g[i], {&s0[0][i], adam ? &s1[0][i] : NULL},
                                        (i % 4) * 2.5e-4};
        }
        for (int step = 1; step <= 3; step++) {
            const double lr = (adam ? 1e-2 : 0.1) / step;
            const double sc[3] = {(float)lr, (float)(1.0 - pow(0.9, step)),
                                  (float)(1.0 - pow(0.999, step))};
            const double gate[1] = {2.5};
            CALL(c, upload(c, &ts, sc));
            CALL(c, upload(c, &tgate, gate));
            for (int i = 0; i < GROUP_TENSORS; i++) {
                double *gv = rand_array(c, sizes[i % n_sizes], -1, 1);
                tp_status st = upload(c, &g[i], gv);
                free(gv);
                CALL(c, st);
            }
            CALL(c, adam ? c->ops->adam_update_group_dev(c->be, items, GROUP_TENSORS, &ts,
                                                         &tgate, 0.9, 0.999, 1e-8, flag)
                         : c->ops->sgd_update_group_dev(c->be, items, GROUP_TENSORS, &ts,
                                                        &tgate, 0.9, flag));
            for (int i = 0; i < GROUP_TENSORS; i++)
                CALL(c, adam ? c->ops->adam_update_dev(c->be, &p[1][i], &g[i], &s0[1][i],
                                                       &s1[1][i], &ts, &tgate, 0.9, 0.999,
                                                       1e-8, items[i].weight_decay, flag)
                             : c->ops->sgd_update_dev(c->be, &p[1][i], &g[i], &s0[1][i], &ts,
                                                      &tgate, 0.9, items[i].weight_decay,
                                                      flag));
        }
        /* A NaN gate, then an item whose gradient has the wrong size: nothing written. */
        const double nan_gate[1] = {NAN};
        CALL(c, upload(c, &tgate, nan_gate));
        CALL(c, adam ? c->ops->adam_update_group_dev(c->be, items, GROUP_TENSORS, &ts, &tgate,
                                                     0.9, 0.999, 1e-8, flag)
                     : c->ops->sgd_update_group_dev(c->be, items, GROUP_TENSORS, &ts, &tgate,
                                                    0.9, flag));
        CALL(c, dev_alloc(c, &wrong));
        items[GROUP_TENSORS - 1].grad = &wrong;
        expect_refused(c, "a grouped update with one gradient of the wrong size",
                       adam ? c->ops->adam_update_group_dev(c->be, items, GROUP_TENSORS, &ts,
                                                            &tgate, 0.9, 0.999, 1e-8, flag)
                            : c->ops->sgd_update_group_dev(c->be, items, GROUP_TENSORS, &ts,
                                                           &tgate, 0.9, flag));
        for (int i = 0; i < GROUP_TENSORS; i++) {
            const int64_t n = sizes[i % n_sizes];
            tp_tensor *pairs[3][2] = {{&p[0][i], &p[1][i]}, {&s0[0][i], &s0[1][i]},
                                      {&s1[0][i], &s1[1][i]}};
            want = zeros(n), got = zeros(n);
            for (int k = 0; k < (adam ? 3 : 2); k++) {
                CALL(c, download(c, pairs[k][1], want));
                CALL(c, download(c, pairs[k][0], got));
                compare(c, op, what, got, want, n, 0.0); /* exact */
            }
            free(want), free(got);
            want = got = NULL;
        }
    out:
        free(want), free(got);
        for (int i = 0; i < GROUP_TENSORS; i++) {
            for (int k = 0; k < 2; k++)
                dev_free(c, &p[k][i]), dev_free(c, &s0[k][i]), dev_free(c, &s1[k][i]);
            dev_free(c, &g[i]);
        }
        dev_free(c, &wrong), dev_free(c, &ts), dev_free(c, &tgate);
    }
}

/* API 1.8 check_finite_group over GROUP_TENSORS tensors of the grouped updates' sizes
 * (chunk and launch boundaries on backend-cuda): 0 with finite extremes everywhere (the
 * largest floats, subnormals, signed zeros), NaN with a single NaN, +inf or -inf at the
 * first, last or a middle element of the first, a middle or the last tensor, 0 again
 * once it is gone, 0 for no tensors; and refusals that leave out untouched. Rows compare
 * a flag (0: wrote 0, 1: wrote NaN, 2: anything else), so they are exact. */
static void test_check_finite_group(ctx *c)
{
    if (!TP_BACKEND_HAS(c->ops, check_finite_group)) {
        printf("ok   check_finite_group: not offered (optional, API 1.8)\n");
        return;
    }
    static const int64_t sizes[] = {1, 7, 1023, 1024, 1025, 3000, 4096, 16, 432, 2304, 4097};
    const int n_sizes = (int)(sizeof sizes / sizeof sizes[0]);
    const double extremes[] = {FLT_MAX, -FLT_MAX, 1e-40, -1e-45, 0.0, -0.0};
    tp_tensor xs[GROUP_TENSORS], out = t1(1), two = t1(2);
    const tp_tensor *list[GROUP_TENSORS];
    double *vals[GROUP_TENSORS];
    memset(xs, 0, sizeof xs), memset(vals, 0, sizeof vals);
    CALL(c, dev_alloc(c, &out));
    CALL(c, dev_alloc(c, &two));
    for (int i = 0; i < GROUP_TENSORS; i++) {
        const int64_t n = sizes[i % n_sizes];
        xs[i] = t1(n);
        vals[i] = rand_array(c, n, -1e30, 1e30);
        for (int k = 0; k < 6 && k < n; k++)
            vals[i][(k * 7919) % n] = extremes[(i + k) % 6];
        CALL(c, upload(c, &xs[i], vals[i]));
        list[i] = &xs[i];
    }
    /* (tensor, element) places and the bad values put there one at a time */
    const int64_t big = 6; /* sizes[6] = 4096: its last chunk */
    const int64_t places[][2] = {{0, 0}, {GROUP_TENSORS / 2, -1}, {GROUP_TENSORS - 1, -1},
                                 {big, 4095}, {big, 2048}, {4, 1024}, {10, 2}};
    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (int p = -1; p < (int)(sizeof places / sizeof places[0]); p++) {
        for (int b = 0; b < (p < 0 ? 1 : 3); b++) {
            char what[64];
            double want = 0, flag, got = 0;
            int t = 0;
            int64_t e = 0;
            if (p >= 0) {
                t = (int)places[p][0];
                const int64_t n = sizes[t % n_sizes];
                e = places[p][1] < 0 ? n - 1 : places[p][1] % n;
                const double keep = vals[t][e];
                vals[t][e] = bad[b];
                tp_status st = upload(c, &xs[t], vals[t]);
                vals[t][e] = keep;
                CALL(c, st);
                want = 1;
                snprintf(what, sizeof what, "%s at tensor %d element %lld", b == 0 ? "NaN" : b == 1 ? "+inf" : "-inf", t, (long long)e);
            } else {
                snprintf(what, sizeof what, "all finite (extremes included)");
            }
            CALL(c, c->ops->fill(c->be, &out, 7.0));
            CALL(c, c->ops->check_finite_group(c->be, list, GROUP_TENSORS, &out));
            CALL(c, download(c, &out, &got));
            flag = isnan(got) ? 1 : got == 0 ? 0 : 2;
            compare(c, "check_finite_group", what, &flag, &want, 1, 0.0);
            if (p >= 0) { /* gone again: 0, nothing sticky */
                CALL(c, upload(c, &xs[t], vals[t]));
                CALL(c, c->ops->check_finite_group(c->be, list, GROUP_TENSORS, &out));
                CALL(c, download(c, &out, &got));
                flag = isnan(got) ? 1 : got == 0 ? 0 : 2;
                want = 0;
                compare(c, "check_finite_group", "restored", &flag, &want, 1, 0.0);
            }
        }
    }
    {
        double got = 0, flag, want = 0;
        CALL(c, c->ops->fill(c->be, &out, NAN));
        CALL(c, c->ops->check_finite_group(c->be, list, 0, &out));
        CALL(c, download(c, &out, &got));
        flag = isnan(got) ? 1 : got == 0 ? 0 : 2;
        compare(c, "check_finite_group", "no tensors", &flag, &want, 1, 0.0);
        /* refused: a missing tensor, an out of two values; out keeps its 7 */
        const tp_tensor *with_null[2] = {&xs[0], NULL};
        CALL(c, c->ops->fill(c->be, &out, 7.0));
        expect_refused(c, "check_finite_group with a NULL tensor",
                       c->ops->check_finite_group(c->be, with_null, 2, &out));
        expect_refused(c, "check_finite_group into two values",
                       c->ops->check_finite_group(c->be, list, 1, &two));
        CALL(c, download(c, &out, &got));
        flag = got == 7.0 ? 0 : 1;
        compare(c, "check_finite_group", "refused calls leave out", &flag, &want, 1, 0.0);
    }
out:
    for (int i = 0; i < GROUP_TENSORS; i++)
        dev_free(c, &xs[i]), free(vals[i]);
    dev_free(c, &out), dev_free(c, &two);
}

/* The argument checks on the paths clang's static analyzer (scan-build 14) flagged in the
 * backends as using an out-parameter a failing helper left unwritten (cpu_pool,
 * cpu_elementwise; cuda_pool, cuda_gemm, cuda_loss). The helpers fail through host->fail(),
 * which returns its non-zero status, and every caller returns at once; these calls take
 * each such path and must come back refused. */
static void test_refusals(ctx *c)
{
    const tp_pool_desc no_stride = { TP_POOL_MAX, 2, 2, 0, 2, 0, 0 }; /* stride_h 0 */
    tp_tensor x = t4(TP_LAYOUT_NCHW, 1, 2, 4, 4), dx = x, y = t4(TP_LAYOUT_NCHW, 1, 2, 2, 2);
    tp_tensor dy = y, p = t1(8), g = t1(8), m = t1(8), v = t1(8), s1 = t1(1), gate = t1(1);
    /* NHWC with C > 1 and H*W > 1: backend-cuda's linear layer cannot flatten it. */
    tp_tensor xh = t4(TP_LAYOUT_NHWC, 2, 3, 2, 2), dxh = xh, w = t2(4, 12), dw = w;
    tp_tensor yl = t2(2, 4), z = t1(4), correct = t1(1);
    tp_tensor lab = tp_tensor_2d(TP_DTYPE_I32, 4, 0);
    tp_tensor *all[] = { &x, &dx, &y, &dy, &p, &g, &m, &v, &s1, &gate,
                         &xh, &dxh, &w, &dw, &yl, &z, &correct, &lab };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        CALL(c, dev_alloc(c, all[i]));
    services_clear_error();
    expect_refused(c, "pool_forward with stride 0",
                   c->ops->pool_forward(c->be, &no_stride, &x, &y));
    expect_refused(c, "pool_backward with stride 0",
                   c->ops->pool_backward(c->be, &no_stride, &x, &y, &dy, &dx));
    expect_refused(c, "linear_forward of a 4-D NHWC x",
                   c->ops->linear_forward(c->be, &xh, &w, NULL, &yl));
    expect_refused(c, "linear_backward of a 4-D NHWC x",
                   c->ops->linear_backward(c->be, &xh, &w, &yl, &dxh, &dw, NULL));
    expect_refused(c, "topk_correct of 1-D logits",
                   c->ops->topk_correct(c->be, &z, &lab, 1, &correct));
    if (c->ops->sgd_update_dev && c->ops->adam_update_dev) {
        expect_refused(c, "sgd_update_dev without scalars",
                       c->ops->sgd_update_dev(c->be, &p, &g, &m, NULL, &gate, 0.9, 0.0, 0));
        expect_refused(c, "adam_update_dev with one scalar (needs three)",
                       c->ops->adam_update_dev(c->be, &p, &g, &m, &v, &s1, &gate, 0.9, 0.999,
                                               1e-8, 0.0, 0));
    }
out:
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dev_free(c, all[i]);
}

/* ------------------------------------------------------------------ gradient check */

/* x -> conv(w1, b1) -> bn(gamma, beta) -> relu -> (+ subsample_pad(x)) -> pool -> gap ->
 * linear(wl, bl) -> softmax xent. */
typedef struct net {
    int N, C, H, W, O, K, stride, classes;
    int OH, OW;       /* after conv */
    ref_pool pool;
    tp_layout layout;
    int32_t labels[4];
    /* parameters (and the input), logical layout */
    double *x, *w1, *b1, *gamma, *beta, *wl, *bl;
} net;

static double net_loss(const net *m)
{
    ref_conv s = { m->N, m->C, m->H, m->W, m->O, m->K, m->K, m->OH, m->OW,
                   m->stride, m->stride, m->K / 2, m->K / 2, 1, 1 };
    const int64_t na = (int64_t)m->N * m->O * m->OH * m->OW;
    const int64_t np = (int64_t)m->N * m->O * m->pool.OH * m->pool.OW;
    double *c1 = zeros(na), *bn = zeros(na), *r = zeros(na), *sc = zeros(na), *a = zeros(na);
    double *p = zeros(np), *g = zeros((int64_t)m->N * m->O), *z = zeros((int64_t)m->N * m->classes);
    ref_conv_forward(&s, m->x, m->w1, m->b1, c1);
    ref_bn_train(m->N, m->O, m->OH, m->OW, c1, m->gamma, m->beta, 1e-5, 0.1, bn, NULL, NULL,
                 NULL, NULL);
    ref_relu_forward(na, bn, r);
    ref_subsample_pad_forward(m->N, m->C, m->H, m->W, m->O, m->stride, m->x, sc);
    ref_add(na, r, sc, a);
    ref_pool_forward(&m->pool, a, p);
    ref_gap_forward(m->N, m->O, m->pool.OH, m->pool.OW, p, g);
    ref_linear_forward(m->N, m->O, m->classes, g, m->wl, m->bl, z);
    double loss = ref_softmax_xent(m->N, m->classes, z, m->labels, 0.1, 1.0, NULL);
    free(c1), free(bn), free(r), free(sc), free(a), free(p), free(g), free(z);
    return loss;
}

/* Compares the backend gradient of one parameter with central differences at up to 16
 * coordinates. */
static void fd_check(ctx *c, net *m, const char *name, double *param, int64_t n,
                     const double *grad)
{
    const double h = 1e-5;
    int64_t count = n < 16 ? n : 16;
    double *fd = zeros(count), *got = zeros(count);
    for (int64_t j = 0; j < count; j++) {
        int64_t i = n <= 16 ? j : (int64_t)(next_u64(c) % (uint64_t)n);
        double keep = param[i];
        param[i] = keep + h;
        double lp = net_loss(m);
        param[i] = keep - h;
        double lm = net_loss(m);
        param[i] = keep;
        fd[j] = (lp - lm) / (2 * h);
        got[j] = grad[i];
    }
    char what[64];
    snprintf(what, sizeof what, "%s, %s", name, lname(m->layout));
    double max_abs = 0, max_ref = 0;
    for (int64_t j = 0; j < count; j++) {
        if (fabs(got[j] - fd[j]) > max_abs)
            max_abs = fabs(got[j] - fd[j]);
        if (fabs(fd[j]) > max_ref)
            max_ref = fabs(fd[j]);
    }
    printf("     gradcheck %-8s %s: max |backend - finite difference| %.3g (max |fd| %.3g)\n",
           name, lname(m->layout), max_abs, max_ref);
    /* Scaled by at least 1e-2: a gradient that is zero in exact arithmetic (the conv bias
     * in front of batch norm) comes out as float rounding noise. */
    compare_scaled(c, "gradcheck", what, got, fd, count, GRAD_TOLERANCE, 1e-2);
    free(fd), free(got);
}

static void test_gradcheck(ctx *c, tp_layout layout, int stride, int pool_max)
{
    net m;
    memset(&m, 0, sizeof m);
    m.N = 3, m.C = 3, m.H = 7, m.W = 7, m.O = 4, m.K = 3, m.stride = stride, m.classes = 5;
    m.layout = layout;
    m.OH = ref_out_size(m.H, m.K, stride, m.K / 2, 1);
    m.OW = ref_out_size(m.W, m.K, stride, m.K / 2, 1);
    ref_pool pl = { pool_max, m.N, m.O, m.OH, m.OW, 3, 3, 2, 2, 1, 1, 0, 0 };
    pl.OH = ref_out_size(m.OH, 3, 2, 1, 1);
    pl.OW = ref_out_size(m.OW, 3, 2, 1, 1);
    m.pool = pl;
    for (int n = 0; n < m.N; n++)
        m.labels[n] = irand(c, 0, m.classes - 1);
    const int64_t nx = (int64_t)m.N * m.C * m.H * m.W, nw1 = (int64_t)m.O * m.C * m.K * m.K;
    const int64_t na = (int64_t)m.N * m.O * m.OH * m.OW;
    const int64_t np = (int64_t)m.N * m.O * pl.OH * pl.OW, nwl = (int64_t)m.classes * m.O;
    m.x = rand_array(c, nx, -1, 1);
    m.w1 = rand_array(c, nw1, -0.5, 0.5);
    m.b1 = rand_array(c, m.O, -0.1, 0.1);
    m.gamma = rand_array(c, m.O, 0.5, 1.5);
    m.beta = rand_array(c, m.O, -0.2, 0.2);
    m.wl = rand_array(c, nwl, -1, 1);
    m.bl = rand_array(c, m.classes, -0.1, 0.1);
    double *gx = zeros(nx), *gw1 = zeros(nw1), *gb1 = zeros(m.O), *gg = zeros(m.O);
    double *gbt = zeros(m.O), *gwl = zeros(nwl), *gbl = zeros(m.classes);

    tp_layout L = layout;
    tp_tensor x = t4(L, m.N, m.C, m.H, m.W), w1 = t4(TP_LAYOUT_NCHW, m.O, m.C, m.K, m.K);
    tp_tensor b1 = t1(m.O), gamma = t1(m.O), beta = t1(m.O), rm = t1(m.O), rv = t1(m.O);
    tp_tensor smean = t1(m.O), sinv = t1(m.O);
    tp_tensor c1 = t4(L, m.N, m.O, m.OH, m.OW), bn = c1, r = c1, sc = c1, a = c1;
    tp_tensor p = t4(L, m.N, m.O, pl.OH, pl.OW), g = t2(m.N, m.O), wl = t2(m.classes, m.O);
    tp_tensor bl = t1(m.classes), z = t2(m.N, m.classes), labels, loss = t1(1);
    tp_tensor dz = z, dg = g, dwl = wl, dbl = bl, dp = p, da = a, dbn = a, dc1 = a;
    tp_tensor dgam = gamma, dbet = beta, dw1 = w1, db1 = b1, dx1 = x, dx2 = x, dx = x;
    labels.data = NULL;
    tp_conv_desc cd = { stride, stride, m.K / 2, m.K / 2, 1, 1 };
    tp_bn_desc bd = { 1e-5, 0.1 };
    tp_pool_desc pd = { pool_max ? TP_POOL_MAX : TP_POOL_AVG, 3, 3, 2, 2, 1, 1 };
    tp_tensor *outs[] = { &rm, &rv, &smean, &sinv, &c1, &bn, &r, &sc, &a, &p, &g, &z, &loss,
                          &dz, &dg, &dwl, &dbl, &dp, &da, &dbn, &dc1, &dgam, &dbet, &dw1, &db1,
                          &dx1, &dx2, &dx };
    const size_t n_outs = sizeof outs / sizeof outs[0];
    for (size_t i = 0; i < n_outs; i++)
        outs[i]->data = NULL;
    (void)na, (void)np;

    CALL(c, upload(c, &x, m.x));
    CALL(c, upload(c, &w1, m.w1));
    CALL(c, upload(c, &b1, m.b1));
    CALL(c, upload(c, &gamma, m.gamma));
    CALL(c, upload(c, &beta, m.beta));
    CALL(c, upload(c, &wl, m.wl));
    CALL(c, upload(c, &bl, m.bl));
    CALL(c, upload_i32(c, &labels, m.labels, m.N));
    for (size_t i = 0; i < n_outs; i++)
        CALL(c, alloc_poisoned(c, outs[i]));
    CALL(c, c->ops->fill(c->be, &rm, 0));
    CALL(c, c->ops->fill(c->be, &rv, 1));

    /* forward */
    CALL(c, c->ops->conv_forward(c->be, &cd, &x, &w1, &b1, &c1));
    CALL(c, c->ops->batchnorm_train(c->be, &bd, &c1, &gamma, &beta, &bn, &rm, &rv, &smean, &sinv));
    CALL(c, c->ops->relu_forward(c->be, &bn, &r));
    CALL(c, c->ops->subsample_pad_forward(c->be, stride, &x, &sc));
    CALL(c, c->ops->add(c->be, &r, &sc, &a));
    CALL(c, c->ops->pool_forward(c->be, &pd, &a, &p));
    CALL(c, c->ops->global_avgpool_forward(c->be, &p, &g));
    CALL(c, c->ops->linear_forward(c->be, &g, &wl, &bl, &z));
    CALL(c, c->ops->softmax_xent(c->be, &z, &labels, 0.1, 1.0, &loss, &dz));
    /* backward */
    CALL(c, c->ops->linear_backward(c->be, &g, &wl, &dz, &dg, &dwl, &dbl));
    CALL(c, c->ops->global_avgpool_backward(c->be, &dg, &dp));
    CALL(c, c->ops->pool_backward(c->be, &pd, &a, &p, &dp, &da));
    CALL(c, c->ops->relu_backward(c->be, &r, &da, &dbn));
    CALL(c, c->ops->batchnorm_backward(c->be, &bd, &c1, &dbn, &gamma, &smean, &sinv, &dc1,
                                       &dgam, &dbet));
    CALL(c, c->ops->conv_backward_filter(c->be, &cd, &x, &dc1, &dw1, &db1));
    CALL(c, c->ops->conv_backward_data(c->be, &cd, &dc1, &w1, &dx1));
    CALL(c, c->ops->subsample_pad_backward(c->be, stride, &da, &dx2));
    CALL(c, c->ops->add(c->be, &dx1, &dx2, &dx));

    double loss_got[1], loss_ref = net_loss(&m);
    CALL(c, download(c, &loss, loss_got));
    compare(c, "gradcheck_loss", lname(layout), loss_got, &loss_ref, 1, OP_TOLERANCE);
    CALL(c, download(c, &dx, gx));
    CALL(c, download(c, &dw1, gw1));
    CALL(c, download(c, &db1, gb1));
    CALL(c, download(c, &dgam, gg));
    CALL(c, download(c, &dbet, gbt));
    CALL(c, download(c, &dwl, gwl));
    CALL(c, download(c, &dbl, gbl));
    fd_check(c, &m, "x", m.x, nx, gx);
    fd_check(c, &m, "conv.w", m.w1, nw1, gw1);
    fd_check(c, &m, "conv.b", m.b1, m.O, gb1);
    fd_check(c, &m, "bn.gamma", m.gamma, m.O, gg);
    fd_check(c, &m, "bn.beta", m.beta, m.O, gbt);
    fd_check(c, &m, "fc.w", m.wl, nwl, gwl);
    fd_check(c, &m, "fc.b", m.bl, m.classes, gbl);
out:
    dev_free(c, &x), dev_free(c, &w1), dev_free(c, &b1), dev_free(c, &gamma);
    dev_free(c, &beta), dev_free(c, &wl), dev_free(c, &bl), dev_free(c, &labels);
    for (size_t i = 0; i < n_outs; i++)
        dev_free(c, outs[i]);
    free(m.x), free(m.w1), free(m.b1), free(m.gamma), free(m.beta), free(m.wl), free(m.bl);
    free(gx), free(gw1), free(gb1), free(gg), free(gbt), free(gwl), free(gbl);
}

/* ------------------------------------------------------------------ bf16 activations */

/* The host helpers on cases worked out by hand, so that a failure below is the backend's. */
static void check_bf16_helpers(ctx *c)
{
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        { 0x3f800000u, 0x3f80u }, /* 1 */
        { 0x43808000u, 0x4380u }, /* 257: a tie, to even 256 */
        { 0x43818000u, 0x4382u }, /* 259: a tie, to even 260 */
        { 0x3f808001u, 0x3f81u }, /* just above a tie: up */
        { 0xbf807fffu, 0xbf80u }, /* just below a tie: down (to -1) */
        { 0x3fffffffu, 0x4000u }, /* the carry reaches the exponent: 2 */
        { 0x7f7f7fffu, 0x7f7fu }, /* stays the largest finite bf16 */
        { 0x7f7fffffu, 0x7f80u }, /* FLT_MAX: inf */
        { 0xff7f8000u, 0xff80u }, /* the tie above -(largest bf16): to even, -inf */
        { 0xff800000u, 0xff80u }, /* -inf */
    };
    static const uint32_t nans[] = { 0x7fc00000u, 0x7fffffffu, 0x7f800001u, 0xff800001u };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f;
        memcpy(&f, &cases[i].in, sizeof f);
        if (tp_bf16_from_f32(f) != cases[i].out) {
            c->failures++;
            printf("FAIL test_ops's bf16 rounding: 0x%08x gave 0x%04x, not 0x%04x\n",
                   (unsigned)cases[i].in, (unsigned)tp_bf16_from_f32(f), (unsigned)cases[i].out);
        }
    }
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        float f;
        memcpy(&f, &nans[i], sizeof f);
        if (!isnan(tp_f32_from_bf16(tp_bf16_from_f32(f)))) {
            c->failures++;
            printf("FAIL test_ops's bf16 rounding: NaN 0x%08x gave 0x%04x\n", (unsigned)nans[i],
                   (unsigned)tp_bf16_from_f32(f));
        }
    }
}

/* got against want bit for bit (-0 is not +0; any NaN matches any NaN), as one case of row
 * `name`; in (may be NULL) are the values that were converted. */
static void compare_bits(ctx *c, const char *name, const char *what, const float *in,
                         const float *got, const float *want, int64_t n)
{
    int64_t bad = 0, first = -1;
    double max_abs = 0, max_ref = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t g, w;
        memcpy(&g, &got[i], sizeof g);
        memcpy(&w, &want[i], sizeof w);
        if (isfinite(want[i]) && fabs(want[i]) > max_ref)
            max_ref = fabs(want[i]);
        if (isnan(want[i]) ? isnan(got[i]) : g == w)
            continue;
        if (first < 0)
            first = i;
        bad++;
        double d = isfinite(got[i]) && isfinite(want[i]) ? fabs((double)got[i] - want[i])
                                                           : INFINITY;
        if (d > max_abs)
            max_abs = d;
    }
    double rel = max_abs / (max_ref > 1e-6 ? max_ref : 1e-6);
    op_stat *s = stat_for(c, name);
    s->cases++;
    if (max_abs > s->max_abs)
        s->max_abs = max_abs;
    if (rel > s->max_rel)
        s->max_rel = rel;
    if (bad) {
        uint32_t ui = 0, ug, uw;
        if (in)
            memcpy(&ui, &in[first], sizeof ui);
        memcpy(&ug, &got[first], sizeof ug);
        memcpy(&uw, &want[first], sizeof uw);
        c->failures++;
        printf("FAIL %s (%s): %lld of %lld values differ; first at %lld: f32 0x%08x (%.9g) "
               "gave 0x%08x (%.9g), expected 0x%08x (%.9g)\n", name, what, (long long)bad,
               (long long)n, (long long)first, (unsigned)ui, in ? in[first] : 0.0f, (unsigned)ug,
               got[first], (unsigned)uw, want[first]);
    }
}

/* Logical-order floats -> device tensor t (any dtype and layout) with one copy() from a host
 * f32 tensor in layout hl: a conversion when t is bf16, a layout change when hl is not t's.
 * On the compute stream: an upload on the copy stream would not wait for the fill that
 * poisoned t there (only copies reading device memory are ordered after compute work). */
static tp_status put_host(ctx *c, tp_tensor *t, const float *v, tp_layout hl)
{
    int64_t n = tp_tensor_count(t);
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    tp_tensor h = *t;
    h.dtype = TP_DTYPE_F32;
    h.layout = hl;
    h.device = TP_DEVICE_HOST;
    h.data = buf;
    for (int64_t i = 0; i < n; i++)
        buf[offset_of(&h, i)] = v[i];
    tp_status st = c->ops->copy(c->be, t, &h, TP_STREAM_COMPUTE);
    if (!st)
        st = c->ops->sync(c->be);
    free(buf);
    return st;
}

/* Device tensor t -> logical-order floats, with one copy() into a host f32 tensor in layout
 * hl (prefilled with -12345, so values the copy does not write show). */
static tp_status get_host(ctx *c, const tp_tensor *t, float *v, tp_layout hl)
{
    int64_t n = tp_tensor_count(t);
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        buf[i] = -12345.0f;
    tp_tensor h = *t;
    h.dtype = TP_DTYPE_F32;
    h.layout = hl;
    h.device = TP_DEVICE_HOST;
    h.data = buf;
    tp_status st = c->ops->copy(c->be, &h, t, TP_STREAM_COMPUTE);
    if (!st)
        st = c->ops->sync(c->be);
    if (!st)
        for (int64_t i = 0; i < n; i++)
            v[i] = buf[offset_of(&h, i)];
    free(buf);
    return st;
}

/* f32 bit patterns at the edges of round-to-nearest-even (see check_bf16_helpers too). */
static const uint32_t bf16_edge_cases[] = {
    0x00000000u, 0x80000000u,             /* +0, -0 */
    0x3f800000u, 0xbf800000u,             /* +-1, exact */
    0x3f808000u, 0xbf808000u,             /* +-(1 + 2^-8): ties, to even +-1 (down) */
    0x3f818000u, 0xbf818000u,             /* +-(1 + 3 2^-8): ties, to even +-(1 + 2^-6) (up) */
    0x3f808001u, 0xbf808001u,             /* just above a tie: up */
    0x3f807fffu, 0xbf807fffu,             /* just below a tie: down */
    0x3f81ffffu,                          /* up, carrying into the next mantissa bit */
    0x3fffffffu, 0xbfffffffu,             /* up, carrying into the exponent: +-2 */
    0x43808000u, 0x43818000u,             /* 257 -> 256 and 259 -> 260 (ties) */
    0x00800000u, 0x80800000u,             /* +-FLT_MIN, exact */
    0x00808000u, 0x0080ffffu,             /* just above FLT_MIN: a tie (down), up */
    0x7f7f0000u, 0xff7f0000u,             /* +-the largest bf16, exact */
    0x7f7f7fffu,                          /* below the tie above it: stays the largest */
    0x7f7f8000u, 0xff7f8000u,             /* that tie: to even, which is +-inf */
    0x7f7fffffu, 0xff7fffffu,             /* +-FLT_MAX: +-inf */
    0x7f800000u, 0xff800000u,             /* +-inf */
    0x7fc00000u, 0xffc00000u,             /* quiet NaNs */
    0x7fffffffu,                          /* a NaN a bare rounding carry wraps to -0 */
    0x7f800001u, 0xff800001u,             /* signalling NaNs a bare rounding turns into inf */
};

/* copy() between f32 and bf16 against the host's round-to-nearest-even, bit for bit: host
 * f32 -> device bf16 -> host f32 and device f32 <-> bf16, each with and without a layout
 * change, bf16 -> bf16 across layouts, and fill() of bf16. The values: the edge cases above,
 * then random floats from 2^-27 to 2^32 of either sign, every third one a tie (low 16 bits
 * 0x8000). Denormals are left out (their handling is not part of the contract). */
/* dst (poisoned with NaN first) = src by the backend's copy on `stream`, read back in host
 * layout hl and compared bit for bit with want (the bf16act_copy rows). */
static tp_status copy_bits(ctx *c, tp_tensor *dst, const tp_tensor *src, tp_stream stream,
                           tp_layout hl, const char *what, const float *v, float *got,
                           const float *want, int64_t n)
{
    tp_status st;
    if ((st = c->ops->fill(c->be, dst, NAN)) || (st = c->ops->copy(c->be, dst, src, stream)) ||
        (stream == TP_STREAM_COPY && (st = c->ops->sync(c->be))) ||
        (st = get_host(c, dst, got, hl)))
        return st;
    compare_bits(c, "bf16act_copy", what, v, got, want, n);
    return TP_OK;
}

/* Converting and permuting copies with page-locked memory on one or both sides: device <->
 * pinned and host <-> pinned are staged through a device buffer, pinned <-> pinned runs as
 * one kernel; all in stream order, so a pinned result is read only after sync(). The bytes
 * of a pinned tensor are read and written here directly, as a caller of the API would. */
static void test_bf16_pinned_copy(ctx *c, const float *v, const float *want, float *got,
                                  int64_t n, int N, int C, int H, int W)
{
    const tp_layout nchw = TP_LAYOUT_NCHW, nhwc = TP_LAYOUT_NHWC;
    tp_tensor pf = t4(nchw, N, C, H, W), pf2 = t4(nhwc, N, C, H, W);
    tp_tensor pb = tp_tensor_4d(TP_DTYPE_BF16, nhwc, N, C, H, W);
    tp_tensor db = tp_tensor_4d(TP_DTYPE_BF16, nhwc, N, C, H, W), df = t4(nchw, N, C, H, W);
    pf.device = pf2.device = pb.device = TP_DEVICE_PINNED;
    tp_tensor host = pf;
    host.device = TP_DEVICE_HOST;
    host.data = got;
    CALL(c, c->ops->alloc(c->be, &pf, "test pinned f32"));
    CALL(c, c->ops->alloc(c->be, &pf2, "test pinned f32 NHWC"));
    CALL(c, c->ops->alloc(c->be, &pb, "test pinned bf16"));
    CALL(c, alloc_poisoned(c, &db));
    CALL(c, alloc_poisoned(c, &df));
    memcpy(pf.data, v, sizeof(float) * (size_t)n);

    /* pinned f32 NCHW -> device bf16 NHWC, on the copy stream (an upload) */
    CALL(c, c->ops->copy(c->be, &db, &pf, TP_STREAM_COPY));
    CALL(c, c->ops->sync(c->be));
    CALL(c, get_host(c, &db, got, nhwc));
    compare_bits(c, "bf16act_copy", "pinned f32 NCHW -> device bf16 NHWC", v, got, want, n);

    /* pinned f32 NCHW -> pinned bf16 NHWC (one kernel), whose bits are the rounded values */
    memset(pb.data, 0xff, tp_tensor_bytes(&pb));
    CALL(c, c->ops->copy(c->be, &pb, &pf, TP_STREAM_COMPUTE));
    CALL(c, c->ops->sync(c->be));
    for (int64_t i = 0; i < n; i++)
        got[i] = tp_f32_from_bf16(((const uint16_t *)pb.data)[offset_of(&pb, i)]);
    compare_bits(c, "bf16act_copy", "pinned f32 NCHW -> pinned bf16 NHWC", v, got, want, n);

    /* pinned bf16 NHWC -> device f32 NCHW, and -> pageable host f32 NCHW */
    CALL(c, copy_bits(c, &df, &pb, TP_STREAM_COMPUTE, nchw, "pinned bf16 NHWC -> device f32 NCHW",
                      v, got, want, n));
    for (int64_t i = 0; i < n; i++)
        got[i] = -12345.0f;
    CALL(c, c->ops->copy(c->be, &host, &pb, TP_STREAM_COMPUTE));
    CALL(c, c->ops->sync(c->be));
    compare_bits(c, "bf16act_copy", "pinned bf16 NHWC -> host f32 NCHW", v, got, want, n);

    /* device bf16 NHWC -> pinned f32 NCHW (a download) */
    for (int64_t i = 0; i < n; i++)
        ((float *)pf.data)[i] = -12345.0f;
    CALL(c, c->ops->copy(c->be, &pf, &db, TP_STREAM_COMPUTE));
    CALL(c, c->ops->sync(c->be));
    memcpy(got, pf.data, sizeof(float) * (size_t)n);
    compare_bits(c, "bf16act_copy", "device bf16 NHWC -> pinned f32 NCHW", v, got, want, n);

    /* the layout alone, pinned f32 NCHW -> pinned f32 NHWC: the same values, moved */
    memset(pf2.data, 0xff, tp_tensor_bytes(&pf2));
    CALL(c, c->ops->copy(c->be, &pf2, &pf, TP_STREAM_COMPUTE));
    CALL(c, c->ops->sync(c->be));
    for (int64_t i = 0; i < n; i++)
        got[i] = ((const float *)pf2.data)[offset_of(&pf2, i)];
    compare_bits(c, "bf16act_copy", "pinned f32 NCHW -> pinned f32 NHWC", want, got, want, n);
out:
    if (pf.data)
        c->ops->free(c->be, &pf);
    if (pf2.data)
        c->ops->free(c->be, &pf2);
    if (pb.data)
        c->ops->free(c->be, &pb);
    dev_free(c, &db), dev_free(c, &df);
}

static void test_bf16_copy(ctx *c)
{
    const int N = 3, C = 7, H = 5, W = 9;
    const int64_t n = (int64_t)N * C * H * W;
    const int64_t n_edge = (int64_t)(sizeof bf16_edge_cases / sizeof bf16_edge_cases[0]);
    const tp_layout nchw = TP_LAYOUT_NCHW, nhwc = TP_LAYOUT_NHWC;
    float *v = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);
    float *got = malloc(sizeof(float) * (size_t)n);
    tp_tensor b1 = tp_tensor_4d(TP_DTYPE_BF16, nchw, N, C, H, W);
    tp_tensor b2 = tp_tensor_4d(TP_DTYPE_BF16, nhwc, N, C, H, W), b3 = b2;
    tp_tensor f1 = t4(nchw, N, C, H, W), f2 = t4(nhwc, N, C, H, W);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        if (i < n_edge) {
            u = bf16_edge_cases[i];
        } else {
            uint64_t r = next_u64(c);
            u = ((uint32_t)r & 0x807fffffu) | (uint32_t)(100 + (r >> 32) % 60) << 23;
            if (i % 3 == 0)
                u = (u & 0xffff0000u) | 0x8000u;
        }
        memcpy(&v[i], &u, sizeof u);
        want[i] = tp_f32_from_bf16(tp_bf16_from_f32(v[i]));
    }
    test_bf16_pinned_copy(c, v, want, got, n, N, C, H, W);
    CALL(c, alloc_poisoned(c, &b1));
    CALL(c, alloc_poisoned(c, &b2));
    CALL(c, alloc_poisoned(c, &b3));
    CALL(c, alloc_poisoned(c, &f1));
    CALL(c, alloc_poisoned(c, &f2));

    /* host f32 -> device bf16 -> host f32 */
    CALL(c, put_host(c, &b1, v, nchw));
    CALL(c, get_host(c, &b1, got, nchw));
    compare_bits(c, "bf16act_copy", "host f32 NCHW -> bf16 NCHW -> host f32 NCHW", v, got, want, n);
    CALL(c, put_host(c, &b2, v, nchw));
    CALL(c, get_host(c, &b2, got, nhwc));
    compare_bits(c, "bf16act_copy", "host f32 NCHW -> bf16 NHWC -> host f32 NHWC", v, got, want, n);
    CALL(c, get_host(c, &b2, got, nchw));
    compare_bits(c, "bf16act_copy", "host f32 NCHW -> bf16 NHWC -> host f32 NCHW", v, got, want, n);
    CALL(c, c->ops->fill(c->be, &b2, NAN));
    CALL(c, put_host(c, &b2, v, nhwc));
    CALL(c, get_host(c, &b2, got, nhwc));
    compare_bits(c, "bf16act_copy", "host f32 NHWC -> bf16 NHWC -> host f32 NHWC", v, got, want, n);

    /* device f32 -> device bf16 (f1 and f2 hold v, unrounded) */
    CALL(c, put_host(c, &f1, v, nchw));
    CALL(c, put_host(c, &f2, v, nhwc));
    CALL(c, copy_bits(c, &b1, &f1, TP_STREAM_COMPUTE, nchw, "device f32 NCHW -> bf16 NCHW", v,
                      got, want, n));
    CALL(c, copy_bits(c, &b2, &f1, TP_STREAM_COPY, nhwc, "device f32 NCHW -> bf16 NHWC", v, got,
                      want, n));
    CALL(c, copy_bits(c, &b3, &f2, TP_STREAM_COMPUTE, nhwc, "device f32 NHWC -> bf16 NHWC", v,
                      got, want, n));

    /* device bf16 -> device f32 (b1, b2 and b3 hold the rounded values; bf16 -> f32 is exact) */
    CALL(c, copy_bits(c, &f1, &b1, TP_STREAM_COMPUTE, nchw, "device bf16 NCHW -> f32 NCHW", v,
                      got, want, n));
    CALL(c, copy_bits(c, &f2, &b1, TP_STREAM_COMPUTE, nhwc, "device bf16 NCHW -> f32 NHWC", v,
                      got, want, n));
    CALL(c, copy_bits(c, &f1, &b2, TP_STREAM_COPY, nchw, "device bf16 NHWC -> f32 NCHW", v, got,
                      want, n));
    CALL(c, copy_bits(c, &f2, &b3, TP_STREAM_COMPUTE, nhwc, "device bf16 NHWC -> f32 NHWC", v,
                      got, want, n));

    /* bf16 -> bf16 across layouts: the bits move unchanged */
    CALL(c, copy_bits(c, &b3, &b1, TP_STREAM_COMPUTE, nhwc, "device bf16 NCHW -> bf16 NHWC", v,
                      got, want, n));
    CALL(c, copy_bits(c, &b1, &b3, TP_STREAM_COMPUTE, nchw, "device bf16 NHWC -> bf16 NCHW", v,
                      got, want, n));

    /* fill: 1/3 (not near a tie, so rounding through f32 first changes nothing) and NaN */
    CALL(c, c->ops->fill(c->be, &b2, 1.0 / 3.0));
    for (int64_t i = 0; i < n; i++)
        want[i] = tp_f32_from_bf16(tp_bf16_from_f32((float)(1.0 / 3.0)));
    CALL(c, get_host(c, &b2, got, nhwc));
    compare_bits(c, "bf16act_fill", "1/3", NULL, got, want, n);
    CALL(c, c->ops->fill(c->be, &b2, NAN));
    for (int64_t i = 0; i < n; i++)
        want[i] = NAN;
    CALL(c, get_host(c, &b2, got, nhwc));
    compare_bits(c, "bf16act_fill", "NaN", NULL, got, want, n);
out:
    dev_free(c, &b1), dev_free(c, &b2), dev_free(c, &b3), dev_free(c, &f1), dev_free(c, &f2);
    free(v), free(want), free(got);
}

/* The activation operations with bf16 x, y, dy and dx (API 1.5), all channels-last, the
 * backend's preferred layout and the only one its bf16 path serves: the cases above with
 * c->act bf16 (a4(), rand_act(), the bf16act_ rows and bf16_tolerance()). Random shapes
 * like the f32 cases' plus ResNet-like ones (channel counts that are multiples of 8, the
 * 3-channel stem convolution, a 3x3 stride-2 max pooling). */
static void test_bf16_activations(ctx *c)
{
    const tp_layout L = TP_LAYOUT_NHWC;
    printf("bf16 activations (API 1.5): the bf16act_* rows, channels-last; tolerance 0 for "
           "relu, max pooling forward and subsample_pad, 1e-4 for f32 outputs, 1e-2 for one "
           "rounding, 3e-2 for convolutions and batch-norm backward\n");
    check_bf16_helpers(c);
    test_bf16_copy(c);
    c->act = TP_DTYPE_BF16;

    for (int i = 0; i < 12; i++)
        conv_case(c, random_conv(c, i), i % 2, L, L);
    conv_case(c, conv_geom(4, 3, 16, 16, 16, 3, 1, 1), 1, L, L);
    conv_case(c, conv_geom(4, 16, 16, 16, 16, 3, 1, 1), 0, L, L);
    conv_case(c, conv_geom(4, 16, 16, 16, 32, 3, 2, 1), 0, L, L);
    conv_case(c, conv_geom(4, 16, 16, 16, 32, 1, 2, 0), 1, L, L);
    conv_case(c, conv_geom(2, 64, 8, 8, 64, 3, 1, 1), 0, L, L);

    /* batch norm, and the fused batch norm + ReLU with it (bn_relu_case) */
    for (int i = 0; i < 6; i++) {
        int N = i % 3 == 0 ? 1 : irand(c, 2, 4);
        int H = irand(c, 1, 9), W = irand(c, 2, 9);
        bn_case(c, N, irand(c, 1, 17), H, W, L, L);
    }
    bn_case(c, 8, 64, 16, 16, L, L);
    bn_case(c, 4, 160, 5, 7, L, L);
    bn_case(c, 3, 37, 9, 9, L, L);
    bn_case(c, 32, 8, 32, 32, L, L);

    /* relu, add, add_relu (and in place) */
    for (int i = 0; i < 4; i++) {
        int N = irand(c, 1, 3), C = irand(c, 1, 9), H = irand(c, 1, 9), W = irand(c, 1, 9);
        elementwise_case(c, a4(c, L, N, C, H, W), L);
    }
    elementwise_case(c, a4(c, L, 2, 3, 5, 7), L);
    elementwise_case(c, a4(c, L, 4, 64, 16, 16), L);

    for (int i = 0; i < 12; i++)
        pool_case(c, random_pool(c, i), L);
    ref_pool p = { 1, 4, 16, 32, 32, 3, 3, 2, 2, 1, 1, 0, 0 };
    p.OH = ref_out_size(p.H, p.KH, p.SH, p.PH, 1);
    p.OW = ref_out_size(p.W, p.KW, p.SW, p.PW, 1);
    pool_case(c, p, L);
    pool_layouts_case(c, p);
    p.max = 0;
    pool_case(c, p, L);
    pool_layouts_case(c, p);

    for (int i = 0; i < 4; i++) {
        int N = irand(c, 1, 4), C = irand(c, 1, 17), H = irand(c, 1, 9), W = irand(c, 1, 9);
        gap_case(c, N, C, H, W, L);
    }
    gap_case(c, 8, 64, 8, 8, L);

    for (int i = 0; i < 6; i++) {
        int stride = 1 + i % 2, N = irand(c, 1, 3), C = irand(c, 1, 6);
        int Cout = C + irand(c, 0, 6), H = irand(c, 1, 9), W = irand(c, 1, 9);
        subsample_case(c, stride, N, C, Cout, H, W, L);
    }
    subsample_case(c, 2, 4, 16, 32, 16, 16, L);
    c->act = TP_DTYPE_F32;
}

/* ------------------------------------------------------------------ main */

/* Leaves with status 77 (skip) without running exit handlers: a backend whose device is
 * missing has already loaded and unloaded its vendor libraries (CUDA's runtime keeps
 * libstdc++ pools that LeakSanitizer reports once their module is gone), and nothing of
 * ours was exercised. */
static int skip_now(void)
{
    fflush(stdout);
    fflush(stderr);
    _exit(77);
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "cpu";
    const int optional = strcmp(name, "cpu") != 0; /* only the CPU backend must exist */
    char path[4096];
    ctx c;
    memset(&c, 0, sizeof c);
    c.rng = 20240611;
    c.act = TP_DTYPE_F32;
    c.pool_layouts_exact = !strcmp(name, "cuda");

    if (!find_backend_plugin(name, path, sizeof path)) {
        printf("%s: backend-%s plugin not found (set TP_PLUGIN_DIR or TP_BUILDDIR)\n", argv[0],
               name);
        return optional ? 77 : 1;
    }
    registry *r = registry_new();
    instance inst;
    memset(&inst, 0, sizeof inst);
    if (!r || registry_load_file(r, path) != TP_OK) {
        printf("%s: cannot load %s: %s\n", argv[0], path, services_last_error());
        if (optional)
            return skip_now();
        registry_free(r);
        return 1;
    }
    const registry_entry *e = registry_find(r, TP_KIND_BACKEND, name);
    if (!e) {
        printf("%s: %s provides no backend \"%s\"\n", argv[0], path, name);
        registry_free(r);
        return 1;
    }
    /* The backend's parameters: KEY=VALUE arguments, plus threads=1 under ASan. */
    const char *settings[34];
    int n_settings = 0;
    for (int i = 2; i < argc && n_settings < 32; i++) {
        if (!strchr(argv[i], '=')) {
            printf("usage: %s BACKEND [KEY=VALUE]... ('%s' is not KEY=VALUE)\n", argv[0],
                   argv[i]);
            registry_free(r);
            return 2;
        }
        settings[n_settings++] = argv[i];
        /* backend-cpu's precision sets only the activations' storage: its f32 operations
         * stay exact, so they keep the f32 tolerances */
        if (!strncmp(argv[i], "precision=", 10) && strcmp(name, "cpu") != 0) {
            const char *p = argv[i] + 10;
            c.reduced_tol = !strcmp(p, "bf16")                          ? 3e-2
                            : !strcmp(p, "tf32") || !strcmp(p, "fp16") ? 5e-3
                                                                       : 0.0;
        }
    }
    const int one_thread = UNDER_ASAN && !optional;
    if (one_thread) {
        printf("AddressSanitizer build: running backend-cpu with threads=1 "
               "(see backend_test_support.h)\n");
        settings[n_settings++] = "threads=1";
    }
    settings[n_settings] = NULL;
    if (instance_create(e->component, settings, &inst) != TP_OK) {
        printf("%s: backend \"%s\" cannot be created here (%s)%s\n", argv[0], name,
               services_last_error(), optional ? ": skipping" : "");
        if (optional)
            return skip_now();
        registry_free(r);
        return 1;
    }
    c.ops = e->component->ops;
    c.be = inst.self;
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    if (c.ops->info && c.ops->info(c.be, &info) == TP_OK)
        printf("backend %s on %s (%d threads)\n", info.name, info.device_name, info.threads);
    /* API 1.5: bf16 activations, read only where the backend's info covers the field. */
    const int bf16_act = info.size >= offsetof(tp_backend_info, activation_dtype) +
                                          sizeof info.activation_dtype &&
                         info.activation_dtype == TP_DTYPE_BF16;

    test_copy(&c);
    test_events(&c);
    test_errors(&c);
    test_refusals(&c);
    test_conv(&c);
    test_fused_ops_offered(&c);
    test_batchnorm(&c);
    test_elementwise(&c);
    test_pool(&c);
    test_gap(&c);
    test_linear(&c);
    test_subsample_pad(&c);
    test_loss(&c);
    test_topk(&c);
    test_arithmetic(&c);
    test_optimizers(&c, 0);
    test_optimizers(&c, 1);
    test_optimizer_groups(&c);
    test_check_finite_group(&c);
    test_gradcheck(&c, TP_LAYOUT_NCHW, 1, 1);
    test_gradcheck(&c, TP_LAYOUT_NHWC, 2, 0);
    if (bf16_act)
        test_bf16_activations(&c); /* last, so the f32 cases draw the same shapes either way */

    int width = 28;
    for (int i = 0; i < c.n_stats; i++)
        if ((int)strlen(c.stats[i].name) > width)
            width = (int)strlen(c.stats[i].name);
    printf("\n%-*s %6s %14s %14s\n", width, "operation", "cases", "max |diff|", "max rel err");
    for (int i = 0; i < c.n_stats; i++)
        printf("%-*s %6d %14.3g %14.3g\n", width, c.stats[i].name, c.stats[i].cases,
               c.stats[i].max_abs, c.stats[i].max_rel);
    printf("\n%s: %d failure(s); tolerance %.0e per op, %.0e for gradient checks",
           c.failures ? "FAIL" : "PASS", c.failures, OP_TOLERANCE, GRAD_TOLERANCE);
    if (c.reduced_tol > 0)
        printf("; %.0e for convolutions, linear layers and gradient checks at this precision",
               c.reduced_tol);
    if (bf16_act)
        printf("; bf16 activations (bf16act_*): 0 exact ops, 1e-4 f32 outputs, 1e-2 one "
               "rounding, 3e-2 convolutions and batch-norm backward");
    printf("\n");

    instance_destroy(&inst);
    registry_free(r);
    return c.failures ? 1 : 0;
}
