/* backend-cuda: fused optimizer steps (one kernel per parameter tensor instead of the
 * three or four axpby/scale passes an optimizer would otherwise compose). Semantics are
 * those of backend.h; the Adam bias corrections are computed here in double. The API 1.6
 * forms run the same kernels with the step's numbers read from device memory (so a CUDA
 * graph replays them with each step's values) and a finiteness gate. */
#include "config.h"

#include "backend_cuda.h"
#include "cuda_kernels.h"

#include <math.h>
#include <stdio.h>

static tp_status check_state(cuda_backend *b, const char *op, const char *param_name,
                             const tp_tensor *param, const char *const *names,
                             const tp_tensor *const *ts, int n)
{
    tp_status st = cuda_need_f32(b, op, param_name, param);
    for (int i = 0; !st && i < n; i++) {
        st = cuda_need_f32(b, op, names[i], ts[i]);
        if (!st)
            st = cuda_need_same_layout(b, op, param_name, param, names[i], ts[i]);
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
    tp_status st = check_state(b, op, "param", param, names, ts, 2);
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
    tp_status st = check_state(b, op, "param", param, names, ts, 3);
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

/* API 1.7: every item checked, then the tensors packed for ck_*_update_group. */
static tp_status group(cuda_backend *b, const char *op, const tp_update_item *items, size_t n,
                       int n_state, const tp_tensor *scalars, const tp_tensor *gate,
                       ck_update_tensor **out)
{
    *out = NULL;
    tp_status st;
    if (!scalars || !gate)
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: scalars and gate are required", op);
    if ((st = check_dev_scalars(b, op, scalars, n_state == 1 ? 1 : 3, gate)))
        return st;
    if (n > INT32_MAX || (n && !items))
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %zu items%s", op, n,
                             items ? " (at most 2^31-1)" : " but items is NULL");
    ck_update_tensor *ts = b->host->calloc(n ? n : 1, sizeof *ts);
    if (!ts)
        return b->host->fail(b->host, TP_ERR_NOMEM, "%s: out of host memory for %zu items", op,
                             n);
    for (size_t i = 0; i < n; i++) {
        const tp_update_item *it = &items[i];
        const tp_tensor *others[] = {it->grad, it->state[0], it->state[1]};
        char pname[48], onames[3][48];
        const char *names[3] = {onames[0], onames[1], onames[2]};
        snprintf(pname, sizeof pname, "items[%zu].param", i);
        snprintf(onames[0], sizeof onames[0], "items[%zu].grad", i);
        snprintf(onames[1], sizeof onames[1], "items[%zu].state[0]", i);
        snprintf(onames[2], sizeof onames[2], "items[%zu].state[1]", i);
        if ((st = check_state(b, op, pname, it->param, names, others, 1 + n_state))) {
            b->host->free(ts);
            return st;
        }
        ts[i] = (ck_update_tensor){it->param->data, it->grad->data, it->state[0]->data,
                                   n_state == 2 ? it->state[1]->data : NULL,
                                   tp_tensor_count(it->param), (float)it->weight_decay};
    }
    *out = ts;
    return TP_OK;
}

tp_status cuda_sgd_update_group_dev(cuda_backend *b, const tp_update_item *items, size_t n,
                                    const tp_tensor *scalars, const tp_tensor *gate,
                                    double momentum, int nesterov)
{
    ck_update_tensor *ts;
    tp_status st = group(b, "sgd_update_group_dev", items, n, 1, scalars, gate, &ts);
    if (st)
        return st;
    st = CUDA_RT(ck_sgd_update_group(ts, (int)n, (float)momentum, nesterov ? 1 : 0,
                                     scalars->data, gate->data, b->compute));
    b->host->free(ts);
    return st;
}

tp_status cuda_adam_update_group_dev(cuda_backend *b, const tp_update_item *items, size_t n,
                                     const tp_tensor *scalars, const tp_tensor *gate,
                                     double beta1, double beta2, double eps, int decoupled)
{
    static const char op[] = "adam_update_group_dev";
    if (!(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "%s: beta1 = %g, beta2 = %g must lie in [0, 1)", op, beta1, beta2);
    ck_update_tensor *ts;
    tp_status st = group(b, op, items, n, 2, scalars, gate, &ts);
    if (st)
        return st;
    st = CUDA_RT(ck_adam_update_group(ts, (int)n, (float)beta1, (float)beta2, (float)eps,
                                      decoupled ? 1 : 0, scalars->data, gate->data,
                                      b->compute));
    b->host->free(ts);
    return st;
}

/* API 1.8: the finiteness check of a group of tensors (the gradients, for the trainer's
 * update gate), packed like the grouped updates. */
tp_status cuda_check_finite_group(cuda_backend *b, const tp_tensor *const *xs, size_t n,
                                  tp_tensor *out)
{
    static const char op[] = "check_finite_group";
    tp_status st;
    if ((st = cuda_need_f32(b, op, "out", out)) || (st = cuda_need_count(b, op, "out", out, 1)))
        return st;
    if (n > INT32_MAX || (n && !xs))
        return b->host->fail(b->host, TP_ERR_INVALID, "%s: %zu tensors%s", op, n,
                             xs ? " (at most 2^31-1)" : " but xs is NULL");
    ck_update_tensor *ts = b->host->calloc(n ? n : 1, sizeof *ts);
    if (!ts)
        return b->host->fail(b->host, TP_ERR_NOMEM, "%s: out of host memory for %zu tensors",
                             op, n);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zu]", i);
        if ((st = cuda_need_f32(b, op, name, xs[i]))) {
            b->host->free(ts);
            return st;
        }
        ts[i] = (ck_update_tensor){NULL, xs[i]->data, NULL, NULL, tp_tensor_count(xs[i]), 0.0f};
    }
    st = CUDA_RT(ck_check_finite_group(ts, (int)n, out->data, b->compute));
    b->host->free(ts);
    return st;
}
