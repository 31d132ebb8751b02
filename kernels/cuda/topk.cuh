/* kernels/cuda/topk.cuh - similarity top-k on the CUDA backend (term expansion).
 *
 * The contract is ops->similarity_topk's in kernels/ops.h: scores = Q (nq,D)
 * fp32 @ X (N,D)^T with X in the backend's dtype, then the k best per query
 * (k <= min(N, 1000)), best first, ties by the lower index. Scores come from
 * one cuBLASLt GEMM per chunk of queries and index rows (fp32: fp32 compute,
 * no TF32; bf16: Q converted to bf16 in the workspace, fp32 accumulation and
 * output). Selection is our own kernel: each block takes a
 * segment of one query's scores, finds the k-th largest by a 4-pass radix
 * select in shared memory, gathers and bitonic-sorts its k best; segments'
 * results are then merged by the same kernel until one remains per query.
 *
 * The workspace (device memory, from the caller) is bounded whatever nq is:
 * queries are processed in chunks sized to it.
 *
 * Layers: topk_cuda_run is the launcher over an explicit stream and cuBLASLt
 * handle; the ops entries (cuda_similarity_topk, cuda_topk_workspace) take them
 * from the backend. All launches are asynchronous on the stream.
 */
#ifndef SLUICE_KERNELS_CUDA_TOPK_CUH
#define SLUICE_KERNELS_CUDA_TOPK_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/ops.h"

/* Bytes of device workspace topk_cuda_run needs for these sizes. */
size_t topk_cuda_workspace(ops_dtype_t dtype, int nq, int N, int k);

/* What the launcher runs on: the backend's stream and cuBLASLt handle with
 * its scratch (shared with the backend's other GEMMs: one stream, in order). */
typedef struct {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;        /* device */
    size_t lt_workspace_bytes; /* bytes */
} topk_cuda_ctx_t;

/* Enqueue the whole op on ctx->stream. Q, X, out_* and workspace are device
 * pointers. Returns 0 or a negative OPS_E* code with the failing statement,
 * file and line in err. */
int topk_cuda_run(const topk_cuda_ctx_t *ctx, ops_dtype_t dtype, int32_t *out_idx, float *out_score,
                  const float *Q, const void *X, int nq, int N, int D, int k, void *workspace, char *err,
                  size_t errlen);

#endif
