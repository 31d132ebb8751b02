/* tests/test_ops_decoder.c - the CPU backend's decoder ops (kernels/ops.h,
 * "decoder ops") against the plain-C references of tests/support_decoder_ref.c,
 * on fresh random inputs, plus the bit-exact batch-invariance properties the
 * serving work depends on.
 *
 * Every run draws a new seed (printed in each failure; SLUICE_TEST_SEED
 * replays). Outputs are poisoned with NaN first, so an element an op forgot
 * to write fails. Tolerances (||out - ref|| / ||ref||, the reference in
 * double): 1e-5 for matmul_q, add_rms_norm, rope, silu_mul and
 * attention_paged (float32 sums of at most a few thousand terms stay near
 * 1e-6); embed_q, kv_store and argmax are exact. Batch invariance is checked with
 * memcmp: bit-identical or it fails.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/gguf.h"
#include "kernels/ops.h"
#include "tests/support_cuda_decoder.h"
#include "tests/support_decoder_ref.h"
#include "tests/support_ref.h"

static uint64_t seed; /* this run's, printed with every failure */
static ref_rng_t rng;

static void draw_seed(void) { ref_rng_init(&rng, seed = ref_seed_from_env_or_time()); }

TestSuite(ops_decoder, .init = draw_seed, .timeout = 300);

#define TOL 1e-5

static const ops_wtype_t all_wtypes[] = {OPS_W_Q8_0, OPS_W_Q4_0, OPS_W_Q4_1, OPS_W_F16, OPS_W_F32};
static const char *wname(ops_wtype_t w) {
    static const char *names[] = {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"};
    return names[w];
}

static ops_t *make_ops(int threads) {
    ops_t *ops = ops_cpu_create(threads);
    cr_assert_not_null(ops, "ops_cpu_create(%d) failed", threads);
    cr_assert_eq(ops->kv_dtype, OPS_F32);
    cr_assert(ops->matmul_q && ops->embed_q && ops->add_rms_norm && ops->rope && ops->silu_mul && ops->kv_store &&
              ops->attention_paged);
    return ops;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p);
    return p;
}
#define floats(n) ((float *)xmalloc((size_t)(n) * sizeof(float)))
#define doubles(n) ((double *)xmalloc((size_t)(n) * sizeof(double)))

static float *random_floats(size_t n, double lo, double hi) {
    float *p = floats(n);
    ref_fill_uniform(&rng, p, n, lo, hi);
    return p;
}

static float *nan_floats(size_t n) {
    float *p = floats(n);
    ref_fill_nan(p, n);
    return p;
}

static void expect_close(const float *out, const double *ref, size_t n, double tol, const char *what) {
    long bad = ref_first_nonfinite(out, n);
    cr_assert_eq(bad, -1, "%s: element %ld is %f (not written or not finite) [seed %llu]", what, bad,
                 bad >= 0 ? out[bad] : 0.0f, (unsigned long long)seed);
    double err = ref_rel_error(out, ref, n);
    cr_assert(err <= tol, "%s: relative error %.3e > %.0e [seed %llu]", what, err, tol, (unsigned long long)seed);
}

/* ---------------- matmul_q ---------------- */

static void check_matmul_q(ops_t *ops, ops_wtype_t wt, int T, int K, int N) {
    void *W = dref_random_weights(&rng, wt, N, K);
    float *x = random_floats((size_t)T * K, -1, 1), *out = nan_floats((size_t)T * N);
    double *ref = doubles((size_t)T * N);
    dref_matmul_q(ref, x, W, wt, T, K, N);
    int rc = ops->matmul_q(ops, out, x, W, wt, T, K, N);
    cr_assert_eq(rc, 0, "matmul_q %s T=%d K=%d N=%d: %s", wname(wt), T, K, N, ops->err);
    char what[96];
    snprintf(what, sizeof what, "matmul_q %s T=%d K=%d N=%d", wname(wt), T, K, N);
    expect_close(out, ref, (size_t)T * N, TOL, what);
    free(W), free(x), free(out), free(ref);
}

/* the model's shapes at T = 1 and odd T, N not a multiple of the tile or of 8 */
static void check_matmul_q_shapes(void) {
    static const int shapes[][3] = {{1, 576, 576}, {1, 576, 192}, {1, 1536, 576}, {3, 576, 1536}, {37, 576, 192},
                                    {5, 1536, 61}, {32, 64, 9},   {2, 32, 1},     {9, 288, 100}};
    for (int threads = 1; threads <= 3; threads += 2) {
        ops_t *ops = make_ops(threads);
        for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                check_matmul_q(ops, all_wtypes[w], shapes[s][0], shapes[s][1], shapes[s][2]);
        ops_destroy(ops);
    }
}

Test(ops_decoder, matmul_q_every_type_and_shape) { check_matmul_q_shapes(); }

Test(ops_decoder, matmul_q_dense_rows_of_any_length) {
    /* F16 and F32 rows need not be whole blocks: tails of 1..31 values */
    ops_t *ops = make_ops(2);
    static const int shapes[][3] = {{1, 1, 1}, {4, 7, 5}, {6, 45, 17}, {13, 581, 40}};
    for (int w = OPS_W_F32; w <= OPS_W_F16; w++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_matmul_q(ops, (ops_wtype_t)w, shapes[s][0], shapes[s][1], shapes[s][2]);
    ops_destroy(ops);
}

/* out[t] from one call of T = 37 rows, from T = 1 calls, from a call on rows
 * 5..12 (other tile positions), and on 1, 2 and 3 threads: all bit-identical. */
static void check_matmul_q_invariance(void) {
    enum { T = 37, K = 576, N = 200 };
    ops_t *ops1 = make_ops(1), *ops2 = make_ops(2), *ops3 = make_ops(3);
    for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++) {
        ops_wtype_t wt = all_wtypes[w];
        void *W = dref_random_weights(&rng, wt, N, K);
        float *x = random_floats((size_t)T * K, -1, 1);
        float *whole = nan_floats((size_t)T * N), *part = nan_floats((size_t)T * N);
        cr_assert_eq(ops2->matmul_q(ops2, whole, x, W, wt, T, K, N), 0, "%s", ops2->err);
        for (int t = 0; t < T; t++) {
            cr_assert_eq(ops1->matmul_q(ops1, part, x + (size_t)t * K, W, wt, 1, K, N), 0, "%s", ops1->err);
            cr_assert(memcmp(part, whole + (size_t)t * N, N * sizeof(float)) == 0,
                      "matmul_q %s: row %d alone differs from row %d of T=%d [seed %llu]", wname(wt), t, t, T,
                      (unsigned long long)seed);
        }
        cr_assert_eq(ops3->matmul_q(ops3, part, x + 5 * (size_t)K, W, wt, 8, K, N), 0, "%s", ops3->err);
        cr_assert(memcmp(part, whole + 5 * (size_t)N, 8 * N * sizeof(float)) == 0,
                  "matmul_q %s: rows 5..12 as a batch of 8 differ [seed %llu]", wname(wt), (unsigned long long)seed);
        cr_assert_eq(ops1->matmul_q(ops1, part, x, W, wt, T, K, N), 0, "%s", ops1->err);
        cr_assert(memcmp(part, whole, (size_t)T * N * sizeof(float)) == 0,
                  "matmul_q %s: 1 thread differs from 2 threads [seed %llu]", wname(wt), (unsigned long long)seed);
        free(W), free(x), free(whole), free(part);
    }
    ops_destroy(ops1), ops_destroy(ops2), ops_destroy(ops3);
}

Test(ops_decoder, matmul_q_row_is_bit_identical_whatever_the_batch) { check_matmul_q_invariance(); }

Test(ops_decoder, matmul_q_refuses_bad_arguments) {
    ops_t *ops = make_ops(1);
    float x[64] = {0}, out[64];
    uint8_t W[64] = {0};
    cr_expect_eq(ops->matmul_q(ops, out, x, W, OPS_W_Q4_1, 1, 48, 1), OPS_EINVAL, "K not a multiple of 32");
    cr_expect(strstr(ops->err, "multiple of 32") != NULL, "%s", ops->err);
    cr_expect_eq(ops->matmul_q(ops, out, x, W, (ops_wtype_t)9, 1, 32, 1), OPS_EINVAL, "unknown type");
    cr_expect_eq(ops->matmul_q(ops, out, x, W, OPS_W_Q8_0, -1, 32, 1), OPS_EINVAL);
    cr_expect_eq(ops->matmul_q(ops, out, x, W, OPS_W_Q8_0, 1, 32, 0), OPS_EINVAL);
    cr_expect_eq(ops->matmul_q(ops, out, NULL, W, OPS_W_Q8_0, 1, 32, 1), OPS_EINVAL);
    cr_expect_eq(ops->matmul_q(ops, x, x, W, OPS_W_F32, 1, 4, 1), OPS_EINVAL, "out aliases x");
    cr_expect_eq(ops->matmul_q(ops, NULL, NULL, NULL, OPS_W_Q8_0, 0, 32, 1), OPS_OK, "T = 0 is a no-op");
    ops_destroy(ops);
}

/* ---------------- embed_q ---------------- */

static void log_failure(const cuda_parity_result_t *r, void *ctx) {
    (void)ctx;
    if (!r->passed) cr_log_error("%s: %s", r->name, r->msg);
}

/* argmax: the checks the CUDA backend runs (tests/support_cuda_decoder.c: ties,
 * NaN, rows of -inf or NaN, 49,152 columns), on this backend. */
Test(ops_decoder, argmax_is_exact_with_ties_and_nan) {
    ops_t *ops = ops_cpu_create(2);
    cr_assert_not_null(ops);
    cr_assert_not_null(ops->argmax);
    int failed = cuda_decoder_run(ops, "argmax", seed, log_failure, NULL);
    ops_destroy(ops);
    cr_assert_eq(failed, 0, "%d argmax check(s) failed [seed %llu]", failed, (unsigned long long)seed);
}

Test(ops_decoder, embed_q_is_exact_for_every_type) {
    ops_t *ops = make_ops(2);
    enum { V = 40, T = 23 };
    static const int widths[] = {576, 32, 96};
    for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++)
        for (size_t h = 0; h < sizeof widths / sizeof widths[0]; h++) {
            ops_wtype_t wt = all_wtypes[w];
            int H = widths[h];
            void *table = dref_random_weights(&rng, wt, V, H);
            int32_t ids[T];
            for (int t = 0; t < T; t++) ids[t] = ref_rng_int(&rng, 0, V - 1);
            float *out = nan_floats((size_t)T * H), *ref = floats((size_t)T * H);
            dref_embed_q(ref, ids, table, wt, T, H);
            cr_assert_eq(ops->embed_q(ops, out, ids, table, wt, T, H), 0, "%s", ops->err);
            cr_assert(memcmp(out, ref, (size_t)T * H * sizeof(float)) == 0,
                      "embed_q %s H=%d differs from gguf.h's formula [seed %llu]", wname(wt), H,
                      (unsigned long long)seed);
            free(table), free(out), free(ref);
        }
    int32_t bad = -1;
    float out[32];
    uint8_t table[34] = {0};
    cr_expect_eq(ops->embed_q(ops, out, &bad, table, OPS_W_Q8_0, 1, 32), OPS_EINVAL, "negative id");
    cr_expect_eq(ops->embed_q(ops, out, &bad, table, OPS_W_Q8_0, 1, 33), OPS_EINVAL, "H not a multiple of 32");
    ops_destroy(ops);
}

/* ---------------- add_rms_norm ---------------- */

/* alias: 0 none, 1 out == delta; with_delta 0: delta = NULL */
static void check_rms(ops_t *ops, int T, int H, int with_delta, int alias) {
    size_t n = (size_t)T * H;
    float *resid = random_floats(n, -2, 3), *delta = random_floats(n, -1, 1), *w = random_floats(H, 0.5, 1.5);
    float *resid_ref = floats(n);
    double *ref = doubles(n);
    dref_add_rms_norm(ref, resid_ref, resid, with_delta ? delta : NULL, w, T, H, 1e-5);
    float *out = alias ? delta : nan_floats(n);
    int rc = ops->add_rms_norm(ops, out, resid, with_delta ? delta : NULL, w, T, H, 1e-5f);
    cr_assert_eq(rc, 0, "add_rms_norm: %s", ops->err);
    cr_assert(memcmp(resid, resid_ref, n * sizeof(float)) == 0, "add_rms_norm T=%d H=%d: resid + delta not exact", T,
              H);
    char what[80];
    snprintf(what, sizeof what, "add_rms_norm T=%d H=%d delta=%d alias=%d", T, H, with_delta, alias);
    expect_close(out, ref, n, TOL, what);
    if (!alias) free(out);
    free(resid), free(delta), free(w), free(resid_ref), free(ref);
}

Test(ops_decoder, add_rms_norm_shapes_and_aliasing) {
    ops_t *ops = make_ops(2);
    static const int shapes[][2] = {{1, 576}, {7, 576}, {300, 576}, {1, 1}, {33, 37}, {129, 1536}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int mode = 0; mode < 3; mode++) check_rms(ops, shapes[s][0], shapes[s][1], mode != 0, mode == 2);
    float r[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1};
    cr_expect_eq(ops->add_rms_norm(ops, r, r, NULL, w, 1, 4, 1e-5f), OPS_EINVAL, "out aliasing resid");
    cr_expect_eq(ops->add_rms_norm(ops, w, r, NULL, w, 1, 0, 1e-5f), OPS_EINVAL, "H = 0");
    ops_destroy(ops);
}

/* ---------------- rope ---------------- */

static void check_rope(ops_t *ops, int T, int n_heads, int head_dim, int row_stride, int max_pos) {
    size_t n = (size_t)T * row_stride;
    float *x = random_floats(n, -2, 2), *orig = floats(n);
    memcpy(orig, x, n * sizeof(float));
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    for (int t = 0; t < T; t++) pos[t] = ref_rng_int(&rng, 0, max_pos);
    double *ref = doubles(n);
    dref_rope(ref, x, pos, T, n_heads, head_dim, row_stride, 100000.0f);
    int rc = ops->rope(ops, x, pos, T, n_heads, head_dim, row_stride, 100000.0f);
    cr_assert_eq(rc, 0, "rope: %s", ops->err);
    char what[96];
    snprintf(what, sizeof what, "rope T=%d heads=%d d=%d stride=%d", T, n_heads, head_dim, row_stride);
    expect_close(x, ref, n, TOL, what);
    /* columns past the heads are left alone */
    for (int t = 0; t < T; t++)
        for (int c = n_heads * head_dim; c < row_stride; c++)
            cr_assert(x[(size_t)t * row_stride + c] == orig[(size_t)t * row_stride + c], "%s: column %d written", what,
                      c);
    free(x), free(orig), free(pos), free(ref);
}

Test(ops_decoder, rope_shapes_and_strides) {
    ops_t *ops = make_ops(2);
    check_rope(ops, 1, 9, 64, 576, 8000);
    check_rope(ops, 17, 9, 64, 960, 300);   /* q inside a fused q|k|v row */
    check_rope(ops, 17, 3, 64, 960, 300);   /* k */
    check_rope(ops, 1500, 3, 64, 192, 8191); /* big enough for the pool */
    check_rope(ops, 5, 2, 6, 15, 20);
    int32_t p = 0;
    float x[8];
    cr_expect_eq(ops->rope(ops, x, &p, 1, 1, 7, 8, 10000.0f), OPS_EINVAL, "odd head_dim");
    cr_expect_eq(ops->rope(ops, x, &p, 1, 2, 4, 7, 10000.0f), OPS_EINVAL, "row_stride too small");
    cr_expect_eq(ops->rope(ops, x, &p, 1, 1, 1 << 24, 1 << 24, 10000.0f), OPS_EINVAL, "head_dim too large");
    p = -1;
    cr_expect_eq(ops->rope(ops, x, &p, 1, 1, 4, 4, 10000.0f), OPS_EINVAL, "negative position");
    ops_destroy(ops);
}

/* ---------------- silu_mul ---------------- */

Test(ops_decoder, silu_mul_shapes) {
    ops_t *ops = make_ops(2);
    static const int shapes[][2] = {{1, 1536}, {9, 1536}, {100, 1536}, {3, 5}, {1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], F = shapes[s][1];
        float *gu = random_floats((size_t)T * 2 * F, -12, 12), *out = nan_floats((size_t)T * F);
        double *ref = doubles((size_t)T * F);
        dref_silu_mul(ref, gu, T, F);
        cr_assert_eq(ops->silu_mul(ops, out, gu, T, F), 0, "%s", ops->err);
        char what[64];
        snprintf(what, sizeof what, "silu_mul T=%d F=%d", T, F);
        expect_close(out, ref, (size_t)T * F, TOL, what);
        free(gu), free(out), free(ref);
    }
    float gu[8] = {0};
    cr_expect_eq(ops->silu_mul(ops, gu + 2, gu, 2, 2), OPS_EINVAL, "out overlapping gu");
    ops_destroy(ops);
}

/* ---------------- paged KV cache and attention ---------------- */

typedef struct {
    int B, n_heads, n_kv, d, bs, max_blocks, n_blocks;
    int32_t *ctx_len;     /* (B) */
    int32_t *table;       /* (B, max_blocks): distinct block ids, shuffled, holes left unused */
    float *k_cache, *v_cache; /* (n_blocks, bs, n_kv, d) */
    float *k_rows, *v_rows;   /* per sequence, every position: (B, max_ctx, n_kv*d) as stored */
    int max_ctx;
} cache_t;

/* B sequences with the given context lengths; every position's k and v
 * written into the cache through kv_store, from rows at a stride wider than
 * the values (as inside a fused QKV row). */
static cache_t make_cache(ops_t *ops, int B, const int *lens, int n_heads, int n_kv, int d, int bs) {
    cache_t c = {.B = B, .n_heads = n_heads, .n_kv = n_kv, .d = d, .bs = bs};
    for (int b = 0; b < B; b++) c.max_ctx = lens[b] > c.max_ctx ? lens[b] : c.max_ctx;
    c.max_blocks = (c.max_ctx + bs - 1) / bs + 1;
    c.n_blocks = B * c.max_blocks + 5; /* spare blocks: holes nobody uses */
    int W = n_kv * d, stride = W + 3;
    size_t cache_n = (size_t)c.n_blocks * bs * W;
    c.k_cache = nan_floats(cache_n);
    c.v_cache = nan_floats(cache_n);
    c.ctx_len = malloc(B * sizeof *c.ctx_len);
    c.table = malloc((size_t)B * c.max_blocks * sizeof *c.table);
    int32_t *perm = malloc(c.n_blocks * sizeof *perm);
    for (int i = 0; i < c.n_blocks; i++) perm[i] = i;
    for (int i = c.n_blocks - 1; i > 0; i--) {
        int k = ref_rng_int(&rng, 0, i), tmp = perm[i];
        perm[i] = perm[k], perm[k] = tmp;
    }
    for (int i = 0; i < B * c.max_blocks; i++) c.table[i] = perm[i];
    c.k_rows = floats((size_t)B * c.max_ctx * W);
    c.v_rows = floats((size_t)B * c.max_ctx * W);
    for (int b = 0; b < B; b++) {
        int L = lens[b];
        c.ctx_len[b] = L;
        float *k = random_floats((size_t)(L ? L : 1) * stride, -1, 1), *v = random_floats((size_t)(L ? L : 1) * stride, -1, 1);
        int32_t *slot = malloc((L ? L : 1) * sizeof *slot);
        for (int j = 0; j < L; j++) {
            slot[j] = c.table[b * c.max_blocks + j / bs] * bs + j % bs;
            memcpy(c.k_rows + ((size_t)b * c.max_ctx + j) * W, k + (size_t)j * stride, W * sizeof(float));
            memcpy(c.v_rows + ((size_t)b * c.max_ctx + j) * W, v + (size_t)j * stride, W * sizeof(float));
        }
        cr_assert_eq(ops->kv_store(ops, c.k_cache, c.v_cache, k, v, stride, slot, L, n_kv, d), 0, "kv_store: %s",
                     ops->err);
        for (int j = 0; j < L; j++) {
            size_t at = (size_t)slot[j] * W;
            cr_assert(memcmp(c.k_cache + at, k + (size_t)j * stride, W * sizeof(float)) == 0, "kv_store: k row %d", j);
            cr_assert(memcmp(c.v_cache + at, v + (size_t)j * stride, W * sizeof(float)) == 0, "kv_store: v row %d", j);
        }
        free(k), free(v), free(slot);
    }
    free(perm);
    return c;
}

static void free_cache(cache_t *c) {
    free(c->ctx_len), free(c->table), free(c->k_cache), free(c->v_cache), free(c->k_rows), free(c->v_rows);
}

/* Attention for queries n[b] (the last n[b] positions of each sequence), q at
 * a stride wider than the heads; out (sum n, n_heads*d). */
static int run_attention(ops_t *ops, const cache_t *c, float *out, const float *q, int q_stride, const int *n,
                         const int32_t *ctx_len) {
    int32_t *seq_off = malloc((c->B + 1) * sizeof *seq_off);
    seq_off[0] = 0;
    for (int b = 0; b < c->B; b++) seq_off[b + 1] = seq_off[b] + n[b];
    int rc = ops->attention_paged(ops, out, q, q_stride, c->k_cache, c->v_cache, c->table, c->max_blocks, seq_off,
                                  seq_off[c->B], ctx_len, c->B, c->max_ctx, c->n_heads, c->n_kv, c->d, c->bs, 0.125f);
    free(seq_off);
    return rc;
}

static void check_attention(ops_t *ops, int B, const int *lens, const int *n, int n_heads, int n_kv, int d, int bs) {
    cache_t c = make_cache(ops, B, lens, n_heads, n_kv, d, bs);
    int T = 0, H = n_heads * d, q_stride = H + 2 * n_kv * d;
    for (int b = 0; b < B; b++) T += n[b];
    float *q = random_floats((size_t)(T ? T : 1) * q_stride, -1.5, 1.5), *out = nan_floats((size_t)T * H);
    double *ref = doubles((size_t)T * H);
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    seq_off[0] = 0;
    for (int b = 0; b < B; b++) seq_off[b + 1] = seq_off[b] + n[b];
    dref_attention_paged(ref, q, q_stride, c.k_cache, c.v_cache, c.table, c.max_blocks, seq_off, c.ctx_len, B,
                         n_heads, n_kv, d, bs, 0.125);
    cr_assert_eq(run_attention(ops, &c, out, q, q_stride, n, c.ctx_len), 0, "attention_paged: %s", ops->err);
    char what[96];
    snprintf(what, sizeof what, "attention_paged B=%d heads=%d/%d d=%d bs=%d", B, n_heads, n_kv, d, bs);
    expect_close(out, ref, (size_t)T * H, TOL, what);
    free(q), free(out), free(ref), free(seq_off);
    free_cache(&c);
}

static void check_attention_shapes(void) {
    ops_t *ops = make_ops(2);
    {   /* decode: one query each, lengths not multiples of the block, GQA 3 */
        int lens[] = {1, 17, 40, 100, 33}, n[] = {1, 1, 1, 1, 1};
        check_attention(ops, 5, lens, n, 9, 3, 64, 16);
    }
    {   /* prefill of whole prompts and a chunk, mixed with decodes */
        int lens[] = {70, 5, 129, 16}, n[] = {70, 1, 50, 16};
        check_attention(ops, 4, lens, n, 9, 3, 64, 16);
    }
    {   /* GQA ratio 1, odd head_dim (the scalar path), block of 1 and of 7 */
        int lens[] = {9, 23}, n[] = {4, 23};
        check_attention(ops, 2, lens, n, 4, 4, 20, 7);
        check_attention(ops, 2, lens, n, 4, 4, 24, 1);
    }
    {   /* a sequence with no queries in the call */
        int lens[] = {12, 30}, n[] = {0, 3};
        check_attention(ops, 2, lens, n, 6, 2, 16, 8);
    }
    ops_destroy(ops);
}

Test(ops_decoder, attention_paged_against_reference) { check_attention_shapes(); }

/* sequence 2's output is bit-identical alone, among others, on 1 or 2
 * threads, and chunked (its prompt's queries split over two calls with the
 * context growing) versus whole */
static void check_attention_invariance(void) {
    int lens[] = {30, 64, 77, 5}, n[] = {30, 1, 77, 1};
    ops_t *ops1 = make_ops(1), *ops2 = make_ops(2);
    cache_t c = make_cache(ops2, 4, lens, 9, 3, 64, 16);
    int H = 9 * 64, q_stride = H + 2 * 3 * 64, T = 30 + 1 + 77 + 1, at = 31;
    float *q = random_floats((size_t)T * q_stride, -1.5, 1.5), *all = nan_floats((size_t)T * H);
    cr_assert_eq(run_attention(ops2, &c, all, q, q_stride, n, c.ctx_len), 0, "%s", ops2->err);

    float *alone = nan_floats((size_t)77 * H);
    cache_t one = c;
    one.B = 1;
    one.table = c.table + 2 * c.max_blocks;
    one.ctx_len = c.ctx_len + 2;
    int n_one[] = {77};
    cr_assert_eq(run_attention(ops1, &one, alone, q + (size_t)at * q_stride, q_stride, n_one, one.ctx_len), 0, "%s",
                 ops1->err);
    cr_assert(memcmp(alone, all + (size_t)at * H, (size_t)77 * H * sizeof(float)) == 0,
              "attention_paged: a sequence alone differs from the same among others [seed %llu]",
              (unsigned long long)seed);

    /* chunks of 40 and 37 queries: the first call sees a context of 40 */
    int32_t ctx40 = 40, ctx77 = 77;
    int n40[] = {40}, n37[] = {37};
    float *chunked = nan_floats((size_t)77 * H);
    cr_assert_eq(run_attention(ops2, &one, chunked, q + (size_t)at * q_stride, q_stride, n40, &ctx40), 0, "%s",
                 ops2->err);
    cr_assert_eq(run_attention(ops1, &one, chunked + (size_t)40 * H, q + (size_t)(at + 40) * q_stride, q_stride, n37,
                               &ctx77),
                 0, "%s", ops1->err);
    cr_assert(memcmp(chunked, all + (size_t)at * H, (size_t)77 * H * sizeof(float)) == 0,
              "attention_paged: a prompt prefilled in two chunks differs from whole [seed %llu]",
              (unsigned long long)seed);
    free(q), free(all), free(alone), free(chunked);
    free_cache(&c);
    ops_destroy(ops1), ops_destroy(ops2);
}

Test(ops_decoder, attention_paged_sequence_alone_equals_among_others_bit_exact) { check_attention_invariance(); }

/* The paths of older CPUs, reached through $SLUICE_CPU_ISA (read once per
 * process; Criterion runs each test in its own process, so it stays here). */
static void check_on_isa(const char *isa) {
    setenv("SLUICE_CPU_ISA", isa, 1);
    check_matmul_q_shapes();
    check_matmul_q_invariance();
    check_attention_shapes();
    check_attention_invariance();
}

Test(ops_decoder, portable_paths_match_the_reference_and_are_batch_invariant) { check_on_isa("portable"); }

Test(ops_decoder, avx2_paths_match_the_reference_and_are_batch_invariant) { check_on_isa("avx2"); }

Test(ops_decoder, attention_paged_refuses_bad_arguments) {
    ops_t *ops = make_ops(1);
    float q[64] = {0}, out[64], cache[64] = {0};
    int32_t table[2] = {0, 1}, seq_off[2] = {0, 1}, ctx[1] = {2};
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 1, ctx, 1, 2, 3, 2, 4, 2, 1.0f),
                 OPS_EINVAL, "n_heads not a multiple of n_kv_heads");
    ctx[0] = 5;
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 1, ctx, 1, 8, 2, 1, 4, 2, 1.0f),
                 OPS_EINVAL, "context longer than the block table");
    ctx[0] = 0;
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 1, ctx, 1, 8, 2, 1, 4, 2, 1.0f),
                 OPS_EINVAL, "fewer cached tokens than queries");
    ctx[0] = 2;
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 2, ctx, 1, 8, 2, 1, 4, 2, 1.0f),
                 OPS_EINVAL, "a token count other than seq_off[B]");
    cr_expect(strstr(ops->err, "seq_off[B]") != NULL, "%s", ops->err);
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 1, ctx, 1, 8, 2, 1, 4, 2, 1.0f),
                 OPS_OK, "the same call with T = seq_off[B]: %s", ops->err);
    table[0] = -1;
    cr_expect_eq(ops->attention_paged(ops, out, q, 8, cache, cache, table, 2, seq_off, 1, ctx, 1, 8, 2, 1, 4, 2, 1.0f),
                 OPS_EINVAL, "negative block id");
    cr_expect(strstr(ops->err, "block") != NULL, "%s", ops->err);
    int32_t slot = -3;
    cr_expect_eq(ops->kv_store(ops, cache, cache, q, q, 4, &slot, 1, 1, 4), OPS_EINVAL, "negative slot");
    ops_destroy(ops);
}

/* ---------------- the real model's weights ---------------- */

#define LLM_PATH "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
#define DEQUANT_FIXTURE "tests/fixtures/smollm2_dequant_sha256.txt"

static ops_wtype_t wtype_of(gguf_type_t t) {
    switch (t) {
    case GGUF_T_Q8_0: return OPS_W_Q8_0;
    case GGUF_T_Q4_0: return OPS_W_Q4_0;
    case GGUF_T_Q4_1: return OPS_W_Q4_1;
    case GGUF_T_F16: return OPS_W_F16;
    default: return OPS_W_F32;
    }
}

/* SHA-256 (hex) of a tensor's N rows of K values, dequantized by the op
 * (use_op) or by the reference formula, float32 row-major as the fixture's. */
static void dequant_sha256(ops_t *ops, const gguf_tensor_t *t, int use_op, char hex[65]) {
    enum { CHUNK = 2048 };
    int K = (int)t->ne[0], N = (int)(t->numel / t->ne[0]);
    ops_wtype_t wt = wtype_of(t->type);
    float *rows = floats((size_t)CHUNK * K);
    int32_t *ids = xmalloc(CHUNK * sizeof *ids);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    cr_assert(md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1);
    for (int r0 = 0; r0 < N; r0 += CHUNK) {
        int n = N - r0 < CHUNK ? N - r0 : CHUNK;
        for (int i = 0; i < n; i++) ids[i] = r0 + i;
        if (use_op) cr_assert_eq(ops->embed_q(ops, rows, ids, t->data, wt, n, K), 0, "embed_q: %s", ops->err);
        else dref_embed_q(rows, ids, t->data, wt, n, K);
        cr_assert(EVP_DigestUpdate(md, rows, (size_t)n * K * sizeof(float)) == 1);
    }
    unsigned char digest[32];
    unsigned int len = 0;
    cr_assert(EVP_DigestFinal_ex(md, digest, &len) == 1 && len == 32);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    EVP_MD_CTX_free(md);
    free(rows), free(ids);
}

Test(ops_decoder, real_model_dequant_is_bit_identical_to_the_gguf_package) {
    /* every Q4_1 and Q8_0 tensor of SmolLM2, dequantized by the reference
     * formula and by embed_q, hashed and held to the gguf package's dequantize
     * (tests/tools/gen_dequant_fixture.py) */
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    FILE *fx = fopen(DEQUANT_FIXTURE, "r");
    cr_assert_not_null(fx, "%s is missing (tests/tools/make_fixtures.sh)", DEQUANT_FIXTURE);
    char err[256];
    gguf_file_t *f = NULL;
    cr_assert_eq(gguf_open(LLM_PATH, &f, err, sizeof err), GGUF_OK, "%s", err);
    ops_t *ops = make_ops(1);
    char name[GGUF_MAX_NAME], type[16], want[80], got[65];
    long long numel;
    int n = 0, q8 = 0;
    while (fscanf(fx, "%255s %15s %lld %79s", name, type, &numel, want) == 4) {
        const gguf_tensor_t *t = gguf_find_tensor(f, name);
        cr_assert_not_null(t, "%s: no tensor %s", LLM_PATH, name);
        cr_assert_str_eq(gguf_type_name(t->type), type, "%s", name);
        cr_assert_eq(t->numel, numel, "%s", name);
        dequant_sha256(ops, t, 0, got);
        cr_assert_str_eq(got, want, "%s (%s): the reference formula differs from the gguf package", name, type);
        dequant_sha256(ops, t, 1, got);
        cr_assert_str_eq(got, want, "%s (%s): embed_q differs from the gguf package", name, type);
        n++;
        q8 += t->type == GGUF_T_Q8_0;
    }
    fclose(fx);
    cr_assert_eq(n, 211, "%s: %d tensors (want the model's 210 Q4_1 matrices and its Q8_0 embedding)", DEQUANT_FIXTURE,
                 n);
    cr_assert_eq(q8, 1);
    ops_destroy(ops);
    gguf_close(f);
}

Test(ops_decoder, matmul_q_on_the_real_model_weights) {
    /* the model's own blocks (their real scales and mins), against the reference */
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    char err[256];
    gguf_file_t *f = NULL;
    cr_assert_eq(gguf_open(LLM_PATH, &f, err, sizeof err), GGUF_OK, "%s", err);
    ops_t *ops = make_ops(2);
    static const char *names[] = {"blk.0.attn_q.weight", "blk.7.attn_k.weight", "blk.29.ffn_down.weight",
                                  "blk.13.ffn_gate.weight", "token_embd.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const gguf_tensor_t *t = gguf_find_tensor(f, names[i]);
        cr_assert_not_null(t, "%s", names[i]);
        int K = (int)t->ne[0], N = (int)(t->numel / t->ne[0]), T = 3;
        if (N > 4096) N = 4096; /* the head: its first rows */
        float *x = random_floats((size_t)T * K, -1, 1), *out = nan_floats((size_t)T * N);
        double *ref = doubles((size_t)T * N);
        dref_matmul_q(ref, x, t->data, wtype_of(t->type), T, K, N);
        cr_assert_eq(ops->matmul_q(ops, out, x, t->data, wtype_of(t->type), T, K, N), 0, "%s", ops->err);
        expect_close(out, ref, (size_t)T * N, TOL, names[i]);
        free(x), free(out), free(ref);
    }
    ops_destroy(ops);
    gguf_close(f);
}
