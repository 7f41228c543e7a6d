/*
 * sim_rng.h - determinism helpers: a 64-bit PRNG (splitmix64), a content
 * hash (FNV-1a 64) and the fixed vocabulary the simulated model "speaks".
 * Same seed + same request content = same words, on every platform.
 */
#ifndef HYBRIDGW_SIM_RNG_H
#define HYBRIDGW_SIM_RNG_H

#include <stddef.h>
#include <stdint.h>

#define SIM_FNV_OFFSET 0xcbf29ce484222325ull

/* Advance *state and return the next 64 random bits. */
uint64_t sim_rng_next(uint64_t *state);
/* A double uniformly distributed in [0, 1). */
double sim_rng_unit(uint64_t *state);
/* Mix two 64-bit values into one well-spread value (for seeds). */
uint64_t sim_mix(uint64_t a, uint64_t b);
/* FNV-1a over n bytes, continuing from h (start with SIM_FNV_OFFSET). */
uint64_t sim_hash(uint64_t h, const void *p, size_t n);

/* Number of words in the vocabulary, and word i (i < count). */
size_t sim_vocab_count(void);
const char *sim_vocab_word(size_t i);
/* The next word drawn with *state. */
const char *sim_vocab_draw(uint64_t *state);

#endif
