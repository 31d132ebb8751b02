/* tests/support_topk.h - the similarity top-k parity check, shared by the
 * Criterion suite (tests/test_topk.c) and the standalone GPU driver.
 *
 * One call makes fresh random data, runs ops->similarity_topk through the
 * backend's own memory (mem_alloc / upload_weight / download), and compares it
 * with a brute-force reference: float64 scores of every row, a full sort, best
 * first, equal scores by lower index.
 *
 *   levels > 0: entries are (r mod levels - levels/2) / 4 for random r (exact
 *               in bf16 and fp16, every dot product exact in fp32), so scores tie
 *               often and the result must equal the reference exactly, ties
 *               included.
 *   levels = 0: unit-norm Gaussian rows; scores must match the reference within
 *               tol, order must hold, and nothing better than the k-th
 *               reference score may be missing (by more than tol).
 */
#ifndef SLUICE_TESTS_SUPPORT_TOPK_H
#define SLUICE_TESTS_SUPPORT_TOPK_H

#include <stddef.h>
#include "kernels/ops.h"

typedef struct {
    int nq, N, D, k;
    int levels;          /* see above */
    unsigned long seed;  /* 0: a fresh one from the clock (printed on failure) */
} topk_case_t;

/* The cases every backend is checked on: k = 1, 10, 1000 and N, one query and
 * several query blocks, heavy ties, real-valued rows; N is never a multiple of
 * a backend's block size. */
extern const topk_case_t topk_parity_cases[];
extern const int topk_parity_n_cases;

/* 0 when the backend agrees with the reference; otherwise nonzero with the
 * first disagreement (and the seed) in msg. */
int topk_parity_check(ops_t *ops, const topk_case_t *c, char *msg, size_t msglen);

#endif
