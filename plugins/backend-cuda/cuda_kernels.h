/* backend-cuda: launchers for the backend's own CUDA kernels (cuda_kernels.cu).
 *
 * Plain C interface so the host-side .c files, compiled by the C compiler, can call them.
 * Every launcher only enqueues work on `stream` (never synchronises) and returns the launch
 * status (cudaGetLastError). Arguments are validated by the callers in cuda_*.c. */
#ifndef TRAINPIPE_CUDA_KERNELS_H
#define TRAINPIPE_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A 4-D tensor's logical dimensions and memory order (nhwc = 0 for NCHW). */
typedef struct ck_shape {
    int64_t n, c, h, w;
    int nhwc;
} ck_shape;

/* Element dtypes for ck_fill, numerically equal to tp_dtype. */
enum { CK_F32 = 1, CK_F16 = 2, CK_BF16 = 3, CK_U8 = 4, CK_I32 = 5 };

/* dst = src with the memory order changed; elem_size 1, 2 or 4 bytes. */
cudaError_t ck_permute(const void *src, ck_shape src_shape, void *dst, int dst_nhwc,
                       int elem_size, cudaStream_t stream);
/* Every element of p (count elements of `dtype`) = value, converted to the dtype. */
cudaError_t ck_fill(void *p, int64_t count, int dtype, double value, cudaStream_t stream);

cudaError_t ck_relu_forward(const float *x, float *y, int64_t count, cudaStream_t stream);
cudaError_t ck_relu_backward(const float *y, const float *dy, float *dx, int64_t count,
                             cudaStream_t stream);
cudaError_t ck_add(const float *a, const float *b, float *y, int64_t count, cudaStream_t stream);
/* y = max(0, a + b); y may alias a or b. */
cudaError_t ck_add_relu(const float *a, const float *b, float *y, int64_t count,
                        cudaStream_t stream);
/* y = alpha * x + beta * y (y is not read when beta == 0). */
cudaError_t ck_axpby(float alpha, const float *x, float beta, float *y, int64_t count,
                     cudaStream_t stream);
cudaError_t ck_scale(float alpha, float *y, int64_t count, cudaStream_t stream);

/* Deterministic two-pass sum of squares: `partials` holds CK_REDUCE_BLOCKS doubles. */
#define CK_REDUCE_BLOCKS 256
cudaError_t ck_sum_squares(const float *x, int64_t count, double *partials, float *out,
                           cudaStream_t stream);

/* y (N,C) = mean over (H,W) of x; dx[n,c,h,w] = dy[n,c] / (H*W). */
cudaError_t ck_gap_forward(const float *x, ck_shape xs, float *y, cudaStream_t stream);
cudaError_t ck_gap_backward(const float *dy, float *dx, ck_shape dxs, cudaStream_t stream);

/* Max pooling backward as a gather: each dx cell sums dy over the windows whose first
 * maximum (row-major window order, padding excluded) is that cell; each window's maximum is
 * found once, into `argmax`. */
typedef struct ck_pool {
    int kh, kw, sh, sw, ph, pw;
} ck_pool;
/* argmax: scratch of one byte per output cell, so windows of at most CK_MAXPOOL_MAX_WINDOW
 * cells (255 marks a window wholly in the padding). */
#define CK_MAXPOOL_MAX_WINDOW 254
cudaError_t ck_maxpool_backward(const float *x, ck_shape xs, const float *dy, ck_shape ys,
                                float *dx, ck_pool p, uint8_t *argmax, cudaStream_t stream);

/* Linear helpers on row-major (rows, cols) matrices: y[r,c] += bias[c]; db[c] = sum_r dy[r,c]. */
cudaError_t ck_add_row_bias(float *y, const float *bias, int64_t rows, int64_t cols,
                            cudaStream_t stream);
cudaError_t ck_column_sums(const float *dy, float *db, int64_t rows, int64_t cols,
                           cudaStream_t stream);

/* Mean label-smoothed softmax cross-entropy. row_loss is scratch (n floats); loss (1 float)
 * gets the mean; dlogits (may be NULL) = grad_scale / n * (softmax - target). A label
 * outside [0, k) makes its row's loss and gradient NaN. */
cudaError_t ck_softmax_xent(const float *logits, const int32_t *labels, int64_t n, int64_t k,
                            float smoothing, float grad_scale, float *row_loss, float *loss,
                            float *dlogits, cudaStream_t stream);
/* correct (1 float) = rows whose label ranks < topk (ties go to the lower class index). */
cudaError_t ck_topk_correct(const float *logits, const int32_t *labels, int64_t n, int64_t k,
                            int topk, float *correct, cudaStream_t stream);

/* ResNet shortcut A (see backend.h): y from x, and dx from dy (both overwrite). */
cudaError_t ck_subsample_pad_forward(const float *x, ck_shape xs, float *y, ck_shape ys,
                                     int stride, cudaStream_t stream);
cudaError_t ck_subsample_pad_backward(const float *dy, ck_shape ys, float *dx, ck_shape xs,
                                      int stride, cudaStream_t stream);

/* dst (f32, ds) = scale * src (u8, ss); same logical dims. */
cudaError_t ck_convert_u8(const uint8_t *src, ck_shape ss, float scale, float *dst,
                          ck_shape ds, cudaStream_t stream);
/* Per sample: pad by `pad` cells of `fill`, crop at (offset_y, offset_x), then mirror when
 * flip[i] (flip may be NULL). The per-sample host arrays travel as kernel arguments. */
cudaError_t ck_crop_flip(const float *src, ck_shape ss, float *dst, ck_shape ds, int pad,
                         float fill, const int32_t *offset_y, const int32_t *offset_x,
                         const uint8_t *flip, cudaStream_t stream);
/* In place per image: (x - mean) / max(stddev, 1/sqrt(C*H*W)). */
cudaError_t ck_standardize(float *x, ck_shape s, cudaStream_t stream);
/* In place per channel: (x - mean[c]) / std[c]; mean and std are host arrays (C). */
cudaError_t ck_normalize_channels(float *x, ck_shape s, const float *mean, const float *std,
                                  cudaStream_t stream);

/* Fused optimizer steps, semantics as in backend.h. bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. */
cudaError_t ck_sgd_update(float *p, const float *g, float *v, int64_t count, float lr,
                          float momentum, float weight_decay, int nesterov,
                          cudaStream_t stream);
cudaError_t ck_adam_update(float *p, const float *g, float *m, float *v, int64_t count,
                           float lr, float beta1, float beta2, float eps, float weight_decay,
                           int decoupled, float bc1, float bc2, cudaStream_t stream);

/* Batch normalisation of channels-last data (cuda_bn_kernels.cu): x holds `rows` rows of
 * `c` channels (NHWC: rows = N*H*W; 2-D: rows = N); y, dy, dx and the fused output y have
 * x's memory order; per-channel vectors hold c floats. `scratch` holds at least
 * ck_bn_scratch_bytes(rows, c) bytes for per-block partial results. Semantics as the SDK's
 * batchnorm_train / _infer / _backward (running_var from the unbiased batch variance);
 * `relu` (train) applies ReLU to y, and a non-NULL y (backward) masks dy by y > 0. */
size_t ck_bn_scratch_bytes(int64_t rows, int64_t c);
cudaError_t ck_bn_train(const float *x, float *y, int64_t rows, int64_t c, const float *gamma,
                        const float *beta, float *running_mean, float *running_var,
                        float *save_mean, float *save_invstd, float momentum, float eps,
                        int relu, void *scratch, cudaStream_t stream);
cudaError_t ck_bn_infer(const float *x, float *y, int64_t rows, int64_t c, const float *gamma,
                        const float *beta, const float *mean, const float *var, float eps,
                        cudaStream_t stream);
cudaError_t ck_bn_backward(const float *x, const float *y, const float *dy, float *dx,
                           int64_t rows, int64_t c, const float *gamma, const float *save_mean,
                           const float *save_invstd, float *dgamma, float *dbeta,
                           void *scratch, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_CUDA_KERNELS_H */
