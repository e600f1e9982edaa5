/* backend-cuda: batch normalisation (spatial: per channel over N, H, W) on cuDNN.
 *
 * The SDK's running statistics follow PyTorch: running = (1 - momentum) * running +
 * momentum * batch, with the unbiased batch variance for running_var. cuDNN's
 * cudnnBatchNormalizationForwardTraining computes exactly that when exponentialAverageFactor
 * = momentum (its running variance uses the n/(n-1) estimate, which is why PyTorch passes
 * its momentum straight through), normalises with the biased variance, and its
 * resultSaveInvVariance is 1/sqrt(var + eps): the SDK's save_invstd. So the SDK maps onto
 * cuDNN without adjustments.
 *
 * Tensors run in x's layout; y, dy or dx in the other layout go through a layout view.
 *
 * Mode: CUDNN_BATCHNORM_SPATIAL in fp32 precision (exact reductions); the faster
 * CUDNN_BATCHNORM_SPATIAL_PERSISTENT for NHWC tensors in the reduced precisions (cuDNN
 * documents that it may overflow on extreme inputs). Training and backward use the same
 * mode, as cuDNN requires. */
#include "config.h"

#include "backend_cuda.h"

static cudnnBatchNormMode_t bn_mode(const cuda_backend *b, const tp_tensor *x)
{
    if (b->precision != CUDA_PRECISION_FP32 && x->layout == TP_LAYOUT_NHWC)
        return CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
    return CUDNN_BATCHNORM_SPATIAL;
}

/* x is (N,C,H,W) (or (N,C)), `like` has x's shape, each vector has C elements. */
static tp_status check_args(cuda_backend *b, const char *op, const tp_bn_desc *d,
                            const tp_tensor *x, const char *like_name, const tp_tensor *like,
                            const char *const *vec_names, const tp_tensor *const *vecs,
                            int n_vecs)
{
    tp_status st;
    if (!d)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: NULL descriptor", op);
    if (!(d->eps > 0.0))
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: eps = %g must be positive", op,
                             d->eps);
    if ((st = cuda_need_f32(b, op, "x", x)))
        return st;
    if (x->ndim != 4 && x->ndim != 2)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: x must be 4-D (N,C,H,W) or 2-D",
                             op);
    if ((st = cuda_need_f32(b, op, like_name, like)) ||
        (st = cuda_need_same(b, op, "x", x, like_name, like)))
        return st;
    int64_t dims[4];
    cuda_dims4(x, dims);
    if (dims[0] * dims[2] * dims[3] < 2)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: batch normalisation needs more than one value per channel",
                             op);
    for (int i = 0; i < n_vecs; i++)
        if ((st = cuda_need_f32(b, op, vec_names[i], vecs[i])) ||
            (st = cuda_need_count(b, op, vec_names[i], vecs[i], dims[1])))
            return st;
    return TP_OK;
}

/* Descriptors for x, y (same shape) and the derived per-channel vectors. */
static tp_status make_descs(cuda_backend *b, const tp_tensor *x, const tp_tensor *y,
                            cudnnBatchNormMode_t mode, cudnnTensorDescriptor_t *xd,
                            cudnnTensorDescriptor_t *yd, cudnnTensorDescriptor_t *vd)
{
    tp_status st;
    *xd = *yd = *vd = NULL;
    if ((st = cuda_tensor_desc(b, x, xd)) || (st = cuda_tensor_desc(b, y, yd)) ||
        (st = CUDA_DNN(cudnnCreateTensorDescriptor(vd))) ||
        (st = CUDA_DNN(cudnnDeriveBNTensorDescriptor(*vd, *xd, mode))))
        return st;
    return TP_OK;
}

static void free_descs(cudnnTensorDescriptor_t a, cudnnTensorDescriptor_t c,
                       cudnnTensorDescriptor_t e)
{
    if (a)
        cudnnDestroyTensorDescriptor(a);
    if (c)
        cudnnDestroyTensorDescriptor(c);
    if (e)
        cudnnDestroyTensorDescriptor(e);
}

tp_status cuda_batchnorm_train(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                               tp_tensor *running_mean, tp_tensor *running_var,
                               tp_tensor *save_mean, tp_tensor *save_invstd)
{
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var",
                                        "save_mean", "save_invstd"};
    const tp_tensor *vecs[] = {gamma, beta, running_mean, running_var, save_mean, save_invstd};
    tp_status st = check_args(b, "batchnorm_train", d, x, "y", y, names, vecs, 6);
    if (st)
        return st;
    if (!(d->momentum >= 0.0 && d->momentum <= 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "batchnorm_train: momentum = %g outside [0, 1]", d->momentum);
    cudnnBatchNormMode_t mode = bn_mode(b, x);
    cudnnTensorDescriptor_t xd, yd, vd;
    tp_tensor yv;
    if ((st = cuda_view_begin(b, y, x->layout, 0, &yv)))
        return st;
    if (!(st = make_descs(b, x, &yv, mode, &xd, &yd, &vd))) {
        const float one = 1.0f, zero = 0.0f;
        st = CUDA_DNN(cudnnBatchNormalizationForwardTraining(
            b->cudnn, mode, &one, &zero, xd, x->data, yd, yv.data, vd, gamma->data, beta->data,
            d->momentum, running_mean->data, running_var->data, d->eps, save_mean->data,
            save_invstd->data));
    }
    free_descs(xd, yd, vd);
    tp_status st2 = cuda_view_end(b, &yv, y, st == TP_OK);
    return st ? st : st2;
}

tp_status cuda_batchnorm_infer(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *gamma, const tp_tensor *beta,
                               const tp_tensor *running_mean, const tp_tensor *running_var,
                               tp_tensor *y)
{
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
    const tp_tensor *vecs[] = {gamma, beta, running_mean, running_var};
    tp_status st;
    /* Inference works on a single value per channel too, so check it separately. */
    if (!d)
        return b->host->fail(b->host, TP_ERR_INVALID, "batchnorm_infer: NULL descriptor");
    if (!(d->eps > 0.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "batchnorm_infer: eps = %g must be positive", d->eps);
    if ((st = cuda_need_f32(b, "batchnorm_infer", "x", x)) ||
        (st = cuda_need_f32(b, "batchnorm_infer", "y", y)) ||
        (st = cuda_need_same(b, "batchnorm_infer", "x", x, "y", y)))
        return st;
    int64_t dims[4];
    cuda_dims4(x, dims);
    for (int i = 0; i < 4; i++)
        if ((st = cuda_need_f32(b, "batchnorm_infer", names[i], vecs[i])) ||
            (st = cuda_need_count(b, "batchnorm_infer", names[i], vecs[i], dims[1])))
            return st;
    cudnnTensorDescriptor_t xd, yd, vd;
    tp_tensor yv;
    if ((st = cuda_view_begin(b, y, x->layout, 0, &yv)))
        return st;
    if (!(st = make_descs(b, x, &yv, CUDNN_BATCHNORM_SPATIAL, &xd, &yd, &vd))) {
        const float one = 1.0f, zero = 0.0f;
        st = CUDA_DNN(cudnnBatchNormalizationForwardInference(
            b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x->data, yd, yv.data, vd,
            gamma->data, beta->data, running_mean->data, running_var->data, d->eps));
    }
    free_descs(xd, yd, vd);
    tp_status st2 = cuda_view_end(b, &yv, y, st == TP_OK);
    return st ? st : st2;
}

tp_status cuda_batchnorm_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                  const tp_tensor *dy, const tp_tensor *gamma,
                                  const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                  tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta)
{
    static const char *const names[] = {"gamma", "save_mean", "save_invstd", "dgamma", "dbeta"};
    const tp_tensor *vecs[] = {gamma, save_mean, save_invstd, dgamma, dbeta};
    tp_status st = check_args(b, "batchnorm_backward", d, x, "dy", dy, names, vecs, 5);
    if (st)
        return st;
    if ((st = cuda_need_f32(b, "batchnorm_backward", "dx", dx)) ||
        (st = cuda_need_same(b, "batchnorm_backward", "x", x, "dx", dx)))
        return st;
    cudnnBatchNormMode_t mode = bn_mode(b, x);
    cudnnTensorDescriptor_t xd = NULL, dyd = NULL, vd = NULL, dxd = NULL;
    tp_tensor dyv, dxv;
    if ((st = cuda_view_begin(b, dy, x->layout, 1, &dyv)))
        return st;
    if ((st = cuda_view_begin(b, dx, x->layout, 0, &dxv))) {
        cuda_view_end(b, &dyv, dy, 0);
        return st;
    }
    if (!(st = make_descs(b, x, &dyv, mode, &xd, &dyd, &vd)) &&
        !(st = cuda_tensor_desc(b, &dxv, &dxd))) {
        const float one = 1.0f, zero = 0.0f;
        /* beta 0 for data and parameters: outputs are overwritten. */
        st = CUDA_DNN(cudnnBatchNormalizationBackward(
            b->cudnn, mode, &one, &zero, &one, &zero, xd, x->data, dyd, dyv.data, dxd, dxv.data,
            vd, gamma->data, dgamma->data, dbeta->data, d->eps, save_mean->data,
            save_invstd->data));
    }
    free_descs(xd, dyd, vd);
    if (dxd)
        cudnnDestroyTensorDescriptor(dxd);
    tp_status st2 = cuda_view_end(b, &dxv, dx, st == TP_OK);
    tp_status st3 = cuda_view_end(b, &dyv, dy, 0);
    return st ? st : st2 ? st2 : st3;
}
