/* tests/test_cpu_gemm.c - the CPU backend's own GEMM (kernels/cpu/cpu_gemm.c):
 * every instruction-set path this CPU has against the float64 reference on
 * fresh random shapes that are not multiples of the register blocks, and the
 * bits of each output row independent of the batch around it, the tile it
 * falls in and the thread count (the engine's batch-invariance rests on it).
 *
 * Every run draws a new seed (printed in each failure; SLUICE_TEST_SEED replays).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/ops.h"
#include "tests/support_ref.h"

static uint64_t seed;
static ref_rng_t rng;

static void setup(void) {
    seed = ref_seed_from_env_or_time();
    ref_rng_init(&rng, seed);
}

TestSuite(cpu_gemm, .init = setup, .timeout = 120);

static const char *const paths[] = {"avx512", "avx2", "c"};
#define N_PATHS (sizeof paths / sizeof paths[0])
#define SENTINEL 12345.0f

static float *floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static float *random_floats(size_t n, double amp) {
    float *p = floats(n);
    ref_fill_uniform(&rng, p, n, -amp, amp);
    return p;
}

/* The token counts of the task (1, 3, 64, 257) with K and N drawn fresh and
 * kept off the 4/8/16 multiples; strided operands (lda > K, ldw > K,
 * ldo > cols) so a kernel that assumes dense rows or writes past its tile fails. */
Test(cpu_gemm, every_path_matches_float64_reference_on_odd_shapes) {
    static const int Ts[] = {1, 3, 64, 257};
    int ran = 0;
    for (size_t p = 0; p < N_PATHS; p++) {
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti];
            int K = ref_rng_int(&rng, 1, 700) | 1, N = ref_rng_int(&rng, 1, 300) | 1;
            if (ti == 3) K = 1537; /* the FFN-down depth, plus one */
            int lda = K + 3, ldw = K + 5, ldo = N + 2;
            float *in = random_floats((size_t)T * lda, 1.0), *W = random_floats((size_t)N * ldw, 0.5);
            float *out = floats((size_t)T * ldo);
            for (size_t i = 0; i < (size_t)T * ldo; i++) out[i] = SENTINEL;
            if (ops_cpu_gemm_nt_on(paths[p], out, ldo, in, lda, W, ldw, T, N, K) != 0) {
                free(in), free(W), free(out);
                break; /* this CPU lacks the path */
            }
            ran++;
            /* dense copies for the reference */
            float *a = floats((size_t)T * K), *w = floats((size_t)N * K), *o = floats((size_t)T * N);
            for (int t = 0; t < T; t++) memcpy(a + (size_t)t * K, in + (size_t)t * lda, K * sizeof(float));
            for (int n = 0; n < N; n++) memcpy(w + (size_t)n * K, W + (size_t)n * ldw, K * sizeof(float));
            for (int t = 0; t < T; t++) {
                memcpy(o + (size_t)t * N, out + (size_t)t * ldo, N * sizeof(float));
                for (int c = N; c < ldo; c++)
                    cr_assert_eq(out[(size_t)t * ldo + c], SENTINEL, "%s T=%d K=%d N=%d: wrote past row %d [seed %llu]",
                                 paths[p], T, K, N, t, (unsigned long long)seed);
            }
            double *ref = malloc((size_t)T * N * sizeof *ref);
            cr_assert_not_null(ref);
            ref_matmul(ref, a, w, NULL, T, K, N, OPS_EPI_NONE);
            cr_assert_eq(ref_first_nonfinite(o, (size_t)T * N), -1, "%s T=%d K=%d N=%d: non-finite output [seed %llu]",
                         paths[p], T, K, N, (unsigned long long)seed);
            double err = ref_rel_error(o, ref, (size_t)T * N);
            cr_assert(err <= 1e-6, "%s T=%d K=%d N=%d: relative error %.3e [seed %llu]", paths[p], T, K, N, err,
                      (unsigned long long)seed);
            free(in), free(W), free(out), free(a), free(w), free(o), free(ref);
        }
    }
    cr_assert_geq(ran, 4, "not even the portable path ran");
}

/* Row r of a 257-row product against the same row computed alone, in a
 * 3-row batch at another offset, and inside a column tile that starts at an
 * odd column: the same bits every time, on every path. */
Test(cpu_gemm, bits_do_not_depend_on_batch_or_tile) {
    for (size_t p = 0; p < N_PATHS; p++) {
        int T = 257, K = ref_rng_int(&rng, 300, 800) | 1, N = ref_rng_int(&rng, 40, 200) | 1;
        float *in = random_floats((size_t)T * K, 1.0), *W = random_floats((size_t)N * K, 0.5);
        float *full = floats((size_t)T * N), *part = floats((size_t)3 * N);
        if (ops_cpu_gemm_nt_on(paths[p], full, N, in, K, W, K, T, N, K) != 0) {
            free(in), free(W), free(full), free(part);
            continue;
        }
        for (int trial = 0; trial < 20; trial++) {
            int r = ref_rng_int(&rng, 0, T - 3);
            cr_assert_eq(ops_cpu_gemm_nt_on(paths[p], part, N, in + (size_t)r * K, K, W, K, 1, N, K), 0);
            cr_assert(!memcmp(part, full + (size_t)r * N, N * sizeof(float)),
                      "%s: row %d alone differs from row %d of %d [seed %llu]", paths[p], r, r, T,
                      (unsigned long long)seed);
            cr_assert_eq(ops_cpu_gemm_nt_on(paths[p], part, N, in + (size_t)r * K, K, W, K, 3, N, K), 0);
            cr_assert(!memcmp(part, full + (size_t)r * N, 3 * N * sizeof(float)),
                      "%s: rows %d..%d as a batch of 3 differ [seed %llu]", paths[p], r, r + 2,
                      (unsigned long long)seed);
            int c0 = ref_rng_int(&rng, 1, N - 2) | 1, cols = ref_rng_int(&rng, 1, N - c0);
            cr_assert_eq(ops_cpu_gemm_nt_on(paths[p], part, N, in + (size_t)r * K, K, W + (size_t)c0 * K, K, 1, cols, K),
                         0);
            cr_assert(!memcmp(part, full + (size_t)r * N + c0, cols * sizeof(float)),
                      "%s: row %d, columns %d..%d as a tile differ [seed %llu]", paths[p], r, c0, c0 + cols - 1,
                      (unsigned long long)seed);
        }
        free(in), free(W), free(full), free(part);
    }
}

/* Through the op table, weights through upload_weight: each row of a GELU
 * matmul over T = 257 tokens equals, bit for bit, the same row computed with
 * T = 1 and T = 3 and with 1, 2 or 3 threads (row blocks at large T, column
 * blocks at small T: the split changes, the bits must not). */
Test(cpu_gemm, matmul_rows_bit_stable_across_batch_and_threads) {
    int T = 257, K = ref_rng_int(&rng, 300, 600) | 1, N = 2 * ref_rng_int(&rng, 60, 200) + 1;
    float *in = random_floats((size_t)T * K, 1.0), *Wh = random_floats((size_t)N * K, 0.1);
    float *bias = random_floats(N, 1.0);
    float *ref = NULL;
    for (int threads = 1; threads <= 3; threads++) {
        ops_t *ops = ops_cpu_create(threads);
        cr_assert_not_null(ops);
        float *W = ops->mem_alloc(ops, (size_t)N * K * sizeof(float));
        float *out = ops->mem_alloc(ops, (size_t)T * N * sizeof(float));
        cr_assert(W && out);
        cr_assert_eq(ops->upload_weight(ops, W, Wh, (size_t)N * K), 0, "%s", ops->err);
        cr_assert_eq(ops->matmul(ops, out, in, W, bias, T, K, N, OPS_EPI_BIAS_GELU), 0, "%s", ops->err);
        if (!ref) {
            ref = floats((size_t)T * N);
            memcpy(ref, out, (size_t)T * N * sizeof(float));
        }
        cr_assert(!memcmp(out, ref, (size_t)T * N * sizeof(float)), "T=%d, %d threads: differs from 1 thread [seed %llu]",
                  T, threads, (unsigned long long)seed);
        static const int small[] = {1, 3, 64};
        for (size_t s = 0; s < sizeof small / sizeof small[0]; s++) {
            int n = small[s], r = ref_rng_int(&rng, 0, T - n);
            cr_assert_eq(ops->matmul(ops, out, in + (size_t)r * K, W, bias, n, K, N, OPS_EPI_BIAS_GELU), 0, "%s",
                         ops->err);
            cr_assert(!memcmp(out, ref + (size_t)r * N, (size_t)n * N * sizeof(float)),
                      "rows %d..%d as T=%d with %d threads differ from the T=%d batch [seed %llu]", r, r + n - 1, n,
                      threads, T, (unsigned long long)seed);
        }
        ops->mem_free(ops, W);
        ops->mem_free(ops, out);
        ops_destroy(ops);
    }
    free(in), free(Wh), free(bias), free(ref);
}

/* One feature probe serves the decoder ops and the GEMM: the GEMM's path is
 * the level ops_cpu_isa reports, and $SLUICE_CPU_ISA caps both (read once
 * per process; Criterion runs each test in its own). */
static const char *path_of_level(int isa) {
    return isa >= OPS_CPU_AVX512 ? "avx512" : isa >= OPS_CPU_AVX2 ? "avx2" : "c";
}

static void expect_capped(const char *cap) {
    if (cap) setenv("SLUICE_CPU_ISA", cap, 1);
    int isa = ops_cpu_isa();
    if (cap && !strcmp(cap, "avx2")) cr_assert_leq(isa, OPS_CPU_AVX2, "cap avx2: ops_cpu_isa() = %d", isa);
    if (cap && !strcmp(cap, "portable")) cr_assert_eq(isa, OPS_CPU_PORTABLE, "cap portable: ops_cpu_isa() = %d", isa);
    cr_assert_str_eq(ops_cpu_gemm_path(), path_of_level(isa), "cap %s: the GEMM runs %s, the decoder ops level %d",
                     cap ? cap : "(none)", ops_cpu_gemm_path(), isa);
    float in[40], W[40], out[1];
    for (int i = 0; i < 40; i++) in[i] = W[i] = 1.0f;
    for (size_t p = 0; p < N_PATHS; p++) {
        int reachable = !strcmp(paths[p], "c") || (!strcmp(paths[p], "avx2") && isa >= OPS_CPU_AVX2) ||
                        (!strcmp(paths[p], "avx512") && isa >= OPS_CPU_AVX512);
        int rc = ops_cpu_gemm_nt_on(paths[p], out, 1, in, 40, W, 40, 1, 1, 40);
        cr_assert_eq(rc, reachable ? 0 : -1, "cap %s, level %d: path %s answered %d", cap ? cap : "(none)", isa,
                     paths[p], rc);
        if (rc == 0) cr_assert_float_eq(out[0], 40.0f, 0.0f, "path %s", paths[p]);
    }
}

Test(cpu_gemm, one_feature_probe_for_gemm_and_decoder) { expect_capped(NULL); }
Test(cpu_gemm, isa_cap_avx2_holds_for_the_gemm) { expect_capped("avx2"); }
Test(cpu_gemm, isa_cap_portable_holds_for_the_gemm) { expect_capped("portable"); }
