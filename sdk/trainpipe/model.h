/* trainpipe SDK: models (TP_KIND_MODEL) and the network builder.
 *
 * A model plugin holds no math. Its build() describes the network through the builder's
 * calls; the host records the graph, allocates parameters and activations on the active
 * backend, and runs forward and backward. So every model runs on every backend.
 *
 * Nodes are small integer handles returned by the builder; a negative handle means the call
 * failed (the builder has already recorded the message) and every call accepts a negative
 * input by failing again, so build() can chain calls and check once at the end.
 *
 * Names: each layer with parameters gets a name prefix ("layer1.0.conv1"), and its tensors
 * are named prefix + ".weight", ".bias", ".running_mean", ".running_var" (torchvision's
 * scheme), which is what checkpoints and safetensors exports use. */
#ifndef TRAINPIPE_MODEL_H
#define TRAINPIPE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t tp_node;

typedef enum tp_init_kind {
    TP_INIT_ZEROS = 0,
    TP_INIT_ONES = 1,
    TP_INIT_HE_NORMAL_FAN_IN = 2,   /* N(0, 2/fan_in) (Keras he_normal uses a truncated one) */
    TP_INIT_HE_NORMAL_FAN_OUT = 3,  /* N(0, 2/fan_out) (torchvision ResNet convolutions) */
    TP_INIT_HE_TRUNCATED_FAN_IN = 4,/* Keras he_normal: truncated normal, stddev
                                       sqrt(2/fan_in)/0.87962566 */
    TP_INIT_TORCH_LINEAR = 5,       /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch default) */
    TP_INIT_GLOROT_UNIFORM = 6      /* Keras default for Dense */
} tp_init_kind;

typedef struct tp_netbuilder tp_netbuilder; /* opaque, owned by the host */

/* The builder's calls, handed to build(). */
typedef struct tp_net_ops {
    size_t size;

    /* The input batch (f32, N x channels x height x width as the data delivers it). */
    tp_node (*input)(tp_netbuilder *nb);

    /* Shape of a node's output per sample (channels, height, width; height = width = 1
     * after global pooling or linear layers). */
    tp_status (*shape)(tp_netbuilder *nb, tp_node x, int *channels, int *height, int *width);

    tp_node (*conv)(tp_netbuilder *nb, const char *name, tp_node x, int out_channels,
                    int kernel, int stride, int pad, int bias, tp_init_kind init);
    /* zero_gamma: initialise the scale to 0 (last BN of a residual branch). */
    tp_node (*batchnorm)(tp_netbuilder *nb, const char *name, tp_node x, double momentum,
                         double eps, int zero_gamma);
    tp_node (*relu)(tp_netbuilder *nb, tp_node x);
    tp_node (*add)(tp_netbuilder *nb, tp_node a, tp_node b);
    tp_node (*maxpool)(tp_netbuilder *nb, tp_node x, int kernel, int stride, int pad);
    tp_node (*avgpool)(tp_netbuilder *nb, tp_node x, int kernel, int stride, int pad);
    tp_node (*global_avgpool)(tp_netbuilder *nb, tp_node x);
    tp_node (*linear)(tp_netbuilder *nb, const char *name, tp_node x, int out_features,
                      int bias, tp_init_kind init);
    /* ResNet option-A shortcut: strided subsampling with zero-padded extra channels. */
    tp_node (*subsample_pad)(tp_netbuilder *nb, tp_node x, int stride, int out_channels);

    /* Marks the logits (N x num_classes). Exactly one output. */
    tp_status (*output)(tp_netbuilder *nb, tp_node logits);

    void *reserved[8];
} tp_net_ops;

/* What the data looks like, for build(). */
typedef struct tp_model_input {
    size_t size;
    int channels, height, width;
    int num_classes;
} tp_model_input;

typedef struct tp_model_ops {
    size_t size; /* sizeof(tp_model_ops) */
    tp_status (*build)(void *self, const tp_net_ops *net, tp_netbuilder *nb,
                       const tp_model_input *input);
    void *reserved[4];
} tp_model_ops;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_MODEL_H */
