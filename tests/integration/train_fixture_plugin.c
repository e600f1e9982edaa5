/* Components for the training tests (test-train.tap):
 *   - the batch augmenter "poison_batch" fills chosen training batches with NaN;
 *   - the model "pooled_linear" (global average pooling, then one linear layer) lets that
 *     NaN reach the loss: a ResNet's ReLUs turn NaN into 0 (max(0, x), as the SDK defines
 *     them), so only its first layer's gradients would show it.
 * With a ResNet the poisoned steps have finite losses and NaN gradients; with
 * pooled_linear their losses are NaN too, while the steps around them stay finite. */
#include <math.h>
#include <stdlib.h>

#include <trainpipe/trainpipe.h>

typedef struct poison_config {
    int64_t batch; /* 1-based number of the first training batch to poison */
    int64_t count; /* batches poisoned from there */
} poison_config;

static const tp_param_def poison_params[] = {
    TP_PARAM_DEF_INT(poison_config, batch, "batch", "1", 1, 1e15,
                     "the first training batch (1-based, in the order the loader makes them) "
                     "filled with NaN"),
    TP_PARAM_DEF_INT(poison_config, count, "count", "1", 1, 1e15,
                     "how many batches from there are filled with NaN"),
};

typedef struct poison {
    const tp_host *host;
    int64_t batch, count;
    int64_t seen; /* training batches so far (one device thread calls apply_batch) */
} poison;

static tp_status poison_create(const tp_host *host, const void *config, void **self)
{
    poison *p = host->alloc(sizeof *p);
    if (!p)
        return host->fail(host, TP_ERR_NOMEM, "poison_batch: out of memory");
    const poison_config *c = config;
    *p = (poison){ .host = host, .batch = c->batch, .count = c->count };
    *self = p;
    return TP_OK;
}

static void poison_destroy(void *self) { free(self); }

static tp_augment_place poison_place(void *self)
{
    (void)self;
    return TP_AUGMENT_BATCH;
}

static tp_status poison_output_size(void *self, int in_height, int in_width, int in_channels,
                                    int *out_height, int *out_width, int *out_channels)
{
    (void)self;
    *out_height = in_height;
    *out_width = in_width;
    *out_channels = in_channels;
    return TP_OK;
}

static tp_status poison_apply_batch(void *self, const tp_augment_batch *b)
{
    poison *p = self;
    if (!b->training)
        return TP_OK;
    p->seen++;
    if (p->seen < p->batch || p->seen >= p->batch + p->count)
        return TP_OK;
    return b->backend->ops->fill(b->backend->self, b->images, NAN);
}

static const tp_augment_ops poison_ops = {
    .size = sizeof(tp_augment_ops),
    .place = poison_place,
    .output_size = poison_output_size,
    .apply_batch = poison_apply_batch,
};

static const tp_component poison_component = {
    sizeof(tp_component), TP_KIND_AUGMENT, "poison_batch",
    "test: fills one training batch with NaN",
    poison_params, sizeof poison_params / sizeof poison_params[0], sizeof(poison_config),
    poison_create, poison_destroy, &poison_ops
};

static tp_status pooled_linear_create(const tp_host *host, const void *config, void **self)
{
    (void)host;
    (void)config;
    *self = NULL;
    return TP_OK;
}

static void pooled_linear_destroy(void *self) { (void)self; }

static tp_status pooled_linear_build(void *self, const tp_net_ops *net, tp_netbuilder *nb,
                                     const tp_model_input *input)
{
    (void)self;
    tp_node x = net->global_avgpool(nb, net->input(nb));
    return net->output(nb, net->linear(nb, "fc", x, input->num_classes, 1,
                                       TP_INIT_TORCH_LINEAR));
}

static const tp_model_ops pooled_linear_ops = {
    .size = sizeof(tp_model_ops),
    .build = pooled_linear_build,
};

static const tp_component pooled_linear_component = {
    sizeof(tp_component), TP_KIND_MODEL, "pooled_linear",
    "test: global average pooling and one linear layer",
    NULL, 0, 0, pooled_linear_create, pooled_linear_destroy, &pooled_linear_ops
};

static const tp_component *const components[] = { &poison_component,
                                                  &pooled_linear_component };

static const tp_plugin_info info = {
    TP_PLUGIN_INFO_HEADER,
    "test-train-fixtures", "0.0.1", "MIT", "components for the training tests",
    components, sizeof components / sizeof components[0], { NULL },
};

const tp_plugin_info *trainpipe_plugin_entry(void) { return &info; }
