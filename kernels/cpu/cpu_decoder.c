/* kernels/cpu/cpu_decoder.c - the Llama family's element-wise ops, the paged
 * KV cache and attention over it: add_rms_norm, rope, silu_mul, kv_store,
 * attention_paged (the quantized matmul and embedding are cpu_quant.c).
 *
 * Batch invariance: every loop here works on one token's row (or one query)
 * at a time, with an order fixed by the row's own length, so a row's result
 * never depends on T, B, the other rows, the thread count or chunking.
 * Element-wise loops run per row, so whether an element falls in a vector
 * body or a scalar tail depends on its column alone.
 *
 * attention_paged: one pool task per (sequence, KV head, chunk of queries);
 * the query heads that share the KV head run in one pass over its keys
 * (each key and value row loaded once for all of them), each head with the
 * operations it would have alone. For one query at position p the keys 0..p
 * are visited in
 * position order, twice: scores s_j = (q . k_j) * scale (8-lane dot product,
 * fixed reduction tree) into the worker's scratch, e_j = exp(s_j - max) and
 * their sum (the encoder's softmax: lanes then tail, an order fixed by p),
 * then out = sum_j e_j v_j in position order, out /= sum. Nothing in that
 * depends on how many other queries the call holds.
 */
/* Let loops with selects vectorise (see cpu_math.h). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
#endif
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_math.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DEC_X86 1
#define DEC_AVX2 __attribute__((target("avx2,fma")))
#else
#define DEC_X86 0
#endif

#define ROWS_PER_TASK 16     /* element-wise ops: token rows per pool task */
#define PARALLEL_MIN 65536   /* element-wise ops: fewer values than this run on the caller */
#define QUERIES_PER_TASK 16  /* attention_paged */

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Runs fn over ceil(T / ROWS_PER_TASK) tasks, or inline when the op is small
 * (a decode step's rows: waking the pool would cost more than the work). */
static void run_rows(ops_t *ops, ops_cpu_task_fn fn, void *ctx, int T, size_t values) {
    ops_cpu_impl_t *impl = ops->impl;
    int tasks = ceil_div(T, ROWS_PER_TASK);
    if (values < PARALLEL_MIN) {
        for (int t = 0; t < tasks; t++) fn(ctx, t, 0);
        return;
    }
    ops_cpu_threadpool_run(impl->pool, fn, ctx, tasks);
}

/* ---------------- add_rms_norm ---------------- */

typedef struct {
    float *out, *resid;
    const float *delta, *w;
    int T, H;
    float eps;
} rms_job_t;

CPU_HOT static void rms_row(float *out, float *resid, const float *delta, const float *restrict w,
                            int H, float eps) {
    if (delta)
        for (int i = 0; i < H; i++) resid[i] += delta[i];
    float lane[CPU_VEC_BLOCK] = {0};
    int i = 0;
    for (; i + CPU_VEC_BLOCK <= H; i += CPU_VEC_BLOCK)
        for (int k = 0; k < CPU_VEC_BLOCK; k++) lane[k] += resid[i + k] * resid[i + k];
    float ss = 0.0f;
    for (int k = 0; k < CPU_VEC_BLOCK; k++) ss += lane[k];
    for (; i < H; i++) ss += resid[i] * resid[i];
    /* as transformers' LlamaRMSNorm: w * (x * rsqrt(mean(x^2) + eps)) */
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
    for (i = 0; i < H; i++) out[i] = w[i] * (resid[i] * inv);
}

static void rms_task(void *ctx, int task, int worker) {
    (void)worker;
    const rms_job_t *j = ctx;
    int t1 = (task + 1) * ROWS_PER_TASK < j->T ? (task + 1) * ROWS_PER_TASK : j->T;
    for (int t = task * ROWS_PER_TASK; t < t1; t++) {
        size_t o = (size_t)t * j->H;
        rms_row(j->out + o, j->resid + o, j->delta ? j->delta + o : NULL, j->w, j->H, j->eps);
    }
}

int ops_cpu_add_rms_norm(ops_t *ops, float *out, float *resid, const float *delta, const float *w, int T, int H,
                         float eps) {
    if (T < 0 || H <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "add_rms_norm: bad shape T=%d H=%d", T, H);
    if (!(eps >= 0.0f) || !isfinite(eps)) return ops_cpu_fail(ops, OPS_EINVAL, "add_rms_norm: eps = %g", eps);
    if (T == 0) return OPS_OK;
    if (!out || !resid || !w) return ops_cpu_fail(ops, OPS_EINVAL, "add_rms_norm: NULL buffer");
    if (out == resid) return ops_cpu_fail(ops, OPS_EINVAL, "add_rms_norm: out must not alias resid");
    rms_job_t j = {out, resid, delta, w, T, H, eps};
    run_rows(ops, rms_task, &j, T, (size_t)T * H);
    return OPS_OK;
}

/* ---------------- rope ---------------- */

typedef struct {
    float *x;
    const int32_t *pos;
    const float *inv_freq; /* (head_dim / 2) */
    int T, n_heads, head_dim, row_stride;
} rope_job_t;

static void rope_task(void *ctx, int task, int worker) {
    (void)worker;
    const rope_job_t *j = ctx;
    int half = j->head_dim / 2;
    int t1 = (task + 1) * ROWS_PER_TASK < j->T ? (task + 1) * ROWS_PER_TASK : j->T;
    for (int t = task * ROWS_PER_TASK; t < t1; t++) {
        float *row = j->x + (size_t)t * j->row_stride;
        float p = (float)j->pos[t];
        for (int i = 0; i < half; i++) {
            /* the angle in float, as transformers computes it (pos * inv_freq, one rounding) */
            float a = p * j->inv_freq[i], s, c;
            sincosf(a, &s, &c);
            for (int h = 0; h < j->n_heads; h++) {
                float *v = row + (size_t)h * j->head_dim + 2 * i;
                float x0 = v[0], x1 = v[1];
                v[0] = x0 * c - x1 * s;
                v[1] = x0 * s + x1 * c;
            }
        }
    }
}

int ops_cpu_rope(ops_t *ops, float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
                 float theta) {
    if (T < 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 || head_dim > INT_MAX / n_heads)
        return ops_cpu_fail(ops, OPS_EINVAL, "rope: bad shape T=%d n_heads=%d head_dim=%d (head_dim even)", T,
                            n_heads, head_dim);
    if (row_stride < n_heads * head_dim)
        return ops_cpu_fail(ops, OPS_EINVAL, "rope: row_stride %d < n_heads * head_dim = %d", row_stride,
                            n_heads * head_dim);
    if (!(theta > 0.0f) || !isfinite(theta)) return ops_cpu_fail(ops, OPS_EINVAL, "rope: theta = %g", theta);
    if (T == 0) return OPS_OK;
    if (!x || !pos) return ops_cpu_fail(ops, OPS_EINVAL, "rope: NULL buffer");
    for (int t = 0; t < T; t++)
        if (pos[t] < 0) return ops_cpu_fail(ops, OPS_EINVAL, "rope: pos[%d] = %d is negative", t, pos[t]);
    if (head_dim > 8192) return ops_cpu_fail(ops, OPS_EINVAL, "rope: head_dim %d too large (at most 8192)", head_dim);
    float inv_freq[head_dim / 2];
    for (int i = 0; i < head_dim / 2; i++) inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    rope_job_t j = {x, pos, inv_freq, T, n_heads, head_dim, row_stride};
    run_rows(ops, rope_task, &j, T, (size_t)T * n_heads * head_dim);
    return OPS_OK;
}

/* ---------------- silu_mul ---------------- */

typedef struct {
    float *out;
    const float *gu;
    int T, F;
} silu_job_t;

CPU_HOT static void silu_row(float *restrict out, const float *restrict g, const float *restrict u, int F) {
    for (int i = 0; i < F; i++) out[i] = g[i] / (1.0f + cpu_expf(-g[i])) * u[i];
}

static void silu_task(void *ctx, int task, int worker) {
    (void)worker;
    const silu_job_t *j = ctx;
    int t1 = (task + 1) * ROWS_PER_TASK < j->T ? (task + 1) * ROWS_PER_TASK : j->T;
    for (int t = task * ROWS_PER_TASK; t < t1; t++) {
        const float *g = j->gu + (size_t)t * 2 * j->F;
        silu_row(j->out + (size_t)t * j->F, g, g + j->F, j->F);
    }
}

int ops_cpu_silu_mul(ops_t *ops, float *out, const float *gu, int T, int F) {
    if (T < 0 || F <= 0 || F > INT_MAX / 2) return ops_cpu_fail(ops, OPS_EINVAL, "silu_mul: bad shape T=%d F=%d", T, F);
    if (T == 0) return OPS_OK;
    if (!out || !gu) return ops_cpu_fail(ops, OPS_EINVAL, "silu_mul: NULL buffer");
    if ((const char *)out < (const char *)(gu + (size_t)T * 2 * F) && (const char *)gu < (const char *)(out + (size_t)T * F))
        return ops_cpu_fail(ops, OPS_EINVAL, "silu_mul: out must not overlap gu");
    silu_job_t j = {out, gu, T, F};
    run_rows(ops, silu_task, &j, T, (size_t)T * F);
    return OPS_OK;
}

/* ---------------- argmax ---------------- */

int ops_cpu_argmax(ops_t *ops, int32_t *out_idx, const float *x, int rows, int n) {
    if (rows < 0 || n <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "argmax: bad shape rows=%d n=%d", rows, n);
    if (rows == 0) return OPS_OK;
    if (!out_idx || !x) return ops_cpu_fail(ops, OPS_EINVAL, "argmax: NULL buffer");
    for (int r = 0; r < rows; r++) out_idx[r] = ops_argmax_row(x + (size_t)r * n, n);
    return OPS_OK;
}

/* ---------------- kv_store ---------------- */

int ops_cpu_kv_store(ops_t *ops, void *k_cache, void *v_cache, const float *k, const float *v, int row_stride,
                     const int32_t *slot, int T, int n_kv_heads, int head_dim) {
    if (T < 0 || n_kv_heads <= 0 || head_dim <= 0 || head_dim > INT_MAX / n_kv_heads)
        return ops_cpu_fail(ops, OPS_EINVAL, "kv_store: bad shape T=%d n_kv_heads=%d head_dim=%d", T, n_kv_heads,
                            head_dim);
    int width = n_kv_heads * head_dim;
    if (row_stride < width)
        return ops_cpu_fail(ops, OPS_EINVAL, "kv_store: row_stride %d < n_kv_heads * head_dim = %d", row_stride, width);
    if (T == 0) return OPS_OK;
    if (!k_cache || !v_cache || !k || !v || !slot) return ops_cpu_fail(ops, OPS_EINVAL, "kv_store: NULL buffer");
    for (int t = 0; t < T; t++)
        if (slot[t] < 0) return ops_cpu_fail(ops, OPS_EINVAL, "kv_store: slot[%d] = %d is negative", t, slot[t]);
    float *kc = k_cache, *vc = v_cache;
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)slot[t] * width, k + (size_t)t * row_stride, (size_t)width * sizeof(float));
        memcpy(vc + (size_t)slot[t] * width, v + (size_t)t * row_stride, (size_t)width * sizeof(float));
    }
    return OPS_OK;
}

/* ---------------- attention_paged ---------------- */

typedef struct {
    float *out;
    const float *q;
    const float *kc, *vc;
    const int32_t *table, *seq_off, *ctx_len;
    int q_stride, max_blocks, n_heads, n_kv, head_dim, block_size;
    float scale;
    int chunks_per_seq; /* query chunks per sequence (of the longest) */
    float **scratch;    /* per worker: 3 * max_ctx scores (the heads of one pass) */
} pattn_job_t;

/* Row of key/value position j of sequence b, KV head g, in a cache. */
static inline const float *kv_row(const pattn_job_t *j, const float *cache, int b, int pos, int g) {
    int blk = j->table[(size_t)b * j->max_blocks + pos / j->block_size];
    size_t slot = (size_t)blk * j->block_size + pos % j->block_size;
    return cache + (slot * j->n_kv + g) * j->head_dim;
}

/* exp(s_j - max) in place for j < n; returns their sum (order fixed by n). */
static float softmax_numerators(float *s, int n) {
    float sum;
    ops_cpu_softmax_rows(s, &sum, 1, n);
    return sum;
}

static void query_scalar(const pattn_job_t *j, float *o, const float *qv, int b, int g, int n, float *s) {
    int d = j->head_dim;
    for (int pos = 0; pos < n; pos++) {
        const float *kr = kv_row(j, j->kc, b, pos, g);
        float acc = 0.0f;
        for (int c = 0; c < d; c++) acc += qv[c] * kr[c];
        s[pos] = acc * j->scale;
    }
    float sum = softmax_numerators(s, n);
    for (int c = 0; c < d; c++) o[c] = 0.0f;
    for (int pos = 0; pos < n; pos++) {
        const float *vr = kv_row(j, j->vc, b, pos, g);
        for (int c = 0; c < d; c++) o[c] += s[pos] * vr[c];
    }
    for (int c = 0; c < d; c++) o[c] /= sum;
}

#if DEC_X86
#define GQA_MAX 3 /* query heads of one KV head done in one pass over its keys */

/* One query position against keys 0..n-1 for G (a constant, <= GQA_MAX)
 * query heads that share KV head g: each key and value row is loaded once for
 * the G heads. Per head the operations are those of one head alone, in the
 * same order: s_j = hsum8(q . k_j) * scale (8-lane FMA chain, fixed tree),
 * the softmax of s, then out[c] = (sum_j e_j v_j[c] in position order) / sum.
 * The cache is walked block by block (no division per key). qv[h], o[h]:
 * head h's query and output; s: G * n scores. */
DEC_AVX2 static inline __attribute__((always_inline)) float hsum8_dec(__m256 acc) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* out[h][c0 .. c0 + 8 NV) = sum_j e_j v_j / sum for the G heads (NV, G constants). */
DEC_AVX2 static inline __attribute__((always_inline)) void group_values(const pattn_job_t *j, float *const *o,
                                                                         const int32_t *table, int g, int n,
                                                                         const float *s, const __m256 *sumv, int c0,
                                                                         const int G, const int NV) {
    const int d = j->head_dim, bs = j->block_size;
    const size_t row_stride = (size_t)j->n_kv * d;
    __m256 acc[GQA_MAX][4];
#pragma GCC unroll 3
    for (int h = 0; h < G; h++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[h][v] = _mm256_setzero_ps();
    for (int p0 = 0; p0 < n; p0 += bs) {
        const float *vr = j->vc + (size_t)table[p0 / bs] * bs * row_stride + (size_t)g * d + c0;
        int rows = n - p0 < bs ? n - p0 : bs;
        for (int i = 0; i < rows; i++, vr += row_stride) {
            __m256 vv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) vv[v] = _mm256_loadu_ps(vr + 8 * v);
#pragma GCC unroll 3
            for (int h = 0; h < G; h++) {
                __m256 e = _mm256_set1_ps(s[(size_t)h * n + p0 + i]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[h][v] = _mm256_fmadd_ps(e, vv[v], acc[h][v]);
            }
        }
    }
#pragma GCC unroll 3
    for (int h = 0; h < G; h++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(o[h] + c0 + 8 * v, _mm256_div_ps(acc[h][v], sumv[h]));
}

DEC_AVX2 static inline __attribute__((always_inline)) void group_avx2(const pattn_job_t *j, float *const *o,
                                                                       const float *const *qv, int b, int g, int n,
                                                                       float *s, const int G) {
    const int d = j->head_dim, bs = j->block_size; /* d a multiple of 8 */
    const size_t row_stride = (size_t)j->n_kv * d;
    const int32_t *table = j->table + (size_t)b * j->max_blocks;
    for (int p0 = 0; p0 < n; p0 += bs) {
        const float *kr = j->kc + (size_t)table[p0 / bs] * bs * row_stride + (size_t)g * d;
        int rows = n - p0 < bs ? n - p0 : bs, i = 0;
        /* two keys at a time: 2 G independent FMA chains in flight */
        for (; i + 2 <= rows; i += 2, kr += 2 * row_stride) {
            const float *kr1 = kr + row_stride;
            __m256 acc[GQA_MAX][2];
#pragma GCC unroll 3
            for (int h = 0; h < G; h++) {
                __m256 qh = _mm256_loadu_ps(qv[h]);
                acc[h][0] = _mm256_mul_ps(qh, _mm256_loadu_ps(kr));
                acc[h][1] = _mm256_mul_ps(qh, _mm256_loadu_ps(kr1));
            }
            for (int c = 8; c < d; c += 8) {
                __m256 k0 = _mm256_loadu_ps(kr + c), k1 = _mm256_loadu_ps(kr1 + c);
#pragma GCC unroll 3
                for (int h = 0; h < G; h++) {
                    __m256 qh = _mm256_loadu_ps(qv[h] + c);
                    acc[h][0] = _mm256_fmadd_ps(qh, k0, acc[h][0]);
                    acc[h][1] = _mm256_fmadd_ps(qh, k1, acc[h][1]);
                }
            }
#pragma GCC unroll 3
            for (int h = 0; h < G; h++) {
                s[(size_t)h * n + p0 + i] = hsum8_dec(acc[h][0]) * j->scale;
                s[(size_t)h * n + p0 + i + 1] = hsum8_dec(acc[h][1]) * j->scale;
            }
        }
        if (i < rows) {
#pragma GCC unroll 3
            for (int h = 0; h < G; h++) {
                __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(qv[h]), _mm256_loadu_ps(kr));
                for (int c = 8; c < d; c += 8)
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qv[h] + c), _mm256_loadu_ps(kr + c), acc);
                s[(size_t)h * n + p0 + i] = hsum8_dec(acc) * j->scale;
            }
        }
    }
    __m256 sumv[GQA_MAX];
#pragma GCC unroll 3
    for (int h = 0; h < G; h++) sumv[h] = _mm256_set1_ps(softmax_numerators(s + (size_t)h * n, n));
    /* out in chunks of 32 values per head kept in registers across the keys */
    int c0 = 0;
    for (; c0 + 32 <= d; c0 += 32) group_values(j, o, table, g, n, s, sumv, c0, G, 4);
    for (; c0 < d; c0 += 8) group_values(j, o, table, g, n, s, sumv, c0, G, 1);
}

DEC_AVX2 static void group_avx2_any(const pattn_job_t *j, float *const *o, const float *const *qv, int b, int g,
                                    int n, float *s, int G) {
    switch (G) {
    case 3: group_avx2(j, o, qv, b, g, n, s, 3); break;
    case 2: group_avx2(j, o, qv, b, g, n, s, 2); break;
    default: group_avx2(j, o, qv, b, g, n, s, 1); break;
    }
}
#endif

/* One task: sequence b, KV head g (its group of query heads), a chunk of
 * QUERIES_PER_TASK queries. */
static void pattn_task(void *ctx, int task, int worker) {
    const pattn_job_t *j = ctx;
    int b = task / (j->n_kv * j->chunks_per_seq);
    int rest = task % (j->n_kv * j->chunks_per_seq);
    int g = rest / j->chunks_per_seq, chunk = rest % j->chunks_per_seq;
    int n_b = j->seq_off[b + 1] - j->seq_off[b];
    int i0 = chunk * QUERIES_PER_TASK, i1 = i0 + QUERIES_PER_TASK < n_b ? i0 + QUERIES_PER_TASK : n_b;
    int group = j->n_heads / j->n_kv, d = j->head_dim, H = j->n_heads * d;
    float *s = j->scratch[worker];
    for (int i = i0; i < i1; i++) {
        int t = j->seq_off[b] + i;
        int n = j->ctx_len[b] - n_b + i + 1; /* keys 0..p */
        for (int h0 = g * group; h0 < (g + 1) * group;) {
#if DEC_X86
            if (d % 8 == 0 && ops_cpu_has_avx2()) {
                int G = (g + 1) * group - h0 < GQA_MAX ? (g + 1) * group - h0 : GQA_MAX;
                const float *qv[GQA_MAX];
                float *o[GQA_MAX];
                for (int h = 0; h < G; h++) {
                    qv[h] = j->q + (size_t)t * j->q_stride + (size_t)(h0 + h) * d;
                    o[h] = j->out + (size_t)t * H + (size_t)(h0 + h) * d;
                }
                group_avx2_any(j, o, qv, b, g, n, s, G);
                h0 += G;
                continue;
            }
#endif
            query_scalar(j, j->out + (size_t)t * H + (size_t)h0 * d,
                         j->q + (size_t)t * j->q_stride + (size_t)h0 * d, b, g, n, s);
            h0++;
        }
    }
}

int ops_cpu_attention_paged(ops_t *ops, float *out, const float *q, int q_stride, const void *k_cache,
                            const void *v_cache, const int32_t *block_table, int max_blocks, const int32_t *seq_off, int T,
                            const int32_t *ctx_len, int B, int max_ctx, int n_heads, int n_kv_heads, int head_dim,
                            int block_size, float scale) {
    const char *what = "attention_paged";
    if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 || head_dim > INT_MAX / n_heads)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: bad heads n_heads=%d n_kv_heads=%d head_dim=%d", what, n_heads,
                            n_kv_heads, head_dim);
    if (q_stride < n_heads * head_dim)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: q_stride %d < n_heads * head_dim = %d", what, q_stride,
                            n_heads * head_dim);
    if (block_size <= 0 || max_blocks <= 0 || max_ctx < 0 || (long long)max_blocks * block_size > INT_MAX)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: bad cache shape block_size=%d max_blocks=%d max_ctx=%d", what,
                            block_size, max_blocks, max_ctx);
    if (!isfinite(scale)) return ops_cpu_fail(ops, OPS_EINVAL, "%s: scale = %g", what, scale);
    int longest = ops_cpu_check_seq_off(ops, what, seq_off, B);
    if (longest < 0) return longest;
    if (B > 0 && seq_off[B] != T)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: T = %d but seq_off[B] = %d", what, T, seq_off[B]);
    if (B == 0 || T == 0) return OPS_OK;
    if (!out || !q || !k_cache || !v_cache || !block_table || !ctx_len)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: NULL buffer", what);
    for (int b = 0; b < B; b++) {
        int n_b = seq_off[b + 1] - seq_off[b], len = ctx_len[b];
        if (n_b == 0) continue;
        if (len < n_b || len > max_ctx || len > max_blocks * block_size)
            return ops_cpu_fail(ops, OPS_EINVAL,
                                "%s: sequence %d has ctx_len %d for %d queries (max_ctx %d, %d blocks of %d)", what,
                                b, len, n_b, max_ctx, max_blocks, block_size);
        for (int k = 0; k < ceil_div(len, block_size); k++)
            if (block_table[(size_t)b * max_blocks + k] < 0)
                return ops_cpu_fail(ops, OPS_EINVAL, "%s: sequence %d block %d is %d", what, b, k,
                                    block_table[(size_t)b * max_blocks + k]);
    }
    if ((long long)B * n_kv_heads * ceil_div(longest, QUERIES_PER_TASK) > INT_MAX)
        return ops_cpu_fail(ops, OPS_EINVAL, "%s: too many queries", what);
    int rc = ops_cpu_ensure_scratch(ops, what, max_ctx > 0 ? (size_t)max_ctx * 3 : 1); /* GQA_MAX heads' scores */
    if (rc) return rc;
    ops_cpu_impl_t *impl = ops->impl;
    pattn_job_t j = {.out = out, .q = q, .kc = k_cache, .vc = v_cache, .table = block_table, .seq_off = seq_off,
                     .ctx_len = ctx_len, .q_stride = q_stride, .max_blocks = max_blocks, .n_heads = n_heads,
                     .n_kv = n_kv_heads, .head_dim = head_dim, .block_size = block_size, .scale = scale,
                     .chunks_per_seq = ceil_div(longest, QUERIES_PER_TASK), .scratch = impl->scratch};
    ops_cpu_threadpool_run(impl->pool, pattn_task, &j, B * n_kv_heads * j.chunks_per_seq);
    return OPS_OK;
}
