/* Test helper: the logits a pipeline's model gives for a fixed input batch, in inference
 * mode, with the weights of a checkpoint (or those the configuration starts from, e.g.
 * [model] init = FILE). Writes OUT_DIR/input.f32 (N x C x H x W, from tp_rng normals with
 * seed 1234), OUT_DIR/logits.f32 (N x classes) and OUT_DIR/shape.txt ("N C H W classes").
 *
 * usage: model_logits CONFIG OUT_DIR [CHECKPOINT] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "graph.h"
#include "pipeline.h"
#include "safetensors.h"
#include "services.h"
#include "stage.h"

#define BATCH 4

static int write_floats(const char *dir, const char *name, const float *v, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof *v, n, f) != n || fclose(f)) {
        fprintf(stderr, "model_logits: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: model_logits CONFIG OUT_DIR [CHECKPOINT]\n");
        return 2;
    }
    pipeline p;
    tp_model_input in;
    tp_backend be = { 0 };
    size_t which = 0;
    void *model = NULL;
    graph *g = NULL;
    safetensors_file *ck = NULL;
    float *x = NULL, *logits = NULL;
    tp_tensor xt = { 0 };
    tp_status st = pipeline_load(argv[1], NULL, 0, &p);
    if (st) {
        fprintf(stderr, "model_logits: %s\n", services_last_error());
        return 1;
    }
    if ((st = stage_model_input(&p, &in)) || (st = stage_create_backend(&p, &which, &be)) ||
        (st = stage_create(&p.model, &model)))
        goto done;
    if (!(g = graph_build(p.model.entry->component->ops, model, &in))) {
        st = TP_ERR_INVALID;
        goto done;
    }
    if ((st = graph_bind(g, &be, BATCH, TP_LAYOUT_NCHW)) || (st = graph_init_params(g, 1)))
        goto done;
    if (p.model.init_file && (st = graph_load_safetensors(g, p.model.init_file)))
        goto done;
    if (argc == 4 && (!(st = checkpoint_read(argv[3], &ck))))
        st = graph_load_tensors(g, ck, argv[3], CHECKPOINT_OPTIMIZER_PREFIX);
    if (st)
        goto done;
    size_t nx = (size_t)BATCH * in.channels * in.height * in.width;
    size_t nl = (size_t)BATCH * in.num_classes;
    x = malloc(nx * sizeof *x);
    logits = malloc(nl * sizeof *logits);
    if (!x || !logits) {
        st = services_fail(TP_ERR_NOMEM, "out of memory");
        goto done;
    }
    tp_rng r = tp_rng_make(1234, 0, 0);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)tp_rng_normal(&r);
    xt = tp_tensor_4d(TP_DTYPE_F32, TP_LAYOUT_NCHW, BATCH, in.channels, in.height, in.width);
    tp_tensor xh = xt;
    xh.device = TP_DEVICE_HOST;
    xh.data = x;
    if ((st = be.ops->alloc(be.self, &xt, "input")) ||
        (st = be.ops->copy(be.self, &xt, &xh, TP_STREAM_COMPUTE)) ||
        (st = graph_forward(g, &xt, 0)))
        goto done;
    tp_tensor lh = *graph_logits(g);
    lh.device = TP_DEVICE_HOST;
    lh.data = logits;
    if ((st = be.ops->copy(be.self, &lh, graph_logits(g), TP_STREAM_COMPUTE)) ||
        (st = be.ops->sync(be.self)))
        goto done;
    char shape[256];
    snprintf(shape, sizeof shape, "%s/shape.txt", argv[2]);
    FILE *f = fopen(shape, "w");
    if (!f) {
        st = services_fail(TP_ERR_IO, "cannot write %s", shape);
        goto done;
    }
    fprintf(f, "%d %d %d %d %d\n", BATCH, in.channels, in.height, in.width, in.num_classes);
    fclose(f);
    if (write_floats(argv[2], "input.f32", x, nx) || write_floats(argv[2], "logits.f32", logits, nl))
        st = TP_ERR_IO;
done:
    if (st)
        fprintf(stderr, "model_logits: %s\n", services_last_error());
    if (xt.data)
        be.ops->free(be.self, &xt);
    safetensors_free(ck);
    free(x);
    free(logits);
    graph_free(g);
    if (model)
        stage_destroy(&p.model, model);
    if (be.self)
        stage_destroy(&p.backends[which], be.self);
    pipeline_free(&p);
    return st ? 1 : 0;
}
