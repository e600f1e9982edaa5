/* The network graph: builder, shape inference, binding to a backend, forward and backward.
 * See graph.h for the conventions. */
#include "config.h"

#include "graph.h"
#include "services.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef enum node_op {
    OP_INPUT,
    OP_CONV,
    OP_BN,
    OP_RELU,
    OP_ADD,
    OP_MAXPOOL,
    OP_AVGPOOL,
    OP_GAP,
    OP_LINEAR,
    OP_SUBPAD
} node_op;

static const char *const op_names[] = {
    [OP_INPUT] = "input",     [OP_CONV] = "conv",       [OP_BN] = "batchnorm",
    [OP_RELU] = "relu",       [OP_ADD] = "add",         [OP_MAXPOOL] = "maxpool",
    [OP_AVGPOOL] = "avgpool", [OP_GAP] = "global_avgpool", [OP_LINEAR] = "linear",
    [OP_SUBPAD] = "subsample_pad",
};

typedef struct node {
    node_op op;
    char *name;      /* layer name prefix, or NULL for unnamed operations */
    int in[2];
    int n_in;
    int c, h, w;     /* output shape per sample */
    int kernel, stride, pad;
    double momentum, eps;
    int weight, bias;            /* tensor indices (weight/gamma, bias/beta) or -1 */
    int running_mean, running_var;
    int64_t macs;
    int live;        /* contributes to the output (backward visits it) */
    int grad_buf;    /* gradient pool buffer, or -1 (input node, output node, dead node) */
    /* Set by graph_bind (see plan_fusion and plan_grad_buffers). */
    int fused_relu;  /* BN or ADD: the ReLU node folded into it (its output is post-ReLU), or -1 */
    int fused_into;  /* RELU: the BN or ADD that computes it, or -1 */
    int add_bn;      /* ADD with fused ReLU: the input BN it computes in training, or -1 */
    int bn_add;      /* BN: the ADD that computes its output in training (add_bn), or -1 */
    int grad_from;   /* the node whose gradient buffer this one took over or reads, or -1 */
    tp_dtype dtype;  /* of out and grad: the activation dtype, or f32 (see choose_act_dtype) */
    /* Bound on a backend. */
    tp_tensor out, grad;
    tp_tensor save_mean, save_invstd;
    tp_tensor workspace; /* fused BN: what its backward needs besides y (NULL data: none) */
} node;

typedef struct named_tensor {
    char *name;
    int trainable;
    tp_param_role role;
    tp_init_kind init;
    int fan_in, fan_out;
    tp_tensor value; /* descriptor; data once bound */
    tp_tensor grad;  /* trainable only */
    size_t param;    /* trainable only: the index in graph_params() */
} named_tensor;

typedef struct grad_buffer {
    int64_t capacity; /* bytes */
    int users;        /* nodes whose gradient lives here at this point of the plan */
    tp_tensor t;
} grad_buffer;

struct graph {
    node *nodes;
    size_t n_nodes, cap_nodes;
    named_tensor *tensors;
    size_t n_tensors, cap_tensors;
    int input_node, output_node;

    tp_param_ref *param_refs;
    size_t n_params;
    tp_state_ref *state_refs;
    size_t n_state;

    /* Binding. */
    tp_backend backend;
    int bound, params_bound;
    int batch;
    tp_layout layout;
    grad_buffer *bufs;
    size_t n_bufs;
    tp_tensor scratch; /* for summing a second gradient contribution (u8, bytes) */
    tp_dtype act_dtype;      /* of the bound activations (see choose_act_dtype) */
    tp_dtype act_requested;  /* graph_set_activation_dtype(): 0 lets the backend choose */
    tp_tensor input_cast;    /* the input batch in act_dtype and the bound layout, when that
                              * is not f32 */
    int *grad_ready;
    tp_tensor logits;  /* 2-D view of the output node */
    int forward_done;  /* 0 none, 1 inference, 2 training */
    /* Synchronised batch norm (data parallel): set before binding, created by graph_bind. */
    bn_sync_allreduce_fn bn_allreduce;
    void *bn_allreduce_ctx;
    int bn_world;
    bn_sync *bn_sync;
    int no_fusion; /* graph_set_fusion(g, 0): every node runs on its own */
    graph_grad_ready_fn grad_ready_hook; /* graph_set_grad_ready_hook() */
    void *grad_ready_ctx;
};

struct tp_netbuilder {
    graph *g;
    int failed;
};

/* ------------------------------------------------------------------ building */

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static tp_node nb_fail(tp_netbuilder *nb, tp_status st, const char *fmt, ...) TP_PRINTF(3, 4);

static tp_node nb_fail(tp_netbuilder *nb, tp_status st, const char *fmt, ...)
{
    /* Only the first failure is recorded: later calls fail because of it. */
    if (!nb->failed) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        services_fail(st, "model build: %s", msg);
    }
    nb->failed = 1;
    return -1;
}

static const char *layer_label(const char *name) { return name && *name ? name : "(unnamed)"; }

/* Checks an input handle; returns its node or NULL after recording the failure. */
static node *nb_input_node(tp_netbuilder *nb, tp_node x, const char *op, const char *name)
{
    if (x < 0 || (size_t)x >= nb->g->n_nodes) {
        if (x >= 0 || !nb->failed)
            nb_fail(nb, TP_ERR_INVALID, "%s %s: invalid input node %d", op,
                    layer_label(name), (int)x);
        nb->failed = 1;
        return NULL;
    }
    return &nb->g->nodes[x];
}

static tp_node nb_add_node(tp_netbuilder *nb, const node *proto, const char *name)
{
    graph *g = nb->g;
    if (g->n_nodes == g->cap_nodes) {
        size_t cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
        node *n = realloc(g->nodes, cap * sizeof *n);
        if (!n)
            return nb_fail(nb, TP_ERR_NOMEM, "out of memory adding layer %s", layer_label(name));
        g->nodes = n;
        g->cap_nodes = cap;
    }
    node *n = &g->nodes[g->n_nodes];
    *n = *proto;
    n->name = NULL;
    n->grad_buf = -1;
    n->fused_relu = n->fused_into = n->grad_from = n->add_bn = n->bn_add = -1;
    if (name && *name) {
        n->name = dup_string(name);
        if (!n->name)
            return nb_fail(nb, TP_ERR_NOMEM, "out of memory adding layer %s", name);
    }
    return (tp_node)g->n_nodes++;
}

/* Adds a named tensor prefix + suffix; returns its index or -1 after failing. */
static int nb_add_tensor(tp_netbuilder *nb, const char *prefix, const char *suffix,
                         int trainable, tp_param_role role, tp_init_kind init, int ndim,
                         const int64_t *shape, int fan_in, int fan_out)
{
    graph *g = nb->g;
    size_t len = strlen(prefix) + strlen(suffix) + 1;
    char *name = malloc(len);
    if (!name)
        return nb_fail(nb, TP_ERR_NOMEM, "out of memory naming %s%s", prefix, suffix);
    snprintf(name, len, "%s%s", prefix, suffix);
    for (size_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) {
            nb_fail(nb, TP_ERR_INVALID, "layer %s: tensor name %s is already used", prefix, name);
            free(name);
            return -1;
        }
    if (g->n_tensors == g->cap_tensors) {
        size_t cap = g->cap_tensors ? 2 * g->cap_tensors : 64;
        named_tensor *t = realloc(g->tensors, cap * sizeof *t);
        if (!t) {
            free(name);
            return nb_fail(nb, TP_ERR_NOMEM, "out of memory adding %s", prefix);
        }
        g->tensors = t;
        g->cap_tensors = cap;
    }
    named_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->trainable = trainable;
    t->role = role;
    t->init = init;
    t->fan_in = fan_in;
    t->fan_out = fan_out;
    if (ndim == 4)
        t->value = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, shape[0], shape[1], shape[2],
                                shape[3]);
    else
        t->value = tp_tensor_2d(TP_DTYPE_F32, shape[0], ndim == 2 ? shape[1] : 0);
    t->grad = t->value;
    return (int)g->n_tensors++;
}

static int valid_init(tp_init_kind k) { return (int)k >= TP_INIT_ZEROS && k <= TP_INIT_GLOROT_UNIFORM; }

static tp_node nb_input(tp_netbuilder *nb)
{
    if (nb->failed)
        return -1;
    if (nb->g->input_node >= 0)
        return nb->g->input_node; /* one input: asking again returns the same node */
    return nb_fail(nb, TP_ERR_INVALID, "internal: input node missing");
}

static tp_status nb_shape(tp_netbuilder *nb, tp_node x, int *c, int *h, int *w)
{
    node *n = nb_input_node(nb, x, "shape", NULL);
    if (!n)
        return TP_ERR_INVALID;
    if (c)
        *c = n->c;
    if (h)
        *h = n->h;
    if (w)
        *w = n->w;
    return TP_OK;
}

/* Output size of a window operation (floor mode, as PyTorch). */
static int window_out(int size, int kernel, int stride, int pad)
{
    int span = size + 2 * pad - kernel;
    return span < 0 ? 0 : span / stride + 1;
}

static tp_node nb_conv(tp_netbuilder *nb, const char *name, tp_node x, int out_channels,
                       int kernel, int stride, int pad, int bias, tp_init_kind init)
{
    node *in = nb_input_node(nb, x, "conv", name);
    if (!in)
        return -1;
    if (!name || !*name)
        return nb_fail(nb, TP_ERR_INVALID, "conv: a convolution needs a name");
    if (out_channels < 1 || kernel < 1 || stride < 1 || pad < 0)
        return nb_fail(nb, TP_ERR_INVALID,
                       "conv %s: invalid out_channels %d / kernel %d / stride %d / pad %d", name,
                       out_channels, kernel, stride, pad);
    if (!valid_init(init))
        return nb_fail(nb, TP_ERR_INVALID, "conv %s: unknown init kind %d", name, (int)init);
    int oh = window_out(in->h, kernel, stride, pad), ow = window_out(in->w, kernel, stride, pad);
    if (oh < 1 || ow < 1)
        return nb_fail(nb, TP_ERR_INVALID,
                       "conv %s: kernel %d with pad %d does not fit the %dx%d input", name,
                       kernel, pad, in->h, in->w);
    node n = {0};
    n.op = OP_CONV;
    n.in[0] = x;
    n.n_in = 1;
    n.c = out_channels;
    n.h = oh;
    n.w = ow;
    n.kernel = kernel;
    n.stride = stride;
    n.pad = pad;
    n.running_mean = n.running_var = -1;
    int cin = in->c;
    n.macs = (int64_t)out_channels * oh * ow * cin * kernel * kernel;
    int64_t wshape[4] = {out_channels, cin, kernel, kernel};
    n.weight = nb_add_tensor(nb, name, ".weight", 1, TP_ROLE_WEIGHT, init, 4, wshape,
                             cin * kernel * kernel, out_channels * kernel * kernel);
    n.bias = -1;
    if (n.weight >= 0 && bias) {
        int64_t bshape[1] = {out_channels};
        tp_init_kind bi = init == TP_INIT_TORCH_LINEAR ? TP_INIT_TORCH_LINEAR : TP_INIT_ZEROS;
        n.bias = nb_add_tensor(nb, name, ".bias", 1, TP_ROLE_BIAS, bi, 1, bshape,
                               cin * kernel * kernel, out_channels * kernel * kernel);
    }
    if (nb->failed)
        return -1;
    return nb_add_node(nb, &n, name);
}

static tp_node nb_batchnorm(tp_netbuilder *nb, const char *name, tp_node x, double momentum,
                            double eps, int zero_gamma)
{
    node *in = nb_input_node(nb, x, "batchnorm", name);
    if (!in)
        return -1;
    if (!name || !*name)
        return nb_fail(nb, TP_ERR_INVALID, "batchnorm: a batch norm needs a name");
    if (!(momentum >= 0 && momentum <= 1) || !(eps > 0))
        return nb_fail(nb, TP_ERR_INVALID,
                       "batchnorm %s: momentum %g must be in [0, 1] and eps %g positive", name,
                       momentum, eps);
    node n = {0};
    n.op = OP_BN;
    n.in[0] = x;
    n.n_in = 1;
    n.c = in->c;
    n.h = in->h;
    n.w = in->w;
    n.momentum = momentum;
    n.eps = eps;
    int64_t shape[1] = {in->c};
    n.weight = nb_add_tensor(nb, name, ".weight", 1, TP_ROLE_BN_GAMMA,
                             zero_gamma ? TP_INIT_ZEROS : TP_INIT_ONES, 1, shape, 0, 0);
    if (n.weight >= 0)
        n.bias = nb_add_tensor(nb, name, ".bias", 1, TP_ROLE_BN_BETA, TP_INIT_ZEROS, 1, shape,
                               0, 0);
    if (!nb->failed)
        n.running_mean = nb_add_tensor(nb, name, ".running_mean", 0, TP_ROLE_WEIGHT,
                                       TP_INIT_ZEROS, 1, shape, 0, 0);
    if (!nb->failed)
        n.running_var = nb_add_tensor(nb, name, ".running_var", 0, TP_ROLE_WEIGHT,
                                      TP_INIT_ONES, 1, shape, 0, 0);
    if (nb->failed)
        return -1;
    return nb_add_node(nb, &n, name);
}

static tp_node nb_simple(tp_netbuilder *nb, node_op op, tp_node x, int c, int h, int w)
{
    node n = {0};
    n.op = op;
    n.in[0] = x;
    n.n_in = 1;
    n.c = c;
    n.h = h;
    n.w = w;
    n.weight = n.bias = n.running_mean = n.running_var = -1;
    return nb_add_node(nb, &n, NULL);
}

static tp_node nb_relu(tp_netbuilder *nb, tp_node x)
{
    node *in = nb_input_node(nb, x, "relu", NULL);
    if (!in)
        return -1;
    return nb_simple(nb, OP_RELU, x, in->c, in->h, in->w);
}

static tp_node nb_add(tp_netbuilder *nb, tp_node a, tp_node b)
{
    node *na = nb_input_node(nb, a, "add", NULL);
    node *nbn = na ? nb_input_node(nb, b, "add", NULL) : NULL;
    if (!na || !nbn)
        return -1;
    if (na->c != nbn->c || na->h != nbn->h || na->w != nbn->w)
        return nb_fail(nb, TP_ERR_INVALID,
                       "add of nodes %d (%dx%dx%d, after %s) and %d (%dx%dx%d, after %s): shapes "
                       "differ", (int)a, na->c, na->h, na->w, layer_label(na->name), (int)b,
                       nbn->c, nbn->h, nbn->w, layer_label(nbn->name));
    node n = {0};
    n.op = OP_ADD;
    n.in[0] = a;
    n.in[1] = b;
    n.n_in = 2;
    n.c = na->c;
    n.h = na->h;
    n.w = na->w;
    n.weight = n.bias = n.running_mean = n.running_var = -1;
    return nb_add_node(nb, &n, NULL);
}

static tp_node nb_pool(tp_netbuilder *nb, node_op op, tp_node x, int kernel, int stride, int pad)
{
    const char *what = op_names[op];
    node *in = nb_input_node(nb, x, what, NULL);
    if (!in)
        return -1;
    /* PyTorch's rule: padding at most half the kernel, so no window is all padding. */
    if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
        return nb_fail(nb, TP_ERR_INVALID, "%s after %s: invalid kernel %d / stride %d / pad %d",
                       what, layer_label(in->name), kernel, stride, pad);
    int oh = window_out(in->h, kernel, stride, pad), ow = window_out(in->w, kernel, stride, pad);
    if (oh < 1 || ow < 1)
        return nb_fail(nb, TP_ERR_INVALID, "%s after %s: kernel %d does not fit the %dx%d input",
                       what, layer_label(in->name), kernel, in->h, in->w);
    tp_node id = nb_simple(nb, op, x, in->c, oh, ow);
    if (id >= 0) {
        node *n = &nb->g->nodes[id];
        n->kernel = kernel;
        n->stride = stride;
        n->pad = pad;
    }
    return id;
}

static tp_node nb_maxpool(tp_netbuilder *nb, tp_node x, int kernel, int stride, int pad)
{
    return nb_pool(nb, OP_MAXPOOL, x, kernel, stride, pad);
}

static tp_node nb_avgpool(tp_netbuilder *nb, tp_node x, int kernel, int stride, int pad)
{
    return nb_pool(nb, OP_AVGPOOL, x, kernel, stride, pad);
}

static tp_node nb_global_avgpool(tp_netbuilder *nb, tp_node x)
{
    node *in = nb_input_node(nb, x, "global_avgpool", NULL);
    if (!in)
        return -1;
    return nb_simple(nb, OP_GAP, x, in->c, 1, 1);
}

static tp_node nb_linear(tp_netbuilder *nb, const char *name, tp_node x, int out_features,
                         int bias, tp_init_kind init)
{
    node *in = nb_input_node(nb, x, "linear", name);
    if (!in)
        return -1;
    if (!name || !*name)
        return nb_fail(nb, TP_ERR_INVALID, "linear: a linear layer needs a name");
    if (out_features < 1)
        return nb_fail(nb, TP_ERR_INVALID, "linear %s: out_features %d must be >= 1", name,
                       out_features);
    if (!valid_init(init))
        return nb_fail(nb, TP_ERR_INVALID, "linear %s: unknown init kind %d", name, (int)init);
    int64_t k = (int64_t)in->c * in->h * in->w;
    if (k > INT32_MAX)
        return nb_fail(nb, TP_ERR_INVALID, "linear %s: %lld inputs is too many", name,
                       (long long)k);
    node n = {0};
    n.op = OP_LINEAR;
    n.in[0] = x;
    n.n_in = 1;
    n.c = out_features;
    n.h = n.w = 1;
    n.running_mean = n.running_var = -1;
    n.macs = k * out_features;
    int64_t wshape[2] = {out_features, k};
    n.weight = nb_add_tensor(nb, name, ".weight", 1, TP_ROLE_WEIGHT, init, 2, wshape, (int)k,
                             out_features);
    n.bias = -1;
    if (n.weight >= 0 && bias) {
        int64_t bshape[1] = {out_features};
        tp_init_kind bi = init == TP_INIT_TORCH_LINEAR ? TP_INIT_TORCH_LINEAR : TP_INIT_ZEROS;
        n.bias = nb_add_tensor(nb, name, ".bias", 1, TP_ROLE_BIAS, bi, 1, bshape, (int)k,
                               out_features);
    }
    if (nb->failed)
        return -1;
    return nb_add_node(nb, &n, name);
}

static tp_node nb_subsample_pad(tp_netbuilder *nb, tp_node x, int stride, int out_channels)
{
    node *in = nb_input_node(nb, x, "subsample_pad", NULL);
    if (!in)
        return -1;
    if (stride < 1 || out_channels < in->c)
        return nb_fail(nb, TP_ERR_INVALID,
                       "subsample_pad after %s: stride %d must be >= 1 and out_channels %d >= "
                       "the %d input channels", layer_label(in->name), stride, out_channels,
                       in->c);
    tp_node id = nb_simple(nb, OP_SUBPAD, x, out_channels, (in->h + stride - 1) / stride,
                           (in->w + stride - 1) / stride);
    if (id >= 0)
        nb->g->nodes[id].stride = stride;
    return id;
}

static tp_status nb_output(tp_netbuilder *nb, tp_node logits)
{
    node *in = nb_input_node(nb, logits, "output", NULL);
    if (!in)
        return TP_ERR_INVALID;
    if (nb->g->output_node >= 0) {
        nb_fail(nb, TP_ERR_INVALID, "output: marked twice (nodes %d and %d)",
                nb->g->output_node, (int)logits);
        return TP_ERR_INVALID;
    }
    if (in->h != 1 || in->w != 1) {
        nb_fail(nb, TP_ERR_INVALID,
                "output: the logits (after %s) are %dx%dx%d; they must be 1x1 per class "
                "(add global_avgpool or linear)", layer_label(in->name), in->c, in->h, in->w);
        return TP_ERR_INVALID;
    }
    nb->g->output_node = logits;
    return TP_OK;
}

static const tp_net_ops net_ops = {
    .size = sizeof(tp_net_ops),
    .input = nb_input,
    .shape = nb_shape,
    .conv = nb_conv,
    .batchnorm = nb_batchnorm,
    .relu = nb_relu,
    .add = nb_add,
    .maxpool = nb_maxpool,
    .avgpool = nb_avgpool,
    .global_avgpool = nb_global_avgpool,
    .linear = nb_linear,
    .subsample_pad = nb_subsample_pad,
    .output = nb_output,
};

static tp_status finish_lists(graph *g)
{
    size_t np = 0, ns = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        if (g->tensors[i].trainable)
            np++;
        else
            ns++;
    }
    g->param_refs = calloc(np ? np : 1, sizeof *g->param_refs);
    g->state_refs = calloc(ns ? ns : 1, sizeof *g->state_refs);
    g->grad_ready = calloc(g->n_nodes, sizeof *g->grad_ready);
    if (!g->param_refs || !g->state_refs || !g->grad_ready)
        return services_fail(TP_ERR_NOMEM, "model build: out of memory");
    for (size_t i = 0; i < g->n_tensors; i++) {
        named_tensor *t = &g->tensors[i];
        if (t->trainable) {
            t->param = g->n_params;
            g->param_refs[g->n_params++] =
                (tp_param_ref){t->name, t->role, &t->value, &t->grad};
        }
        else
            g->state_refs[g->n_state++] = (tp_state_ref){t->name, &t->value};
    }
    /* Liveness: nodes the output depends on. Nodes are topologically ordered by construction
     * (inputs always exist before their consumers). */
    int o = g->output_node;
    g->nodes[o].live = 1;
    for (int j = o; j >= 0; j--) {
        if (!g->nodes[j].live)
            continue;
        for (int k = 0; k < g->nodes[j].n_in; k++)
            g->nodes[g->nodes[j].in[k]].live = 1;
    }
    return TP_OK;
}

graph *graph_build(const tp_model_ops *ops, void *self, const tp_model_input *input)
{
    if (!ops || !ops->build || !input) {
        services_fail(TP_ERR_INVALID, "model build: the model has no build operation");
        return NULL;
    }
    if (input->channels < 1 || input->height < 1 || input->width < 1) {
        services_fail(TP_ERR_INVALID, "model build: invalid input shape %dx%dx%d",
                      input->channels, input->height, input->width);
        return NULL;
    }
    graph *g = calloc(1, sizeof *g);
    if (!g) {
        services_fail(TP_ERR_NOMEM, "model build: out of memory");
        return NULL;
    }
    g->output_node = -1;
    g->input_node = -1;
    tp_netbuilder nb = {g, 0};
    node in = {0};
    in.op = OP_INPUT;
    in.c = input->channels;
    in.h = input->height;
    in.w = input->width;
    in.weight = in.bias = in.running_mean = in.running_var = -1;
    g->input_node = nb_add_node(&nb, &in, "input");
    if (g->input_node < 0)
        goto fail;

    services_clear_error();
    tp_status st = ops->build(self, &net_ops, &nb, input);
    if (st != TP_OK) {
        if (!*services_last_error())
            services_fail(st, "model build: build() failed (%s)", tp_status_name(st));
        goto fail;
    }
    if (nb.failed)
        goto fail; /* the plugin ignored a failed call; the message is recorded */
    if (g->output_node < 0) {
        services_fail(TP_ERR_INVALID, "model build: build() marked no output");
        goto fail;
    }
    if (finish_lists(g) != TP_OK)
        goto fail;
    return g;
fail:
    graph_free(g);
    return NULL;
}

/* ------------------------------------------------------------------ queries */

int64_t graph_param_count(const graph *g)
{
    int64_t n = 0;
    for (size_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].trainable)
            n += tp_tensor_count(&g->tensors[i].value);
    return n;
}

int64_t graph_flops_per_image(const graph *g)
{
    int64_t n = 0;
    for (size_t i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].macs;
    return n;
}

int graph_num_outputs(const graph *g) { return g->nodes[g->output_node].c; }

void graph_print_table(const graph *g, FILE *out)
{
    fprintf(out, "%5s  %-28s %-15s %-18s %12s\n", "#", "layer", "type", "output (CxHxW)",
            "params");
    for (size_t i = 0; i < g->n_nodes; i++) {
        const node *n = &g->nodes[i];
        int64_t p = 0;
        if (n->weight >= 0)
            p += tp_tensor_count(&g->tensors[n->weight].value);
        if (n->bias >= 0)
            p += tp_tensor_count(&g->tensors[n->bias].value);
        char shape[40];
        snprintf(shape, sizeof shape, "%dx%dx%d", n->c, n->h, n->w);
        fprintf(out, "%5zu  %-28s %-15s %-18s %12lld\n", i, n->name ? n->name : "",
                op_names[n->op], shape, (long long)p);
    }
    fprintf(out, "parameters: %lld   MACs per image: %lld (%.3f G)\n",
            (long long)graph_param_count(g), (long long)graph_flops_per_image(g),
            (double)graph_flops_per_image(g) / 1e9);
}

const tp_param_ref *graph_params(const graph *g, size_t *count)
{
    *count = g->n_params;
    return g->param_refs;
}

const tp_state_ref *graph_state(const graph *g, size_t *count)
{
    *count = g->n_state;
    return g->state_refs;
}

size_t graph_tensor_count(const graph *g) { return g->n_tensors; }
const char *graph_tensor_name(const graph *g, size_t i) { return g->tensors[i].name; }
const tp_tensor *graph_tensor_desc(const graph *g, size_t i) { return &g->tensors[i].value; }
int graph_tensor_trainable(const graph *g, size_t i) { return g->tensors[i].trainable; }

int64_t graph_tensor_find(const graph *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return (int64_t)i;
    return -1;
}

const tp_tensor *graph_logits(const graph *g) { return &g->logits; }

/* ------------------------------------------------------------------ binding */

static void be_free(graph *g, tp_tensor *t)
{
    if (t->data && g->backend.ops)
        g->backend.ops->free(g->backend.self, t);
    t->data = NULL;
}

static void unbind_activations(graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        node *n = &g->nodes[i];
        if (n->op != OP_INPUT && n->fused_into < 0) /* a fused ReLU's output is its producer's */
            be_free(g, &n->out);
        n->out.data = NULL;
        n->grad.data = NULL;
        be_free(g, &n->save_mean);
        be_free(g, &n->save_invstd);
        be_free(g, &n->workspace);
        n->grad_buf = -1;
        n->fused_relu = n->fused_into = n->grad_from = n->add_bn = n->bn_add = -1;
    }
    for (size_t i = 0; i < g->n_bufs; i++)
        be_free(g, &g->bufs[i].t);
    free(g->bufs);
    g->bufs = NULL;
    g->n_bufs = 0;
    be_free(g, &g->scratch);
    be_free(g, &g->input_cast);
    bn_sync_free(g->bn_sync);
    g->bn_sync = NULL;
    g->bound = 0;
    g->forward_done = 0;
}

static void unbind_params(graph *g)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        be_free(g, &g->tensors[i].value);
        be_free(g, &g->tensors[i].grad);
    }
    g->params_bound = 0;
}

void graph_free(graph *g)
{
    if (!g)
        return;
    unbind_activations(g);
    unbind_params(g);
    for (size_t i = 0; i < g->n_nodes; i++)
        free(g->nodes[i].name);
    for (size_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->nodes);
    free(g->tensors);
    free(g->param_refs);
    free(g->state_refs);
    free(g->grad_ready);
    free(g);
}

static tp_status be_alloc(graph *g, tp_tensor *t, const char *what)
{
    t->device = TP_DEVICE_DEVICE;
    t->data = NULL;
    tp_status st = g->backend.ops->alloc(g->backend.self, t, what);
    if (st != TP_OK)
        t->data = NULL;
    return st;
}

/* Which backend operations the graph's node types need. */
static tp_status check_backend_ops(const graph *g, const tp_backend_ops *o)
{
#define NEED(field)                                                                            \
    do {                                                                                       \
        if (!o->field)                                                                         \
            return services_fail(TP_ERR_UNSUPPORTED,                                           \
                                 "graph bind: the backend lacks the %s operation", #field);    \
    } while (0)
    NEED(alloc);
    NEED(free);
    NEED(copy);
    NEED(fill);
    NEED(sync);
    NEED(add);
    for (size_t i = 0; i < g->n_nodes; i++) {
        switch (g->nodes[i].op) {
        case OP_INPUT: break;
        case OP_CONV:
            NEED(conv_forward);
            NEED(conv_backward_data);
            NEED(conv_backward_filter);
            break;
        case OP_BN:
            NEED(batchnorm_train);
            NEED(batchnorm_infer);
            NEED(batchnorm_backward);
            break;
        case OP_RELU:
            NEED(relu_forward);
            NEED(relu_backward);
            break;
        case OP_ADD: break;
        case OP_MAXPOOL:
        case OP_AVGPOOL:
            NEED(pool_forward);
            NEED(pool_backward);
            break;
        case OP_GAP:
            NEED(global_avgpool_forward);
            NEED(global_avgpool_backward);
            break;
        case OP_LINEAR:
            NEED(linear_forward);
            NEED(linear_backward);
            break;
        case OP_SUBPAD:
            NEED(subsample_pad_forward);
            NEED(subsample_pad_backward);
            break;
        }
    }
#undef NEED
    return TP_OK;
}

/* Live consumers of node j, by index: how many, and the highest one other than `except`. */
static int consumers(const graph *g, int j, int except, int *max_other)
{
    int count = 0;
    *max_other = -1;
    for (size_t c = (size_t)j + 1; c < g->n_nodes; c++) {
        const node *n = &g->nodes[c];
        if (!n->live || !(n->in[0] == j || (n->n_in > 1 && n->in[1] == j)))
            continue;
        count++;
        if ((int)c != except && (int)c > *max_other)
            *max_other = (int)c;
    }
    return count;
}

/* Folds a ReLU into the batch norm or addition before it when that node feeds nothing else
 * and the backend offers the fused operations (API 1.2): one pass over the tensor instead of
 * two, forward and backward. Synchronised batch norms keep their ReLU separate. */
static void plan_fusion(graph *g)
{
    const tp_backend_ops *o = g->backend.ops;
    if (g->no_fusion || !o->add_relu || !o->batchnorm_relu_workspace_bytes ||
        !o->batchnorm_relu_train || !o->batchnorm_relu_backward)
        return;
    const int bn_synced = g->bn_allreduce && g->bn_world > 1;
    for (size_t j = 0; j < g->n_nodes; j++) {
        node *r = &g->nodes[j];
        if (r->op != OP_RELU || !r->live || (int)j == g->output_node)
            continue;
        node *p = &g->nodes[r->in[0]];
        int other;
        if (!p->live || !(p->op == OP_ADD || (p->op == OP_BN && !bn_synced)) ||
            consumers(g, r->in[0], (int)j, &other) != 1)
            continue;
        p->fused_relu = (int)j;
        r->fused_into = r->in[0];
    }
    /* API 1.7: an addition with its ReLU folded in computes a batch norm among its inputs
     * too, when that batch norm feeds nothing else (its own output then goes unwritten in
     * training: its backward reads x, and the addition's masked gradient is its dy). */
    if (!TP_BACKEND_HAS(o, batchnorm_add_relu_train) || bn_synced)
        return;
    for (size_t j = 0; j < g->n_nodes; j++) {
        node *a = &g->nodes[j];
        if (a->op != OP_ADD || !a->live || a->fused_relu < 0 || a->in[0] == a->in[1])
            continue;
        for (int k = 0; k < 2; k++) {
            node *bn = &g->nodes[a->in[k]];
            int other;
            if (bn->op != OP_BN || !bn->live || bn->fused_relu >= 0 || bn->bn_add >= 0 ||
                consumers(g, a->in[k], (int)j, &other) != 1)
                continue;
            a->add_bn = a->in[k];
            bn->bn_add = (int)j;
            break;
        }
    }
}

static void give_buffer(graph *g, node *to, int buf, int from)
{
    to->grad_buf = buf;
    to->grad_from = from;
    g->bufs[buf].users++;
}

/* Whether ADD node j's input b may read j's gradient buffer in place while input o owns it:
 * b reads it only in its own backward (no ADD or fused ReLU passing it on), feeds nothing but
 * j, and runs backward before anything writes the buffer again, i.e. before o's other
 * consumers add their contributions and before o itself runs. */
static int may_borrow(const graph *g, int j, int o, int b)
{
    const node *nb = &g->nodes[b];
    int other_b, other_o;
    if (nb->op == OP_ADD || nb->fused_into >= 0 || b <= o)
        return 0;
    if (consumers(g, b, j, &other_b) != 1)
        return 0;
    consumers(g, o, j, &other_o);
    return other_o < b;
}

/* Plans the gradient buffers: a node's gradient lives from the moment its last consumer (in
 * forward order) runs backward until the node itself has run backward, so buffers are
 * shared between nodes whose lifetimes do not overlap (best fit by size). Where a gradient
 * passes through unchanged, no copy is made: a fused ReLU's producer takes over the ReLU's
 * buffer, an addition hands its buffer to one input and, when may_borrow() allows, lends it
 * to the other. */
static tp_status plan_grad_buffers(graph *g)
{
    size_t cap = 0;
    for (int j = g->output_node; j >= 0; j--) {
        node *n = &g->nodes[j];
        if (!n->live)
            continue;
        if (n->grad_buf >= 0 && n->fused_into >= 0)
            give_buffer(g, &g->nodes[n->fused_into], n->grad_buf, j);
        if (n->grad_buf >= 0 && n->op == OP_ADD) {
            int a = n->in[0], b = n->in[1];
            int free_a = g->nodes[a].op != OP_INPUT && g->nodes[a].grad_buf < 0;
            int free_b = a != b && g->nodes[b].op != OP_INPUT && g->nodes[b].grad_buf < 0;
            if (free_a && free_b) {
                int o = a < b ? a : b, l = a < b ? b : a;
                give_buffer(g, &g->nodes[o], n->grad_buf, j);
                if (may_borrow(g, j, o, l))
                    give_buffer(g, &g->nodes[l], n->grad_buf, j);
            } else if (free_a || free_b) {
                give_buffer(g, &g->nodes[free_a ? a : b], n->grad_buf, j);
            }
        }
        for (int k = 0; k < n->n_in; k++) {
            node *in = &g->nodes[n->in[k]];
            if (in->op == OP_INPUT || in->grad_buf >= 0)
                continue;
            int64_t need = (int64_t)g->batch * in->c * in->h * in->w *
                           (int64_t)tp_dtype_size(in->dtype);
            int best = -1, largest = -1;
            for (size_t b = 0; b < g->n_bufs; b++) {
                if (g->bufs[b].users)
                    continue;
                if (g->bufs[b].capacity >= need &&
                    (best < 0 || g->bufs[b].capacity < g->bufs[best].capacity))
                    best = (int)b;
                if (largest < 0 || g->bufs[b].capacity > g->bufs[largest].capacity)
                    largest = (int)b;
            }
            if (best < 0 && largest >= 0) {
                best = largest; /* grow it: nothing is allocated yet */
                g->bufs[best].capacity = need;
            }
            if (best < 0) {
                if (g->n_bufs == cap) {
                    cap = cap ? 2 * cap : 16;
                    grad_buffer *nb = realloc(g->bufs, cap * sizeof *nb);
                    if (!nb)
                        return services_fail(TP_ERR_NOMEM, "graph bind: out of memory");
                    g->bufs = nb;
                }
                best = (int)g->n_bufs++;
                memset(&g->bufs[best], 0, sizeof g->bufs[best]);
                g->bufs[best].capacity = need;
            }
            give_buffer(g, in, best, -1);
        }
        if (n->grad_buf >= 0)
            g->bufs[n->grad_buf].users--; /* released only after its inputs got theirs */
    }
    return TP_OK;
}

static tp_tensor node_tensor(const graph *g, const node *n, void *data)
{
    tp_tensor t = tp_tensor_4d(n->dtype, g->layout, g->batch, n->c, n->h, n->w);
    t.data = data;
    return t;
}

/* A 2-D (batch x features) view of a node's activation or gradient. */
static tp_tensor view_2d(const tp_tensor *t)
{
    tp_tensor v = tp_tensor_2d(t->dtype, t->shape[0], t->shape[1] * t->shape[2] * t->shape[3]);
    v.device = t->device;
    v.data = t->data;
    return v;
}

/* The activation dtype of a binding: what an API 1.5 backend asks for in its preferred
 * layout, unless graph_set_activation_dtype() forced f32, the batch norms are synchronised
 * across ranks (bn_sync works on f32), or a linear layer reads anything but a global average
 * pool or another linear layer (linear is f32 only, and only the pool converts). Every node then stores its output
 * and gradient in it, except the pool's and linear layers' outputs (f32: the logits and what
 * feeds them); the input node's output is the graph's converted copy of the batch. */
static tp_dtype choose_act_dtype(const graph *g, const tp_backend *backend, tp_layout layout)
{
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (g->act_requested == TP_DTYPE_F32 || !backend->ops->info ||
        backend->ops->info(backend->self, &info) != TP_OK ||
        info.size < offsetof(tp_backend_info, activation_dtype) + sizeof info.activation_dtype ||
        info.activation_dtype != TP_DTYPE_BF16 || layout != info.preferred_layout ||
        (g->bn_allreduce && g->bn_world > 1))
        return TP_DTYPE_F32;
    for (size_t i = 0; i < g->n_nodes; i++) {
        node_op feeds = g->nodes[g->nodes[i].in[0]].op;
        if (g->nodes[i].op == OP_LINEAR && feeds != OP_GAP && feeds != OP_LINEAR)
            return TP_DTYPE_F32;
    }
    return TP_DTYPE_BF16;
}

tp_status graph_set_activation_dtype(graph *g, tp_dtype dtype)
{
    if (dtype != 0 && dtype != TP_DTYPE_F32)
        return services_fail(TP_ERR_INVALID,
                             "graph: activation dtype %s: only f32 can be forced (0 lets the "
                             "backend choose)",
                             tp_dtype_name(dtype));
    g->act_requested = dtype;
    return TP_OK;
}

tp_dtype graph_activation_dtype(const graph *g)
{
    return g->bound ? g->act_dtype : TP_DTYPE_F32;
}

tp_status graph_bind(graph *g, const tp_backend *backend, int batch_size, tp_layout layout)
{
    tp_status st;
    if (!backend || !backend->ops)
        return services_fail(TP_ERR_INVALID, "graph bind: no backend");
    if (batch_size < 1)
        return services_fail(TP_ERR_INVALID, "graph bind: batch size %d must be >= 1",
                             batch_size);
    if ((st = check_backend_ops(g, backend->ops)) != TP_OK)
        return st;
    for (size_t i = 0; i < g->n_nodes; i++) {
        const node *n = &g->nodes[i];
        const node *in = &g->nodes[n->in[0]];
        if (n->op == OP_LINEAR && layout != TP_LAYOUT_NCHW && in->h * in->w > 1)
            return services_fail(TP_ERR_UNSUPPORTED,
                                 "graph bind: linear %s flattens a %dx%d map, which needs the "
                                 "NCHW layout", n->name, in->h, in->w);
    }
    unbind_activations(g);
    if (g->params_bound &&
        (g->backend.ops != backend->ops || g->backend.self != backend->self))
        unbind_params(g);
    g->backend = *backend;
    g->batch = batch_size;
    g->layout = layout;

    if (!g->params_bound) {
        for (size_t i = 0; i < g->n_tensors; i++) {
            named_tensor *t = &g->tensors[i];
            if ((st = be_alloc(g, &t->value, t->name)) != TP_OK)
                goto fail;
            if (t->trainable && (st = be_alloc(g, &t->grad, t->name)) != TP_OK)
                goto fail;
        }
        g->params_bound = 1;
    }

    plan_fusion(g);
    g->act_dtype = choose_act_dtype(g, backend, layout);
    int64_t max_bytes = 1, max_count = 1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        node *n = &g->nodes[i];
        n->dtype = n->op == OP_GAP || n->op == OP_LINEAR ? TP_DTYPE_F32 : g->act_dtype;
        n->out = node_tensor(g, n, NULL);
        n->grad = n->out;
        if ((int64_t)tp_tensor_bytes(&n->out) > max_bytes)
            max_bytes = (int64_t)tp_tensor_bytes(&n->out);
        if (tp_tensor_count(&n->out) > max_count)
            max_count = tp_tensor_count(&n->out);
        if (n->op == OP_INPUT) {
            if (n->dtype != TP_DTYPE_F32) {
                g->input_cast = n->out;
                if ((st = be_alloc(g, &g->input_cast, "input batch in the activation dtype")))
                    goto fail;
            }
            continue;
        }
        if (n->fused_into >= 0) { /* computed in place by its producer (allocated earlier) */
            n->out.data = g->nodes[n->fused_into].out.data;
            continue;
        }
        char what[160];
        snprintf(what, sizeof what, "activation %zu (%s %s)", i, op_names[n->op],
                 n->name ? n->name : "");
        if ((st = be_alloc(g, &n->out, what)) != TP_OK)
            goto fail;
        if (n->op == OP_BN) {
            n->save_mean = tp_tensor_2d(TP_DTYPE_F32, n->c, 0);
            n->save_invstd = n->save_mean;
            if ((st = be_alloc(g, &n->save_mean, n->name)) != TP_OK ||
                (st = be_alloc(g, &n->save_invstd, n->name)) != TP_OK)
                goto fail;
        }
        if (n->op == OP_BN && n->fused_relu >= 0) {
            tp_bn_desc d = {n->eps, n->momentum};
            int64_t bytes = 0;
            if ((st = backend->ops->batchnorm_relu_workspace_bytes(backend->self, &d, &n->out,
                                                                    &bytes)) != TP_OK)
                goto fail;
            if (bytes > 0) {
                n->workspace = tp_tensor_2d(TP_DTYPE_U8, bytes, 0);
                if ((st = be_alloc(g, &n->workspace, what)) != TP_OK)
                    goto fail;
            }
        }
    }
    if ((st = plan_grad_buffers(g)) != TP_OK)
        goto fail;
    for (size_t b = 0; b < g->n_bufs; b++) {
        g->bufs[b].t = tp_tensor_2d(TP_DTYPE_U8, g->bufs[b].capacity, 0);
        if ((st = be_alloc(g, &g->bufs[b].t, "gradient buffer")) != TP_OK)
            goto fail;
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        node *n = &g->nodes[i];
        if (n->grad_buf >= 0)
            n->grad.data = g->bufs[n->grad_buf].t.data;
    }
    g->scratch = tp_tensor_2d(TP_DTYPE_U8, max_bytes, 0);
    if ((st = be_alloc(g, &g->scratch, "gradient scratch")) != TP_OK)
        goto fail;
    if (g->bn_allreduce && g->bn_world > 1) {
        int max_channels = 1;
        for (size_t i = 0; i < g->n_nodes; i++)
            if (g->nodes[i].op == OP_BN && g->nodes[i].c > max_channels)
                max_channels = g->nodes[i].c;
        if ((st = bn_sync_create(&g->backend, g->bn_allreduce, g->bn_allreduce_ctx, g->bn_world,
                                 max_channels, max_count, &g->bn_sync)) != TP_OK)
            goto fail;
    }
    g->logits = view_2d(&g->nodes[g->output_node].out);
    g->bound = 1;
    return TP_OK;
fail:
    unbind_activations(g);
    return st;
}

/* ------------------------------------------------------------------ initialisation */

static double init_value(tp_rng *r, const named_tensor *t)
{
    switch (t->init) {
    case TP_INIT_ZEROS: return 0.0;
    case TP_INIT_ONES: return 1.0;
    case TP_INIT_HE_NORMAL_FAN_IN: return tp_rng_normal(r) * sqrt(2.0 / t->fan_in);
    case TP_INIT_HE_NORMAL_FAN_OUT: return tp_rng_normal(r) * sqrt(2.0 / t->fan_out);
    case TP_INIT_HE_TRUNCATED_FAN_IN:
        /* Keras VarianceScaling(2, fan_in, truncated_normal): the 0.8796... corrects the
         * variance lost by truncating at two standard deviations. */
        return tp_rng_truncated_normal(r) * sqrt(2.0 / t->fan_in) / 0.87962566103423978;
    case TP_INIT_TORCH_LINEAR: {
        double bound = 1.0 / sqrt((double)t->fan_in);
        return (2.0 * tp_rng_uniform(r) - 1.0) * bound;
    }
    case TP_INIT_GLOROT_UNIFORM: {
        double bound = sqrt(6.0 / (t->fan_in + t->fan_out));
        return (2.0 * tp_rng_uniform(r) - 1.0) * bound;
    }
    }
    return 0.0;
}

tp_status graph_init_params(graph *g, uint64_t seed)
{
    if (!g->params_bound)
        return services_fail(TP_ERR_INVALID, "graph init: the graph is not bound to a backend");
    size_t max = 1;
    for (size_t i = 0; i < g->n_tensors; i++)
        if ((size_t)tp_tensor_count(&g->tensors[i].value) > max)
            max = (size_t)tp_tensor_count(&g->tensors[i].value);
    float *buf = malloc(max * sizeof *buf);
    if (!buf)
        return services_fail(TP_ERR_NOMEM, "graph init: out of memory (%zu floats)", max);
    tp_status st = TP_OK;
    for (size_t i = 0; i < g->n_tensors && st == TP_OK; i++) {
        named_tensor *t = &g->tensors[i];
        size_t count = (size_t)tp_tensor_count(&t->value);
        if (t->init == TP_INIT_ZEROS || t->init == TP_INIT_ONES) {
            st = g->backend.ops->fill(g->backend.self, &t->value,
                                      t->init == TP_INIT_ONES ? 1.0 : 0.0);
            continue;
        }
        tp_rng r = tp_rng_make(seed, GRAPH_RNG_STREAM_INIT, i);
        for (size_t k = 0; k < count; k++)
            buf[k] = (float)init_value(&r, t);
        st = graph_tensor_set(g, i, buf, count);
    }
    if (st == TP_OK)
        for (size_t i = 0; i < g->n_tensors && st == TP_OK; i++)
            if (g->tensors[i].trainable)
                st = g->backend.ops->fill(g->backend.self, &g->tensors[i].grad, 0.0);
    if (st == TP_OK)
        st = g->backend.ops->sync(g->backend.self);
    free(buf);
    return st;
}

static tp_status host_copy(graph *g, size_t i, float *host, size_t count, int to_device)
{
    if (i >= g->n_tensors)
        return services_fail(TP_ERR_NOT_FOUND, "graph: no tensor %zu", i);
    named_tensor *t = &g->tensors[i];
    if (!g->params_bound)
        return services_fail(TP_ERR_INVALID, "graph: %s: the graph is not bound to a backend",
                             t->name);
    if ((size_t)tp_tensor_count(&t->value) != count)
        return services_fail(TP_ERR_INVALID, "graph: %s has %lld values, not %zu", t->name,
                             (long long)tp_tensor_count(&t->value), count);
    tp_tensor h = t->value;
    h.device = TP_DEVICE_HOST;
    h.data = host;
    const tp_backend_ops *o = g->backend.ops;
    tp_status st = to_device ? o->copy(g->backend.self, &t->value, &h, TP_STREAM_COMPUTE)
                             : o->copy(g->backend.self, &h, &t->value, TP_STREAM_COMPUTE);
    if (st == TP_OK)
        st = o->sync(g->backend.self);
    return st;
}

void graph_set_fusion(graph *g, int enabled) { g->no_fusion = !enabled; }

int graph_fused_count(const graph *g)
{
    int count = 0;
    for (size_t i = 0; g->bound && i < g->n_nodes; i++)
        count += g->nodes[i].fused_relu >= 0;
    return count;
}

int graph_fused_add_count(const graph *g)
{
    int count = 0;
    for (size_t i = 0; g->bound && i < g->n_nodes; i++)
        count += g->nodes[i].add_bn >= 0;
    return count;
}

void graph_set_batchnorm_sync(graph *g, bn_sync_allreduce_fn allreduce, void *ctx,
                              int world_size)
{
    g->bn_allreduce = allreduce;
    g->bn_allreduce_ctx = ctx;
    g->bn_world = world_size;
}

tp_status graph_tensor_get(graph *g, size_t i, float *host, size_t count)
{
    return host_copy(g, i, host, count, 0);
}

tp_status graph_tensor_set(graph *g, size_t i, const float *host, size_t count)
{
    return host_copy(g, i, (float *)host, count, 1);
}

/* ------------------------------------------------------------------ execution */

#define BE (g->backend.self)
#define OPS (g->backend.ops)
#define TRY(call)                                                                              \
    do {                                                                                       \
        if ((st = (call)) != TP_OK)                                                            \
            return st;                                                                         \
    } while (0)

static tp_tensor *tensor_of(graph *g, int idx) { return idx >= 0 ? &g->tensors[idx].value : NULL; }
/* A fused batch norm's workspace, or NULL when its backend needs none. */
static tp_tensor *workspace_of(node *n) { return n->workspace.data ? &n->workspace : NULL; }
static tp_tensor *grad_of(graph *g, int idx) { return idx >= 0 ? &g->tensors[idx].grad : NULL; }

static tp_status forward_node(graph *g, node *n, int training)
{
    tp_status st;
    node *a = &g->nodes[n->in[0]];
    switch (n->op) {
    case OP_INPUT: return TP_OK;
    case OP_CONV: {
        tp_conv_desc d = {n->stride, n->stride, n->pad, n->pad, 1, 1};
        return OPS->conv_forward(BE, &d, &a->out, tensor_of(g, n->weight), tensor_of(g, n->bias),
                                 &n->out);
    }
    case OP_BN: {
        tp_bn_desc d = {n->eps, n->momentum};
        if (training && n->bn_add >= 0)
            return TP_OK; /* the addition after it computes it */
        if (training && g->bn_sync)
            return bn_sync_forward(g->bn_sync, &d, &a->out, tensor_of(g, n->weight),
                                   tensor_of(g, n->bias), &n->out,
                                   tensor_of(g, n->running_mean), tensor_of(g, n->running_var),
                                   &n->save_mean, &n->save_invstd);
        if (training && n->fused_relu >= 0)
            return OPS->batchnorm_relu_train(BE, &d, &a->out, tensor_of(g, n->weight),
                                             tensor_of(g, n->bias), &n->out,
                                             tensor_of(g, n->running_mean),
                                             tensor_of(g, n->running_var), &n->save_mean,
                                             &n->save_invstd,
                                             workspace_of(n));
        if (training)
            return OPS->batchnorm_train(BE, &d, &a->out, tensor_of(g, n->weight),
                                        tensor_of(g, n->bias), &n->out,
                                        tensor_of(g, n->running_mean),
                                        tensor_of(g, n->running_var), &n->save_mean,
                                        &n->save_invstd);
        TRY(OPS->batchnorm_infer(BE, &d, &a->out, tensor_of(g, n->weight),
                                 tensor_of(g, n->bias), tensor_of(g, n->running_mean),
                                 tensor_of(g, n->running_var), &n->out));
        return n->fused_relu >= 0 ? OPS->relu_forward(BE, &n->out, &n->out) : TP_OK;
    }
    case OP_RELU:
        if (n->fused_into >= 0)
            return TP_OK; /* its producer wrote the output */
        return OPS->relu_forward(BE, &a->out, &n->out);
    case OP_ADD:
        if (training && n->add_bn >= 0) {
            node *bn = &g->nodes[n->add_bn];
            node *res = &g->nodes[n->in[n->in[0] == n->add_bn ? 1 : 0]];
            tp_bn_desc d = {bn->eps, bn->momentum};
            return OPS->batchnorm_add_relu_train(
                BE, &d, &g->nodes[bn->in[0]].out, &res->out, tensor_of(g, bn->weight),
                tensor_of(g, bn->bias), &n->out, tensor_of(g, bn->running_mean),
                tensor_of(g, bn->running_var), &bn->save_mean, &bn->save_invstd);
        }
        if (n->fused_relu >= 0)
            return OPS->add_relu(BE, &a->out, &g->nodes[n->in[1]].out, &n->out);
        return OPS->add(BE, &a->out, &g->nodes[n->in[1]].out, &n->out);
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        tp_pool_desc d = {n->op == OP_MAXPOOL ? TP_POOL_MAX : TP_POOL_AVG, n->kernel, n->kernel,
                          n->stride, n->stride, n->pad, n->pad};
        return OPS->pool_forward(BE, &d, &a->out, &n->out);
    }
    case OP_GAP: {
        tp_tensor y = view_2d(&n->out);
        return OPS->global_avgpool_forward(BE, &a->out, &y);
    }
    case OP_LINEAR: {
        tp_tensor x = view_2d(&a->out), y = view_2d(&n->out);
        return OPS->linear_forward(BE, &x, tensor_of(g, n->weight), tensor_of(g, n->bias), &y);
    }
    case OP_SUBPAD: return OPS->subsample_pad_forward(BE, n->stride, &a->out, &n->out);
    }
    return TP_OK;
}

tp_status graph_forward(graph *g, const tp_tensor *input, int training)
{
    if (!g->bound)
        return services_fail(TP_ERR_INVALID, "graph forward: the graph is not bound");
    node *in = &g->nodes[g->input_node];
    if (!input || input->dtype != TP_DTYPE_F32 || input->ndim != 4 ||
        input->shape[0] != g->batch || input->shape[1] != in->c || input->shape[2] != in->h ||
        input->shape[3] != in->w)
        return services_fail(TP_ERR_INVALID,
                             "graph forward: the input must be f32 %dx%dx%dx%d (got %s %lldx%lldx%lldx%lld)",
                             g->batch, in->c, in->h, in->w,
                             input ? tp_dtype_name(input->dtype) : "none",
                             input ? (long long)input->shape[0] : 0LL,
                             input ? (long long)input->shape[1] : 0LL,
                             input ? (long long)input->shape[2] : 0LL,
                             input ? (long long)input->shape[3] : 0LL);
    if (g->input_cast.data) { /* converted into the activation dtype and the bound layout */
        tp_status st = OPS->copy(BE, &g->input_cast, input, TP_STREAM_COMPUTE);
        if (st != TP_OK)
            return services_fail(st, "graph forward: converting the input batch to %s: %s",
                                 tp_dtype_name(g->act_dtype), services_last_error());
        in->out = g->input_cast;
    } else {
        in->out = *input;
    }
    g->forward_done = 0;
    for (int j = 0; j <= g->output_node; j++) {
        node *n = &g->nodes[j];
        if (!n->live)
            continue;
        tp_status st = forward_node(g, n, training);
        if (st != TP_OK)
            return st;
    }
    g->forward_done = training ? 2 : 1;
    return TP_OK;
}

/* Where node i's gradient contribution goes: straight into its buffer the first time, else
 * into the scratch (shaped like the node) to be added afterwards. NULL for the input. */
static tp_tensor *grad_target(graph *g, int i, tp_tensor *scratch_view, int *accumulate)
{
    node *n = &g->nodes[i];
    *accumulate = 0;
    if (n->op == OP_INPUT)
        return NULL;
    if (!g->grad_ready[i]) {
        g->grad_ready[i] = 1;
        return &n->grad;
    }
    *scratch_view = node_tensor(g, n, g->scratch.data);
    *accumulate = 1;
    return scratch_view;
}

static tp_status grad_commit(graph *g, int i, const tp_tensor *contribution, int accumulate)
{
    if (!accumulate)
        return TP_OK;
    node *n = &g->nodes[i];
    return OPS->add(BE, &n->grad, contribution, &n->grad);
}

static tp_status zero_param_grads(graph *g, node *n)
{
    tp_status st;
    if (n->weight >= 0)
        TRY(OPS->fill(BE, grad_of(g, n->weight), 0.0));
    if (n->bias >= 0)
        TRY(OPS->fill(BE, grad_of(g, n->bias), 0.0));
    return TP_OK;
}

static tp_status backward_node(graph *g, int j)
{
    tp_status st;
    node *n = &g->nodes[j];
    int ia = n->in[0];
    node *a = &g->nodes[ia];
    tp_tensor *dy = &n->grad;
    tp_tensor sv;
    int acc;
    tp_tensor *dx;
    switch (n->op) {
    case OP_INPUT: return TP_OK;
    case OP_CONV: {
        tp_conv_desc d = {n->stride, n->stride, n->pad, n->pad, 1, 1};
        TRY(OPS->conv_backward_filter(BE, &d, &a->out, dy, grad_of(g, n->weight),
                                      grad_of(g, n->bias)));
        if (a->op == OP_INPUT)
            return TP_OK; /* nobody needs the input's gradient */
        dx = grad_target(g, ia, &sv, &acc);
        if (acc && !g->no_fusion && TP_BACKEND_HAS(OPS, conv_backward_data_add))
            return OPS->conv_backward_data_add(BE, &d, dy, tensor_of(g, n->weight),
                                               &a->grad); /* API 1.7: added in place */
        TRY(OPS->conv_backward_data(BE, &d, dy, tensor_of(g, n->weight), dx));
        return grad_commit(g, ia, dx, acc);
    }
    case OP_BN: {
        tp_bn_desc d = {n->eps, n->momentum};
        dx = grad_target(g, ia, &sv, &acc);
        if (!dx) { /* batch norm straight on the input: its dx goes to the scratch */
            sv = node_tensor(g, a, g->scratch.data);
            dx = &sv;
        }
        if (g->bn_sync)
            TRY(bn_sync_backward(g->bn_sync, &d, &a->out, dy, tensor_of(g, n->weight),
                                 &n->save_mean, &n->save_invstd, dx, grad_of(g, n->weight),
                                 grad_of(g, n->bias), a->op != OP_INPUT));
        else if (n->fused_relu >= 0) /* dy is the gradient of the ReLU's output */
            TRY(OPS->batchnorm_relu_backward(BE, &d, &a->out, &n->out,
                                             workspace_of(n), dy,
                                             tensor_of(g, n->weight), &n->save_mean,
                                             &n->save_invstd, dx, grad_of(g, n->weight),
                                             grad_of(g, n->bias)));
        else
            TRY(OPS->batchnorm_backward(BE, &d, &a->out, dy, tensor_of(g, n->weight),
                                        &n->save_mean, &n->save_invstd, dx,
                                        grad_of(g, n->weight), grad_of(g, n->bias)));
        return a->op == OP_INPUT ? TP_OK : grad_commit(g, ia, dx, acc);
    }
    case OP_RELU:
        if (n->fused_into >= 0) { /* its producer's backward applies the mask */
            g->grad_ready[ia] = 1;
            return TP_OK;
        }
        if (a->op == OP_INPUT)
            return TP_OK;
        dx = grad_target(g, ia, &sv, &acc);
        TRY(OPS->relu_backward(BE, &n->out, dy, dx));
        return grad_commit(g, ia, dx, acc);
    case OP_ADD:
        if (n->fused_relu >= 0) /* in place: the inputs read this buffer or a copy of it */
            TRY(OPS->relu_backward(BE, &n->out, dy, dy));
        for (int k = 0; k < 2; k++) {
            int ik = n->in[k];
            if (g->nodes[ik].op == OP_INPUT)
                continue;
            if (!g->grad_ready[ik] && g->nodes[ik].grad_from == j) {
                g->grad_ready[ik] = 1; /* its gradient is this buffer (plan_grad_buffers) */
                continue;
            }
            if (!g->grad_ready[ik]) {
                g->grad_ready[ik] = 1;
                TRY(OPS->copy(BE, &g->nodes[ik].grad, dy, TP_STREAM_COMPUTE));
            } else {
                TRY(OPS->add(BE, &g->nodes[ik].grad, dy, &g->nodes[ik].grad));
            }
        }
        return TP_OK;
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        if (a->op == OP_INPUT)
            return TP_OK;
        tp_pool_desc d = {n->op == OP_MAXPOOL ? TP_POOL_MAX : TP_POOL_AVG, n->kernel, n->kernel,
                          n->stride, n->stride, n->pad, n->pad};
        dx = grad_target(g, ia, &sv, &acc);
        TRY(OPS->pool_backward(BE, &d, &a->out, &n->out, dy, dx));
        return grad_commit(g, ia, dx, acc);
    }
    case OP_GAP: {
        if (a->op == OP_INPUT)
            return TP_OK;
        tp_tensor dy2 = view_2d(dy);
        dx = grad_target(g, ia, &sv, &acc);
        TRY(OPS->global_avgpool_backward(BE, &dy2, dx));
        return grad_commit(g, ia, dx, acc);
    }
    case OP_LINEAR: {
        tp_tensor x2 = view_2d(&a->out), dy2 = view_2d(dy), dx2;
        dx = NULL;
        acc = 0;
        if (a->op != OP_INPUT) {
            dx = grad_target(g, ia, &sv, &acc);
            dx2 = view_2d(dx);
        }
        TRY(OPS->linear_backward(BE, &x2, tensor_of(g, n->weight), &dy2, dx ? &dx2 : NULL,
                                 grad_of(g, n->weight), grad_of(g, n->bias)));
        return dx ? grad_commit(g, ia, dx, acc) : TP_OK;
    }
    case OP_SUBPAD:
        if (a->op == OP_INPUT)
            return TP_OK;
        dx = grad_target(g, ia, &sv, &acc);
        TRY(OPS->subsample_pad_backward(BE, n->stride, dy, dx));
        return grad_commit(g, ia, dx, acc);
    }
    return TP_OK;
}

void graph_set_grad_ready_hook(graph *g, graph_grad_ready_fn fn, void *ctx)
{
    g->grad_ready_hook = fn;
    g->grad_ready_ctx = ctx;
}

/* Node j's parameters in the order they are reported: weight, then bias. */
static size_t node_params(const graph *g, size_t j, size_t out[2])
{
    const node *n = &g->nodes[j];
    size_t k = 0;
    if (n->weight >= 0 && g->tensors[n->weight].trainable)
        out[k++] = g->tensors[n->weight].param;
    if (n->bias >= 0 && g->tensors[n->bias].trainable)
        out[k++] = g->tensors[n->bias].param;
    return k;
}

/* The order graph_backward() visits nodes in: from the output down, then those after it. */
static size_t backward_visit(const graph *g, size_t k)
{
    size_t down = (size_t)g->output_node; /* nodes output_node .. 1 */
    return k < down ? (size_t)g->output_node - k : k + 1;
}

void graph_param_ready_order(const graph *g, size_t *order)
{
    size_t m = 0, p[2];
    for (size_t k = 0; k + 1 < g->n_nodes; k++) {
        size_t np = node_params(g, backward_visit(g, k), p);
        for (size_t i = 0; i < np; i++)
            order[m++] = p[i];
    }
}

/* Tells the hook that node j's parameter gradients are final. */
static tp_status report_grads(graph *g, size_t j)
{
    size_t p[2];
    size_t np = g->grad_ready_hook ? node_params(g, j, p) : 0;
    for (size_t i = 0; i < np; i++) {
        tp_status st = g->grad_ready_hook(g->grad_ready_ctx, p[i]);
        if (st)
            return st;
    }
    return TP_OK;
}

tp_status graph_backward(graph *g, const tp_tensor *dlogits)
{
    tp_status st;
    if (g->forward_done != 2)
        return services_fail(TP_ERR_INVALID,
                             "graph backward: needs a training-mode forward pass first");
    node *o = &g->nodes[g->output_node];
    if (!dlogits || dlogits->dtype != TP_DTYPE_F32 ||
        tp_tensor_count(dlogits) != (int64_t)g->batch * o->c)
        return services_fail(TP_ERR_INVALID, "graph backward: dlogits must be f32 %dx%d",
                             g->batch, o->c);
    memset(g->grad_ready, 0, g->n_nodes * sizeof *g->grad_ready);
    o->grad = node_tensor(g, o, dlogits->data);
    o->grad.device = dlogits->device;
    g->grad_ready[g->output_node] = 1;
    for (int j = g->output_node; j > 0; j--) {
        node *n = &g->nodes[j];
        if (!n->live || !g->grad_ready[j])
            TRY(zero_param_grads(g, n)); /* not connected to the loss: zero gradient */
        else
            TRY(backward_node(g, j));
        TRY(report_grads(g, (size_t)j));
    }
    /* Layers after the output do not influence the loss either. */
    for (size_t j = (size_t)g->output_node + 1; j < g->n_nodes; j++) {
        TRY(zero_param_grads(g, &g->nodes[j]));
        TRY(report_grads(g, j));
    }
    return TP_OK;
}
