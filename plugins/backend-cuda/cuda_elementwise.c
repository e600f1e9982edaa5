/* backend-cuda: elementwise operations, global average pooling, the ResNet shortcut-A
 * subsample/pad, and the arithmetic optimizers and metrics compose (axpby, scale,
 * sum_squares). All are our own kernels (cuda_kernels.cu) on the compute stream. ReLU and
 * add accept inputs in another layout than their output through layout views. ReLU, add,
 * the pool's x / dx and subsample/pad take f32 or bf16 activations (SDK API 1.5). */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

tp_status cuda_relu_forward(cuda_backend *b, const tp_tensor *x, tp_tensor *y)
{
    tp_status st;
    if ((st = cuda_need_act(b, "relu_forward", "x", x)) ||
        (st = cuda_need_act(b, "relu_forward", "y", y)) ||
        (st = cuda_need_same(b, "relu_forward", "x", x, "y", y)))
        return st;
    tp_tensor xv;
    if ((st = cuda_view_begin(b, x, y->layout, 1, &xv)))
        return st;
    st = CUDA_RT(ck_relu_forward((int)x->dtype, xv.data, y->data, tp_tensor_count(x),
                                 b->compute));
    tp_status st2 = cuda_view_end(b, &xv, x, 0);
    return st ? st : st2;
}

tp_status cuda_relu_backward(cuda_backend *b, const tp_tensor *y, const tp_tensor *dy,
                             tp_tensor *dx)
{
    tp_status st;
    if ((st = cuda_need_act(b, "relu_backward", "y", y)) ||
        (st = cuda_need_act(b, "relu_backward", "dy", dy)) ||
        (st = cuda_need_act(b, "relu_backward", "dx", dx)) ||
        (st = cuda_need_same(b, "relu_backward", "y", y, "dy", dy)) ||
        (st = cuda_need_same(b, "relu_backward", "y", y, "dx", dx)))
        return st;
    tp_tensor yv, dyv;
    if ((st = cuda_view_begin(b, y, dx->layout, 1, &yv)))
        return st;
    if (!(st = cuda_view_begin(b, dy, dx->layout, 1, &dyv))) {
        st = CUDA_RT(ck_relu_backward((int)y->dtype, yv.data, dyv.data, dx->data,
                                      tp_tensor_count(y), b->compute));
        tp_status st2 = cuda_view_end(b, &dyv, dy, 0);
        st = st ? st : st2;
    }
    tp_status st2 = cuda_view_end(b, &yv, y, 0);
    return st ? st : st2;
}

/* y = a + b, then ReLU when `relu`; an input in another layout goes through a view. */
static tp_status add_maybe_relu(cuda_backend *b, const char *op, const tp_tensor *a,
                                const tp_tensor *bt, tp_tensor *y, int relu)
{
    tp_status st;
    if ((st = cuda_need_act(b, op, "a", a)) || (st = cuda_need_act(b, op, "b", bt)) ||
        (st = cuda_need_act(b, op, "y", y)) || (st = cuda_need_same(b, op, "a", a, "b", bt)) ||
        (st = cuda_need_same(b, op, "a", a, "y", y)))
        return st;
    /* An input aliasing y has y's layout, so it is never copied: in-place adds stay safe. */
    tp_tensor av, bv;
    if ((st = cuda_view_begin(b, a, y->layout, 1, &av)))
        return st;
    if (!(st = cuda_view_begin(b, bt, y->layout, 1, &bv))) {
        int64_t n = tp_tensor_count(a);
        int dt = (int)a->dtype;
        st = CUDA_RT(relu ? ck_add_relu(dt, av.data, bv.data, y->data, n, b->compute)
                          : ck_add(dt, av.data, bv.data, y->data, n, b->compute));
        tp_status st2 = cuda_view_end(b, &bv, bt, 0);
        st = st ? st : st2;
    }
    tp_status st2 = cuda_view_end(b, &av, a, 0);
    return st ? st : st2;
}

tp_status cuda_add(cuda_backend *b, const tp_tensor *a, const tp_tensor *bt, tp_tensor *y)
{
    return add_maybe_relu(b, "add", a, bt, y, 0);
}

tp_status cuda_add_relu(cuda_backend *b, const tp_tensor *a, const tp_tensor *bt, tp_tensor *y)
{
    return add_maybe_relu(b, "add_relu", a, bt, y, 1);
}

tp_status cuda_global_avgpool_forward(cuda_backend *b, const tp_tensor *x, tp_tensor *y)
{
    tp_status st;
    if ((st = cuda_need_act(b, "global_avgpool_forward", "x", x)) ||
        (st = cuda_need_f32(b, "global_avgpool_forward", "y", y)))
        return st;
    if (x->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID, "global_avgpool_forward: x must be 4-D");
    if ((st = cuda_need_count(b, "global_avgpool_forward", "y", y, x->shape[0] * x->shape[1])))
        return st;
    if (x->shape[2] * x->shape[3] == 0)
        return b->host->fail(b->host, TP_ERR_INVALID, "global_avgpool_forward: empty image");
    return CUDA_RT(ck_gap_forward((int)x->dtype, x->data, cuda_ck_shape(x), y->data, b->compute));
}

tp_status cuda_global_avgpool_backward(cuda_backend *b, const tp_tensor *dy, tp_tensor *dx)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "global_avgpool_backward", "dy", dy)) ||
        (st = cuda_need_act(b, "global_avgpool_backward", "dx", dx)))
        return st;
    if (dx->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "global_avgpool_backward: dx must be 4-D");
    if ((st = cuda_need_count(b, "global_avgpool_backward", "dy", dy,
                              dx->shape[0] * dx->shape[1])))
        return st;
    return CUDA_RT(ck_gap_backward((int)dx->dtype, dy->data, dx->data, cuda_ck_shape(dx),
                                   b->compute));
}

static tp_status check_subsample(cuda_backend *b, const char *op, int stride,
                                 const tp_tensor *x, const char *xname, const tp_tensor *y,
                                 const char *yname)
{
    tp_status st;
    if ((st = cuda_need_act(b, op, xname, x)) || (st = cuda_need_act(b, op, yname, y)))
        return st;
    if ((st = cuda_need_same_dtype(b, op, xname, x, yname, y)))
        return st;
    if (stride < 1)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: stride %d must be >= 1", op, stride);
    if (x->ndim != 4 || y->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s and %s must be 4-D", op, xname,
                             yname);
    if (y->shape[1] < x->shape[1])
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: %s has %lld channels, fewer than %s's %lld", op, yname,
                             (long long)y->shape[1], xname, (long long)x->shape[1]);
    return cuda_need_shape4(b, op, yname, y, x->shape[0], y->shape[1],
                            (x->shape[2] + stride - 1) / stride,
                            (x->shape[3] + stride - 1) / stride);
}

tp_status cuda_subsample_pad_forward(cuda_backend *b, int stride, const tp_tensor *x,
                                     tp_tensor *y)
{
    tp_status st = check_subsample(b, "subsample_pad_forward", stride, x, "x", y, "y");
    if (st)
        return st;
    return CUDA_RT(ck_subsample_pad_forward((int)x->dtype, x->data, cuda_ck_shape(x), y->data,
                                            cuda_ck_shape(y), stride, b->compute));
}

tp_status cuda_subsample_pad_backward(cuda_backend *b, int stride, const tp_tensor *dy,
                                      tp_tensor *dx)
{
    tp_status st = check_subsample(b, "subsample_pad_backward", stride, dx, "dx", dy, "dy");
    if (st)
        return st;
    return CUDA_RT(ck_subsample_pad_backward((int)dy->dtype, dy->data, cuda_ck_shape(dy), dx->data,
                                             cuda_ck_shape(dx), stride, b->compute));
}

tp_status cuda_axpby(cuda_backend *b, double alpha, const tp_tensor *x, double beta,
                     tp_tensor *y)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "axpby", "x", x)) || (st = cuda_need_f32(b, "axpby", "y", y)) ||
        (st = cuda_need_same_layout(b, "axpby", "x", x, "y", y)))
        return st;
    return CUDA_RT(ck_axpby((float)alpha, x->data, (float)beta, y->data, tp_tensor_count(x),
                            b->compute));
}

tp_status cuda_scale(cuda_backend *b, double alpha, tp_tensor *y)
{
    tp_status st = cuda_need_f32(b, "scale", "y", y);
    if (st)
        return st;
    return CUDA_RT(ck_scale((float)alpha, y->data, tp_tensor_count(y), b->compute));
}

tp_status cuda_sum_squares(cuda_backend *b, const tp_tensor *x, tp_tensor *out)
{
    tp_status st;
    if ((st = cuda_need_f32(b, "sum_squares", "x", x)) ||
        (st = cuda_need_f32(b, "sum_squares", "out", out)) ||
        (st = cuda_need_count(b, "sum_squares", "out", out, 1)))
        return st;
    void *partials = NULL;
    if ((st = cuda_scratch(b, CK_REDUCE_BLOCKS * sizeof(double), &partials)))
        return st;
    return CUDA_RT(ck_sum_squares(x->data, tp_tensor_count(x), partials, out->data, b->compute));
}
