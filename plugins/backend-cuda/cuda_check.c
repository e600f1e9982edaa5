/* backend-cuda: checked library calls and argument validation shared by every operation. */
#include "config.h"

#include "backend_cuda.h"

#include <string.h>

/* The function name of a stringified call: "cudnnAddTensor(b->cudnn, ...)" -> 14 chars. */
static int call_name_length(const char *call)
{
    const char *paren = strchr(call, '(');
    return paren ? (int)(paren - call) : (int)strlen(call);
}

/* Only the file's base name: __FILE__ may carry the VPATH source directory. */
static const char *base_name(const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

tp_status cuda_check_rt(cuda_backend *b, cudaError_t e, const char *call, const char *file,
                        int line)
{
    if (e == cudaSuccess)
        return TP_OK;
    /* Clear the non-sticky error so the next call does not report it again. */
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
        return b->host->fail(b->host, TP_ERR_NOMEM,
                             "%.*s failed: %s (%s) at %s:%d: out of device memory; try a "
                             "smaller batch size or workspace_mb",
                             call_name_length(call), call, cudaGetErrorName(e),
                             cudaGetErrorString(e), base_name(file), line);
    return b->host->fail(b->host, TP_ERR_LIBRARY, "%.*s failed: %s (%s) at %s:%d",
                         call_name_length(call), call, cudaGetErrorName(e),
                         cudaGetErrorString(e), base_name(file), line);
}

tp_status cuda_check_dnn(cuda_backend *b, cudnnStatus_t s, const char *call, const char *file,
                         int line)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return TP_OK;
    if (s == CUDNN_STATUS_ALLOC_FAILED)
        return b->host->fail(b->host, TP_ERR_NOMEM,
                             "%.*s failed: %s at %s:%d: out of device memory; try a smaller "
                             "batch size",
                             call_name_length(call), call, cudnnGetErrorString(s),
                             base_name(file), line);
    return b->host->fail(b->host, TP_ERR_LIBRARY, "%.*s failed: %s at %s:%d",
                         call_name_length(call), call, cudnnGetErrorString(s), base_name(file),
                         line);
}

tp_status cuda_check_blas(cuda_backend *b, cublasStatus_t s, const char *call,
                          const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return TP_OK;
    return b->host->fail(b->host,
                         s == CUBLAS_STATUS_ALLOC_FAILED ? TP_ERR_NOMEM : TP_ERR_LIBRARY,
                         "%.*s failed: %s (%s) at %s:%d", call_name_length(call), call,
                         cublasGetStatusName(s), cublasGetStatusString(s), base_name(file),
                         line);
}

static const char *device_name(tp_device d)
{
    switch (d) {
    case TP_DEVICE_HOST: return "host";
    case TP_DEVICE_PINNED: return "pinned";
    case TP_DEVICE_DEVICE: return "device";
    }
    return "unknown";
}

tp_status cuda_need_dtype(cuda_backend *b, const char *op, const char *name, const tp_tensor *t,
                          tp_dtype dtype)
{
    if (!t || !t->data)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s: missing tensor or data", op,
                             name);
    if (t->dtype != dtype)
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                             "%s: %s has dtype %s; the CUDA backend needs %s here", op, name,
                             tp_dtype_name(t->dtype), tp_dtype_name(dtype));
    if (t->device != TP_DEVICE_DEVICE)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: %s is in %s memory; CUDA operations need device tensors "
                             "(copy() it first)",
                             op, name, device_name(t->device));
    if (t->ndim < 1 || t->ndim > TP_TENSOR_MAX_DIMS)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s has %d dimensions", op, name,
                             t->ndim);
    return TP_OK;
}

tp_status cuda_need_f32(cuda_backend *b, const char *op, const char *name, const tp_tensor *t)
{
    return cuda_need_dtype(b, op, name, t, TP_DTYPE_F32);
}

tp_status cuda_need_act(cuda_backend *b, const char *op, const char *name, const tp_tensor *t)
{
    if (t && t->dtype == TP_DTYPE_BF16)
        return cuda_need_dtype(b, op, name, t, TP_DTYPE_BF16);
    return cuda_need_dtype(b, op, name, t, TP_DTYPE_F32);
}

cudnnDataType_t cuda_dnn_type(tp_dtype dtype)
{
    switch (dtype) {
    case TP_DTYPE_BF16: return CUDNN_DATA_BFLOAT16;
    case TP_DTYPE_F16: return CUDNN_DATA_HALF;
    default: return CUDNN_DATA_FLOAT;
    }
}

void cuda_dims4(const tp_tensor *t, int64_t d[4])
{
    d[0] = d[1] = d[2] = d[3] = 1;
    if (t->ndim == 1) {
        d[1] = t->shape[0];
    } else {
        for (int i = 0; i < t->ndim && i < 4; i++)
            d[i] = t->shape[i];
    }
}

ck_shape cuda_ck_shape(const tp_tensor *t)
{
    int64_t d[4];
    cuda_dims4(t, d);
    ck_shape s = {d[0], d[1], d[2], d[3], t->ndim == 4 && t->layout == TP_LAYOUT_NHWC};
    return s;
}

tp_status cuda_need_same_dtype(cuda_backend *b, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *t)
{
    if (a->dtype == t->dtype)
        return TP_OK;
    return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s is %s but %s is %s", op, name_a,
                         tp_dtype_name(a->dtype), name_b, tp_dtype_name(t->dtype));
}

tp_status cuda_need_shape4(cuda_backend *b, const char *op, const char *name,
                           const tp_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t d[4];
    cuda_dims4(t, d);
    if (d[0] != n || d[1] != c || d[2] != h || d[3] != w)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: %s has shape (%lld,%lld,%lld,%lld), expected "
                             "(%lld,%lld,%lld,%lld)",
                             op, name, (long long)d[0], (long long)d[1], (long long)d[2],
                             (long long)d[3], (long long)n, (long long)c, (long long)h,
                             (long long)w);
    return TP_OK;
}

tp_status cuda_need_count(cuda_backend *b, const char *op, const char *name, const tp_tensor *t,
                          int64_t count)
{
    if (tp_tensor_count(t) != count)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %s has %lld elements, expected %lld",
                             op, name, (long long)tp_tensor_count(t), (long long)count);
    return TP_OK;
}

tp_status cuda_need_same(cuda_backend *b, const char *op, const char *name_a,
                         const tp_tensor *a, const char *name_b, const tp_tensor *t)
{
    int64_t da[4], db[4];
    cuda_dims4(a, da);
    cuda_dims4(t, db);
    if (memcmp(da, db, sizeof da) != 0 || tp_tensor_count(a) != tp_tensor_count(t))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: %s (%lld,%lld,%lld,%lld) and %s (%lld,%lld,%lld,%lld) "
                             "differ in shape",
                             op, name_a, (long long)da[0], (long long)da[1], (long long)da[2],
                             (long long)da[3], name_b, (long long)db[0], (long long)db[1],
                             (long long)db[2], (long long)db[3]);
    return cuda_need_same_dtype(b, op, name_a, a, name_b, t);
}

int cuda_same_memory_order(const tp_tensor *a, const tp_tensor *t)
{
    int64_t d[4];
    cuda_dims4(a, d);
    int a_nhwc = a->ndim == 4 && a->layout == TP_LAYOUT_NHWC;
    int t_nhwc = t->ndim == 4 && t->layout == TP_LAYOUT_NHWC;
    /* With one channel, or one pixel per channel, NCHW and NHWC order memory alike. */
    return a_nhwc == t_nhwc || d[1] == 1 || d[2] * d[3] == 1;
}

tp_status cuda_need_same_layout(cuda_backend *b, const char *op, const char *name_a,
                                const tp_tensor *a, const char *name_b, const tp_tensor *t)
{
    tp_status st = cuda_need_same(b, op, name_a, a, name_b, t);
    if (st)
        return st;
    if (!cuda_same_memory_order(a, t))
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                             "%s: %s and %s have different layouts; copy() one to the other's "
                             "layout first",
                             op, name_a, name_b);
    return TP_OK;
}

tp_status cuda_tensor_desc(cuda_backend *b, const tp_tensor *t, cudnnTensorDescriptor_t *out)
{
    int64_t d[4];
    cuda_dims4(t, d);
    for (int i = 0; i < 4; i++)
        if (d[i] < 1 || d[i] > INT32_MAX)
            return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                                 "tensor dimension %d is %lld: cuDNN needs 1..2^31-1", i,
                                 (long long)d[i]);
    tp_status st = CUDA_DNN(cudnnCreateTensorDescriptor(out));
    if (st)
        return st;
    cudnnTensorFormat_t fmt =
        t->ndim == 4 && t->layout == TP_LAYOUT_NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    st = CUDA_DNN(cudnnSetTensor4dDescriptor(*out, fmt, cuda_dnn_type(t->dtype), (int)d[0],
                                             (int)d[1], (int)d[2], (int)d[3]));
    if (st) {
        cudnnDestroyTensorDescriptor(*out);
        *out = NULL;
    }
    return st;
}
