/* A naive, obviously-correct backend for the graph tests: host memory, NCHW only, plain loops
 * with double accumulators. It lets the graph, model and optimizer tests run without oneDNN
 * and gives a second opinion next to backend-cpu. */
#ifndef TRAINPIPE_TEST_GRAPH_BACKEND_H
#define TRAINPIPE_TEST_GRAPH_BACKEND_H

#include <trainpipe/trainpipe.h>

#include "graph.h"
#include "params.h"
#include "registry.h"

/* The naive backend. `fused` selects whether the optional fused operations are offered:
 * sgd_update / adam_update and the API 1.2 add_relu and batch norm + ReLU (so tests can
 * exercise both optimizer paths and both graph plans). */
tp_backend naive_backend(int fused);

/* The same backend reporting activation_dtype = TP_DTYPE_BF16 (SDK API 1.5): it accepts bf16
 * for the activation-shaped tensors the SDK lists and converts in copy() and fill(). A bf16
 * call widens its inputs into float temporaries, runs the f32 loop (convolution weights
 * rounded to bf16 first) and rounds its outputs to bf16, nearest even. It enforces the rule
 * strictly: activations of one call in mixed dtypes, or bf16 where the SDK says f32 (weights,
 * batch-norm parameters and statistics, linear, loss, optimizer), give TP_ERR_INVALID.
 * naive_backend() reports f32 and refuses bf16 everywhere with TP_ERR_UNSUPPORTED. */
tp_backend naive_backend_bf16(int fused);

/* A reference for naive_backend_bf16(): it reports f32 and stores f32, but rounds to bf16
 * precision what a bf16 call would hold in bf16 (the activation inputs and outputs of the
 * operations that may take bf16, and a copy of the convolution weights). A graph bound in f32
 * on it computes bit for bit what the same graph bound in bf16 on naive_backend_bf16() does,
 * when the graph stores and converts exactly what the SDK says. */
tp_backend naive_backend_bf16_emulated(int fused);

/* How many tensors are currently allocated (leak check). */
long naive_backend_live_allocations(void);

/* How many calls on any naive instance received at least one bf16 tensor (refused calls
 * included), so tests can tell that bf16 was really used, or not. */
long naive_backend_bf16_calls(void);

/* Loads $TP_BUILDDIR/plugins/.libs/<file> (the build tree's plugins) into r. Returns
 * TP_ERR_NOT_FOUND without failing when the file does not exist (an optional plugin). */
tp_status test_load_plugin(registry *r, const char *file);

/* Creates component (kind, name) with "key=value" settings; NULL after printing the error. */
int test_instance(registry *r, tp_kind kind, const char *name, const char *const *kv,
                  instance *out);

/* Builds the model instance's graph for data (channels, height, width, classes). */
graph *test_build_graph(instance *model, int channels, int height, int width, int classes);

/* Creates backend-cpu from the build tree; TP_ERR_NOT_FOUND when it is not built. */
tp_status test_backend_cpu(registry *r, instance *inst, tp_backend *out);

/* Allocates t on be and fills it from host memory / copies t back to host memory. */
tp_status test_upload(const tp_backend *be, tp_tensor *t, const void *host);
tp_status test_download(const tp_backend *be, const tp_tensor *t, void *host);

/* Training-mode forward, then the mean softmax cross-entropy of the logits computed on the
 * host in double precision (NAN on failure). */
double test_loss64(graph *g, const tp_backend *be, const tp_tensor *x, const int32_t *labels);

#endif
