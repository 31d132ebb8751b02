/* tests/support_topk.c - brute-force reference for ops->similarity_topk (see support_topk.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests/support_topk.h"

const topk_case_t topk_parity_cases[] = {
    {.nq = 5, .N = 5003, .D = 48, .k = 1, .levels = 3},
    {.nq = 9, .N = 10007, .D = 48, .k = 10, .levels = 5},
    {.nq = 4, .N = 9001, .D = 32, .k = 1000, .levels = 3},
    {.nq = 3, .N = 777, .D = 40, .k = 777, .levels = 3},     /* k = N */
    {.nq = 2, .N = 1000, .D = 8, .k = 1000, .levels = 3},    /* k = N = 1000 */
    {.nq = 1, .N = 12345, .D = 64, .k = 100, .levels = 3},   /* one query */
    {.nq = 300, .N = 4500, .D = 24, .k = 37, .levels = 7},   /* several query blocks */
    {.nq = 3, .N = 1, .D = 16, .k = 1, .levels = 3},         /* one row */
    {.nq = 2, .N = 70001, .D = 16, .k = 1000, .levels = 2},  /* many segments, heavy ties */
    {.nq = 2, .N = 300001, .D = 8, .k = 5, .levels = 2},     /* several GEMM chunks on cuda */
    {.nq = 16, .N = 20011, .D = 384, .k = 100, .levels = 0}, /* real-valued unit vectors */
    {.nq = 7, .N = 3001, .D = 100, .k = 1000, .levels = 0},
};
const int topk_parity_n_cases = sizeof topk_parity_cases / sizeof topk_parity_cases[0];

static uint64_t topk_rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double topk_rng_gauss(uint64_t *s) {
    double u1 = ((topk_rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (topk_rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Round to bfloat16 (nearest even) and back, as the bf16 backend stores values. */
static float topk_round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

static void topk_fill(float *a, int rows, int D, int levels, uint64_t *rng) {
    for (int r = 0; r < rows; r++) {
        float *row = a + (size_t)r * D;
        if (levels > 0) {
            for (int d = 0; d < D; d++) row[d] = (float)((int)(topk_rng_next(rng) % (uint64_t)levels) - levels / 2) * 0.25f;
            continue;
        }
        double n2 = 0;
        for (int d = 0; d < D; d++) {
            row[d] = (float)topk_rng_gauss(rng);
            n2 += (double)row[d] * row[d];
        }
        float inv = (float)(1.0 / sqrt(n2 > 0 ? n2 : 1));
        for (int d = 0; d < D; d++) row[d] *= inv;
    }
}

typedef struct {
    double score;
    int32_t idx;
} topk_ref_t;

static int topk_ref_cmp(const void *pa, const void *pb) {
    const topk_ref_t *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Compare one query's answer with the fully sorted reference; 0 when it holds. */
static int topk_compare_row(const topk_ref_t *ref, const double *by_idx, const int32_t *got_idx,
                            const float *got_score, int N, int k, int exact, double tol, int q,
                            char *msg, size_t msglen) {
    for (int j = 0; j < k; j++) {
        int32_t gi = got_idx[j];
        if (gi < 0 || gi >= N) {
            snprintf(msg, msglen, "query %d rank %d: index %d out of range [0,%d)", q, j, gi, N);
            return 1;
        }
        if (exact) {
            if (gi != ref[j].idx || (double)got_score[j] != ref[j].score) {
                snprintf(msg, msglen, "query %d rank %d: got (%d, %.9g), want (%d, %.9g)", q, j, gi,
                         got_score[j], ref[j].idx, ref[j].score);
                return 1;
            }
            continue;
        }
        if (fabs((double)got_score[j] - by_idx[gi]) > tol) {
            snprintf(msg, msglen, "query %d rank %d: index %d score %.9g, reference %.9g", q, j, gi,
                     got_score[j], by_idx[gi]);
            return 1;
        }
        if (j > 0 && (got_score[j] > got_score[j - 1] ||
                      (got_score[j] == got_score[j - 1] && gi <= got_idx[j - 1]))) {
            snprintf(msg, msglen, "query %d rank %d: out of order after rank %d", q, j, j - 1);
            return 1;
        }
        if (by_idx[gi] < ref[k - 1].score - 2 * tol) {
            snprintf(msg, msglen, "query %d rank %d: index %d (%.9g) is below the k-th best %.9g", q,
                     j, gi, by_idx[gi], ref[k - 1].score);
            return 1;
        }
    }
    return 0;
}

int topk_parity_check(ops_t *ops, const topk_case_t *c, char *msg, size_t msglen) {
    int nq = c->nq, N = c->N, D = c->D, k = c->k, rc = 1;
    uint64_t seed = c->seed ? c->seed : (uint64_t)time(NULL) * 2654435761u + (uint64_t)clock();
    uint64_t rng = seed;
    size_t xs = ops_dtype_size(ops->dtype);
    float *Q = malloc((size_t)nq * D * sizeof(float)), *X = malloc((size_t)N * D * sizeof(float));
    int32_t *got_idx = malloc((size_t)nq * k * sizeof(int32_t));
    float *got_score = malloc((size_t)nq * k * sizeof(float));
    topk_ref_t *ref = malloc((size_t)N * sizeof *ref);
    double *by_idx = malloc((size_t)N * sizeof(double));
    size_t ws_bytes = ops->topk_workspace(ops, nq, N, k);
    void *dQ = ops->mem_alloc(ops, (size_t)nq * D * sizeof(float));
    void *dX = ops->mem_alloc(ops, (size_t)N * D * xs);
    void *d_idx = ops->mem_alloc(ops, (size_t)nq * k * sizeof(int32_t));
    void *d_score = ops->mem_alloc(ops, (size_t)nq * k * sizeof(float));
    void *ws = ops->mem_alloc(ops, ws_bytes ? ws_bytes : 1);
    char tag[96];
    snprintf(tag, sizeof tag, "[%s %s nq=%d N=%d D=%d k=%d levels=%d seed=%llu] ", ops->name,
             ops_dtype_name(ops->dtype), nq, N, D, k, c->levels, (unsigned long long)seed);
    if (!Q || !X || !got_idx || !got_score || !ref || !by_idx || !dQ || !dX || !d_idx || !d_score || !ws) {
        snprintf(msg, msglen, "%sout of memory", tag);
        goto done;
    }
    topk_fill(Q, nq, D, c->levels, &rng);
    topk_fill(X, N, D, c->levels, &rng);
    if (ops->upload(ops, dQ, Q, (size_t)nq * D * sizeof(float)) ||
        ops->upload_weight(ops, dX, X, (size_t)N * D) ||
        ops->similarity_topk(ops, d_idx, d_score, dQ, dX, nq, N, D, k, ws) ||
        ops->download(ops, got_idx, d_idx, (size_t)nq * k * sizeof(int32_t)) ||
        ops->download(ops, got_score, d_score, (size_t)nq * k * sizeof(float)) || ops->sync(ops)) {
        snprintf(msg, msglen, "%sbackend error: %s", tag, ops->err);
        goto done;
    }
    if (ops->dtype == OPS_BF16) /* the reference sees what the backend computes with */
        for (size_t i = 0; i < (size_t)N * D; i++) X[i] = topk_round_bf16(X[i]);
    if (ops->dtype == OPS_BF16)
        for (size_t i = 0; i < (size_t)nq * D; i++) Q[i] = topk_round_bf16(Q[i]);
    if (ops->dtype == OPS_F16) /* IEEE half, round to nearest even, as the device converts */
        for (size_t i = 0; i < (size_t)N * D; i++) X[i] = (float)(_Float16)X[i];
    if (ops->dtype == OPS_F16)
        for (size_t i = 0; i < (size_t)nq * D; i++) Q[i] = (float)(_Float16)Q[i];
    for (int q = 0; q < nq; q++) {
        const float *qv = Q + (size_t)q * D;
        for (int n = 0; n < N; n++) {
            const float *xv = X + (size_t)n * D;
            double s = 0;
            for (int d = 0; d < D; d++) s += (double)qv[d] * xv[d];
            ref[n].score = by_idx[n] = s;
            ref[n].idx = n;
        }
        qsort(ref, N, sizeof *ref, topk_ref_cmp);
        char why[256];
        if (topk_compare_row(ref, by_idx, got_idx + (size_t)q * k, got_score + (size_t)q * k, N, k,
                             c->levels > 0, 1e-4, q, why, sizeof why)) {
            snprintf(msg, msglen, "%s%s", tag, why);
            goto done;
        }
    }
    rc = 0;
done:
    ops->mem_free(ops, ws);
    ops->mem_free(ops, d_score);
    ops->mem_free(ops, d_idx);
    ops->mem_free(ops, dX);
    ops->mem_free(ops, dQ);
    free(by_idx);
    free(ref);
    free(got_score);
    free(got_idx);
    free(X);
    free(Q);
    return rc;
}
