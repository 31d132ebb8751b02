/* tests/test_topk.c - ops->similarity_topk against a brute-force full sort, on
 * every backend this binary has: the CPU always, CUDA fp32, bf16 and fp16 when a GPU
 * is usable (skipped, and saying so, when not). The data is fresh each run
 * (the seed is in any failure message); see tests/support_topk.h. */
#include <criterion/criterion.h>
#include "kernels/ops.h"
#include "tests/support_topk.h"

static void topk_run_cases(ops_t *ops) {
    for (int i = 0; i < topk_parity_n_cases; i++) {
        char msg[512];
        int rc = topk_parity_check(ops, &topk_parity_cases[i], msg, sizeof msg);
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

Test(topk, cuda_fp16, .timeout = 120) {
    ops_t *ops = topk_cuda_or_skip(OPS_F16);
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
