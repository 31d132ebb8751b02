/* tests/test_ops_cuda.c - the CUDA backend: it must decline cleanly without
 * a GPU, and on a GPU match the CPU backend on fresh random inputs (the checks
 * live in tests/support_cuda_parity.c, shared with bench/gpu_parity.c).
 * Without a usable GPU every GPU test reports itself skipped, with the reason. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/ops.h"
#include "tests/support_cuda_parity.h"
#include "tests/support_ref.h"

TestSuite(ops_cuda, .timeout = 300);

/* A CUDA backend of dtype, or the test skipped with the reason. */
static ops_t *gpu_or_skip(ops_dtype_t dtype) {
    char err[512];
    ops_t *gpu = ops_cuda_create(0, dtype, err, sizeof err);
    if (!gpu) cr_skip_test("no CUDA backend (%s): %s", ops_dtype_name(dtype), err);
    return gpu;
}

/* The CUDA=0 stand-in declines everything with one fixed line: nothing of the
 * backend to check there, so the tests of its refusals skip. */
static void cuda_build_or_skip(void) {
    if (!ops_cuda_built()) cr_skip_test("built without the CUDA backend (CUDA=0): no refusal path to check");
}

Test(ops_cuda, create_declines_with_one_line_or_fills_the_table) {
    cuda_build_or_skip();
    for (int d = 0; d < 3; d++) { /* fp32, bf16, fp16 */
        char err[512];
        memset(err, 'x', sizeof err);
        ops_t *gpu = ops_cuda_create(0, (ops_dtype_t)d, err, sizeof err);
        if (!gpu) {
            cr_assert(strlen(err) > 0 && strlen(err) < sizeof err, "no reason given");
            cr_assert_null(strchr(err, '\n'), "the reason must be one line: %s", err);
            cr_log_info("ops_cuda_create(%s) declined: %s", ops_dtype_name((ops_dtype_t)d), err);
            continue;
        }
        cr_assert_str_eq(gpu->name, "cuda");
        cr_assert_eq(gpu->dtype, (ops_dtype_t)d);
        void (*const entries[])(void) = {
            (void (*)(void))gpu->destroy,       (void (*)(void))gpu->clone,        (void (*)(void))gpu->mem_alloc,
            (void (*)(void))gpu->mem_free,      (void (*)(void))gpu->mem_info,     (void (*)(void))gpu->upload,
            (void (*)(void))gpu->download,      (void (*)(void))gpu->upload_weight, (void (*)(void))gpu->sync,
            (void (*)(void))gpu->host_alloc,    (void (*)(void))gpu->host_free,    (void (*)(void))gpu->embed_ln,
            (void (*)(void))gpu->matmul,        (void (*)(void))gpu->add_ln,       (void (*)(void))gpu->attention,
            (void (*)(void))gpu->mean_pool,     (void (*)(void))gpu->capture_begin, (void (*)(void))gpu->capture_end,
            (void (*)(void))gpu->graph_launch,  (void (*)(void))gpu->graph_destroy, (void (*)(void))gpu->topk_workspace,
            (void (*)(void))gpu->similarity_topk};
        for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
            cr_assert_not_null(entries[i], "vtable entry %zu is NULL", i);
        ops_destroy(gpu);
    }
}

/* The dtype is checked before any device is asked for, so this half holds on a
 * machine without a GPU too; device 999 is refused as absent, or for want of
 * any device. */
Test(ops_cuda, unknown_dtype_and_device_are_refused) {
    cuda_build_or_skip();
    char err[512] = "";
    cr_assert_null(ops_cuda_create(0, (ops_dtype_t)7, err, sizeof err));
    cr_assert(strstr(err, "unknown dtype 7"), "the refusal does not name the dtype: %s", err);
    err[0] = '\0';
    cr_assert_null(ops_cuda_create(999, OPS_F32, err, sizeof err));
    cr_assert(strstr(err, "CUDA device 999 does not exist") || strstr(err, "no CUDA device") ||
                  strstr(err, "no usable CUDA device"),
              "device 999: %s", err);
}

Test(ops_cuda, clone_streams_share_memory_and_bad_shapes_are_refused) {
    ops_t *gpu = gpu_or_skip(OPS_F32);
    ops_t *sib = gpu->clone(gpu);
    cr_assert_not_null(sib, "clone: %s", gpu->err);
    float in[1000], out[1000];
    for (int i = 0; i < 1000; i++) in[i] = (float)i * 0.5f - 7.0f, out[i] = 0.0f;
    float *pinned = sib->host_alloc(sib, sizeof in);
    cr_assert_not_null(pinned, "host_alloc: %s", sib->err);
    void *d = gpu->mem_alloc(gpu, sizeof in);
    cr_assert_not_null(d, "mem_alloc: %s", gpu->err);
    cr_assert_eq(gpu->upload(gpu, d, in, sizeof in), 0, "%s", gpu->err);
    cr_assert_eq(gpu->sync(gpu), 0, "%s", gpu->err);
    cr_assert_eq(sib->download(sib, pinned, d, sizeof in), 0, "%s", sib->err);
    cr_assert_eq(sib->sync(sib), 0, "%s", sib->err);
    memcpy(out, pinned, sizeof out);
    cr_assert_arr_eq(out, in, sizeof in, "a sibling must see its parent's memory");
    size_t free_b = 0, total_b = 0;
    cr_assert_eq(gpu->mem_info(gpu, &free_b, &total_b), 0, "%s", gpu->err);
    cr_assert(free_b > 0 && free_b <= total_b);
    /* Refused shapes: an error value and a message, never a crash. */
    cr_assert_eq(gpu->attention(gpu, d, d, NULL, d, 1, 513, 1, 32, 1.0f), OPS_EINVAL);
    cr_assert(strstr(gpu->err, "attention") != NULL, "%s", gpu->err);
    cr_assert_eq(gpu->matmul(gpu, d, d, d, NULL, 1, 4, 4, OPS_EPI_NONE), OPS_EINVAL, "out aliasing in");
    cr_assert_eq(gpu->matmul(gpu, d, (char *)d + 64, d, NULL, 1, 4, 4, OPS_EPI_BIAS), OPS_EINVAL, "bias missing");
    cr_assert_eq(gpu->sync(gpu), 0, "a refused op must not poison the stream: %s", gpu->err);
    gpu->mem_free(gpu, d);
    sib->host_free(sib, pinned);
    ops_destroy(sib);
    ops_destroy(gpu);
}

typedef struct failures {
    int n;
    char first[800];
} failures_t;

static void log_result(const cuda_parity_result_t *r, void *ctx) {
    failures_t *f = ctx;
    cr_log_info("%s %s %s: rel_err %.2e (tol %.0e) %s", r->passed ? "PASS" : "FAIL", ops_dtype_name(r->dtype),
                r->name, r->rel_err, r->tol, r->msg);
    if (!r->passed && f->n++ == 0) snprintf(f->first, sizeof f->first, "%s: %s", r->name, r->msg);
}

static void parity(ops_dtype_t dtype, const char *family) {
    ops_t *gpu = gpu_or_skip(dtype);
    ops_t *cpu = ops_cpu_create(0);
    cr_assert_not_null(cpu);
    uint64_t seed = ref_seed_from_env_or_time();
    failures_t f = {0, ""};
    int rc = cuda_parity_run(gpu, cpu, family, seed, log_result, &f);
    cr_assert_geq(rc, 0, "unknown family %s", family);
    cr_assert_eq(rc, 0, "%s %s: %d check(s) failed, first: %s [seed %llu]", ops_dtype_name(dtype), family, rc,
                 f.first, (unsigned long long)seed);
    ops_destroy(cpu);
    ops_destroy(gpu);
}

/* One test per family and dtype, so a failure names both. */
#define PARITY_TESTS(family)                                     \
    Test(ops_cuda, family##_fp32) { parity(OPS_F32, #family); }  \
    Test(ops_cuda, family##_bf16) { parity(OPS_BF16, #family); } \
    Test(ops_cuda, family##_fp16) { parity(OPS_F16, #family); }

PARITY_TESTS(embed_ln)
PARITY_TESTS(matmul)
PARITY_TESTS(add_ln)
PARITY_TESTS(attention)
PARITY_TESTS(mean_pool)
PARITY_TESTS(graph)

/* The plain kernels (fallback GEMM, CUDA-core attention), forced; each
 * Criterion test runs in its own process, so the variable stays in it. */
#define FALLBACK_TESTS(family)                                                                  \
    Test(ops_cuda, family##_fallback_fp32) {                                                    \
        setenv("SLUICE_CUDA_FALLBACK", "1", 1);                                                 \
        parity(OPS_F32, #family);                                                               \
    }                                                                                           \
    Test(ops_cuda, family##_fallback_bf16) {                                                    \
        setenv("SLUICE_CUDA_FALLBACK", "1", 1);                                                 \
        parity(OPS_BF16, #family);                                                              \
    }                                                                                           \
    Test(ops_cuda, family##_fallback_fp16) {                                                    \
        setenv("SLUICE_CUDA_FALLBACK", "1", 1);                                                 \
        parity(OPS_F16, #family);                                                               \
    }

FALLBACK_TESTS(matmul)
FALLBACK_TESTS(attention)
