/* kernels/cpu/topk.h - similarity top-k on the CPU backend (term expansion).
 *
 * The two entries the CPU ops table points its topk_workspace and
 * similarity_topk at; the contract (shapes, order, ties) is the one in
 * kernels/ops.h. X is float32 (the CPU backend's only dtype). Scores are one
 * cblas_sgemm per block of the index, so the workspace stays bounded whatever N
 * is; selection keeps a size-k heap per query (no sort of N scores).
 *
 * Thread-safety: reentrant; the workspace belongs to the call.
 */
#ifndef SLUICE_KERNELS_CPU_TOPK_H
#define SLUICE_KERNELS_CPU_TOPK_H

#include <stddef.h>
#include <stdint.h>
#include "kernels/ops.h"

size_t cpu_topk_workspace(ops_t *ops, int nq, int N, int k);
int cpu_similarity_topk(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q,
                        const void *X, int nq, int N, int D, int k, void *workspace);

#endif
