/* A float64 reference of every backend operation, written as plain loops for reading, not
 * speed. All 4-D arrays are logical NCHW (n, c, h, w) row-major whatever layout the backend
 * under test uses; weights are OIHW; matrices are row-major. The tests compare backends
 * against these and check these against finite differences. */
#ifndef TRAINPIPE_TESTS_REFERENCE_H
#define TRAINPIPE_TESTS_REFERENCE_H

#include <stdint.h>

/* Convolution geometry: x (N,C,H,W), w (O,C,KH,KW), y (N,O,OH,OW). */
typedef struct ref_conv {
    int N, C, H, W;
    int O, KH, KW;
    int OH, OW;
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
} ref_conv;

/* Output size of a convolution or pooling window along one axis (floor mode). */
int ref_out_size(int in, int kernel, int stride, int pad, int dilation);

void ref_conv_forward(const ref_conv *s, const double *x, const double *w, const double *bias,
                      double *y);
void ref_conv_backward_data(const ref_conv *s, const double *dy, const double *w, double *dx);
/* dbias may be NULL. */
void ref_conv_backward_filter(const ref_conv *s, const double *x, const double *dy, double *dw,
                              double *dbias);

/* Batch normalisation over (N,H,W) per channel (see <trainpipe/backend.h>): y from the biased
 * batch variance; running_mean/var updated in place (PyTorch, unbiased var); save_mean and
 * save_invstd = 1/sqrt(var + eps). */
void ref_bn_train(int N, int C, int H, int W, const double *x, const double *gamma,
                  const double *beta, double eps, double momentum, double *y,
                  double *running_mean, double *running_var, double *save_mean,
                  double *save_invstd);
void ref_bn_infer(int N, int C, int H, int W, const double *x, const double *gamma,
                  const double *beta, const double *running_mean, const double *running_var,
                  double eps, double *y);
void ref_bn_backward(int N, int C, int H, int W, const double *x, const double *dy,
                     const double *gamma, const double *save_mean, const double *save_invstd,
                     double *dx, double *dgamma, double *dbeta);

void ref_relu_forward(int64_t n, const double *x, double *y);
/* dx = dy where y > 0, else 0. */
void ref_relu_backward(int64_t n, const double *y, const double *dy, double *dx);
void ref_add(int64_t n, const double *a, const double *b, double *y);

/* Pooling geometry: x (N,C,H,W) -> y (N,C,OH,OW). Average excludes padding cells; max
 * backward routes to the first maximum in row-major window order. */
typedef struct ref_pool {
    int max; /* 1: max pooling, 0: average */
    int N, C, H, W;
    int KH, KW, SH, SW, PH, PW;
    int OH, OW;
} ref_pool;

void ref_pool_forward(const ref_pool *p, const double *x, double *y);
void ref_pool_backward(const ref_pool *p, const double *x, const double *dy, double *dx);

/* Global average pooling: x (N,C,H,W) -> y (N,C). */
void ref_gap_forward(int N, int C, int H, int W, const double *x, double *y);
void ref_gap_backward(int N, int C, int H, int W, const double *dy, double *dx);

/* y (N,M) = x (N,K) w^T + b, w (M,K); b, dx and db may be NULL. */
void ref_linear_forward(int N, int K, int M, const double *x, const double *w, const double *b,
                        double *y);
void ref_linear_backward(int N, int K, int M, const double *x, const double *w,
                         const double *dy, double *dx, double *dw, double *db);

/* Mean softmax cross-entropy with label smoothing; dlogits (may be NULL) gets the gradient of
 * the mean loss times grad_scale. Returns the loss. */
double ref_softmax_xent(int N, int K, const double *logits, const int32_t *labels,
                        double smoothing, double grad_scale, double *dlogits);
/* Rows whose label is among the k largest logits, ties towards the lower class index. */
int ref_topk_correct(int N, int K, const double *logits, const int32_t *labels, int k);

/* Shortcut A: y (N,Cout,ceil(H/s),ceil(W/s)) = x subsampled, channels >= C zero. */
void ref_subsample_pad_forward(int N, int C, int H, int W, int Cout, int stride,
                               const double *x, double *y);
void ref_subsample_pad_backward(int N, int C, int H, int W, int Cout, int stride,
                                const double *dy, double *dx);

/* Optimizer arithmetic, PyTorch semantics (see <trainpipe/backend.h>). */
void ref_axpby(int64_t n, double alpha, const double *x, double beta, double *y);
void ref_scale(int64_t n, double alpha, double *y);
double ref_sum_squares(int64_t n, const double *x);
void ref_sgd_update(int64_t n, double *param, const double *grad, double *velocity, double lr,
                    double momentum, double weight_decay, int nesterov);
void ref_adam_update(int64_t n, double *param, const double *grad, double *m, double *v,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int decoupled, int64_t step);

#endif
