/* bench/gpu_parity.c - the CUDA backend's parity checks for a GPU machine
 * without Criterion: every check of tests/support_cuda_parity.c, for fp32,
 * bf16 and fp16 (and matmul and attention again through the plain fallback kernels),
 * against the CPU backend, and similarity top-k against a brute-force sort
 * (family "topk"). One line per check, a summary last; exits 1 on any
 * failure (a missing GPU included), 0 when everything passed. Family
 * "decoder" runs the decoder ops' checks (tests/support_cuda_decoder.c) once,
 * on an fp16 backend (those ops are float32 whatever the dtype; the KV cache
 * is fp16).
 *
 * usage: bench-gpu_parity [family...]     (default: every family)
 *        SLUICE_TEST_SEED=N replays a run; the seed is printed. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/ops.h"
#include "tests/support_cuda_decoder.h"
#include "tests/support_cuda_parity.h"
#include "tests/support_ref.h"
#include "tests/support_topk.h"

#define RECAP_MAX 40

typedef struct tally {
    int checks, failed;
    char recap[RECAP_MAX][240]; /* the first failures, repeated before the summary */
} tally_t;

/* One failure: counted, and kept for the recap (a log's tail then shows it). */
static void tally_fail(tally_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tally_fail(tally_t *t, const char *fmt, ...) {
    if (t->failed < RECAP_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->recap[t->failed], sizeof t->recap[0], fmt, ap);
        va_end(ap);
    }
    t->failed++;
}

static void print_result(const cuda_parity_result_t *r, void *ctx) {
    tally_t *t = ctx;
    t->checks++;
    if (!r->passed) tally_fail(t, "%s %s: %s", ops_dtype_name(r->dtype), r->name, r->msg);
    printf("%s %-4s %-70s rel_err %-9.2e tol %.0e%s%s\n", r->passed ? "PASS" : "FAIL", ops_dtype_name(r->dtype),
           r->name, r->rel_err, r->tol, r->passed ? "" : "  ", r->msg);
    fflush(stdout);
}

/* Similarity top-k is checked against a brute-force sort (tests/support_topk.c),
 * not against the CPU backend: one line per case. */
static void run_topk(ops_t *gpu, tally_t *t) {
    for (int i = 0; i < topk_parity_n_cases; i++) {
        const topk_case_t *c = &topk_parity_cases[i];
        char msg[512] = "";
        int failed = topk_parity_check(gpu, c, msg, sizeof msg) != 0;
        t->checks++;
        if (failed) tally_fail(t, "%s topk nq=%d N=%d D=%d k=%d: %s", ops_dtype_name(gpu->dtype), c->nq, c->N, c->D,
                               c->k, msg);
        printf("%s %-4s topk nq=%d N=%d D=%d k=%d levels=%d%s%s\n", failed ? "FAIL" : "PASS",
               ops_dtype_name(gpu->dtype), c->nq, c->N, c->D, c->k, c->levels, failed ? "  " : "", msg);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    uint64_t seed = ref_seed_from_env_or_time();
    printf("gpu-parity: seed %llu (SLUICE_TEST_SEED=%llu replays)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    for (int i = 1; i < argc; i++) {
        int known = !strcmp(argv[i], "topk") || !strcmp(argv[i], "decoder");
        for (int f = 0; cuda_parity_families[f]; f++) known |= !strcmp(argv[i], cuda_parity_families[f]);
        if (!known) {
            fprintf(stderr, "gpu-parity: unknown family '%s' (known: topk decoder", argv[i]);
            for (int f = 0; cuda_parity_families[f]; f++) fprintf(stderr, " %s", cuda_parity_families[f]);
            fprintf(stderr, ")\n");
            return 2;
        }
    }
    ops_t *cpu = ops_cpu_create(0);
    if (!cpu) {
        fprintf(stderr, "gpu-parity: cannot create the CPU backend\n");
        return 1;
    }
    static tally_t t; /* zeroed; large */
    static const ops_dtype_t dtypes[] = {OPS_F32, OPS_BF16, OPS_F16};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        char err[512];
        ops_t *gpu = ops_cuda_create(0, dtypes[d], err, sizeof err);
        if (!gpu) {
            printf("FAIL %-4s no CUDA backend: %s\n", ops_dtype_name(dtypes[d]), err);
            t.checks++;
            tally_fail(&t, "%s: no CUDA backend: %s", ops_dtype_name(dtypes[d]), err);
            continue;
        }
        size_t free_b = 0, total_b = 0;
        if (gpu->mem_info(gpu, &free_b, &total_b) == 0)
            printf("cuda %s: device memory %.1f GiB free of %.1f GiB\n", ops_dtype_name(dtypes[d]),
                   free_b / 1073741824.0, total_b / 1073741824.0);
        for (int f = 0; cuda_parity_families[f]; f++) {
            int wanted = argc < 2;
            for (int i = 1; i < argc; i++) wanted |= !strcmp(argv[i], cuda_parity_families[f]);
            if (wanted) cuda_parity_run(gpu, cpu, cuda_parity_families[f], seed, print_result, &t);
        }
        int want_topk = argc < 2;
        for (int i = 1; i < argc; i++) want_topk |= !strcmp(argv[i], "topk");
        if (want_topk) run_topk(gpu, &t);
        ops_destroy(gpu);
    }
    /* The plain kernels (what runs where cuBLASLt offers no algorithm, and the
     * CUDA-core attention), forced: SLUICE_CUDA_FALLBACK=1 is also the switch
     * to use if a fast path fails its checks. */
    static const char *const fallback_families[] = {"matmul", "attention"};
    setenv("SLUICE_CUDA_FALLBACK", "1", 1);
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        char err[512];
        ops_t *gpu = ops_cuda_create(0, dtypes[d], err, sizeof err);
        if (!gpu) continue; /* already counted above */
        printf("cuda %s with SLUICE_CUDA_FALLBACK=1 (plain GEMM and attention kernels):\n", ops_dtype_name(dtypes[d]));
        for (size_t f = 0; f < sizeof fallback_families / sizeof fallback_families[0]; f++) {
            int wanted = argc < 2;
            for (int i = 1; i < argc; i++) wanted |= !strcmp(argv[i], fallback_families[f]);
            if (wanted) cuda_parity_run(gpu, cpu, fallback_families[f], seed, print_result, &t);
        }
        ops_destroy(gpu);
    }
    unsetenv("SLUICE_CUDA_FALLBACK");
    int want_decoder = argc < 2;
    for (int i = 1; i < argc; i++) want_decoder |= !strcmp(argv[i], "decoder");
    if (want_decoder) {
        char err[512];
        ops_t *gpu = ops_cuda_create(0, OPS_F16, err, sizeof err);
        if (gpu) {
            printf("cuda decoder ops (float32 activations, fp16 KV cache):\n");
            for (int f = 0; cuda_decoder_families[f]; f++)
                cuda_decoder_run(gpu, cuda_decoder_families[f], seed, print_result, &t);
            ops_destroy(gpu);
            /* matmul_q's tensor-core path again with bf16 tiles */
            if ((gpu = ops_cuda_create(0, OPS_BF16, err, sizeof err))) {
                printf("cuda decoder ops, bf16 backend (matmul_q's tensor-core tiles in bf16):\n");
                cuda_decoder_run(gpu, "matmul_q_mma", seed, print_result, &t);
                cuda_decoder_run(gpu, "invariance", seed, print_result, &t);
                ops_destroy(gpu);
            }
        } else if (argc >= 2) { /* with no family named, the dtype loop above already counted it */
            printf("FAIL decoder: no CUDA backend: %s\n", err);
            t.checks++;
            tally_fail(&t, "decoder: no CUDA backend: %s", err);
        }
    }
    ops_destroy(cpu);
    if (t.failed) printf("gpu-parity: failed checks%s:\n", t.failed > RECAP_MAX ? " (the first ones)" : "");
    for (int i = 0; i < t.failed && i < RECAP_MAX; i++) printf("  %s\n", t.recap[i]);
    printf("gpu-parity: %d checks, %d passed, %d failed (seed %llu)\n", t.checks, t.checks - t.failed, t.failed,
           (unsigned long long)seed);
    return t.failed ? 1 : 0;
}
