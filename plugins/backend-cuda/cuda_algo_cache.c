/* backend-cuda: the convolution algorithm cache.
 *
 * Choosing a cuDNN algorithm (cudnnFind* runs every candidate; cudnnGet*_v7 asks the
 * heuristics) costs far more than a convolution, so each choice is remembered per
 * (operation, shapes, convolution parameters, layouts). A ResNet has a few dozen distinct
 * keys, so a small open-addressing table with FNV-1a hashing is plenty. Keys are compared
 * bytewise; cuda_algo_key has no padding (all int32 fields). */
#include "config.h"

#include "backend_cuda.h"

#include <string.h>

static uint64_t key_hash(const cuda_algo_key *k)
{
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

void cuda_algo_cache_free(cuda_backend *b)
{
    cuda_algo_cache *c = &b->algos;
    b->host->free(c->keys);
    b->host->free(c->values);
    b->host->free(c->used);
    memset(c, 0, sizeof *c);
}

const cuda_algo_choice *cuda_algo_cache_get(cuda_backend *b, const cuda_algo_key *key)
{
    cuda_algo_cache *c = &b->algos;
    if (c->capacity == 0)
        return NULL;
    size_t mask = c->capacity - 1;
    for (size_t i = key_hash(key) & mask;; i = (i + 1) & mask) {
        if (!c->used[i])
            return NULL;
        if (memcmp(&c->keys[i], key, sizeof *key) == 0)
            return &c->values[i];
    }
}

/* Inserts without growing; the caller guarantees a free slot. */
static void insert(cuda_algo_cache *c, const cuda_algo_key *key, const cuda_algo_choice *v)
{
    size_t mask = c->capacity - 1;
    size_t i = key_hash(key) & mask;
    while (c->used[i] && memcmp(&c->keys[i], key, sizeof *key) != 0)
        i = (i + 1) & mask;
    if (!c->used[i])
        c->count++;
    c->used[i] = 1;
    c->keys[i] = *key;
    c->values[i] = *v;
}

tp_status cuda_algo_cache_put(cuda_backend *b, const cuda_algo_key *key,
                              const cuda_algo_choice *choice)
{
    cuda_algo_cache *c = &b->algos;
    if ((c->count + 1) * 4 > c->capacity * 3) { /* keep the load under 3/4 */
        cuda_algo_cache bigger = {0};
        bigger.capacity = c->capacity ? c->capacity * 2 : 64;
        bigger.keys = b->host->calloc(bigger.capacity, sizeof *bigger.keys);
        bigger.values = b->host->calloc(bigger.capacity, sizeof *bigger.values);
        bigger.used = b->host->calloc(bigger.capacity, 1);
        if (!bigger.keys || !bigger.values || !bigger.used) {
            b->host->free(bigger.keys);
            b->host->free(bigger.values);
            b->host->free(bigger.used);
            return b->host->fail(b->host, TP_ERR_NOMEM,
                                 "convolution algorithm cache: out of host memory");
        }
        for (size_t i = 0; i < c->capacity; i++)
            if (c->used[i])
                insert(&bigger, &c->keys[i], &c->values[i]);
        cuda_algo_cache_free(b);
        *c = bigger;
    }
    insert(c, key, choice);
    return TP_OK;
}
