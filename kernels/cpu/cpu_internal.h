/* kernels/cpu/cpu_internal.h - state and helpers shared by the CPU backend's files.
 * Not part of the ops interface: only the files of kernels/cpu include it. */
#ifndef SLUICE_CPU_INTERNAL_H
#define SLUICE_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

/* Grows every worker's scratch (impl->scratch[w]) to hold `floats`; called on
 * the calling thread before the tasks start. what names the op in the message. */
int ops_cpu_ensure_scratch(ops_t *ops, const char *what, size_t floats);

/* Each of rows rows of L scores (contiguous): exp(x - max) in place, the
 * row's sum in sums[r]. The order of the max and the sum depends on L alone
 * (CPU_VEC_BLOCK lanes, then the tail), so a row's result never depends on
 * the other rows. (cpu_attention.c) */
void ops_cpu_softmax_rows(float *restrict s, float *restrict sums, int rows, int L);

/* Which kernels the CPU backend runs, the decoder ops and the encoder's GEMM
 * alike: the best the CPU has (AVX-512F + DQ, else AVX2 + FMA + F16C, else
 * portable C), capped by $SLUICE_CPU_ISA ("portable", "avx2": how the tests
 * reach the other paths on a newer CPU). Read once per process, so a process
 * never mixes the paths' (different) summation orders. */
enum { OPS_CPU_PORTABLE = 0, OPS_CPU_AVX2 = 1, OPS_CPU_AVX512 = 2 };
int ops_cpu_isa(void);
static inline int ops_cpu_has_avx2(void) { return ops_cpu_isa() >= OPS_CPU_AVX2; }

/* IEEE half to float, exact (every half is a float). */
static inline float ops_cpu_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float */
        f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* out(rows,cols) = in(rows,K) @ W(cols,K)^T, leading dimensions in floats
 * (cpu_gemm.c). Single-threaded: callers split the work. Each element's sum
 * is in one order fixed by K (batch invariant). */
void ops_cpu_gemm_nt(float *out, int ldo, const float *in, int lda, const float *W, int ldw, int rows, int cols,
                     int K);
/* The instruction-set path ops_cpu_gemm_nt runs on here (ops_cpu_isa's):
 * "avx512", "avx2" or "c". */
const char *ops_cpu_gemm_path(void);
/* ops_cpu_gemm_nt on a named path (tests and benchmarks compare them);
 * -1 when this CPU lacks it or $SLUICE_CPU_ISA caps it away. */
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

/* Decoder ops (Llama family): cpu_quant.c and cpu_decoder.c. */
int ops_cpu_matmul_q(ops_t *ops, float *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N);
int ops_cpu_embed_q(ops_t *ops, float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H);
int ops_cpu_add_rms_norm(ops_t *ops, float *out, float *resid, const float *delta, const float *w, int T, int H,
                         float eps);
int ops_cpu_rope(ops_t *ops, float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
                 float theta);
int ops_cpu_silu_mul(ops_t *ops, float *out, const float *gu, int T, int F);
int ops_cpu_argmax(ops_t *ops, int32_t *out_idx, const float *x, int rows, int n);
int ops_cpu_kv_store(ops_t *ops, void *k_cache, void *v_cache, const float *k, const float *v, int row_stride,
                     const int32_t *slot, int T, int n_kv_heads, int head_dim);
int ops_cpu_attention_paged(ops_t *ops, float *out, const float *q, int q_stride, const void *k_cache,
                            const void *v_cache, const int32_t *block_table, int max_blocks, const int32_t *seq_off, int T,
                            const int32_t *ctx_len, int B, int max_ctx, int n_heads, int n_kv_heads, int head_dim,
                            int block_size, float scale);

#endif
