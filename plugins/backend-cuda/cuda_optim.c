/* backend-cuda: fused optimizer steps (one kernel per parameter tensor instead of the
 * three or four axpby/scale passes an optimizer would otherwise compose). Semantics are
 * those of backend.h; the Adam bias corrections are computed here in double. */
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

tp_status cuda_sgd_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                          tp_tensor *velocity, double lr, double momentum, double weight_decay,
                          int nesterov)
{
    static const char *const names[] = {"grad", "velocity"};
    const tp_tensor *ts[] = {grad, velocity};
    tp_status st = check_state(b, "sgd_update", param, names, ts, 2);
    if (st)
        return st;
    return CUDA_RT(ck_sgd_update(param->data, grad->data, velocity->data,
                                 tp_tensor_count(param), (float)lr, (float)momentum,
                                 (float)weight_decay, nesterov ? 1 : 0, b->compute));
}

tp_status cuda_adam_update(cuda_backend *b, tp_tensor *param, const tp_tensor *grad,
                           tp_tensor *m, tp_tensor *v, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int decoupled, int64_t step)
{
    static const char *const names[] = {"grad", "m", "v"};
    const tp_tensor *ts[] = {grad, m, v};
    tp_status st = check_state(b, "adam_update", param, names, ts, 3);
    if (st)
        return st;
    if (step < 1)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "adam_update: step = %lld must be >= 1 (it counts from 1)",
                             (long long)step);
    if (!(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "adam_update: beta1 = %g, beta2 = %g must lie in [0, 1)", beta1,
                             beta2);
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    return CUDA_RT(ck_adam_update(param->data, grad->data, m->data, v->data,
                                  tp_tensor_count(param), (float)lr, (float)beta1, (float)beta2,
                                  (float)eps, (float)weight_decay, decoupled ? 1 : 0,
                                  (float)bc1, (float)bc2, b->compute));
}
