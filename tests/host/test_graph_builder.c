/* The network builder and executor on hand-made graphs: every node type (batch norm on the
 * input, conv with bias, max and average pooling, a node used twice by one add, a dead
 * branch, linear on a flattened map), parameter and MAC counts, gradients against central
 * differences, and the builder's errors (a failed call propagates through chained calls and
 * keeps the first message, naming the layer). */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "graph.h"
#include "services.h"
#include "test_graph_backend.h"

enum { NET_OK, NET_BIG_KERNEL, NET_ADD_MISMATCH, NET_NO_OUTPUT, NET_DUPLICATE, NET_NOT_1X1,
       NET_PLUGIN_FAILS };

static tp_status build(void *self, const tp_net_ops *net, tp_netbuilder *nb,
                       const tp_model_input *in)
{
    int which = *(const int *)self;
    tp_node x = net->input(nb);
    switch (which) {
    case NET_OK: {
        tp_node b = net->batchnorm(nb, "bn0", x, 0.1, 1e-5, 0);
        tp_node c = net->conv(nb, "c1", b, 4, 3, 1, 1, 1, TP_INIT_TORCH_LINEAR);
        tp_node r = net->relu(nb, c);
        tp_node m = net->maxpool(nb, r, 2, 2, 0);
        tp_node a = net->avgpool(nb, r, 3, 2, 1);
        tp_node s = net->add(nb, m, a);
        tp_node s2 = net->add(nb, s, s);
        net->conv(nb, "dead", x, 2, 1, 1, 0, 0, TP_INIT_HE_NORMAL_FAN_IN);
        tp_node l = net->linear(nb, "fc", s2, in->num_classes, 1, TP_INIT_GLOROT_UNIFORM);
        return net->output(nb, l);
    }
    case NET_BIG_KERNEL: {
        tp_node c = net->conv(nb, "big", x, 4, 9, 1, 0, 0, TP_INIT_ZEROS);
        c = net->relu(nb, c);
        c = net->global_avgpool(nb, c);
        return net->output(nb, net->linear(nb, "fc", c, 3, 1, TP_INIT_ZEROS));
    }
    case NET_ADD_MISMATCH: {
        tp_node c = net->conv(nb, "down", x, 2, 3, 2, 1, 0, TP_INIT_ZEROS);
        tp_node s = net->add(nb, x, c);
        return net->output(nb, net->linear(nb, "fc", net->global_avgpool(nb, s), 3, 1, 0));
    }
    case NET_NO_OUTPUT:
        net->conv(nb, "c", x, 2, 3, 1, 1, 0, TP_INIT_ZEROS);
        return TP_OK;
    case NET_DUPLICATE: {
        tp_node c = net->conv(nb, "same", x, 2, 3, 1, 1, 0, TP_INIT_ZEROS);
        c = net->conv(nb, "same", c, 2, 3, 1, 1, 0, TP_INIT_ZEROS);
        return net->output(nb, net->linear(nb, "fc", c, 3, 1, 0));
    }
    case NET_NOT_1X1:
        return net->output(nb, net->conv(nb, "c", x, 2, 3, 1, 1, 0, TP_INIT_ZEROS));
    default:
        return services_fail(TP_ERR_UNSUPPORTED, "fixture model: cannot build this");
    }
}

static const tp_model_ops model = {sizeof(tp_model_ops), build, {0}};

static graph *make(int which)
{
    tp_model_input in = {sizeof in, 2, 6, 6, 5};
    services_clear_error();
    return graph_build(&model, &which, &in);
}

static void expect_error(int which, const char *needle)
{
    graph *g = make(which);
    CHECK(g == NULL);
    CHECK_CONTAINS(services_last_error(), needle);
    printf("refused: %s\n", services_last_error());
    graph_free(g);
}

/* Directional central difference of the loss along the gradient of one tensor. */
static double fd_along_grad(graph *g, const tp_backend *be, const tp_tensor *x,
                            const int32_t *labels, const char *name, const float *grad)
{
    size_t ti = (size_t)graph_tensor_find(g, name);
    size_t n = (size_t)tp_tensor_count(graph_tensor_desc(g, ti));
    float *w = malloc(n * sizeof *w), *t = malloc(n * sizeof *t);
    graph_tensor_get(g, ti, w, n);
    double gn = 0;
    for (size_t k = 0; k < n; k++)
        gn += (double)grad[k] * grad[k];
    gn = sqrt(gn);
    double eps = 1e-3 / fmax(gn, 1e-3), l[2];
    for (int s = 0; s < 2; s++) {
        for (size_t k = 0; k < n; k++)
            t[k] = (float)(w[k] + (s ? -eps : eps) * grad[k] / gn);
        graph_tensor_set(g, ti, t, n);
        l[s] = test_loss64(g, be, x, labels);
    }
    graph_tensor_set(g, ti, w, n);
    double fd = (l[0] - l[1]) / (2 * eps), err = fabs(fd - gn) / gn;
    printf("  %-10s |g| %.6e  numeric %.6e  rel.err %.2e\n", name, gn, fd, err);
    free(w);
    free(t);
    return err;
}

static void test_exec(void)
{
    graph *g = make(NET_OK);
    CHECK(g != NULL);
    if (!g) {
        fprintf(stderr, "%s\n", services_last_error());
        return;
    }
    graph_print_table(g, stdout);
    CHECK(graph_param_count(g) == 4 + (4 * 2 * 9 + 4) + 4 + (36 * 5 + 5));
    CHECK(graph_flops_per_image(g) == 4 * 6 * 6 * 2 * 9 + 2 * 36 * 2 + 36 * 5);
    size_t ns;
    graph_state(g, &ns);
    CHECK(ns == 2);
    tp_backend be = naive_backend(1);
    CHECK(graph_bind(g, &be, 3, TP_LAYOUT_NHWC) == TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(services_last_error(), "linear fc flattens a 3x3 map");
    CHECK(graph_bind(g, &be, 3, TP_LAYOUT_NCHW) == TP_OK);
    CHECK(graph_init_params(g, 11) == TP_OK);
    /* Initialisation is a function of the seed only. */
    float a[4], b[4];
    size_t bi = (size_t)graph_tensor_find(g, "c1.bias");
    CHECK(graph_tensor_get(g, bi, a, 4) == TP_OK);
    CHECK(fabs(a[0]) <= 1.0 / sqrt(18.0) && a[0] != a[1]); /* U(+-1/sqrt(fan_in)) */
    CHECK(graph_init_params(g, 11) == TP_OK && graph_tensor_get(g, bi, b, 4) == TP_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(graph_init_params(g, 12) == TP_OK && graph_tensor_get(g, bi, b, 4) == TP_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);

    float xh[3 * 2 * 6 * 6];
    int32_t labels[3] = {0, 4, 2};
    tp_rng r = tp_rng_make(1, 2, 3);
    for (size_t i = 0; i < sizeof xh / sizeof xh[0]; i++)
        xh[i] = (float)(3.0 * tp_rng_uniform(&r) - 1.0);
    tp_tensor x = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, 3, 2, 6, 6);
    tp_tensor lt = tp_tensor_2d(TP_DTYPE_I32, 3, 0), loss = tp_tensor_2d(TP_DTYPE_F32, 1, 0);
    tp_tensor dl = tp_tensor_2d(TP_DTYPE_F32, 3, 5);
    CHECK(test_upload(&be, &x, xh) == TP_OK && test_upload(&be, &lt, labels) == TP_OK);
    CHECK(be.ops->alloc(be.self, &loss, "loss") == TP_OK);
    CHECK(be.ops->alloc(be.self, &dl, "dl") == TP_OK);
    CHECK(graph_backward(g, &dl) == TP_ERR_INVALID); /* no forward yet */
    CHECK(graph_forward(g, &x, 1) == TP_OK);
    CHECK(be.ops->softmax_xent(be.self, graph_logits(g), &lt, 0, 1, &loss, &dl) == TP_OK);
    /* Poison the dead branch's gradient: backward must zero it. */
    size_t np;
    const tp_param_ref *p = graph_params(g, &np);
    for (size_t i = 0; i < np; i++)
        if (strcmp(p[i].name, "dead.weight") == 0)
            be.ops->fill(be.self, p[i].grad, 7.0);
    CHECK(graph_backward(g, &dl) == TP_OK);
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        size_t n = (size_t)tp_tensor_count(p[i].grad);
        float *gr = malloc(n * sizeof *gr);
        test_download(&be, p[i].grad, gr);
        if (strcmp(p[i].name, "dead.weight") == 0) {
            for (size_t k = 0; k < n; k++)
                CHECK(gr[k] == 0.0f);
        } else {
            worst = fmax(worst, fd_along_grad(g, &be, &x, labels, p[i].name, gr));
        }
        free(gr);
    }
    printf("worst directional gradient error: %.3e (tolerance 1e-3)\n", worst);
    CHECK(worst < 1e-3);
    be.ops->free(be.self, &x);
    be.ops->free(be.self, &lt);
    be.ops->free(be.self, &loss);
    be.ops->free(be.self, &dl);
    graph_free(g);
}

int main(void)
{
    test_exec();
    expect_error(NET_BIG_KERNEL, "conv big: kernel 9 with pad 0 does not fit the 6x6 input");
    expect_error(NET_ADD_MISMATCH, "shapes differ");
    expect_error(NET_NO_OUTPUT, "marked no output");
    expect_error(NET_DUPLICATE, "same.weight is already used");
    expect_error(NET_NOT_1X1, "must be 1x1");
    expect_error(NET_PLUGIN_FAILS, "fixture model: cannot build this");
    CHECK(naive_backend_live_allocations() == 0);
    return CHECK_EXIT();
}
