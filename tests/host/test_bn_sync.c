/* Synchronised batch norm (host/batchnorm_sync.c): two ranks, simulated by two threads with
 * a barrier-based all-reduce, each holding half of a batch, must reproduce one batch norm
 * over the whole batch: the outputs, the saved and running statistics, dx, and (averaged
 * over ranks) dgamma and dbeta. Runs on the naive test backend, with odd sizes, channels
 * whose means differ from their spread by orders of magnitude, and eps and momentum that
 * are not the defaults. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "batchnorm_sync.h"
#include "check.h"
#include "services.h"
#include "test_graph_backend.h"

enum { RANKS = 2, N = 6, C = 3, H = 3, W = 5, HALF = N / RANKS, PER_SAMPLE = C * H * W };

/* ------------------------------------------------------------------ the all-reduce */

static pthread_barrier_t barrier;
static double exchange[RANKS][64];

typedef struct rank_ctx {
    int rank;
} rank_ctx;

static tp_status barrier_allreduce(void *ctx, double *values, size_t count)
{
    int r = ((rank_ctx *)ctx)->rank;
    if (count > 64)
        return services_fail(TP_ERR_INVALID, "test all-reduce: %zu values", count);
    memcpy(exchange[r], values, count * sizeof(double));
    pthread_barrier_wait(&barrier);
    for (size_t i = 0; i < count; i++) {
        double sum = 0;
        for (int k = 0; k < RANKS; k++) /* rank order, the same on every rank */
            sum += exchange[k][i];
        values[i] = sum;
    }
    pthread_barrier_wait(&barrier); /* nobody overwrites exchange[] before all have read */
    return TP_OK;
}

/* ------------------------------------------------------------------ one rank */

typedef struct rank_work {
    rank_ctx ctx;
    tp_backend be;
    bn_sync *sync;
    tp_tensor x, dy, y, dx, gamma, beta, rm, rv, save_mean, save_invstd, dgamma, dbeta;
    tp_status status;
} rank_work;

static const tp_bn_desc desc = {1e-3, 0.3};

static void *run_rank(void *arg)
{
    rank_work *w = arg;
    w->status = bn_sync_forward(w->sync, &desc, &w->x, &w->gamma, &w->beta, &w->y, &w->rm,
                                &w->rv, &w->save_mean, &w->save_invstd);
    if (!w->status)
        w->status = bn_sync_backward(w->sync, &desc, &w->x, &w->dy, &w->gamma, &w->save_mean,
                                     &w->save_invstd, &w->dx, &w->dgamma, &w->dbeta, 1);
    return NULL;
}

/* ------------------------------------------------------------------ checks */

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double scale = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs((double)b[i]));
        diff = fmax(diff, fabs((double)a[i] - b[i]));
    }
    return diff / (scale > 0 ? scale : 1);
}

static void expect_close(const char *what, const float *got, const float *want, size_t n)
{
    double d = max_rel_diff(got, want, n);
    int ok = d <= 2e-5;
    printf("%s %-28s max relative difference %.3g\n", ok ? "ok  " : "FAIL", what, d);
    CHECK(ok);
}

static tp_tensor vec(void) { return tp_tensor_2d(TP_DTYPE_F32, C, 0); }

/* One comparison on backend `be` with activations in `layout` (host data is read in that
 * layout too; the halves are split along N, the outermost dimension of both). */
static void run_case(const char *label, tp_backend be, tp_layout layout)
{
    printf("== %s, %s\n", label, layout == TP_LAYOUT_NHWC ? "NHWC" : "NCHW");
    tp_rng rng = tp_rng_make(7, 1, 2);
    static float x[N * PER_SAMPLE], dy[N * PER_SAMPLE];
    float gamma[C], beta[C], rm0[C], rv0[C];
    const double channel_offset[C] = {0.0, 25.0, -3.0}, channel_scale[C] = {1.0, 0.05, 4.0};
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H * W; i++) {
                size_t at = ((size_t)n * C + c) * H * W + i;
                x[at] = (float)(channel_offset[c] + channel_scale[c] * tp_rng_normal(&rng));
                dy[at] = (float)tp_rng_normal(&rng);
            }
    for (int c = 0; c < C; c++) {
        gamma[c] = (float)(0.5 + tp_rng_uniform(&rng));
        beta[c] = (float)tp_rng_normal(&rng);
        rm0[c] = (float)(0.1 * c);
        rv0[c] = (float)(1.0 + 0.5 * c);
    }

    /* The reference: one batch norm over all N samples. */
    tp_tensor rx = tp_tensor_4d(TP_DTYPE_F32, layout, N, C, H, W);
    tp_tensor rdy = rx, ry = rx, rdx = rx;
    tp_tensor rg = vec(), rb = vec(), rrm = vec(), rrv = vec(), rsm = vec(), rsi = vec(),
              rdg = vec(), rdb = vec();
    CHECK(!test_upload(&be, &rx, x) && !test_upload(&be, &rdy, dy) &&
          !test_upload(&be, &rg, gamma) && !test_upload(&be, &rb, beta) &&
          !test_upload(&be, &rrm, rm0) && !test_upload(&be, &rrv, rv0) &&
          !be.ops->alloc(be.self, &ry, "y") && !be.ops->alloc(be.self, &rdx, "dx") &&
          !be.ops->alloc(be.self, &rsm, "m") && !be.ops->alloc(be.self, &rsi, "i") &&
          !be.ops->alloc(be.self, &rdg, "dg") && !be.ops->alloc(be.self, &rdb, "db"));
    CHECK(!be.ops->batchnorm_train(be.self, &desc, &rx, &rg, &rb, &ry, &rrm, &rrv, &rsm, &rsi));
    CHECK(!be.ops->batchnorm_backward(be.self, &desc, &rx, &rdy, &rg, &rsm, &rsi, &rdx, &rdg,
                                      &rdb));

    /* Two ranks, each with half the samples. Each rank's loss is the mean over its own
     * half, so its dy is RANKS times the whole batch's (see batchnorm_sync.h). */
    rank_work w[RANKS];
    static float half_dy[HALF * PER_SAMPLE];
    memset(w, 0, sizeof w);
    for (int r = 0; r < RANKS; r++) {
        w[r].ctx.rank = r;
        w[r].be = be;
        w[r].x = tp_tensor_4d(TP_DTYPE_F32, layout, HALF, C, H, W);
        w[r].dy = w[r].y = w[r].dx = w[r].x;
        w[r].gamma = w[r].beta = w[r].rm = w[r].rv = w[r].save_mean = w[r].save_invstd = vec();
        w[r].dgamma = w[r].dbeta = vec();
        for (size_t i = 0; i < (size_t)HALF * PER_SAMPLE; i++)
            half_dy[i] = RANKS * dy[(size_t)r * HALF * PER_SAMPLE + i];
        CHECK(!test_upload(&be, &w[r].x, x + (size_t)r * HALF * PER_SAMPLE) &&
              !test_upload(&be, &w[r].dy, half_dy) && !test_upload(&be, &w[r].gamma, gamma) &&
              !test_upload(&be, &w[r].beta, beta) && !test_upload(&be, &w[r].rm, rm0) &&
              !test_upload(&be, &w[r].rv, rv0) && !be.ops->alloc(be.self, &w[r].y, "y") &&
              !be.ops->alloc(be.self, &w[r].dx, "dx") &&
              !be.ops->alloc(be.self, &w[r].save_mean, "m") &&
              !be.ops->alloc(be.self, &w[r].save_invstd, "i") &&
              !be.ops->alloc(be.self, &w[r].dgamma, "dg") &&
              !be.ops->alloc(be.self, &w[r].dbeta, "db"));
        CHECK(!bn_sync_create(&be, barrier_allreduce, &w[r].ctx, RANKS, C,
                              (int64_t)HALF * PER_SAMPLE, &w[r].sync));
    }
    if (check_failures)
        return;
    pthread_barrier_init(&barrier, NULL, RANKS);
    pthread_t threads[RANKS];
    for (int r = 0; r < RANKS; r++)
        CHECK(pthread_create(&threads[r], NULL, run_rank, &w[r]) == 0);
    for (int r = 0; r < RANKS; r++)
        pthread_join(threads[r], NULL);
    pthread_barrier_destroy(&barrier);
    for (int r = 0; r < RANKS; r++)
        if (w[r].status) {
            fprintf(stderr, "rank %d: %s\n", r, services_last_error());
            CHECK(!w[r].status);
        }
    if (check_failures)
        return;

    /* Compare. */
    static float want[N * PER_SAMPLE], got[N * PER_SAMPLE];
    float want_c[C], got_c[C], sum_c[C];
    CHECK(!test_download(&be, &ry, want));
    for (int r = 0; r < RANKS; r++)
        CHECK(!test_download(&be, &w[r].y, got + (size_t)r * HALF * PER_SAMPLE));
    expect_close("y", got, want, N * PER_SAMPLE);

    CHECK(!test_download(&be, &rdx, want));
    for (int r = 0; r < RANKS; r++) {
        float *part = got + (size_t)r * HALF * PER_SAMPLE;
        CHECK(!test_download(&be, &w[r].dx, part));
        for (size_t i = 0; i < (size_t)HALF * PER_SAMPLE; i++)
            part[i] /= RANKS;
    }
    expect_close("dx", got, want, N * PER_SAMPLE);

    struct {
        const char *what;
        tp_tensor *ref;
        size_t offset; /* of the rank's tensor in rank_work */
        int average;   /* parameter gradients: the trainer averages them over ranks */
    } vectors[] = {
        {"saved mean", &rsm, offsetof(rank_work, save_mean), 0},
        {"saved 1/sqrt(var + eps)", &rsi, offsetof(rank_work, save_invstd), 0},
        {"running mean", &rrm, offsetof(rank_work, rm), 0},
        {"running variance", &rrv, offsetof(rank_work, rv), 0},
        {"dgamma (averaged)", &rdg, offsetof(rank_work, dgamma), 1},
        {"dbeta (averaged)", &rdb, offsetof(rank_work, dbeta), 1},
    };
    for (size_t v = 0; v < sizeof vectors / sizeof vectors[0]; v++) {
        CHECK(!test_download(&be, vectors[v].ref, want_c));
        memset(sum_c, 0, sizeof sum_c);
        for (int r = 0; r < RANKS; r++) {
            CHECK(!test_download(&be, (tp_tensor *)((char *)&w[r] + vectors[v].offset), got_c));
            for (int c = 0; c < C; c++) {
                /* Statistics are computed once per rank from the same sums: equal. */
                CHECK(vectors[v].average || r == 0 || got_c[c] == sum_c[c]);
                sum_c[c] = vectors[v].average ? sum_c[c] + got_c[c] / RANKS : got_c[c];
            }
        }
        expect_close(vectors[v].what, sum_c, want_c, C);
    }

    for (int r = 0; r < RANKS; r++) {
        bn_sync_free(w[r].sync);
        tp_tensor *all[] = {&w[r].x, &w[r].dy, &w[r].y, &w[r].dx, &w[r].gamma, &w[r].beta,
                            &w[r].rm, &w[r].rv, &w[r].save_mean, &w[r].save_invstd,
                            &w[r].dgamma, &w[r].dbeta};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            be.ops->free(be.self, all[i]);
    }
    tp_tensor *refs[] = {&rx, &rdy, &ry, &rdx, &rg, &rb, &rrm, &rrv, &rsm, &rsi, &rdg, &rdb};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        be.ops->free(be.self, refs[i]);
}

int main(void)
{
    run_case("naive backend", naive_backend(0), TP_LAYOUT_NCHW);
    CHECK(naive_backend_live_allocations() == 0);

    registry *reg = registry_new();
    instance cpu_inst;
    tp_backend cpu;
    tp_status st = test_backend_cpu(reg, &cpu_inst, &cpu);
    if (st == TP_ERR_NOT_FOUND)
        printf("note: backend-cpu is not built; only the naive backend is checked\n");
    CHECK(st == TP_OK || st == TP_ERR_NOT_FOUND);
    if (st == TP_OK) {
        run_case("backend-cpu", cpu, TP_LAYOUT_NCHW);
        run_case("backend-cpu", cpu, TP_LAYOUT_NHWC);
        instance_destroy(&cpu_inst);
    }
    registry_free(reg);
    return CHECK_EXIT();
}
