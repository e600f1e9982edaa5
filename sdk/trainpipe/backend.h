/* trainpipe SDK: compute backends (TP_KIND_BACKEND).
 *
 * A backend owns device memory, two streams (compute and copy), events, and the layer
 * operations a ResNet needs, forward and backward. backend-cpu implements them on oneDNN,
 * backend-cuda on cuDNN and cuBLAS; tests/reference holds a float64 reference of each.
 *
 * Conventions shared by every operation:
 *   - Tensors are f32 unless stated; 4-D tensors carry logical (N, C, H, W) shapes and a
 *     layout (NCHW or NHWC) that the backend honours for inputs and outputs alike.
 *   - Outputs are overwritten, never accumulated into; the host sums gradients itself.
 *   - Operations are enqueued on the compute stream and may return before they finish;
 *     results become visible to the host through copy() + event_sync()/sync().
 *   - A failing library call returns TP_ERR_LIBRARY after host->fail() with the call's name,
 *     the library's status string and the source file:line; running out of device memory
 *     returns TP_ERR_NOMEM naming the tensor and its size.
 *   - Activation dtype (API 1.5): a backend whose info() reports activation_dtype = bf16
 *     also accepts bf16 for the activation-shaped tensors (x, y, dy, dx; all of one call in
 *     the same dtype) of conv_forward / _backward_data / _backward_filter, batchnorm_train /
 *     _infer / _backward and the fused batch norms, relu_forward / _backward, add, add_relu,
 *     pool_forward / _backward and subsample_pad_forward / _backward, and for
 *     global_avgpool_forward's x and global_avgpool_backward's dx (their y and dy stay f32).
 *     Everything else of those calls stays f32: convolution weights and biases and their
 *     gradients (the backend rounds a copy of the weights), batch-norm parameters, running
 *     and saved statistics and their gradients. Arithmetic inside stays f32 or wider; only
 *     the stored values are rounded (to nearest even). copy() then also converts between
 *     f32 and bf16 in any direction, with or without a layout change, and fill() fills bf16.
 *     linear_*, the loss, topk_correct, the optimizer updates and the image operations are
 *     f32 only. A backend reporting f32 (or older than 1.5) may refuse bf16 anywhere.
 * Optional operations may be NULL; callers check before use. */
#ifndef TRAINPIPE_BACKEND_H
#define TRAINPIPE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/plugin.h>
#include <trainpipe/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_event tp_event; /* opaque, backend-defined */
typedef struct tp_recording tp_recording; /* opaque, backend-defined (API 1.4) */

typedef enum tp_stream {
    TP_STREAM_COMPUTE = 0,
    TP_STREAM_COPY = 1
} tp_stream;

typedef struct tp_backend_info {
    size_t size;
    const char *name;        /* "cpu", "cuda", ... */
    const char *device_name; /* e.g. "NVIDIA H100 80GB HBM3" or the CPU model */
    tp_layout preferred_layout;
    int has_device_memory;   /* 0 when "device" memory is host memory (no copy needed) */
    int threads;             /* CPU threads used, or 0 */
    /* API 1.1: appended; read it only when size covers it. Non-zero when the backend computes
     * in fp16 and the trainer should apply dynamic loss scaling. */
    int wants_loss_scaling;
    /* API 1.5: appended; read it only when size covers it (0 or absent means f32). The dtype
     * the backend wants activations and their gradients stored in when a network is bound in
     * preferred_layout: TP_DTYPE_BF16 (see "Activation dtype" above) or TP_DTYPE_F32. In any
     * other layout activations are f32. */
    tp_dtype activation_dtype;
} tp_backend_info;

typedef struct tp_conv_desc {
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dilation_h, dilation_w; /* 1 for an ordinary convolution */
} tp_conv_desc;

typedef enum tp_pool_mode {
    TP_POOL_MAX = 0,
    TP_POOL_AVG = 1 /* padding cells excluded from the average (count_include_pad = false) */
} tp_pool_mode;

typedef struct tp_pool_desc {
    tp_pool_mode mode;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
} tp_pool_desc;

/* Batch normalisation over (N, H, W) per channel. Running statistics follow PyTorch:
 *   running = (1 - momentum) * running + momentum * batch_stat,
 * with the unbiased batch variance (n / (n - 1)) for running_var, and the biased one for
 * normalising. save_mean / save_invstd (length C) hold the batch mean and 1/sqrt(var+eps)
 * for the backward pass. */
typedef struct tp_bn_desc {
    double eps;
    double momentum;
} tp_bn_desc;

/* Per-sample image operations used by device-side augmenters. The random choices are made
 * on the host (deterministically) and passed in as small host arrays of length N. */
typedef struct tp_crop_flip_desc {
    int pad;            /* zero-or-fill padding added on every side before cropping */
    float fill;         /* value of padded cells */
    const int32_t *offset_y; /* crop origin in the padded image, per sample, in [0, 2*pad] */
    const int32_t *offset_x;
    const uint8_t *flip;     /* non-zero: mirror horizontally, per sample (may be NULL) */
} tp_crop_flip_desc;

/* One parameter tensor of a grouped optimizer update (API 1.7): the parameter, its gradient,
 * the optimizer's state tensors for it (unused entries NULL) and its own weight decay. All
 * are f32 tensors of the parameter's shape and layout. */
typedef struct tp_update_item {
    tp_tensor *param;
    const tp_tensor *grad;
    tp_tensor *state[2];
    double weight_decay;
} tp_update_item;

typedef struct tp_backend_ops {
    size_t size; /* sizeof(tp_backend_ops) */

    tp_status (*info)(void *self, tp_backend_info *out);

    /* Memory. alloc() allocates t->data for t's shape, dtype and device (the contents are
     * unspecified); `what` names the tensor in an out-of-memory message. */
    tp_status (*alloc)(void *self, tp_tensor *t, const char *what);
    void (*free)(void *self, tp_tensor *t);
    /* dst = src; same dtype (but see "Activation dtype" above) and shape, layouts may differ
     * (converted), any direction. Asynchronous on `stream` when either side is pinned or device memory. */
    tp_status (*copy)(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream);
    tp_status (*fill)(void *self, tp_tensor *t, double value);

    /* Ordering. Device work is ordered with events, never with a device-wide sync. */
    tp_status (*event_create)(void *self, tp_event **ev);
    void (*event_destroy)(void *self, tp_event *ev);
    tp_status (*event_record)(void *self, tp_event *ev, tp_stream stream);
    tp_status (*stream_wait)(void *self, tp_stream stream, tp_event *ev);
    tp_status (*event_sync)(void *self, tp_event *ev); /* the host waits for ev */
    tp_status (*sync)(void *self);                    /* the host waits for both streams */

    /* Convolution: x (N,Cin,H,W), w (Cout,Cin,KH,KW) always OIHW, optional bias (Cout),
     * y (N,Cout,OH,OW). Backward ops overwrite dx, dw and dbias (dbias may be NULL). */
    tp_status (*conv_forward)(void *self, const tp_conv_desc *d, const tp_tensor *x,
                              const tp_tensor *w, const tp_tensor *bias, tp_tensor *y);
    tp_status (*conv_backward_data)(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                    const tp_tensor *w, tp_tensor *dx);
    tp_status (*conv_backward_filter)(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                      const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias);

    /* Batch normalisation; gamma, beta, running_*, save_* are (C) vectors. */
    tp_status (*batchnorm_train)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                 tp_tensor *running_mean, tp_tensor *running_var,
                                 tp_tensor *save_mean, tp_tensor *save_invstd);
    tp_status (*batchnorm_infer)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *gamma, const tp_tensor *beta,
                                 const tp_tensor *running_mean, const tp_tensor *running_var,
                                 tp_tensor *y);
    tp_status (*batchnorm_backward)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                    const tp_tensor *dy, const tp_tensor *gamma,
                                    const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                    tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta);

    /* ReLU: backward uses the forward output y as the mask (dx = dy where y > 0). */
    tp_status (*relu_forward)(void *self, const tp_tensor *x, tp_tensor *y);
    tp_status (*relu_backward)(void *self, const tp_tensor *y, const tp_tensor *dy,
                               tp_tensor *dx);

    /* y = a + b, elementwise (same shape; y may alias a or b). */
    tp_status (*add)(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y);

    /* Max or average pooling. Backward gets x and y (max pooling routes to the first
     * maximum in row-major window order). */
    tp_status (*pool_forward)(void *self, const tp_pool_desc *d, const tp_tensor *x,
                              tp_tensor *y);
    tp_status (*pool_backward)(void *self, const tp_pool_desc *d, const tp_tensor *x,
                               const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx);

    /* Global average pooling: x (N,C,H,W) -> y (N,C) 2-D. */
    tp_status (*global_avgpool_forward)(void *self, const tp_tensor *x, tp_tensor *y);
    tp_status (*global_avgpool_backward)(void *self, const tp_tensor *dy, tp_tensor *dx);

    /* Linear: x (N,K), w (M,K) as PyTorch stores it, bias (M) or NULL, y (N,M).
     * Backward: dx may be NULL (first layer), db may be NULL (no bias). */
    tp_status (*linear_forward)(void *self, const tp_tensor *x, const tp_tensor *w,
                                const tp_tensor *bias, tp_tensor *y);
    tp_status (*linear_backward)(void *self, const tp_tensor *x, const tp_tensor *w,
                                 const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw,
                                 tp_tensor *db);

    /* Mean softmax cross-entropy over the batch with label smoothing s:
     *   target = (1 - s) * onehot(label) + s / K.
     * logits (N,K), labels i32 (N), loss f32 (1) written on the device. dlogits (N,K) gets
     * the gradient of the mean loss, scaled by `grad_scale` (1 normally; the loss scale in
     * fp16 training); NULL in evaluation. */
    tp_status (*softmax_xent)(void *self, const tp_tensor *logits, const tp_tensor *labels,
                              double smoothing, double grad_scale, tp_tensor *loss,
                              tp_tensor *dlogits);

    /* correct (f32, 1): how many rows have their label among the k largest logits (ties
     * broken towards the lower class index, counting the label as correct only if it wins). */
    tp_status (*topk_correct)(void *self, const tp_tensor *logits, const tp_tensor *labels,
                              int k, tp_tensor *correct);

    /* ResNet shortcut A: y[:, :Cin] = x[:, :, ::stride, ::stride], y[:, Cin:] = 0, with
     * y (N, Cout >= Cin, ceil(H/stride), ceil(W/stride)). Backward scatters dy back. */
    tp_status (*subsample_pad_forward)(void *self, int stride, const tp_tensor *x,
                                       tp_tensor *y);
    tp_status (*subsample_pad_backward)(void *self, int stride, const tp_tensor *dy,
                                        tp_tensor *dx);

    /* Arithmetic for optimizers and bookkeeping (f32, same shapes):
     * y = alpha * x + beta * y;  y = alpha * y. */
    tp_status (*axpby)(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y);
    tp_status (*scale)(void *self, double alpha, tp_tensor *y);
    /* out (f32, 1) = sum of squares of x; used for norms and finiteness checks. */
    tp_status (*sum_squares)(void *self, const tp_tensor *x, tp_tensor *out);

    /* Input batches: dst (f32, N,C,H,W in dst->layout) = scale * src (u8, NHWC). */
    tp_status (*convert_u8_batch)(void *self, const tp_tensor *src, double scale,
                                  tp_tensor *dst);
    /* Per-sample pad + crop + optional flip, dst same shape as src (f32). */
    tp_status (*crop_flip)(void *self, const tp_crop_flip_desc *d, const tp_tensor *src,
                           tp_tensor *dst);
    /* In place, per image: (x - mean) / max(stddev, 1/sqrt(C*H*W)) (TensorFlow's
     * per_image_standardization). */
    tp_status (*standardize_images)(void *self, tp_tensor *x);
    /* In place, per channel: (x - mean[c]) / std[c]; mean and std are host arrays (C). */
    tp_status (*normalize_channels)(void *self, tp_tensor *x, const float *mean,
                                    const float *std);

    /* Optional fused optimizer updates (NULL: optimizers compose axpby/scale instead).
     * SGD (PyTorch semantics): g = grad + wd * p; v = momentum * v + g;
     *   p -= lr * (nesterov ? g + momentum * v : v).
     * Adam/AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     *   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) [+ lr * wd * p for AdamW,
     *   applied before the update; for Adam wd is added to g]. */
    tp_status (*sgd_update)(void *self, tp_tensor *param, const tp_tensor *grad,
                            tp_tensor *velocity, double lr, double momentum,
                            double weight_decay, int nesterov);
    tp_status (*adam_update)(void *self, tp_tensor *param, const tp_tensor *grad,
                             tp_tensor *m, tp_tensor *v, double lr, double beta1,
                             double beta2, double eps, double weight_decay, int decoupled,
                             int64_t step);

    /* API 1.2, optional: fused operations. A backend offers all three or none; the graph
     * falls back to the separate operations above when any is NULL.
     *
     * add_relu: y = max(0, a + b) (y may alias a or b).
     * batchnorm_relu_train: y = max(0, batchnorm_train(x)), with everything else exactly as
     *   batchnorm_train. `workspace` (u8, 1-D) receives what the backward pass needs besides
     *   y; its size in bytes comes from batchnorm_relu_workspace_bytes for x (0: the backend
     *   needs none and workspace may be NULL).
     * batchnorm_relu_backward: batchnorm_backward applied to dy masked by y > 0, where y and
     *   workspace are what batchnorm_relu_train wrote.
     * A backend offering these also accepts relu_forward with y == x and relu_backward with
     *   dx == dy (in place), which the fused graph plan uses. */
    tp_status (*add_relu)(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y);
    tp_status (*batchnorm_relu_workspace_bytes)(void *self, const tp_bn_desc *d,
                                                const tp_tensor *x, int64_t *bytes);
    tp_status (*batchnorm_relu_train)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                      const tp_tensor *gamma, const tp_tensor *beta,
                                      tp_tensor *y, tp_tensor *running_mean,
                                      tp_tensor *running_var, tp_tensor *save_mean,
                                      tp_tensor *save_invstd, tp_tensor *workspace);
    tp_status (*batchnorm_relu_backward)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                         const tp_tensor *y, const tp_tensor *workspace,
                                         const tp_tensor *dy, const tp_tensor *gamma,
                                         const tp_tensor *save_mean,
                                         const tp_tensor *save_invstd, tp_tensor *dx,
                                         tp_tensor *dgamma, tp_tensor *dbeta);

    /* API 1.3, optional: the backend's own handle of `stream` (a cudaStream_t on
     * backend-cuda), so the host can order work of its own after what the backend has
     * queued there (NCCL's gradient sums during backward). NULL where streams are not
     * objects of a library the host could use. */
    void *(*native_stream)(void *self, tp_stream stream);

    /* API 1.4, optional: record the work one thread enqueues on the compute stream once, then
     * enqueue the whole recording again in one call (CUDA graphs on backend-cuda). A backend
     * offers all four or none.
     *
     * capture_begin: from now until capture_end, the operations the calling thread enqueues
     *   on the compute stream are recorded instead of run. Each records the tensors' data
     *   pointers and its scalar arguments as they are at that moment; replaying reuses
     *   them, so the caller keeps those buffers alive and unmoved and feeds new inputs by
     *   copying them into the recorded buffers first. While recording, the calling thread
     *   must not allocate or free, copy to or from host memory, or wait (event_sync, sync):
     *   such a call fails and spoils the recording. Other threads' operations on this
     *   instance wait until the recording ends, so none of their work slips into it.
     * capture_end: stops recording. On success *out is the recording; when anything during
     *   the recording failed, *out is NULL, the error is reported, nothing recorded has run,
     *   and the instance works as before. Always call it after capture_begin succeeded.
     * replay: enqueues the recorded work on the compute stream, ordered like any operation.
     * recording_free: releases a recording (NULL is ignored); work already enqueued from it
     *   still completes. */
    tp_status (*capture_begin)(void *self);
    tp_status (*capture_end)(void *self, tp_recording **out);
    tp_status (*replay)(void *self, tp_recording *recording);
    void (*recording_free)(void *self, tp_recording *recording);

    /* API 1.6, optional: sgd_update / adam_update with the numbers that change from step to
     * step read from device memory when the update runs, so that a recording replays the
     * update with each step's values, and applied only when `gate` (an f32 device scalar;
     * the trainer passes the step's loss) is finite: otherwise param and state are left
     * exactly as they were. `scalars` is an f32 device tensor: SGD reads [0] = lr; Adam
     * reads [0] = lr, [1] = 1 - beta1^t, [2] = 1 - beta2^t (the bias corrections of step
     * t). Everything else as sgd_update / adam_update. */
    tp_status (*sgd_update_dev)(void *self, tp_tensor *param, const tp_tensor *grad,
                                tp_tensor *velocity, const tp_tensor *scalars,
                                const tp_tensor *gate, double momentum, double weight_decay,
                                int nesterov);
    tp_status (*adam_update_dev)(void *self, tp_tensor *param, const tp_tensor *grad,
                                 tp_tensor *m, tp_tensor *v, const tp_tensor *scalars,
                                 const tp_tensor *gate, double beta1, double beta2, double eps,
                                 double weight_decay, int decoupled);

    /* API 1.7, optional (both or neither): sgd_update_dev / adam_update_dev over n
     * parameter tensors in one call, each with its own weight decay (items[i], see
     * tp_update_item; SGD reads state[0] = velocity, Adam state[0] = m and state[1] = v).
     * What it writes is bit for bit what the n single calls in order would write; on
     * backend-cuda it is a few kernel launches instead of n. Every item is checked before
     * anything is written, so an invalid one fails the call with nothing changed. The items'
     * tensors must not overlap one another (the caller's promise; not checked, as that would
     * cost a sort of every tensor on every step). */
    tp_status (*sgd_update_group_dev)(void *self, const tp_update_item *items, size_t n,
                                      const tp_tensor *scalars, const tp_tensor *gate,
                                      double momentum, int nesterov);
    tp_status (*adam_update_group_dev)(void *self, const tp_update_item *items, size_t n,
                                       const tp_tensor *scalars, const tp_tensor *gate,
                                       double beta1, double beta2, double eps, int decoupled);

    /* API 1.7, optional: batch norm, a residual addition and ReLU in one pass over the
     * output, y = max(0, batchnorm_train(x) + residual), with the running and saved
     * statistics exactly as batchnorm_train writes them. residual and y have x's shape and
     * dtype; y must not share memory with x or residual. Training only (inference composes
     * batchnorm_infer and add_relu). Its backward needs no operation of its own: the
     * gradient of y masked by y > 0 is both the residual's gradient and batchnorm_backward's
     * dy (which reads x, not the batch norm's output), so the graph runs the residual
     * block's last batch norm through it and saves writing and rereading that output. */
    tp_status (*batchnorm_add_relu_train)(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                          const tp_tensor *residual, const tp_tensor *gamma,
                                          const tp_tensor *beta, tp_tensor *y,
                                          tp_tensor *running_mean, tp_tensor *running_var,
                                          tp_tensor *save_mean, tp_tensor *save_invstd);

    /* API 1.7, optional: conv_backward_data added into dx instead of written over it,
     * dx += conv_backward_data(dy, w), for a tensor whose gradient has another contribution
     * already (a residual block's input); spares the graph a temporary and an addition. */
    tp_status (*conv_backward_data_add)(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                        const tp_tensor *w, tp_tensor *dx);

    /* API 1.8, optional: out (f32, one value, device) = 0 when every element of the n f32
     * device tensors xs[0..n-1] is finite, NaN when any is NaN or infinite (0 for n = 0).
     * Queued like any operation, so it can be recorded; one read of each tensor. The
     * trainer adds it to the update's gate, so a non-finite gradient skips the update even
     * where the loss is finite: ReLU is max(0, x), which turns a NaN activation into 0, so
     * then only the gradients upstream of it show the NaN. */
    tp_status (*check_finite_group)(void *self, const tp_tensor *const *xs, size_t n,
                                    tp_tensor *out);
} tp_backend_ops;

/* True when ops (of a backend built against any API minor) offers operation `op`: its
 * table is long enough to hold the field and the field is set. */
#define TP_BACKEND_HAS(ops, op)                                                            \
    ((ops)->size >= offsetof(tp_backend_ops, op) + sizeof((ops)->op) && (ops)->op != NULL)

/* A live backend: what tp_host.backend() returns and what ops receive. */
typedef struct tp_backend {
    const tp_backend_ops *ops;
    void *self;
} tp_backend;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_BACKEND_H */
