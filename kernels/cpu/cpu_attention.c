/* kernels/cpu/cpu_attention.c - multi-head self-attention over packed sequences.
 *
 * One pool task per (sequence, head). A task walks its queries in blocks of
 * ATTN_QUERY_BLOCK: scores = q k^T * scale with one sgemm (q, k, v are read in
 * place from the packed qkv rows, lda = 3H), a max-subtracted softmax in
 * float, then out = p v with a second sgemm and a 1/sum row scale. Scratch is
 * one (block, L) score tile per worker, so memory grows with the longest
 * sequence, never with T^2, and any length works.
 *
 * With a qkv bias the task first copies its head's q, k and v rows plus the
 * bias into the worker's scratch (L x head_dim each, contiguous) and runs the
 * same sgemms there: qkv is the caller's and stays untouched, the values are
 * exactly what a bias epilogue on the QKV matmul would have stored (one fp32
 * add), and the copy is O(L d) against the O(L^2 d) of the products.
 */
/* Let loops with selects vectorise (see cpu_math.h). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
#endif
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_math.h"

#define ATTN_QUERY_BLOCK 64

typedef struct {
    float *out;
    const float *qkv;
    const float *bias; /* (3H) or NULL */
    const int32_t *seq_off;
    int n_heads, head_dim;
    float scale;
    float **scratch; /* per worker: ATTN_QUERY_BLOCK * max_len scores + ATTN_QUERY_BLOCK sums,
                      * then with a bias 3 * max_len * head_dim for one head's q, k, v */
    int max_len;
} attn_job_t;

/* dst(rows, d) contiguous = src rows (stride ld) + b(d). */
CPU_HOT static void copy_rows_plus_bias(float *restrict dst, const float *restrict src, const float *restrict b,
                                        int rows, int d, int ld) {
    for (int r = 0; r < rows; r++) {
        const float *restrict s = src + (size_t)r * ld;
        float *restrict o = dst + (size_t)r * d;
        for (int c = 0; c < d; c++) o[c] = s[c] + b[c];
    }
}

CPU_HOT void ops_cpu_softmax_rows(float *restrict s, float *restrict sums, int rows, int L) {
    for (int r = 0; r < rows; r++) {
        float *restrict row = s + (size_t)r * L;
        float lane[CPU_VEC_BLOCK];
        for (int k = 0; k < CPU_VEC_BLOCK; k++) lane[k] = row[0];
        int j = 0;
        for (; j + CPU_VEC_BLOCK <= L; j += CPU_VEC_BLOCK)
            for (int k = 0; k < CPU_VEC_BLOCK; k++) lane[k] = lane[k] > row[j + k] ? lane[k] : row[j + k];
        float m = row[0];
        for (int k = 0; k < CPU_VEC_BLOCK; k++) m = m > lane[k] ? m : lane[k];
        for (; j < L; j++) m = m > row[j] ? m : row[j];

        for (int k = 0; k < CPU_VEC_BLOCK; k++) lane[k] = 0.0f;
        j = 0;
        for (; j + CPU_VEC_BLOCK <= L; j += CPU_VEC_BLOCK)
            for (int k = 0; k < CPU_VEC_BLOCK; k++) {
                row[j + k] = cpu_expf(row[j + k] - m);
                lane[k] += row[j + k];
            }
        float sum = 0.0f;
        for (; j < L; j++) {
            row[j] = cpu_expf(row[j] - m);
            sum += row[j];
        }
        for (int k = 0; k < CPU_VEC_BLOCK; k++) sum += lane[k];
        sums[r] = sum;
    }
}

static void attention_task(void *ctx, int task, int worker) {
    const attn_job_t *j = ctx;
    int b = task / j->n_heads, h = task % j->n_heads;
    int t0 = j->seq_off[b], L = j->seq_off[b + 1] - t0;
    if (L <= 0) return;
    int H = j->n_heads * j->head_dim, ld = 3 * H, d = j->head_dim;
    const float *q = j->qkv + (size_t)t0 * ld + (size_t)h * d;
    const float *k = q + H;
    const float *v = q + 2 * H;
    float *o = j->out + (size_t)t0 * H + (size_t)h * d;
    float *scores = j->scratch[worker];
    float *sums = scores + (size_t)ATTN_QUERY_BLOCK * j->max_len;
    if (j->bias) {
        float *qb = sums + ATTN_QUERY_BLOCK, *kb = qb + (size_t)L * d, *vb = kb + (size_t)L * d;
        const float *bias = j->bias + (size_t)h * d;
        copy_rows_plus_bias(qb, q, bias, L, d, ld);
        copy_rows_plus_bias(kb, k, bias + H, L, d, ld);
        copy_rows_plus_bias(vb, v, bias + 2 * (size_t)H, L, d, ld);
        q = qb, k = kb, v = vb, ld = d;
    }
    for (int r0 = 0; r0 < L; r0 += ATTN_QUERY_BLOCK) {
        int rows = L - r0 < ATTN_QUERY_BLOCK ? L - r0 : ATTN_QUERY_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, L, d, j->scale, q + (size_t)r0 * ld, ld, k, ld,
                    0.0f, scores, L);
        ops_cpu_softmax_rows(scores, sums, rows, L);
        float *ob = o + (size_t)r0 * H;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, L, 1.0f, scores, L, v, ld, 0.0f, ob, H);
        for (int r = 0; r < rows; r++) {
            float inv = 1.0f / sums[r];
            float *restrict orow = ob + (size_t)r * H;
            for (int c = 0; c < d; c++) orow[c] *= inv;
        }
    }
}

int ops_cpu_attention(ops_t *ops, void *out, const void *qkv, const float *qkv_bias, const int32_t *seq_off, int B,
                      int max_len, int n_heads, int head_dim, float scale) {
    if (n_heads <= 0 || head_dim <= 0 || head_dim > INT_MAX / 3 / n_heads)
        return ops_cpu_fail(ops, OPS_EINVAL, "attention: bad heads n_heads=%d head_dim=%d", n_heads, head_dim);
    if (max_len < 0) return ops_cpu_fail(ops, OPS_EINVAL, "attention: max_len = %d (must be >= 0)", max_len);
    if (!isfinite(scale)) return ops_cpu_fail(ops, OPS_EINVAL, "attention: scale = %g (must be finite)", scale);
    int longest = ops_cpu_check_seq_off(ops, "attention", seq_off, B);
    if (longest < 0) return longest;
    if (longest > max_len)
        return ops_cpu_fail(ops, OPS_EINVAL, "attention: a sequence has %d tokens but max_len = %d", longest, max_len);
    if (B == 0 || seq_off[B] == 0) return OPS_OK;
    if (!out || !qkv) return ops_cpu_fail(ops, OPS_EINVAL, "attention: NULL buffer");
    if ((size_t)B * (size_t)n_heads > INT_MAX) return ops_cpu_fail(ops, OPS_EINVAL, "attention: B * n_heads too large");

    /* Size the tile (and the biased q, k, v copies) for the longest sequence actually present. */
    size_t floats = (size_t)ATTN_QUERY_BLOCK * longest + ATTN_QUERY_BLOCK;
    if (qkv_bias) floats += 3 * (size_t)longest * (size_t)head_dim;
    int rc = ops_cpu_ensure_scratch(ops, "attention", floats);
    if (rc) return rc;
    ops_cpu_impl_t *impl = ops->impl;
    attn_job_t j = {out, qkv, qkv_bias, seq_off, n_heads, head_dim, scale, impl->scratch, longest};
    ops_cpu_threadpool_run(impl->pool, attention_task, &j, B * n_heads);
    return OPS_OK;
}
