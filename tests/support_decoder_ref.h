/* tests/support_decoder_ref.h - plain-C references for the decoder ops of
 * kernels/ops.h (matmul_q, embed_q, add_rms_norm, rope, silu_mul, kv_store,
 * attention_paged), plus random GGUF-format weights to feed them.
 *
 * Shared by the CPU op tests and (later) the CUDA parity tests. Weights are
 * dequantized to float32 with exactly gguf.h's formulas (bit-identical to the
 * gguf package's dequantize on every tensor of SmolLM2; d*q is exact in float,
 * so Q4_1's d*q + m rounds once, fused or not), then every op runs as naive
 * loops in double. Inputs are host buffers; layouts are those of the matching op.
 */
#ifndef SLUICE_TEST_SUPPORT_DECODER_REF_H
#define SLUICE_TEST_SUPPORT_DECODER_REF_H

#include <stddef.h>
#include <stdint.h>
#include "kernels/ops.h"
#include "tests/support_ref.h"

/* IEEE half to float (written from the format's definition, not shared with a backend). */
float dref_half_to_float(uint16_t h);
/* Float to the nearest half (round to nearest even; values in range only). */
uint16_t dref_float_to_half(float f);

/* Bytes of one row of K values in wtype. */
size_t dref_row_bytes(ops_wtype_t wtype, int K);
/* One row of K values at row, dequantized to float32 by gguf.h's formulas. */
void dref_dequant_row(float *out, const void *row, ops_wtype_t wtype, int K);

/* N rows of K random weights in wtype (a malloc'ed buffer of N * row_bytes):
 * block scales d in [0.002, 0.02], Q4_1 mins in [-0.15, 0], levels uniform;
 * F16/F32 values in [-0.1, 0.1]. */
void *dref_random_weights(ref_rng_t *rng, ops_wtype_t wtype, int N, int K);

/* out(T,N) = x(T,K) @ dequant(W)(N,K)^T, in double. */
void dref_matmul_q(double *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N);

/* out(T,H) = dequant(table row ids[t]). */
void dref_embed_q(float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H);

/* resid_out(T,H) = resid + delta (float adds, delta may be NULL);
 * out(T,H) = resid_out / sqrt(mean(resid_out^2) + eps) * w, in double. */
void dref_add_rms_norm(double *out, float *resid_out, const float *resid, const float *delta, const float *w, int T,
                       int H, double eps);

/* x(T, row_stride) rotated as ops->rope describes (angle in float as the
 * contract says, the rotation in double), into out (same layout, double). */
void dref_rope(double *out, const float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
               float theta);

/* out(T,F) = silu(gu[:, :F]) * gu[:, F:], in double. */
void dref_silu_mul(double *out, const float *gu, int T, int F);

/* Causal GQA over a paged float32 cache, same arguments as ops->attention_paged. */
void dref_attention_paged(double *out, const float *q, int q_stride, const float *k_cache, const float *v_cache,
                          const int32_t *block_table, int max_blocks, const int32_t *seq_off, const int32_t *ctx_len,
                          int B, int n_heads, int n_kv_heads, int head_dim, int block_size, double scale);

#endif
