/* kernels/cpu/cpu_math.h - branch-free float exp and GELU for the CPU backend's
 * element-wise loops.
 *
 * libm's expf/erff are scalar calls; in softmax and the GELU epilogue they
 * cost more than the matrix products around them. These versions are plain
 * arithmetic (no branches, no calls), so the compiler vectorises loops over
 * them. Reductions (softmax max and sum) keep CPU_VEC_BLOCK partial lanes,
 * since float semantics forbid the compiler to reassociate a single sum. A
 * row's tail uses the same function as its vector body, so an element's value
 * does not depend on where the batch's shape puts it.
 *
 * The .c files with hot loops say
 *   #pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
 * GCC will not if-convert a select (the clamps and the sign choice here) while
 * it must preserve floating-point traps, and -O2's very-cheap cost model
 * refuses most loops; neither changes a computed value (we never read the
 * floating-point exception flags). fp-contract lets the AVX2 clones use FMA
 * (about a third fewer instructions in the GELU); it changes the last bits,
 * so results may differ in the last ulp between an AVX2 and an SSE2 machine,
 * never between runs or batches on one machine.
 */
#ifndef SLUICE_CPU_MATH_H
#define SLUICE_CPU_MATH_H

#include <stdint.h>
#include <string.h>

#define CPU_VEC_BLOCK 16

/* Multiversioned hot loops, picked at load time by the CPU's features:
 * AVX-512 (x86-64-v4; 16 lanes, the GELU runs about twice as fast as on
 * AVX2), AVX2+FMA (x86-64-v3), else SSE2. Not "arch=haswell" and the like:
 * those clones are picked by CPU model, so a newer Xeon would get SSE2. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CPU_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_HOT
#endif

/* e^x for x in [-87.3, 88.3] (2^n stays a normal float); inputs outside are clamped (softmax feeds x <= 0). */
static inline __attribute__((always_inline)) float cpu_expf(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick (no rint call), r = x - n ln 2 */
    const float magic = 12582912.0f;
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* 0.5 x (1 + erf(x / sqrt 2)) */
static inline __attribute__((always_inline)) float cpu_gelu_erf(float x) {
    float z = (x < 0.0f ? -x : x) * 0.70710678118654752440f;
    float t = 1.0f / (1.0f + 0.5f * z);
    float poly = -0.82215223f + t * 0.17087277f;
    poly = 1.48851587f + t * poly;
    poly = -1.13520398f + t * poly;
    poly = 0.27886807f + t * poly;
    poly = -0.18628806f + t * poly;
    poly = 0.09678418f + t * poly;
    poly = 0.37409196f + t * poly;
    poly = 1.00002368f + t * poly;
    poly = -1.26551223f + t * poly;
    float erfc_z = t * cpu_expf(-z * z + poly);
    return 0.5f * x * (x < 0.0f ? erfc_z : 2.0f - erfc_z);
}

#endif
