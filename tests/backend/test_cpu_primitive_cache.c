/* backend-cpu's primitive cache: lookups, LRU eviction and the lifetime of payloads, in
 * particular one stored under a key that overflowed (more than CPU_KEY_MAX values). Such a
 * key is never stored, yet its caller runs the payload right after the put, so it must stay
 * alive until the next such put or the cache is cleared (it used to be destroyed at once). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu_primitive_cache.h"

static int destroyed[8];

static void destroy_marker(void *payload) { destroyed[*(int *)payload]++; }

static int markers[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };

static void free_nothing(void *payload) { (void)payload; }

static void overflowed_key(cpu_key *k)
{
    cpu_key_init(k, CPU_OP_CONV_FWD);
    for (int i = 0; i <= CPU_KEY_MAX; i++)
        cpu_key_add(k, i);
}

static void test_overflowed_payload_outlives_put(cpu_cache *c)
{
    cpu_key k;
    overflowed_key(&k);
    cpu_cache_put(c, &k, &markers[1], destroy_marker);
    CHECK(destroyed[1] == 0);             /* the caller is about to run it */
    CHECK(cpu_cache_find(c, &k) == NULL); /* and it is never found again */
    CHECK(c->count == 0);
    cpu_cache_put(c, &k, &markers[2], destroy_marker);
    CHECK(destroyed[1] == 1 && destroyed[2] == 0);
    cpu_cache_clear(c);
    CHECK(destroyed[2] == 1);
    cpu_cache_clear(c); /* nothing left to destroy twice */
    CHECK(destroyed[2] == 1);
}

static void test_find_and_clear(cpu_cache *c)
{
    cpu_key a, b;
    cpu_key_init(&a, CPU_OP_ADD);
    cpu_key_add(&a, 7);
    cpu_key_init(&b, CPU_OP_ADD);
    cpu_key_add(&b, 8);
    cpu_cache_put(c, &a, &markers[3], destroy_marker);
    CHECK(cpu_cache_find(c, &a) == &markers[3]);
    CHECK(cpu_cache_find(c, &b) == NULL);
    cpu_cache_clear(c);
    CHECK(destroyed[3] == 1 && c->count == 0);
}

/* A full cache evicts the least recently used entry, not the one just looked up. */
static void test_lru_eviction(cpu_cache *c)
{
    cpu_key k;
    static int payload[CPU_CACHE_CAPACITY + 1];
    for (int i = 0; i < CPU_CACHE_CAPACITY; i++) {
        cpu_key_init(&k, CPU_OP_COPY);
        cpu_key_add(&k, i);
        cpu_cache_put(c, &k, &payload[i], free_nothing);
    }
    cpu_key first;
    cpu_key_init(&first, CPU_OP_COPY);
    cpu_key_add(&first, 0);
    CHECK(cpu_cache_find(c, &first) == &payload[0]); /* now the most recent */
    cpu_key_init(&k, CPU_OP_COPY);
    cpu_key_add(&k, CPU_CACHE_CAPACITY);
    cpu_cache_put(c, &k, &payload[CPU_CACHE_CAPACITY], free_nothing);
    CHECK(c->count == CPU_CACHE_CAPACITY);
    CHECK(cpu_cache_find(c, &first) == &payload[0]);
    cpu_key second;
    cpu_key_init(&second, CPU_OP_COPY);
    cpu_key_add(&second, 1);
    CHECK(cpu_cache_find(c, &second) == NULL); /* entry 1 was the least recently used */
    cpu_cache_clear(c);
}

int main(void)
{
    cpu_cache *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    if (!c)
        return CHECK_EXIT();
    test_overflowed_payload_outlives_put(c);
    test_find_and_clear(c);
    test_lru_eviction(c);
    free(c);
    return CHECK_EXIT();
}
