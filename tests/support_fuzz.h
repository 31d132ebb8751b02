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

#endif
