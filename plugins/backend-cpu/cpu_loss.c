/* backend-cpu: softmax cross-entropy with label smoothing, and top-k accuracy counting. Plain
 * loops in double precision per row: the logits are (batch, classes), small. */
#include "config.h"

#include <math.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

/* Checks logits (N,K) f32 and labels i32 with N entries in [0, K). */
static tp_status check_labels(cpu_backend *be, const char *op, const tp_tensor *logits,
                              const tp_tensor *labels)
{
    tp_status st;
    if ((st = cpu_check_f32(be, op, "logits", logits, 2)))
        return st;
    if (!labels || !labels->data || labels->dtype != TP_DTYPE_I32 ||
        tp_tensor_count(labels) != logits->shape[0])
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: labels must be an allocated i32 tensor of %lld "
                              "entries", op, (long long)logits->shape[0]);
    const int32_t *lab = labels->data;
    for (int64_t n = 0; n < logits->shape[0]; n++)
        if (lab[n] < 0 || lab[n] >= logits->shape[1])
            return be->host->fail(be->host, TP_ERR_INVALID,
                                  "backend-cpu %s: label %d of row %lld is outside [0, %lld)",
                                  op, (int)lab[n], (long long)n, (long long)logits->shape[1]);
    return TP_OK;
}

static tp_status check_scalar(cpu_backend *be, const char *op, const char *name,
                              const tp_tensor *t)
{
    tp_status st = cpu_check_f32(be, op, name, t, 0);
    if (st)
        return st;
    if (tp_tensor_count(t) != 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: %s must hold one element, not %lld", op, name,
                              (long long)tp_tensor_count(t));
    return TP_OK;
}

tp_status cpu_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                           double smoothing, double grad_scale, tp_tensor *loss,
                           tp_tensor *dlogits)
{
    cpu_backend *be = self;
    const char *op = "softmax_xent";
    tp_status st;
    if ((st = check_labels(be, op, logits, labels)) || (st = check_scalar(be, op, "loss", loss)))
        return st;
    if (dlogits && ((st = cpu_check_f32(be, op, "dlogits", dlogits, 2)) ||
                    (st = cpu_check_same_shape(be, op, "logits", logits, "dlogits", dlogits))))
        return st;
    if (!(smoothing >= 0 && smoothing <= 1))
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: label smoothing %g outside [0, 1]", op, smoothing);
    const int64_t N = logits->shape[0], K = logits->shape[1];
    const float *z = logits->data;
    const int32_t *lab = labels->data;
    float *dz = dlogits ? dlogits->data : NULL;
    const double off = smoothing / (double)K, on = 1.0 - smoothing + off;
    const double gscale = N > 0 ? grad_scale / (double)N : 0;
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *row = z + n * K;
        double mx = row[0];
        for (int64_t k = 1; k < K; k++)
            if (row[k] > mx)
                mx = row[k];
        double sum = 0;
        for (int64_t k = 0; k < K; k++)
            sum += exp(row[k] - mx);
        const double log_sum = log(sum);
        /* -sum_k t_k log p_k with log p_k = z_k - mx - log_sum and sum_k t_k = 1. */
        double row_loss = 0;
        for (int64_t k = 0; k < K; k++) {
            const double t = k == lab[n] ? on : off;
            row_loss -= t * (row[k] - mx - log_sum);
        }
        total += row_loss;
        if (dz)
            for (int64_t k = 0; k < K; k++) {
                const double p = exp(row[k] - mx - log_sum);
                const double t = k == lab[n] ? on : off;
                dz[n * K + k] = (float)((p - t) * gscale);
            }
    }
    *(float *)loss->data = (float)(N > 0 ? total / (double)N : 0);
    return TP_OK;
}

tp_status cpu_topk_correct(void *self, const tp_tensor *logits, const tp_tensor *labels, int k,
                           tp_tensor *correct)
{
    cpu_backend *be = self;
    const char *op = "topk_correct";
    tp_status st;
    if ((st = check_labels(be, op, logits, labels)) ||
        (st = check_scalar(be, op, "correct", correct)))
        return st;
    if (k < 1)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: k = %d must be >= 1",
                              op, k);
    const int64_t N = logits->shape[0], K = logits->shape[1];
    const float *z = logits->data;
    const int32_t *lab = labels->data;
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *row = z + n * K;
        const int64_t y = lab[n];
        /* The label's rank: classes strictly ahead of it, ties going to the lower index. */
        int64_t rank = 0;
        for (int64_t j = 0; j < K; j++)
            if (row[j] > row[y] || (row[j] == row[y] && j < y))
                rank++;
        if (rank < k)
            count++;
    }
    *(float *)correct->data = (float)count;
    return TP_OK;
}
