/* kernels/cpu/cpu_pooling.c - mean pooling over each packed sequence, with an
 * optional L2 normalisation (sentence-transformers' Pooling + Normalize).
 * One pool task per sequence; the column sums accumulate in the output row. */
/* Let loops with selects vectorise (see cpu_math.h). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
#endif
#include <math.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_math.h"

typedef struct {
    float *out;
    const float *x;
    const int32_t *seq_off;
    int H, l2_normalize;
} pool_job_t;

CPU_HOT static void mean_pool_task(void *ctx, int b, int worker) {
    (void)worker;
    const pool_job_t *j = ctx;
    int H = j->H, t0 = j->seq_off[b], t1 = j->seq_off[b + 1];
    float *restrict o = j->out + (size_t)b * H;
    for (int i = 0; i < H; i++) o[i] = 0.0f;
    for (int t = t0; t < t1; t++) {
        const float *restrict row = j->x + (size_t)t * H;
        for (int i = 0; i < H; i++) o[i] += row[i];
    }
    float inv_n = 1.0f / (float)(t1 - t0);
    for (int i = 0; i < H; i++) o[i] *= inv_n;
    if (j->l2_normalize) {
        double ss = 0.0; /* one row per sequence: double costs nothing here */
        for (int i = 0; i < H; i++) ss += (double)o[i] * o[i];
        double norm = sqrt(ss);
        float inv = (float)(1.0 / (norm > 1e-12 ? norm : 1e-12));
        for (int i = 0; i < H; i++) o[i] *= inv;
    }
}

int ops_cpu_mean_pool(ops_t *ops, float *out, const void *x, const int32_t *seq_off, int B, int H,
                      int l2_normalize) {
    if (H <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "mean_pool: H = %d (must be > 0)", H);
    int longest = ops_cpu_check_seq_off(ops, "mean_pool", seq_off, B);
    if (longest < 0) return longest;
    for (int b = 0; b < B; b++)
        if (seq_off[b + 1] == seq_off[b])
            return ops_cpu_fail(ops, OPS_EINVAL, "mean_pool: sequence %d has no tokens", b);
    if (B == 0) return OPS_OK;
    if (!out || !x) return ops_cpu_fail(ops, OPS_EINVAL, "mean_pool: NULL buffer");
    ops_cpu_impl_t *impl = ops->impl;
    pool_job_t j = {out, x, seq_off, H, l2_normalize};
    ops_cpu_threadpool_run(impl->pool, mean_pool_task, &j, B);
    return OPS_OK;
}
