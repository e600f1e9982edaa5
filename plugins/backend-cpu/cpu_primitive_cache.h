/* backend-cpu: a small LRU cache of oneDNN primitives keyed by operation and shape, and the
 * argument binding that runs a cached primitive on user tensors.
 *
 * Creating a oneDNN primitive descriptor costs far more than running a small layer, so every
 * operation builds its primitives (plus the reorders between the user's plain NCHW/NHWC
 * layout and whatever blocked layout the primitive prefers) once per shape and keeps them
 * here; a training step then only sets data pointers and executes. */
#ifndef TRAINPIPE_CPU_PRIMITIVE_CACHE_H
#define TRAINPIPE_CPU_PRIMITIVE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include <trainpipe/trainpipe.h>

struct cpu_backend;

/* ------------------------------------------------------------------ keys and the cache */

#define CPU_KEY_MAX 40

typedef struct cpu_key {
    int op;  /* CPU_OP_* */
    int n;   /* values used */
    uint64_t hash; /* of op and v[0..n), kept up to date by cpu_key_init/add */
    int64_t v[CPU_KEY_MAX];
} cpu_key;

enum {
    CPU_OP_CONV_FWD = 1,
    CPU_OP_CONV_BWD_DATA,
    CPU_OP_CONV_BWD_FILTER,
    CPU_OP_BN_TRAIN,
    CPU_OP_BN_INFER,
    CPU_OP_BN_BWD,
    CPU_OP_RELU_FWD,
    CPU_OP_RELU_BWD,
    CPU_OP_ADD,
    CPU_OP_POOL_FWD,
    CPU_OP_POOL_BWD,
    CPU_OP_LINEAR_FWD,
    CPU_OP_LINEAR_BWD,
    CPU_OP_COPY,
    CPU_OP_BN_RELU_TRAIN,
    CPU_OP_BN_RELU_BWD,
    CPU_OP_ADD_RELU
};

void cpu_key_init(cpu_key *k, int op);
void cpu_key_add(cpu_key *k, int64_t v);
/* Adds dtype, ndim, layout and shape (or a marker for a NULL tensor). */
void cpu_key_add_tensor(cpu_key *k, const tp_tensor *t);

/* Room for every shape of a large network: ResNet-50 training uses about 190 primitives
 * (convolutions in three directions, batch norm, ReLU, additions, pooling). At the former 96
 * entries the LRU evicted each one before its next use, so every step re-created ~190
 * primitive descriptors. Lookups compare the key hash first, so the size costs little. */
#define CPU_CACHE_CAPACITY 1024

typedef struct cpu_cache_entry {
    cpu_key key;
    uint64_t last_use;
    void *payload;
    void (*destroy)(void *payload);
} cpu_cache_entry;

typedef struct cpu_cache {
    cpu_cache_entry entries[CPU_CACHE_CAPACITY];
    int count;
    uint64_t clock;
    uint64_t hits, misses;
    /* The payload of the last put under an overflowed key (never found again), kept until
     * the next such put or cpu_cache_clear() because its caller still runs it. */
    void *transient;
    void (*transient_destroy)(void *payload);
} cpu_cache;

/* The payload stored under k, or NULL. */
void *cpu_cache_find(cpu_cache *c, const cpu_key *k);
/* Stores payload under k, evicting (destroying) the least recently used entry when full.
 * The payload stays valid at least until the next put. */
void cpu_cache_put(cpu_cache *c, const cpu_key *k, void *payload, void (*destroy)(void *));
/* Destroys every payload. */
void cpu_cache_clear(cpu_cache *c);

/* ------------------------------------------------------------------ bound primitives */

#define CPU_PRIM_MAX_ARGS 10

typedef enum cpu_arg_dir {
    CPU_ARG_IN = 0,   /* read by the primitive: reordered user -> primitive format first */
    CPU_ARG_OUT = 1,  /* written: reordered primitive format -> user afterwards */
    CPU_ARG_OWNED = 2 /* not a user tensor: memory the cache entry owns (e.g. a workspace) */
} cpu_arg_dir;

typedef struct cpu_arg {
    int arg;                  /* DNNL_ARG_* */
    cpu_arg_dir dir;
    dnnl_memory_t user;       /* user's format, data pointer set per call; NULL for OWNED */
    dnnl_memory_t inner;      /* primitive's format; == user when the formats match */
    dnnl_primitive_t reorder; /* between user and inner, or NULL */
    size_t inner_bytes;       /* arena bytes for inner when it differs from user */
} cpu_arg;

typedef struct cpu_prim {
    dnnl_primitive_t prim;
    int n_args;
    cpu_arg args[CPU_PRIM_MAX_ARGS];
} cpu_prim;

/* Creates p->prim from pd (the caller still owns pd). */
tp_status cpu_prim_create(struct cpu_backend *be, cpu_prim *p, const_dnnl_primitive_desc_t pd);
/* Adds argument `arg`: the user's tensor has user_md (NULL for CPU_ARG_OWNED), the primitive
 * wants prim_md. Returns the argument's index (for the handles array of cpu_prim_run). */
tp_status cpu_prim_bind(struct cpu_backend *be, cpu_prim *p, int arg, cpu_arg_dir dir,
                        const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *prim_md);
/* Binds argument `arg` of pd, its descriptor taken from query `q` (e.g. dnnl_query_src_md). */
tp_status cpu_prim_bind_query(struct cpu_backend *be, cpu_prim *p, int arg, cpu_arg_dir dir,
                              const dnnl_memory_desc_t *user_md,
                              const_dnnl_primitive_desc_t pd, dnnl_query_t q);
/* Runs the primitive on handles[i] (the data of the i-th bound argument, ignored for OWNED):
 * input reorders, the primitive, output reorders, then waits. Caller holds be->lock. */
tp_status cpu_prim_run(struct cpu_backend *be, cpu_prim *p, void *const *handles);
void cpu_prim_destroy(cpu_prim *p);

/* Creates a primitive descriptor, naming `what` and the status on failure. */
tp_status cpu_pd_create(struct cpu_backend *be, const char *what, dnnl_primitive_desc_t *pd,
                        const_dnnl_op_desc_t desc, const_dnnl_primitive_desc_t hint);
/* The same with attributes (post-ops); attr may be NULL. */
tp_status cpu_pd_create_attr(struct cpu_backend *be, const char *what,
                             dnnl_primitive_desc_t *pd, const_dnnl_op_desc_t desc,
                             const_dnnl_primitive_attr_t attr,
                             const_dnnl_primitive_desc_t hint);

#endif
