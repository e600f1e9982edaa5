/* backend-cuda: shared state and internal interfaces of the CUDA compute backend.
 *
 * One cuda_backend per instance: the GPU it runs on, two non-blocking streams (compute and
 * copy), the cuDNN and cuBLAS handles bound to the compute stream, two stream-ordered
 * arenas (cuDNN workspace, small scratch), and the convolution algorithm cache. Each
 * cuda_*.c file implements one group of tp_backend_ops; backend_cuda.c wires them into the
 * ops table, holding `lock` around every call so several host threads may share an
 * instance (the producer copies on the copy stream while the trainer computes). */
#ifndef TRAINPIPE_BACKEND_CUDA_H
#define TRAINPIPE_BACKEND_CUDA_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <trainpipe/trainpipe.h>

#include "cuda_kernels.h"

/* The `precision` parameter, in the order of its choices. */
typedef enum cuda_precision {
    CUDA_PRECISION_FP32 = 0, /* strict fp32 math: no tensor cores */
    CUDA_PRECISION_TF32 = 1, /* fp32 I/O, TF32 tensor-core math */
    CUDA_PRECISION_BF16 = 2, /* fp32 I/O, convolutions/GEMMs may down-convert to bf16/fp16 */
    CUDA_PRECISION_FP16 = 3  /* fp32 I/O, convolutions/GEMMs may down-convert to fp16 */
} cuda_precision;

/* The `batchnorm` parameter, in the order of its choices. */
typedef enum cuda_batchnorm_impl {
    CUDA_BATCHNORM_AUTO = 0, /* own kernels for channels-last tensors, cuDNN for NCHW */
    CUDA_BATCHNORM_CUDNN = 1 /* cuDNN for every layout */
} cuda_batchnorm_impl;

/* What the host's parameter table writes (see backend_cuda.c). */
typedef struct cuda_config {
    int64_t device;
    int precision; /* cuda_precision */
    int benchmark;
    int64_t workspace_mb;
    int batchnorm; /* cuda_batchnorm_impl */
    int activations; /* 0 auto, 1 f32 */
} cuda_config;

/* Convolution algorithm cache: open addressing keyed by everything that decides the choice. */
typedef enum cuda_conv_op {
    CUDA_CONV_FWD = 1,
    CUDA_CONV_BWD_DATA = 2,
    CUDA_CONV_BWD_FILTER = 3
} cuda_conv_op;

typedef struct cuda_algo_key {
    int32_t op; /* cuda_conv_op */
    int32_t n, c, h, w;        /* input (x or dx) */
    int32_t k, kh, kw;         /* filter */
    int32_t oh, ow;            /* output (y or dy) */
    int32_t pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
    int32_t x_layout, y_layout;
    int32_t dtype;             /* of the activations (tp_dtype): f32 or bf16 */
} cuda_algo_key;

typedef struct cuda_algo_choice {
    int algo;           /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
    int math_type;      /* cudnnMathType_t to set on the descriptor */
    size_t workspace;   /* bytes */
} cuda_algo_choice;

typedef struct cuda_algo_cache {
    cuda_algo_key *keys;
    cuda_algo_choice *values;
    uint8_t *used;
    size_t capacity; /* a power of two, or 0 */
    size_t count;
} cuda_algo_cache;

typedef struct cuda_backend {
    const tp_host *host;
    int device;
    cuda_precision precision;
    cuda_batchnorm_impl batchnorm;
    tp_dtype activation_dtype; /* what info() reports: bf16 or f32 (SDK API 1.5) */
    int benchmark;
    size_t workspace_limit; /* bytes a cuDNN algorithm may ask for */
    char device_name[256];

    cudaStream_t compute, copy;
    cudaEvent_t compute_mark; /* orders copy-stream reads of device data after compute */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;

    /* Stream-ordered arenas on the compute stream, grown on demand. */
    void *workspace;
    size_t workspace_size;
    void *scratch;
    size_t scratch_size;
    /* Arena buffers outgrown while recordings that point into them exist: kept until the
     * last recording is freed (a replay must never touch freed memory). */
    void **retired;
    size_t n_retired, retired_cap;
    size_t live_recordings;

    /* cuBLAS's own workspace, set once, so recorded GEMMs never allocate (cuda_gemm.c). */
    void *blas_workspace;

    cuda_algo_cache algos;
    pthread_mutex_t lock;

    /* API 1.4 recordings (cuda_capture.c), all under `lock`: the thread recording on the
     * compute stream, whether something failed meanwhile, how many threads are waiting on
     * the host without the lock, and the condition the other threads wait on. */
    int capturing;
    int capture_spoiled;
    pthread_t capture_owner;
    int host_waits;
    pthread_cond_t capture_cond;
} cuda_backend;

/* ------------------------------------------------------------------ errors (cuda_check.c)
 * Each returns TP_OK when the call succeeded, else host->fail() with the call's name, the
 * library's status string and file:line, and TP_ERR_LIBRARY (TP_ERR_NOMEM for an
 * allocation failure). */
tp_status cuda_check_rt(cuda_backend *b, cudaError_t e, const char *call, const char *file,
                        int line);
tp_status cuda_check_dnn(cuda_backend *b, cudnnStatus_t s, const char *call, const char *file,
                         int line);
tp_status cuda_check_blas(cuda_backend *b, cublasStatus_t s, const char *call,
                          const char *file, int line);

/* Checked calls; they expect a `cuda_backend *b` in scope and evaluate to a tp_status. */
#define CUDA_RT(call) cuda_check_rt(b, (call), #call, __FILE__, __LINE__)
#define CUDA_DNN(call) cuda_check_dnn(b, (call), #call, __FILE__, __LINE__)
#define CUDA_BLAS(call) cuda_check_blas(b, (call), #call, __FILE__, __LINE__)

/* Validation of operation arguments (TP_ERR_INVALID / TP_ERR_UNSUPPORTED after fail()).
 * `op` and `name` appear in the message, e.g. "conv_forward: x: ...". */
tp_status cuda_need_f32(cuda_backend *b, const char *op, const char *name, const tp_tensor *t);
tp_status cuda_need_dtype(cuda_backend *b, const char *op, const char *name, const tp_tensor *t,
                          tp_dtype dtype);
/* An activation-shaped tensor (SDK API 1.5): f32 or bf16. */
tp_status cuda_need_act(cuda_backend *b, const char *op, const char *name, const tp_tensor *t);
/* Logical dims of a tensor as (N, C, H, W): 1-D (C) -> (1,C,1,1), 2-D (N,C) -> (N,C,1,1). */
void cuda_dims4(const tp_tensor *t, int64_t d[4]);
/* The same dims with t's memory order, as the own kernels take them (cuda_kernels.h). */
ck_shape cuda_ck_shape(const tp_tensor *t);
tp_status cuda_need_shape4(cuda_backend *b, const char *op, const char *name,
                           const tp_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w);
tp_status cuda_need_count(cuda_backend *b, const char *op, const char *name, const tp_tensor *t,
                          int64_t count);
/* a and t have one dtype ("OP: A is bf16 but T is f32" otherwise). */
tp_status cuda_need_same_dtype(cuda_backend *b, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *t);
/* Same logical shape and dtype (layouts may differ). */
tp_status cuda_need_same(cuda_backend *b, const char *op, const char *name_a,
                         const tp_tensor *a, const char *name_b, const tp_tensor *t);
/* Same logical shape and the same memory order (for ops that walk memory linearly). */
tp_status cuda_need_same_layout(cuda_backend *b, const char *op, const char *name_a,
                                const tp_tensor *a, const char *name_b, const tp_tensor *t);
/* Non-zero when a and t (same shape) order their elements alike in memory. */
int cuda_same_memory_order(const tp_tensor *a, const tp_tensor *t);
/* A cuDNN tensor descriptor for t (its dtype, logical dims and layout). */
cudnnDataType_t cuda_dnn_type(tp_dtype dtype);
tp_status cuda_tensor_desc(cuda_backend *b, const tp_tensor *t, cudnnTensorDescriptor_t *out);

/* ------------------------------------------------------------------ memory (cuda_memory.c) */
/* The compute-stream arenas: returns a buffer of at least `bytes`, valid for work enqueued
 * on the compute stream until the next call. Growing is stream-ordered (no host sync). */
tp_status cuda_workspace(cuda_backend *b, size_t bytes, void **out);
tp_status cuda_scratch(cuda_backend *b, size_t bytes, void **out);
void cuda_arenas_release(cuda_backend *b);
/* Frees the retired arena buffers (stream-ordered); called when no recording is left. */
void cuda_retired_release(cuda_backend *b);
cudaStream_t cuda_stream(cuda_backend *b, tp_stream s);

/* A stream-ordered temporary of `bytes` on `stream` (free it with cudaFreeAsync there). On
 * failure: "cudaMallocAsync(WHAT, N bytes) failed: REASON; try ADVICE", TP_ERR_NOMEM when
 * the device is out of memory. */
tp_status cuda_temp_alloc(cuda_backend *b, cudaStream_t stream, size_t bytes,
                          const char *what, const char *advice, void **out);
/* Layout views, for operations whose tensors come in mixed layouts: *view describes t in
 * `layout`. When t already has that memory order, the view shares t's data; otherwise it is
 * a stream-ordered temporary on the compute stream, filled from t when `load`.
 * cuda_view_end() writes the view back into t when `store` and frees the temporary; call
 * it on every view that cuda_view_begin() succeeded on, also on error paths (store = 0). */
tp_status cuda_view_begin(cuda_backend *b, const tp_tensor *t, tp_layout layout, int load,
                          tp_tensor *view);
/* The same, with the view in `dtype` (f32 <-> bf16 converted on load and store): the
 * convolution's f32 weights as bf16 for bf16 activations. */
tp_status cuda_view_begin_as(cuda_backend *b, const tp_tensor *t, tp_layout layout,
                             tp_dtype dtype, int load, tp_tensor *view);
tp_status cuda_view_end(cuda_backend *b, tp_tensor *view, const tp_tensor *t, int store);

tp_status cuda_alloc(cuda_backend *b, tp_tensor *t, const char *what);
void cuda_free(cuda_backend *b, tp_tensor *t);
tp_status cuda_copy(cuda_backend *b, tp_tensor *dst, const tp_tensor *src, tp_stream stream);
tp_status cuda_fill(cuda_backend *b, tp_tensor *t, double value);
tp_status cuda_event_create(cuda_backend *b, tp_event **ev);
void cuda_event_destroy(cuda_backend *b, tp_event *ev);
tp_status cuda_event_record(cuda_backend *b, tp_event *ev, tp_stream stream);
tp_status cuda_stream_wait(cuda_backend *b, tp_stream stream, tp_event *ev);
tp_status cuda_event_sync(cuda_backend *b, tp_event *ev);
tp_status cuda_sync(cuda_backend *b);

/* ------------------------------------------------------------------ recordings (cuda_capture.c)
 * All are called with `lock` held. */
/* Non-zero when the calling thread is recording the compute stream. */
int cuda_recording_here(const cuda_backend *b);
/* Waits (releasing the lock meanwhile) while another thread is recording. */
void cuda_capture_gate(cuda_backend *b);
/* Marks the recording spoiled when st is an error raised by the recording thread. */
void cuda_capture_note(cuda_backend *b, tp_status st);
/* Fails, and spoils the recording, when the calling thread is recording: `op` cannot be
 * recorded. TP_OK otherwise. */
tp_status cuda_capture_forbid(cuda_backend *b, const char *op);
tp_status cuda_capture_begin(cuda_backend *b);
tp_status cuda_capture_end(cuda_backend *b, tp_recording **out);
tp_status cuda_replay(cuda_backend *b, tp_recording *r);
void cuda_recording_free(cuda_backend *b, tp_recording *r);

/* ------------------------------------------------------------------ algorithm cache */
void cuda_algo_cache_free(cuda_backend *b);
/* The cached choice for key, or NULL. */
const cuda_algo_choice *cuda_algo_cache_get(cuda_backend *b, const cuda_algo_key *key);
tp_status cuda_algo_cache_put(cuda_backend *b, const cuda_algo_key *key,
                              const cuda_algo_choice *choice);

/* ------------------------------------------------------------------ layers */
tp_status cuda_conv_forward(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *x,
                            const tp_tensor *w, const tp_tensor *bias, tp_tensor *y);
tp_status cuda_conv_backward_data(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *dy,
                                  const tp_tensor *w, tp_tensor *dx);
tp_status cuda_conv_backward_filter(cuda_backend *b, const tp_conv_desc *d, const tp_tensor *x,
                                    const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias);
/* API 1.7: dx += conv_backward_data(dy, w) (cuDNN's beta = 1). */
tp_status cuda_conv_backward_data_add(cuda_backend *b, const tp_conv_desc *d,
                                      const tp_tensor *dy, const tp_tensor *w, tp_tensor *dx);

tp_status cuda_batchnorm_train(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                               tp_tensor *running_mean, tp_tensor *running_var,
                               tp_tensor *save_mean, tp_tensor *save_invstd);
/* The API 1.2 fused forms: batch norm then ReLU; backward masks dy by y > 0 (no workspace). */
tp_status cuda_batchnorm_relu_train(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                    const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                    tp_tensor *running_mean, tp_tensor *running_var,
                                    tp_tensor *save_mean, tp_tensor *save_invstd);
tp_status cuda_batchnorm_relu_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                       const tp_tensor *y, const tp_tensor *dy,
                                       const tp_tensor *gamma, const tp_tensor *save_mean,
                                       const tp_tensor *save_invstd, tp_tensor *dx,
                                       tp_tensor *dgamma, tp_tensor *dbeta);
tp_status cuda_batchnorm_infer(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                               const tp_tensor *gamma, const tp_tensor *beta,
                               const tp_tensor *running_mean, const tp_tensor *running_var,
                               tp_tensor *y);
tp_status cuda_batchnorm_backward(cuda_backend *b, const tp_bn_desc *d, const tp_tensor *x,
                                  const tp_tensor *dy, const tp_tensor *gamma,
                                  const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                  tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta);

tp_status cuda_pool_forward(cuda_backend *b, const tp_pool_desc *d, const tp_tensor *x,
                            tp_tensor *y);
tp_status cuda_pool_backward(cuda_backend *b, const tp_pool_desc *d, const tp_tensor *x,
                             const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx);

tp_status cuda_linear_forward(cuda_backend *b, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *bias, tp_tensor *y);
tp_status cuda_linear_backward(cuda_backend *b, const tp_tensor *x, const tp_tensor *w,
                               const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                               tp_tensor *db);
/* The cuBLAS math mode for the configured precision (set at create). */
tp_status cuda_gemm_setup(cuda_backend *b);

/* Elementwise and shape ops (cuda_elementwise.c). */
tp_status cuda_relu_forward(cuda_backend *b, const tp_tensor *x, tp_tensor *y);
tp_status cuda_relu_backward(cuda_backend *b, const tp_tensor *y, const tp_tensor *dy,
                             tp_tensor *dx);
tp_status cuda_add(cuda_backend *b, const tp_tensor *a, const tp_tensor *bt, tp_tensor *y);
/* y = max(0, a + b), the API 1.2 fused addition (y may alias a or b). */
tp_status cuda_add_relu(cuda_backend *b, const tp_tensor *a, const tp_tensor *bt, tp_tensor *y);
tp_status cuda_global_avgpool_forward(cuda_backend *b, const tp_tensor *x, tp_tensor *y);
tp_status cuda_global_avgpool_backward(cuda_backend *b, const tp_tensor *dy, tp_tensor *dx);
tp_status cuda_subsample_pad_forward(cuda_backend *b, int stride, const tp_tensor *x,
                                     tp_tensor *y);
tp_status cuda_subsample_pad_backward(cuda_backend *b, int stride, const tp_tensor *dy,
                                      tp_tensor *dx);
tp_status cuda_axpby(cuda_backend *b, double alpha, const tp_tensor *x, double beta,
                     tp_tensor *y);
tp_status cuda_scale(cuda_backend *b, double alpha, tp_tensor *y);
tp_status cuda_sum_squares(cuda_backend *b, const tp_tensor *x, tp_tensor *out);

/* Loss and metrics (cuda_loss.c). */
tp_status cuda_softmax_xent(cuda_backend *b, const tp_tensor *logits, const tp_tensor *labels,
                            double smoothing, double grad_scale, tp_tensor *loss,
                            tp_tensor *dlogits);
tp_status cuda_topk_correct(cuda_backend *b, const tp_tensor *logits, const tp_tensor *labels,
                            int k, tp_tensor *correct);

/* Input batches (cuda_image.c). */
tp_status cuda_convert_u8_batch(cuda_backend *b, const tp_tensor *src, double scale,
                                tp_tensor *dst);
tp_status cuda_crop_flip(cuda_backend *b, const tp_crop_flip_desc *d, const tp_tensor *src,
                         tp_tensor *dst);
tp_status cuda_standardize_images(cuda_backend *b, tp_tensor *x);
tp_status cuda_normalize_channels(cuda_backend *b, tp_tensor *x, const float *mean,
                                  const float *std);

/* Fused optimizer steps (cuda_optim.c). */
tp_status cuda_sgd_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                          tp_tensor *velocity, double lr, double momentum, double weight_decay,
                          int nesterov);
tp_status cuda_adam_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                           tp_tensor *m, tp_tensor *v, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int decoupled, int64_t step);
/* API 1.6: the same with lr (and Adam's bias corrections) read from `scalars` on the device
 * and nothing written unless the device scalar `gate` is finite. */
tp_status cuda_sgd_update_dev(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                              tp_tensor *velocity, const tp_tensor *scalars,
                              const tp_tensor *gate, double momentum, double weight_decay,
                              int nesterov);
tp_status cuda_adam_update_dev(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                               tp_tensor *m, tp_tensor *v, const tp_tensor *scalars,
                               const tp_tensor *gate, double beta1, double beta2, double eps,
                               double weight_decay, int decoupled);
/* API 1.7: y = max(0, batchnorm_train(x) + residual) (cuda_batchnorm.c). */
tp_status cuda_batchnorm_add_relu_train(cuda_backend *b, const tp_bn_desc *d,
                                        const tp_tensor *x, const tp_tensor *residual,
                                        const tp_tensor *gamma, const tp_tensor *beta,
                                        tp_tensor *y, tp_tensor *running_mean,
                                        tp_tensor *running_var, tp_tensor *save_mean,
                                        tp_tensor *save_invstd);
/* API 1.7: the API 1.6 forms over a group of tensors in a few launches. */
tp_status cuda_sgd_update_group_dev(cuda_backend *b, const tp_update_item *items, size_t n,
                                    const tp_tensor *scalars, const tp_tensor *gate,
                                    double momentum, int nesterov);
tp_status cuda_adam_update_group_dev(cuda_backend *b, const tp_update_item *items, size_t n,
                                     const tp_tensor *scalars, const tp_tensor *gate,
                                     double beta1, double beta2, double eps, int decoupled);
/* API 1.8: *out = 0 when every element of the n tensors is finite, NaN otherwise. */
tp_status cuda_check_finite_group(cuda_backend *b, const tp_tensor *const *xs, size_t n,
                                  tp_tensor *out);

#endif /* TRAINPIPE_BACKEND_CUDA_H */
