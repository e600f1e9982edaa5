/* backend-cpu: the instance state shared by every operation file, and the checked helpers
 * (oneDNN calls, tensor validation, layout-aware indexing) they use. Internal to the plugin. */
#ifndef TRAINPIPE_CPU_BACKEND_H
#define TRAINPIPE_CPU_BACKEND_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <trainpipe/trainpipe.h>

#include "cpu_primitive_cache.h"

/* The configuration struct the host fills from the parameter table. */
typedef struct cpu_config {
    int64_t threads;   /* 0: all cores */
    int deterministic; /* bool */
    int precision;     /* CPU_PRECISION_*: the activation dtype info() asks the graph for */
} cpu_config;

enum { CPU_PRECISION_FP32 = 0, CPU_PRECISION_BF16 = 1 };

typedef struct cpu_backend {
    const tp_host *host;
    int threads;       /* threads requested (0: runtime default) */
    int threads_used;  /* what info() reports */
    int deterministic;
    tp_dtype act_dtype; /* f32, or bf16 with precision = bf16 */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    /* Guards the primitive cache, the scratch arena and the oneDNN stream: operations may
     * arrive from the trainer and from device-side augmenters on other threads. */
    pthread_mutex_t lock;
    cpu_cache cache;
    void *arena;       /* scratch for reordered (blocked) copies of arguments */
    size_t arena_bytes;
    uint64_t event_clock; /* counts recorded events (work is synchronous) */
    char device_name[128];
} cpu_backend;

/* Records "FILE:LINE: CALL failed: STATUS" through host->fail and returns TP_ERR_LIBRARY. */
tp_status cpu_dnnl_fail(const cpu_backend *be, const char *call, dnnl_status_t s,
                        const char *file, int line);

/* Calls a oneDNN function; on failure records the error and jumps to `fail` with `st` set.
 * The enclosing function must declare `tp_status st` and a `fail:` label. */
#define CPU_DNNL(be, fn, ...)                                                     \
    do {                                                                          \
        dnnl_status_t cpu_s_ = fn(__VA_ARGS__);                                   \
        if (cpu_s_ != dnnl_success) {                                             \
            st = cpu_dnnl_fail((be), #fn, cpu_s_, __FILE__, __LINE__);            \
            goto fail;                                                            \
        }                                                                         \
    } while (0)

/* Makes the calling thread use the configured thread count for oneDNN (OpenMP keeps the
 * setting per thread, so every operation entry applies it once per thread). */
void cpu_apply_threads(cpu_backend *be);

/* Pins libdnnl and the OpenMP runtime in memory (see cpu_util.c); idempotent. */
void cpu_pin_runtime(void);

/* Scratch memory of at least `bytes`, valid until the next call; caller holds be->lock. */
tp_status cpu_arena_reserve(cpu_backend *be, size_t bytes, void **out);

/* Tensor checks for operation `op`: each records an error naming op and the tensor. */
tp_status cpu_check_f32(const cpu_backend *be, const char *op, const char *name,
                        const tp_tensor *t, int ndim);
/* An activation (x, y, dy, dx of a layer): f32 or bf16. Any instance takes either; the
 * precision parameter only decides which one info() asks the graph for. */
tp_status cpu_check_act(const cpu_backend *be, const char *op, const char *name,
                        const tp_tensor *t, int ndim);
/* b has a's dtype (oneDNN's layers here take no mixed activations). */
tp_status cpu_check_same_dtype(const cpu_backend *be, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *b);
/* oneDNN's data type for an f32 or bf16 tensor. */
dnnl_data_type_t cpu_dnnl_dtype(tp_dtype dtype);
/* Whether oneDNN ISA `isa` (dnnl_get_effective_cpu_isa()) includes `want`: oneDNN's ISA
 * values are bit masks, each a superset of the ones below it. */
static inline int cpu_isa_has(dnnl_cpu_isa_t isa, dnnl_cpu_isa_t want)
{
    return ((unsigned)isa & (unsigned)want) == (unsigned)want;
}
tp_status cpu_check_same_shape(const cpu_backend *be, const char *op, const char *name_a,
                               const tp_tensor *a, const char *name_b, const tp_tensor *b);
tp_status cpu_check_dims(const cpu_backend *be, const char *op, const char *name,
                         const tp_tensor *t, int ndim, const int64_t *dims);

/* A oneDNN descriptor for a tensor in its own layout and dtype (4-D: nchw/nhwc, 2-D: ab,
 * 1-D: a). */
void cpu_md_for_tensor(const tp_tensor *t, dnnl_memory_desc_t *md);

/* Element offset of logical (n, c, h, w) in a 4-D tensor, honouring its layout. */
static inline int64_t cpu_offset4(const tp_tensor *t, int64_t n, int64_t c, int64_t h,
                                  int64_t w)
{
    const int64_t C = t->shape[1], H = t->shape[2], W = t->shape[3];
    if (t->layout == TP_LAYOUT_NHWC)
        return ((n * H + h) * W + w) * C + c;
    return ((n * C + c) * H + h) * W + w;
}

/* Number of elements of a tensor as size_t. */
static inline size_t cpu_count(const tp_tensor *t)
{
    return (size_t)tp_tensor_count(t);
}

/* OpenMP work sharing for the plugin's own loops, on the runtime (and so the threads)
 * oneDNN uses. Each loop either writes disjoint elements or reduces each output in a fixed
 * order on one thread, so the bits do not depend on the thread count. Built without
 * OpenMP, the loops run on the calling thread. Call cpu_apply_threads() before the loop. */
#ifdef _OPENMP
#define CPU_OMP(directive) _Pragma(#directive)
#else
#define CPU_OMP(directive)
#endif

/* Below this many elements a loop stays on one thread: waking the team costs more. */
#define CPU_PARALLEL_MIN 32768

#endif
