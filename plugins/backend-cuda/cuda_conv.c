/* backend-cuda: convolution forward, backward-data and backward-filter on cuDNN's
 * convolution API (cudnnConvolution*, still shipped in cuDNN 9).
 *
 * Each convolution runs in the layout of its x-side tensor (x, or dx for backward-data);
 * a y-side tensor in the other layout is staged through a layout view (cuda_memory.c).
 * Should cuDNN offer no algorithm in that layout, the operation retries once in the other
 * layout, all tensors going through views (slower, but it runs).
 * Weights are always OIHW in the SDK. For NCHW activations cuDNN reads them directly; for
 * NHWC activations they are viewed as OHWI (cuDNN's NHWC filter format, the one its fast
 * tensor-core kernels expect), and filter gradients come back the same way.
 *
 * Algorithms are chosen once per shape (see cuda_algo_cache.c): with
 * `benchmark` by cudnnFind* (times every candidate; blocks the host on first use of a
 * shape), otherwise by the cudnnGet*_v7 heuristics; the first candidate whose math type
 * the `precision` permits and whose workspace fits workspace_mb wins. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

#include <string.h>

#define MAX_CANDIDATES 16

typedef struct conv_descs {
    cudnnTensorDescriptor_t x; /* the input side: x or dx */
    cudnnTensorDescriptor_t y; /* the output side: y or dy */
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
} conv_descs;

typedef struct conv_candidate {
    int algo;
    cudnnStatus_t status;
    cudnnMathType_t math;
} conv_candidate;

static const char *op_name(cuda_conv_op op)
{
    switch (op) {
    case CUDA_CONV_FWD: return "conv_forward";
    case CUDA_CONV_BWD_DATA: return "conv_backward_data";
    case CUDA_CONV_BWD_FILTER: return "conv_backward_filter";
    }
    return "conv";
}

/* The math type requested on the descriptor for the configured precision. */
static cudnnMathType_t precision_math(const cuda_backend *b)
{
    switch (b->precision) {
    case CUDA_PRECISION_FP32: return CUDNN_FMA_MATH;
    case CUDA_PRECISION_TF32: return CUDNN_TENSOR_OP_MATH;
    case CUDA_PRECISION_BF16:
    case CUDA_PRECISION_FP16: return CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    }
    return CUDNN_FMA_MATH;
}

/* The math type to run a candidate with, or -1 when the precision forbids it. fp32 pins
 * every algorithm to FMA math (CUDNN_DEFAULT_MATH would permit TF32 on Ampere and later). */
static int resolve_math(const cuda_backend *b, cudnnMathType_t m)
{
    switch (b->precision) {
    case CUDA_PRECISION_FP32:
        return (m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH) ? (int)CUDNN_FMA_MATH : -1;
    case CUDA_PRECISION_TF32:
        return m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? -1 : (int)m;
    case CUDA_PRECISION_BF16:
    case CUDA_PRECISION_FP16:
        return (int)m;
    }
    return -1;
}

static void descs_free(conv_descs *cd)
{
    if (cd->x)
        cudnnDestroyTensorDescriptor(cd->x);
    if (cd->y)
        cudnnDestroyTensorDescriptor(cd->y);
    if (cd->w)
        cudnnDestroyFilterDescriptor(cd->w);
    if (cd->conv)
        cudnnDestroyConvolutionDescriptor(cd->conv);
    memset(cd, 0, sizeof *cd);
}

/* Checks x (N,Cin,H,W), w (Cout,Cin,KH,KW), y (N,Cout,OH,OW) against the descriptor and
 * fills the algorithm cache key. x is the tensor whose layout the convolution runs in. */
static tp_status check_shapes(cuda_backend *b, cuda_conv_op op, const tp_conv_desc *d,
                              const tp_tensor *x, const char *xname, const tp_tensor *w,
                              const char *wname, const tp_tensor *y, const char *yname,
                              cuda_algo_key *key)
{
    const char *name = op_name(op);
    tp_status st;
    /* Activations f32 or bf16 (SDK API 1.5), weights always f32: with bf16 activations the
     * convolution runs on a bf16 copy of the weights (and a bf16 weight gradient, converted
     * back), cuDNN's pseudo-bf16 configuration with f32 accumulation. */
    if ((st = cuda_need_act(b, name, xname, x)) || (st = cuda_need_f32(b, name, wname, w)) ||
        (st = cuda_need_act(b, name, yname, y)))
        return st;
    if ((st = cuda_need_same_dtype(b, name, xname, x, yname, y)))
        return st;
    if (!d)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: NULL descriptor", name);
    if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s, %s and %s must be 4-D", name,
                             xname, wname, yname);
    if (d->stride_h < 1 || d->stride_w < 1 || d->dilation_h < 1 || d->dilation_w < 1 ||
        d->pad_h < 0 || d->pad_w < 0)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: stride %dx%d, dilation %dx%d, pad %dx%d: strides and "
                             "dilations must be >= 1, pads >= 0",
                             name, d->stride_h, d->stride_w, d->dilation_h, d->dilation_w,
                             d->pad_h, d->pad_w);
    int64_t n = x->shape[0], cin = x->shape[1], h = x->shape[2], wd = x->shape[3];
    int64_t cout = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    if (w->shape[1] != cin)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: %s has %lld input channels but %s has %lld (weights are OIHW)",
                             name, wname, (long long)w->shape[1], xname, (long long)cin);
    int64_t oh = (h + 2 * d->pad_h - (int64_t)d->dilation_h * (kh - 1) - 1) / d->stride_h + 1;
    int64_t ow = (wd + 2 * d->pad_w - (int64_t)d->dilation_w * (kw - 1) - 1) / d->stride_w + 1;
    if (oh < 1 || ow < 1)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: a %lldx%lld kernel does not fit the padded %lldx%lld input",
                             name, (long long)kh, (long long)kw, (long long)h, (long long)wd);
    if ((st = cuda_need_shape4(b, name, yname, y, n, cout, oh, ow)))
        return st;
    int64_t dims[] = {n, cin, h, wd, cout, kh, kw};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] < 1 || dims[i] > INT32_MAX)
            return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                                 "%s: dimension %lld out of cuDNN's range", name,
                                 (long long)dims[i]);
    memset(key, 0, sizeof *key);
    key->op = (int32_t)op;
    key->n = (int32_t)n;
    key->c = (int32_t)cin;
    key->h = (int32_t)h;
    key->w = (int32_t)wd;
    key->k = (int32_t)cout;
    key->kh = (int32_t)kh;
    key->kw = (int32_t)kw;
    key->oh = (int32_t)oh;
    key->ow = (int32_t)ow;
    key->pad_h = d->pad_h;
    key->pad_w = d->pad_w;
    key->stride_h = d->stride_h;
    key->stride_w = d->stride_w;
    key->dil_h = d->dilation_h;
    key->dil_w = d->dilation_w;
    key->x_layout = (int32_t)x->layout;
    key->y_layout = (int32_t)x->layout; /* y is staged into x's layout */
    key->dtype = (int32_t)x->dtype;
    return TP_OK;
}

static tp_status descs_make(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *x,
                            const tp_tensor *w, const tp_tensor *y, conv_descs *cd)
{
    memset(cd, 0, sizeof *cd);
    tp_status st;
    if ((st = cuda_tensor_desc(b, x, &cd->x)) || (st = cuda_tensor_desc(b, y, &cd->y)))
        goto fail;
    if ((st = CUDA_DNN(cudnnCreateFilterDescriptor(&cd->w))))
        goto fail;
    cudnnTensorFormat_t wfmt = w->layout == TP_LAYOUT_NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    if ((st = CUDA_DNN(cudnnSetFilter4dDescriptor(cd->w, cuda_dnn_type(w->dtype), wfmt,
                                                  (int)w->shape[0], (int)w->shape[1],
                                                  (int)w->shape[2], (int)w->shape[3]))))
        goto fail;
    if ((st = CUDA_DNN(cudnnCreateConvolutionDescriptor(&cd->conv))))
        goto fail;
    if ((st = CUDA_DNN(cudnnSetConvolution2dDescriptor(
             cd->conv, d->pad_h, d->pad_w, d->stride_h, d->stride_w, d->dilation_h,
             d->dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT))))
        goto fail;
    if ((st = CUDA_DNN(cudnnSetConvolutionMathType(cd->conv, precision_math(b)))))
        goto fail;
    return TP_OK;
fail:
    descs_free(cd);
    return st;
}

static tp_status list_candidates(cuda_backend *b, cuda_conv_op op, const conv_descs *cd,
                                 conv_candidate *out, int *n_out)
{
    int got = 0;
    tp_status st = TP_OK;
    *n_out = 0;
    switch (op) {
    case CUDA_CONV_FWD: {
        cudnnConvolutionFwdAlgoPerf_t perf[MAX_CANDIDATES];
        if (b->benchmark)
            st = CUDA_DNN(cudnnFindConvolutionForwardAlgorithm(b->cudnn, cd->x, cd->w, cd->conv,
                                                               cd->y, MAX_CANDIDATES, &got,
                                                               perf));
        else
            st = CUDA_DNN(cudnnGetConvolutionForwardAlgorithm_v7(
                b->cudnn, cd->x, cd->w, cd->conv, cd->y, MAX_CANDIDATES, &got, perf));
        for (int i = 0; !st && i < got; i++)
            out[i] = (conv_candidate){(int)perf[i].algo, perf[i].status, perf[i].mathType};
        break;
    }
    case CUDA_CONV_BWD_DATA: {
        cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_CANDIDATES];
        if (b->benchmark)
            st = CUDA_DNN(cudnnFindConvolutionBackwardDataAlgorithm(
                b->cudnn, cd->w, cd->y, cd->conv, cd->x, MAX_CANDIDATES, &got, perf));
        else
            st = CUDA_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                b->cudnn, cd->w, cd->y, cd->conv, cd->x, MAX_CANDIDATES, &got, perf));
        for (int i = 0; !st && i < got; i++)
            out[i] = (conv_candidate){(int)perf[i].algo, perf[i].status, perf[i].mathType};
        break;
    }
    case CUDA_CONV_BWD_FILTER: {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_CANDIDATES];
        if (b->benchmark)
            st = CUDA_DNN(cudnnFindConvolutionBackwardFilterAlgorithm(
                b->cudnn, cd->x, cd->y, cd->conv, cd->w, MAX_CANDIDATES, &got, perf));
        else
            st = CUDA_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                b->cudnn, cd->x, cd->y, cd->conv, cd->w, MAX_CANDIDATES, &got, perf));
        for (int i = 0; !st && i < got; i++)
            out[i] = (conv_candidate){(int)perf[i].algo, perf[i].status, perf[i].mathType};
        break;
    }
    }
    if (!st)
        *n_out = got;
    return st;
}

static cudnnStatus_t workspace_size(cuda_backend *b, cuda_conv_op op, const conv_descs *cd,
                                    int algo, size_t *bytes)
{
    switch (op) {
    case CUDA_CONV_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(b->cudnn, cd->x, cd->w, cd->conv, cd->y,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case CUDA_CONV_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            b->cudnn, cd->w, cd->y, cd->conv, cd->x, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    case CUDA_CONV_BWD_FILTER:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            b->cudnn, cd->x, cd->y, cd->conv, cd->w, (cudnnConvolutionBwdFilterAlgo_t)algo,
            bytes);
    }
    return CUDNN_STATUS_BAD_PARAM;
}

/* The cached or newly chosen algorithm for key; leaves the descriptor's math type set. */
static tp_status select_algo(cuda_backend *b, cuda_conv_op op, const cuda_algo_key *key,
                             const conv_descs *cd, cuda_algo_choice *out)
{
    const cuda_algo_choice *hit = cuda_algo_cache_get(b, key);
    if (hit && hit->algo < 0)
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                             "%s: no cuDNN algorithm for this shape (remembered)", op_name(op));
    if (hit) {
        *out = *hit;
        return CUDA_DNN(cudnnSetConvolutionMathType(cd->conv, (cudnnMathType_t)out->math_type));
    }
    conv_candidate cand[MAX_CANDIDATES];
    int n = 0;
    if (list_candidates(b, op, cd, cand, &n) != TP_OK)
        n = 0; /* reported below as "no algorithm", which lets the caller fall back */
    for (int i = 0; i < n; i++) {
        if (cand[i].status != CUDNN_STATUS_SUCCESS)
            continue;
        int math = resolve_math(b, cand[i].math);
        if (math < 0)
            continue;
        if (cudnnSetConvolutionMathType(cd->conv, (cudnnMathType_t)math) != CUDNN_STATUS_SUCCESS)
            continue;
        size_t ws = 0;
        if (workspace_size(b, op, cd, cand[i].algo, &ws) != CUDNN_STATUS_SUCCESS)
            continue;
        if (ws > b->workspace_limit)
            continue;
        out->algo = cand[i].algo;
        out->math_type = math;
        out->workspace = ws;
        b->host->log(b->host, TP_LOG_DEBUG, "cuda",
                     "%s: x (%d,%d,%d,%d) w (%d,%d,%d,%d): algorithm %d, math type %d, "
                     "workspace %zu bytes (%s)",
                     op_name(op), key->n, key->c, key->h, key->w, key->k, key->c, key->kh,
                     key->kw, out->algo, math, ws, b->benchmark ? "measured" : "heuristic");
        return cuda_algo_cache_put(b, key, out);
    }
    /* Remember the failure too, so a fallback layout does not ask again every step. */
    cuda_algo_choice none = {-1, 0, 0};
    if (cuda_algo_cache_put(b, key, &none))
        return TP_ERR_NOMEM;
    return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                         "%s: no cuDNN algorithm for x (%d,%d,%d,%d) w (%d,%d,%d,%d) stride "
                         "%dx%d pad %dx%d with precision %d within workspace_mb = %zu (%d "
                         "candidates); raise workspace_mb or change precision",
                         op_name(op), key->n, key->c, key->h, key->w, key->k, key->c, key->kh,
                         key->kw, key->stride_h, key->stride_w, key->pad_h, key->pad_w,
                         (int)b->precision, b->workspace_limit >> 20, n);
}

/* Ends the views that began (have[i]), storing outputs when all went well; keeps the first
 * error. */
static tp_status end_views(cuda_backend *b, tp_status st, tp_tensor *views,
                           const tp_tensor *const *orig, const int *store, const int *have,
                           int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (!have[i])
            continue;
        tp_status st2 = cuda_view_end(b, &views[i], orig[i], store[i] && st == TP_OK);
        st = st ? st : st2;
    }
    return st;
}

/* Forward in layout L: x, w (as OHWI when L is NHWC) and y are all viewed in L. */
static tp_status forward_in(cuda_backend *b, const tp_conv_desc *d, cuda_algo_key key,
                            tp_layout L, const tp_tensor *x, const tp_tensor *w,
                            const tp_tensor *bias, tp_tensor *y)
{
    const tp_tensor *orig[3] = {x, w, y};
    const int load[3] = {1, 1, 0}, store[3] = {0, 0, 1};
    tp_tensor v[3];
    int have[3] = {0, 0, 0};
    conv_descs cd = {0};
    cudnnTensorDescriptor_t bd = NULL;
    tp_status st = TP_OK;
    for (int i = 0; i < 3 && !st; i++)
        if (!(st = cuda_view_begin_as(b, orig[i], L, x->dtype, load[i], &v[i])))
            have[i] = 1;
    if (st)
        goto done;
    key.x_layout = key.y_layout = (int32_t)L;
    cuda_algo_choice algo;
    void *ws = NULL;
    if ((st = descs_make(b, d, &v[0], &v[1], &v[2], &cd)) ||
        (st = select_algo(b, CUDA_CONV_FWD, &key, &cd, &algo)) ||
        (st = cuda_workspace(b, algo.workspace, &ws)))
        goto done;
    const float one = 1.0f, zero = 0.0f;
    if ((st = CUDA_DNN(cudnnConvolutionForward(b->cudnn, &one, cd.x, v[0].data, cd.w, v[1].data,
                                               cd.conv, (cudnnConvolutionFwdAlgo_t)algo.algo,
                                               ws, algo.workspace, &zero, cd.y, v[2].data))))
        goto done;
    if (bias && v[2].dtype != TP_DTYPE_F32) { /* cuDNN adds no f32 bias to bf16 */
        st = CUDA_RT(ck_add_channel_bias((int)v[2].dtype, v[2].data, cuda_ck_shape(&v[2]),
                                         bias->data, b->compute));
    } else if (bias) {
        if ((st = cuda_tensor_desc(b, bias, &bd)))
            goto done;
        st = CUDA_DNN(cudnnAddTensor(b->cudnn, &one, bd, bias->data, &one, cd.y, v[2].data));
    }
done:
    st = end_views(b, st, v, orig, store, have, 3);
    if (bd)
        cudnnDestroyTensorDescriptor(bd);
    descs_free(&cd);
    return st;
}

/* Backward-data in layout L; with `accumulate` (API 1.7) added into dx (cuDNN's beta = 1). */
static tp_status backward_data_in(cuda_backend *b, const tp_conv_desc *d, cuda_algo_key key,
                                  tp_layout L, const tp_tensor *dy, const tp_tensor *w,
                                  tp_tensor *dx, int accumulate)
{
    const tp_tensor *orig[3] = {dx, w, dy};
    const int load[3] = {accumulate, 1, 1}, store[3] = {1, 0, 0};
    tp_tensor v[3];
    int have[3] = {0, 0, 0};
    conv_descs cd = {0};
    tp_status st = TP_OK;
    for (int i = 0; i < 3 && !st; i++)
        if (!(st = cuda_view_begin_as(b, orig[i], L, dx->dtype, load[i], &v[i])))
            have[i] = 1;
    if (st)
        goto done;
    key.x_layout = key.y_layout = (int32_t)L;
    cuda_algo_choice algo;
    void *ws = NULL;
    if ((st = descs_make(b, d, &v[0], &v[1], &v[2], &cd)) ||
        (st = select_algo(b, CUDA_CONV_BWD_DATA, &key, &cd, &algo)) ||
        (st = cuda_workspace(b, algo.workspace, &ws)))
        goto done;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    st = CUDA_DNN(cudnnConvolutionBackwardData(b->cudnn, &one, cd.w, v[1].data, cd.y, v[2].data,
                                               cd.conv, (cudnnConvolutionBwdDataAlgo_t)algo.algo,
                                               ws, algo.workspace, &beta, cd.x, v[0].data));
done:
    st = end_views(b, st, v, orig, store, have, 3);
    descs_free(&cd);
    return st;
}

/* Backward-filter in layout L (dw computed as OHWI when L is NHWC, then viewed back). */
static tp_status backward_filter_in(cuda_backend *b, const tp_conv_desc *d, cuda_algo_key key,
                                    tp_layout L, const tp_tensor *x, const tp_tensor *dy,
                                    tp_tensor *dw, tp_tensor *dbias)
{
    const tp_tensor *orig[3] = {x, dw, dy};
    const int load[3] = {1, 0, 1}, store[3] = {0, 1, 0};
    tp_tensor v[3];
    int have[3] = {0, 0, 0};
    conv_descs cd = {0};
    cudnnTensorDescriptor_t bd = NULL;
    tp_status st = TP_OK;
    for (int i = 0; i < 3 && !st; i++)
        if (!(st = cuda_view_begin_as(b, orig[i], L, x->dtype, load[i], &v[i])))
            have[i] = 1;
    if (st)
        goto done;
    key.x_layout = key.y_layout = (int32_t)L;
    cuda_algo_choice algo;
    void *ws = NULL;
    if ((st = descs_make(b, d, &v[0], &v[1], &v[2], &cd)) ||
        (st = select_algo(b, CUDA_CONV_BWD_FILTER, &key, &cd, &algo)) ||
        (st = cuda_workspace(b, algo.workspace, &ws)))
        goto done;
    const float one = 1.0f, zero = 0.0f;
    if ((st = CUDA_DNN(cudnnConvolutionBackwardFilter(
             b->cudnn, &one, cd.x, v[0].data, cd.y, v[2].data, cd.conv,
             (cudnnConvolutionBwdFilterAlgo_t)algo.algo, ws, algo.workspace, &zero, cd.w,
             v[1].data))))
        goto done;
    if (dbias && v[2].dtype != TP_DTYPE_F32) {
        st = CUDA_RT(ck_channel_sums((int)v[2].dtype, v[2].data, cuda_ck_shape(&v[2]),
                                     dbias->data, b->compute));
    } else if (dbias) {
        if ((st = cuda_tensor_desc(b, dbias, &bd)))
            goto done;
        st = CUDA_DNN(cudnnConvolutionBackwardBias(b->cudnn, &one, cd.y, v[2].data, &zero, bd,
                                                   dbias->data));
    }
done:
    st = end_views(b, st, v, orig, store, have, 3);
    if (bd)
        cudnnDestroyTensorDescriptor(bd);
    descs_free(&cd);
    return st;
}

/* Each operation runs in its x-side tensor's layout; when cuDNN has no algorithm for that
 * layout (TP_ERR_UNSUPPORTED), it retries once in the other one through layout views. */
static tp_layout other_layout(tp_layout l)
{
    return l == TP_LAYOUT_NHWC ? TP_LAYOUT_NCHW : TP_LAYOUT_NHWC;
}

tp_status cuda_conv_forward(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *x,
                            const tp_tensor *w, const tp_tensor *bias, tp_tensor *y)
{
    cuda_algo_key key;
    tp_status st = check_shapes(b, CUDA_CONV_FWD, d, x, "x", w, "w", y, "y", &key);
    if (st)
        return st;
    if (bias && ((st = cuda_need_f32(b, "conv_forward", "bias", bias)) ||
                 (st = cuda_need_count(b, "conv_forward", "bias", bias, w->shape[0]))))
        return st;
    st = forward_in(b, d, key, x->layout, x, w, bias, y);
    if (st == TP_ERR_UNSUPPORTED)
        st = forward_in(b, d, key, other_layout(x->layout), x, w, bias, y);
    return st;
}

static tp_status backward_data(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *dy,
                               const tp_tensor *w, tp_tensor *dx, int accumulate)
{
    cuda_algo_key key;
    tp_status st = check_shapes(b, CUDA_CONV_BWD_DATA, d, dx, "dx", w, "w", dy, "dy", &key);
    if (st)
        return st;
    st = backward_data_in(b, d, key, dx->layout, dy, w, dx, accumulate);
    if (st == TP_ERR_UNSUPPORTED)
        st = backward_data_in(b, d, key, other_layout(dx->layout), dy, w, dx, accumulate);
    return st;
}

tp_status cuda_conv_backward_data(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *dy,
                                  const tp_tensor *w, tp_tensor *dx)
{
    return backward_data(b, d, dy, w, dx, 0);
}

tp_status cuda_conv_backward_data_add(cuda_backend *b, const tp_conv_desc *d,
                                      const tp_tensor *dy, const tp_tensor *w, tp_tensor *dx)
{
    tp_status st = backward_data(b, d, dy, w, dx, 1);
    if (st != TP_ERR_LIBRARY)
        return st;
    /* cuDNN refused to blend (beta = 1) with the algorithm it chose: the result into a
     * stream-ordered temporary, then an addition. */
    tp_tensor t = *dx;
    if ((st = cuda_temp_alloc(b, b->compute, tp_tensor_bytes(dx), "conv_backward_data_add",
                              "a smaller batch size", &t.data)))
        return st;
    st = cuda_conv_backward_data(b, d, dy, w, &t);
    if (!st)
        st = CUDA_RT(ck_add((int)dx->dtype, dx->data, t.data, dx->data, tp_tensor_count(dx),
                            b->compute));
    cudaFreeAsync(t.data, b->compute);
    return st;
}

tp_status cuda_conv_backward_filter(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *x,
                                    const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias)
{
    cuda_algo_key key;
    tp_status st = check_shapes(b, CUDA_CONV_BWD_FILTER, d, x, "x", dw, "dw", dy, "dy", &key);
    if (st)
        return st;
    if (dbias && ((st = cuda_need_f32(b, "conv_backward_filter", "dbias", dbias)) ||
                  (st = cuda_need_count(b, "conv_backward_filter", "dbias", dbias,
                                        dw->shape[0]))))
        return st;
    st = backward_filter_in(b, d, key, x->layout, x, dy, dw, dbias);
    if (st == TP_ERR_UNSUPPORTED)
        st = backward_filter_in(b, d, key, other_layout(x->layout), x, dy, dw, dbias);
    return st;
}
