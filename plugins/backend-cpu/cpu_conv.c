/* backend-cpu: convolution forward, backward-data and backward-filter on oneDNN direct
 * convolution. Primitives are created with format `any` so oneDNN picks its fastest (often
 * blocked) layouts; the reorders from and to the user's NCHW/NHWC tensors and OIHW weights
 * are created once per shape and cached with the primitive. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

/* Geometry shared by the three directions, validated against the tensors. */
typedef struct conv_geom {
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    /* wei_any: the weights as the layer reads them (bf16 with bf16 activations: oneDNN's
     * bf16 kernels take no f32 weights, so the cached reorder from the f32 OIHW weights
     * converts too); wei_diff_any: their gradient, f32 in every case */
    dnnl_memory_desc_t src_any, wei_any, wei_diff_any, dst_any, bias_md;
    dnnl_memory_desc_t src_user, wei_user, dst_user;
    int plain; /* 1: describe src/dst in the user's layout instead of `any` */
} conv_geom;

static tp_status conv_geometry(cpu_backend *be, const char *op, const tp_conv_desc *d,
                               const char *xn, const tp_tensor *x, const char *wn,
                               const tp_tensor *w, const char *yn, const tp_tensor *y,
                               conv_geom *g)
{
    tp_status st;
    if ((st = cpu_check_act(be, op, xn, x, 4)) || (st = cpu_check_f32(be, op, wn, w, 4)) ||
        (st = cpu_check_act(be, op, yn, y, 4)) ||
        (st = cpu_check_same_dtype(be, op, xn, x, yn, y)))
        return st;
    const int dil_h = d->dilation_h > 0 ? d->dilation_h : 1;
    const int dil_w = d->dilation_w > 0 ? d->dilation_w : 1;
    if (d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 || d->pad_w < 0)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: stride %dx%d must be >= 1 and padding %dx%d >= 0",
                              op, d->stride_h, d->stride_w, d->pad_h, d->pad_w);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    const int64_t OH = (H + 2 * d->pad_h - dil_h * (KH - 1) - 1) / d->stride_h + 1;
    const int64_t OW = (W + 2 * d->pad_w - dil_w * (KW - 1) - 1) / d->stride_w + 1;
    const int64_t wdims[4] = { O, C, KH, KW };
    const int64_t ydims[4] = { N, O, OH, OW };
    if (OH < 1 || OW < 1)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: kernel %lldx%lld does not fit input %lldx%lld "
                              "with padding %dx%d", op, (long long)KH, (long long)KW,
                              (long long)H, (long long)W, d->pad_h, d->pad_w);
    if ((st = cpu_check_dims(be, op, wn, w, 4, wdims)) ||
        (st = cpu_check_dims(be, op, yn, y, 4, ydims)))
        return st;

    g->strides[0] = d->stride_h;
    g->strides[1] = d->stride_w;
    g->dilates[0] = dil_h - 1; /* oneDNN counts the gaps, not the step */
    g->dilates[1] = dil_w - 1;
    g->pad_l[0] = d->pad_h;
    g->pad_l[1] = d->pad_w;
    /* Right padding as the output size implies (may be below pad_l when the last rows are
     * not reached by a strided window). */
    g->pad_r[0] = (OH - 1) * d->stride_h + (KH - 1) * dil_h + 1 - H - d->pad_h;
    g->pad_r[1] = (OW - 1) * d->stride_w + (KW - 1) * dil_w + 1 - W - d->pad_w;

    dnnl_dims_t xd = { N, C, H, W }, wd = { O, C, KH, KW }, yd = { N, O, OH, OW }, bd = { O };
    const dnnl_data_type_t act = cpu_dnnl_dtype(x->dtype);
    dnnl_memory_desc_init_by_tag(&g->src_any, 4, xd, act, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&g->wei_any, 4, wd, act, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&g->wei_diff_any, 4, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&g->dst_any, 4, yd, act, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&g->bias_md, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&g->wei_user, 4, wd, dnnl_f32, dnnl_oihw);
    cpu_md_for_tensor(x, &g->src_user);
    cpu_md_for_tensor(y, &g->dst_user);
    return TP_OK;
}

static void conv_key(cpu_key *k, int op, const tp_conv_desc *d, const tp_tensor *x,
                     const tp_tensor *w, const tp_tensor *bias, const tp_tensor *y)
{
    cpu_key_init(k, op);
    cpu_key_add(k, d->stride_h);
    cpu_key_add(k, d->stride_w);
    cpu_key_add(k, d->pad_h);
    cpu_key_add(k, d->pad_w);
    cpu_key_add(k, d->dilation_h);
    cpu_key_add(k, d->dilation_w);
    cpu_key_add_tensor(k, x);
    cpu_key_add_tensor(k, w);
    cpu_key_add(k, bias != NULL);
    cpu_key_add_tensor(k, y);
}

static void prim_free(void *payload)
{
    cpu_prim_destroy(payload);
    free(payload);
}

/* The descriptors the primitive is asked for: the user's activation layout when g->plain,
 * else `any` (oneDNN's choice, usually blocked, reached through cached reorders). */
static const dnnl_memory_desc_t *conv_src_md(const conv_geom *g)
{
    return g->plain ? &g->src_user : &g->src_any;
}

static const dnnl_memory_desc_t *conv_dst_md(const conv_geom *g)
{
    return g->plain ? &g->dst_user : &g->dst_any;
}

/* Whether pd runs an optimised kernel: the plain-layout attempt is kept only then, since a
 * gemm or reference fallback on NCHW/NHWC is slower than reordering to a blocked layout.
 * "brgconv" (oneDNN's brgemm-based convolution, its fastest kernel for channels-last on
 * AVX-512) is direct, not a gemm fallback: rejecting it cost two activation reorders per
 * forward convolution. */
static int pd_is_fast(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
        !impl)
        return 0;
    if (strncmp(impl, "brgconv", 7) == 0)
        return 1;
    return strstr(impl, "jit") && !strstr(impl, "gemm") && !strstr(impl, "ref");
}

/* The forward descriptor: the primitive itself, and the hint backward passes need. */
static tp_status conv_forward_pd(cpu_backend *be, conv_geom *g, int with_bias,
                                 dnnl_primitive_desc_t *pd)
{
    tp_status st = TP_OK;
    dnnl_convolution_desc_t cd;
    CPU_DNNL(be, dnnl_dilated_convolution_forward_desc_init, &cd, dnnl_forward_training,
             dnnl_convolution_direct, conv_src_md(g), &g->wei_any,
             with_bias ? &g->bias_md : NULL, conv_dst_md(g), g->strides, g->dilates, g->pad_l,
             g->pad_r);
    return cpu_pd_create(be, "convolution forward", pd, &cd, NULL);
fail:
    return st;
}

/* Whether the built primitive runs an optimised kernel. */
static int pd_is_fast_prim(const cpu_prim *p)
{
    const_dnnl_primitive_desc_t pd = NULL;
    if (dnnl_primitive_get_primitive_desc(p->prim, &pd) != dnnl_success || !pd)
        return 0;
    return pd_is_fast(pd);
}

/* Finds or builds the cached primitive for `key`; build() fills a fresh cpu_prim. */
static tp_status cached_prim(cpu_backend *be, const cpu_key *key,
                             tp_status (*build)(cpu_backend *, conv_geom *, int, cpu_prim *),
                             conv_geom *g, int flag, cpu_prim **out)
{
    cpu_prim *p = cpu_cache_find(&be->cache, key);
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu: out of memory");
        /* First in the user's layout (no reorders); if oneDNN has only a slow kernel for
         * that, or none, let it pick the layout. */
        g->plain = 1;
        tp_status st = build(be, g, flag, p);
        if (!st && !pd_is_fast_prim(p)) {
            cpu_prim_destroy(p);
            st = TP_ERR_UNSUPPORTED;
        }
        if (st) {
            g->plain = 0;
            st = build(be, g, flag, p);
        }
        if (st) {
            prim_free(p);
            return st;
        }
        cpu_cache_put(&be->cache, key, p, prim_free);
    }
    *out = p;
    return TP_OK;
}

/* Runs the cached primitive for `key` (built by build() on first use) on `handles`, given
 * in the builder's binding order, under the backend's lock. */
static tp_status run_cached(cpu_backend *be, const cpu_key *key,
                            tp_status (*build)(cpu_backend *, conv_geom *, int, cpu_prim *),
                            conv_geom *g, int flag, void **handles)
{
    cpu_prim *p = NULL;
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    tp_status st = cached_prim(be, key, build, g, flag, &p);
    if (!st)
        st = cpu_prim_run(be, p, handles);
    pthread_mutex_unlock(&be->lock);
    return st;
}

/* A bias (or its gradient): f32, one value per output channel. NULL is fine. */
static tp_status check_bias(cpu_backend *be, const char *op, const char *name,
                            const tp_tensor *b, int64_t out_channels)
{
    if (!b)
        return TP_OK;
    const int64_t bd[1] = { out_channels };
    tp_status st = cpu_check_f32(be, op, name, b, 1);
    return st ? st : cpu_check_dims(be, op, name, b, 1, bd);
}

static tp_status build_forward(cpu_backend *be, conv_geom *g, int with_bias, cpu_prim *p)
{
    tp_status st;
    dnnl_primitive_desc_t pd = NULL;
    if ((st = conv_forward_pd(be, g, with_bias, &pd)) || (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_SRC, CPU_ARG_IN, &g->src_user, pd,
                                  dnnl_query_src_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_WEIGHTS, CPU_ARG_IN, &g->wei_user, pd,
                                  dnnl_query_weights_md)))
        goto done;
    if (with_bias &&
        (st = cpu_prim_bind(be, p, DNNL_ARG_BIAS, CPU_ARG_IN, &g->bias_md, &g->bias_md)))
        goto done;
    st = cpu_prim_bind_query(be, p, DNNL_ARG_DST, CPU_ARG_OUT, &g->dst_user, pd,
                             dnnl_query_dst_md);
done:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

tp_status cpu_conv_forward(void *self, const tp_conv_desc *d, const tp_tensor *x,
                           const tp_tensor *w, const tp_tensor *bias, tp_tensor *y)
{
    cpu_backend *be = self;
    conv_geom g;
    cpu_key key;
    tp_status st = conv_geometry(be, "conv_forward", d, "x", x, "w", w, "y", y, &g);
    if (st || (st = check_bias(be, "conv_forward", "bias", bias, w->shape[0])))
        return st;
    conv_key(&key, CPU_OP_CONV_FWD, d, x, w, bias, y);
    /* Binding order: src, weights, [bias,] dst. */
    void *h[4] = { x->data, w->data, bias ? bias->data : y->data, y->data };
    return run_cached(be, &key, build_forward, &g, bias != NULL, h);
}

static tp_status build_backward_data(cpu_backend *be, conv_geom *g, int unused, cpu_prim *p)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    dnnl_convolution_desc_t cd;
    (void)unused;
    if ((st = conv_forward_pd(be, g, 0, &hint)))
        goto fail;
    CPU_DNNL(be, dnnl_dilated_convolution_backward_data_desc_init, &cd,
             dnnl_convolution_direct, conv_src_md(g), &g->wei_any, conv_dst_md(g), g->strides,
             g->dilates, g->pad_l, g->pad_r);
    if ((st = cpu_pd_create(be, "convolution backward data", &pd, &cd, hint)) ||
        (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_DST, CPU_ARG_IN, &g->dst_user, pd,
                                  dnnl_query_diff_dst_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_WEIGHTS, CPU_ARG_IN, &g->wei_user, pd,
                                  dnnl_query_weights_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_SRC, CPU_ARG_OUT, &g->src_user, pd,
                                  dnnl_query_diff_src_md)))
        goto fail;
fail:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

tp_status cpu_conv_backward_data(void *self, const tp_conv_desc *d, const tp_tensor *dy,
                                 const tp_tensor *w, tp_tensor *dx)
{
    cpu_backend *be = self;
    conv_geom g;
    cpu_key key;
    tp_status st = conv_geometry(be, "conv_backward_data", d, "dx", dx, "w", w, "dy", dy, &g);
    if (st)
        return st;
    conv_key(&key, CPU_OP_CONV_BWD_DATA, d, dx, w, NULL, dy);
    void *h[3] = { dy->data, w->data, dx->data };
    return run_cached(be, &key, build_backward_data, &g, 0, h);
}

static tp_status build_backward_filter(cpu_backend *be, conv_geom *g, int with_bias,
                                       cpu_prim *p)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    dnnl_convolution_desc_t cd;
    if ((st = conv_forward_pd(be, g, with_bias, &hint)))
        goto fail;
    CPU_DNNL(be, dnnl_dilated_convolution_backward_weights_desc_init, &cd,
             dnnl_convolution_direct, conv_src_md(g), &g->wei_diff_any,
             with_bias ? &g->bias_md : NULL, conv_dst_md(g), g->strides, g->dilates, g->pad_l,
             g->pad_r);
    if ((st = cpu_pd_create(be, "convolution backward weights", &pd, &cd, hint)) ||
        (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_SRC, CPU_ARG_IN, &g->src_user, pd,
                                  dnnl_query_src_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_DST, CPU_ARG_IN, &g->dst_user, pd,
                                  dnnl_query_diff_dst_md)) ||
        (st = cpu_prim_bind_query(be, p, DNNL_ARG_DIFF_WEIGHTS, CPU_ARG_OUT, &g->wei_user, pd,
                                  dnnl_query_diff_weights_md)))
        goto fail;
    if (with_bias) {
        /* The bias gradient is the second diff-weights descriptor. */
        const dnnl_memory_desc_t *bmd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1);
        st = cpu_prim_bind(be, p, DNNL_ARG_DIFF_BIAS, CPU_ARG_OUT, &g->bias_md,
                           bmd ? bmd : &g->bias_md);
    }
fail:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Whether kernel tap k of a dimension reads only padding: no output position o puts it on
 * an input index o * stride - pad + k * dilation inside [0, in). */
static int tap_reads_only_padding(int64_t k, int64_t in, int64_t out, int stride, int pad,
                                  int dilation)
{
    for (int64_t o = 0; o < out; o++) {
        const int64_t i = o * stride - pad + k * dilation;
        if (i >= 0 && i < in)
            return 0;
    }
    return 1;
}

/* The weight gradient of a tap that reads only zero padding is exactly 0. oneDNN 2.6's AMX
 * bf16 backward-weights kernel leaves such taps unwritten (seen with a 1-wide input, a 3-wide
 * kernel, padding 1 and stride 2), so they are written here; every other kernel already
 * wrote 0. The geometry is conv_geometry's (oneDNN counts dilation gaps); dy has the output
 * size. */
static void zero_padding_only_taps(const conv_geom *g, const tp_tensor *x, const tp_tensor *dy,
                                   tp_tensor *dw)
{
    const int64_t O = dw->shape[0], C = dw->shape[1], KH = dw->shape[2], KW = dw->shape[3];
    float *grad = dw->data;
    for (int64_t kh = 0; kh < KH; kh++) {
        const int dead_h = tap_reads_only_padding(kh, x->shape[2], dy->shape[2],
                                                  (int)g->strides[0], (int)g->pad_l[0],
                                                  (int)g->dilates[0] + 1);
        for (int64_t kw = 0; kw < KW; kw++) {
            if (!dead_h && !tap_reads_only_padding(kw, x->shape[3], dy->shape[3],
                                                   (int)g->strides[1], (int)g->pad_l[1],
                                                   (int)g->dilates[1] + 1))
                continue;
            for (int64_t oc = 0; oc < O * C; oc++)
                grad[(oc * KH + kh) * KW + kw] = 0.0f;
        }
    }
}

tp_status cpu_conv_backward_filter(void *self, const tp_conv_desc *d, const tp_tensor *x,
                                   const tp_tensor *dy, tp_tensor *dw, tp_tensor *dbias)
{
    cpu_backend *be = self;
    conv_geom g;
    cpu_key key;
    tp_status st = conv_geometry(be, "conv_backward_filter", d, "x", x, "dw", dw, "dy", dy, &g);
    if (st || (st = check_bias(be, "conv_backward_filter", "dbias", dbias, dw->shape[0])))
        return st;
    conv_key(&key, CPU_OP_CONV_BWD_FILTER, d, x, dw, dbias, dy);
    void *h[4] = { x->data, dy->data, dw->data, dbias ? dbias->data : NULL };
    st = run_cached(be, &key, build_backward_filter, &g, dbias != NULL, h);
    if (!st)
        zero_padding_only_taps(&g, x, dy, dw);
    return st;
}
