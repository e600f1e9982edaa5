/* backend-cpu: ReLU forward/backward (oneDNN eltwise, the backward masked by the forward
 * output) and elementwise add (oneDNN binary). Any tensor rank works; 4-D tensors may mix
 * layouts, in which case the cached primitive carries the reorders. */
#include "config.h"

#include <stdlib.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

static void prim_free(void *payload)
{
    cpu_prim_destroy(payload);
    free(payload);
}

static tp_status relu_forward_pd(cpu_backend *be, const dnnl_memory_desc_t *md,
                                 dnnl_alg_kind_t alg, dnnl_primitive_desc_t *pd)
{
    tp_status st = TP_OK;
    dnnl_eltwise_desc_t ed;
    CPU_DNNL(be, dnnl_eltwise_forward_desc_init, &ed, dnnl_forward_training, alg, md, 0.f, 0.f);
    return cpu_pd_create(be, "relu forward", pd, &ed, NULL);
fail:
    return st;
}

static tp_status build_relu_forward(cpu_backend *be, const tp_tensor *x, const tp_tensor *y,
                                    cpu_prim *p)
{
    tp_status st;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t x_md, y_md;
    cpu_md_for_tensor(x, &x_md);
    cpu_md_for_tensor(y, &y_md);
    if (!(st = relu_forward_pd(be, &x_md, dnnl_eltwise_relu, &pd)) &&
        !(st = cpu_prim_create(be, p, pd)) &&
        !(st = cpu_prim_bind_query(be, p, DNNL_ARG_SRC, CPU_ARG_IN, &x_md, pd,
                                   dnnl_query_src_md)))
        st = cpu_prim_bind_query(be, p, DNNL_ARG_DST, CPU_ARG_OUT, &y_md, pd,
                                 dnnl_query_dst_md);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

static tp_status build_relu_backward(cpu_backend *be, const tp_tensor *y, const tp_tensor *dy,
                                     const tp_tensor *dx, cpu_prim *p)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    dnnl_memory_desc_t y_md, dy_md, dx_md;
    dnnl_eltwise_desc_t ed;
    cpu_md_for_tensor(y, &y_md);
    cpu_md_for_tensor(dy, &dy_md);
    cpu_md_for_tensor(dx, &dx_md);
    /* relu_use_dst_for_bwd: dx = dy where y > 0, exactly the SDK's mask. */
    if ((st = relu_forward_pd(be, &y_md, dnnl_eltwise_relu_use_dst_for_bwd, &hint)))
        goto fail;
    CPU_DNNL(be, dnnl_eltwise_backward_desc_init, &ed, dnnl_eltwise_relu_use_dst_for_bwd, &dy_md,
             &y_md, 0.f, 0.f);
    if ((st = cpu_pd_create(be, "relu backward", &pd, &ed, hint)) ||
        (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DST, CPU_ARG_IN, &y_md, pd,
                                  dnnl_query_dst_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_DST, CPU_ARG_IN, &dy_md, pd,
                                  dnnl_query_diff_dst_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_SRC, CPU_ARG_OUT, &dx_md, pd,
                                  dnnl_query_diff_src_md)))
        goto fail;
fail:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

/* y = a + b, followed by a ReLU post-op when `relu` is set (one pass instead of two). */
static tp_status build_add(cpu_backend *be, const tp_tensor *a, const tp_tensor *b,
                           const tp_tensor *y, int relu, cpu_prim *p)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_memory_desc_t a_md, b_md, y_md;
    dnnl_binary_desc_t bd;
    cpu_md_for_tensor(a, &a_md);
    cpu_md_for_tensor(b, &b_md);
    cpu_md_for_tensor(y, &y_md);
    CPU_DNNL(be, dnnl_binary_desc_init, &bd, dnnl_binary_add, &a_md, &b_md, &y_md);
    if (relu) {
        CPU_DNNL(be, dnnl_primitive_attr_create, &attr);
        CPU_DNNL(be, dnnl_post_ops_create, &post_ops);
        CPU_DNNL(be, dnnl_post_ops_append_eltwise, post_ops, 1.0f, dnnl_eltwise_relu, 0.f, 0.f);
        CPU_DNNL(be, dnnl_primitive_attr_set_post_ops, attr, post_ops);
    }
    if ((st = cpu_pd_create_attr(be, relu ? "binary add + relu" : "binary add", &pd, &bd, attr,
                                 NULL)) ||
        (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_SRC_0, CPU_ARG_IN, &a_md, pd,
                                  dnnl_query_src_md)) ||
        (st = cpu_prim_bind(be, p, DNNL_ARG_SRC_1, CPU_ARG_IN, &b_md,
                            dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 1)
                                ? dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 1)
                                : &b_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DST, CPU_ARG_OUT, &y_md, pd,
                                  dnnl_query_dst_md)))
        goto fail;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (post_ops)
        dnnl_post_ops_destroy(post_ops);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Looks up or builds a primitive for key; exactly one of the builders' argument sets is
 * used, picked by the key's operation. */
static tp_status find_or_build(cpu_backend *be, const cpu_key *key, const tp_tensor *t0,
                               const tp_tensor *t1, const tp_tensor *t2, cpu_prim **out)
{
    cpu_prim *p = cpu_cache_find(&be->cache, key);
    if (!p) {
        tp_status st;
        p = calloc(1, sizeof *p);
        if (!p)
            return be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu: out of memory");
        if (key->op == CPU_OP_RELU_FWD)
            st = build_relu_forward(be, t0, t1, p);
        else if (key->op == CPU_OP_RELU_BWD)
            st = build_relu_backward(be, t0, t1, t2, p);
        else
            st = build_add(be, t0, t1, t2, key->op == CPU_OP_ADD_RELU, p);
        if (st) {
            prim_free(p);
            return st;
        }
        cpu_cache_put(&be->cache, key, p, prim_free);
    }
    *out = p;
    return TP_OK;
}

/* Validates, then runs the elementwise primitive `op` on up to three tensors. */
static tp_status run_elementwise(cpu_backend *be, int op, const char *name, const char *n0,
                                 const tp_tensor *t0, const char *n1, const tp_tensor *t1,
                                 const char *n2, const tp_tensor *t2)
{
    tp_status st;
    cpu_key key;
    cpu_prim *p = NULL;
    if ((st = cpu_check_act(be, name, n0, t0, 0)) || (st = cpu_check_act(be, name, n1, t1, 0)) ||
        (st = cpu_check_same_dtype(be, name, n0, t0, n1, t1)) ||
        (st = cpu_check_same_shape(be, name, n0, t0, n1, t1)))
        return st;
    if (t2 && ((st = cpu_check_act(be, name, n2, t2, 0)) ||
               (st = cpu_check_same_dtype(be, name, n0, t0, n2, t2)) ||
               (st = cpu_check_same_shape(be, name, n0, t0, n2, t2))))
        return st;
    cpu_key_init(&key, op);
    cpu_key_add_tensor(&key, t0);
    cpu_key_add_tensor(&key, t1);
    cpu_key_add_tensor(&key, t2);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    st = find_or_build(be, &key, t0, t1, t2, &p);
    if (!st) {
        void *h[3] = { t0->data, t1->data, t2 ? t2->data : NULL };
        st = cpu_prim_run(be, p, h);
    }
    pthread_mutex_unlock(&be->lock);
    return st;
}

tp_status cpu_relu_forward(void *self, const tp_tensor *x, tp_tensor *y)
{
    return run_elementwise(self, CPU_OP_RELU_FWD, "relu_forward", "x", x, "y", y, NULL, NULL);
}

tp_status cpu_relu_backward(void *self, const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    return run_elementwise(self, CPU_OP_RELU_BWD, "relu_backward", "y", y, "dy", dy, "dx", dx);
}

tp_status cpu_add(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    return run_elementwise(self, CPU_OP_ADD, "add", "a", a, "b", b, "y", y);
}

tp_status cpu_add_relu(void *self, const tp_tensor *a, const tp_tensor *b, tp_tensor *y)
{
    return run_elementwise(self, CPU_OP_ADD_RELU, "add_relu", "a", a, "b", b, "y", y);
}
