/* kernels/cpu/topk.c - similarity top-k on the CPU: blocked SGEMM + a threshold reservoir per query.
 *
 * The index is cut into contiguous ranges of rows, a few per pool thread (the
 * pool hands them out as threads come free, so a core slowed by another
 * process does not hold up the whole op); each task walks its range in tiles (a block of rows x a chunk of queries, sized to stay
 * in cache), scores a tile with one single-threaded sgemm, and feeds each
 * query's scores into that task's reservoir. So the workspace is bounded
 * whatever N is, every row of X is read once for all queries, and no thread
 * waits on another until the end, when each query's reservoirs are merged and
 * its k best sorted (k log k). No sort of N scores anywhere.
 *
 * Selection (partial, as faiss does for large k): a candidate enters a
 * query's reservoir (capacity 2k) only when its score beats the threshold;
 * when the reservoir is full, a quickselect keeps its k best and the k-th
 * best's score becomes the threshold. Each candidate costs O(1) amortised, and
 * after the first tiles almost every score is one compare and a skip. (A size-k
 * heap costs log k per entry, which dominated at k = 1000 on real embeddings,
 * where rows similar to a query are not spread at random.)
 *
 * Order and ties: a candidate is one 64-bit key, the score's order-preserving
 * bits above the complement of its index, so "larger key" is exactly "higher
 * score, then lower index" and the selection needs one compare. Rows are
 * visited in increasing index order within a task, so a later row whose score
 * equals the threshold is never better than the k kept (its index is higher)
 * and the strict compare rejects it. Scores are assumed finite (a NaN never
 * enters).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/topk.h"

enum {
    TOPK_MAX_K = 1000,
    TOPK_MAX_QUERIES = 256,     /* queries per sgemm tile */
    TOPK_TILE_FLOATS = 1 << 18, /* scores per tile: 1 MiB, about a core's L2 */
    TOPK_MIN_ROWS = 512,        /* index rows per tile, at least ... */
    TOPK_MAX_ROWS = 16384,      /* ... and at most */
    TOPK_MIN_TASK_ROWS = 4096,  /* below this a range is not worth a task */
    TOPK_BALANCE_ROWS = 65536,  /* from this many rows per range, up to ... */
    TOPK_TASKS_PER_THREAD = 4,  /* ... this many ranges per pool thread, for load balance */
    TOPK_MIN_CAP = 32,          /* reservoir capacity: 2k, at least this */
};

static int imin(int a, int b) { return a < b ? a : b; }

/* The tiling, the same for sizing the workspace and for running. */
typedef struct {
    int tasks;          /* index ranges, one pool task each */
    int qb, nb;         /* queries and index rows per tile */
    int cap;            /* reservoir capacity, keys */
    size_t tile_floats; /* per task */
    size_t task_bytes;  /* per task: tile, reservoirs (nq x cap keys), their states */
} topk_plan_t;

/* One query's reservoir in one task. */
typedef struct {
    int n;     /* keys held */
    float thr; /* a score must beat this to enter (-inf until the first shrink) */
} topk_res_t;

static topk_plan_t topk_plan(const ops_t *ops, int nq, int N, int k) {
    const ops_cpu_impl_t *impl = ops->impl;
    topk_plan_t p;
    int fewest = imin(impl->threads, N / TOPK_MIN_TASK_ROWS), most = TOPK_TASKS_PER_THREAD * impl->threads;
    p.tasks = N / TOPK_BALANCE_ROWS > fewest ? imin(N / TOPK_BALANCE_ROWS, most) : fewest;
    if (p.tasks < 1) p.tasks = 1;
    p.qb = imin(nq, TOPK_MAX_QUERIES);
    int nb = TOPK_TILE_FLOATS / p.qb;
    nb = nb < TOPK_MIN_ROWS ? TOPK_MIN_ROWS : nb > TOPK_MAX_ROWS ? TOPK_MAX_ROWS : nb;
    p.nb = imin(nb, (N + p.tasks - 1) / p.tasks);
    p.cap = 2 * k < TOPK_MIN_CAP ? TOPK_MIN_CAP : 2 * k;
    p.tile_floats = (size_t)p.qb * p.nb;
    p.task_bytes = p.tile_floats * sizeof(float) + (size_t)nq * p.cap * sizeof(uint64_t) +
                   (size_t)nq * sizeof(topk_res_t);
    return p;
}

size_t cpu_topk_workspace(ops_t *ops, int nq, int N, int k) {
    if (!ops || nq <= 0 || N <= 0 || k <= 0) return 0;
    topk_plan_t p = topk_plan(ops, nq, N, k);
    return (size_t)p.tasks * p.task_bytes;
}

/* ---- keys: higher score, then lower index, is a larger key ---- */

static inline uint64_t topk_key(float score, int32_t idx) {
    uint32_t u;
    float s = score == 0.0f ? 0.0f : score; /* -0 ranks with +0 */
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)idx);
}

static inline float topk_key_score(uint64_t key) {
    uint32_t u = (uint32_t)(key >> 32);
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    float s;
    memcpy(&s, &u, sizeof s);
    return s;
}

static inline int32_t topk_key_idx(uint64_t key) { return (int32_t)(0xFFFFFFFFu - (uint32_t)key); }

/* Rearrange a[0..n) so that a[k-1] is the k-th largest and a[0..k-1) hold
 * larger keys (Wirth's selection; keys are distinct). */
static void topk_select_largest(uint64_t *a, int n, int k) {
    int lo = 0, hi = n - 1, t = k - 1;
    while (lo < hi) {
        uint64_t x = a[t];
        int i = lo, j = hi;
        do {
            while (a[i] > x) i++;
            while (x > a[j]) j--;
            if (i <= j) {
                uint64_t tmp = a[i];
                a[i] = a[j];
                a[j] = tmp;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < t) lo = i;
        if (t < i) hi = j;
    }
}

static int topk_cmp_desc(const void *pa, const void *pb) {
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a < b) - (a > b);
}

/* Keep the k best of a full reservoir; the k-th best sets the threshold. */
static void topk_shrink(topk_res_t *r, uint64_t *keys, int k) {
    topk_select_largest(keys, r->n, k);
    r->n = k;
    r->thr = topk_key_score(keys[k - 1]);
}

/* Scores of rows first .. first+n-1, in increasing order, into a reservoir. */
static void topk_feed_rows(topk_res_t *r, uint64_t *keys, int cap, int k, const float *scores, int first, int n) {
    float thr = r->thr;
    for (int j = 0; j < n; j++) {
        if (scores[j] > thr) { /* a tie loses: this row's index is higher than the kept ones' */
            keys[r->n++] = topk_key(scores[j], first + j);
            if (r->n == cap) {
                topk_shrink(r, keys, k);
                thr = r->thr;
            }
        }
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

/* Task t's tile scores, reservoir keys (nq, cap) and states (nq). */
static float *topk_task_tile(const topk_job_t *j, int t) { return (float *)(j->ws + (size_t)t * j->plan.task_bytes); }

static uint64_t *topk_task_keys(const topk_job_t *j, int t) {
    return (uint64_t *)(j->ws + (size_t)t * j->plan.task_bytes + j->plan.tile_floats * sizeof(float));
}

static topk_res_t *topk_task_res(const topk_job_t *j, int t) {
    return (topk_res_t *)(topk_task_keys(j, t) + (size_t)j->nq * j->plan.cap);
}

static void topk_range_task(void *ctx, int t, int worker) {
    (void)worker;
    const topk_job_t *j = ctx;
    const topk_plan_t *p = &j->plan;
    int per = (j->N + p->tasks - 1) / p->tasks;
    int lo = t * per, hi = imin(j->N, lo + per);
    float *S = topk_task_tile(j, t); /* (qb, nb) scores of one tile */
    uint64_t *keys = topk_task_keys(j, t);
    topk_res_t *res = topk_task_res(j, t);
    for (int q = 0; q < j->nq; q++) res[q] = (topk_res_t){.n = 0, .thr = -INFINITY};
    int tiles = (hi - lo + p->nb - 1) / p->nb, step = tiles ? (hi - lo + tiles - 1) / tiles : p->nb;
    for (int c0 = lo; c0 < hi; c0 += step) { /* equal tiles: no sliver of a few rows at the end */
        int nb = imin(step, hi - c0);
        const float *Xb = j->X + (size_t)c0 * j->D;
        for (int q0 = 0; q0 < j->nq; q0 += p->qb) {
            int qb = imin(p->qb, j->nq - q0);
            const float *Qb = j->Q + (size_t)q0 * j->D;
            if (qb == 1) /* one query: a matrix-vector product, faster than an M=1 sgemm */
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nb, j->D, 1.0f, Xb, j->D, Qb, 1, 0.0f, S, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, nb, j->D, 1.0f, Qb, j->D, Xb, j->D,
                            0.0f, S, nb);
            for (int q = 0; q < qb; q++)
                topk_feed_rows(&res[q0 + q], keys + (size_t)(q0 + q) * p->cap, p->cap, j->k, S + (size_t)q * nb,
                               c0, nb);
        }
    }
}

/* Query q: pour the other tasks' candidates into task 0's reservoir (any
 * order now, so by key), keep the k best, sort them into out. */
static void topk_finish_task(void *ctx, int q, int worker) {
    (void)worker;
    const topk_job_t *j = ctx;
    const int cap = j->plan.cap, k = j->k;
    uint64_t *keys = topk_task_keys(j, 0) + (size_t)q * cap;
    topk_res_t *r = &topk_task_res(j, 0)[q];
    uint64_t floor = 0; /* a key must beat this to enter: the k-th best once the reservoir shrinks */
    for (int t = 1; t < j->plan.tasks; t++) {
        const uint64_t *other = topk_task_keys(j, t) + (size_t)q * cap;
        int m = topk_task_res(j, t)[q].n;
        for (int e = 0; e < m; e++) {
            if (other[e] <= floor) continue;
            keys[r->n++] = other[e];
            if (r->n == cap) {
                topk_select_largest(keys, r->n, k);
                r->n = k;
                floor = keys[k - 1];
            }
        }
    }
    if (r->n > k) topk_select_largest(keys, r->n, k);
    qsort(keys, (size_t)k, sizeof *keys, topk_cmp_desc);
    for (int e = 0; e < k; e++) {
        j->out_score[(size_t)q * k + e] = topk_key_score(keys[e]);
        j->out_idx[(size_t)q * k + e] = topk_key_idx(keys[e]);
    }
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
