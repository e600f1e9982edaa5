/* model-resnet: the ResNet family, described through the SDK's network builder.
 *
 * Two families:
 *   imagenet  torchvision's layout and tensor names (conv1 7x7/2, bn1, relu, maxpool 3/2,
 *             layer1..layer4, global average pool, fc). Depth 18/34 use basic blocks,
 *             50/101/152 bottlenecks with the stride on the 3x3 convolution ("v1.5").
 *   cifar     He et al. 2015 section 4.2: conv1 3x3, three stages of n basic blocks
 *             (depth = 6n + 2) with widths w, 2w, 4w, global average pool, fc. Tensor names
 *             follow torchvision's scheme: conv1, bn1, layer{1,2,3}.{i}.conv1/bn1/conv2/bn2,
 *             layer{s}.0.downsample.0/1 (projection shortcut), fc. Input size and channels
 *             come from the data (32x32 RGB, 28x28 gray, ...).
 * version v2 (cifar only) is the pre-activation network of He et al. 2016: blocks are
 * bn1-relu-conv1-bn2-relu-conv2 plus the shortcut, and a final bn ("bn_final") and relu come
 * before the pooling. See share/doc/models.md. */
#include <stdio.h>
#include <string.h>

#include <trainpipe/trainpipe.h>

enum { FAMILY_CIFAR = 0, FAMILY_IMAGENET = 1 };
enum { VERSION_V1 = 0, VERSION_V2 = 1 };
enum { SHORTCUT_AUTO = 0, SHORTCUT_A = 1, SHORTCUT_B = 2 };
enum { INIT_HE_FAN_OUT = 0, INIT_HE_FAN_IN = 1, INIT_HE_TRUNCATED_FAN_IN = 2 };

typedef struct resnet_config {
    int family;
    int64_t depth;
    int version;
    int shortcut;
    int64_t width;
    int64_t num_classes;
    int init;
    int zero_init_residual;
    double bn_momentum;
    double bn_eps;
} resnet_config;

typedef struct resnet {
    const tp_host *host;
    resnet_config cfg;
} resnet;

static const char *const family_choices[] = {"cifar", "imagenet", NULL};
static const char *const version_choices[] = {"v1", "v2", NULL};
static const char *const shortcut_choices[] = {"auto", "A", "B", NULL};
static const char *const init_choices[] = {"he_normal_fan_out", "he_normal_fan_in",
                                           "he_truncated_fan_in", NULL};

static const tp_param_def resnet_params[] = {
    TP_PARAM_DEF_ENUM(resnet_config, family, "family", "cifar", family_choices,
                      "cifar: He et al. 6n+2 networks; imagenet: torchvision ResNet-18..152"),
    TP_PARAM_DEF_INT(resnet_config, depth, "depth", "20", 8, 1202,
                     "layers: cifar 6n+2 (20, 32, 44, 56, 110); imagenet 18, 34, 50, 101, 152"),
    TP_PARAM_DEF_ENUM(resnet_config, version, "version", "v1", version_choices,
                      "v1: post-activation (He 2015); v2: pre-activation (He 2016, cifar only)"),
    TP_PARAM_DEF_ENUM(resnet_config, shortcut, "shortcut", "auto", shortcut_choices,
                      "A: subsample + zero-padded channels; B: 1x1 projection (+BN in v1); "
                      "auto: A for cifar, B for imagenet"),
    TP_PARAM_DEF_INT(resnet_config, width, "width", "0", 0, 4096,
                     "channels of the first stage; 0: 16 for cifar, 64 for imagenet"),
    TP_PARAM_DEF_INT(resnet_config, num_classes, "num_classes", "0", 0, 1000000,
                     "outputs of fc; 0 takes the number of classes from the data"),
    TP_PARAM_DEF_ENUM(resnet_config, init, "init", "he_normal_fan_out", init_choices,
                      "convolution init: torchvision (fan_out), He fan_in, or Keras he_normal "
                      "(truncated, fan_in; also used for fc)"),
    TP_PARAM_DEF_BOOL(resnet_config, zero_init_residual, "zero_init_residual", "false",
                      "start the last batch norm of each residual branch at gamma = 0 (v1)"),
    TP_PARAM_DEF_FLOAT(resnet_config, bn_momentum, "bn_momentum", "0.1", 0, 1,
                       "running statistics momentum (PyTorch convention: new = 0.1)"),
    TP_PARAM_DEF_FLOAT(resnet_config, bn_eps, "bn_eps", "1e-5", 1e-12, 1,
                       "batch norm epsilon"),
};

static tp_status resnet_create(const tp_host *host, const void *config, void **self)
{
    const resnet_config *cfg = config;
    int64_t d = cfg->depth;
    if (cfg->family == FAMILY_CIFAR) {
        if (d < 8 || (d - 2) % 6 != 0)
            return host->fail(host, TP_ERR_INVALID,
                              "resnet: depth %lld is not 6n+2 (n >= 1) for the cifar family "
                              "(try 20, 32, 44, 56, 110)", (long long)d);
    } else {
        if (d != 18 && d != 34 && d != 50 && d != 101 && d != 152)
            return host->fail(host, TP_ERR_INVALID,
                              "resnet: depth %lld is not one of 18, 34, 50, 101, 152 for the "
                              "imagenet family", (long long)d);
        if (cfg->version == VERSION_V2)
            return host->fail(host, TP_ERR_UNSUPPORTED,
                              "resnet: version v2 (pre-activation) exists for the cifar family "
                              "only");
    }
    resnet *r = host->calloc(1, sizeof *r);
    if (!r)
        return host->fail(host, TP_ERR_NOMEM, "resnet: cannot allocate the model");
    r->host = host;
    r->cfg = *cfg;
    *self = r;
    return TP_OK;
}

static void resnet_destroy(void *self)
{
    resnet *r = self;
    if (r)
        r->host->free(r);
}

/* What every block builder needs. */
typedef struct ctx {
    const resnet *r;
    const tp_net_ops *net;
    tp_netbuilder *nb;
    tp_init_kind init;
    int shortcut; /* SHORTCUT_A or SHORTCUT_B */
} ctx;

static tp_node conv(ctx *c, const char *name, tp_node x, int out, int k, int stride)
{
    return c->net->conv(c->nb, name, x, out, k, stride, k / 2, 0, c->init);
}

static tp_node bn(ctx *c, const char *name, tp_node x, int zero_gamma)
{
    return c->net->batchnorm(c->nb, name, x, c->r->cfg.bn_momentum, c->r->cfg.bn_eps,
                             zero_gamma);
}

static int channels_of(ctx *c, tp_node x)
{
    int ch = 0;
    if (x < 0 || c->net->shape(c->nb, x, &ch, NULL, NULL) != TP_OK)
        return -1;
    return ch;
}

/* The shortcut of a block whose shape changes: option A (subsample + zero channels) or B
 * (1x1 projection, followed by batch norm when `with_bn`). */
static tp_node shortcut(ctx *c, const char *prefix, tp_node x, int out, int stride, int with_bn)
{
    char name[128];
    if (c->shortcut == SHORTCUT_A)
        return c->net->subsample_pad(c->nb, x, stride, out);
    snprintf(name, sizeof name, "%s.downsample.0", prefix);
    tp_node s = c->net->conv(c->nb, name, x, out, 1, stride, 0, 0, c->init);
    if (!with_bn)
        return s;
    snprintf(name, sizeof name, "%s.downsample.1", prefix);
    return bn(c, name, s, 0);
}

#define NAME(buf, prefix, suffix) (snprintf(buf, sizeof buf, "%s.%s", prefix, suffix), buf)

/* Post-activation basic block (v1): conv3x3-bn-relu-conv3x3-bn + shortcut, relu. */
static tp_node basic_v1(ctx *c, const char *p, tp_node x, int planes, int stride)
{
    char n[128];
    int in_ch = channels_of(c, x);
    tp_node y = conv(c, NAME(n, p, "conv1"), x, planes, 3, stride);
    y = bn(c, NAME(n, p, "bn1"), y, 0);
    y = c->net->relu(c->nb, y);
    y = conv(c, NAME(n, p, "conv2"), y, planes, 3, 1);
    y = bn(c, NAME(n, p, "bn2"), y, c->r->cfg.zero_init_residual);
    tp_node s = x;
    if (stride != 1 || in_ch != planes)
        s = shortcut(c, p, x, planes, stride, 1);
    return c->net->relu(c->nb, c->net->add(c->nb, y, s));
}

/* Bottleneck (torchvision v1.5: stride on the 3x3), expansion 4. */
static tp_node bottleneck(ctx *c, const char *p, tp_node x, int planes, int stride)
{
    char n[128];
    int in_ch = channels_of(c, x);
    tp_node y = conv(c, NAME(n, p, "conv1"), x, planes, 1, 1);
    y = c->net->relu(c->nb, bn(c, NAME(n, p, "bn1"), y, 0));
    y = conv(c, NAME(n, p, "conv2"), y, planes, 3, stride);
    y = c->net->relu(c->nb, bn(c, NAME(n, p, "bn2"), y, 0));
    y = conv(c, NAME(n, p, "conv3"), y, planes * 4, 1, 1);
    y = bn(c, NAME(n, p, "bn3"), y, c->r->cfg.zero_init_residual);
    tp_node s = x;
    if (stride != 1 || in_ch != planes * 4)
        s = shortcut(c, p, x, planes * 4, stride, 1);
    return c->net->relu(c->nb, c->net->add(c->nb, y, s));
}

/* Pre-activation basic block (v2). When the shape changes, the shortcut takes the
 * pre-activated input (as in He et al. 2016's code), and a projection has no BN. */
static tp_node basic_v2(ctx *c, const char *p, tp_node x, int planes, int stride)
{
    char n[128];
    int in_ch = channels_of(c, x);
    tp_node a = c->net->relu(c->nb, bn(c, NAME(n, p, "bn1"), x, 0));
    tp_node y = conv(c, NAME(n, p, "conv1"), a, planes, 3, stride);
    y = c->net->relu(c->nb, bn(c, NAME(n, p, "bn2"), y, 0));
    y = conv(c, NAME(n, p, "conv2"), y, planes, 3, 1);
    tp_node s = x;
    if (stride != 1 || in_ch != planes)
        s = shortcut(c, p, a, planes, stride, 0);
    return c->net->add(c->nb, y, s);
}

typedef tp_node (*block_fn)(ctx *c, const char *prefix, tp_node x, int planes, int stride);

static tp_node stage(ctx *c, int index, tp_node x, block_fn block, int blocks, int planes,
                     int stride)
{
    char prefix[64];
    for (int i = 0; i < blocks; i++) {
        snprintf(prefix, sizeof prefix, "layer%d.%d", index, i);
        x = block(c, prefix, x, planes, i == 0 ? stride : 1);
    }
    return x;
}

static tp_status resnet_build(void *self, const tp_net_ops *net, tp_netbuilder *nb,
                              const tp_model_input *input)
{
    const resnet *r = self;
    const resnet_config *cfg = &r->cfg;
    int classes = cfg->num_classes > 0 ? (int)cfg->num_classes : input->num_classes;
    if (classes < 1)
        return r->host->fail(r->host, TP_ERR_INVALID,
                             "resnet: num_classes is 0 and the data does not say how many "
                             "classes it has; set num_classes");
    ctx c = {r, net, nb, TP_INIT_HE_NORMAL_FAN_OUT, SHORTCUT_A};
    tp_init_kind fc_init = TP_INIT_TORCH_LINEAR;
    switch (cfg->init) {
    case INIT_HE_FAN_IN: c.init = TP_INIT_HE_NORMAL_FAN_IN; break;
    case INIT_HE_TRUNCATED_FAN_IN:
        c.init = TP_INIT_HE_TRUNCATED_FAN_IN;
        fc_init = TP_INIT_HE_TRUNCATED_FAN_IN; /* the Keras example's Dense(he_normal) */
        break;
    default: c.init = TP_INIT_HE_NORMAL_FAN_OUT; break;
    }
    c.shortcut = cfg->shortcut != SHORTCUT_AUTO ? cfg->shortcut
                 : cfg->family == FAMILY_CIFAR ? SHORTCUT_A : SHORTCUT_B;

    tp_node x = net->input(nb);
    if (cfg->family == FAMILY_IMAGENET) {
        int w = cfg->width ? (int)cfg->width : 64;
        static const int blocks_by_depth[5][4] = {
            {2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}, {3, 4, 23, 3}, {3, 8, 36, 3}};
        int row = cfg->depth == 18 ? 0 : cfg->depth == 34 ? 1 : cfg->depth == 50 ? 2
                  : cfg->depth == 101 ? 3 : 4;
        block_fn block = cfg->depth >= 50 ? bottleneck : basic_v1;
        x = net->conv(nb, "conv1", x, w, 7, 2, 3, 0, c.init);
        x = net->relu(nb, bn(&c, "bn1", x, 0));
        x = net->maxpool(nb, x, 3, 2, 1);
        for (int s = 0; s < 4; s++)
            x = stage(&c, s + 1, x, block, blocks_by_depth[row][s], w << s, s == 0 ? 1 : 2);
    } else {
        int w = cfg->width ? (int)cfg->width : 16;
        int n = (int)(cfg->depth - 2) / 6;
        x = conv(&c, "conv1", x, w, 3, 1);
        if (cfg->version == VERSION_V1) {
            x = net->relu(nb, bn(&c, "bn1", x, 0));
            for (int s = 0; s < 3; s++)
                x = stage(&c, s + 1, x, basic_v1, n, w << s, s == 0 ? 1 : 2);
        } else {
            for (int s = 0; s < 3; s++)
                x = stage(&c, s + 1, x, basic_v2, n, w << s, s == 0 ? 1 : 2);
            x = net->relu(nb, bn(&c, "bn_final", x, 0));
        }
    }
    x = net->global_avgpool(nb, x);
    x = net->linear(nb, "fc", x, classes, 1, fc_init);
    /* A failed builder call has recorded its message; output() fails on a negative node. */
    return net->output(nb, x);
}

static const tp_model_ops resnet_ops = {
    .size = sizeof(tp_model_ops),
    .build = resnet_build,
};

static const tp_component resnet_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_MODEL,
    .name = "resnet",
    .summary = "ResNet: He et al. CIFAR networks (6n+2, v1/v2) and torchvision ResNet-18..152",
    .params = resnet_params,
    .n_params = sizeof(resnet_params) / sizeof(resnet_params[0]),
    .config_size = sizeof(resnet_config),
    .create = resnet_create,
    .destroy = resnet_destroy,
    .ops = &resnet_ops,
};

static const tp_component *const resnet_components[] = {&resnet_component};

static const tp_plugin_info resnet_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "model-resnet",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "residual networks for CIFAR-style and ImageNet-style data",
    .components = resnet_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &resnet_info; }
