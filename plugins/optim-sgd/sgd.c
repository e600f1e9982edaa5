/* optim-sgd: stochastic gradient descent with momentum, PyTorch's torch.optim.SGD semantics
 * (dampening 0):
 *     g = grad + wd * p        (coupled L2 weight decay)
 *     v = momentum * v + g     (v starts at 0, so the first step has v = g)
 *     p = p - lr * (nesterov ? g + momentum * v : v)
 * With momentum 0 there is no state and p = p - lr * g.
 * exclude_bn_bias_decay applies weight decay to convolution and linear weights only (not to
 * biases or batch-norm gamma/beta), as in Goyal et al. 2017 and many ImageNet recipes.
 *
 * The backend's fused sgd_update is used when present; otherwise the update is composed of
 * axpby calls, so it runs on any backend. The device-side form (API 1.6) goes through the
 * backend's grouped update (API 1.7) where it has one. */
#include <stdio.h>
#include <string.h>

#include <trainpipe/trainpipe.h>

typedef struct sgd_config {
    double lr;
    double momentum;
    int nesterov;
    double weight_decay;
    int exclude_bn_bias_decay;
} sgd_config;

typedef struct sgd {
    const tp_host *host;
    sgd_config cfg;
    const tp_backend *backend;
    const tp_param_ref *params;
    size_t n_params;
    tp_tensor *velocity; /* n_params, or NULL without momentum */
    char **state_names;
    tp_update_item *items; /* n_params, for the backend's grouped update (API 1.7), or NULL */
} sgd;

static const tp_param_def sgd_params[] = {
    TP_PARAM_DEF_FLOAT(sgd_config, lr, "lr", "0.1", 0, 1e6,
                       "base learning rate (the schedule multiplies it)"),
    TP_PARAM_DEF_FLOAT(sgd_config, momentum, "momentum", "0.9", 0, 1, "momentum factor"),
    TP_PARAM_DEF_BOOL(sgd_config, nesterov, "nesterov", "false", "Nesterov momentum"),
    TP_PARAM_DEF_FLOAT(sgd_config, weight_decay, "weight_decay", "0", 0, 1,
                       "L2 penalty added to the gradient (coupled weight decay)"),
    TP_PARAM_DEF_BOOL(sgd_config, exclude_bn_bias_decay, "exclude_bn_bias_decay", "false",
                      "apply weight decay to conv/linear weights only, not biases or BN"),
};

static tp_status sgd_create(const tp_host *host, const void *config, void **self)
{
    const sgd_config *cfg = config;
    if (cfg->nesterov && cfg->momentum <= 0)
        return host->fail(host, TP_ERR_INVALID, "sgd: nesterov = true needs momentum > 0");
    sgd *s = host->calloc(1, sizeof *s);
    if (!s)
        return host->fail(host, TP_ERR_NOMEM, "sgd: cannot allocate the optimizer");
    s->host = host;
    s->cfg = *cfg;
    *self = s;
    return TP_OK;
}

static void release_state(sgd *s)
{
    for (size_t i = 0; s->velocity && i < s->n_params; i++)
        if (s->velocity[i].data)
            s->backend->ops->free(s->backend->self, &s->velocity[i]);
    for (size_t i = 0; s->state_names && i < s->n_params; i++)
        s->host->free(s->state_names[i]);
    s->host->free(s->velocity);
    s->host->free(s->state_names);
    s->host->free(s->items);
    s->velocity = NULL;
    s->state_names = NULL;
    s->items = NULL;
}

static void sgd_destroy(void *self)
{
    sgd *s = self;
    if (!s)
        return;
    release_state(s);
    s->host->free(s);
}

static double sgd_base_lr(void *self) { return ((sgd *)self)->cfg.lr; }

/* The weight decay of parameter p: none for batch-norm parameters and biases with
 * exclude_bn_bias_decay. */
static double decay_of(const sgd *s, const tp_param_ref *p)
{
    return s->cfg.exclude_bn_bias_decay && p->role != TP_ROLE_WEIGHT ? 0.0
                                                                      : s->cfg.weight_decay;
}

static tp_status sgd_setup(void *self, const tp_backend *backend, const tp_param_ref *params,
                           size_t n_params)
{
    sgd *s = self;
    const tp_host *h = s->host;
    release_state(s);
    if (!backend || !backend->ops->axpby)
        return h->fail(h, TP_ERR_UNSUPPORTED, "sgd: the backend has no axpby operation");
    s->backend = backend;
    s->params = params;
    s->n_params = n_params;
    if (s->cfg.momentum == 0)
        return TP_OK;
    s->velocity = h->calloc(n_params ? n_params : 1, sizeof *s->velocity);
    s->state_names = h->calloc(n_params ? n_params : 1, sizeof *s->state_names);
    if (!s->velocity || !s->state_names)
        goto nomem;
    for (size_t i = 0; i < n_params; i++) {
        size_t len = strlen(params[i].name) + sizeof "momentum_buffer/";
        s->state_names[i] = h->alloc(len);
        if (!s->state_names[i])
            goto nomem;
        snprintf(s->state_names[i], len, "momentum_buffer/%s", params[i].name);
        s->velocity[i] = *params[i].value;
        s->velocity[i].data = NULL;
        tp_status st = backend->ops->alloc(backend->self, &s->velocity[i], s->state_names[i]);
        if (st == TP_OK)
            st = backend->ops->fill(backend->self, &s->velocity[i], 0.0);
        if (st != TP_OK) {
            release_state(s);
            return st;
        }
    }
    /* API 1.7: the device-side update as one grouped call (a few kernel launches on a GPU
     * instead of one per tensor). */
    if (TP_BACKEND_HAS(backend->ops, sgd_update_group_dev)) {
        s->items = h->calloc(n_params ? n_params : 1, sizeof *s->items);
        if (!s->items)
            goto nomem;
        for (size_t i = 0; i < n_params; i++)
            s->items[i] = (tp_update_item){params[i].value, params[i].grad,
                                           {&s->velocity[i], NULL}, decay_of(s, &params[i])};
    }
    return TP_OK;
nomem:
    release_state(s);
    return h->fail(h, TP_ERR_NOMEM, "sgd: out of memory for %zu parameters", n_params);
}

static tp_status sgd_step(void *self, double lr, int64_t step)
{
    sgd *s = self;
    const tp_backend_ops *o = s->backend->ops;
    void *be = s->backend->self;
    double m = s->cfg.momentum;
    (void)step;
    for (size_t i = 0; i < s->n_params; i++) {
        const tp_param_ref *p = &s->params[i];
        double wd = decay_of(s, p);
        tp_status st;
        if (!s->velocity) {
            /* p = (1 - lr wd) p - lr g */
            st = o->axpby(be, -lr, p->grad, 1.0 - lr * wd, p->value);
        } else if (o->sgd_update) {
            st = o->sgd_update(be, p->value, p->grad, &s->velocity[i], lr, m, wd,
                               s->cfg.nesterov);
        } else {
            tp_tensor *v = &s->velocity[i];
            /* v = m v + g + wd p */
            st = o->axpby(be, 1.0, p->grad, m, v);
            if (st == TP_OK && wd != 0)
                st = o->axpby(be, wd, p->value, 1.0, v);
            if (st == TP_OK && !s->cfg.nesterov) {
                st = o->axpby(be, -lr, v, 1.0, p->value); /* p -= lr v */
            } else if (st == TP_OK) {
                /* p -= lr (g + wd p) + lr m v, with the decay using p before the update */
                st = o->axpby(be, -lr, p->grad, 1.0 - lr * wd, p->value);
                if (st == TP_OK)
                    st = o->axpby(be, -lr * m, v, 1.0, p->value);
            }
        }
        if (st != TP_OK)
            return st;
    }
    return TP_OK;
}

/* API 1.6: [lr]. Momentum SGD only (plain SGD composes axpby, whose scalars the host
 * passes). */
static int has_device_form(const sgd *s)
{
    return s->backend && s->velocity && s->backend->ops->sgd_update_dev;
}

static int sgd_device_scalars(void *self, double lr, int64_t step, float *out)
{
    sgd *s = self;
    (void)step;
    if (!has_device_form(s))
        return 0;
    out[0] = (float)lr;
    return 1;
}

static tp_status sgd_step_device(void *self, const tp_tensor *scalars, const tp_tensor *gate)
{
    sgd *s = self;
    if (!has_device_form(s))
        return s->host->fail(s->host, TP_ERR_UNSUPPORTED,
                             "sgd: no device-side update here (it needs momentum and the "
                             "backend's sgd_update_dev, plugin API 1.6)");
    const tp_backend_ops *o = s->backend->ops;
    if (s->items)
        return o->sgd_update_group_dev(s->backend->self, s->items, s->n_params, scalars, gate,
                                       s->cfg.momentum, s->cfg.nesterov);
    for (size_t i = 0; i < s->n_params; i++) {
        const tp_param_ref *p = &s->params[i];
        double wd = decay_of(s, p);
        tp_status st = o->sgd_update_dev(s->backend->self, p->value, p->grad, &s->velocity[i],
                                         scalars, gate, s->cfg.momentum, wd, s->cfg.nesterov);
        if (st != TP_OK)
            return st;
    }
    return TP_OK;
}

static size_t sgd_state_count(void *self)
{
    sgd *s = self;
    return s->velocity ? s->n_params : 0;
}

static tp_status sgd_state_get(void *self, size_t i, tp_state_ref *out)
{
    sgd *s = self;
    if (!s->velocity || i >= s->n_params)
        return s->host->fail(s->host, TP_ERR_NOT_FOUND, "sgd: no state tensor %zu", i);
    out->name = s->state_names[i];
    out->value = &s->velocity[i];
    return TP_OK;
}

static const tp_optimizer_ops sgd_ops = {
    .size = sizeof(tp_optimizer_ops),
    .base_lr = sgd_base_lr,
    .setup = sgd_setup,
    .step = sgd_step,
    .state_count = sgd_state_count,
    .state_get = sgd_state_get,
    .device_scalars = sgd_device_scalars,
    .step_device = sgd_step_device,
};

static const tp_component sgd_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_OPTIMIZER,
    .name = "sgd",
    .summary = "SGD with (Nesterov) momentum and coupled L2 weight decay (PyTorch semantics)",
    .params = sgd_params,
    .n_params = sizeof(sgd_params) / sizeof(sgd_params[0]),
    .config_size = sizeof(sgd_config),
    .create = sgd_create,
    .destroy = sgd_destroy,
    .ops = &sgd_ops,
};

static const tp_component *const sgd_components[] = {&sgd_component};

static const tp_plugin_info sgd_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "optim-sgd",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "momentum SGD",
    .components = sgd_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &sgd_info; }
