/* optim-adam: Adam and AdamW, PyTorch's torch.optim.Adam / AdamW semantics (amsgrad off):
 *     Adam:  g = grad + wd * p                  (coupled L2)
 *     AdamW: p = p * (1 - lr * wd)              (decoupled, before the update)
 *     m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
 *     p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * t is the step number counted from 1. eps defaults to PyTorch's 1e-8; Keras uses 1e-7 (and
 * puts eps inside its bias correction slightly differently), so set eps = 1e-7 to follow the
 * Keras CIFAR-10 example closely.
 *
 * The backend's fused adam_update is used when present. Backend arithmetic has no square
 * root or division, so otherwise the update runs on the host (copy out, update, copy back):
 * correct everywhere, fast only where the backend fuses it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <trainpipe/trainpipe.h>

typedef struct adam_config {
    double lr;
    double beta1, beta2;
    double eps;
    double weight_decay;
    int decoupled;
    int exclude_bn_bias_decay;
} adam_config;

typedef struct adam {
    const tp_host *host;
    adam_config cfg;
    const tp_backend *backend;
    const tp_param_ref *params;
    size_t n_params;
    tp_tensor *m, *v;       /* n_params each */
    char **names;           /* 2 * n_params: exp_avg/..., then exp_avg_sq/... */
    float *host_buf;        /* 4 x the largest parameter, for the host fallback */
    tp_update_item *items;  /* n_params, for the backend's grouped update (API 1.7), or NULL */
} adam;

static const tp_param_def adam_params[] = {
    TP_PARAM_DEF_FLOAT(adam_config, lr, "lr", "1e-3", 0, 1e6,
                       "base learning rate (the schedule multiplies it)"),
    TP_PARAM_DEF_FLOAT(adam_config, beta1, "beta1", "0.9", 0, 0.999999999,
                       "decay of the first-moment average"),
    TP_PARAM_DEF_FLOAT(adam_config, beta2, "beta2", "0.999", 0, 0.999999999,
                       "decay of the second-moment average"),
    TP_PARAM_DEF_FLOAT(adam_config, eps, "eps", "1e-8", 0, 1,
                       "added to the denominator (PyTorch 1e-8; Keras 1e-7)"),
    TP_PARAM_DEF_FLOAT(adam_config, weight_decay, "weight_decay", "0", 0, 1,
                       "L2 penalty (Adam) or decoupled decay rate (AdamW)"),
    TP_PARAM_DEF_BOOL(adam_config, decoupled, "decoupled", "false",
                      "decoupled weight decay (AdamW, Loshchilov and Hutter)"),
    TP_PARAM_DEF_BOOL(adam_config, exclude_bn_bias_decay, "exclude_bn_bias_decay", "false",
                      "apply weight decay to conv/linear weights only, not biases or BN"),
};

static tp_status adam_create(const tp_host *host, const void *config, void **self)
{
    adam *a = host->calloc(1, sizeof *a);
    if (!a)
        return host->fail(host, TP_ERR_NOMEM, "adam: cannot allocate the optimizer");
    a->host = host;
    a->cfg = *(const adam_config *)config;
    *self = a;
    return TP_OK;
}

static void release_state(adam *a)
{
    for (size_t i = 0; i < a->n_params; i++) {
        if (a->m && a->m[i].data)
            a->backend->ops->free(a->backend->self, &a->m[i]);
        if (a->v && a->v[i].data)
            a->backend->ops->free(a->backend->self, &a->v[i]);
    }
    for (size_t i = 0; a->names && i < 2 * a->n_params; i++)
        a->host->free(a->names[i]);
    a->host->free(a->m);
    a->host->free(a->v);
    a->host->free(a->names);
    a->host->free(a->host_buf);
    a->host->free(a->items);
    a->m = a->v = NULL;
    a->names = NULL;
    a->host_buf = NULL;
    a->items = NULL;
    a->n_params = 0;
}

static void adam_destroy(void *self)
{
    adam *a = self;
    if (!a)
        return;
    release_state(a);
    a->host->free(a);
}

static double adam_base_lr(void *self) { return ((adam *)self)->cfg.lr; }

static char *state_name(const tp_host *h, const char *prefix, const char *param)
{
    size_t len = strlen(prefix) + strlen(param) + 1;
    char *s = h->alloc(len);
    if (s)
        snprintf(s, len, "%s%s", prefix, param);
    return s;
}

static tp_status alloc_zero(const tp_backend *be, tp_tensor *t, const tp_tensor *like,
                            const char *name)
{
    *t = *like;
    t->data = NULL;
    tp_status st = be->ops->alloc(be->self, t, name);
    if (st != TP_OK) {
        t->data = NULL;
        return st;
    }
    return be->ops->fill(be->self, t, 0.0);
}

/* The weight decay of parameter p: none for batch-norm parameters and biases with
 * exclude_bn_bias_decay. */
static double decay_of(const adam *a, const tp_param_ref *p)
{
    return a->cfg.exclude_bn_bias_decay && p->role != TP_ROLE_WEIGHT ? 0.0
                                                                      : a->cfg.weight_decay;
}

static tp_status adam_setup(void *self, const tp_backend *backend, const tp_param_ref *params,
                            size_t n_params)
{
    adam *a = self;
    const tp_host *h = a->host;
    release_state(a);
    a->backend = backend;
    a->params = params;
    size_t n = n_params ? n_params : 1;
    a->m = h->calloc(n, sizeof *a->m);
    a->v = h->calloc(n, sizeof *a->v);
    a->names = h->calloc(2 * n, sizeof *a->names);
    if (!a->m || !a->v || !a->names)
        goto nomem;
    a->n_params = n_params;
    size_t largest = 1;
    for (size_t i = 0; i < n_params; i++) {
        a->names[i] = state_name(h, "exp_avg/", params[i].name);
        a->names[n_params + i] = state_name(h, "exp_avg_sq/", params[i].name);
        if (!a->names[i] || !a->names[n_params + i])
            goto nomem;
        tp_status st = alloc_zero(backend, &a->m[i], params[i].value, a->names[i]);
        if (st == TP_OK)
            st = alloc_zero(backend, &a->v[i], params[i].value, a->names[n_params + i]);
        if (st != TP_OK) {
            release_state(a);
            return st;
        }
        if ((size_t)tp_tensor_count(params[i].value) > largest)
            largest = (size_t)tp_tensor_count(params[i].value);
    }
    if (!backend->ops->adam_update) {
        a->host_buf = h->alloc(4 * largest * sizeof(float));
        if (!a->host_buf)
            goto nomem;
    }
    /* API 1.7: the device-side update as one grouped call. */
    if (TP_BACKEND_HAS(backend->ops, adam_update_group_dev)) {
        a->items = h->calloc(n, sizeof *a->items);
        if (!a->items)
            goto nomem;
        for (size_t i = 0; i < n_params; i++)
            a->items[i] = (tp_update_item){params[i].value, params[i].grad,
                                           {&a->m[i], &a->v[i]}, decay_of(a, &params[i])};
    }
    return TP_OK;
nomem:
    release_state(a);
    return h->fail(h, TP_ERR_NOMEM, "adam: out of memory for %zu parameters", n_params);
}

/* dst (host) <-> src (backend), same shape. */
static tp_status transfer(const tp_backend *be, tp_tensor *dst, const tp_tensor *src,
                          float *host, int to_host)
{
    tp_tensor h = to_host ? *src : *dst;
    h.device = TP_DEVICE_HOST;
    h.data = host;
    return to_host ? be->ops->copy(be->self, &h, src, TP_STREAM_COMPUTE)
                   : be->ops->copy(be->self, dst, &h, TP_STREAM_COMPUTE);
}

/* The update on the host, in double precision per element. */
static tp_status host_update(adam *a, size_t i, double lr, double wd, int64_t step)
{
    const tp_backend *be = a->backend;
    const tp_param_ref *p = &a->params[i];
    size_t n = (size_t)tp_tensor_count(p->value);
    float *hp = a->host_buf, *hg = hp + n, *hm = hg + n, *hv = hm + n;
    tp_status st = transfer(be, NULL, p->value, hp, 1);
    if (st == TP_OK) st = transfer(be, NULL, p->grad, hg, 1);
    if (st == TP_OK) st = transfer(be, NULL, &a->m[i], hm, 1);
    if (st == TP_OK) st = transfer(be, NULL, &a->v[i], hv, 1);
    if (st == TP_OK) st = be->ops->sync(be->self);
    if (st != TP_OK)
        return st;
    const adam_config *c = &a->cfg;
    double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
    for (size_t k = 0; k < n; k++) {
        double pv = hp[k], g = hg[k];
        if (c->decoupled)
            pv *= 1.0 - lr * wd;
        else
            g += wd * pv;
        double m = c->beta1 * hm[k] + (1.0 - c->beta1) * g;
        double v = c->beta2 * hv[k] + (1.0 - c->beta2) * g * g;
        pv -= lr * (m / bc1) / (sqrt(v / bc2) + c->eps);
        hp[k] = (float)pv;
        hm[k] = (float)m;
        hv[k] = (float)v;
    }
    st = transfer(be, p->value, NULL, hp, 0);
    if (st == TP_OK) st = transfer(be, &a->m[i], NULL, hm, 0);
    if (st == TP_OK) st = transfer(be, &a->v[i], NULL, hv, 0);
    if (st == TP_OK) st = be->ops->sync(be->self); /* the host buffer is reused next */
    return st;
}


static tp_status adam_step(void *self, double lr, int64_t step)
{
    adam *a = self;
    if (step < 1)
        return a->host->fail(a->host, TP_ERR_INVALID, "adam: step %lld must count from 1",
                             (long long)step);
    const tp_backend_ops *o = a->backend->ops;
    for (size_t i = 0; i < a->n_params; i++) {
        const tp_param_ref *p = &a->params[i];
        double wd = decay_of(a, p);
        tp_status st;
        if (o->adam_update)
            st = o->adam_update(a->backend->self, p->value, p->grad, &a->m[i], &a->v[i], lr,
                                a->cfg.beta1, a->cfg.beta2, a->cfg.eps, wd, a->cfg.decoupled,
                                step);
        else
            st = host_update(a, i, lr, wd, step);
        if (st != TP_OK)
            return st;
    }
    return TP_OK;
}

/* API 1.6: [lr, 1 - beta1^t, 1 - beta2^t], computed as the backend's adam_update does (in
 * double, then rounded), so both forms make the same update. */
static int adam_device_scalars(void *self, double lr, int64_t step, float *out)
{
    adam *a = self;
    if (!a->backend || !a->backend->ops->adam_update_dev || step < 1)
        return 0;
    out[0] = (float)lr;
    out[1] = (float)(1.0 - pow(a->cfg.beta1, (double)step));
    out[2] = (float)(1.0 - pow(a->cfg.beta2, (double)step));
    return 3;
}

static tp_status adam_step_device(void *self, const tp_tensor *scalars, const tp_tensor *gate)
{
    adam *a = self;
    const tp_backend_ops *o = a->backend ? a->backend->ops : NULL;
    if (!o || !o->adam_update_dev)
        return a->host->fail(a->host, TP_ERR_UNSUPPORTED,
                             "adam: the backend has no adam_update_dev (plugin API 1.6)");
    if (a->items)
        return o->adam_update_group_dev(a->backend->self, a->items, a->n_params, scalars, gate,
                                        a->cfg.beta1, a->cfg.beta2, a->cfg.eps,
                                        a->cfg.decoupled);
    for (size_t i = 0; i < a->n_params; i++) {
        const tp_param_ref *p = &a->params[i];
        double wd = decay_of(a, p);
        tp_status st = o->adam_update_dev(a->backend->self, p->value, p->grad, &a->m[i],
                                          &a->v[i], scalars, gate, a->cfg.beta1, a->cfg.beta2,
                                          a->cfg.eps, wd, a->cfg.decoupled);
        if (st != TP_OK)
            return st;
    }
    return TP_OK;
}

static size_t adam_state_count(void *self) { return 2 * ((adam *)self)->n_params; }

static tp_status adam_state_get(void *self, size_t i, tp_state_ref *out)
{
    adam *a = self;
    if (i >= 2 * a->n_params)
        return a->host->fail(a->host, TP_ERR_NOT_FOUND, "adam: no state tensor %zu", i);
    out->name = a->names[i];
    out->value = i < a->n_params ? &a->m[i] : &a->v[i - a->n_params];
    return TP_OK;
}

static const tp_optimizer_ops adam_ops = {
    .size = sizeof(tp_optimizer_ops),
    .base_lr = adam_base_lr,
    .setup = adam_setup,
    .step = adam_step,
    .state_count = adam_state_count,
    .state_get = adam_state_get,
    .device_scalars = adam_device_scalars,
    .step_device = adam_step_device,
};

static const tp_component adam_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_OPTIMIZER,
    .name = "adam",
    .summary = "Adam / AdamW (PyTorch semantics)",
    .params = adam_params,
    .n_params = sizeof(adam_params) / sizeof(adam_params[0]),
    .config_size = sizeof(adam_config),
    .create = adam_create,
    .destroy = adam_destroy,
    .ops = &adam_ops,
};

static const tp_component *const adam_components[] = {&adam_component};

static const tp_plugin_info adam_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "optim-adam",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "Adam and AdamW",
    .components = adam_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &adam_info; }
