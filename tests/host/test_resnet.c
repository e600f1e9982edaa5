/* model-resnet: exact parameter counts of every family member (torchvision's ImageNet
 * ResNets; He et al.'s CIFAR networks with shortcuts A and B), the MACs of ResNet-50,
 * torchvision's tensor names and shapes, inputs of other sizes, refused configurations, the
 * initial values of each init mode (convolution spread per fan, truncation, fc, batch norm)
 * and zero_init_residual. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "graph.h"
#include "services.h"
#include "test_graph_backend.h"

static registry *reg;

static graph *build(const char *const *kv, int c, int h, int w, int classes)
{
    instance inst;
    if (!test_instance(reg, TP_KIND_MODEL, "resnet", kv, &inst))
        return NULL;
    graph *g = test_build_graph(&inst, c, h, w, classes);
    if (!g)
        fprintf(stderr, "build failed: %s\n", services_last_error());
    instance_destroy(&inst);
    return g;
}

static void check_count(const char *what, const char *const *kv, int c, int h, int w,
                        int classes, int64_t expected)
{
    graph *g = build(kv, c, h, w, classes);
    CHECK(g != NULL);
    if (!g)
        return;
    int64_t n = graph_param_count(g);
    printf("%-34s %12" PRId64 " parameters (expected %" PRId64 ")\n", what, n, expected);
    CHECK(n == expected);
    graph_free(g);
}

/* He et al.'s CIFAR ResNet (6n+2, widths 16/32/64, 10 classes, 3 input channels) counted
 * by hand: conv3x3 weights, BN gamma+beta, the fc, and for shortcut B two 1x1 projections
 * with their BN. */
static int64_t cifar_expected(int depth, int projection, int in_ch)
{
    int64_t n = (depth - 2) / 6, p = 0;
    p += 9 * in_ch * 16 + 2 * 16;                       /* conv1, bn1 */
    p += 2 * n * (9 * 16 * 16 + 2 * 16);                /* stage 1 */
    p += 9 * 16 * 32 + (2 * n - 1) * 9 * 32 * 32 + 2 * n * 2 * 32;
    p += 9 * 32 * 64 + (2 * n - 1) * 9 * 64 * 64 + 2 * n * 2 * 64;
    p += 64 * 10 + 10;                                  /* fc */
    if (projection)
        p += 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64;
    return p;
}

static void test_counts(void)
{
    static const struct {
        int depth;
        int64_t params;
    } imagenet[] = {{18, 11689512}, {34, 21797672}, {50, 25557032}, {101, 44549160},
                    {152, 60192808}};
    for (size_t i = 0; i < sizeof imagenet / sizeof imagenet[0]; i++) {
        char depth[32], what[64];
        snprintf(depth, sizeof depth, "depth=%d", imagenet[i].depth);
        snprintf(what, sizeof what, "imagenet ResNet-%d", imagenet[i].depth);
        const char *kv[] = {"family=imagenet", depth, NULL};
        check_count(what, kv, 3, 224, 224, 1000, imagenet[i].params);
    }
    /* Exact counts: option A is He et al.'s table 6 (0.27M ... 1.7M); option B adds the
     * two projection shortcuts (+2,752). */
    static const struct {
        int depth;
        int64_t a, b;
    } cifar[] = {{20, 269722, 272474},   {32, 464154, 466906},    {44, 658586, 661338},
                 {56, 853018, 855770},   {110, 1727962, 1730714}};
    for (size_t i = 0; i < sizeof cifar / sizeof cifar[0]; i++) {
        char depth[32], what[64];
        snprintf(depth, sizeof depth, "depth=%d", cifar[i].depth);
        CHECK(cifar_expected(cifar[i].depth, 0, 3) == cifar[i].a);
        CHECK(cifar_expected(cifar[i].depth, 1, 3) == cifar[i].b);
        snprintf(what, sizeof what, "cifar ResNet-%d shortcut A", cifar[i].depth);
        const char *kva[] = {depth, "shortcut=A", NULL};
        check_count(what, kva, 3, 32, 32, 10, cifar[i].a);
        snprintf(what, sizeof what, "cifar ResNet-%d shortcut B", cifar[i].depth);
        const char *kvb[] = {depth, "shortcut=B", NULL};
        check_count(what, kvb, 3, 32, 32, 10, cifar[i].b);
    }
    /* Defaults are the CIFAR ResNet-20 with shortcut A; num_classes comes from the data. */
    check_count("cifar defaults", NULL, 3, 32, 32, 10, 269722);
    /* Fashion-MNIST: 28x28 gray (conv1 has 1 input channel). */
    check_count("cifar ResNet-20 on 1x28x28", NULL, 1, 28, 28, 10, cifar_expected(20, 0, 1));
    /* num_classes overrides the data. */
    const char *kv100[] = {"num_classes=100", NULL};
    check_count("cifar ResNet-20, 100 classes", kv100, 3, 32, 32, 10, 269722 + 90 * 65);
    /* Pre-activation: the same convolutions and fc as v1; no BN after conv1; block i of
     * stage s has bn1 over its input channels and bn2 over its planes; then bn_final. */
    int64_t v2 = cifar_expected(20, 0, 3) - 2 * 16 - 3 * 2 * (2 * 16 + 2 * 32 + 2 * 64);
    static const int planes[3] = {16, 32, 64};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 3; i++)
            v2 += 2 * ((i == 0 && s > 0) ? planes[s - 1] : planes[s]) + 2 * planes[s];
    v2 += 2 * 64;
    const char *kvv2[] = {"version=v2", NULL};
    check_count("cifar ResNet-20 v2 (pre-activation)", kvv2, 3, 32, 32, 10, v2);
}

static void test_flops_and_names(void)
{
    const char *kv[] = {"family=imagenet", "depth=50", NULL};
    graph *g = build(kv, 3, 224, 224, 1000);
    CHECK(g != NULL);
    if (!g)
        return;
    int64_t macs = graph_flops_per_image(g);
    printf("ResNet-50 224x224: %" PRId64 " MACs per image (%.4f G; torchvision: 4.09)\n", macs,
           macs / 1e9);
    /* Convolutions and fc counted by hand in test_flops_reference() below. */
    CHECK(macs == 4089184256LL);
    /* torchvision's state_dict keys minus the 53 num_batches_tracked: 53 convs, 53 BNs with
     * four tensors each, fc weight and bias. */
    CHECK(graph_tensor_count(g) == 53 + 53 * 4 + 2);
    static const char *const names[] = {
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "layer1.0.conv1.weight", "layer1.0.bn3.running_var", "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight", "layer1.0.downsample.1.running_mean",
        "layer2.3.conv2.weight", "layer3.5.bn2.bias", "layer4.2.conv3.weight", "fc.weight",
        "fc.bias"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (graph_tensor_find(g, names[i]) < 0) {
            fprintf(stderr, "missing tensor %s\n", names[i]);
            CHECK(0);
        }
    }
    CHECK(graph_tensor_find(g, "layer1.1.downsample.0.weight") < 0);
    const tp_tensor *w = graph_tensor_desc(g, (size_t)graph_tensor_find(g, "conv1.weight"));
    CHECK(w->ndim == 4 && w->shape[0] == 64 && w->shape[1] == 3 && w->shape[2] == 7 &&
          w->shape[3] == 7);
    w = graph_tensor_desc(g, (size_t)graph_tensor_find(g, "layer2.0.conv2.weight"));
    CHECK(w->shape[0] == 128 && w->shape[1] == 128 && w->shape[2] == 3);
    w = graph_tensor_desc(g, (size_t)graph_tensor_find(g, "fc.weight"));
    CHECK(w->ndim == 2 && w->shape[0] == 1000 && w->shape[1] == 2048);
    CHECK(graph_num_outputs(g) == 1000);
    size_t np, ns;
    graph_params(g, &np);
    graph_state(g, &ns);
    CHECK(np == 53 + 53 * 2 + 2 && ns == 53 * 2);
    graph_free(g);

    const char *kv18[] = {"family=imagenet", "depth=18", NULL};
    g = build(kv18, 3, 224, 224, 1000);
    CHECK(g && graph_tensor_count(g) == 122 - 20); /* torchvision: 122 keys, 20 BNs */
    if (g) {
        printf("ResNet-18 224x224: %" PRId64 " MACs per image\n", graph_flops_per_image(g));
        CHECK(graph_flops_per_image(g) == 1814073344LL);
    }
    graph_free(g);

    const char *kv20[] = {"depth=20", NULL};
    g = build(kv20, 3, 32, 32, 10);
    if (g) {
        graph_print_table(g, stdout);
        printf("ResNet-20 32x32: %" PRId64 " MACs per image\n", graph_flops_per_image(g));
        CHECK(graph_flops_per_image(g) == 40551040LL);
        CHECK(graph_tensor_find(g, "layer3.2.bn2.running_var") >= 0);
        CHECK(graph_tensor_find(g, "layer2.0.downsample.0.weight") < 0); /* option A */
    }
    graph_free(g);
}

static void check_refused(const char *const *kv, int classes, const char *needle)
{
    instance inst;
    const registry_entry *e = registry_find(reg, TP_KIND_MODEL, "resnet");
    services_clear_error();
    if (instance_create(e->component, kv, &inst) != TP_OK) {
        CHECK_CONTAINS(services_last_error(), needle);
        return;
    }
    graph *g = test_build_graph(&inst, 3, 32, 32, classes);
    CHECK(g == NULL);
    CHECK_CONTAINS(services_last_error(), needle);
    printf("refused as expected: %s\n", services_last_error());
    graph_free(g);
    instance_destroy(&inst);
}

static void test_refused(void)
{
    check_refused((const char *[]){"depth=21", NULL}, 10, "6n+2");
    check_refused((const char *[]){"family=imagenet", "depth=20", NULL}, 10, "18, 34, 50");
    check_refused((const char *[]){"family=imagenet", "depth=50", "version=v2", NULL}, 10,
                  "cifar family only");
    check_refused(NULL, 0, "num_classes");
}

/* Builds, binds (naive backend, batch 1) and initialises a model; NULL after a message. */
static graph *build_init(const char *const *kv, int c, int h, int w, int classes,
                         const tp_backend *be)
{
    graph *g = build(kv, c, h, w, classes);
    if (g && (graph_bind(g, be, 1, TP_LAYOUT_NCHW) != TP_OK || graph_init_params(g, 11) != TP_OK)) {
        fprintf(stderr, "bind/init failed: %s\n", services_last_error());
        graph_free(g);
        g = NULL;
    }
    return g;
}

/* The named tensor's initial values (malloc'd, count in *n), or NULL. */
static float *tensor_values(graph *g, const char *name, size_t *n)
{
    int64_t ti = graph_tensor_find(g, name);
    *n = 0;
    if (ti < 0) {
        fprintf(stderr, "missing tensor %s\n", name);
        return NULL;
    }
    *n = (size_t)tp_tensor_count(graph_tensor_desc(g, (size_t)ti));
    float *v = malloc(*n * sizeof *v);
    if (graph_tensor_get(g, (size_t)ti, v, *n) != TP_OK) {
        fprintf(stderr, "%s: %s\n", name, services_last_error());
        free(v);
        return NULL;
    }
    return v;
}

typedef struct moments {
    size_t n;
    double mean, std, max_abs;
} moments;

static int tensor_moments(graph *g, const char *name, moments *m)
{
    float *v = tensor_values(g, name, &m->n);
    if (!v)
        return 0;
    double s = 0, s2 = 0;
    m->max_abs = 0;
    for (size_t k = 0; k < m->n; k++) {
        s += v[k];
        s2 += (double)v[k] * v[k];
        m->max_abs = fmax(m->max_abs, fabs(v[k]));
    }
    m->mean = s / m->n;
    m->std = sqrt(fmax(s2 / m->n - m->mean * m->mean, 0));
    free(v);
    return 1;
}

/* The largest |w| of Keras's truncated he_normal of standard deviation `std`: two standard
 * deviations of the untruncated normal, whose std is std / 0.87962566 (the std of N(0, 1)
 * truncated to [-2, 2]). Written out here rather than taken from host/graph.c, so that the
 * test states the expectation independently. */
static double truncation_bound(double std)
{
    return 2 * std / 0.87962566103423978;
}

/* A convolution's initial spread: std within 3% of sqrt(2 / fan) (fan_in = in * kh * kw,
 * fan_out = out * kh * kw, from the tensor's OIHW shape), mean within 3% of that std of 0.
 * The layers are picked with >= 10k values (the std's sampling error is < 0.7%) and fans
 * that differ by 2x or 4x, so the wrong fan is 30% or 50% off. Truncated: Keras he_normal
 * draws N(0, 1) truncated to [-2, 2] times sqrt(2 / fan_in) / 0.87962566 (the factor
 * restores the variance lost by the truncation), so the std is still sqrt(2 / fan_in) and
 * no |w| exceeds 2 sqrt(2 / fan_in) / 0.87962566, while some come within 3% of it. */
static void check_conv_init(const char *mode, graph *g, const char *name, int use_fan_in,
                            int truncated)
{
    moments m;
    CHECK(tensor_moments(g, name, &m));
    if (!m.n)
        return;
    const tp_tensor *t = graph_tensor_desc(g, (size_t)graph_tensor_find(g, name));
    CHECK(t->ndim == 4);
    int64_t fan_in = t->shape[1] * t->shape[2] * t->shape[3];
    int64_t fan_out = t->shape[0] * t->shape[2] * t->shape[3];
    CHECK(m.n >= 10000);
    CHECK(fan_in * 2 <= fan_out || fan_out * 2 <= fan_in); /* the fans must be told apart */
    double expected = sqrt(2.0 / (double)(use_fan_in ? fan_in : fan_out));
    printf("%-19s %-28s std %.5f expected %.5f (sqrt(2/fan_%s), fan_in %" PRId64
           ", fan_out %" PRId64 ", %zu values), mean % .2e\n", mode, name, m.std, expected,
           use_fan_in ? "in" : "out", fan_in, fan_out, m.n, m.mean);
    CHECK(fabs(m.std / expected - 1) < 0.03);
    CHECK(fabs(m.mean) < 0.03 * expected);
    if (truncated) {
        double bound = truncation_bound(expected);
        printf("%-19s %-28s max |w| %.5f, truncation bound %.5f\n", mode, name, m.max_abs,
               bound);
        CHECK(m.max_abs <= bound * (1 + 1e-6));
        CHECK(m.max_abs > 0.97 * bound);
    }
}

/* fc: PyTorch's nn.Linear default (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias)
 * unless the init is he_truncated_fan_in, which the plugin documents as also used for fc
 * (the Keras example's Dense(he_normal)), with a zero bias. */
static void check_fc_init(const char *mode, graph *g, int truncated)
{
    moments w, b;
    CHECK(tensor_moments(g, "fc.weight", &w) && tensor_moments(g, "fc.bias", &b));
    if (!w.n || !b.n)
        return;
    const tp_tensor *t = graph_tensor_desc(g, (size_t)graph_tensor_find(g, "fc.weight"));
    double fan_in = (double)t->shape[1];
    if (truncated) {
        double expected = sqrt(2.0 / fan_in), bound = truncation_bound(expected);
        printf("%-19s %-28s std %.5f expected %.5f (sqrt(2/fan_in)), max |w| %.5f bound "
               "%.5f; bias max |b| %.1e (expected 0)\n", mode, "fc.weight", w.std, expected,
               w.max_abs, bound, b.max_abs);
        CHECK(fabs(w.std / expected - 1) < 0.03);
        CHECK(w.max_abs <= bound * (1 + 1e-6) && w.max_abs > 0.97 * bound);
        CHECK(b.max_abs == 0);
    } else {
        double bound = 1 / sqrt(fan_in), expected = bound / sqrt(3.0);
        printf("%-19s %-28s std %.5f expected %.5f (U(+-1/sqrt(%g))), max |w| %.5f, bias "
               "max |b| %.5f (bound %.5f)\n", mode, "fc.weight", w.std, expected, fan_in,
               w.max_abs, b.max_abs, bound);
        CHECK(fabs(w.std / expected - 1) < 0.03);
        CHECK(w.max_abs <= bound * (1 + 1e-6) && w.max_abs > 0.99 * bound);
        CHECK(b.max_abs <= bound * (1 + 1e-6) && b.max_abs > 0.5 * bound);
    }
    CHECK(fabs(w.mean) < 0.03 * w.std);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every batch norm: gamma 1 except, when `zeroed_suffix` is set, the residual branches'
 * last ones ("layerS.B" + zeroed_suffix), which must be exactly 0; beta and running mean
 * 0, running variance 1. Returns how many gammas were zero. */
static int check_bn_init(const char *mode, graph *g, const char *zeroed_suffix)
{
    int gammas = 0, zeros = 0, wrong = 0, others = 0;
    for (size_t i = 0; i < graph_tensor_count(g); i++) {
        const char *name = graph_tensor_name(g, i);
        const char *dot = strrchr(name, '.');
        int is_bn = strstr(name, "bn") != NULL || strstr(name, "downsample.1.") != NULL;
        if (!dot || !is_bn)
            continue;
        double want;
        int is_gamma = strcmp(dot, ".weight") == 0;
        int zero = is_gamma && zeroed_suffix && strncmp(name, "layer", 5) == 0 &&
                   ends_with(name, zeroed_suffix);
        if (is_gamma)
            want = zero ? 0.0 : 1.0;
        else if (!strcmp(dot, ".bias") || !strcmp(dot, ".running_mean"))
            want = 0.0;
        else if (!strcmp(dot, ".running_var"))
            want = 1.0;
        else
            continue;
        size_t n;
        float *v = tensor_values(g, name, &n);
        CHECK(v != NULL);
        int ok = v != NULL;
        for (size_t k = 0; v && k < n; k++)
            ok &= v[k] == want;
        if (!ok) {
            fprintf(stderr, "%s: %s is not all %g\n", mode, name, want);
            wrong++;
        }
        gammas += is_gamma;
        zeros += zero;
        others += !is_gamma;
        free(v);
    }
    printf("%-19s %d BN gammas: %d exactly 0 (%s), the rest 1; %d betas/running stats 0/1; "
           "%d wrong\n", mode, gammas, zeros, zeroed_suffix ? zeroed_suffix : "none zeroed",
           others, wrong);
    CHECK(wrong == 0);
    CHECK(gammas > 0);
    return zeros;
}

static void test_init_modes(void)
{
    tp_backend be = naive_backend(1);
    static const struct {
        const char *setting, *mode;
        int fan_in, truncated;
    } modes[] = {{NULL, "default (fan_out)", 0, 0},
                 {"init=he_normal_fan_out", "he_normal_fan_out", 0, 0},
                 {"init=he_normal_fan_in", "he_normal_fan_in", 1, 0},
                 {"init=he_truncated_fan_in", "he_truncated_fan_in", 1, 1}};
    /* ResNet-50 1x1 bottleneck convolutions (512->128: fan_in 4x fan_out; 128->512: the
     * reverse), a projection shortcut (512->1024), and a CIFAR stage transition (3x3,
     * 32->64). The weight shapes do not depend on the input size, so 32x32 keeps the
     * activations small. */
    static const char *const imagenet_layers[] = {"layer2.1.conv1.weight", "layer2.1.conv3.weight",
                                                  "layer3.0.downsample.0.weight"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        const char *kv[] = {"family=imagenet", "depth=50", modes[i].setting, NULL};
        graph *g = build_init(kv, 3, 32, 32, 1000, &be);
        CHECK(g != NULL);
        if (g) {
            for (size_t l = 0; l < sizeof imagenet_layers / sizeof imagenet_layers[0]; l++)
                check_conv_init(modes[i].mode, g, imagenet_layers[l], modes[i].fan_in,
                                modes[i].truncated);
            check_fc_init(modes[i].mode, g, modes[i].truncated);
            CHECK(check_bn_init(modes[i].mode, g, NULL) == 0);
        }
        graph_free(g);
        const char *kvc[] = {"depth=20", "shortcut=B", modes[i].setting, NULL};
        g = build_init(kvc, 3, 32, 32, 10, &be);
        CHECK(g != NULL);
        if (g) {
            check_conv_init(modes[i].mode, g, "layer3.0.conv1.weight", modes[i].fan_in,
                            modes[i].truncated);
            CHECK(check_bn_init(modes[i].mode, g, NULL) == 0);
        }
        graph_free(g);
    }
    CHECK(naive_backend_live_allocations() == 0);
}

/* zero_init_residual: the last batch norm of every residual branch (bn2 of a basic block,
 * bn3 of a bottleneck) starts at gamma = 0, every other gamma (stem, inner, projection
 * shortcut BNs) at 1; with false all are 1. Documented for v1: a v2 branch ends with a
 * convolution, so v2 keeps every gamma at 1. */
static void test_zero_init_residual(void)
{
    tp_backend be = naive_backend(1);
    static const struct {
        const char *what, *family, *depth, *version, *last;
        int blocks;
    } models[] = {{"cifar ResNet-20 B", "family=cifar", "depth=20", "version=v1", ".bn2.weight", 9},
                  {"imagenet ResNet-18", "family=imagenet", "depth=18", "version=v1",
                   ".bn2.weight", 8},
                  {"imagenet ResNet-50", "family=imagenet", "depth=50", "version=v1",
                   ".bn3.weight", 16},
                  {"cifar ResNet-20 v2 B", "family=cifar", "depth=20", "version=v2", NULL, 0}};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        for (int on = 0; on < 2; on++) {
            const char *kv[] = {models[i].family, models[i].depth, models[i].version,
                                "shortcut=B",
                                on ? "zero_init_residual=true" : "zero_init_residual=false",
                                NULL};
            char mode[64];
            snprintf(mode, sizeof mode, "%s zero=%d", models[i].what, on);
            graph *g = build_init(kv, 3, 32, 32, 10, &be);
            CHECK(g != NULL);
            if (!g)
                continue;
            int zeros = check_bn_init(mode, g, on ? models[i].last : NULL);
            CHECK(zeros == (on ? models[i].blocks : 0));
            graph_free(g);
        }
    CHECK(naive_backend_live_allocations() == 0);
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "model-resnet.so") != TP_OK) {
        fprintf(stderr, "model-resnet.so not built\n");
        return 1;
    }
    test_counts();
    test_flops_and_names();
    test_refused();
    test_init_modes();
    test_zero_init_residual();
    registry_free(reg);
    return CHECK_EXIT();
}
