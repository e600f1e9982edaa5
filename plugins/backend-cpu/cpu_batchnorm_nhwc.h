/* backend-cpu: batch normalisation of channels-last tensors on the plugin's own loops
 * (cpu_batchnorm_nhwc.c), for the shapes where they beat oneDNN's channels-last kernel.
 * cpu_batchnorm.c decides which path a call takes; both paths follow the contract of
 * <trainpipe/backend.h>. */
#ifndef TRAINPIPE_CPU_BATCHNORM_NHWC_H
#define TRAINPIPE_CPU_BATCHNORM_NHWC_H

#include "cpu_backend.h"

/* Whether x (and so every activation of the call, which the caller checks to share x's
 * layout and dtype) takes these loops: NHWC, f32 or bf16, and a multiple of 16 channels
 * above 16 (exactly 16 stays on oneDNN's blocked kernel, which is faster). */
int cpu_bn_nhwc_applies(const tp_tensor *x);

/* Training forward: batch statistics into mean_out and var_out (the biased variance, C
 * each), and y = gamma (x - mean) / sqrt(var + eps) + beta, with max(0, .) when relu. y may
 * be x. */
tp_status cpu_bn_nhwc_train(cpu_backend *be, const tp_tensor *x, const tp_tensor *gamma,
                            const tp_tensor *beta, double eps, int relu, tp_tensor *y,
                            float *mean_out, float *var_out);

/* Backward from the saved statistics: dx, dgamma and dbeta (C each). With y (the fused
 * ReLU's output) the gradient passes only where y > 0. dx may be dy. */
tp_status cpu_bn_nhwc_backward(cpu_backend *be, const tp_tensor *x, const tp_tensor *y,
                               const tp_tensor *dy, const tp_tensor *gamma,
                               const tp_tensor *save_mean, const tp_tensor *save_invstd,
                               tp_tensor *dx, float *dgamma, float *dbeta);

#endif
