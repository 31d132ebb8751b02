/* tests/test_ops_cpu.c - the CPU backend against the float64 references in
 * tests/support_ref.c, on fresh random inputs at several shapes.
 *
 * Every run draws a new seed (printed in each failure; set SLUICE_TEST_SEED to
 * replay). Outputs are poisoned with NaN before each op, so an element the op
 * forgot to write fails; the bound is ||out - ref|| / ||ref|| <= 1e-5.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kernels/cpu/threadpool.h"
#include "kernels/ops.h"
#include "tests/support_ref.h"

#define TOL 1e-5

static uint64_t seed;
static ref_rng_t rng;

static void setup(void) {
    seed = ref_seed_from_env_or_time();
    ref_rng_init(&rng, seed);
}

TestSuite(ops_cpu, .init = setup, .timeout = 120);

static ops_t *make_ops(int threads) {
    ops_t *ops = ops_cpu_create(threads);
    cr_assert_not_null(ops, "ops_cpu_create(%d) failed", threads);
    cr_assert_str_eq(ops->name, "cpu");
    cr_assert_eq(ops->dtype, OPS_F32);
    return ops;
}

static float *host_floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static double *host_doubles(size_t n) {
    double *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert_not_null(p);
    return p;
}

/* A backend buffer holding a copy of host (n floats), or NaN-poisoned when host is NULL. */
static void *dev_floats(ops_t *ops, const float *host, size_t n) {
    void *d = ops->mem_alloc(ops, (n ? n : 1) * sizeof(float));
    cr_assert_not_null(d, "mem_alloc: %s", ops->err);
    float *tmp = host_floats(n);
    if (host) memcpy(tmp, host, n * sizeof(float));
    else ref_fill_nan(tmp, n);
    cr_assert_eq(ops->upload(ops, d, tmp, n * sizeof(float)), 0, "upload: %s", ops->err);
    free(tmp);
    return d;
}

static void *dev_ints(ops_t *ops, const int32_t *host, size_t n) {
    void *d = ops->mem_alloc(ops, (n ? n : 1) * sizeof(int32_t));
    cr_assert_not_null(d, "mem_alloc: %s", ops->err);
    cr_assert_eq(ops->upload(ops, d, host, n * sizeof(int32_t)), 0, "upload: %s", ops->err);
    return d;
}

/* Downloads n floats and checks them against ref: every element written and finite, rel error <= tol. */
static void expect_close(ops_t *ops, const void *dev, const double *ref, size_t n, double tol, const char *what) {
    float *out = host_floats(n);
    cr_assert_eq(ops->download(ops, out, dev, n * sizeof(float)), 0, "download: %s", ops->err);
    long bad = ref_first_nonfinite(out, n);
    cr_assert_eq(bad, -1, "%s: element %ld is %f (not written or not finite) [seed %llu]", what, bad,
                 bad >= 0 ? out[bad] : 0.0f, (unsigned long long)seed);
    double err = ref_rel_error(out, ref, n);
    cr_assert(err <= tol, "%s: relative error %.3e > %.0e [seed %llu]", what, err, tol, (unsigned long long)seed);
    free(out);
}

/* Packed offsets for B sequences of lengths in [lo, hi]; returns T. */
static int random_seq_off(int32_t *seq_off, int B, int lo, int hi) {
    seq_off[0] = 0;
    for (int b = 0; b < B; b++) seq_off[b + 1] = seq_off[b] + ref_rng_int(&rng, lo, hi);
    return seq_off[B];
}

/* ---------------- matmul ---------------- */

static void check_matmul(ops_t *ops, int T, int K, int N, ops_epilogue_t epi) {
    float *in = host_floats((size_t)T * K), *W = host_floats((size_t)N * K), *bias = host_floats(N);
    ref_fill_uniform(&rng, in, (size_t)T * K, -1, 1);
    ref_fill_uniform(&rng, W, (size_t)N * K, -0.5, 0.5);
    ref_fill_uniform(&rng, bias, N, -1, 1);
    double *ref = host_doubles((size_t)T * N);
    ref_matmul(ref, in, W, bias, T, K, N, (int)epi);

    void *d_in = dev_floats(ops, in, (size_t)T * K), *d_b = dev_floats(ops, bias, N);
    void *d_W = ops->mem_alloc(ops, (size_t)N * K * sizeof(float));
    cr_assert_eq(ops->upload_weight(ops, d_W, W, (size_t)N * K), 0, "%s", ops->err);
    void *d_out = dev_floats(ops, NULL, (size_t)T * N);
    int rc = ops->matmul(ops, d_out, d_in, d_W, epi == OPS_EPI_NONE ? NULL : d_b, T, K, N, epi);
    cr_assert_eq(rc, 0, "matmul T=%d K=%d N=%d epi=%d: %s", T, K, N, (int)epi, ops->err);
    cr_assert_eq(ops->sync(ops), 0);
    char what[96];
    snprintf(what, sizeof what, "matmul T=%d K=%d N=%d epi=%d", T, K, N, (int)epi);
    expect_close(ops, d_out, ref, (size_t)T * N, TOL, what);
    ops->mem_free(ops, d_in);
    ops->mem_free(ops, d_b);
    ops->mem_free(ops, d_W);
    ops->mem_free(ops, d_out);
    free(in);
    free(W);
    free(bias);
    free(ref);
}

Test(ops_cpu, matmul_bert_shapes_every_epilogue) {
    ops_t *ops = make_ops(0);
    static const int shapes[][3] = {{1, 384, 384}, {1, 384, 1536}, {16, 384, 1152}, {130, 384, 1536},
                                    {512, 384, 384}, {257, 1536, 384}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int epi = 0; epi <= 2; epi++) check_matmul(ops, shapes[s][0], shapes[s][1], shapes[s][2], epi);
    ops_destroy(ops);
}

Test(ops_cpu, matmul_odd_shapes_and_thread_counts) {
    static const int shapes[][3] = {{1, 1, 1}, {3, 37, 5}, {37, 37, 37}, {200, 7, 300}, {129, 65, 33}};
    for (int threads = 1; threads <= 3; threads++) {
        ops_t *ops = make_ops(threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int epi = 0; epi <= 2; epi++) check_matmul(ops, shapes[s][0], shapes[s][1], shapes[s][2], epi);
        ops_destroy(ops);
    }
}

Test(ops_cpu, matmul_gelu_matches_erf_form_element_by_element) {
    /* in = 1 and K = 1, so out[n] = gelu(W[n] + bias[n]): a dense sweep of the
     * GELU itself, checked per element: 2e-6 relative, or 2e-9 absolute in the
     * negative tail (|gelu| < 1e-3). For negative x the value is
     * x exp(-x^2/2 + ...) and float carries that exponent to a few ulp, i.e. a
     * relative error of a few 1e-7 * x^2; 1 + erff() would cancel to 0 instead. */
    ops_t *ops = make_ops(0);
    enum { N = 4801 };
    float in[1] = {1.0f}, *W = host_floats(N), *bias = host_floats(N), *out = host_floats(N);
    for (int n = 0; n < N; n++) {
        W[n] = -12.0f + 24.0f * (float)n / (N - 1);
        bias[n] = 0.0f;
    }
    ref_fill_nan(out, N);
    int rc = ops->matmul(ops, out, in, W, bias, 1, 1, N, OPS_EPI_BIAS_GELU);
    cr_assert_eq(rc, 0, "%s", ops->err);
    for (int n = 0; n < N; n++) {
        double want = ref_gelu_erf(W[n]);
        cr_assert(fabs(out[n] - want) <= 2e-6 * fmax(fabs(want), 1e-3), "gelu(%.7g) = %.9g, want %.9g", W[n], out[n],
                  want);
    }
    free(W), free(bias), free(out);
    ops_destroy(ops);
}

/* ---------------- embed_ln ---------------- */

static void check_embed_ln(ops_t *ops, int T, int H) {
    int V = 50, P = 520;
    float *word = host_floats((size_t)V * H), *pos = host_floats((size_t)P * H), *type = host_floats(2 * (size_t)H);
    float *gamma = host_floats(H), *beta = host_floats(H);
    ref_fill_uniform(&rng, word, (size_t)V * H, -2, 2);
    ref_fill_uniform(&rng, pos, (size_t)P * H, -0.5, 0.5);
    ref_fill_uniform(&rng, type, 2 * (size_t)H, 3, 4); /* an offset: the mean must come out */
    ref_fill_uniform(&rng, gamma, H, 0.5, 1.5);
    ref_fill_uniform(&rng, beta, H, -0.5, 0.5);
    int32_t *ids = malloc((T ? T : 1) * sizeof *ids), *pos_ids = malloc((T ? T : 1) * sizeof *pos_ids);
    for (int t = 0; t < T; t++) {
        ids[t] = ref_rng_int(&rng, 0, V - 1);
        pos_ids[t] = t % P;
    }
    double *ref = host_doubles((size_t)T * H);
    ref_embed_ln(ref, ids, pos_ids, word, pos, type, gamma, beta, T, H, 1e-12);

    void *d_word = dev_floats(ops, word, (size_t)V * H), *d_pos = dev_floats(ops, pos, (size_t)P * H);
    void *d_type = dev_floats(ops, type, 2 * (size_t)H), *d_g = dev_floats(ops, gamma, H), *d_b = dev_floats(ops, beta, H);
    void *d_ids = dev_ints(ops, ids, T), *d_pos_ids = dev_ints(ops, pos_ids, T);
    void *d_out = dev_floats(ops, NULL, (size_t)T * H);
    int rc = ops->embed_ln(ops, d_out, d_ids, d_pos_ids, d_word, d_pos, d_type, d_g, d_b, T, H, 1e-12f);
    cr_assert_eq(rc, 0, "embed_ln T=%d H=%d: %s", T, H, ops->err);
    char what[64];
    snprintf(what, sizeof what, "embed_ln T=%d H=%d", T, H);
    expect_close(ops, d_out, ref, (size_t)T * H, TOL, what);
    void *bufs[] = {d_word, d_pos, d_type, d_g, d_b, d_ids, d_pos_ids, d_out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ops->mem_free(ops, bufs[i]);
    free(word), free(pos), free(type), free(gamma), free(beta), free(ids), free(pos_ids), free(ref);
}

Test(ops_cpu, embed_ln_shapes) {
    ops_t *ops = make_ops(0);
    static const int shapes[][2] = {{1, 384}, {17, 384}, {512, 384}, {1, 1}, {100, 37}, {33, 8}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) check_embed_ln(ops, shapes[s][0], shapes[s][1]);
    ops_destroy(ops);
}

/* ---------------- add_ln ---------------- */

/* alias: 0 none, 1 out == x, 2 out == residual */
static void check_add_ln(ops_t *ops, int T, int H, int with_bias, int alias) {
    size_t n = (size_t)T * H;
    float *x = host_floats(n), *res = host_floats(n), *bias = host_floats(H), *gamma = host_floats(H),
          *beta = host_floats(H);
    ref_fill_uniform(&rng, x, n, -3, 3);
    ref_fill_uniform(&rng, res, n, -1, 5);
    ref_fill_uniform(&rng, bias, H, -1, 1);
    ref_fill_uniform(&rng, gamma, H, 0.5, 1.5);
    ref_fill_uniform(&rng, beta, H, -0.5, 0.5);
    double *ref = host_doubles(n);
    ref_add_ln(ref, x, with_bias ? bias : NULL, res, gamma, beta, T, H, 1e-12);

    void *d_x = dev_floats(ops, x, n), *d_res = dev_floats(ops, res, n), *d_bias = dev_floats(ops, bias, H);
    void *d_g = dev_floats(ops, gamma, H), *d_b = dev_floats(ops, beta, H);
    void *d_out = alias == 1 ? d_x : alias == 2 ? d_res : dev_floats(ops, NULL, n);
    int rc = ops->add_ln(ops, d_out, d_x, with_bias ? d_bias : NULL, d_res, d_g, d_b, T, H, 1e-12f);
    cr_assert_eq(rc, 0, "add_ln T=%d H=%d: %s", T, H, ops->err);
    char what[80];
    snprintf(what, sizeof what, "add_ln T=%d H=%d bias=%d alias=%d", T, H, with_bias, alias);
    expect_close(ops, d_out, ref, n, TOL, what);
    if (alias == 0) ops->mem_free(ops, d_out);
    ops->mem_free(ops, d_x), ops->mem_free(ops, d_res), ops->mem_free(ops, d_bias);
    ops->mem_free(ops, d_g), ops->mem_free(ops, d_b);
    free(x), free(res), free(bias), free(gamma), free(beta), free(ref);
}

Test(ops_cpu, add_ln_shapes_bias_and_in_place) {
    ops_t *ops = make_ops(0);
    static const int shapes[][2] = {{1, 384}, {33, 384}, {512, 384}, {7, 37}, {64, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int with_bias = 0; with_bias <= 1; with_bias++)
            for (int alias = 0; alias <= 2; alias++) check_add_ln(ops, shapes[s][0], shapes[s][1], with_bias, alias);
    ops_destroy(ops);
}

/* ---------------- attention ---------------- */

/* Each shape twice: without a qkv bias and with a random one (as the engine
 * calls it: the QKV matmul leaves the bias to attention). */
static void check_attention(ops_t *ops, const int32_t *seq_off, int B, int n_heads, int head_dim, double amp,
                            double tol, const char *label) {
    int T = seq_off[B], H = n_heads * head_dim, max_len = 0;
    for (int b = 0; b < B; b++)
        if (seq_off[b + 1] - seq_off[b] > max_len) max_len = seq_off[b + 1] - seq_off[b];
    size_t nqkv = (size_t)T * 3 * H, nout = (size_t)T * H;
    float *qkv = host_floats(nqkv), *bias = host_floats(3 * (size_t)H);
    double *ref = host_doubles(nout);
    double scale = 1.0 / sqrt((double)head_dim);
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        ref_fill_uniform(&rng, qkv, nqkv, -amp, amp);
        ref_fill_uniform(&rng, bias, 3 * (size_t)H, -amp, amp);
        const float *b = with_bias ? bias : NULL;
        ref_attention(ref, qkv, b, seq_off, B, n_heads, head_dim, scale);

        void *d_qkv = dev_floats(ops, qkv, nqkv), *d_off = dev_ints(ops, seq_off, B + 1);
        void *d_bias = with_bias ? dev_floats(ops, bias, 3 * (size_t)H) : NULL;
        void *d_out = dev_floats(ops, NULL, nout);
        int rc = ops->attention(ops, d_out, d_qkv, d_bias, d_off, B, max_len, n_heads, head_dim, (float)scale);
        cr_assert_eq(rc, 0, "attention %s: %s", label, ops->err);
        char what[160];
        snprintf(what, sizeof what, "attention %s (B=%d T=%d heads=%d d=%d%s)", label, B, T, n_heads, head_dim,
                 with_bias ? ", qkv bias" : "");
        expect_close(ops, d_out, ref, nout, tol, what);
        /* qkv is the caller's: the bias must not have been added into it. */
        float *after = host_floats(nqkv);
        cr_assert_eq(ops->download(ops, after, d_qkv, nqkv * sizeof(float)), 0, "download: %s", ops->err);
        cr_assert(memcmp(after, qkv, nqkv * sizeof(float)) == 0, "%s: qkv was written", what);
        free(after);
        ops->mem_free(ops, d_qkv), ops->mem_free(ops, d_off), ops->mem_free(ops, d_out);
        if (d_bias) ops->mem_free(ops, d_bias);
    }
    free(qkv), free(bias), free(ref);
}

Test(ops_cpu, attention_one_token_and_one_long_sequence) {
    ops_t *ops = make_ops(0);
    int32_t one[] = {0, 1}, long512[] = {0, 512}, odd[] = {0, 129}, longer[] = {0, 1100};
    check_attention(ops, one, 1, 12, 32, 1.0, TOL, "1 token");
    check_attention(ops, longer, 1, 2, 16, 1.0, TOL, "1100 tokens (past any GPU limit)");
    check_attention(ops, long512, 1, 12, 32, 1.0, TOL, "512 tokens");
    check_attention(ops, odd, 1, 3, 37, 1.0, TOL, "129 tokens, odd head_dim");
    ops_destroy(ops);
}

Test(ops_cpu, attention_many_short_sequences_packed) {
    ops_t *ops = make_ops(0);
    int32_t seq_off[201];
    random_seq_off(seq_off, 200, 1, 20);
    check_attention(ops, seq_off, 200, 12, 32, 1.0, TOL, "200 short");
    random_seq_off(seq_off, 9, 1, 150); /* lengths across the 64-query blocks */
    check_attention(ops, seq_off, 9, 5, 7, 1.0, TOL, "9 mixed, H=35");
    int32_t with_empty[] = {0, 3, 3, 70, 70, 71};
    check_attention(ops, with_empty, 5, 2, 16, 1.0, TOL, "empty sequences between");
    ops_destroy(ops);
}

Test(ops_cpu, attention_single_thread_matches) {
    ops_t *ops = make_ops(1);
    int32_t seq_off[7];
    random_seq_off(seq_off, 6, 1, 100);
    check_attention(ops, seq_off, 6, 4, 16, 1.0, TOL, "1 thread");
    ops_destroy(ops);
}

Test(ops_cpu, attention_softmax_is_stable_for_large_scores) {
    /* Scores reach several hundred: exp without the max subtracted overflows float. The
     * inputs themselves are ill-conditioned at this size (float rounding of a
     * score of 500 moves a weight by ~1e-5), hence the looser bound. */
    ops_t *ops = make_ops(0);
    int32_t seq_off[] = {0, 40, 41, 140};
    check_attention(ops, seq_off, 3, 4, 32, 12.0, 1e-3, "large scores");
    ops_destroy(ops);
}

/* The engine's order (QKV matmul without a bias, the bias added by attention)
 * against the old one (bias epilogue on the matmul): the same fp32 sums reach
 * the products (only the sgemm strides differ), so the results agree to
 * rounding. */
Test(ops_cpu, attention_bias_matches_a_bias_epilogue) {
    ops_t *ops = make_ops(0);
    enum { T = 150, K = 96, HEADS = 4, D = 24, H = HEADS * D };
    int32_t seq_off[] = {0, 1, 64, 65, 150};
    float *x = host_floats(T * K), *W = host_floats(3 * H * K), *bias = host_floats(3 * H);
    float *qkv = host_floats(T * 3 * H), *a = host_floats(T * H), *b = host_floats(T * H);
    ref_fill_uniform(&rng, x, T * K, -1, 1);
    ref_fill_uniform(&rng, W, 3 * H * K, -0.3, 0.3);
    ref_fill_uniform(&rng, bias, 3 * H, -1, 1);
    const float scale = 1.0f / sqrtf((float)D);
    cr_assert_eq(ops->matmul(ops, qkv, x, W, bias, T, K, 3 * H, OPS_EPI_BIAS), 0, "%s", ops->err);
    cr_assert_eq(ops->attention(ops, a, qkv, NULL, seq_off, 4, 85, HEADS, D, scale), 0, "%s", ops->err);
    cr_assert_eq(ops->matmul(ops, qkv, x, W, NULL, T, K, 3 * H, OPS_EPI_NONE), 0, "%s", ops->err);
    cr_assert_eq(ops->attention(ops, b, qkv, bias, seq_off, 4, 85, HEADS, D, scale), 0, "%s", ops->err);
    double *want = host_doubles(T * H);
    for (size_t i = 0; i < (size_t)T * H; i++) want[i] = a[i];
    double err = ref_rel_error(b, want, (size_t)T * H);
    cr_assert(err <= 1e-6, "bias in attention vs bias epilogue: relative error %.3e [seed %llu]", err,
              (unsigned long long)seed);
    ops_destroy(ops);
    free(x), free(W), free(bias), free(qkv), free(a), free(b), free(want);
}

/* ---------------- mean_pool ---------------- */

static void check_mean_pool(ops_t *ops, const int32_t *seq_off, int B, int H, int l2, int zero_first) {
    int T = seq_off[B];
    size_t n = (size_t)T * H;
    float *x = host_floats(n);
    ref_fill_uniform(&rng, x, n, -2, 2);
    if (zero_first) memset(x, 0, (size_t)(seq_off[1] - seq_off[0]) * H * sizeof(float));
    double *ref = host_doubles((size_t)B * H);
    ref_mean_pool(ref, x, seq_off, B, H, l2);
    void *d_x = dev_floats(ops, x, n), *d_off = dev_ints(ops, seq_off, B + 1);
    void *d_out = dev_floats(ops, NULL, (size_t)B * H);
    int rc = ops->mean_pool(ops, d_out, d_x, d_off, B, H, l2);
    cr_assert_eq(rc, 0, "mean_pool: %s", ops->err);
    char what[80];
    snprintf(what, sizeof what, "mean_pool B=%d T=%d H=%d l2=%d zero=%d", B, T, H, l2, zero_first);
    expect_close(ops, d_out, ref, (size_t)B * H, TOL, what);
    ops->mem_free(ops, d_x), ops->mem_free(ops, d_off), ops->mem_free(ops, d_out);
    free(x), free(ref);
}

Test(ops_cpu, mean_pool_with_and_without_l2) {
    ops_t *ops = make_ops(0);
    int32_t one[] = {0, 1}, long512[] = {0, 512}, seq_off[101];
    random_seq_off(seq_off, 100, 1, 30);
    for (int l2 = 0; l2 <= 1; l2++) {
        check_mean_pool(ops, one, 1, 384, l2, 0);
        check_mean_pool(ops, long512, 1, 384, l2, 0);
        check_mean_pool(ops, seq_off, 100, 37, l2, 0);
        check_mean_pool(ops, seq_off, 100, 384, l2, 1); /* a zero vector: the 1e-12 clamp, no NaN */
    }
    ops_destroy(ops);
}

/* ---------------- thread pool ---------------- */

static void count_task(void *ctx, int task, int worker) {
    int *hits = ctx; /* (n_tasks) */
    (void)worker;
    __atomic_fetch_add(&hits[task], 1, __ATOMIC_RELAXED);
}

Test(ops_cpu, thread_pool_runs_every_task_exactly_once) {
    /* Many back-to-back jobs of every size: a worker that woke late for one
     * job must neither run it twice nor run its tasks inside the next one. */
    for (int size = 1; size <= 4; size++) {
        ops_cpu_threadpool_t *pool = ops_cpu_threadpool_create(size);
        cr_assert_not_null(pool);
        cr_assert_eq(ops_cpu_threadpool_size(pool), size);
        int hits[97];
        for (int job = 0; job < 3000; job++) {
            int n = job % 97;
            memset(hits, 0, sizeof hits);
            ops_cpu_threadpool_run(pool, count_task, hits, n);
            for (int t = 0; t < n; t++)
                cr_assert_eq(hits[t], 1, "pool of %d, job %d: task %d ran %d times", size, job, t, hits[t]);
            for (int t = n; t < 97; t++) cr_assert_eq(hits[t], 0, "pool of %d, job %d: task %d ran", size, job, t);
        }
        ops_cpu_threadpool_destroy(pool);
    }
    ops_cpu_threadpool_destroy(NULL);
}

/* A worker that has gone to sleep (the pool idle past its spin window, as
 * between two requests) wakes for the next job (some of its tasks run on a
 * worker, not all on the caller), and an idle pool takes no CPU: over
 * 300 ms idle the process uses well under the 600 ms two spinning workers
 * would burn. */
static double process_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    int hits[64];
    int by_worker[3];
    int waited; /* the caller has waited once */
} slow_job_t;

/* On the caller, the first task waits (up to 5 s, a loaded box's wake-up
 * latency included) until a worker has run a task, so the caller alone cannot take
 * every task before a woken worker gets going. */
static void slow_task(void *ctx, int task, int worker) {
    slow_job_t *j = ctx;
    struct timespec ms = {0, 1000 * 1000};
    for (int i = 0; worker == 0 && !j->waited && i < 5000; i++) {
        if (__atomic_load_n(&j->by_worker[1], __ATOMIC_RELAXED) + __atomic_load_n(&j->by_worker[2], __ATOMIC_RELAXED))
            break;
        nanosleep(&ms, NULL);
    }
    if (worker == 0) j->waited = 1;
    __atomic_fetch_add(&j->hits[task], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&j->by_worker[worker], 1, __ATOMIC_RELAXED);
}

Test(ops_cpu, thread_pool_sleeps_when_idle_and_wakes_for_the_next_job) {
    ops_cpu_threadpool_t *pool = ops_cpu_threadpool_create(3);
    cr_assert_not_null(pool);
    slow_job_t job;
    for (int round = 0; round < 4; round++) {
        struct timespec idle = {0, 100 * 1000 * 1000};
        double c0 = process_cpu_s();
        nanosleep(&idle, NULL);
        nanosleep(&idle, NULL);
        nanosleep(&idle, NULL);
        double used = process_cpu_s() - c0;
        cr_assert(used < 0.15, "round %d: %.3f s of CPU in 0.3 s idle: the workers do not sleep", round, used);
        memset(&job, 0, sizeof job);
        ops_cpu_threadpool_run(pool, slow_task, &job, 64);
        for (int t = 0; t < 64; t++)
            cr_assert_eq(job.hits[t], 1, "round %d: task %d ran %d times", round, t, job.hits[t]);
        cr_assert(job.by_worker[1] + job.by_worker[2] > 0,
                  "round %d: the caller ran all 64 tasks: no sleeping worker woke for the job", round);
    }
    ops_cpu_threadpool_destroy(pool);
}

/* ---------------- memory, clone ---------------- */

Test(ops_cpu, memory_alignment_info_and_copies) {
    ops_t *ops = make_ops(0);
    for (size_t bytes = 1; bytes < 5000; bytes = bytes * 3 + 1) {
        void *p = ops->mem_alloc(ops, bytes);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % 64, 0, "mem_alloc(%zu) = %p is not 64-byte aligned", bytes, p);
        ops->mem_free(ops, p);
    }
    ops->mem_free(ops, NULL);
    size_t free_b = 0, total_b = 0;
    cr_assert_eq(ops->mem_info(ops, &free_b, &total_b), 0, "%s", ops->err);
    cr_assert(total_b > 0 && free_b > 0 && free_b <= total_b, "mem_info: free %zu total %zu", free_b, total_b);
    float src[100], back[100];
    ref_fill_uniform(&rng, src, 100, -1, 1);
    void *d = ops->mem_alloc(ops, sizeof src);
    cr_assert_eq(ops->upload(ops, d, src, sizeof src), 0);
    cr_assert_eq(ops->download(ops, back, d, sizeof back), 0);
    cr_assert_arr_eq(src, back, sizeof src);
    cr_assert_eq(ops->upload_weight(ops, d, src, 100), 0);
    cr_assert_eq(ops->download(ops, back, d, sizeof back), 0);
    cr_assert_arr_eq(src, back, sizeof src);
    ops->mem_free(ops, d);
    cr_assert_null(ops->capture_begin, "the CPU backend has no graphs: the engine runs eagerly");
    ops_destroy(ops);
    ops_destroy(NULL);
}

Test(ops_cpu, clone_computes_the_same_and_lives_alone) {
    ops_t *ops = make_ops(2);
    ops_t *sib = ops->clone(ops);
    cr_assert_not_null(sib, "%s", ops->err);
    cr_assert_neq(sib->impl, ops->impl);
    int32_t seq_off[] = {0, 50, 77};
    int T = 77, H = 64;
    float *qkv = host_floats((size_t)T * 3 * H), *a = host_floats((size_t)T * H), *b = host_floats((size_t)T * H);
    ref_fill_uniform(&rng, qkv, (size_t)T * 3 * H, -1, 1);
    /* any 3H floats serve as the qkv bias: token 1's row */
    cr_assert_eq(ops->attention(ops, a, qkv, qkv + 3 * H, seq_off, 2, 50, 4, 16, 0.25f), 0);
    ops_destroy(ops); /* the sibling must not depend on its parent */
    cr_assert_eq(sib->attention(sib, b, qkv, qkv + 3 * H, seq_off, 2, 50, 4, 16, 0.25f), 0, "%s", sib->err);
    cr_assert_arr_eq(a, b, (size_t)T * H * sizeof(float));
    ops_destroy(sib);
    free(qkv), free(a), free(b);
}

/* Two clones driven from two threads at once (two batches in flight): each
 * repeats a GELU matmul and an attention and must get, every time, the bits
 * it got alone. Both pools and both threads' sgemm calls run concurrently. */
typedef struct {
    ops_t *ops;
    const float *in, *W, *bias, *qkv;
    const float *want_mm, *want_att;
    int mismatches, failures;
} concurrent_job_t;

enum { CC_T = 300, CC_K = 384, CC_N = 1536, CC_B = 5, CC_H = 384, CC_REPEAT = 8 };
static const int32_t cc_seq_off[CC_B + 1] = {0, 7, 90, 91, 230, 300};

static int cc_run(ops_t *ops, const concurrent_job_t *j, float *mm, float *att) {
    int rc = ops->matmul(ops, mm, j->in, j->W, j->bias, CC_T, CC_K, CC_N, OPS_EPI_BIAS_GELU);
    /* The qkv bias is a slice of the matmul bias: any float vector serves. */
    return rc ? rc : ops->attention(ops, att, j->qkv, j->bias, cc_seq_off, CC_B, 139, 12, 32, 0.17677669f);
}

static void *cc_thread(void *p) {
    concurrent_job_t *j = p;
    float *mm = malloc(sizeof(float) * CC_T * CC_N), *att = malloc(sizeof(float) * CC_T * CC_H);
    for (int r = 0; r < CC_REPEAT; r++) {
        if (cc_run(j->ops, j, mm, att)) j->failures++;
        else if (memcmp(mm, j->want_mm, sizeof(float) * CC_T * CC_N) || memcmp(att, j->want_att, sizeof(float) * CC_T * CC_H))
            j->mismatches++;
    }
    free(mm), free(att);
    return NULL;
}

Test(ops_cpu, two_clones_in_two_threads_at_once) {
    ops_t *ops = make_ops(0);
    ops_t *sib = ops->clone(ops);
    cr_assert_not_null(sib, "%s", ops->err);
    float *in = host_floats(CC_T * CC_K), *W = host_floats(CC_N * CC_K), *bias = host_floats(CC_N);
    float *qkv = host_floats(CC_T * 3 * CC_H), *mm = host_floats(CC_T * CC_N), *att = host_floats(CC_T * CC_H);
    ref_fill_uniform(&rng, in, CC_T * CC_K, -1, 1);
    ref_fill_uniform(&rng, W, CC_N * CC_K, -0.1, 0.1);
    ref_fill_uniform(&rng, bias, CC_N, -1, 1);
    ref_fill_uniform(&rng, qkv, CC_T * 3 * CC_H, -1, 1);
    concurrent_job_t jobs[2] = {{ops, in, W, bias, qkv, mm, att, 0, 0}, {sib, in, W, bias, qkv, mm, att, 0, 0}};
    cr_assert_eq(cc_run(ops, &jobs[0], mm, att), 0, "%s", ops->err);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&th[i], NULL, cc_thread, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(jobs[i].failures, 0, "thread %d: an op failed", i);
        cr_assert_eq(jobs[i].mismatches, 0, "thread %d: %d of %d runs differ from the serial result [seed %llu]", i,
                     jobs[i].mismatches, CC_REPEAT, (unsigned long long)seed);
    }
    ops_destroy(sib);
    ops_destroy(ops);
    free(in), free(W), free(bias), free(qkv), free(mm), free(att);
}

/* ---------------- shape validation ---------------- */

#define EXPECT_EINVAL(call)                                                                  \
    do {                                                                                     \
        ops->err[0] = '\0';                                                                  \
        int rc_ = (call);                                                                    \
        cr_assert_eq(rc_, OPS_EINVAL, "%s returned %d, want OPS_EINVAL", #call, rc_);        \
        cr_assert(ops->err[0] != '\0', "%s: no message in ops->err", #call);                 \
    } while (0)

Test(ops_cpu, bad_shapes_return_einval_with_a_message) {
    ops_t *ops = make_ops(0);
    float buf[4096];
    int32_t ids[4] = {0, 1, 2, 3}, neg[2] = {0, -1};
    memset(buf, 0, sizeof buf);

    EXPECT_EINVAL(ops->matmul(ops, buf, buf + 100, buf + 200, buf + 300, -1, 4, 4, OPS_EPI_BIAS));
    EXPECT_EINVAL(ops->matmul(ops, buf, buf + 100, buf + 200, buf + 300, 4, 0, 4, OPS_EPI_BIAS));
    EXPECT_EINVAL(ops->matmul(ops, buf, buf + 100, buf + 200, buf + 300, 4, 4, 0, OPS_EPI_BIAS));
    EXPECT_EINVAL(ops->matmul(ops, buf, buf + 100, buf + 200, NULL, 4, 4, 4, OPS_EPI_BIAS_GELU));
    EXPECT_EINVAL(ops->matmul(ops, buf, buf + 100, buf + 200, buf + 300, 4, 4, 4, (ops_epilogue_t)7));
    EXPECT_EINVAL(ops->matmul(ops, buf, buf, buf + 200, NULL, 4, 4, 4, OPS_EPI_NONE));

    EXPECT_EINVAL(ops->embed_ln(ops, buf, ids, ids, buf, buf, buf, buf, buf, 4, 0, 1e-12f));
    EXPECT_EINVAL(ops->embed_ln(ops, buf, ids, ids, buf, buf, buf, buf, buf, -2, 8, 1e-12f));
    EXPECT_EINVAL(ops->embed_ln(ops, buf, neg, ids, buf, buf, buf, buf, buf, 2, 8, 1e-12f));
    EXPECT_EINVAL(ops->embed_ln(ops, buf, ids, ids, buf, buf, buf, buf, buf, 2, 8, NAN));

    EXPECT_EINVAL(ops->add_ln(ops, buf, buf, NULL, buf, buf, buf, 4, 0, 1e-12f));
    EXPECT_EINVAL(ops->add_ln(ops, buf, buf, NULL, buf, buf, buf, -1, 8, 1e-12f));
    EXPECT_EINVAL(ops->add_ln(ops, buf, buf, NULL, NULL, buf, buf, 2, 8, 1e-12f));

    int32_t not_zero[] = {1, 4}, decreasing[] = {0, 5, 3}, ok[] = {0, 3, 8};
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, not_zero, 1, 8, 2, 4, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, decreasing, 2, 8, 2, 4, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, ok, 2, 4, 2, 4, 0.5f)); /* max_len < 5 */
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, ok, 2, 8, 0, 4, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, ok, 2, 8, 2, 0, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, ok, -1, 8, 2, 4, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, NULL, 2, 8, 2, 4, 0.5f));
    EXPECT_EINVAL(ops->attention(ops, buf, buf + 1000, NULL, ok, 2, 8, 2, 4, INFINITY));

    int32_t empty_seq[] = {0, 2, 2};
    EXPECT_EINVAL(ops->mean_pool(ops, buf, buf + 1000, empty_seq, 2, 8, 1));
    EXPECT_EINVAL(ops->mean_pool(ops, buf, buf + 1000, decreasing, 2, 8, 1));
    EXPECT_EINVAL(ops->mean_pool(ops, buf, buf + 1000, ok, 2, 0, 1));

    /* Empty batches are fine and touch nothing. */
    int32_t zero[] = {0};
    cr_assert_eq(ops->matmul(ops, NULL, NULL, NULL, NULL, 0, 4, 4, OPS_EPI_NONE), 0, "%s", ops->err);
    cr_assert_eq(ops->attention(ops, NULL, NULL, NULL, zero, 0, 0, 2, 4, 0.5f), 0, "%s", ops->err);
    cr_assert_eq(ops->mean_pool(ops, NULL, NULL, zero, 0, 8, 1), 0, "%s", ops->err);
    cr_assert_eq(ops->add_ln(ops, NULL, NULL, NULL, NULL, NULL, NULL, 0, 8, 1e-12f), 0, "%s", ops->err);
    ops_destroy(ops);
}
