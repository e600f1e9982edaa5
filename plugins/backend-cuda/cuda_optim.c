/* backend-cuda: fused optimizer steps (one kernel per parameter tensor instead of the
 * three or four axpby/scale passes an optimizer would otherwise compose). Semantics are
 * those of backend.h; the Adam bias corrections are computed here in double. The API 1.6
 * forms run the same kernels with the step's numbers read from device memory (so a CUDA
 * graph replays them with each step's values) and a finiteness gate. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

#include <math.h>

static tp_status check_state(cuda_backend *b, const char *op, const tp_tensor *param,
                             const char *const *names, const tp_tensor *const *ts, int n)
{
    tp_status st = cuda_need_f32(b, op, "param", param);
    for (int i = 0; !st && i < n; i++) {
        st = cuda_need_f32(b, op, names[i], ts[i]);
        if (!st)
            st = cuda_need_same_layout(b, op, "param", param, names[i], ts[i]);
    }
    return st;
}

/* The API 1.6 step scalars: an f32 device tensor of at least `need` values, and the gate, an
 * f32 device scalar. */
static tp_status check_dev_scalars(cuda_backend *b, const char *op, const tp_tensor *scalars,
                                   int64_t need, const tp_tensor *gate)
{
    tp_status st;
    if ((st = cuda_need_f32(b, op, "scalars", scalars)) ||
        (st = cuda_need_f32(b, op, "gate", gate)))
        return st;
    if (tp_tensor_count(scalars) < need)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: scalars has %lld values, needs %lld",
                             op, (long long)tp_tensor_count(scalars), (long long)need);
    return cuda_need_count(b, op, "gate", gate, 1);
}

static tp_status sgd(cuda_backend *b, const char *op, tp_tensor *param, const tp_tensor *grad,
                     tp_tensor *velocity, double lr, const tp_tensor *scalars,
                     const tp_tensor *gate, double momentum, double weight_decay, int nesterov)
{
    static const char *const names[] = {"grad", "velocity"};
    const tp_tensor *ts[] = {grad, velocity};
    tp_status st = check_state(b, op, param, names, ts, 2);
    if (st || (scalars && (st = check_dev_scalars(b, op, scalars, 1, gate))))
        return st;
    return CUDA_RT(ck_sgd_update(param->data, grad->data, velocity->data,
                                 tp_tensor_count(param), (float)lr, (float)momentum,
                                 (float)weight_decay, nesterov ? 1 : 0,
                                 scalars ? scalars->data : NULL, gate ? gate->data : NULL,
                                 b->compute));
}

tp_status cuda_sgd_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                          tp_tensor *velocity, double lr, double momentum, double weight_decay,
                          int nesterov)
{
    return sgd(b, "sgd_update", param, grad, velocity, lr, NULL, NULL, momentum, weight_decay,
               nesterov);
}

tp_status cuda_sgd_update_dev(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                              tp_tensor *velocity, const tp_tensor *scalars,
                              const tp_tensor *gate, double momentum, double weight_decay,
                              int nesterov)
{
    if (!scalars || !gate)
        return b->host->fail(b->host, TP_ERR_INVALID, "sgd_update_dev: scalars and gate are "
                                                      "required");
    return sgd(b, "sgd_update_dev", param, grad, velocity, 0.0, scalars, gate, momentum,
               weight_decay, nesterov);
}

static tp_status adam(cuda_backend *b, const char *op, tp_tensor *param, const tp_tensor *grad,
                      tp_tensor *m, tp_tensor *v, double lr, double bc1, double bc2,
                      const tp_tensor *scalars, const tp_tensor *gate, double beta1,
                      double beta2, double eps, double weight_decay, int decoupled)
{
    static const char *const names[] = {"grad", "m", "v"};
    const tp_tensor *ts[] = {grad, m, v};
    tp_status st = check_state(b, op, param, names, ts, 3);
    if (st || (scalars && (st = check_dev_scalars(b, op, scalars, 3, gate))))
        return st;
    if (!(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: beta1 = %g, beta2 = %g must lie in [0, 1)", op, beta1, beta2);
    return CUDA_RT(ck_adam_update(param->data, grad->data, m->data, v->data,
                                  tp_tensor_count(param), (float)lr, (float)beta1, (float)beta2,
                                  (float)eps, (float)weight_decay, decoupled ? 1 : 0,
                                  (float)bc1, (float)bc2, scalars ? scalars->data : NULL,
                                  gate ? gate->data : NULL, b->compute));
}

tp_status cuda_adam_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                           tp_tensor *m, tp_tensor *v, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int decoupled, int64_t step)
{
    if (step < 1)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "adam_update: step = %lld must be >= 1 (it counts from 1)",
                             (long long)step);
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    return adam(b, "adam_update", param, grad, m, v, lr, bc1, bc2, NULL, NULL, beta1, beta2,
                eps, weight_decay, decoupled);
}

tp_status cuda_adam_update_dev(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                               tp_tensor *m, tp_tensor *v, const tp_tensor *scalars,
                               const tp_tensor *gate, double beta1, double beta2, double eps,
                               double weight_decay, int decoupled)
{
    if (!scalars || !gate)
        return b->host->fail(b->host, TP_ERR_INVALID, "adam_update_dev: scalars and gate are "
                                                      "required");
    return adam(b, "adam_update_dev", param, grad, m, v, 0.0, 1.0, 1.0, scalars, gate, beta1,
                beta2, eps, weight_decay, decoupled);
}
