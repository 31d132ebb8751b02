/* tests/support_fuzz.h - the random source of the mutation suites.
 *
 * xorshift64: fast, and the same sequence on every machine, so a failure is
 * replayed by setting SLUICE_FUZZ_SEED to the seed its message prints.
 */
#ifndef SLUICE_TESTS_SUPPORT_FUZZ_H
#define SLUICE_TESTS_SUPPORT_FUZZ_H

#include <stdint.h>
#include <stdlib.h>

static inline uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* SLUICE_FUZZ_SEED if set, else the suite's fixed default. */
static inline uint64_t fuzz_seed(uint64_t fallback) {
    const char *env = getenv("SLUICE_FUZZ_SEED");
    return env ? strtoull(env, NULL, 0) : fallback;
}

/* The byte-mutation loop of every loader's suite: iters mutants of orig
 * (len bytes), each a fresh copy given 1..4 edits. edit(buf, &n, len, r, ctx)
 * makes one edit from the random bits r (n may shrink, or grow up to
 * len + 64: buf has that room); try(buf, n, iter, ctx) writes the mutant and
 * opens it: 1 when the loader took it, 0 when it refused it. Returns how
 * many were taken. */
typedef void (*fuzz_edit_fn)(uint8_t *buf, size_t *n, size_t len, uint64_t r, void *ctx);
typedef int (*fuzz_try_fn)(const uint8_t *buf, size_t n, int iter, void *ctx);
static inline int fuzz_byte_mutants(const uint8_t *orig, size_t len, uint64_t seed, int iters, fuzz_edit_fn edit,
                                    fuzz_try_fn try_open, void *ctx) {
    uint8_t *buf = malloc(len + 64);
    if (!buf) return -1;
    uint64_t s = seed | 1;
    int opened = 0;
    for (int iter = 0; iter < iters; iter++) {
        for (size_t i = 0; i < len; i++) buf[i] = orig[i];
        size_t n = len;
        int edits = 1 + (int)(rng_next(&s) % 4);
        for (int k = 0; k < edits; k++) edit(buf, &n, len, rng_next(&s), ctx);
        opened += try_open(buf, n, iter, ctx);
    }
    free(buf);
    return opened;
}

#endif
