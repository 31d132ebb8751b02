/* tests/test_ops_decoder_cuda.c - the CUDA backend's decoder ops against the
 * plain-C references, on fresh random inputs (the checks live in
 * tests/support_cuda_decoder.c, shared with bench/gpu_parity.c's "decoder"
 * family). Without a usable GPU every test reports itself skipped with the
 * reason, as tests/test_ops_cuda.c does. SLUICE_TEST_SEED replays a run. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "kernels/ops.h"
#include "tests/support_cuda_decoder.h"
#include "tests/support_ref.h"

TestSuite(ops_decoder_cuda, .timeout = 300);

static void log_failure(const cuda_parity_result_t *r, void *ctx) {
    (void)ctx;
    if (!r->passed) cr_log_error("%s: %s", r->name, r->msg);
}

/* Every check of one family on a fresh fp16 CUDA backend (the decoder ops
 * are float32 whatever the dtype; the KV cache is fp16), or skipped. */
static void run_family(const char *family) {
    char err[512];
    ops_t *gpu = ops_cuda_create(0, OPS_F16, err, sizeof err);
    if (!gpu) cr_skip_test("no CUDA backend: %s", err);
    cr_assert_eq(gpu->kv_dtype, OPS_F16);
    cr_assert(gpu->matmul_q && gpu->embed_q && gpu->add_rms_norm && gpu->rope && gpu->silu_mul && gpu->kv_store &&
                  gpu->attention_paged && gpu->argmax,
              "a decoder op is missing from the CUDA backend");
    uint64_t seed = ref_seed_from_env_or_time();
    int failed = cuda_decoder_run(gpu, family, seed, log_failure, NULL);
    ops_destroy(gpu);
    cr_assert_neq(failed, -1, "unknown family %s", family);
    cr_assert_eq(failed, 0, "%s: %d check(s) failed [seed %llu]", family, failed, (unsigned long long)seed);
}

Test(ops_decoder_cuda, matmul_q_every_type_and_shape) { run_family("matmul_q"); }
Test(ops_decoder_cuda, matmul_q_tensor_cores_within_16_bit_rounding) { run_family("matmul_q_mma"); }
Test(ops_decoder_cuda, embed_q_is_exact) { run_family("embed_q"); }
Test(ops_decoder_cuda, add_rms_norm_with_residual_and_aliasing) { run_family("add_rms_norm"); }
Test(ops_decoder_cuda, rope_shapes_strides_and_long_positions) { run_family("rope"); }
Test(ops_decoder_cuda, silu_mul_shapes) { run_family("silu_mul"); }
Test(ops_decoder_cuda, kv_store_writes_fp16_bits) { run_family("kv_store"); }
Test(ops_decoder_cuda, attention_paged_gqa_holes_splits) { run_family("attention_paged"); }
Test(ops_decoder_cuda, rows_and_sequences_are_bit_identical_whatever_the_batch) { run_family("invariance"); }
Test(ops_decoder_cuda, argmax_is_exact_with_ties_and_nan) { run_family("argmax"); }
Test(ops_decoder_cuda, bad_arguments_are_refused) { run_family("refusals"); }

/* The tensor-core path again with bf16 tiles (an OPS_BF16 backend), and its invariance. */
Test(ops_decoder_cuda, matmul_q_tensor_cores_bf16) {
    char err[512];
    ops_t *gpu = ops_cuda_create(0, OPS_BF16, err, sizeof err);
    if (!gpu) cr_skip_test("no CUDA backend: %s", err);
    uint64_t seed = ref_seed_from_env_or_time();
    int failed = cuda_decoder_run(gpu, "matmul_q_mma", seed, log_failure, NULL);
    failed += cuda_decoder_run(gpu, "invariance", seed, log_failure, NULL);
    ops_destroy(gpu);
    cr_assert_eq(failed, 0, "%d check(s) failed [seed %llu]", failed, (unsigned long long)seed);
}

/* Every family is run by a test above (a new family without one fails here). */
Test(ops_decoder_cuda, every_family_has_a_test) {
    int n = 0;
    while (cuda_decoder_families[n]) n++;
    cr_assert_eq(n, 11, "cuda_decoder_families has %d entries; add a Test for the new one", n);
}
