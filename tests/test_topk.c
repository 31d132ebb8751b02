/* tests/test_topk.c - ops->similarity_topk against a brute-force full sort, on
 * every backend this binary has: the CPU always, CUDA fp32 and bf16 when a GPU
 * is usable (skipped, and saying so, when not). The data is fresh each run
 * (the seed is in any failure message); see tests/support_topk.h. */
#include <criterion/criterion.h>
#include "kernels/ops.h"
#include "tests/support_topk.h"

/* N is never a multiple of a block size (CPU 4096 rows / 256 queries, CUDA
 * segments); levels 3 makes most scores tie. */
static topk_case_t topk_cases[] = {
    {.nq = 5, .N = 5003, .D = 48, .k = 1, .levels = 3},
    {.nq = 9, .N = 10007, .D = 48, .k = 10, .levels = 5},
    {.nq = 4, .N = 9001, .D = 32, .k = 1000, .levels = 3},
    {.nq = 3, .N = 777, .D = 40, .k = 777, .levels = 3},     /* k = N */
    {.nq = 2, .N = 1000, .D = 8, .k = 1000, .levels = 3},    /* k = N = 1000 */
    {.nq = 1, .N = 12345, .D = 64, .k = 100, .levels = 3},   /* one query */
    {.nq = 300, .N = 4500, .D = 24, .k = 37, .levels = 7},   /* several query blocks */
    {.nq = 3, .N = 1, .D = 16, .k = 1, .levels = 3},         /* one row */
    {.nq = 2, .N = 70001, .D = 16, .k = 1000, .levels = 2},  /* many segments, heavy ties */
    {.nq = 16, .N = 20011, .D = 384, .k = 100, .levels = 0}, /* real-valued unit vectors */
    {.nq = 7, .N = 3001, .D = 100, .k = 1000, .levels = 0},
};

static void topk_run_cases(ops_t *ops) {
    for (size_t i = 0; i < sizeof topk_cases / sizeof topk_cases[0]; i++) {
        char msg[512];
        int rc = topk_parity_check(ops, &topk_cases[i], msg, sizeof msg);
        cr_expect_eq(rc, 0, "%s", msg);
    }
}

static ops_t *topk_cuda_or_skip(ops_dtype_t dtype) {
    char err[256];
    ops_t *ops = ops_cuda_create(0, dtype, err, sizeof err);
    if (!ops) cr_skip_test("no CUDA backend: %s", err);
    return ops;
}

Test(topk, cpu, .timeout = 120) {
    ops_t *ops = ops_cpu_create(0);
    cr_assert_not_null(ops);
    topk_run_cases(ops);
    ops_destroy(ops);
}

/* Three pool threads split the index into uneven ranges whose heaps are merged. */
Test(topk, cpu_three_threads, .timeout = 120) {
    ops_t *ops = ops_cpu_create(3);
    cr_assert_not_null(ops);
    topk_run_cases(ops);
    ops_destroy(ops);
}

Test(topk, cuda_f32, .timeout = 120) {
    ops_t *ops = topk_cuda_or_skip(OPS_F32);
    topk_run_cases(ops);
    ops_destroy(ops);
}

Test(topk, cuda_bf16, .timeout = 120) {
    ops_t *ops = topk_cuda_or_skip(OPS_BF16);
    topk_run_cases(ops);
    ops_destroy(ops);
}

/* k outside 1..min(N, 1000) is refused with a message, on every backend. */
static void topk_expect_refusals(ops_t *ops) {
    int N = 1200, D = 4, nq = 1;
    void *X = ops->mem_alloc(ops, (size_t)N * D * ops_dtype_size(ops->dtype));
    void *Q = ops->mem_alloc(ops, (size_t)nq * D * sizeof(float));
    void *idx = ops->mem_alloc(ops, 2000 * sizeof(int32_t));
    void *score = ops->mem_alloc(ops, 2000 * sizeof(float));
    void *ws = ops->mem_alloc(ops, ops->topk_workspace(ops, nq, N, 1000));
    cr_assert(X && Q && idx && score && ws);
    int bad_k[] = {0, -1, 1001};
    for (size_t i = 0; i < sizeof bad_k / sizeof bad_k[0]; i++) {
        ops->err[0] = '\0';
        cr_expect_eq(ops->similarity_topk(ops, idx, score, Q, X, nq, N, D, bad_k[i], ws), OPS_EINVAL,
                     "k=%d accepted", bad_k[i]);
        cr_expect_neq(ops->err[0], '\0', "k=%d refused without a message", bad_k[i]);
    }
    cr_expect_eq(ops->similarity_topk(ops, idx, score, Q, X, nq, 10, D, 11, ws), OPS_EINVAL,
                 "k > N accepted");
    ops->mem_free(ops, ws);
    ops->mem_free(ops, score);
    ops->mem_free(ops, idx);
    ops->mem_free(ops, Q);
    ops->mem_free(ops, X);
}

Test(topk, cpu_refuses_bad_k) {
    ops_t *ops = ops_cpu_create(0);
    cr_assert_not_null(ops);
    topk_expect_refusals(ops);
    ops_destroy(ops);
}

Test(topk, cuda_refuses_bad_k) {
    ops_t *ops = topk_cuda_or_skip(OPS_F32);
    topk_expect_refusals(ops);
    ops_destroy(ops);
}
