/* Deterministic pseudo-random numbers for tests (splitmix64). The base seed of a test
 * binary comes from PQ_TEST_SEED when set, else from a fixed default, and is printed so
 * that a failing run can be replayed. Header-only: nothing to add to meson. */
#ifndef PQ_TESTS_LIB_RNG_H
#define PQ_TESTS_LIB_RNG_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct rng {
	uint64_t s;
};

static inline void rng_init(struct rng *r, uint64_t seed)
{
	r->s = seed;
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n must be positive. */
static inline uint32_t rng_below(struct rng *r, uint32_t n)
{
	return (uint32_t)(rng_next(r) % n);
}

/* Uniform in [lo, hi], lo <= hi. */
static inline uint32_t rng_range(struct rng *r, uint32_t lo, uint32_t hi)
{
	return lo + (uint32_t)(rng_next(r) % ((uint64_t)hi - lo + 1));
}

/* True with the given probability in percent. */
static inline bool rng_chance(struct rng *r, unsigned percent)
{
	return rng_below(r, 100) < percent;
}

static inline void rng_fill(struct rng *r, void *p, size_t n)
{
	uint8_t *b = p;
	size_t i;
	for (i = 0; i < n; i++)
		b[i] = (uint8_t)(rng_next(r) >> 56);
}

/* n random lower-case letters, then a NUL (p holds n + 1 bytes). */
static inline void rng_text(struct rng *r, char *p, size_t n)
{
	size_t i;
	for (i = 0; i < n; i++)
		p[i] = (char)('a' + rng_below(r, 26));
	p[n] = '\0';
}

/* Mix a test-specific tag into a seed so that tests of one binary draw independent streams. */
static inline uint64_t seed_mix(uint64_t seed, uint64_t tag)
{
	struct rng r = {seed ^ (tag * 0xd1342543de82ef95ULL)};
	return rng_next(&r);
}

/* The base seed: PQ_TEST_SEED (decimal or 0x-prefixed hex) if set, else dflt. */
static inline uint64_t test_seed(const char *binary, uint64_t dflt)
{
	const char *env = getenv("PQ_TEST_SEED");
	uint64_t seed = dflt;

	if (env != NULL && *env != '\0')
		seed = strtoull(env, NULL, 0);
	printf("%s: seed 0x%" PRIx64 " (replay with PQ_TEST_SEED=0x%" PRIx64 ")\n", binary,
	       seed, seed);
	fflush(stdout);
	return seed;
}

#endif
