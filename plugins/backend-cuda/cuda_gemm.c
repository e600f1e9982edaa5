/* backend-cuda: the linear layer on cuBLAS.
 *
 * The SDK's matrices are row-major: x (N,K), w (M,K), y (N,M). cuBLAS is column-major, and
 * a row-major (R,C) matrix is the column-major (C,R) matrix with leading dimension C, so
 *   y = x w^T        is  y^T (M,N) = w^T(col K,M)^T * x^T(col K,N)     -> gemm(T, N)
 *   dx = dy w        is  dx^T (K,N) = w^T(col K,M) * dy^T(col M,N)     -> gemm(N, N)
 *   dw = dy^T x      is  dw^T (K,M) = x^T(col K,N) * (dy^T(col M,N))^T -> gemm(N, T)
 * The bias add and its gradient (column sums of dy) are small kernels. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

static cublasComputeType_t compute_type(const cuda_backend *b)
{
    switch (b->precision) {
    case CUDA_PRECISION_FP32: return CUBLAS_COMPUTE_32F;
    case CUDA_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case CUDA_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case CUDA_PRECISION_FP16: return CUBLAS_COMPUTE_32F_FAST_16F;
    }
    return CUBLAS_COMPUTE_32F;
}

/* cuBLAS's workspace: 32 MiB, what NVIDIA recommends for Hopper (4 MiB elsewhere). Ours
 * rather than cuBLAS's internal pool, so a recorded GEMM (API 1.4) has a fixed buffer and
 * never allocates inside a CUDA graph. */
#define BLAS_WORKSPACE_BYTES ((size_t)32 << 20)

tp_status cuda_gemm_setup(cuda_backend *b)
{
    cublasMath_t mode =
        b->precision == CUDA_PRECISION_FP32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH;
    tp_status st = CUDA_BLAS(cublasSetMathMode(b->cublas, mode));
    if (!st)
        st = CUDA_RT(cudaMalloc(&b->blas_workspace, BLAS_WORKSPACE_BYTES));
    /* After cublasSetStream, which would reset it to the default pool. */
    if (!st)
        st = CUDA_BLAS(cublasSetWorkspace(b->cublas, b->blas_workspace, BLAS_WORKSPACE_BYTES));
    return st;
}

/* C (col-major m x n, ld ldc) = op(A) op(B), all f32. */
static tp_status gemm(cuda_backend *b, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                      int64_t n, int64_t k, const float *a, int64_t lda, const float *bm,
                      int64_t ldb, float *c, int64_t ldc)
{
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX ||
        ldb > INT32_MAX || ldc > INT32_MAX)
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                             "linear: a dimension exceeds cuBLAS's 32-bit range");
    const float one = 1.0f, zero = 0.0f;
    return CUDA_BLAS(cublasGemmEx(b->cublas, ta, tb, (int)m, (int)n, (int)k, &one, a,
                                  CUDA_R_32F, (int)lda, bm, CUDA_R_32F, (int)ldb, &zero, c,
                                  CUDA_R_32F, (int)ldc, compute_type(b), CUBLAS_GEMM_DEFAULT));
}

/* Rows and columns of a matrix argument: (shape[0], count / shape[0]). */
static tp_status matrix_dims(cuda_backend *b, const char *op, const char *name,
                             const tp_tensor *t, int64_t *rows, int64_t *cols)
{
    tp_status st = cuda_need_f32(b, op, name, t);
    if (st)
        return st;
    if (t->ndim == 4 && t->layout == TP_LAYOUT_NHWC && t->shape[1] > 1 &&
        t->shape[2] * t->shape[3] > 1)
        return b->host->fail(b->host, TP_ERR_UNSUPPORTED,
                             "%s: %s is NHWC; flattening needs NCHW (or a 2-D tensor)", op,
                             name);
    *rows = t->shape[0];
    *cols = *rows ? tp_tensor_count(t) / *rows : 0;
    return TP_OK;
}

tp_status cuda_linear_forward(cuda_backend *b, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *bias, tp_tensor *y)
{
    int64_t n, k, m, kw, yn, ym;
    tp_status st;
    if ((st = matrix_dims(b, "linear_forward", "x", x, &n, &k)) ||
        (st = matrix_dims(b, "linear_forward", "w", w, &m, &kw)) ||
        (st = matrix_dims(b, "linear_forward", "y", y, &yn, &ym)))
        return st;
    if (kw != k || yn != n || ym != m)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "linear_forward: x (%lld,%lld), w (%lld,%lld), y (%lld,%lld): "
                             "expected w (M,K) and y (N,M) for x (N,K)",
                             (long long)n, (long long)k, (long long)m, (long long)kw,
                             (long long)yn, (long long)ym);
    if (bias && ((st = cuda_need_f32(b, "linear_forward", "bias", bias)) ||
                 (st = cuda_need_count(b, "linear_forward", "bias", bias, m))))
        return st;
    if (n == 0 || m == 0)
        return TP_OK;
    if (k == 0)
        st = CUDA_RT(ck_fill(y->data, n * m, CK_F32, 0.0, b->compute));
    else
        st = gemm(b, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, w->data, k, x->data, k, y->data, m);
    if (!st && bias)
        st = CUDA_RT(ck_add_row_bias(y->data, bias->data, n, m, b->compute));
    return st;
}

tp_status cuda_linear_backward(cuda_backend *b, const tp_tensor *x, const tp_tensor *w,
                               const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                               tp_tensor *db)
{
    int64_t n, k, m, kw, dn, dm;
    tp_status st;
    if ((st = matrix_dims(b, "linear_backward", "x", x, &n, &k)) ||
        (st = matrix_dims(b, "linear_backward", "w", w, &m, &kw)) ||
        (st = matrix_dims(b, "linear_backward", "dy", dy, &dn, &dm)))
        return st;
    if (kw != k || dn != n || dm != m)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "linear_backward: x (%lld,%lld), w (%lld,%lld), dy (%lld,%lld): "
                             "expected w (M,K) and dy (N,M) for x (N,K)",
                             (long long)n, (long long)k, (long long)m, (long long)kw,
                             (long long)dn, (long long)dm);
    if (dx && ((st = cuda_need_f32(b, "linear_backward", "dx", dx)) ||
               (st = cuda_need_count(b, "linear_backward", "dx", dx, n * k))))
        return st;
    if (dw && ((st = cuda_need_f32(b, "linear_backward", "dw", dw)) ||
               (st = cuda_need_count(b, "linear_backward", "dw", dw, m * k))))
        return st;
    if (db && ((st = cuda_need_f32(b, "linear_backward", "db", db)) ||
               (st = cuda_need_count(b, "linear_backward", "db", db, m))))
        return st;
    if (dx && n * k > 0) {
        if (m == 0)
            st = CUDA_RT(ck_fill(dx->data, n * k, CK_F32, 0.0, b->compute));
        else
            st = gemm(b, CUBLAS_OP_N, CUBLAS_OP_N, k, n, m, w->data, k, dy->data, m, dx->data, k);
        if (st)
            return st;
    }
    if (dw && m * k > 0) {
        if (n == 0)
            st = CUDA_RT(ck_fill(dw->data, m * k, CK_F32, 0.0, b->compute));
        else
            st = gemm(b, CUBLAS_OP_N, CUBLAS_OP_T, k, m, n, x->data, k, dy->data, m, dw->data, k);
        if (st)
            return st;
    }
    if (db && m > 0)
        st = CUDA_RT(ck_column_sums(dy->data, db->data, n, m, b->compute));
    return st;
}
