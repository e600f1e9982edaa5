/* backend-cpu: the operations behind tp_backend_ops, one group per source file. Each takes
 * the cpu_backend as `self` and follows the contract documented in <trainpipe/backend.h>. */
#ifndef TRAINPIPE_CPU_OPS_H
#define TRAINPIPE_CPU_OPS_H

#include <trainpipe/trainpipe.h>

/* cpu_memory.c: allocation, copies (with NCHW <-> NHWC conversion), fill, events. */
tp_status cpu_alloc(void *self, tp_tensor *t, const char *what);
void cpu_free(void *self, tp_tensor *t);
tp_status cpu_copy(void *self, tp_tensor *dst, const tp_tensor *src, tp_stream stream);
tp_status cpu_fill(void *self, tp_tensor *t, double value);
tp_status cpu_event_create(void *self, tp_event **ev);
void cpu_event_destroy(void *self, tp_event *ev);
tp_status cpu_event_record(void *self, tp_event *ev, tp_stream stream);
tp_status cpu_stream_wait(void *self, tp_stream stream, tp_event *ev);
tp_status cpu_event_sync(void *self, tp_event *ev);
tp_status cpu_sync(void *self);

/* cpu_conv.c */
tp_status cpu_conv_forward(void *self, const tp_conv_desc *d, const tp_tensor *x,
                           const tp_tensor *w, const tp_tensor *bias, tp_tensor *y);
tp_status cpu_conv_backward_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                 const tp_tensor *w, tp_tensor *dx);
tp_status cpu_conv_backward_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                   const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias);

/* cpu_batchnorm.c */
tp_status cpu_batchnorm_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                              const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                              tp_tensor *running_mean, tp_tensor *running_var,
                              tp_tensor *save_mean, tp_tensor *save_invstd);
tp_status cpu_batchnorm_infer(void *self, const tp_bn_desc *d, const tp_tensor *x,
                              const tp_tensor *gamma, const tp_tensor *beta,
                              const tp_tensor *running_mean, const tp_tensor *running_var,
                              tp_tensor *y);
tp_status cpu_batchnorm_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                 const tp_tensor *dy, const tp_tensor *gamma,
                                 const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                 tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta);
tp_status cpu_batchnorm_relu_workspace_bytes(void *self, const tp_bn_desc *d,
                                             const tp_tensor *x, int64_t *bytes);
tp_status cpu_batchnorm_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                   const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                                   tp_tensor *running_mean, tp_tensor *running_var,
                                   tp_tensor *save_mean, tp_tensor *save_invstd,
                                   tp_tensor *workspace);
tp_status cpu_batchnorm_relu_backward(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                      const tp_tensor *y, const tp_tensor *workspace,
                                      const tp_tensor *dy, const tp_tensor *gamma,
                                      const tp_tensor *save_mean, const tp_tensor *save_invstd,
                                      tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta);

/* cpu_activation.c: ReLU and elementwise add on oneDNN eltwise/binary primitives. */
tp_status cpu_relu_forward(void *self, const tp_tensor *x, tp_tensor *y);
tp_status cpu_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx);
tp_status cpu_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y);
tp_status cpu_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y);
/* API 1.7: y = max(0, batchnorm_train(x) + residual) (cpu_batchnorm.c). */
tp_status cpu_batchnorm_add_relu_train(void *self, const tp_bn_desc *d, const tp_tensor *x,
                                       const tp_tensor *residual, const tp_tensor *gamma,
                                       const tp_tensor *beta, tp_tensor *y,
                                       tp_tensor *running_mean, tp_tensor *running_var,
                                       tp_tensor *save_mean, tp_tensor *save_invstd);

/* cpu_pool.c */
tp_status cpu_pool_forward(void *self, const tp_pool_desc *d, const tp_tensor *x, tp_tensor *y);
tp_status cpu_pool_backward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                            const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx);

/* cpu_reshape.c: global average pooling and the ResNet shortcut-A subsample/pad. */
tp_status cpu_global_avgpool_forward(void *self, const tp_tensor *x, tp_tensor *y);
tp_status cpu_global_avgpool_backward(void *self, const tp_tensor *dy, tp_tensor *dx);
tp_status cpu_subsample_pad_forward(void *self, int stride, const tp_tensor *x, tp_tensor *y);
tp_status cpu_subsample_pad_backward(void *self, int stride, const tp_tensor *dy,
                                     tp_tensor *dx);

/* cpu_linear.c */
tp_status cpu_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                             const tp_tensor *bias, tp_tensor *y);
tp_status cpu_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw, tp_tensor *db);

/* cpu_loss.c */
tp_status cpu_softmax_xent(void *self, const tp_tensor *logits, const tp_tensor *labels,
                           double smoothing, double grad_scale, tp_tensor *loss,
                           tp_tensor *dlogits);
tp_status cpu_topk_correct(void *self, const tp_tensor *logits, const tp_tensor *labels, int k,
                           tp_tensor *correct);

/* cpu_elementwise.c: optimizer arithmetic and fused updates. */
tp_status cpu_axpby(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y);
tp_status cpu_scale(void *self, double alpha, tp_tensor *y);
tp_status cpu_sum_squares(void *self, const tp_tensor *x, tp_tensor *out);
tp_status cpu_sgd_update(void *self, tp_tensor *param, const tp_tensor *grad,
                         tp_tensor *velocity, double lr, double momentum, double weight_decay,
                         int nesterov);
tp_status cpu_adam_update(void *self, tp_tensor *param, const tp_tensor *grad, tp_tensor *m,
                          tp_tensor *v, double lr, double beta1, double beta2, double eps,
                          double weight_decay, int decoupled, int64_t step);
/* API 1.6: lr (Adam: lr, 1 - beta1^t, 1 - beta2^t) read from `scalars`, nothing written
 * unless `gate` is finite. */
tp_status cpu_sgd_update_dev(void *self, tp_tensor *param, const tp_tensor *grad,
                             tp_tensor *velocity, const tp_tensor *scalars,
                             const tp_tensor *gate, double momentum, double weight_decay,
                             int nesterov);
tp_status cpu_adam_update_dev(void *self, tp_tensor *param, const tp_tensor *grad, tp_tensor *m,
                              tp_tensor *v, const tp_tensor *scalars, const tp_tensor *gate,
                              double beta1, double beta2, double eps, double weight_decay,
                              int decoupled);
/* API 1.7: the API 1.6 forms over a group of tensors, each with its own weight decay. */
tp_status cpu_sgd_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                   const tp_tensor *scalars, const tp_tensor *gate,
                                   double momentum, int nesterov);
tp_status cpu_adam_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                    const tp_tensor *scalars, const tp_tensor *gate,
                                    double beta1, double beta2, double eps, int decoupled);
/* API 1.8: *out = 0 when every element of the n tensors is finite, NaN otherwise. */
tp_status cpu_check_finite_group(void *self, const tp_tensor *const *xs, size_t n,
                                 tp_tensor *out);

#endif
