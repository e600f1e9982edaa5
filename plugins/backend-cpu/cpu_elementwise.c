/* backend-cpu: optimizer arithmetic (axpby, scale, sum of squares, the finiteness check of
 * a group of tensors) and the fused SGD and Adam/AdamW updates, as single-pass loops over
 * contiguous f32 data. The element-wise loops are shared out over the threads; the two
 * reductions stay on one thread, so their sums keep one order whatever the thread count. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

/* Checks that b matches a in shape and memory order, so flat loops line up. */
static tp_status check_flat_pair(cpu_backend *be, const char *op, const char *an,
                                 const tp_tensor *a, const char *bn, const tp_tensor *b)
{
    tp_status st;
    if ((st = cpu_check_f32(be, op, an, a, 0)) || (st = cpu_check_f32(be, op, bn, b, 0)) ||
        (st = cpu_check_same_shape(be, op, an, a, bn, b)))
        return st;
    if (a->ndim == 4 && a->layout != b->layout)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: %s and %s have different layouts", op, an, bn);
    return TP_OK;
}

tp_status cpu_axpby(void *self, double alpha, const tp_tensor *x, double beta, tp_tensor *y)
{
    cpu_backend *be = self;
    tp_status st;
    if ((st = cpu_check_f32(be, "axpby", "x", x, 0)) ||
        (st = cpu_check_f32(be, "axpby", "y", y, 0)) ||
        (st = cpu_check_same_shape(be, "axpby", "x", x, "y", y)))
        return st;
    const float *xp = x->data;
    float *yp = y->data;
    const float a = (float)alpha, b = (float)beta;
    if (x->ndim == 4 && x->layout != y->layout) {
        for (int64_t n = 0; n < x->shape[0]; n++)
            for (int64_t c = 0; c < x->shape[1]; c++)
                for (int64_t h = 0; h < x->shape[2]; h++)
                    for (int64_t w = 0; w < x->shape[3]; w++) {
                        float *yv = &yp[cpu_offset4(y, n, c, h, w)];
                        const float xv = xp[cpu_offset4(x, n, c, h, w)];
                        *yv = beta == 0 ? a * xv : a * xv + b * *yv;
                    }
        return TP_OK;
    }
    const int64_t count = (int64_t)cpu_count(x);
    cpu_apply_threads(be);
    if (beta == 0) { /* y's old contents (possibly NaN) must not leak in */
        CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < count; i++)
            yp[i] = a * xp[i];
    } else {
        CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < count; i++)
            yp[i] = a * xp[i] + b * yp[i];
    }
    return TP_OK;
}

tp_status cpu_scale(void *self, double alpha, tp_tensor *y)
{
    cpu_backend *be = self;
    tp_status st = cpu_check_f32(be, "scale", "y", y, 0);
    if (st)
        return st;
    float *p = y->data;
    const float a = (float)alpha;
    const int64_t count = (int64_t)cpu_count(y);
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
    for (int64_t i = 0; i < count; i++)
        p[i] *= a;
    return TP_OK;
}

tp_status cpu_sum_squares(void *self, const tp_tensor *x, tp_tensor *out)
{
    cpu_backend *be = self;
    tp_status st;
    if ((st = cpu_check_f32(be, "sum_squares", "x", x, 0)) ||
        (st = cpu_check_f32(be, "sum_squares", "out", out, 0)))
        return st;
    if (tp_tensor_count(out) != 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu sum_squares: out must hold one element, not %lld",
                              (long long)tp_tensor_count(out));
    const float *p = x->data;
    const size_t count = cpu_count(x);
    double s = 0; /* double: a million float squares would lose the small ones */
    for (size_t i = 0; i < count; i++)
        s += (double)p[i] * p[i];
    *(float *)out->data = (float)s;
    return TP_OK;
}

/* API 1.8: every tensor checked first; then one pass over each, testing the exponent bits
 * (all ones: infinite or NaN) with an integer OR, which the compiler vectorises without
 * reordering any float arithmetic. */
tp_status cpu_check_finite_group(void *self, const tp_tensor *const *xs, size_t n,
                                 tp_tensor *out)
{
    cpu_backend *be = self;
    static const char op[] = "check_finite_group";
    tp_status st = cpu_check_f32(be, op, "out", out, 0);
    if (st)
        return st;
    if (tp_tensor_count(out) != 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: out must hold one element, not %lld", op,
                              (long long)tp_tensor_count(out));
    if (n && !xs)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: xs is NULL", op);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zu]", i);
        if ((st = cpu_check_f32(be, op, name, xs[i], 0)))
            return st;
    }
    uint32_t nonfinite = 0;
    for (size_t i = 0; i < n && !nonfinite; i++) {
        const uint32_t *bits = xs[i]->data;
        const size_t count = cpu_count(xs[i]);
        for (size_t k = 0; k < count; k++)
            nonfinite |= (bits[k] & 0x7f800000u) == 0x7f800000u;
    }
    *(float *)out->data = nonfinite ? NAN : 0.0f;
    return TP_OK;
}

/* The API 1.6 step scalars (f32, at least `need` values) and gate (one f32); on this backend
 * "device" memory is host memory, so they are read directly. *apply = the gate is finite. */
static tp_status read_dev_scalars(cpu_backend *be, const char *op, const tp_tensor *scalars,
                                  int64_t need, const tp_tensor *gate, float *out, int *apply)
{
    if (!scalars || !gate || !scalars->data || !gate->data || scalars->dtype != TP_DTYPE_F32 ||
        gate->dtype != TP_DTYPE_F32 || tp_tensor_count(scalars) < need ||
        tp_tensor_count(gate) != 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: scalars must be f32 with at least %lld values "
                              "and gate one f32",
                              op, (long long)need);
    memcpy(out, scalars->data, (size_t)need * sizeof *out);
    *apply = isfinite(*(const float *)gate->data);
    return TP_OK;
}

static tp_status sgd(cpu_backend *be, const char *op, tp_tensor *param, const tp_tensor *grad,
                     tp_tensor *velocity, float lr_f, double momentum, double weight_decay,
                     int nesterov)
{
    tp_status st;
    if ((st = check_flat_pair(be, op, "param", param, "grad", grad)))
        return st;
    if (velocity && (st = check_flat_pair(be, op, "param", param, "velocity", velocity)))
        return st;
    if (!velocity && momentum != 0)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: momentum %g needs a velocity tensor", op, momentum);
    float *p = param->data;
    const float *g = grad->data;
    float *v = velocity ? velocity->data : NULL;
    const float mu = (float)momentum, wd = (float)weight_decay;
    const int64_t count = (int64_t)cpu_count(param);
    cpu_apply_threads(be);
    if (!v) {
        CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
        for (int64_t i = 0; i < count; i++)
            p[i] -= lr_f * (g[i] + wd * p[i]);
        return TP_OK;
    }
    CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
    for (int64_t i = 0; i < count; i++) {
        const float gi = g[i] + wd * p[i];
        const float vi = mu * v[i] + gi;
        v[i] = vi;
        p[i] -= lr_f * (nesterov ? gi + mu * vi : vi);
    }
    return TP_OK;
}

tp_status cpu_sgd_update(void *self, tp_tensor *param, const tp_tensor *grad,
                         tp_tensor *velocity, double lr, double momentum, double weight_decay,
                         int nesterov)
{
    return sgd(self, "sgd_update", param, grad, velocity, (float)lr, momentum, weight_decay,
               nesterov);
}

tp_status cpu_sgd_update_dev(void *self, tp_tensor *param, const tp_tensor *grad,
                             tp_tensor *velocity, const tp_tensor *scalars,
                             const tp_tensor *gate, double momentum, double weight_decay,
                             int nesterov)
{
    float lr;
    int apply;
    tp_status st = read_dev_scalars(self, "sgd_update_dev", scalars, 1, gate, &lr, &apply);
    if (st)
        return st;
    if (!apply) /* checked like the update would be, then nothing written */
        return check_flat_pair(self, "sgd_update_dev", "param", param, "grad", grad);
    return sgd(self, "sgd_update_dev", param, grad, velocity, lr, momentum, weight_decay,
               nesterov);
}

/* bc1, bc2: the bias corrections 1 - beta^t of this step. */
static tp_status adam(cpu_backend *be, const char *op, tp_tensor *param, const tp_tensor *grad,
                      tp_tensor *m, tp_tensor *v, double lr, double bc1, double bc2,
                      double beta1, double beta2, double eps, double weight_decay, int decoupled)
{
    tp_status st;
    if ((st = check_flat_pair(be, op, "param", param, "grad", grad)) ||
        (st = check_flat_pair(be, op, "param", param, "m", m)) ||
        (st = check_flat_pair(be, op, "param", param, "v", v)))
        return st;
    float *p = param->data, *mp = m->data, *vp = v->data;
    const float *g = grad->data;
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float eps_f = (float)eps, wd = (float)weight_decay;
    const float decay = (float)(1.0 - lr * weight_decay);
    const int64_t count = (int64_t)cpu_count(param);
    cpu_apply_threads(be);
    CPU_OMP(omp parallel for simd schedule(static) if (count >= CPU_PARALLEL_MIN))
    for (int64_t i = 0; i < count; i++) {
        float gi = g[i];
        if (decoupled)
            p[i] *= decay; /* AdamW: decay first, then the Adam step */
        else
            gi += wd * p[i];
        const float mi = b1 * mp[i] + (1.0f - b1) * gi;
        const float vi = b2 * vp[i] + (1.0f - b2) * gi * gi;
        mp[i] = mi;
        vp[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps_f);
    }
    return TP_OK;
}

tp_status cpu_adam_update(void *self, tp_tensor *param, const tp_tensor *grad, tp_tensor *m,
                          tp_tensor *v, double lr, double beta1, double beta2, double eps,
                          double weight_decay, int decoupled, int64_t step)
{
    cpu_backend *be = self;
    if (step < 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu adam_update: step %lld must be >= 1 (bias correction)",
                              (long long)step);
    return adam(be, "adam_update", param, grad, m, v, lr, 1.0 - pow(beta1, (double)step),
                1.0 - pow(beta2, (double)step), beta1, beta2, eps, weight_decay, decoupled);
}

tp_status cpu_adam_update_dev(void *self, tp_tensor *param, const tp_tensor *grad, tp_tensor *m,
                              tp_tensor *v, const tp_tensor *scalars, const tp_tensor *gate,
                              double beta1, double beta2, double eps, double weight_decay,
                              int decoupled)
{
    float s[3];
    int apply;
    tp_status st = read_dev_scalars(self, "adam_update_dev", scalars, 3, gate, s, &apply);
    if (st)
        return st;
    if (!apply)
        return check_flat_pair(self, "adam_update_dev", "param", param, "grad", grad);
    return adam(self, "adam_update_dev", param, grad, m, v, s[0], s[1], s[2], beta1, beta2,
                eps, weight_decay, decoupled);
}

/* API 1.7: every item checked first, so a bad one fails the call with nothing written; then
 * the single-tensor loops in order, which is what makes the result the single calls'. */
static tp_status check_group(cpu_backend *be, const char *op, const tp_update_item *items,
                             size_t n, int n_state)
{
    if (n && !items)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: items is NULL", op);
    for (size_t i = 0; i < n; i++) {
        const tp_update_item *it = &items[i];
        const tp_tensor *others[] = {it->grad, it->state[0], it->state[1]};
        char pname[48], oname[48];
        snprintf(pname, sizeof pname, "items[%zu].param", i);
        if (!it->param)
            return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: %s is NULL", op,
                                  pname);
        for (int k = 0; k < 1 + n_state; k++) {
            tp_status st;
            if (k == 0)
                snprintf(oname, sizeof oname, "items[%zu].grad", i);
            else
                snprintf(oname, sizeof oname, "items[%zu].state[%d]", i, k - 1);
            if (!others[k])
                return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: %s is NULL",
                                      op, oname);
            if ((st = check_flat_pair(be, op, pname, it->param, oname, others[k])))
                return st;
        }
    }
    return TP_OK;
}

tp_status cpu_sgd_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                   const tp_tensor *scalars, const tp_tensor *gate,
                                   double momentum, int nesterov)
{
    static const char op[] = "sgd_update_group_dev";
    float lr = 0;
    int apply = 0;
    tp_status st = read_dev_scalars(self, op, scalars, 1, gate, &lr, &apply);
    if (st || (st = check_group(self, op, items, n, 1)) || !apply)
        return st;
    for (size_t i = 0; i < n && !st; i++)
        st = sgd(self, op, items[i].param, items[i].grad, items[i].state[0], lr, momentum,
                 items[i].weight_decay, nesterov);
    return st;
}

tp_status cpu_adam_update_group_dev(void *self, const tp_update_item *items, size_t n,
                                    const tp_tensor *scalars, const tp_tensor *gate,
                                    double beta1, double beta2, double eps, int decoupled)
{
    static const char op[] = "adam_update_group_dev";
    float s[3] = {0};
    int apply = 0;
    tp_status st = read_dev_scalars(self, op, scalars, 3, gate, s, &apply);
    if (st || (st = check_group(self, op, items, n, 2)) || !apply)
        return st;
    for (size_t i = 0; i < n && !st; i++)
        st = adam(self, op, items[i].param, items[i].grad, items[i].state[0], items[i].state[1],
                  s[0], s[1], s[2], beta1, beta2, eps, items[i].weight_decay, decoupled);
    return st;
}
