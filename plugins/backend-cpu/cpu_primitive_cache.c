/* backend-cpu: the primitive cache and argument binding (see cpu_primitive_cache.h). */
#include "config.h"

#include <string.h>

#include "cpu_backend.h"
#include "cpu_primitive_cache.h"

/* FNV-1a style mixing of one 64-bit value into the running key hash. */
static uint64_t hash_step(uint64_t h, int64_t v)
{
    uint64_t x = (uint64_t)v;
    for (int i = 0; i < 8; i++) {
        h ^= (x >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}

void cpu_key_init(cpu_key *k, int op)
{
    k->op = op;
    k->n = 0;
    k->hash = hash_step(0xcbf29ce484222325ULL, op);
}

void cpu_key_add(cpu_key *k, int64_t v)
{
    /* Keys are built from a fixed, small number of fields per operation; the bound is a
     * programming error caught by the overflow marker rather than a silent collision. */
    if (k->n < CPU_KEY_MAX) {
        k->v[k->n++] = v;
        k->hash = hash_step(k->hash, v);
    } else {
        k->op = -1;
    }
}

void cpu_key_add_tensor(cpu_key *k, const tp_tensor *t)
{
    if (!t) {
        cpu_key_add(k, -1);
        return;
    }
    cpu_key_add(k, ((int64_t)t->dtype * 64 + t->ndim) * 16 + (int64_t)t->layout);
    for (int i = 0; i < t->ndim && i < TP_TENSOR_MAX_DIMS; i++)
        cpu_key_add(k, t->shape[i]);
}

static int key_equal(const cpu_key *a, const cpu_key *b)
{
    return a->hash == b->hash && a->op == b->op && a->n == b->n &&
           memcmp(a->v, b->v, (size_t)a->n * sizeof a->v[0]) == 0;
}

void *cpu_cache_find(cpu_cache *c, const cpu_key *k)
{
    if (k->op < 0)
        return NULL;
    for (int i = 0; i < c->count; i++) {
        if (key_equal(&c->entries[i].key, k)) {
            c->entries[i].last_use = ++c->clock;
            c->hits++;
            return c->entries[i].payload;
        }
    }
    c->misses++;
    return NULL;
}

void cpu_cache_put(cpu_cache *c, const cpu_key *k, void *payload, void (*destroy)(void *))
{
    int slot = c->count;
    if (k->op < 0) { /* an overflowed key is never stored: the caller uses the payload once */
        if (c->transient)
            c->transient_destroy(c->transient);
        c->transient = payload;
        c->transient_destroy = destroy;
        return;
    }
    if (c->count == CPU_CACHE_CAPACITY) {
        slot = 0;
        for (int i = 1; i < c->count; i++)
            if (c->entries[i].last_use < c->entries[slot].last_use)
                slot = i;
        c->entries[slot].destroy(c->entries[slot].payload);
    } else {
        c->count++;
    }
    c->entries[slot].key = *k;
    c->entries[slot].payload = payload;
    c->entries[slot].destroy = destroy;
    c->entries[slot].last_use = ++c->clock;
}

void cpu_cache_clear(cpu_cache *c)
{
    for (int i = 0; i < c->count; i++)
        c->entries[i].destroy(c->entries[i].payload);
    c->count = 0;
    if (c->transient)
        c->transient_destroy(c->transient);
    c->transient = NULL;
}

tp_status cpu_pd_create(cpu_backend *be, const char *what, dnnl_primitive_desc_t *pd,
                        const_dnnl_op_desc_t desc, const_dnnl_primitive_desc_t hint)
{
    return cpu_pd_create_attr(be, what, pd, desc, NULL, hint);
}

tp_status cpu_pd_create_attr(cpu_backend *be, const char *what, dnnl_primitive_desc_t *pd,
                             const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                             const_dnnl_primitive_desc_t hint)
{
    dnnl_status_t s = dnnl_primitive_desc_create(pd, desc, attr, be->engine, hint);
    if (s != dnnl_success) {
        *pd = NULL;
        return be->host->fail(be->host, TP_ERR_LIBRARY,
                              "%s:%d: dnnl_primitive_desc_create (%s) failed: %s%s", __FILE__,
                              __LINE__, what, dnnl_status2str(s),
                              s == dnnl_unimplemented ? " (no oneDNN implementation for "
                                                        "this shape and layout)" : "");
    }
    return TP_OK;
}

tp_status cpu_prim_create(cpu_backend *be, cpu_prim *p, const_dnnl_primitive_desc_t pd)
{
    tp_status st = TP_OK;
    CPU_DNNL(be, dnnl_primitive_create, &p->prim, pd);
fail:
    return st;
}

tp_status cpu_prim_bind(cpu_backend *be, cpu_prim *p, int arg, cpu_arg_dir dir,
                        const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *prim_md)
{
    tp_status st = TP_OK;
    dnnl_primitive_desc_t rpd = NULL;
    if (p->n_args == CPU_PRIM_MAX_ARGS)
        return be->host->fail(be->host, TP_ERR_INVALID, "%s:%d: too many primitive arguments",
                              __FILE__, __LINE__);
    cpu_arg *a = &p->args[p->n_args];
    memset(a, 0, sizeof *a);
    a->arg = arg;
    a->dir = dir;
    if (dir == CPU_ARG_OWNED) {
        CPU_DNNL(be, dnnl_memory_create, &a->inner, prim_md, be->engine, DNNL_MEMORY_ALLOCATE);
        p->n_args++;
        return TP_OK;
    }
    CPU_DNNL(be, dnnl_memory_create, &a->user, user_md, be->engine, DNNL_MEMORY_NONE);
    if (dnnl_memory_desc_equal(user_md, prim_md)) {
        a->inner = a->user;
    } else {
        CPU_DNNL(be, dnnl_memory_create, &a->inner, prim_md, be->engine, DNNL_MEMORY_NONE);
        a->inner_bytes = dnnl_memory_desc_get_size(prim_md);
        if (dir == CPU_ARG_IN)
            CPU_DNNL(be, dnnl_reorder_primitive_desc_create, &rpd, user_md, be->engine,
                     prim_md, be->engine, NULL);
        else
            CPU_DNNL(be, dnnl_reorder_primitive_desc_create, &rpd, prim_md, be->engine,
                     user_md, be->engine, NULL);
        CPU_DNNL(be, dnnl_primitive_create, &a->reorder, rpd);
        dnnl_primitive_desc_destroy(rpd);
        rpd = NULL;
    }
    p->n_args++;
    return TP_OK;
fail:
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (a->inner && a->inner != a->user)
        dnnl_memory_destroy(a->inner);
    if (a->user)
        dnnl_memory_destroy(a->user);
    memset(a, 0, sizeof *a);
    return st;
}

tp_status cpu_prim_bind_query(cpu_backend *be, cpu_prim *p, int arg, cpu_arg_dir dir,
                              const dnnl_memory_desc_t *user_md,
                              const_dnnl_primitive_desc_t pd, dnnl_query_t q)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, q, 0);
    if (!md)
        return be->host->fail(be->host, TP_ERR_LIBRARY,
                              "%s:%d: dnnl_primitive_desc_query_md (query %d) returned nothing",
                              __FILE__, __LINE__, (int)q);
    dnnl_memory_desc_t copy = *md;
    return cpu_prim_bind(be, p, arg, dir, user_md, &copy);
}

static tp_status run_reorder(cpu_backend *be, cpu_arg *a, int to_inner)
{
    tp_status st = TP_OK;
    dnnl_exec_arg_t args[2] = {
        { DNNL_ARG_FROM, to_inner ? a->user : a->inner },
        { DNNL_ARG_TO, to_inner ? a->inner : a->user },
    };
    CPU_DNNL(be, dnnl_primitive_execute, a->reorder, be->stream, 2, args);
fail:
    return st;
}

tp_status cpu_prim_run(cpu_backend *be, cpu_prim *p, void *const *handles)
{
    tp_status st = TP_OK;
    dnnl_exec_arg_t args[CPU_PRIM_MAX_ARGS];
    size_t need = 0;
    char *arena = NULL;

    for (int i = 0; i < p->n_args; i++)
        need += (p->args[i].inner_bytes + 63) & ~(size_t)63;
    if (need) {
        st = cpu_arena_reserve(be, need, (void **)&arena);
        if (st)
            return st;
    }
    for (int i = 0; i < p->n_args; i++) {
        cpu_arg *a = &p->args[i];
        args[i].arg = a->arg;
        args[i].memory = a->inner;
        if (a->dir == CPU_ARG_OWNED)
            continue;
        CPU_DNNL(be, dnnl_memory_set_data_handle, a->user, handles[i]);
        if (a->inner != a->user) {
            CPU_DNNL(be, dnnl_memory_set_data_handle, a->inner, arena);
            arena += (a->inner_bytes + 63) & ~(size_t)63;
            if (a->dir == CPU_ARG_IN) {
                st = run_reorder(be, a, 1);
                if (st)
                    return st;
            }
        }
    }
    CPU_DNNL(be, dnnl_primitive_execute, p->prim, be->stream, p->n_args, args);
    for (int i = 0; i < p->n_args; i++) {
        cpu_arg *a = &p->args[i];
        if (a->dir == CPU_ARG_OUT && a->inner != a->user) {
            st = run_reorder(be, a, 0);
            if (st)
                return st;
        }
    }
    CPU_DNNL(be, dnnl_stream_wait, be->stream);
fail:
    return st;
}

void cpu_prim_destroy(cpu_prim *p)
{
    for (int i = 0; i < p->n_args; i++) {
        cpu_arg *a = &p->args[i];
        if (a->reorder)
            dnnl_primitive_destroy(a->reorder);
        if (a->inner && a->inner != a->user)
            dnnl_memory_destroy(a->inner);
        if (a->user)
            dnnl_memory_destroy(a->user);
    }
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    memset(p, 0, sizeof *p);
}
