/* Synchronised batch normalisation across ranks; the method is in batchnorm_sync.h. */
#include "batchnorm_sync.h"

#include <math.h>
#include <stdlib.h>

#include "services.h"

/* Per-channel host vectors (floats to and from the device, doubles for the reductions). */
enum { HOST_MEAN, HOST_INVSTD, HOST_GAMMA, HOST_DGAMMA, HOST_DBETA, HOST_A, HOST_B, HOST_V,
       HOST_RV, N_HOST };

struct bn_sync {
    tp_backend backend;
    bn_sync_allreduce_fn allreduce;
    void *ctx;
    int world;
    int max_channels;
    tp_tensor vec[3];   /* device (max_channels) vectors for statistics and coefficients */
    tp_tensor act;      /* device activation scratch for the dx correction */
    float *host[N_HOST];
    double *sums;       /* 2 * max_channels + 1 */
};

#define OPS (s->backend.ops)
#define BE (s->backend.self)
#define TRY(call)                                                                              \
    do {                                                                                       \
        if ((st = (call)) != TP_OK)                                                            \
            return st;                                                                         \
    } while (0)

void bn_sync_free(bn_sync *s)
{
    if (!s)
        return;
    for (int i = 0; i < 3; i++)
        if (s->vec[i].data)
            OPS->free(BE, &s->vec[i]);
    if (s->act.data)
        OPS->free(BE, &s->act);
    for (int i = 0; i < N_HOST; i++)
        free(s->host[i]);
    free(s->sums);
    free(s);
}

tp_status bn_sync_create(const tp_backend *backend, bn_sync_allreduce_fn allreduce, void *ctx,
                         int world_size, int max_channels, int64_t max_count, bn_sync **out)
{
    *out = NULL;
    bn_sync *s = calloc(1, sizeof *s);
    if (!s)
        return services_fail(TP_ERR_NOMEM, "sync batch norm: out of memory");
    s->backend = *backend;
    s->allreduce = allreduce;
    s->ctx = ctx;
    s->world = world_size;
    s->max_channels = max_channels;
    tp_status st = TP_OK;
    for (int i = 0; i < 3 && !st; i++) {
        s->vec[i] = tp_tensor_2d(TP_DTYPE_F32, max_channels, 0);
        if ((st = OPS->alloc(BE, &s->vec[i], "sync batch norm statistics")))
            s->vec[i].data = NULL;
        else
            st = OPS->fill(BE, &s->vec[i], 0.0);
    }
    if (!st) {
        s->act = tp_tensor_2d(TP_DTYPE_F32, max_count, 0);
        if ((st = OPS->alloc(BE, &s->act, "sync batch norm scratch")))
            s->act.data = NULL;
    }
    for (int i = 0; i < N_HOST && !st; i++)
        if (!(s->host[i] = malloc((size_t)max_channels * sizeof(float))))
            st = services_fail(TP_ERR_NOMEM, "sync batch norm: out of memory");
    if (!st && !(s->sums = malloc((2 * (size_t)max_channels + 1) * sizeof(double))))
        st = services_fail(TP_ERR_NOMEM, "sync batch norm: out of memory");
    if (st) {
        bn_sync_free(s);
        return st;
    }
    *out = s;
    return TP_OK;
}

/* A (C) view of device vector i. */
static tp_tensor vec_view(bn_sync *s, int i, int64_t C)
{
    tp_tensor v = s->vec[i];
    v.shape[0] = C;
    return v;
}

/* Copies between a (C) device tensor and host floats (the copy waits for the stream when
 * reading; callers sync once after a group of reads). */
static tp_status to_host(bn_sync *s, const tp_tensor *dev, float *host)
{
    tp_tensor h = *dev;
    h.device = TP_DEVICE_HOST;
    h.data = host;
    return OPS->copy(BE, &h, dev, TP_STREAM_COMPUTE);
}

static tp_status to_device(bn_sync *s, tp_tensor *dev, const float *host)
{
    tp_tensor h = *dev;
    h.device = TP_DEVICE_HOST;
    h.data = (void *)host;
    return OPS->copy(BE, dev, &h, TP_STREAM_COMPUTE);
}

static tp_status check_channels(bn_sync *s, const tp_tensor *x)
{
    if (x->shape[1] > s->max_channels || tp_tensor_count(x) > tp_tensor_count(&s->act))
        return services_fail(TP_ERR_INVALID, "sync batch norm: a %lld-channel input exceeds "
                             "the scratch sized at bind time", (long long)x->shape[1]);
    return TP_OK;
}

/* The biased variance behind a saved 1/sqrt(var + eps). */
static double variance_of(float invstd, double eps)
{
    double v = 1.0 / ((double)invstd * invstd) - eps;
    return v > 0 ? v : 0;
}

tp_status bn_sync_forward(bn_sync *s, const tp_bn_desc *d, const tp_tensor *x,
                          const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                          tp_tensor *running_mean, tp_tensor *running_var, tp_tensor *save_mean,
                          tp_tensor *save_invstd)
{
    tp_status st;
    TRY(check_channels(s, x));
    const int64_t C = x->shape[1];
    const double n = (double)(tp_tensor_count(x) / C);
    tp_tensor local_rm = vec_view(s, 0, C), local_rv = vec_view(s, 1, C);
    float *mean = s->host[HOST_MEAN], *invstd = s->host[HOST_INVSTD];

    /* Local statistics; the running statistics it moves are scratch copies. */
    TRY(OPS->batchnorm_train(BE, d, x, gamma, beta, y, &local_rm, &local_rv, save_mean,
                             save_invstd));
    TRY(to_host(s, save_mean, mean));
    TRY(to_host(s, save_invstd, invstd));
    TRY(OPS->sync(BE));

    /* Global mean, then the variance around it (each rank's spread plus its offset). */
    for (int64_t c = 0; c < C; c++)
        s->sums[c] = n * mean[c];
    s->sums[C] = n;
    TRY(s->allreduce(s->ctx, s->sums, (size_t)C + 1));
    const double total = s->sums[C];
    double *global_mean = s->sums + C + 1; /* second half of the buffer, C values */
    for (int64_t c = 0; c < C; c++)
        global_mean[c] = s->sums[c] / total;
    for (int64_t c = 0; c < C; c++) {
        double off = mean[c] - global_mean[c];
        s->sums[c] = n * (variance_of(invstd[c], d->eps) + off * off);
    }
    TRY(s->allreduce(s->ctx, s->sums, (size_t)C));

    float *gm = s->host[HOST_A], *gv = s->host[HOST_B], *ginv = s->host[HOST_V];
    float *rv = s->host[HOST_RV];
    for (int64_t c = 0; c < C; c++) {
        double var = s->sums[c] / total;
        gm[c] = (float)global_mean[c];
        gv[c] = (float)var;
        ginv[c] = (float)(1.0 / sqrt(var + d->eps));
        rv[c] = (float)(total > 1 ? var * total / (total - 1) : var);
    }
    tp_tensor g_mean = vec_view(s, 0, C), g_var = vec_view(s, 1, C), unbiased = vec_view(s, 2, C);
    TRY(to_device(s, &g_mean, gm));
    TRY(to_device(s, &g_var, gv));
    TRY(OPS->batchnorm_infer(BE, d, x, gamma, beta, &g_mean, &g_var, y));
    TRY(to_device(s, save_mean, gm));
    TRY(to_device(s, save_invstd, ginv));
    /* running = (1 - momentum) * running + momentum * global statistic */
    TRY(OPS->axpby(BE, d->momentum, &g_mean, 1.0 - d->momentum, running_mean));
    TRY(to_device(s, &unbiased, rv));
    TRY(OPS->axpby(BE, d->momentum, &unbiased, 1.0 - d->momentum, running_var));
    return TP_OK;
}

tp_status bn_sync_backward(bn_sync *s, const tp_bn_desc *d, const tp_tensor *x,
                           const tp_tensor *dy, const tp_tensor *gamma,
                           const tp_tensor *save_mean, const tp_tensor *save_invstd,
                           tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta, int need_dx)
{
    tp_status st;
    TRY(check_channels(s, x));
    TRY(OPS->batchnorm_backward(BE, d, x, dy, gamma, save_mean, save_invstd, dx, dgamma,
                                dbeta));
    if (!need_dx)
        return TP_OK;
    const int64_t C = x->shape[1];
    const double n = (double)(tp_tensor_count(x) / C);
    float *g = s->host[HOST_GAMMA], *inv = s->host[HOST_INVSTD];
    float *dg = s->host[HOST_DGAMMA], *db = s->host[HOST_DBETA];
    TRY(to_host(s, gamma, g));
    TRY(to_host(s, save_invstd, inv));
    TRY(to_host(s, dgamma, dg));
    TRY(to_host(s, dbeta, db));
    TRY(OPS->sync(BE));

    for (int64_t c = 0; c < C; c++) {
        s->sums[c] = db[c];
        s->sums[C + c] = dg[c];
    }
    s->sums[2 * C] = n;
    TRY(s->allreduce(s->ctx, s->sums, 2 * (size_t)C + 1));
    const double total = s->sums[2 * C];

    /* dx += beta' + gamma' * xhat, with xhat from the same (mean, var) the forward used. */
    float *gp = s->host[HOST_A], *bp = s->host[HOST_B], *var = s->host[HOST_V];
    for (int64_t c = 0; c < C; c++) {
        double k = (double)g[c] * inv[c];
        gp[c] = (float)(k * (dg[c] / n - s->sums[C + c] / total));
        bp[c] = (float)(k * (db[c] / n - s->sums[c] / total));
        var[c] = (float)variance_of(inv[c], d->eps);
    }
    tp_tensor gprime = vec_view(s, 0, C), bprime = vec_view(s, 1, C), v = vec_view(s, 2, C);
    TRY(to_device(s, &gprime, gp));
    TRY(to_device(s, &bprime, bp));
    TRY(to_device(s, &v, var));
    tp_tensor correction = *x;
    correction.device = TP_DEVICE_DEVICE;
    correction.data = s->act.data;
    TRY(OPS->batchnorm_infer(BE, d, x, &gprime, &bprime, save_mean, &v, &correction));
    return OPS->add(BE, dx, &correction, dx);
}
