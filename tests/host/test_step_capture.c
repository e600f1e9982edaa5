/* Step capture (host/step_capture.c) against the recording test double: a small CIFAR
 * ResNet (depth 8, shortcut A, 16x16, batch 4) trained for a dozen steps twice, op by op
 * and through step_capture_run, on the naive backend. The two runs must agree bit for bit
 * at every step (loss) and at the end (every parameter, gradient and running statistic),
 * while the captured run goes through an unrecorded first step, a recording, replays, a new
 * recording when the loss scale changes, a smaller batch run op by op after rebinding the
 * graph, and a recording that fails (every later step op by op). Each batch lives in
 * tensors of its own, all kept until the end, so a recording that kept reading the batch it
 * was made with, instead of the capture's input buffers, would train on old data here.
 * Also: what a recording may not do (allocate, wait) spoils it, and nothing leaks. */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "graph.h"
#include "recording_backend.h"
#include "services.h"
#include "step_capture.h"
#include "test_graph_backend.h"

#define BATCH 4
#define SMALL_BATCH 2
#define CH 3
#define SIZE 16
#define CLASSES 10
#define STEPS 12

static registry *reg;

/* One trainee: graph, backend, loss buffers for the bound batch, the loss scale. */
typedef struct trainee {
    graph *g;
    tp_backend be;
    tp_tensor loss, dlogits;
    int batch;
    double loss_scale;
} trainee;

static tp_status forward_backward(void *ctx, const tp_tensor *x, const tp_tensor *labels)
{
    trainee *t = ctx;
    tp_status st = graph_forward(t->g, x, 1);
    if (!st)
        st = t->be.ops->softmax_xent(t->be.self, graph_logits(t->g), labels, 0.1,
                                     t->loss_scale, &t->loss, &t->dlogits);
    if (!st)
        st = graph_backward(t->g, &t->dlogits);
    return st;
}

static tp_status bind(trainee *t, int batch)
{
    t->be.ops->free(t->be.self, &t->loss);
    t->be.ops->free(t->be.self, &t->dlogits);
    tp_status st = graph_bind(t->g, &t->be, batch, TP_LAYOUT_NCHW);
    t->batch = batch;
    t->loss = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    t->dlogits = tp_tensor_2d(TP_DTYPE_F32, batch, CLASSES);
    if (!st)
        st = t->be.ops->alloc(t->be.self, &t->loss, "loss");
    if (!st)
        st = t->be.ops->alloc(t->be.self, &t->dlogits, "dlogits");
    return st;
}

static int make_trainee(trainee *t, tp_backend be)
{
    instance inst;
    const char *kv[] = {"depth=8", "shortcut=A", NULL};
    if (!test_instance(reg, TP_KIND_MODEL, "resnet", kv, &inst))
        return 0;
    memset(t, 0, sizeof *t);
    t->be = be;
    t->loss_scale = 1.0;
    t->g = test_build_graph(&inst, CH, SIZE, SIZE, CLASSES);
    instance_destroy(&inst);
    if (!t->g || bind(t, BATCH) || graph_init_params(t->g, 11)) {
        fprintf(stderr, "trainee: %s\n", services_last_error());
        return 0;
    }
    return 1;
}

static void free_trainee(trainee *t)
{
    t->be.ops->free(t->be.self, &t->loss);
    t->be.ops->free(t->be.self, &t->dlogits);
    graph_free(t->g);
}

/* p -= lr / loss_scale * grad for every parameter, op by op (never recorded). */
static tp_status update(trainee *t, double lr)
{
    size_t n;
    const tp_param_ref *p = graph_params(t->g, &n);
    tp_status st = TP_OK;
    for (size_t i = 0; i < n && !st; i++)
        st = t->be.ops->axpby(t->be.self, -lr / t->loss_scale, p[i].grad, 1.0, p[i].value);
    return st;
}

/* The step's batch, in tensors of its own. */
static tp_status make_batch(const tp_backend *be, int step, int batch, tp_tensor *x,
                            tp_tensor *labels)
{
    float xh[BATCH * CH * SIZE * SIZE];
    int32_t lh[BATCH];
    tp_rng r = tp_rng_make(1000 + (uint64_t)step, 1, 0);
    for (int i = 0; i < batch * CH * SIZE * SIZE; i++)
        xh[i] = (float)tp_rng_normal(&r);
    for (int i = 0; i < batch; i++)
        lh[i] = (int32_t)tp_rng_below(&r, CLASSES);
    *x = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, batch, CH, SIZE, SIZE);
    *labels = tp_tensor_2d(TP_DTYPE_I32, batch, 0);
    tp_status st = test_upload(be, x, xh);
    if (!st)
        st = test_upload(be, labels, lh);
    return st;
}

/* Two device tensors of the same shape hold the same bits. */
static int same_bits(const tp_backend *ba, const tp_tensor *a, const tp_backend *bb,
                     const tp_tensor *b)
{
    size_t bytes = tp_tensor_bytes(a);
    char *ha = malloc(bytes ? bytes : 1), *hb = malloc(bytes ? bytes : 1);
    int same = ha && hb && bytes == tp_tensor_bytes(b) && !test_download(ba, a, ha) &&
               !test_download(bb, b, hb) && !memcmp(ha, hb, bytes);
    free(ha);
    free(hb);
    return same;
}

/* Every named tensor of the graph (parameters, running statistics) and every gradient
 * equal bit for bit. */
static int same_state(trainee *a, trainee *b)
{
    size_t n = graph_tensor_count(a->g), np, differing = 0;
    CHECK(n == graph_tensor_count(b->g));
    for (size_t i = 0; i < n; i++)
        differing += !same_bits(&a->be, graph_tensor_desc(a->g, i), &b->be,
                                graph_tensor_desc(b->g, i));
    const tp_param_ref *pa = graph_params(a->g, &np), *pb = graph_params(b->g, &np);
    for (size_t i = 0; i < np; i++)
        differing += !same_bits(&a->be, pa[i].grad, &b->be, pb[i].grad);
    printf("  state after %d steps: %zu of %zu tensors and gradients differ\n", STEPS,
           differing, n + np);
    return differing == 0;
}

/* What each step of the captured run must be: 'u' unrecorded (first at a batch size, or
 * after the recording failed), 'r' a new recording then its replay, 'p' a replay,
 * 's' the small batch (run op by op by the caller, outside step_capture_run). */
static const char plan[STEPS + 1] = "urppr" "s" "urp" "uuu";

static void train_both(void)
{
    trainee eager, cap;
    tp_backend naive = naive_backend(1);
    if (!make_trainee(&eager, naive))
        return;
    if (!make_trainee(&cap, recording_backend(naive))) {
        free_trainee(&eager);
        return;
    }
    step_capture *sc = NULL;
    CHECK(step_capture_supported(&cap.be));
    CHECK(!step_capture_supported(&eager.be));
    CHECK(step_capture_create(&eager.be, &sc) == TP_ERR_UNSUPPORTED && !sc);
    CHECK(step_capture_create(&cap.be, &sc) == TP_OK && sc);
    if (!sc)
        return;
    step_capture_stats before, after;
    int mismatched_losses = 0;
    tp_tensor xe[STEPS], le[STEPS], xc[STEPS], lc[STEPS];
    for (int step = 0; step < STEPS; step++) {
        char kind = plan[step];
        int batch = kind == 's' ? SMALL_BATCH : BATCH;
        /* A new loss scale at step 4 (a recording of its own), back at step 9. */
        eager.loss_scale = cap.loss_scale = step >= 4 && step < 9 ? 4.0 : 1.0;
        if (step == 9)
            recording_backend_fail_at(7); /* the recording at step 9 (new scale) fails */
        if (batch != cap.batch) {
            step_capture_invalidate(sc); /* the graph's buffers are reallocated */
            CHECK(bind(&eager, batch) == TP_OK);
            CHECK(bind(&cap, batch) == TP_OK);
        }
        CHECK(make_batch(&eager.be, step, batch, &xe[step], &le[step]) == TP_OK);
        CHECK(make_batch(&cap.be, step, batch, &xc[step], &lc[step]) == TP_OK);
        step_capture_get_stats(sc, &before);
        CHECK(forward_backward(&eager, &xe[step], &le[step]) == TP_OK);
        tp_status st = kind == 's' ? forward_backward(&cap, &xc[step], &lc[step])
                                   : step_capture_run(sc, &xc[step], &lc[step], cap.loss_scale,
                                                      forward_backward, &cap);
        CHECK(st == TP_OK);
        if (st)
            fprintf(stderr, "step %d: %s\n", step, services_last_error());
        step_capture_get_stats(sc, &after);
        int64_t made = after.recordings - before.recordings;
        int64_t replayed = after.replays - before.replays;
        int64_t unrecorded = after.unrecorded - before.unrecorded;
        CHECK(kind != 'u' || (unrecorded == 1 && made == 0 && replayed == 0));
        CHECK(kind != 'r' || (made == 1 && replayed == 1 && unrecorded == 0));
        CHECK(kind != 'p' || (made == 0 && replayed == 1 && unrecorded == 0));
        CHECK(kind != 's' || (made == 0 && replayed == 0 && unrecorded == 0));
        float loss_e = NAN, loss_c = NAN;
        CHECK(test_download(&eager.be, &eager.loss, &loss_e) == TP_OK);
        CHECK(test_download(&cap.be, &cap.loss, &loss_c) == TP_OK);
        if (memcmp(&loss_e, &loss_c, sizeof loss_e))
            mismatched_losses++;
        printf("  step %2d (%c, batch %d, loss scale %g): loss %.7f op by op, %.7f captured\n",
               step, kind, batch, cap.loss_scale, loss_e, loss_c);
        CHECK(update(&eager, 0.05) == TP_OK);
        CHECK(update(&cap, 0.05) == TP_OK);
    }
    for (int step = 0; step < STEPS; step++) {
        eager.be.ops->free(eager.be.self, &xe[step]);
        eager.be.ops->free(eager.be.self, &le[step]);
        cap.be.ops->free(cap.be.self, &xc[step]);
        cap.be.ops->free(cap.be.self, &lc[step]);
    }
    recording_backend_fail_at(0);
    CHECK(mismatched_losses == 0);
    CHECK(same_state(&eager, &cap));
    step_capture_get_stats(sc, &after);
    printf("  captured run: %lld recordings (the last stored %zu calls), %lld replays, "
           "%lld unrecorded, recording %s\n", (long long)after.recordings,
           recording_backend_calls(), (long long)after.replays, (long long)after.unrecorded,
           after.disabled ? "disabled after the failure" : "still on");
    CHECK(after.recordings == 3 && after.replays == 6 && after.unrecorded == 5);
    CHECK(after.disabled);
    /* The test network's forward, loss and backward: 49 backend calls since each block's
     * last batch norm is computed at its addition (API 1.7). */
    CHECK(recording_backend_calls() > 40);
    CHECK(recording_backend_replays() == 6);
    step_capture_free(sc);
    CHECK(recording_backend_live() == 0);
    CHECK(recording_backend_open() == 0);
    free_trainee(&eager);
    free_trainee(&cap);
}

/* Allocating or waiting while recording fails and spoils the recording. */
static void forbidden_calls(void)
{
    tp_backend be = recording_backend(naive_backend(1));
    const tp_backend_ops *o = be.ops;
    tp_recording *rec = (tp_recording *)&rec;
    tp_tensor t = tp_tensor_2d(TP_DTYPE_F32, 4, 0);
    CHECK(o->capture_begin(be.self) == TP_OK);
    CHECK(o->capture_begin(be.self) == TP_ERR_INVALID);
    CHECK(o->alloc(be.self, &t, "inside") == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "alloc: not allowed while recording");
    CHECK(o->capture_end(be.self, &rec) == TP_ERR_INVALID && rec == NULL);
    CHECK(o->capture_begin(be.self) == TP_OK);
    CHECK(o->sync(be.self) == TP_ERR_INVALID);
    CHECK(o->capture_end(be.self, &rec) == TP_ERR_INVALID && rec == NULL);
    CHECK(o->capture_begin(be.self) == TP_OK);
    CHECK(o->capture_end(be.self, &rec) == TP_OK && rec);
    CHECK(o->replay(be.self, rec) == TP_OK);
    o->recording_free(be.self, rec);
    CHECK(recording_backend_open() == 0 && recording_backend_live() == 0);
    printf("  allocating or waiting while recording: refused, recording discarded\n");
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "model-resnet.so") != TP_OK) {
        fprintf(stderr, "model-resnet.so not built\n");
        return 1;
    }
    printf("step capture against op by op, plan %s:\n", plan);
    train_both();
    forbidden_calls();
    CHECK(naive_backend_live_allocations() == 0);
    registry_free(reg);
    return CHECK_EXIT();
}
