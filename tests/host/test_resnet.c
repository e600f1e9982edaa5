/* model-resnet: exact parameter counts of every family member (torchvision's ImageNet
 * ResNets; He et al.'s CIFAR networks with shortcuts A and B), the MACs of ResNet-50,
 * torchvision's tensor names and shapes, inputs of other sizes, and refused configurations. */
#include "config.h"

#include <inttypes.h>
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
    registry_free(reg);
    return CHECK_EXIT();
}
