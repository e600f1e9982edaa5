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
 * Channels-last tensors (NHWC, and 2-D (N, C)) run on the backend's own kernels
 * (cuda_bn_kernels.cu) unless `batchnorm = cudnn`: on an H200, cuDNN's NHWC fp32 batch norm
 * took 33 ms where the memory traffic needs about 0.5 ms. NCHW runs on cuDNN in
 * CUDNN_BATCHNORM_SPATIAL mode (the same mode for training and backward, as cuDNN requires).
 *
 * The API 1.2 fused forms (batch norm + ReLU) need no workspace: the backward pass masks dy
 * by the fused output y > 0. The own kernels fuse the ReLU; on cuDNN it is a separate pass.
 * The API 1.7 batch norm + residual + ReLU adds the residual in the own kernels'
 * normalisation pass (on cuDNN, add_relu's kernel afterwards). */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

/* Whether x goes to the backend's own kernels: channels-last memory order. */
static int own_kernels(const cuda_backend *b, const tp_tensor *x)
{
    return b->batchnorm == CUDA_BATCHNORM_AUTO &&
           (x->ndim == 2 || x->layout == TP_LAYOUT_NHWC);
}

/* Activations other than f32 run on the own kernels only. */
static tp_status need_kernels_for_dtype(cuda_backend *b, const char *op, const tp_tensor *x)
{
    if (x->dtype == TP_DTYPE_F32 || own_kernels(b, x))
        return TP_OK;
    return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                         "%s: %s activations need the channels-last layout and batchnorm = "
                         "auto (the backend's own kernels)",
                         op, tp_dtype_name(x->dtype));
}

/* x as rows of channels: N*H*W rows (N for a 2-D tensor) of C values. */
static void rows_of(const tp_tensor *x, int64_t *rows, int64_t *channels)
{
    int64_t dims[4];
    cuda_dims4(x, dims);
    *rows = dims[0] * dims[2] * dims[3];
    *channels = dims[1];
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
    if ((st = cuda_need_act(b, op, "x", x)) || (st = need_kernels_for_dtype(b, op, x)))
        return st;
    if (x->ndim != 4 && x->ndim != 2)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: x must be 4-D (N,C,H,W) or 2-D",
                             op);
    if ((st = cuda_need_act(b, op, like_name, like)) ||
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

/* Training forward; `residual` (API 1.7, with relu) is added before the ReLU. */
static tp_status bn_train(cuda_backend *b, const char *op, const tp_bn_desc *d,
                          const tp_tensor *x, const tp_tensor *residual, const tp_tensor *gamma,
                          const tp_tensor *beta, tp_tensor *y, tp_tensor *running_mean,
                          tp_tensor *running_var, tp_tensor *save_mean, tp_tensor *save_invstd,
                          int relu)
{
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var",
                                        "save_mean", "save_invstd"};
    const tp_tensor *vecs[] = {gamma, beta, running_mean, running_var, save_mean, save_invstd};
    tp_status st = check_args(b, op, d, x, "y", y, names, vecs, 6);
    if (st)
        return st;
    if (residual &&
        ((st = cuda_need_act(b, op, "residual", residual)) ||
         (st = cuda_need_same(b, op, "x", x, "residual", residual))))
        return st;
    if (residual && (tp_tensors_overlap(y, x) || tp_tensors_overlap(y, residual)))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: y shares memory with x or residual; it must not", op);
    if (!(d->momentum >= 0.0 && d->momentum <= 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: momentum = %g outside [0, 1]", op,
                             d->momentum);
    tp_tensor yv, rv = {0};
    if ((st = cuda_view_begin(b, y, x->layout, 0, &yv)))
        return st;
    if (residual && (st = cuda_view_begin(b, residual, x->layout, 1, &rv))) {
        cuda_view_end(b, &yv, y, 0);
        return st;
    }
    if (own_kernels(b, x)) {
        int64_t rows, c;
        void *part;
        rows_of(x, &rows, &c);
        if (!(st = cuda_scratch(b, ck_bn_scratch_bytes(rows, c), &part)))
            st = CUDA_RT(ck_bn_train((int)x->dtype, x->data, residual ? rv.data : NULL,
                                     yv.data, rows, c, gamma->data, beta->data,
                                     running_mean->data, running_var->data, save_mean->data,
                                     save_invstd->data, (float)d->momentum, (float)d->eps,
                                     relu, part, b->compute));
    } else {
        cudnnTensorDescriptor_t xd, yd, vd;
        if (!(st = make_descs(b, x, &yv, CUDNN_BATCHNORM_SPATIAL, &xd, &yd, &vd))) {
            const float one = 1.0f, zero = 0.0f;
            st = CUDA_DNN(cudnnBatchNormalizationForwardTraining(
                b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x->data, yd, yv.data, vd,
                gamma->data, beta->data, d->momentum, running_mean->data, running_var->data,
                d->eps, save_mean->data, save_invstd->data));
        }
        free_descs(xd, yd, vd);
        if (!st && residual) /* cuDNN's legacy batch norm has no residual: a second pass */
            st = CUDA_RT(ck_add_relu((int)x->dtype, yv.data, rv.data, yv.data,
                                     tp_tensor_count(x), b->compute));
        else if (!st && relu)
            st = CUDA_RT(ck_relu_forward((int)x->dtype, yv.data, yv.data, tp_tensor_count(x),
                                         b->compute));
    }
    tp_status st2 = residual ? cuda_view_end(b, &rv, residual, 0) : TP_OK;
    tp_status st3 = cuda_view_end(b, &yv, y, st == TP_OK);
    return st ? st : st2 ? st2 : st3;
}

tp_status cuda_batchnorm_train(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                               tp_tensor *running_mean, tp_tensor *running_var,
                               tp_tensor *save_mean, tp_tensor *save_invstd)
{
    return bn_train(b, "batchnorm_train", d, x, NULL, gamma, beta, y, running_mean,
                    running_var, save_mean, save_invstd, 0);
}

tp_status cuda_batchnorm_relu_train(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                    const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                    tp_tensor *running_mean, tp_tensor *running_var,
                                    tp_tensor *save_mean, tp_tensor *save_invstd)
{
    return bn_train(b, "batchnorm_relu_train", d, x, NULL, gamma, beta, y, running_mean,
                    running_var, save_mean, save_invstd, 1);
}

tp_status cuda_batchnorm_add_relu_train(cuda_backend *b, const tp_bn_desc *d,
                                        const tp_tensor *x, const tp_tensor *residual,
                                        const tp_tensor *gamma, const tp_tensor *beta,
                                        tp_tensor *y, tp_tensor *running_mean,
                                        tp_tensor *running_var, tp_tensor *save_mean,
                                        tp_tensor *save_invstd)
{
    if (!residual)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "batchnorm_add_relu_train: residual: missing tensor");
    return bn_train(b, "batchnorm_add_relu_train", d, x, residual, gamma, beta, y,
                    running_mean, running_var, save_mean, save_invstd, 1);
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
    if ((st = cuda_need_act(b, "batchnorm_infer", "x", x)) ||
        (st = cuda_need_act(b, "batchnorm_infer", "y", y)) ||
        (st = cuda_need_same(b, "batchnorm_infer", "x", x, "y", y)) ||
        (st = need_kernels_for_dtype(b, "batchnorm_infer", x)))
        return st;
    int64_t dims[4];
    cuda_dims4(x, dims);
    for (int i = 0; i < 4; i++)
        if ((st = cuda_need_f32(b, "batchnorm_infer", names[i], vecs[i])) ||
            (st = cuda_need_count(b, "batchnorm_infer", names[i], vecs[i], dims[1])))
            return st;
    tp_tensor yv;
    if ((st = cuda_view_begin(b, y, x->layout, 0, &yv)))
        return st;
    if (own_kernels(b, x)) {
        int64_t rows, c;
        rows_of(x, &rows, &c);
        st = CUDA_RT(ck_bn_infer((int)x->dtype, x->data, yv.data, rows, c, gamma->data,
                                 beta->data, running_mean->data, running_var->data,
                                 (float)d->eps, b->compute));
    } else {
        cudnnTensorDescriptor_t xd, yd, vd;
        if (!(st = make_descs(b, x, &yv, CUDNN_BATCHNORM_SPATIAL, &xd, &yd, &vd))) {
            const float one = 1.0f, zero = 0.0f;
            st = CUDA_DNN(cudnnBatchNormalizationForwardInference(
                b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x->data, yd, yv.data, vd,
                gamma->data, beta->data, running_mean->data, running_var->data, d->eps));
        }
        free_descs(xd, yd, vd);
    }
    tp_status st2 = cuda_view_end(b, &yv, y, st == TP_OK);
    return st ? st : st2;
}

/* cuDNN's backward on dy (already in x's layout); with a fused ReLU (yv non-NULL, in x's
 * layout) on dy masked by yv > 0 in a stream-ordered temporary. */
static tp_status cudnn_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                const tp_tensor *yv, const tp_tensor *dyv, const tp_tensor *gamma,
                                const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                tp_tensor *dxv, tp_tensor *dgamma, tp_tensor *dbeta)
{
    tp_status st;
    void *masked = NULL;
    const void *grad = dyv->data;
    if (yv) {
        if ((st = cuda_temp_alloc(b, b->compute, tp_tensor_bytes(dyv),
                                  "masked gradient of batchnorm_relu_backward",
                                  "a smaller batch size", &masked)))
            return st;
        if ((st = CUDA_RT(ck_relu_backward((int)x->dtype, yv->data, dyv->data, masked,
                                           tp_tensor_count(x), b->compute)))) {
            (void)cudaFreeAsync(masked, b->compute);
            return st;
        }
        grad = masked;
    }
    cudnnTensorDescriptor_t xd = NULL, dyd = NULL, vd = NULL, dxd = NULL;
    if (!(st = make_descs(b, x, dyv, CUDNN_BATCHNORM_SPATIAL, &xd, &dyd, &vd)) &&
        !(st = cuda_tensor_desc(b, dxv, &dxd))) {
        const float one = 1.0f, zero = 0.0f;
        /* beta 0 for data and parameters: outputs are overwritten. */
        st = CUDA_DNN(cudnnBatchNormalizationBackward(
            b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd, x->data, dyd, grad,
            dxd, dxv->data, vd, gamma->data, dgamma->data, dbeta->data, d->eps,
            save_mean->data, save_invstd->data));
    }
    free_descs(xd, dyd, vd);
    if (dxd)
        cudnnDestroyTensorDescriptor(dxd);
    if (masked)
        (void)cudaFreeAsync(masked, b->compute);
    return st;
}

/* Backward of batch norm, or of batch norm + ReLU when y (the fused output) is given. */
static tp_status bn_backward(cuda_backend *b, const char *op, const tp_bn_desc *d,
                             const tp_tensor *x, const tp_tensor *y, const tp_tensor *dy,
                             const tp_tensor *gamma, const tp_tensor *save_mean,
                             const tp_tensor *save_invstd, tp_tensor *dx, tp_tensor *dgamma,
                             tp_tensor *dbeta)
{
    static const char *const names[] = {"gamma", "save_mean", "save_invstd", "dgamma", "dbeta"};
    const tp_tensor *vecs[] = {gamma, save_mean, save_invstd, dgamma, dbeta};
    tp_status st = check_args(b, op, d, x, "dy", dy, names, vecs, 5);
    if (st)
        return st;
    if ((st = cuda_need_act(b, op, "dx", dx)) || (st = cuda_need_same(b, op, "x", x, "dx", dx)))
        return st;
    if (y && ((st = cuda_need_act(b, op, "y", y)) || (st = cuda_need_same(b, op, "x", x, "y", y))))
        return st;
    tp_tensor yv, dyv, dxv;
    int have_y = 0;
    if (y) {
        if ((st = cuda_view_begin(b, y, x->layout, 1, &yv)))
            return st;
        have_y = 1;
    }
    if ((st = cuda_view_begin(b, dy, x->layout, 1, &dyv))) {
        if (have_y)
            cuda_view_end(b, &yv, y, 0);
        return st;
    }
    if ((st = cuda_view_begin(b, dx, x->layout, 0, &dxv))) {
        cuda_view_end(b, &dyv, dy, 0);
        if (have_y)
            cuda_view_end(b, &yv, y, 0);
        return st;
    }
    if (own_kernels(b, x)) {
        int64_t rows, c;
        void *part;
        rows_of(x, &rows, &c);
        if (!(st = cuda_scratch(b, ck_bn_scratch_bytes(rows, c), &part)))
            st = CUDA_RT(ck_bn_backward((int)x->dtype, x->data, have_y ? yv.data : NULL,
                                        dyv.data, dxv.data,
                                        rows, c, gamma->data, save_mean->data,
                                        save_invstd->data, dgamma->data, dbeta->data, part,
                                        b->compute));
    } else {
        st = cudnn_backward(b, d, x, have_y ? &yv : NULL, &dyv, gamma, save_mean, save_invstd,
                            &dxv, dgamma, dbeta);
    }
    tp_status st2 = cuda_view_end(b, &dxv, dx, st == TP_OK);
    tp_status st3 = cuda_view_end(b, &dyv, dy, 0);
    tp_status st4 = have_y ? cuda_view_end(b, &yv, y, 0) : TP_OK;
    return st ? st : st2 ? st2 : st3 ? st3 : st4;
}

tp_status cuda_batchnorm_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                  const tp_tensor *dy, const tp_tensor *gamma,
                                  const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                  tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta)
{
    return bn_backward(b, "batchnorm_backward", d, x, NULL, dy, gamma, save_mean, save_invstd,
                       dx, dgamma, dbeta);
}

tp_status cuda_batchnorm_relu_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                       const tp_tensor *y, const tp_tensor *dy,
                                       const tp_tensor *gamma, const tp_tensor *save_mean,
                                       const tp_tensor *save_invstd, tp_tensor *dx,
                                       tp_tensor *dgamma, tp_tensor *dbeta)
{
    if (!y)
        return b->host->fail(b->host, TP_ERR_INVALID, "batchnorm_relu_backward: y is NULL");
    return bn_backward(b, "batchnorm_relu_backward", d, x, y, dy, gamma, save_mean,
                       save_invstd, dx, dgamma, dbeta);
}
