/* backend-cpu: max and average pooling on oneDNN. The primitives run in x's layout; y, dy and
 * dx in another layout are reordered by the cached binding. The SDK's pool_backward does not
 * carry oneDNN's max-pooling workspace, so the max backward reruns the forward pass in
 * training mode to regenerate it (pooling is cheap next to the convolutions around it). */
#include "config.h"

#include <stdlib.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

typedef struct pool_entry {
    cpu_prim fwd;  /* forward (inference mode for pool_forward, training for the backward) */
    cpu_prim bwd;  /* backward, or unused for pool_forward */
    void *ws;      /* max backward: the workspace and the regenerated y */
    void *y;
} pool_entry;

static void pool_entry_free(void *payload)
{
    pool_entry *e = payload;
    cpu_prim_destroy(&e->fwd);
    cpu_prim_destroy(&e->bwd);
    free(e->ws);
    free(e->y);
    free(e);
}

typedef struct pool_geom {
    dnnl_alg_kind_t alg;
    dnnl_dims_t strides, kernel, pad_l, pad_r;
    dnnl_memory_desc_t x_md, y_md;          /* x's layout for both */
} pool_geom;

static tp_status pool_geometry(cpu_backend *be, const char *op, const tp_pool_desc *d,
                               const char *xn, const tp_tensor *x, const char *yn,
                               const tp_tensor *y, pool_geom *g)
{
    tp_status st;
    if ((st = cpu_check_act(be, op, xn, x, 4)) || (st = cpu_check_act(be, op, yn, y, 4)) ||
        (st = cpu_check_same_dtype(be, op, xn, x, yn, y)))
        return st;
    if (d->kernel_h < 1 || d->kernel_w < 1 || d->stride_h < 1 || d->stride_w < 1 ||
        d->pad_h < 0 || d->pad_w < 0 || d->pad_h >= d->kernel_h || d->pad_w >= d->kernel_w ||
        (d->mode != TP_POOL_MAX && d->mode != TP_POOL_AVG))
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: invalid pooling (mode %d, kernel %dx%d, stride "
                              "%dx%d, padding %dx%d; padding must be below the kernel)", op,
                              (int)d->mode, d->kernel_h, d->kernel_w, d->stride_h, d->stride_w,
                              d->pad_h, d->pad_w);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t OH = (H + 2 * d->pad_h - d->kernel_h) / d->stride_h + 1;
    const int64_t OW = (W + 2 * d->pad_w - d->kernel_w) / d->stride_w + 1;
    const int64_t ydims[4] = { N, C, OH, OW };
    if (OH < 1 || OW < 1 || H + 2 * d->pad_h < d->kernel_h || W + 2 * d->pad_w < d->kernel_w)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: pooling window %dx%d larger than the padded input "
                              "%lldx%lld", op, d->kernel_h, d->kernel_w, (long long)H,
                              (long long)W);
    if ((st = cpu_check_dims(be, op, yn, y, 4, ydims)))
        return st;
    g->alg = d->mode == TP_POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    g->strides[0] = d->stride_h;
    g->strides[1] = d->stride_w;
    g->kernel[0] = d->kernel_h;
    g->kernel[1] = d->kernel_w;
    g->pad_l[0] = d->pad_h;
    g->pad_l[1] = d->pad_w;
    g->pad_r[0] = (OH - 1) * d->stride_h + d->kernel_h - H - d->pad_h;
    g->pad_r[1] = (OW - 1) * d->stride_w + d->kernel_w - W - d->pad_w;
    tp_tensor y_in_x = *y;
    y_in_x.layout = x->layout;
    cpu_md_for_tensor(x, &g->x_md);
    cpu_md_for_tensor(&y_in_x, &g->y_md);
    return TP_OK;
}

static void pool_key(cpu_key *k, int op, const tp_pool_desc *d, const tp_tensor *a,
                     const tp_tensor *b, const tp_tensor *c, const tp_tensor *e)
{
    cpu_key_init(k, op);
    cpu_key_add(k, d->mode);
    cpu_key_add(k, d->kernel_h);
    cpu_key_add(k, d->kernel_w);
    cpu_key_add(k, d->stride_h);
    cpu_key_add(k, d->stride_w);
    cpu_key_add(k, d->pad_h);
    cpu_key_add(k, d->pad_w);
    cpu_key_add_tensor(k, a);
    cpu_key_add_tensor(k, b);
    cpu_key_add_tensor(k, c);
    cpu_key_add_tensor(k, e);
}

static tp_status pool_forward_pd(cpu_backend *be, const pool_geom *g, dnnl_prop_kind_t prop,
                                 dnnl_primitive_desc_t *pd)
{
    tp_status st = TP_OK;
    dnnl_pooling_desc_t pdsc;
    CPU_DNNL(be, dnnl_pooling_forward_desc_init, &pdsc, prop, g->alg, &g->x_md, &g->y_md,
             g->strides, g->kernel, g->pad_l, g->pad_r);
    return cpu_pd_create(be, "pooling forward", pd, &pdsc, NULL);
fail:
    return st;
}

tp_status cpu_pool_forward(void *self, const tp_pool_desc *d, const tp_tensor *x, tp_tensor *y)
{
    cpu_backend *be = self;
    pool_geom g;
    cpu_key key;
    tp_status st = pool_geometry(be, "pool_forward", d, "x", x, "y", y, &g);
    if (st)
        return st;
    pool_key(&key, CPU_OP_POOL_FWD, d, x, y, NULL, NULL);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    pool_entry *e = cpu_cache_find(&be->cache, &key);
    if (!e) {
        dnnl_primitive_desc_t pd = NULL;
        dnnl_memory_desc_t y_user;
        cpu_md_for_tensor(y, &y_user);
        e = calloc(1, sizeof *e);
        if (!e) {
            st = be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu pool_forward: out of memory");
            goto out;
        }
        if (!(st = pool_forward_pd(be, &g, dnnl_forward_inference, &pd)) &&
            !(st = cpu_prim_create(be, &e->fwd, pd)) &&
            !(st = cpu_prim_bind_query(be, &e->fwd, DNNL_ARG_SRC, CPU_ARG_IN, &g.x_md, pd,
                                       dnnl_query_src_md)))
            st = cpu_prim_bind_query(be, &e->fwd, DNNL_ARG_DST, CPU_ARG_OUT, &y_user, pd,
                                     dnnl_query_dst_md);
        if (pd)
            dnnl_primitive_desc_destroy(pd);
        if (st) {
            pool_entry_free(e);
            goto out;
        }
        cpu_cache_put(&be->cache, &key, e, pool_entry_free);
    }
    void *h[2] = { x->data, y->data };
    st = cpu_prim_run(be, &e->fwd, h);
out:
    pthread_mutex_unlock(&be->lock);
    return st;
}

static tp_status build_backward(cpu_backend *be, const pool_geom *g, const tp_tensor *dy,
                                const tp_tensor *dx, pool_entry *e)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    dnnl_pooling_desc_t pdsc;
    dnnl_memory_desc_t dy_user, dx_user;
    cpu_md_for_tensor(dy, &dy_user);
    cpu_md_for_tensor(dx, &dx_user);
    if ((st = pool_forward_pd(be, g, dnnl_forward_training, &hint)))
        goto fail;
    CPU_DNNL(be, dnnl_pooling_backward_desc_init, &pdsc, g->alg, &g->x_md, &g->y_md,
             g->strides, g->kernel, g->pad_l, g->pad_r);
    if ((st = cpu_pd_create(be, "pooling backward", &pd, &pdsc, hint)))
        goto fail;
    const dnnl_memory_desc_t *ws_md = dnnl_primitive_desc_query_md(hint, dnnl_query_workspace_md, 0);
    const int has_ws = g->alg == dnnl_pooling_max && ws_md && dnnl_memory_desc_get_size(ws_md) > 0;
    if (has_ws) {
        /* Forward in training mode regenerates the argmax workspace (and y, discarded). */
        size_t ws_bytes = (dnnl_memory_desc_get_size(ws_md) + 63) & ~(size_t)63;
        size_t y_bytes = (dnnl_memory_desc_get_size(&g->y_md) + 63) & ~(size_t)63;
        e->ws = aligned_alloc(64, ws_bytes);
        e->y = aligned_alloc(64, y_bytes);
        if (!e->ws || !e->y) {
            st = be->host->fail(be->host, TP_ERR_NOMEM,
                                "backend-cpu pool_backward: out of memory for the workspace");
            goto fail;
        }
        if ((st = cpu_prim_create(be, &e->fwd, hint)) ||
            (st = cpu_prim_bind_query(be, &e->fwd, DNNL_ARG_SRC, CPU_ARG_IN, &g->x_md, hint,
                                      dnnl_query_src_md)) ||
            (st = cpu_prim_bind_query(be, &e->fwd, DNNL_ARG_DST, CPU_ARG_OUT, &g->y_md, hint,
                                      dnnl_query_dst_md)) ||
            (st = cpu_prim_bind(be, &e->fwd, DNNL_ARG_WORKSPACE, CPU_ARG_OUT, ws_md, ws_md)))
            goto fail;
    }
    if ((st = cpu_prim_create(be, &e->bwd, pd)) ||
        (st = cpu_prim_bind_query(be, &e->bwd, DNNL_ARG_DIFF_DST, CPU_ARG_IN, &dy_user, pd,
                                  dnnl_query_diff_dst_md)) ||
        (st = cpu_prim_bind_query(be, &e->bwd, DNNL_ARG_DIFF_SRC, CPU_ARG_OUT, &dx_user, pd,
                                  dnnl_query_diff_src_md)))
        goto fail;
    if (has_ws)
        st = cpu_prim_bind(be, &e->bwd, DNNL_ARG_WORKSPACE, CPU_ARG_IN, ws_md, ws_md);
fail:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

tp_status cpu_pool_backward(void *self, const tp_pool_desc *d, const tp_tensor *x,
                            const tp_tensor *y, const tp_tensor *dy, tp_tensor *dx)
{
    cpu_backend *be = self;
    const char *op = "pool_backward";
    pool_geom g;
    cpu_key key;
    tp_status st = pool_geometry(be, op, d, "x", x, "dy", dy, &g);
    if (st)
        return st;
    if ((st = cpu_check_act(be, op, "dx", dx, 4)) ||
        (st = cpu_check_same_dtype(be, op, "x", x, "dx", dx)) ||
        (st = cpu_check_same_shape(be, op, "x", x, "dx", dx)))
        return st;
    if (y && ((st = cpu_check_act(be, op, "y", y, 4)) ||
              (st = cpu_check_same_shape(be, op, "y", y, "dy", dy))))
        return st;
    pool_key(&key, CPU_OP_POOL_BWD, d, x, dy, dx, NULL);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    pool_entry *e = cpu_cache_find(&be->cache, &key);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            st = be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu %s: out of memory", op);
            goto out;
        }
        if ((st = build_backward(be, &g, dy, dx, e))) {
            pool_entry_free(e);
            goto out;
        }
        cpu_cache_put(&be->cache, &key, e, pool_entry_free);
    }
    if (e->ws) {
        void *hf[3] = { x->data, e->y, e->ws };
        if ((st = cpu_prim_run(be, &e->fwd, hf)))
            goto out;
        void *hb[3] = { dy->data, dx->data, e->ws };
        st = cpu_prim_run(be, &e->bwd, hb);
    } else {
        void *hb[2] = { dy->data, dx->data };
        st = cpu_prim_run(be, &e->bwd, hb);
    }
out:
    pthread_mutex_unlock(&be->lock);
    return st;
}
