/* kernels/cpu/cpu_norm.c - the LayerNorm ops: embeddings gather + LayerNorm,
 * and bias + residual + LayerNorm.
 *
 * Each row is summed into the output row first, then normalised in place with
 * a two-pass mean/variance in float (eight partial sums, which the compiler
 * vectorises and which keep the rounding error well under 1e-6 for BERT
 * widths). Rows are independent, so blocks of rows are pool tasks.
 */
/* Let loops with selects vectorise (see cpu_math.h). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
#endif
#include <math.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_math.h"

#define NORM_ROWS_PER_TASK 32

static float sum_row(const float *restrict x, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += x[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static float sum_sq_dev(const float *restrict x, int n, float mean) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float d = x[i + k] - mean;
            acc[k] += d * d;
        }
    float s = 0.0f;
    for (; i < n; i++) s += (x[i] - mean) * (x[i] - mean);
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* row = (row - mean) / sqrt(var + eps) * gamma + beta, in place. */
static void layernorm_row(float *restrict row, int H, const float *restrict gamma, const float *restrict beta,
                          float eps) {
    float mean = sum_row(row, H) / (float)H;
    float var = sum_sq_dev(row, H, mean) / (float)H;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < H; i++) row[i] = (row[i] - mean) * rstd * gamma[i] + beta[i];
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* ---- embed_ln ---- */

typedef struct {
    float *out;
    const int32_t *ids, *pos_ids;
    const float *word, *pos, *type, *gamma, *beta;
    int T, H;
    float eps;
} embed_job_t;

CPU_HOT static void embed_task(void *ctx, int task, int worker) {
    (void)worker;
    const embed_job_t *j = ctx;
    int t1 = (task + 1) * NORM_ROWS_PER_TASK < j->T ? (task + 1) * NORM_ROWS_PER_TASK : j->T;
    for (int t = task * NORM_ROWS_PER_TASK; t < t1; t++) {
        float *restrict o = j->out + (size_t)t * j->H;
        const float *restrict w = j->word + (size_t)j->ids[t] * j->H;
        const float *restrict p = j->pos + (size_t)j->pos_ids[t] * j->H;
        const float *restrict ty = j->type;
        for (int i = 0; i < j->H; i++) o[i] = w[i] + p[i] + ty[i];
        layernorm_row(o, j->H, j->gamma, j->beta, j->eps);
    }
}

int ops_cpu_embed_ln(ops_t *ops, void *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                     const float *pos, const float *type, const float *gamma, const float *beta, int T, int H,
                     float eps) {
    if (T < 0 || H <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "embed_ln: bad shape T=%d H=%d (T >= 0, H > 0)", T, H);
    if (!(eps >= 0.0f) || isinf(eps)) return ops_cpu_fail(ops, OPS_EINVAL, "embed_ln: eps = %g (finite, >= 0)", eps);
    if (T == 0) return OPS_OK;
    if (!out || !ids || !pos_ids || !word || !pos || !type || !gamma || !beta)
        return ops_cpu_fail(ops, OPS_EINVAL, "embed_ln: NULL buffer");
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || pos_ids[t] < 0)
            return ops_cpu_fail(ops, OPS_EINVAL, "embed_ln: token %d has id %d, position %d (must be >= 0)", t, ids[t],
                                pos_ids[t]);
    ops_cpu_impl_t *impl = ops->impl;
    embed_job_t j = {out, ids, pos_ids, word, pos, type, gamma, beta, T, H, eps};
    ops_cpu_threadpool_run(impl->pool, embed_task, &j, ceil_div(T, NORM_ROWS_PER_TASK));
    return OPS_OK;
}

/* ---- add_ln ---- */

typedef struct {
    float *out;
    const float *x, *bias, *residual, *gamma, *beta;
    int T, H;
    float eps;
} add_ln_job_t;

CPU_HOT static void add_ln_task(void *ctx, int task, int worker) {
    (void)worker;
    const add_ln_job_t *j = ctx;
    int t1 = (task + 1) * NORM_ROWS_PER_TASK < j->T ? (task + 1) * NORM_ROWS_PER_TASK : j->T;
    for (int t = task * NORM_ROWS_PER_TASK; t < t1; t++) {
        /* No restrict here: out may be x or residual (same element, same index). */
        float *o = j->out + (size_t)t * j->H;
        const float *x = j->x + (size_t)t * j->H;
        const float *r = j->residual + (size_t)t * j->H;
        if (j->bias) {
            for (int i = 0; i < j->H; i++) o[i] = x[i] + j->bias[i] + r[i];
        } else {
            for (int i = 0; i < j->H; i++) o[i] = x[i] + r[i];
        }
        layernorm_row(o, j->H, j->gamma, j->beta, j->eps);
    }
}

int ops_cpu_add_ln(ops_t *ops, void *out, const void *x, const float *bias, const void *residual,
                   const float *gamma, const float *beta, int T, int H, float eps) {
    if (T < 0 || H <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "add_ln: bad shape T=%d H=%d (T >= 0, H > 0)", T, H);
    if (!(eps >= 0.0f) || isinf(eps)) return ops_cpu_fail(ops, OPS_EINVAL, "add_ln: eps = %g (finite, >= 0)", eps);
    if (T == 0) return OPS_OK;
    if (!out || !x || !residual || !gamma || !beta) return ops_cpu_fail(ops, OPS_EINVAL, "add_ln: NULL buffer");
    ops_cpu_impl_t *impl = ops->impl;
    add_ln_job_t j = {out, x, bias, residual, gamma, beta, T, H, eps};
    ops_cpu_threadpool_run(impl->pool, add_ln_task, &j, ceil_div(T, NORM_ROWS_PER_TASK));
    return OPS_OK;
}
