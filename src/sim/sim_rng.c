/*
 * sim_rng.c - PRNG, hash and vocabulary (see sim_rng.h).
 */
#include "sim_rng.h"

uint64_t sim_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double sim_rng_unit(uint64_t *state)
{
    return (double)(sim_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t sim_mix(uint64_t a, uint64_t b)
{
    uint64_t s = a ^ (b * 0x9e3779b97f4a7c15ull);
    return sim_rng_next(&s);
}

uint64_t sim_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Plain lowercase English words: one word is one simulated token. */
static const char *const vocab[] = {
    "the", "model", "answer", "is", "a", "simple", "test", "of", "streaming",
    "tokens", "and", "latency", "in", "this", "simulated", "response", "we",
    "can", "see", "that", "gateway", "routes", "each", "request", "to",
    "local", "or", "frontier", "backend", "with", "low", "cost", "data",
    "stays", "inside", "cluster", "while", "complex", "reasoning", "goes",
    "out", "every", "chunk", "arrives", "on", "time", "quickly", "here",
    "more", "words", "follow", "until", "limit", "reached", "now", "done",
    "good", "fast", "small", "large", "queue", "wait", "ready", "okay",
};

size_t sim_vocab_count(void)
{
    return sizeof(vocab) / sizeof(vocab[0]);
}

const char *sim_vocab_word(size_t i)
{
    return vocab[i % sim_vocab_count()];
}

const char *sim_vocab_draw(uint64_t *state)
{
    return vocab[sim_rng_next(state) % sim_vocab_count()];
}
