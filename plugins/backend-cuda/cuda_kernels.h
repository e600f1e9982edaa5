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

/* Element dtypes for ck_fill, numerically equal to tp_dtype. The launchers below that take
 * a `dtype` accept the activation dtypes CK_F32 and CK_BF16 (SDK API 1.5) for their
 * activation tensors and return cudaErrorInvalidValue for any other; they compute in f32
 * and round bf16 results to nearest even. */
enum { CK_F32 = 1, CK_F16 = 2, CK_BF16 = 3, CK_U8 = 4, CK_I32 = 5 };

/* dst = src with the memory order changed; elem_size 1, 2 or 4 bytes. */
cudaError_t ck_permute(const void *src, ck_shape src_shape, void *dst, int dst_nhwc,
                       int elem_size, cudaStream_t stream);
/* Every element of p (count elements of `dtype`) = value, converted to the dtype. */
cudaError_t ck_fill(void *p, int64_t count, int dtype, double value, cudaStream_t stream);

/* dst (dst_dtype, memory order dst_nhwc) = src (src_dtype, ss): f32 <-> bf16, with or
 * without a layout change. */
cudaError_t ck_convert(const void *src, int src_dtype, ck_shape ss, void *dst, int dst_dtype,
                       int dst_nhwc, cudaStream_t stream);

/* Elementwise on `count` elements of `dtype` in one memory order; outputs may alias inputs. */
cudaError_t ck_relu_forward(int dtype, const void *x, void *y, int64_t count,
                            cudaStream_t stream);
/* dx = y > 0 ? dy : 0. */
cudaError_t ck_relu_backward(int dtype, const void *y, const void *dy, void *dx, int64_t count,
                             cudaStream_t stream);
cudaError_t ck_add(int dtype, const void *a, const void *b, void *y, int64_t count,
                   cudaStream_t stream);
/* y = max(0, a + b). */
cudaError_t ck_add_relu(int dtype, const void *a, const void *b, void *y, int64_t count,
                        cudaStream_t stream);
/* y = alpha * x + beta * y (y is not read when beta == 0). */
cudaError_t ck_axpby(float alpha, const float *x, float beta, float *y, int64_t count,
                     cudaStream_t stream);
cudaError_t ck_scale(float alpha, float *y, int64_t count, cudaStream_t stream);

/* Deterministic two-pass sum of squares: `partials` holds CK_REDUCE_BLOCKS doubles. */
#define CK_REDUCE_BLOCKS 256
cudaError_t ck_sum_squares(const float *x, int64_t count, double *partials, float *out,
                           cudaStream_t stream);

/* y (N,C, f32) = mean over (H,W) of x (dtype); dx[n,c,h,w] (dtype) = dy[n,c] (f32) / (H*W). */
cudaError_t ck_gap_forward(int dtype, const void *x, ck_shape xs, float *y, cudaStream_t stream);
cudaError_t ck_gap_backward(int dtype, const float *dy, void *dx, ck_shape dxs,
                            cudaStream_t stream);

/* Max pooling backward as a gather: each dx cell sums dy over the windows whose first
 * maximum (row-major window order, padding excluded) is that cell; each window's maximum is
 * found once, into `argmax`. */
typedef struct ck_pool {
    int kh, kw, sh, sw, ph, pw;
} ck_pool;
/* Pooling forward (max, or average excluding padding) with 0 <= pad < kernel, and the
 * average's backward as a gather; x, y, dy, dx of `dtype`, any memory order. */
cudaError_t ck_pool_forward(int dtype, const void *x, ck_shape xs, void *y, ck_shape ys,
                            ck_pool p, int average, cudaStream_t stream);
cudaError_t ck_avgpool_backward(int dtype, const void *dy, ck_shape ys, void *dx, ck_shape xs,
                                ck_pool p, cudaStream_t stream);
/* argmax: scratch of one byte per output cell, so windows of at most CK_MAXPOOL_MAX_WINDOW
 * cells (255 marks a window wholly in the padding). */
#define CK_MAXPOOL_MAX_WINDOW 254
cudaError_t ck_maxpool_backward(int dtype, const void *x, ck_shape xs, const void *dy,
                                ck_shape ys, void *dx, ck_pool p, uint8_t *argmax,
                                cudaStream_t stream);

/* Convolution bias where cuDNN takes no mixed types: y (dtype, any order) += bias[c] (f32);
 * db[c] (f32) = sum over (n, h, w) of dy (dtype), in a fixed order. */
cudaError_t ck_add_channel_bias(int dtype, void *y, ck_shape s, const float *bias,
                                cudaStream_t stream);
cudaError_t ck_channel_sums(int dtype, const void *dy, ck_shape s, float *db,
                            cudaStream_t stream);

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
cudaError_t ck_subsample_pad_forward(int dtype, const void *x, ck_shape xs, void *y,
                                     ck_shape ys, int stride, cudaStream_t stream);
cudaError_t ck_subsample_pad_backward(int dtype, const void *dy, ck_shape ys, void *dx,
                                      ck_shape xs, int stride, cudaStream_t stream);

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

/* Fused optimizer steps, semantics as in backend.h. bc1 = 1 - beta1^t, bc2 = 1 - beta2^t.
 * With `scalars` (device memory, API 1.6) lr (SGD) or lr, bc1, bc2 (Adam) are read from it
 * instead, and with `gate` nothing is written unless *gate is finite; both may be NULL. */
cudaError_t ck_sgd_update(float *p, const float *g, float *v, int64_t count, float lr,
                          float momentum, float weight_decay, int nesterov,
                          const float *scalars, const float *gate, cudaStream_t stream);
cudaError_t ck_adam_update(float *p, const float *g, float *m, float *v, int64_t count,
                           float lr, float beta1, float beta2, float eps, float weight_decay,
                           int decoupled, float bc1, float bc2, const float *scalars,
                           const float *gate, cudaStream_t stream);

/* One tensor of a grouped update (API 1.7): SGD uses s0 = velocity, Adam s0 = m, s1 = v. */
typedef struct ck_update_tensor {
    float *p;
    const float *g;
    float *s0;
    float *s1;
    int64_t count;
    float wd;
} ck_update_tensor;
/* The API 1.6 updates (scalars and gate required) over n tensors in a few launches, each
 * element rounded exactly as ck_sgd_update / ck_adam_update round it. */
cudaError_t ck_sgd_update_group(const ck_update_tensor *ts, int n, float momentum,
                                int nesterov, const float *scalars, const float *gate,
                                cudaStream_t stream);
cudaError_t ck_adam_update_group(const ck_update_tensor *ts, int n, float beta1, float beta2,
                                 float eps, int decoupled, const float *scalars,
                                 const float *gate, cudaStream_t stream);
/* API 1.8: *out = 0 when every element of the n tensors ts[i].g (ts[i].count elements each;
 * the other fields unused) is finite, NaN otherwise; a few launches, as the updates. */
cudaError_t ck_check_finite_group(const ck_update_tensor *ts, int n, float *out,
                                  cudaStream_t stream);

/* Batch normalisation of channels-last data (cuda_bn_kernels.cu): x holds `rows` rows of
 * `c` channels (NHWC: rows = N*H*W; 2-D: rows = N); y, dy, dx and the fused output y have
 * x's memory order; per-channel vectors hold c floats. `scratch` holds at least
 * ck_bn_scratch_bytes(rows, c) bytes for per-block partial results. Semantics as the SDK's
 * batchnorm_train / _infer / _backward (running_var from the unbiased batch variance);
 * `relu` (train) applies ReLU to y, and a non-NULL y (backward) masks dy by y > 0. A
 * non-NULL `residual` (train; x's dtype and order) is added before the ReLU (API 1.7). */
size_t ck_bn_scratch_bytes(int64_t rows, int64_t c);
/* x, y, dy, dx are of `dtype` (CK_F32 or CK_BF16); everything else is f32. */
cudaError_t ck_bn_train(int dtype, const void *x, const void *residual, void *y, int64_t rows,
                        int64_t c, const float *gamma, const float *beta, float *running_mean,
                        float *running_var, float *save_mean, float *save_invstd,
                        float momentum, float eps, int relu, void *scratch,
                        cudaStream_t stream);
cudaError_t ck_bn_infer(int dtype, const void *x, void *y, int64_t rows, int64_t c,
                        const float *gamma, const float *beta, const float *mean,
                        const float *var, float eps, cudaStream_t stream);
cudaError_t ck_bn_backward(int dtype, const void *x, const void *y, const void *dy, void *dx,
                           int64_t rows, int64_t c, const float *gamma, const float *save_mean,
                           const float *save_invstd, float *dgamma, float *dbeta,
                           void *scratch, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_CUDA_KERNELS_H */
