/* backend-cpu: checked helpers shared by the operation files (see cpu_backend.h). */
#define _GNU_SOURCE 1 /* dladdr, Dl_info, RTLD_NODELETE */
#include "config.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"

tp_status cpu_dnnl_fail(const cpu_backend *be, const char *call, dnnl_status_t s,
                        const char *file, int line)
{
    return be->host->fail(be->host, TP_ERR_LIBRARY, "%s:%d: %s failed: %s", file, line, call,
                          dnnl_status2str(s));
}

/* The OpenMP runtime oneDNN was built against is already loaded with libdnnl; look its
 * thread setter up there rather than linking an OpenMP runtime into the plugin. */
typedef void (*omp_set_fn)(int);

static omp_set_fn find_omp_setter(void)
{
    static const char *const libs[] = { "libgomp.so.1", "libomp.so", "libiomp5.so", NULL };
    for (int i = 0; libs[i]; i++) {
        void *h = dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD);
        if (!h)
            continue;
        omp_set_fn fn = (omp_set_fn)(uintptr_t)dlsym(h, "omp_set_num_threads");
        dlclose(h); /* NOLOAD took a reference to an already loaded library; drop it */
        if (fn)
            return fn;
    }
    return NULL;
}

static omp_set_fn omp_setter;

/* Keeps libdnnl and its OpenMP runtime mapped for the life of the process. The host may
 * dlclose this plugin while OpenMP's worker threads still sleep inside the runtime; if the
 * unload took the runtime with it those threads would wake into unmapped code (LeakSanitizer
 * at exit trips over exactly that). RTLD_NOLOAD | RTLD_NODELETE only marks the loaded copies;
 * the handles are deliberately never closed. */
static void pin_runtime(void)
{
    static const char *const libs[] = { "libgomp.so.1", "libomp.so", "libiomp5.so", NULL };
    Dl_info info;
    if (dladdr((void *)(uintptr_t)dnnl_engine_create, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    for (int i = 0; libs[i]; i++)
        if (dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE))
            break; /* one runtime is loaded; probing on would only fill dlerror() */
}

void cpu_pin_runtime(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, pin_runtime);
}

static void lookup_setter(void)
{
    omp_setter = find_omp_setter();
}

void cpu_apply_threads(cpu_backend *be)
{
    static _Thread_local int applied = 0;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (be->threads <= 0 || applied == be->threads)
        return;
    pthread_once(&once, lookup_setter);
    if (omp_setter)
        omp_setter(be->threads);
    applied = be->threads;
}

tp_status cpu_arena_reserve(cpu_backend *be, size_t bytes, void **out)
{
    if (bytes > be->arena_bytes) {
        size_t want = (bytes + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, want);
        if (!p)
            return be->host->fail(be->host, TP_ERR_NOMEM,
                                  "backend-cpu: cannot allocate %zu bytes of scratch for "
                                  "layout conversion", want);
        free(be->arena);
        be->arena = p;
        be->arena_bytes = want;
    }
    *out = be->arena;
    return TP_OK;
}

/* The checks cpu_check_f32 and cpu_check_act share: present, allocated, an allowed dtype
 * (`allowed` names them for the message), ndim dimensions when ndim > 0. */
static tp_status check_tensor(const cpu_backend *be, const char *op, const char *name,
                              const tp_tensor *t, int ndim, int allow_bf16, const char *allowed)
{
    if (!t || !t->data)
        return be->host->fail(be->host, TP_ERR_INVALID, "backend-cpu %s: tensor %s is %s", op,
                              name, t ? "not allocated" : "missing");
    if (t->dtype != TP_DTYPE_F32 && !(allow_bf16 && t->dtype == TP_DTYPE_BF16))
        return be->host->fail(be->host, TP_ERR_UNSUPPORTED, "backend-cpu %s: tensor %s is %s, %s",
                              op, name, tp_dtype_name(t->dtype), allowed);
    if (ndim && t->ndim != ndim)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: tensor %s has %d dimensions, expected %d", op,
                              name, t->ndim, ndim);
    return TP_OK;
}

tp_status cpu_check_f32(const cpu_backend *be, const char *op, const char *name,
                        const tp_tensor *t, int ndim)
{
    return check_tensor(be, op, name, t, ndim, 0, "only f32 is supported");
}

tp_status cpu_check_act(const cpu_backend *be, const char *op, const char *name,
                        const tp_tensor *t, int ndim)
{
    return check_tensor(be, op, name, t, ndim, 1, "activations are f32 or bf16");
}

tp_status cpu_check_same_dtype(const cpu_backend *be, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *b)
{
    if (a->dtype != b->dtype)
        return be->host->fail(be->host, TP_ERR_UNSUPPORTED,
                              "backend-cpu %s: %s is %s but %s is %s; they must match", op,
                              name_a, tp_dtype_name(a->dtype), name_b, tp_dtype_name(b->dtype));
    return TP_OK;
}

dnnl_data_type_t cpu_dnnl_dtype(tp_dtype dtype)
{
    return dtype == TP_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
}

tp_status cpu_check_same_shape(const cpu_backend *be, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *b)
{
    int same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++)
        same = a->shape[i] == b->shape[i];
    if (!same)
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: %s (%lld elements, %d-D) and %s (%lld elements, "
                              "%d-D) differ in shape", op, name_a, (long long)tp_tensor_count(a),
                              a->ndim, name_b, (long long)tp_tensor_count(b), b->ndim);
    return TP_OK;
}

tp_status cpu_check_dims(const cpu_backend *be, const char *op, const char *name,
                         const tp_tensor *t, int ndim, const int64_t *dims)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == dims[i];
    if (!ok) {
        char want[96], have[96];
        int w = 0, h = 0;
        for (int i = 0; i < ndim && w < (int)sizeof want - 24; i++)
            w += snprintf(want + w, sizeof want - (size_t)w, "%s%lld", i ? "," : "",
                          (long long)dims[i]);
        for (int i = 0; i < t->ndim && i < TP_TENSOR_MAX_DIMS && h < (int)sizeof have - 24; i++)
            h += snprintf(have + h, sizeof have - (size_t)h, "%s%lld", i ? "," : "",
                          (long long)t->shape[i]);
        return be->host->fail(be->host, TP_ERR_INVALID,
                              "backend-cpu %s: tensor %s has shape (%s), expected (%s)", op,
                              name, have, want);
    }
    return TP_OK;
}

void cpu_md_for_tensor(const tp_tensor *t, dnnl_memory_desc_t *md)
{
    dnnl_dims_t dims = { 0 };
    for (int i = 0; i < t->ndim; i++)
        dims[i] = t->shape[i];
    dnnl_format_tag_t tag = dnnl_a;
    if (t->ndim == 4)
        tag = t->layout == TP_LAYOUT_NHWC ? dnnl_nhwc : dnnl_nchw;
    else if (t->ndim == 3)
        tag = dnnl_abc;
    else if (t->ndim == 2)
        tag = dnnl_ab;
    /* Cannot fail for these plain tags and positive dims, which callers have checked. */
    dnnl_memory_desc_init_by_tag(md, t->ndim, dims, cpu_dnnl_dtype(t->dtype), tag);
}
