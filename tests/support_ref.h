/* tests/support_ref.h - naive float64 references for every op in kernels/ops.h,
 * plus the random inputs and error measure the op tests share.
 *
 * Linked into every test binary (the Makefile adds tests/support*.c). The
 * references take float32 host inputs (what a backend gets) and compute in
 * double, writing double outputs; shapes and layouts are exactly those of the
 * matching op in kernels/ops.h. They are written for clarity, not speed.
 */
#ifndef SLUICE_TEST_SUPPORT_REF_H
#define SLUICE_TEST_SUPPORT_REF_H

#include <stddef.h>
#include <stdint.h>

/* ---- random inputs (splitmix64: tiny, reproducible from the printed seed) ---- */
typedef struct {
    uint64_t state;
} ref_rng_t;

/* A seed for this run: $SLUICE_TEST_SEED when set (to replay a failure), else
 * time-based. Print it in every failure message. */
uint64_t ref_seed_from_env_or_time(void);
void ref_rng_init(ref_rng_t *rng, uint64_t seed);
uint64_t ref_rng_next(ref_rng_t *rng);
double ref_rng_uniform(ref_rng_t *rng, double lo, double hi); /* [lo, hi) */
int ref_rng_int(ref_rng_t *rng, int lo, int hi);              /* [lo, hi] */
void ref_fill_uniform(ref_rng_t *rng, float *x, size_t n, double lo, double hi);
void ref_fill_nan(float *x, size_t n); /* poison an output before an op writes it */

/* ||out - ref|| / ||ref|| over n elements (||ref|| = 0: the plain norm of the
 * difference). INFINITY when out holds a NaN or an infinity, so NaN always fails. */
double ref_rel_error(const float *out, const double *ref, size_t n);
/* Index of the first non-finite element of out, or -1. */
long ref_first_nonfinite(const float *out, size_t n);

/* ---- op references (same contracts as kernels/ops.h) ---- */

/* out(T,H) = LayerNorm(word[ids[t]] + pos[pos_ids[t]] + type[0]) * gamma + beta */
void ref_embed_ln(double *out, const int32_t *ids, const int32_t *pos_ids, const float *word, const float *pos,
                  const float *type, const float *gamma, const float *beta, int T, int H, double eps);

/* out(T,N) = epi(in(T,K) @ W(N,K)^T + bias(N)); epi is an ops_epilogue_t
 * (0 none, 1 bias, 2 bias + gelu_erf); bias unused with 0. */
void ref_matmul(double *out, const float *in, const float *W, const float *bias, int T, int K, int N, int epi);

/* 0.5 x (1 + erf(x / sqrt 2)) */
double ref_gelu_erf(double x);

/* out(T,H) = LayerNorm(x + bias + residual) * gamma + beta; bias may be NULL. */
void ref_add_ln(double *out, const float *x, const float *bias, const float *residual, const float *gamma,
                const float *beta, int T, int H, double eps);

/* out(T,H) = per sequence and head softmax(q k^T * scale) v, qkv(T, 3H) packed
 * [q | k | v] per token plus qkv_bias (3H, may be NULL: none); seq_off (B+1). */
void ref_attention(double *out, const float *qkv, const float *qkv_bias, const int32_t *seq_off, int B, int n_heads,
                   int head_dim, double scale);

/* out(B,H) = mean of x(T,H) over each sequence, then / max(L2 norm, 1e-12) when l2. */
void ref_mean_pool(double *out, const float *x, const int32_t *seq_off, int B, int H, int l2_normalize);

#endif
