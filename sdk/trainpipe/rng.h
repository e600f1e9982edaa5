/* trainpipe SDK: the deterministic random number generator.
 *
 * Header-only so that a plugin's random choices are reproducible without calling into the
 * host. A generator is keyed by (seed, stream, index): e.g. an augmenter seeds one per sample
 * with (run seed, epoch, sample index), so results never depend on thread count or on the
 * order in which workers pick samples up.
 *
 * The generator is SplitMix64 (Steele, Lea, Flood 2014) over a key-mixed starting state:
 * small, fast, and statistically fine for initialisation and augmentation. */
#ifndef TRAINPIPE_RNG_H
#define TRAINPIPE_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_rng {
    uint64_t state;
} tp_rng;

static inline uint64_t tp_rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A generator for (seed, stream, index). Different keys give independent-looking streams. */
static inline tp_rng tp_rng_make(uint64_t seed, uint64_t stream, uint64_t index)
{
    tp_rng r;
    r.state = tp_rng_mix64(seed ^ tp_rng_mix64(stream + 0x9e3779b97f4a7c15ULL) ^
                           tp_rng_mix64(index * 0xd1b54a32d192ed03ULL + 1));
    return r;
}

static inline uint64_t tp_rng_u64(tp_rng *r)
{
    r->state += 0x9e3779b97f4a7c15ULL;
    return tp_rng_mix64(r->state);
}

static inline uint32_t tp_rng_u32(tp_rng *r) { return (uint32_t)(tp_rng_u64(r) >> 32); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double tp_rng_uniform(tp_rng *r)
{
    return (double)(tp_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n) without modulo bias; n must be > 0. */
static inline uint64_t tp_rng_below(tp_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = tp_rng_u64(r);
    } while (x >= limit);
    return x % n;
}

/* Standard normal by Box-Muller (one value per call; the partner is discarded so the
 * stream stays a pure function of how many values were drawn). */
static inline double tp_rng_normal(tp_rng *r)
{
    double u1 = tp_rng_uniform(r), u2 = tp_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Normal truncated to [-2, 2] standard deviations, redrawn outside (as Keras/TF do). */
static inline double tp_rng_truncated_normal(tp_rng *r)
{
    double x;
    do {
        x = tp_rng_normal(r);
    } while (x < -2.0 || x > 2.0);
    return x;
}

/* Fisher-Yates shuffle of a permutation of 0..n-1 written to `out`. */
static inline void tp_rng_permutation(tp_rng *r, int64_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)tp_rng_below(r, (uint64_t)i + 1);
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_RNG_H */
