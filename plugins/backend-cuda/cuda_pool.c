/* backend-cuda: max and average pooling.
 *
 * On f32 tensors the forward passes and the average backward run on cuDNN (average =
 * CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING, the SDK's count_include_pad = false); on
 * bf16 activations (SDK API 1.5) they run on our own kernels, which take any storage type.
 * The max backward is always our own gather kernel, because the SDK fixes which input
 * receives the gradient on ties (the first maximum in row-major window order) and cuDNN
 * does not document its choice. Tensors run in x's layout; y, dy or dx in the other layout
 * go through layout views. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

static tp_status check_pool(cuda_backend *b, const char *op, const tp_pool_desc *d,
                            const tp_tensor *x, const tp_tensor *y, int64_t *oh, int64_t *ow)
{
    tp_status st;
    if (!d)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: NULL descriptor", op);
    if (d->mode != TP_POOL_MAX && d->mode != TP_POOL_AVG)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: unknown pooling mode %d", op,
                             (int)d->mode);
    if (d->kernel_h < 1 || d->kernel_w < 1 || d->stride_h < 1 || d->stride_w < 1 ||
        d->pad_h < 0 || d->pad_w < 0 || d->pad_h >= d->kernel_h || d->pad_w >= d->kernel_w)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: kernel %dx%d stride %dx%d pad %dx%d: kernel and stride must "
                             "be >= 1 and 0 <= pad < kernel",
                             op, d->kernel_h, d->kernel_w, d->stride_h, d->stride_w, d->pad_h,
                             d->pad_w);
    if ((st = cuda_need_act(b, op, "x", x)) || (st = cuda_need_act(b, op, "y", y)))
        return st;
    if ((st = cuda_need_same_dtype(b, op, "x", x, "y", y)))
        return st;
    if (x->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: x must be 4-D", op);
    *oh = (x->shape[2] + 2 * d->pad_h - d->kernel_h) / d->stride_h + 1;
    *ow = (x->shape[3] + 2 * d->pad_w - d->kernel_w) / d->stride_w + 1;
    if (*oh < 1 || *ow < 1)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: a %dx%d window does not fit the padded %lldx%lld input", op,
                             d->kernel_h, d->kernel_w, (long long)x->shape[2],
                             (long long)x->shape[3]);
    return cuda_need_shape4(b, op, "y", y, x->shape[0], x->shape[1], *oh, *ow);
}

static tp_status pool_desc(cuda_backend *b, const tp_pool_desc *d, cudnnPoolingDescriptor_t *pd)
{
    tp_status st = CUDA_DNN(cudnnCreatePoolingDescriptor(pd));
    if (st)
        return st;
    cudnnPoolingMode_t mode = d->mode == TP_POOL_MAX ? CUDNN_POOLING_MAX
                                                     : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
    st = CUDA_DNN(cudnnSetPooling2dDescriptor(*pd, mode, CUDNN_NOT_PROPAGATE_NAN, d->kernel_h,
                                              d->kernel_w, d->pad_h, d->pad_w, d->stride_h,
                                              d->stride_w));
    if (st) {
        cudnnDestroyPoolingDescriptor(*pd);
        *pd = NULL;
    }
    return st;
}

tp_status cuda_pool_forward(cuda_backend *b, const tp_pool_desc *d, const tp_tensor *x,
                            tp_tensor *y)
{
    int64_t oh, ow;
    tp_status st = check_pool(b, "pool_forward", d, x, y, &oh, &ow);
    if (st)
        return st;
    tp_tensor yv;
    if ((st = cuda_view_begin(b, y, x->layout, 0, &yv)))
        return st;
    if (x->dtype != TP_DTYPE_F32) {
        ck_pool p = {d->kernel_h, d->kernel_w, d->stride_h, d->stride_w, d->pad_h, d->pad_w};
        st = CUDA_RT(ck_pool_forward((int)x->dtype, x->data, cuda_ck_shape(x), yv.data,
                                     cuda_ck_shape(&yv), p, d->mode == TP_POOL_AVG, b->compute));
        tp_status st2 = cuda_view_end(b, &yv, y, st == TP_OK);
        return st ? st : st2;
    }
    cudnnPoolingDescriptor_t pd = NULL;
    cudnnTensorDescriptor_t xd = NULL, yd = NULL;
    if (!(st = pool_desc(b, d, &pd)) && !(st = cuda_tensor_desc(b, x, &xd)) &&
        !(st = cuda_tensor_desc(b, &yv, &yd))) {
        const float one = 1.0f, zero = 0.0f;
        st = CUDA_DNN(cudnnPoolingForward(b->cudnn, pd, &one, xd, x->data, &zero, yd, yv.data));
    }
    if (pd)
        cudnnDestroyPoolingDescriptor(pd);
    if (xd)
        cudnnDestroyTensorDescriptor(xd);
    if (yd)
        cudnnDestroyTensorDescriptor(yd);
    tp_status st2 = cuda_view_end(b, &yv, y, st == TP_OK);
    return st ? st : st2;
}

/* The backward pass once y, dy and dx share x's layout. */
static tp_status pool_backward_views(cuda_backend *b, const tp_pool_desc *d, const tp_tensor *x,
                                     const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    tp_status st;
    ck_pool p = {d->kernel_h, d->kernel_w, d->stride_h, d->stride_w, d->pad_h, d->pad_w};
    if (d->mode == TP_POOL_MAX) {
        if ((int64_t)p.kh * p.kw > CK_MAXPOOL_MAX_WINDOW)
            return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                                 "pool_backward: max pooling windows of %d x %d cells; at most "
                                 "%d are supported", p.kh, p.kw, CK_MAXPOOL_MAX_WINDOW);
        void *argmax;
        if ((st = cuda_scratch(b, (size_t)tp_tensor_count(dy), &argmax)))
            return st;
        return CUDA_RT(ck_maxpool_backward((int)x->dtype, x->data, cuda_ck_shape(x), dy->data,
                                           cuda_ck_shape(dy), dx->data, p, argmax, b->compute));
    }
    if (x->dtype != TP_DTYPE_F32)
        return CUDA_RT(ck_avgpool_backward((int)x->dtype, dy->data, cuda_ck_shape(dy), dx->data,
                                           cuda_ck_shape(dx), p, b->compute));
    cudnnPoolingDescriptor_t pd = NULL;
    cudnnTensorDescriptor_t xd = NULL, yd = NULL, dyd = NULL, dxd = NULL;
    if (!(st = pool_desc(b, d, &pd)) && !(st = cuda_tensor_desc(b, x, &xd)) &&
        !(st = cuda_tensor_desc(b, y, &yd)) && !(st = cuda_tensor_desc(b, dy, &dyd)) &&
        !(st = cuda_tensor_desc(b, dx, &dxd))) {
        const float one = 1.0f, zero = 0.0f;
        st = CUDA_DNN(cudnnPoolingBackward(b->cudnn, pd, &one, yd, y->data, dyd, dy->data, xd,
                                           x->data, &zero, dxd, dx->data));
    }
    if (pd)
        cudnnDestroyPoolingDescriptor(pd);
    cudnnTensorDescriptor_t all[] = {xd, yd, dyd, dxd};
    for (int i = 0; i < 4; i++)
        if (all[i])
            cudnnDestroyTensorDescriptor(all[i]);
    return st;
}

tp_status cuda_pool_backward(cuda_backend *b, const tp_pool_desc *d, const tp_tensor *x,
                             const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    int64_t oh, ow;
    tp_status st = check_pool(b, "pool_backward", d, x, y, &oh, &ow);
    if (st)
        return st;
    if ((st = cuda_need_act(b, "pool_backward", "dy", dy)) ||
        (st = cuda_need_act(b, "pool_backward", "dx", dx)) ||
        (st = cuda_need_shape4(b, "pool_backward", "dy", dy, x->shape[0], x->shape[1], oh, ow)) ||
        (st = cuda_need_shape4(b, "pool_backward", "dx", dx, x->shape[0], x->shape[1],
                               x->shape[2], x->shape[3])))
        return st;
    if ((st = cuda_need_same_dtype(b, "pool_backward", "x", x, "dy", dy)) ||
        (st = cuda_need_same_dtype(b, "pool_backward", "x", x, "dx", dx)))
        return st;
    /* The own kernels read y not at all; cuDNN's average backward reads it. */
    int need_y = d->mode != TP_POOL_MAX && x->dtype == TP_DTYPE_F32;
    tp_tensor yv = *y, dyv, dxv;
    tp_status st2;
    if (need_y && (st = cuda_view_begin(b, y, x->layout, 1, &yv)))
        return st;
    if ((st = cuda_view_begin(b, dy, x->layout, 1, &dyv)))
        goto end_y;
    if ((st = cuda_view_begin(b, dx, x->layout, 0, &dxv)))
        goto end_dy;
    st = pool_backward_views(b, d, x, &yv, &dyv, &dxv);
    st2 = cuda_view_end(b, &dxv, dx, st == TP_OK);
    st = st ? st : st2;
end_dy:
    st2 = cuda_view_end(b, &dyv, dy, 0);
    st = st ? st : st2;
end_y:
    if (need_y) {
        st2 = cuda_view_end(b, &yv, y, 0);
        st = st ? st : st2;
    }
    return st;
}
