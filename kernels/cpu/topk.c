/* kernels/cpu/topk.c - similarity top-k on the CPU: blocked SGEMM + a size-k heap per query.
 *
 * The index is walked in blocks of TOPK_BLOCK_ROWS rows and the queries in
 * chunks of TOPK_BLOCK_QUERIES, so the score buffer (the workspace) is bounded
 * whatever N and nq are, and each block of X is read once for all queries while
 * it is hot. Selection keeps, per query, a min-heap of the k best seen so far in
 * the caller's out arrays (no extra memory): a score enters only when it beats
 * the heap's worst, which after the first few blocks is rare, so selection costs
 * about one compare per score. Finally each heap is sorted in place (k log k).
 *
 * Ties: rows are visited in increasing index order, so a later row with the same
 * score as the heap's worst is never better than it (lower index wins) and is
 * rejected by the strict compare; the heap itself orders equal scores by index.
 * Scores are assumed finite (a NaN score never enters a full heap).
 */
#include <cblas.h>
#include <stdio.h>
#include "kernels/cpu/topk.h"

enum {
    TOPK_BLOCK_ROWS = 4096,    /* index rows per SGEMM block */
    TOPK_BLOCK_QUERIES = 256,  /* queries per SGEMM block */
    TOPK_MAX_K = 1000,
};

static int imin(int a, int b) { return a < b ? a : b; }

size_t cpu_topk_workspace(ops_t *ops, int nq, int N, int k) {
    (void)ops;
    (void)k;
    if (nq <= 0 || N <= 0) return 0;
    return (size_t)imin(nq, TOPK_BLOCK_QUERIES) * (size_t)imin(N, TOPK_BLOCK_ROWS) * sizeof(float);
}

/* a ranks below b: lower score, or the same score at a higher index. */
static inline int topk_worse(float sa, int32_t ia, float sb, int32_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

static inline void topk_swap(float *s, int32_t *ix, int a, int b) {
    float ts = s[a];
    s[a] = s[b];
    s[b] = ts;
    int32_t ti = ix[a];
    ix[a] = ix[b];
    ix[b] = ti;
}

/* Restore the heap (worst at the root) below position i, over n entries. */
static void topk_sift_down(float *s, int32_t *ix, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && topk_worse(s[l], ix[l], s[w], ix[w])) w = l;
        if (r < n && topk_worse(s[r], ix[r], s[w], ix[w])) w = r;
        if (w == i) return;
        topk_swap(s, ix, i, w);
        i = w;
    }
}

static void topk_sift_up(float *s, int32_t *ix, int i) {
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!topk_worse(s[i], ix[i], s[p], ix[p])) return;
        topk_swap(s, ix, i, p);
        i = p;
    }
}

/* Feed scores of rows c0 .. c0+n-1 into one query's heap, which holds
 * min(c0, k) entries on entry. */
static void topk_push_block(float *hs, int32_t *hi, int k, const float *scores, int c0, int n) {
    int j = 0;
    for (; j < n && c0 + j < k; j++) { /* filling: every row enters */
        int at = c0 + j;
        hs[at] = scores[j];
        hi[at] = c0 + j;
        topk_sift_up(hs, hi, at);
    }
    float worst = hs[0];
    for (; j < n; j++) {
        if (scores[j] > worst) {
            hs[0] = scores[j];
            hi[0] = c0 + j;
            topk_sift_down(hs, hi, k, 0);
            worst = hs[0];
        }
    }
}

/* Heap (worst at the root) -> best first, equal scores by index. */
static void topk_heap_sort(float *hs, int32_t *hi, int k) {
    for (int end = k - 1; end > 0; end--) {
        topk_swap(hs, hi, 0, end);
        topk_sift_down(hs, hi, end, 0);
    }
}

int cpu_similarity_topk(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q,
                        const void *X, int nq, int N, int D, int k, void *workspace) {
    if (!out_idx || !out_score || !Q || !X || !workspace || nq <= 0 || N <= 0 || D <= 0 || k <= 0 ||
        k > imin(N, TOPK_MAX_K)) {
        if (ops)
            snprintf(ops->err, sizeof ops->err,
                     "similarity_topk: bad arguments (nq=%d N=%d D=%d k=%d, k must be 1..min(N,%d), "
                     "buffers non-NULL)",
                     nq, N, D, k, TOPK_MAX_K);
        return OPS_EINVAL;
    }
    if (ops && ops->dtype != OPS_F32) {
        snprintf(ops->err, sizeof ops->err, "similarity_topk: the CPU backend takes fp32 X, not %s",
                 ops_dtype_name(ops->dtype));
        return OPS_EINVAL;
    }
    const float *Xf = X;
    float *S = workspace; /* (qb, nb) scores of one block */
    for (int c0 = 0; c0 < N; c0 += TOPK_BLOCK_ROWS) {
        int nb = imin(TOPK_BLOCK_ROWS, N - c0);
        const float *Xb = Xf + (size_t)c0 * D;
        for (int q0 = 0; q0 < nq; q0 += TOPK_BLOCK_QUERIES) {
            int qb = imin(TOPK_BLOCK_QUERIES, nq - q0);
            const float *Qb = Q + (size_t)q0 * D;
            if (qb == 1) /* one query: a matrix-vector product, which BLAS does faster than M=1 GEMM */
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nb, D, 1.0f, Xb, D, Qb, 1, 0.0f, S, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, nb, D, 1.0f, Qb, D, Xb, D,
                            0.0f, S, nb);
            for (int q = 0; q < qb; q++)
                topk_push_block(out_score + (size_t)(q0 + q) * k, out_idx + (size_t)(q0 + q) * k, k,
                                S + (size_t)q * nb, c0, nb);
        }
    }
    for (int q = 0; q < nq; q++) topk_heap_sort(out_score + (size_t)q * k, out_idx + (size_t)q * k, k);
    return OPS_OK;
}
