/* kernels/cpu/cpu_internal.h - state and helpers shared by the CPU backend's files.
 * Not part of the ops interface: only the files of kernels/cpu include it. */
#ifndef SLUICE_CPU_INTERNAL_H
#define SLUICE_CPU_INTERNAL_H

#include <stddef.h>
#include "kernels/cpu/threadpool.h"
#include "kernels/ops.h"

typedef struct {
    int threads;                 /* pool size, the caller included */
    ops_cpu_threadpool_t *pool;  /* our ops run here; OpenBLAS runs single-threaded inside it */
    float **scratch;             /* (threads) per-worker attention scratch */
    size_t *scratch_floats;      /* (threads) capacity of each, floats */
} ops_cpu_impl_t;

/* Writes a message to ops->err and returns code. */
int ops_cpu_fail(ops_t *ops, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Checks a packed-batch offset table: seq_off[0] = 0, non-decreasing, B >= 0.
 * Returns the longest sequence, or a negative OPS_E* code with ops->err set.
 * what names the op in the message. */
int ops_cpu_check_seq_off(ops_t *ops, const char *what, const int32_t *seq_off, int B);

/* out(rows,cols) = in(rows,K) @ W(cols,K)^T, leading dimensions in floats
 * (cpu_gemm.c). Single-threaded: callers split the work. Each element's sum
 * is in one order fixed by K (batch invariant). */
void ops_cpu_gemm_nt(float *out, int ldo, const float *in, int lda, const float *W, int ldw, int rows, int cols,
                     int K);
/* The instruction-set path ops_cpu_gemm_nt runs on here: "avx512", "avx2" or "c". */
const char *ops_cpu_gemm_path(void);
/* ops_cpu_gemm_nt on a named path (tests and benchmarks compare them);
 * -1 when this CPU lacks it. */
int ops_cpu_gemm_nt_on(const char *path, float *out, int ldo, const float *in, int lda, const float *W, int ldw,
                       int rows, int cols, int K);

/* The op entries, one family per file. */
int ops_cpu_embed_ln(ops_t *ops, void *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                     const float *pos, const float *type, const float *gamma, const float *beta, int T, int H,
                     float eps);
int ops_cpu_add_ln(ops_t *ops, void *out, const void *x, const float *bias, const void *residual,
                   const float *gamma, const float *beta, int T, int H, float eps);
int ops_cpu_matmul(ops_t *ops, void *out, const void *in, const void *W, const float *bias, int T, int K, int N,
                   ops_epilogue_t epi);
int ops_cpu_attention(ops_t *ops, void *out, const void *qkv, const float *qkv_bias, const int32_t *seq_off, int B,
                      int max_len, int n_heads, int head_dim, float scale);
int ops_cpu_mean_pool(ops_t *ops, float *out, const void *x, const int32_t *seq_off, int B, int H,
                      int l2_normalize);

#endif
