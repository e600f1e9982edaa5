/* backend-cpu: the fully connected layer on oneDNN matmul. PyTorch stores w as (M, K); the
 * products need w^T and dy^T, which are expressed as transposed ("ba") memory descriptors
 * over the same bytes rather than copies. The bias gradient is a column sum. */
#include "config.h"

#include <stdlib.h>

#include "cpu_backend.h"
#include "cpu_ops.h"

typedef struct linear_entry {
    cpu_prim fwd_or_dx; /* forward: y = x w^T + b;  backward: dx = dy w */
    cpu_prim dw;        /* backward: dw = dy^T x */
} linear_entry;

static void linear_entry_free(void *payload)
{
    linear_entry *e = payload;
    cpu_prim_destroy(&e->fwd_or_dx);
    cpu_prim_destroy(&e->dw);
    free(e);
}

static void md2(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, dnnl_format_tag_t tag)
{
    dnnl_dims_t d = { rows, cols };
    dnnl_memory_desc_init_by_tag(md, 2, d, dnnl_f32, tag);
}

/* A matmul primitive c = a b (+ bias) with plain descriptors bound as given. */
static tp_status build_matmul(cpu_backend *be, const dnnl_memory_desc_t *a,
                              const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *bias,
                              const dnnl_memory_desc_t *c, cpu_prim *p)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t md;
    CPU_DNNL(be, dnnl_matmul_desc_init, &md, a, b, bias, c);
    if ((st = cpu_pd_create(be, "matmul", &pd, &md, NULL)) || (st = cpu_prim_create(be, p, pd)) ||
        (st = cpu_prim_bind(be, p, DNNL_ARG_SRC, CPU_ARG_IN, a, a)) ||
        (st = cpu_prim_bind(be, p, DNNL_ARG_WEIGHTS, CPU_ARG_IN, b, b)))
        goto fail;
    if (bias && (st = cpu_prim_bind(be, p, DNNL_ARG_BIAS, CPU_ARG_IN, bias, bias)))
        goto fail;
    st = cpu_prim_bind(be, p, DNNL_ARG_DST, CPU_ARG_OUT, c, c);
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return st;
}

static tp_status check_linear(cpu_backend *be, const char *op, const tp_tensor *x,
                              const tp_tensor *w, const char *yn, const tp_tensor *y)
{
    tp_status st;
    if ((st = cpu_check_f32(be, op, "x", x, 2)) || (st = cpu_check_f32(be, op, "w", w, 2)) ||
        (st = cpu_check_f32(be, op, yn, y, 2)))
        return st;
    const int64_t wd[2] = { w->shape[0], x->shape[1] };
    const int64_t yd[2] = { x->shape[0], w->shape[0] };
    if ((st = cpu_check_dims(be, op, "w", w, 2, wd)) || (st = cpu_check_dims(be, op, yn, y, 2, yd)))
        return st;
    return TP_OK;
}

tp_status cpu_linear_forward(void *self, const tp_tensor *x, const tp_tensor *w,
                             const tp_tensor *bias, tp_tensor *y)
{
    cpu_backend *be = self;
    const char *op = "linear_forward";
    cpu_key key;
    tp_status st = check_linear(be, op, x, w, "y", y);
    if (st)
        return st;
    const int64_t N = x->shape[0], K = x->shape[1], M = w->shape[0];
    if (bias) {
        if ((st = cpu_check_f32(be, op, "bias", bias, 0)))
            return st;
        if (tp_tensor_count(bias) != M)
            return be->host->fail(be->host, TP_ERR_INVALID,
                                  "backend-cpu %s: bias has %lld elements, expected %lld", op,
                                  (long long)tp_tensor_count(bias), (long long)M);
    }
    cpu_key_init(&key, CPU_OP_LINEAR_FWD);
    cpu_key_add(&key, N);
    cpu_key_add(&key, K);
    cpu_key_add(&key, M);
    cpu_key_add(&key, bias != NULL);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    linear_entry *e = cpu_cache_find(&be->cache, &key);
    if (!e) {
        dnnl_memory_desc_t x_md, wt_md, b_md, y_md;
        md2(&x_md, N, K, dnnl_ab);
        md2(&wt_md, K, M, dnnl_ba); /* w^T over w's (M, K) row-major bytes */
        md2(&b_md, 1, M, dnnl_ab);
        md2(&y_md, N, M, dnnl_ab);
        e = calloc(1, sizeof *e);
        if (!e) {
            st = be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu %s: out of memory", op);
            goto out;
        }
        if ((st = build_matmul(be, &x_md, &wt_md, bias ? &b_md : NULL, &y_md, &e->fwd_or_dx))) {
            linear_entry_free(e);
            goto out;
        }
        cpu_cache_put(&be->cache, &key, e, linear_entry_free);
    }
    if (bias) {
        void *h[4] = { x->data, w->data, bias->data, y->data };
        st = cpu_prim_run(be, &e->fwd_or_dx, h);
    } else {
        void *h[3] = { x->data, w->data, y->data };
        st = cpu_prim_run(be, &e->fwd_or_dx, h);
    }
out:
    pthread_mutex_unlock(&be->lock);
    return st;
}

tp_status cpu_linear_backward(void *self, const tp_tensor *x, const tp_tensor *w,
                              const tp_tensor *dy, tp_tensor *dx, tp_tensor *dw, tp_tensor *db)
{
    cpu_backend *be = self;
    const char *op = "linear_backward";
    cpu_key key;
    tp_status st = check_linear(be, op, x, w, "dy", dy);
    if (st)
        return st;
    const int64_t N = x->shape[0], K = x->shape[1], M = w->shape[0];
    if (dx && ((st = cpu_check_f32(be, op, "dx", dx, 2)) ||
               (st = cpu_check_same_shape(be, op, "x", x, "dx", dx))))
        return st;
    if ((st = cpu_check_f32(be, op, "dw", dw, 2)) ||
        (st = cpu_check_same_shape(be, op, "w", w, "dw", dw)))
        return st;
    if (db) {
        if ((st = cpu_check_f32(be, op, "db", db, 0)))
            return st;
        if (tp_tensor_count(db) != M)
            return be->host->fail(be->host, TP_ERR_INVALID,
                                  "backend-cpu %s: db has %lld elements, expected %lld", op,
                                  (long long)tp_tensor_count(db), (long long)M);
    }
    cpu_key_init(&key, CPU_OP_LINEAR_BWD);
    cpu_key_add(&key, N);
    cpu_key_add(&key, K);
    cpu_key_add(&key, M);
    cpu_key_add(&key, dx != NULL);
    pthread_mutex_lock(&be->lock);
    cpu_apply_threads(be);
    linear_entry *e = cpu_cache_find(&be->cache, &key);
    if (!e) {
        dnnl_memory_desc_t dy_md, w_md, dx_md, dyt_md, x_md, dw_md;
        md2(&dy_md, N, M, dnnl_ab);
        md2(&w_md, M, K, dnnl_ab);
        md2(&dx_md, N, K, dnnl_ab);
        md2(&dyt_md, M, N, dnnl_ba); /* dy^T over dy's (N, M) bytes */
        md2(&x_md, N, K, dnnl_ab);
        md2(&dw_md, M, K, dnnl_ab);
        e = calloc(1, sizeof *e);
        if (!e) {
            st = be->host->fail(be->host, TP_ERR_NOMEM, "backend-cpu %s: out of memory", op);
            goto out;
        }
        if ((dx && (st = build_matmul(be, &dy_md, &w_md, NULL, &dx_md, &e->fwd_or_dx))) ||
            (st = build_matmul(be, &dyt_md, &x_md, NULL, &dw_md, &e->dw))) {
            linear_entry_free(e);
            goto out;
        }
        cpu_cache_put(&be->cache, &key, e, linear_entry_free);
    }
    if (dx) {
        void *h[3] = { dy->data, w->data, dx->data };
        if ((st = cpu_prim_run(be, &e->fwd_or_dx, h)))
            goto out;
    }
    void *hw[3] = { dy->data, x->data, dw->data };
    if ((st = cpu_prim_run(be, &e->dw, hw)))
        goto out;
    if (db) {
        const float *g = dy->data;
        float *b = db->data;
        for (int64_t m = 0; m < M; m++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++)
                s += g[n * M + m];
            b[m] = (float)s;
        }
    }
out:
    pthread_mutex_unlock(&be->lock);
    return st;
}
