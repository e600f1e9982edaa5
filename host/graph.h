/* The network graph: what a model plugin describes through the SDK's network builder
 * (sdk/trainpipe/model.h), recorded, checked, bound to a backend and executed.
 *
 * Life cycle:
 *   graph_build()        runs the model's build() against the builder; shapes are inferred and
 *                        checked as nodes are added, parameters get their names and roles.
 *   graph_bind()         allocates parameters, gradients, batch-norm state, activations and
 *                        gradient buffers on a backend for one batch size and layout.
 *   graph_init_params()  initialises every parameter and running statistic from a seed.
 *   graph_forward()      runs the network on an input batch (training or inference mode).
 *   graph_backward()     back-propagates d(loss)/d(logits), overwriting every parameter
 *                        gradient (gradients are not accumulated across calls).
 *
 * Conventions:
 *   - FLOPs are counted as multiply-accumulates (MACs) of convolutions and linear layers,
 *     the convention behind the "FLOPs" of He et al. and torchvision's tables (ResNet-50 at
 *     224x224: 4.09 G). Batch norm, ReLU, pooling and additions are not counted.
 *   - Tensor names follow torchvision: prefix + ".weight" / ".bias" for convolutions and
 *     linear layers, and for batch norm ".weight" (gamma), ".bias" (beta), ".running_mean",
 *     ".running_var". PyTorch's ".num_batches_tracked" is not kept (it only matters for
 *     momentum = None, which trainpipe does not offer).
 *   - Convolution weights are OIHW, linear weights [out, in], like PyTorch, so checkpoints and
 *     safetensors files need no transposes.
 *   - Errors go through services_fail() and name the layer. */
#ifndef TRAINPIPE_HOST_GRAPH_H
#define TRAINPIPE_HOST_GRAPH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <trainpipe/trainpipe.h>

#include "batchnorm_sync.h"

typedef struct graph graph;

/* Builds the graph of model component `ops` / instance `self` for data shaped as `input`.
 * Returns NULL after services_fail() when build() fails, a builder call is invalid, or no
 * output was marked. */
graph *graph_build(const tp_model_ops *ops, void *self, const tp_model_input *input);

/* Frees the graph and everything bound on its backend. NULL is fine. */
void graph_free(graph *g);

/* Trainable parameters (weights, biases, BN gamma and beta; not running statistics). */
int64_t graph_param_count(const graph *g);

/* Forward multiply-accumulates per image (see the convention above). */
int64_t graph_flops_per_image(const graph *g);

/* Per-sample output shape of the logits node (channels = number of classes). */
int graph_num_outputs(const graph *g);

/* A table of layers: index, name, type, output shape per sample, parameter count. */
void graph_print_table(const graph *g, FILE *out);

/* Layer fusion (on by default): at the next graph_bind(), a ReLU that follows a batch norm or
 * an addition feeding nothing else is computed by that node when the backend offers the
 * API 1.2 fused operations; and where such an addition (with its ReLU) has a batch norm
 * feeding nothing else as an input, training computes the three in one
 * batchnorm_add_relu_train call (API 1.7) at the addition. graph_set_fusion(g, 0) runs
 * every node on its own (the equivalence tests and benchmarks compare the two). */
void graph_set_fusion(graph *g, int enabled);

/* How many ReLUs the current binding folded into the node before them (0 when unbound). */
int graph_fused_count(const graph *g);

/* How many batch norms the current binding computes with the addition after them in
 * training (0 when unbound). */
int graph_fused_add_count(const graph *g);

/* Data parallel: batch norms in training use the statistics of all `world_size` ranks,
 * combined through `allreduce` (see batchnorm_sync.h). Takes effect at the next
 * graph_bind(); world_size <= 1 or allreduce == NULL turns it off. */
void graph_set_batchnorm_sync(graph *g, bn_sync_allreduce_fn allreduce, void *ctx,
                              int world_size);

/* Activation dtype. 0 (the default) lets an API 1.5 backend choose: its info's
 * activation_dtype (bf16 on backend-cuda with precision = bf16) when the graph is bound in the
 * backend's preferred layout, without synchronised batch norms, and every linear layer reads
 * a global average pool or another linear layer. Then every activation and activation gradient is stored in that
 * dtype, except the global average pool's and the linear layers' outputs (the logits stay
 * f32), and graph_forward() converts the f32 input into it. TP_DTYPE_F32 forces f32
 * everywhere; any other value is refused (TP_ERR_INVALID). Takes effect at the next
 * graph_bind(). */
tp_status graph_set_activation_dtype(graph *g, tp_dtype dtype);

/* The dtype the current binding stores activations in (TP_DTYPE_F32 when unbound). */
tp_dtype graph_activation_dtype(const graph *g);

/* Allocates everything on `backend` for batches of `batch_size` in `layout`. May be called
 * again (e.g. another batch size for evaluation): activations are reallocated, and parameters,
 * gradients and running statistics are kept when the backend is the same one. */
tp_status graph_bind(graph *g, const tp_backend *backend, int batch_size, tp_layout layout);

/* Initialises parameters (per the builder's init kinds) and batch-norm running statistics
 * (mean 0, variance 1). Deterministic in `seed`: parameter i draws from the tp_rng stream
 * (seed, GRAPH_RNG_STREAM_INIT, i), so values do not depend on the backend or batch size. */
#define GRAPH_RNG_STREAM_INIT 0x494e4954u /* "INIT" */
tp_status graph_init_params(graph *g, uint64_t seed);

/* Forward pass. `input` is the batch (f32, N x C x H x W with N = the bound batch size, any
 * layout); it must stay valid until graph_backward() returns. training != 0 uses batch
 * statistics in batch norm (and updates the running ones) and keeps what backward needs. */
tp_status graph_forward(graph *g, const tp_tensor *input, int training);

/* The logits of the last forward pass (f32, 2-D: batch x classes), owned by the graph. */
const tp_tensor *graph_logits(const graph *g);

/* Backward pass after a training forward: dlogits (f32, batch x classes). Writes every
 * parameter gradient. Where a node feeds several consumers the gradients are summed. */
tp_status graph_backward(graph *g, const tp_tensor *dlogits);

/* Data parallel: `fn(ctx, param)` is called during graph_backward() as soon as parameter
 * `param`'s gradient (an index into graph_params()) is final, once per parameter and pass,
 * in the order graph_param_ready_order() gives, so its reduction can start while backward
 * goes on. A failure from fn stops backward. NULL removes the hook. */
typedef tp_status (*graph_grad_ready_fn)(void *ctx, size_t param);
void graph_set_grad_ready_hook(graph *g, graph_grad_ready_fn fn, void *ctx);

/* order[k] = the parameter (graph_params() index) whose gradient backward finishes k-th;
 * order has room for graph_params()'s count. The same on every rank. */
void graph_param_ready_order(const graph *g, size_t *order);

/* The trainable parameters with their gradients, for the optimizer (valid until graph_free;
 * the tensors' data exists once bound). */
const tp_param_ref *graph_params(const graph *g, size_t *count);

/* Non-trainable named state (batch-norm running statistics). */
const tp_state_ref *graph_state(const graph *g, size_t *count);

/* Every named tensor (parameters first, in creation order interleaved with state):
 * how many, and each one's name, shape and whether it is trainable. */
size_t graph_tensor_count(const graph *g);
const char *graph_tensor_name(const graph *g, size_t i);
/* The tensor's descriptor (shape, dtype f32; data NULL before graph_bind). */
const tp_tensor *graph_tensor_desc(const graph *g, size_t i);
int graph_tensor_trainable(const graph *g, size_t i);
/* Index of the tensor called `name`, or -1. */
int64_t graph_tensor_find(const graph *g, const char *name);

/* Copies a named tensor from / to host memory (count floats, row-major in its logical
 * shape). Synchronises the backend. Errors: not bound, wrong count. */
tp_status graph_tensor_get(graph *g, size_t i, float *host, size_t count);
tp_status graph_tensor_set(graph *g, size_t i, const float *host, size_t count);

#endif
