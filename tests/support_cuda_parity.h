/* tests/support_cuda_parity.h - parity checks of the CUDA backend against the
 * CPU backend, written once as plain C so that both the Criterion suite
 * (tests/test_ops_cuda.c) and the standalone GPU driver (bench/gpu_parity.c,
 * for machines without Criterion) run exactly the same checks.
 *
 * Each check draws fresh random inputs (from the seed given, so a failure
 * replays), gives both backends the same values (rounded to bf16 or fp16
 * first when the CUDA backend is, so only the kernel's own rounding is
 * measured), poisons both outputs with NaN, runs the op on each, downloads,
 * converts 16-bit results to float on the host and measures
 * ||cuda - cpu|| / ||cpu||. A check passes when the op succeeded, every output
 * element was written and is finite, and the error is within the tolerance:
 * 1e-5 for fp32, 1e-2 for bf16, 2e-3 for fp16.
 *
 * Shapes per family: 1-token sequences, a 512-token sequence, odd sizes,
 * many short sequences packed, (matmul) buffers misaligned by one element, and
 * (attention) every shape without and with a qkv bias.
 * Not thread-safe with respect to the ops_t handed in (uses them exclusively).
 */
#ifndef SLUICE_TEST_SUPPORT_CUDA_PARITY_H
#define SLUICE_TEST_SUPPORT_CUDA_PARITY_H

#include <stdint.h>
#include "kernels/ops.h"

typedef struct cuda_parity_result {
    char name[160];  /* family and shape, e.g. "matmul T=1 K=384 N=1536 bias+gelu" */
    ops_dtype_t dtype; /* the CUDA backend's dtype */
    double rel_err;  /* ||cuda - cpu|| / ||cpu||; INFINITY when an element is not finite; NAN if not measured */
    double tol;      /* the bound rel_err had to meet */
    long bad_index;  /* first CUDA output element not written or not finite, -1 when none */
    int passed;      /* 1 when the check passed */
    char msg[600];   /* why it failed (op error, allocation, NaN...), empty when it passed */
} cuda_parity_result_t;

typedef void (*cuda_parity_report_fn)(const cuda_parity_result_t *r, void *ctx);

/* The check families, NULL-terminated: "embed_ln", "matmul", "add_ln",
 * "attention", "mean_pool", "graph" (capture a chain of ops, replay it, and
 * compare with the eager run and, after new inputs, with the CPU backend). */
extern const char *const cuda_parity_families[];

/* The relative-error bound of a dtype: 1e-5 (fp32), 1e-2 (bf16), 2e-3 (fp16). */
double cuda_parity_tolerance(ops_dtype_t dtype);

/* Runs every check of one family: gpu is a CUDA backend, cpu an
 * ops_cpu_create backend. report (may be NULL) is called after each check.
 * Returns the number of failed checks, or -1 for an unknown family. */
int cuda_parity_run(ops_t *gpu, ops_t *cpu, const char *family, uint64_t seed, cuda_parity_report_fn report,
                    void *ctx);

#endif
