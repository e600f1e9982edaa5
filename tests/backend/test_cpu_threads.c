/* backend-cpu: the operations on the plugin's own loops give the same bits on 1 and on 3
 * threads (backend-reference.md promises it; oneDNN's own kernels make no such promise and
 * are not checked here).
 *
 * Two instances of the backend, threads = 1 and threads = 3, run each operation on the same
 * inputs, large enough that the loops are shared out (over CPU_PARALLEL_MIN elements, and
 * several row blocks for batch norm); every output is compared byte for byte. Three
 * threads on any machine: OpenMP starts them even on fewer cores, and 3 does not divide
 * the block counts evenly. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"
#include "services.h"

#include "backend_test_support.h"

typedef struct side {
    instance inst;
    const tp_backend_ops *ops;
    void *be;
} side;

static int failures;
static uint64_t rng = 88172645463325252ull;

static float next_uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* A tensor of descriptor t allocated on s, filled from `values` (converted to t's dtype;
 * count elements) or left as the backend allocated it when values is NULL. */
static tp_tensor make(side *s, tp_tensor t, const float *values)
{
    if (s->ops->alloc(s->be, &t, "test tensor") != TP_OK) {
        printf("Bail out! cannot allocate: %s\n", services_last_error());
        exit(1);
    }
    const int64_t n = tp_tensor_count(&t);
    if (values) {
        for (int64_t i = 0; i < n; i++) {
            if (t.dtype == TP_DTYPE_BF16)
                ((uint16_t *)t.data)[i] = tp_bf16_from_f32(values[i]);
            else
                ((float *)t.data)[i] = values[i];
        }
    } else {
        memset(t.data, 0xA5, (size_t)tp_tensor_bytes(&t)); /* every byte must be written */
    }
    return t;
}

static float *random_values(int64_t n, float offset)
{
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) {
        printf("Bail out! out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = next_uniform() + offset;
    return v;
}

static void compare(const char *what, const tp_tensor *a, const tp_tensor *b)
{
    const size_t bytes = (size_t)tp_tensor_bytes(a);
    const unsigned char *pa = a->data, *pb = b->data;
    size_t first = bytes;
    for (size_t i = 0; i < bytes && first == bytes; i++)
        if (pa[i] != pb[i])
            first = i;
    if (first == bytes) {
        printf("ok - %s: %zu bytes identical\n", what, bytes);
        return;
    }
    failures++;
    printf("not ok - %s: 1 and 3 threads differ first at byte %zu of %zu\n", what, first,
           bytes);
}

static void check(tp_status st, const char *what)
{
    if (st != TP_OK) {
        printf("Bail out! %s failed: %s\n", what, services_last_error());
        exit(1);
    }
}

static void release(side *s, tp_tensor *t)
{
    s->ops->free(s->be, t);
}

/* Batch norm training, backward, and the fused ReLU forms, NHWC with C channels. */
static void batchnorm_case(side sides[2], tp_dtype dt, int N, int C, int H, int W)
{
    char what[128];
    const char *dn = tp_dtype_name(dt);
    const int64_t n = (int64_t)N * C * H * W;
    float *x = random_values(n, 0.3f), *dy = random_values(n, 0.0f);
    float *gamma = random_values(C, 1.5f), *beta = random_values(C, 0.0f);
    const tp_bn_desc d = { 1e-5, 0.1 };
    tp_tensor act = tp_tensor_4d(dt, TP_LAYOUT_NHWC, N, C, H, W);
    const tp_tensor vec = tp_tensor_2d(TP_DTYPE_F32, C, 0);
    tp_tensor out[2][9];
    for (int k = 0; k < 2; k++) {
        side *s = &sides[k];
        tp_tensor tx = make(s, act, x), tdy = make(s, act, dy);
        tp_tensor tg = make(s, vec, gamma), tb = make(s, vec, beta);
        tp_tensor *o = out[k];
        o[0] = make(s, act, NULL);                                  /* y */
        o[1] = make(s, vec, NULL), o[2] = make(s, vec, NULL);       /* save mean, invstd */
        o[3] = make(s, act, NULL);                                  /* dx */
        o[4] = make(s, vec, NULL), o[5] = make(s, vec, NULL);       /* dgamma, dbeta */
        o[6] = make(s, act, NULL);                                  /* y with the ReLU */
        o[7] = make(s, act, NULL);                                  /* dx through it */
        o[8] = make(s, vec, NULL);                                  /* its dgamma */
        int64_t ws_bytes = 0;
        if (s->ops->batchnorm_relu_workspace_bytes(s->be, &d, &tx, &ws_bytes) != TP_OK &&
            dt == TP_DTYPE_BF16 && k == 0) {
            /* oneDNN (the 16-channel and workspace paths) has no bf16 here */
            for (int i = 0; i < 9; i++)
                printf("ok - # SKIP batchnorm bf16 N%d C%d: %s\n", N, C, services_last_error());
            for (int i = 0; i < 9; i++)
                release(s, &o[i]);
            release(s, &tx), release(s, &tdy), release(s, &tg), release(s, &tb);
            free(x), free(dy), free(gamma), free(beta);
            return;
        }
        check(ws_bytes >= 0 ? TP_OK : TP_ERR_INVALID, "batchnorm_relu_workspace_bytes");
        tp_tensor ws = make(s, tp_tensor_2d(TP_DTYPE_U8, ws_bytes > 0 ? ws_bytes : 1, 0), NULL);
        check(s->ops->batchnorm_train(s->be, &d, &tx, &tg, &tb, &o[0], NULL, NULL, &o[1],
                                      &o[2]),
              "batchnorm_train");
        check(s->ops->batchnorm_backward(s->be, &d, &tx, &tdy, &tg, &o[1], &o[2], &o[3], &o[4],
                                         &o[5]),
              "batchnorm_backward");
        check(s->ops->batchnorm_relu_train(s->be, &d, &tx, &tg, &tb, &o[6], NULL, NULL, &o[1],
                                           &o[2], &ws),
              "batchnorm_relu_train");
        check(s->ops->batchnorm_relu_backward(s->be, &d, &tx, &o[6], &ws, &tdy, &tg, &o[1],
                                              &o[2], &o[7], &o[8], NULL),
              "batchnorm_relu_backward");
        release(s, &tx), release(s, &tdy), release(s, &tg), release(s, &tb), release(s, &ws);
    }
    static const char *const names[9] = { "y", "save_mean", "save_invstd", "dx", "dgamma",
                                          "dbeta", "y (ReLU)", "dx (ReLU)", "dgamma (ReLU)" };
    for (int i = 0; i < 9; i++) {
        snprintf(what, sizeof what, "batchnorm %s NHWC N%d C%d %dx%d: %s", dn, N, C, H, W,
                 names[i]);
        compare(what, &out[0][i], &out[1][i]);
        release(&sides[0], &out[0][i]);
        release(&sides[1], &out[1][i]);
    }
    free(x), free(dy), free(gamma), free(beta);
}

/* Global average pooling, subsample/pad and the f32 <-> bf16 copies in layout `lay`. */
static void reshape_case(side sides[2], tp_dtype dt, tp_layout lay)
{
    char what[128];
    const char *dn = tp_dtype_name(dt), *ln = lay == TP_LAYOUT_NHWC ? "NHWC" : "NCHW";
    const int N = 16, C = 64, H = 9, W = 9, Cy = 128, OH = 5, OW = 5;
    const int64_t n = (int64_t)N * C * H * W;
    float *x = random_values(n, 0.0f), *g = random_values((int64_t)N * C, 0.0f);
    float *gs = random_values((int64_t)N * Cy * OH * OW, 0.0f);
    const tp_layout other = lay == TP_LAYOUT_NHWC ? TP_LAYOUT_NCHW : TP_LAYOUT_NHWC;
    const tp_dtype odt = dt == TP_DTYPE_F32 ? TP_DTYPE_BF16 : TP_DTYPE_F32;
    tp_tensor out[2][6];
    for (int k = 0; k < 2; k++) {
        side *s = &sides[k];
        tp_tensor tx = make(s, tp_tensor_4d(dt, lay, N, C, H, W), x);
        tp_tensor tg = make(s, tp_tensor_2d(TP_DTYPE_F32, N, C), g);
        tp_tensor tgs = make(s, tp_tensor_4d(dt, lay, N, Cy, OH, OW), gs);
        tp_tensor *o = out[k];
        o[0] = make(s, tp_tensor_2d(TP_DTYPE_F32, N, C), NULL);
        o[1] = make(s, tp_tensor_4d(dt, lay, N, C, H, W), NULL);
        o[2] = make(s, tp_tensor_4d(dt, lay, N, Cy, OH, OW), NULL);
        o[3] = make(s, tp_tensor_4d(dt, lay, N, C, H, W), NULL);
        o[4] = make(s, tp_tensor_4d(odt, lay, N, C, H, W), NULL);
        o[5] = make(s, tp_tensor_4d(odt, other, N, C, H, W), NULL);
        check(s->ops->global_avgpool_forward(s->be, &tx, &o[0]), "global_avgpool_forward");
        check(s->ops->global_avgpool_backward(s->be, &tg, &o[1]), "global_avgpool_backward");
        check(s->ops->subsample_pad_forward(s->be, 2, &tx, &o[2]), "subsample_pad_forward");
        check(s->ops->subsample_pad_backward(s->be, 2, &tgs, &o[3]), "subsample_pad_backward");
        check(s->ops->copy(s->be, &o[4], &tx, TP_STREAM_COMPUTE), "copy (convert)");
        check(s->ops->copy(s->be, &o[5], &tx, TP_STREAM_COMPUTE), "copy (convert and relayout)");
        release(s, &tx), release(s, &tg), release(s, &tgs);
    }
    static const char *const names[6] = { "global_avgpool_forward", "global_avgpool_backward",
                                          "subsample_pad_forward", "subsample_pad_backward",
                                          "copy converting", "copy converting to the other "
                                                             "layout" };
    for (int i = 0; i < 6; i++) {
        snprintf(what, sizeof what, "%s %s %s", names[i], dn, ln);
        compare(what, &out[0][i], &out[1][i]);
        release(&sides[0], &out[0][i]);
        release(&sides[1], &out[1][i]);
    }
    free(x), free(g), free(gs);
}

/* The optimizer arithmetic: fill, axpby, scale, SGD (Nesterov) and AdamW, 100,003 values. */
static void optimizer_case(side sides[2])
{
    const int64_t n = 100003;
    float *p = random_values(n, 0.0f), *g = random_values(n, 0.0f);
    const tp_tensor desc = tp_tensor_2d(TP_DTYPE_F32, n, 0);
    tp_tensor out[2][6];
    for (int k = 0; k < 2; k++) {
        side *s = &sides[k];
        tp_tensor tg = make(s, desc, g);
        tp_tensor *o = out[k];
        o[0] = make(s, desc, NULL);
        o[1] = make(s, desc, p), o[2] = make(s, desc, p), o[3] = make(s, desc, NULL);
        o[4] = make(s, desc, p), o[5] = make(s, desc, NULL);
        tp_tensor m = make(s, desc, NULL);
        check(s->ops->fill(s->be, &o[0], 0.375), "fill");
        check(s->ops->axpby(s->be, 0.5, &tg, -1.25, &o[1]), "axpby");
        check(s->ops->scale(s->be, 1.0 / 3.0, &o[2]), "scale");
        check(s->ops->fill(s->be, &o[3], 0.0), "fill");
        check(s->ops->fill(s->be, &o[5], 0.0), "fill");
        check(s->ops->fill(s->be, &m, 0.0), "fill");
        for (int step = 1; step <= 3; step++) {
            check(s->ops->sgd_update(s->be, &o[2], &tg, &o[3], 0.1, 0.9, 5e-4, 1),
                  "sgd_update");
            check(s->ops->adam_update(s->be, &o[4], &tg, &m, &o[5], 1e-3, 0.9, 0.999, 1e-8,
                                      1e-2, 1, step),
                  "adam_update");
        }
        release(s, &tg), release(s, &m);
    }
    static const char *const names[6] = { "fill", "axpby", "scale then 3 sgd_update",
                                          "sgd_update velocity", "3 adam_update (AdamW)",
                                          "adam_update second moment" };
    for (int i = 0; i < 6; i++) {
        compare(names[i], &out[0][i], &out[1][i]);
        release(&sides[0], &out[0][i]);
        release(&sides[1], &out[1][i]);
    }
    free(p), free(g);
}

/* This test needs OpenMP's worker threads, so under AddressSanitizer it leaves with _exit
 * (backend_test_support.h says why). */
static int finish(int status)
{
    fflush(stdout);
    if (UNDER_ASAN)
        _exit(status);
    return status;
}

int main(void)
{
    char path[4096];
    if (!find_backend_plugin("cpu", path, sizeof path)) {
        printf("Bail out! backend-cpu plugin not found (set TP_PLUGIN_DIR or TP_BUILDDIR)\n");
        return 1;
    }
    registry *r = registry_new();
    if (!r || registry_load_file(r, path) != TP_OK) {
        printf("Bail out! cannot load %s: %s\n", path, services_last_error());
        return 1;
    }
    const registry_entry *e = registry_find(r, TP_KIND_BACKEND, "cpu");
    if (!e) {
        printf("Bail out! %s provides no backend \"cpu\"\n", path);
        return 1;
    }
    static const char *const one[] = { "threads=1", NULL }, *const three[] = { "threads=3",
                                                                               NULL };
    side sides[2];
    memset(sides, 0, sizeof sides);
    for (int k = 0; k < 2; k++) {
        if (instance_create(e->component, k ? three : one, &sides[k].inst) != TP_OK) {
            printf("Bail out! cannot create backend-cpu: %s\n", services_last_error());
            return 1;
        }
        sides[k].ops = e->component->ops;
        sides[k].be = sides[k].inst.self;
    }
    printf("1..%d\n", 4 * 9 + 4 * 6 + 6);
    batchnorm_case(sides, TP_DTYPE_F32, 8, 32, 16, 16);
    batchnorm_case(sides, TP_DTYPE_F32, 4, 160, 7, 9);
    batchnorm_case(sides, TP_DTYPE_BF16, 8, 64, 16, 16);
    batchnorm_case(sides, TP_DTYPE_BF16, 3, 48, 21, 13);
    reshape_case(sides, TP_DTYPE_F32, TP_LAYOUT_NHWC);
    reshape_case(sides, TP_DTYPE_F32, TP_LAYOUT_NCHW);
    reshape_case(sides, TP_DTYPE_BF16, TP_LAYOUT_NHWC);
    reshape_case(sides, TP_DTYPE_BF16, TP_LAYOUT_NCHW);
    optimizer_case(sides);
    for (int k = 0; k < 2; k++)
        instance_destroy(&sides[k].inst);
    registry_free(r);
    return finish(failures ? 1 : 0);
}
