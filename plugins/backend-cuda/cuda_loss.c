/* backend-cuda: softmax cross-entropy with label smoothing, and the top-k metric.
 *
 * Both write their results to device tensors and never wait for the device: the host sees
 * the loss only after copy() + event_sync(), as every other result. Labels are not checked
 * on the host (they live on the device); a label outside [0, K) turns its row's loss (and
 * so the mean) and gradient into NaN, and never counts as correct. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

static tp_status check_logits(cuda_backend *b, const char *op, const tp_tensor *logits,
                              const tp_tensor *labels, int64_t *n, int64_t *k)
{
    tp_status st;
    if ((st = cuda_need_f32(b, op, "logits", logits)) ||
        (st = cuda_need_dtype(b, op, "labels", labels, TP_DTYPE_I32)))
        return st;
    if (logits->ndim != 2)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: logits must be 2-D (N,K)", op);
    *n = logits->shape[0];
    *k = logits->shape[1];
    if (*n < 1 || *k < 1 || *n > INT32_MAX)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: logits (%lld,%lld) is empty", op,
                             (long long)*n, (long long)*k);
    return cuda_need_count(b, op, "labels", labels, *n);
}

tp_status cuda_softmax_xent(cuda_backend *b, const tp_tensor *logits, const tp_tensor *labels,
                            double smoothing, double grad_scale, tp_tensor *loss,
                            tp_tensor *dlogits)
{
    int64_t n, k;
    tp_status st = check_logits(b, "softmax_xent", logits, labels, &n, &k);
    if (st)
        return st;
    if ((st = cuda_need_f32(b, "softmax_xent", "loss", loss)) ||
        (st = cuda_need_count(b, "softmax_xent", "loss", loss, 1)))
        return st;
    if (dlogits && ((st = cuda_need_f32(b, "softmax_xent", "dlogits", dlogits)) ||
                    (st = cuda_need_same_layout(b, "softmax_xent", "logits", logits, "dlogits",
                                         dlogits))))
        return st;
    if (!(smoothing >= 0.0 && smoothing <= 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "softmax_xent: smoothing = %g outside [0, 1]", smoothing);
    void *row_loss = NULL;
    if ((st = cuda_scratch(b, (size_t)n * sizeof(float), &row_loss)))
        return st;
    return CUDA_RT(ck_softmax_xent(logits->data, labels->data, n, k, (float)smoothing,
                                   (float)grad_scale, row_loss, loss->data,
                                   dlogits ? dlogits->data : NULL, b->compute));
}

tp_status cuda_topk_correct(cuda_backend *b, const tp_tensor *logits, const tp_tensor *labels,
                            int k, tp_tensor *correct)
{
    int64_t n, classes;
    tp_status st = check_logits(b, "topk_correct", logits, labels, &n, &classes);
    if (st)
        return st;
    if ((st = cuda_need_f32(b, "topk_correct", "correct", correct)) ||
        (st = cuda_need_count(b, "topk_correct", "correct", correct, 1)))
        return st;
    if (k < 1)
        return b->host->fail(b->host, TP_ERR_INVALID, "topk_correct: k = %d must be >= 1", k);
    return CUDA_RT(
        ck_topk_correct(logits->data, labels->data, n, classes, k, correct->data, b->compute));
}
