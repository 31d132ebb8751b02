/* kernels/cpu/topk.c - similarity top-k on the CPU: blocked SGEMM + a size-k heap per query.
 *
 * The index is cut into one contiguous range of rows per pool thread; each task
 * walks its range in tiles (a block of rows x a chunk of queries, sized to stay
 * in cache), scores a tile with one single-threaded sgemm, and feeds each
 * query's scores into that task's size-k heap. So the workspace is bounded
 * whatever N is, every row of X is read once for all queries, and no thread
 * waits on another until the end, when each query's per-task heaps are merged
 * (k entries per task) and sorted (k log k). No sort of N scores anywhere.
 *
 * Heaps keep the worst entry at the root, so a score enters only when it beats
 * that root, which after the first tiles is rare: selection costs about one
 * compare per score. Ties: rows are visited in increasing index order within a
 * task, so a later row with the same score as the root is never better (lower
 * index wins) and the strict compare rejects it; heap order and the merge use
 * the full (score, index) order. Scores are assumed finite (a NaN score never
 * enters a full heap).
 */
#include <cblas.h>
#include <stdio.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/topk.h"

enum {
    TOPK_MAX_K = 1000,
    TOPK_MAX_QUERIES = 256,     /* queries per sgemm tile */
    TOPK_TILE_FLOATS = 1 << 18, /* scores per tile: 1 MiB, about a core's L2 */
    TOPK_MIN_ROWS = 512,        /* index rows per tile, at least ... */
    TOPK_MAX_ROWS = 16384,      /* ... and at most */
    TOPK_MIN_TASK_ROWS = 4096,  /* below this a range is not worth a thread */
};

static int imin(int a, int b) { return a < b ? a : b; }

/* The tiling, the same for sizing the workspace and for running. */
typedef struct {
    int tasks;      /* index ranges, one pool task each */
    int qb, nb;     /* queries and index rows per tile */
    size_t tile_floats, heap_entries; /* per task */
} topk_plan_t;

static topk_plan_t topk_plan(const ops_t *ops, int nq, int N, int k) {
    const ops_cpu_impl_t *impl = ops->impl;
    topk_plan_t p;
    int by_size = N / TOPK_MIN_TASK_ROWS;
    p.tasks = imin(impl->threads, by_size < 1 ? 1 : by_size);
    p.qb = imin(nq, TOPK_MAX_QUERIES);
    int nb = TOPK_TILE_FLOATS / p.qb;
    nb = nb < TOPK_MIN_ROWS ? TOPK_MIN_ROWS : nb > TOPK_MAX_ROWS ? TOPK_MAX_ROWS : nb;
    p.nb = imin(nb, (N + p.tasks - 1) / p.tasks);
    p.tile_floats = (size_t)p.qb * p.nb;
    p.heap_entries = p.tasks > 1 ? (size_t)nq * k : 0; /* one task heaps straight into out */
    return p;
}

static size_t topk_task_bytes(const topk_plan_t *p) {
    return p->tile_floats * sizeof(float) + p->heap_entries * (sizeof(float) + sizeof(int32_t));
}

size_t cpu_topk_workspace(ops_t *ops, int nq, int N, int k) {
    if (!ops || nq <= 0 || N <= 0 || k <= 0) return 0;
    topk_plan_t p = topk_plan(ops, nq, N, k);
    return (size_t)p.tasks * topk_task_bytes(&p);
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

/* Add (score, id) to a heap of *n entries, capacity k, by the full order. */
static void topk_heap_offer(float *s, int32_t *ix, int *n, int k, float score, int32_t id) {
    if (*n < k) {
        int i = (*n)++;
        s[i] = score;
        ix[i] = id;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!topk_worse(s[i], ix[i], s[p], ix[p])) break;
            topk_swap(s, ix, i, p);
            i = p;
        }
    } else if (topk_worse(s[0], ix[0], score, id)) {
        s[0] = score;
        ix[0] = id;
        topk_sift_down(s, ix, k, 0);
    }
}

/* Feed the scores of rows first .. first+n-1 (in increasing order) into a
 * heap of *filled entries. */
static void topk_push_rows(float *hs, int32_t *hi, int *filled, int k, const float *scores, int first, int n) {
    int j = 0;
    for (; j < n && *filled < k; j++) topk_heap_offer(hs, hi, filled, k, scores[j], first + j);
    if (j == n) return;
    float worst = hs[0];
    for (; j < n; j++) {
        if (scores[j] > worst) { /* a tie loses: this row's index is higher */
            hs[0] = scores[j];
            hi[0] = first + j;
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

typedef struct {
    topk_plan_t plan;
    const float *Q, *X;
    int nq, N, D, k;
    char *ws;
    int32_t *out_idx;
    float *out_score;
} topk_job_t;

/* Task t's heaps: (nq, k) scores and indices, in the workspace or, when it is
 * the only task, in out. */
static void topk_task_heaps(const topk_job_t *j, int t, float **hs, int32_t **hi) {
    if (j->plan.tasks == 1) {
        *hs = j->out_score;
        *hi = j->out_idx;
        return;
    }
    char *base = j->ws + (size_t)t * topk_task_bytes(&j->plan) + j->plan.tile_floats * sizeof(float);
    *hs = (float *)base;
    *hi = (int32_t *)(base + j->plan.heap_entries * sizeof(float));
}

static void topk_range_task(void *ctx, int t, int worker) {
    (void)worker;
    const topk_job_t *j = ctx;
    const topk_plan_t *p = &j->plan;
    int per = (j->N + p->tasks - 1) / p->tasks;
    int lo = t * per, hi = imin(j->N, lo + per);
    float *S = (float *)(j->ws + (size_t)t * topk_task_bytes(p)); /* (qb, nb) scores of one tile */
    float *hs;
    int32_t *hix;
    topk_task_heaps(j, t, &hs, &hix);
    for (int c0 = lo; c0 < hi; c0 += p->nb) {
        int nb = imin(p->nb, hi - c0);
        const float *Xb = j->X + (size_t)c0 * j->D;
        for (int q0 = 0; q0 < j->nq; q0 += p->qb) {
            int qb = imin(p->qb, j->nq - q0);
            const float *Qb = j->Q + (size_t)q0 * j->D;
            if (qb == 1) /* one query: a matrix-vector product, faster than an M=1 sgemm */
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nb, j->D, 1.0f, Xb, j->D, Qb, 1, 0.0f, S, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, nb, j->D, 1.0f, Qb, j->D, Xb, j->D,
                            0.0f, S, nb);
            for (int q = 0; q < qb; q++) {
                int filled = imin(c0 - lo, j->k);
                topk_push_rows(hs + (size_t)(q0 + q) * j->k, hix + (size_t)(q0 + q) * j->k, &filled, j->k,
                               S + (size_t)q * nb, c0, nb);
            }
        }
    }
}

/* Query q: merge the tasks' heaps into out (when there are several), then sort. */
static void topk_finish_task(void *ctx, int q, int worker) {
    (void)worker;
    const topk_job_t *j = ctx;
    float *os = j->out_score + (size_t)q * j->k;
    int32_t *oi = j->out_idx + (size_t)q * j->k;
    if (j->plan.tasks > 1) {
        int per = (j->N + j->plan.tasks - 1) / j->plan.tasks, n = 0;
        for (int t = 0; t < j->plan.tasks; t++) {
            float *hs;
            int32_t *hi;
            topk_task_heaps(j, t, &hs, &hi);
            int rows = imin(j->N, (t + 1) * per) - t * per, m = imin(rows, j->k);
            for (int e = 0; e < m; e++)
                topk_heap_offer(os, oi, &n, j->k, hs[(size_t)q * j->k + e], hi[(size_t)q * j->k + e]);
        }
    }
    topk_heap_sort(os, oi, j->k);
}

int cpu_similarity_topk(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q, const void *X, int nq,
                        int N, int D, int k, void *workspace) {
    if (!out_idx || !out_score || !Q || !X || !workspace || nq <= 0 || N <= 0 || D <= 0 || k <= 0 ||
        k > imin(N, TOPK_MAX_K))
        return ops_cpu_fail(ops, OPS_EINVAL,
                            "similarity_topk: bad arguments (nq=%d N=%d D=%d k=%d; k must be 1..min(N,%d), "
                            "buffers non-NULL)",
                            nq, N, D, k, TOPK_MAX_K);
    ops_cpu_impl_t *impl = ops->impl;
    topk_job_t j = {.plan = topk_plan(ops, nq, N, k), .Q = Q, .X = X, .nq = nq, .N = N, .D = D, .k = k,
                    .ws = workspace, .out_idx = out_idx, .out_score = out_score};
    ops_cpu_threadpool_run(impl->pool, topk_range_task, &j, j.plan.tasks);
    ops_cpu_threadpool_run(impl->pool, topk_finish_task, &j, nq);
    return OPS_OK;
}
