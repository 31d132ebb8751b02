/* tests/support_cuda_decoder.c - see support_cuda_decoder.h. */
#include "tests/support_cuda_decoder.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/support_decoder_ref.h"
#include "tests/support_ref.h"

const char *const cuda_decoder_families[] = {"matmul_q",  "matmul_q_mma", "embed_q",         "add_rms_norm",
                                             "rope",      "silu_mul",     "kv_store",        "attention_paged",
                                             "argmax",    "invariance",   "refusals",        NULL};

#define TOL 1e-5
#define ATT_TOL 2e-5
/* matmul_q's tensor-core path rounds x and the dequantized weights to 16 bits
 * (kernels/cuda/quant_matmul.cu): each product carries two roundings of at
 * most 2^-11 (fp16) or 2^-8 (bf16) relative, about 4e-4 and 3e-3 rms over a
 * dot product of random terms; the bounds are 5x and 3x that. */
#define MMA_TOL_F16 2e-3
#define MMA_TOL_BF16 1e-2

/* Does matmul_q run tensor cores for this call (ops.h mma_min_t)? */
static int mma_path(const ops_t *g, ops_wtype_t wt, int T) {
    return wt >= OPS_W_Q8_0 && g->mma_min_t > 0 && T >= g->mma_min_t;
}

typedef struct run {
    ops_t *gpu;
    ref_rng_t rng;
    uint64_t seed;
    cuda_parity_report_fn report;
    void *ctx;
    int failed;
    void *dev[16]; /* this check's device buffers, freed by check_end */
    int ndev;
    char msg[480]; /* the first setup or op failure of this check (leaves room for the seed in the result) */
} run_t;

static const char *wname(ops_wtype_t w) {
    static const char *names[] = {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"};
    return (unsigned)w < 5 ? names[w] : "?";
}

static void note(run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(run_t *r, const char *fmt, ...) {
    if (r->msg[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

/* A device copy of bytes of host (NULL host: left unset); NULL with a note on failure. */
static void *dev_put(run_t *r, const void *host, size_t bytes) {
    if (r->msg[0] || r->ndev == (int)(sizeof r->dev / sizeof r->dev[0])) return NULL;
    void *d = r->gpu->mem_alloc(r->gpu, bytes);
    if (!d) {
        note(r, "mem_alloc(%zu): %s", bytes, r->gpu->err);
        return NULL;
    }
    r->dev[r->ndev++] = d;
    if (host && (r->gpu->upload(r->gpu, d, host, bytes) || r->gpu->sync(r->gpu))) note(r, "upload: %s", r->gpu->err);
    return d;
}

/* n floats of NaN on the device: an element the op forgets shows. */
static float *dev_nan(run_t *r, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) {
        note(r, "out of host memory");
        return NULL;
    }
    ref_fill_nan(h, n);
    float *d = dev_put(r, h, n * sizeof *h);
    free(h);
    return d;
}

static void dev_get(run_t *r, void *host, const void *dev, size_t bytes) {
    if (r->msg[0]) return;
    if (r->gpu->download(r->gpu, host, dev, bytes) || r->gpu->sync(r->gpu)) note(r, "download: %s", r->gpu->err);
}

static void op_rc(run_t *r, int rc, const char *op) {
    if (rc) note(r, "%s returned %d: %s", op, rc, r->gpu->err);
    else if (r->gpu->sync(r->gpu)) note(r, "%s: sync: %s", op, r->gpu->err);
}

/* Reports one check and frees its device buffers. */
static void check_end(run_t *r, const char *name, double rel_err, double tol, long bad) {
    cuda_parity_result_t res;
    memset(&res, 0, sizeof res);
    snprintf(res.name, sizeof res.name, "%s", name);
    res.dtype = r->gpu->dtype;
    res.rel_err = rel_err;
    res.tol = tol;
    res.bad_index = bad;
    res.passed = !r->msg[0] && bad < 0 && rel_err <= tol;
    if (r->msg[0]) snprintf(res.msg, sizeof res.msg, "%s [seed %llu]", r->msg, (unsigned long long)r->seed);
    else if (bad >= 0) snprintf(res.msg, sizeof res.msg, "element %ld not written or not finite [seed %llu]", bad,
                                (unsigned long long)r->seed);
    else if (!res.passed) snprintf(res.msg, sizeof res.msg, "error %.3e over %.0e [seed %llu]", rel_err, tol,
                                   (unsigned long long)r->seed);
    if (!res.passed) r->failed++;
    if (r->report) r->report(&res, r->ctx);
    for (int i = 0; i < r->ndev; i++) r->gpu->mem_free(r->gpu, r->dev[i]);
    r->ndev = 0;
    r->msg[0] = '\0';
}

/* Compares n floats with a double reference. */
static void judge(run_t *r, const char *name, const float *out, const double *ref, size_t n, double tol) {
    long bad = r->msg[0] ? -1 : ref_first_nonfinite(out, n);
    double err = r->msg[0] || bad >= 0 ? NAN : ref_rel_error(out, ref, n);
    check_end(r, name, r->msg[0] || bad >= 0 ? INFINITY : err, tol, bad);
}

/* Bit-for-bit: rel_err 0 when equal, 1 when not. */
static void judge_bits(run_t *r, const char *name, const void *a, const void *b, size_t bytes) {
    int same = !r->msg[0] && memcmp(a, b, bytes) == 0;
    if (!r->msg[0] && !same) note(r, "not bit-identical");
    check_end(r, name, same ? 0.0 : 1.0, 0.0, -1);
}

static float *rnd(run_t *r, size_t n, double lo, double hi) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p) ref_fill_uniform(&r->rng, p, n, lo, hi);
    return p;
}

/* ---------------- matmul_q ---------------- */

static const ops_wtype_t all_wtypes[] = {OPS_W_Q8_0, OPS_W_Q4_0, OPS_W_Q4_1, OPS_W_F16, OPS_W_F32};

static void check_matmul_q(run_t *r, ops_wtype_t wt, int T, int K, int N) {
    char name[160];
    const int mma = mma_path(r->gpu, wt, T);
    const double tol = !mma ? TOL : r->gpu->dtype == OPS_BF16 ? MMA_TOL_BF16 : MMA_TOL_F16;
    snprintf(name, sizeof name, "matmul_q %s T=%d K=%d N=%d%s", wname(wt), T, K, N,
             !mma ? "" : r->gpu->dtype == OPS_BF16 ? " (tensor cores, bf16)" : " (tensor cores, fp16)");
    void *W = dref_random_weights(&r->rng, wt, N, K);
    float *x = rnd(r, (size_t)T * K, -1, 1), *out = malloc((size_t)T * N * sizeof *out);
    double *ref = malloc((size_t)T * N * sizeof *ref);
    if (!W || !x || !out || !ref) note(r, "out of host memory");
    else {
        dref_matmul_q(ref, x, W, wt, T, K, N);
        void *dW = dev_put(r, W, (size_t)N * dref_row_bytes(wt, K));
        float *dx = dev_put(r, x, (size_t)T * K * sizeof *x), *dout = dev_nan(r, (size_t)T * N);
        if (!r->msg[0]) op_rc(r, r->gpu->matmul_q(r->gpu, dout, dx, dW, wt, T, K, N), "matmul_q");
        dev_get(r, out, dout, (size_t)T * N * sizeof *out);
    }
    judge(r, name, out, ref, (size_t)T * N, tol);
    free(W), free(x), free(out), free(ref);
}

static void family_matmul_q(run_t *r) {
    /* the model's shapes (QKV 960, gate|up 3072, the LM head's K), T of decode
     * batches and prefill tiles, N not a multiple of the 4 rows a block takes */
    static const int shapes[][3] = {{1, 576, 960},  {1, 576, 576}, {1, 1536, 576}, {3, 576, 3072}, {8, 576, 192},
                                    {9, 576, 193},  {37, 288, 61}, {130, 64, 9},   {2, 32, 1},     {1, 576, 4099}};
    for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_matmul_q(r, all_wtypes[w], shapes[s][0], shapes[s][1], shapes[s][2]);
    /* dense rows need not be whole blocks */
    static const int dense[][3] = {{1, 1, 1}, {4, 7, 5}, {6, 45, 17}, {13, 581, 40}};
    for (int w = OPS_W_F32; w <= OPS_W_F16; w++)
        for (size_t s = 0; s < sizeof dense / sizeof dense[0]; s++)
            check_matmul_q(r, (ops_wtype_t)w, dense[s][0], dense[s][1], dense[s][2]);
}

/* The tensor-core path: T at and past the threshold, tiles cut at every edge
 * (T and N not multiples of 64, K of one block), the model's shapes. Fails on a
 * backend without the path (mma_min_t 0): it must not pass by testing the GEMV. */
static void family_matmul_q_mma(run_t *r) {
    const int mt = r->gpu->mma_min_t;
    if (mt <= 0) {
        note(r, "the backend has no tensor-core path (mma_min_t %d; SLUICE_CUDA_MMA_MIN_T or SLUICE_CUDA_FALLBACK set?)",
             mt);
        check_end(r, "matmul_q tensor cores: present", 1.0, 0.0, -1);
        return;
    }
    const int shapes[][3] = {{mt, 576, 960},  {64, 576, 3072}, {mt + 49, 1536, 576}, {200, 32, 63},
                             {300, 576, 1},   {1000, 576, 192}, {128, 576, 4099},    {2048, 64, 130}};
    static const ops_wtype_t blocked[] = {OPS_W_Q8_0, OPS_W_Q4_0, OPS_W_Q4_1};
    for (size_t w = 0; w < sizeof blocked / sizeof blocked[0]; w++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_matmul_q(r, blocked[w], shapes[s][0] < mt ? mt : shapes[s][0], shapes[s][1], shapes[s][2]);
}

/* ---------------- argmax ---------------- */

/* The rule of ops.h, in plain C: the first of the largest, NaN skipped, 0 when none. */
static int32_t ref_argmax(const float *x, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

static void family_argmax(run_t *r) {
    static const int shapes[][2] = {{1, 49152}, {7, 1000}, {64, 49152}, {3, 1}, {5, 33}, {2, 50001}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], n = shapes[s][1];
        char name[160];
        snprintf(name, sizeof name, "argmax rows=%d n=%d (ties, NaN, -inf rows; exact)", rows, n);
        float *x = rnd(r, (size_t)rows * n, -20, 20);
        int32_t *got = malloc(rows * sizeof *got), *want = malloc(rows * sizeof *want);
        if (!x || !got || !want) note(r, "out of host memory");
        else {
            for (int b = 0; b < rows; b++) {
                float *row = x + (size_t)b * n;
                const int kind = b % 5;
                if (kind == 1 && n > 2) { /* a tie: the maximum again at a random earlier and later place */
                    int at = ref_argmax(row, n), lo = ref_rng_int(&r->rng, 0, n - 1), hi = ref_rng_int(&r->rng, 0, n - 1);
                    row[lo] = row[at], row[hi] = row[at];
                } else if (kind == 2) { /* NaN in every 7th column, the first included */
                    for (int i = 0; i < n; i += 7) row[i] = NAN;
                } else if (kind == 3 && b >= 3) { /* every value -inf, or every value NaN */
                    for (int i = 0; i < n; i++) row[i] = b % 2 ? -INFINITY : NAN;
                } else if (kind == 4) { /* the maximum in the last column */
                    row[n - 1] = 1e30f;
                }
                want[b] = ref_argmax(row, n);
                got[b] = -7;
            }
            float *dx = dev_put(r, x, (size_t)rows * n * sizeof *x);
            int32_t *dout = dev_put(r, got, rows * sizeof *got);
            if (!r->msg[0]) op_rc(r, r->gpu->argmax ? r->gpu->argmax(r->gpu, dout, dx, rows, n) : -1, "argmax");
            dev_get(r, got, dout, rows * sizeof *got);
            for (int b = 0; b < rows && !r->msg[0]; b++)
                if (got[b] != want[b]) note(r, "row %d: %d, the reference %d", b, got[b], want[b]);
        }
        check_end(r, name, r->msg[0] ? 1.0 : 0.0, 0.0, -1);
        free(x), free(got), free(want);
    }
}

/* ---------------- embed_q ---------------- */

static void family_embed_q(run_t *r) {
    static const int shapes[][3] = {{1, 576, 50}, {7, 576, 300}, {33, 64, 5}, {3, 32, 2}}; /* T, H, V */
    for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            ops_wtype_t wt = all_wtypes[w];
            int T = shapes[s][0], H = shapes[s][1], V = shapes[s][2];
            char name[160];
            snprintf(name, sizeof name, "embed_q %s T=%d H=%d V=%d (bits)", wname(wt), T, H, V);
            void *table = dref_random_weights(&r->rng, wt, V, H);
            int32_t *ids = malloc(T * sizeof *ids);
            float *out = malloc((size_t)T * H * sizeof *out), *ref = malloc((size_t)T * H * sizeof *ref);
            if (!table || !ids || !out || !ref) {
                note(r, "out of host memory");
                judge_bits(r, name, "", "", 0);
            } else {
                for (int t = 0; t < T; t++) ids[t] = ref_rng_int(&r->rng, 0, V - 1);
                if (T > 2) ids[T - 1] = V - 1, ids[0] = 0; /* both ends of the table */
                dref_embed_q(ref, ids, table, wt, T, H);
                void *dt = dev_put(r, table, (size_t)V * dref_row_bytes(wt, H));
                int32_t *di = dev_put(r, ids, T * sizeof *ids);
                float *dout = dev_nan(r, (size_t)T * H);
                if (!r->msg[0]) op_rc(r, r->gpu->embed_q(r->gpu, dout, di, dt, wt, T, H), "embed_q");
                dev_get(r, out, dout, (size_t)T * H * sizeof *out);
                judge_bits(r, name, out, ref, (size_t)T * H * sizeof *out);
            }
            free(table), free(ids), free(out), free(ref);
        }
}

/* ---------------- add_rms_norm ---------------- */

static void check_rms(run_t *r, int T, int H, int with_delta, int alias) {
    char name[160];
    snprintf(name, sizeof name, "add_rms_norm T=%d H=%d%s%s", T, H, with_delta ? " +delta" : "",
             alias ? " out=delta" : "");
    size_t n = (size_t)T * H;
    float *resid = rnd(r, n, -2, 2), *delta = rnd(r, n, -1, 1), *w = rnd(r, H, 0.5, 1.5);
    float *out = malloc(n * sizeof *out), *resid_ref = malloc(n * sizeof *resid_ref),
          *resid_got = malloc(n * sizeof *resid_got);
    double *ref = malloc(n * sizeof *ref);
    if (!resid || !delta || !w || !out || !resid_ref || !resid_got || !ref) note(r, "out of host memory");
    else {
        dref_add_rms_norm(ref, resid_ref, resid, with_delta ? delta : NULL, w, T, H, 1e-5);
        float *dr = dev_put(r, resid, n * sizeof(float)), *dd = dev_put(r, delta, n * sizeof(float));
        float *dw = dev_put(r, w, H * sizeof(float)), *dout = alias ? dd : dev_nan(r, n);
        if (!r->msg[0])
            op_rc(r, r->gpu->add_rms_norm(r->gpu, dout, dr, with_delta ? dd : NULL, dw, T, H, 1e-5f), "add_rms_norm");
        dev_get(r, out, dout, n * sizeof *out);
        dev_get(r, resid_got, dr, n * sizeof *resid_got);
        /* the residual stream must be resid + delta exactly (one float add) */
        if (!r->msg[0] && memcmp(resid_got, resid_ref, n * sizeof(float)))
            note(r, "the updated residual is not resid + delta bit for bit");
    }
    judge(r, name, out, ref, n, TOL);
    free(resid), free(delta), free(w), free(out), free(resid_ref), free(resid_got), free(ref);
}

static void family_add_rms_norm(run_t *r) {
    static const int shapes[][2] = {{1, 576}, {7, 576}, {33, 1000}, {5, 3}, {2, 4096}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        check_rms(r, shapes[s][0], shapes[s][1], 0, 0);
        check_rms(r, shapes[s][0], shapes[s][1], 1, 0);
        check_rms(r, shapes[s][0], shapes[s][1], 1, 1);
    }
}

/* ---------------- rope ---------------- */

static void check_rope(run_t *r, int T, int n_heads, int head_dim, int row_stride, int max_pos) {
    char name[160];
    snprintf(name, sizeof name, "rope T=%d heads=%d d=%d stride=%d pos<=%d", T, n_heads, head_dim, row_stride,
             max_pos);
    size_t n = (size_t)T * row_stride;
    float *x = rnd(r, n, -1, 1), *out = malloc(n * sizeof *out);
    int32_t *pos = malloc(T * sizeof *pos);
    double *ref = malloc(n * sizeof *ref);
    if (!x || !out || !pos || !ref) note(r, "out of host memory");
    else {
        for (int t = 0; t < T; t++) pos[t] = ref_rng_int(&r->rng, 0, max_pos);
        pos[0] = max_pos;
        dref_rope(ref, x, pos, T, n_heads, head_dim, row_stride, 10000.0f);
        float *dx = dev_put(r, x, n * sizeof *x);
        int32_t *dp = dev_put(r, pos, T * sizeof *pos);
        if (!r->msg[0])
            op_rc(r, r->gpu->rope(r->gpu, dx, dp, T, n_heads, head_dim, row_stride, 10000.0f), "rope");
        dev_get(r, out, dx, n * sizeof *out);
    }
    judge(r, name, out, ref, n, TOL);
    free(x), free(out), free(pos), free(ref);
}

static void family_rope(run_t *r) {
    check_rope(r, 1, 9, 64, 960, 5);
    check_rope(r, 7, 9, 64, 960, 2047);
    check_rope(r, 5, 3, 64, 192, 8191); /* the k part of a fused row, as its own block */
    check_rope(r, 3, 4, 128, 520, 30000);
    check_rope(r, 2, 1, 2, 2, 1);
}

/* ---------------- silu_mul ---------------- */

static void family_silu_mul(run_t *r) {
    static const int shapes[][2] = {{1, 1536}, {7, 1536}, {3, 5}, {64, 100}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], F = shapes[s][1];
        char name[160];
        snprintf(name, sizeof name, "silu_mul T=%d F=%d", T, F);
        float *gu = rnd(r, (size_t)T * 2 * F, -6, 6), *out = malloc((size_t)T * F * sizeof *out);
        double *ref = malloc((size_t)T * F * sizeof *ref);
        if (!gu || !out || !ref) note(r, "out of host memory");
        else {
            dref_silu_mul(ref, gu, T, F);
            float *dg = dev_put(r, gu, (size_t)T * 2 * F * sizeof *gu), *dout = dev_nan(r, (size_t)T * F);
            if (!r->msg[0]) op_rc(r, r->gpu->silu_mul(r->gpu, dout, dg, T, F), "silu_mul");
            dev_get(r, out, dout, (size_t)T * F * sizeof *out);
        }
        judge(r, name, out, ref, (size_t)T * F, TOL);
        free(gu), free(out), free(ref);
    }
}

/* ---------------- the paged cache ---------------- */

/* B sequences in a paged fp16 cache on the device: a shuffled block table with
 * spare blocks nobody uses (holes), every position's k and v stored through
 * kv_store from rows at a stride wider than the values (inside a fused QKV
 * row). The host keeps the float32 cache of the stored fp16 values for the
 * reference. */
typedef struct cache {
    int B, n_kv, d, bs, max_blocks, n_blocks, max_ctx;
    int32_t *ctx_len, *table;     /* host: (B), (B, max_blocks) */
    float *k_ref, *v_ref;         /* host: (n_blocks, bs, n_kv, d), fp16 values widened (0 where unused) */
    uint16_t *kh, *vh;            /* host: the fp16 bits kv_store must have written */
    void *dk, *dv;                /* device caches */
    int32_t *dtable, *dctx;       /* device copies */
} cache_t;

static void cache_free(cache_t *c) {
    free(c->ctx_len), free(c->table), free(c->k_ref), free(c->v_ref), free(c->kh), free(c->vh);
    memset(c, 0, sizeof *c);
}

/* Returns 0, or -1 with a note (the caller's check then fails). */
static int cache_make(run_t *r, cache_t *c, int B, const int *lens, int n_kv, int d, int bs) {
    memset(c, 0, sizeof *c);
    if (r->gpu->kv_dtype != OPS_F16) { /* the checks below compare fp16 bits */
        note(r, "the backend's KV cache is %s, these checks need fp16", ops_dtype_name(r->gpu->kv_dtype));
        return -1;
    }
    c->B = B, c->n_kv = n_kv, c->d = d, c->bs = bs;
    for (int b = 0; b < B; b++) c->max_ctx = lens[b] > c->max_ctx ? lens[b] : c->max_ctx;
    c->max_blocks = (c->max_ctx + bs - 1) / bs + 1;
    c->n_blocks = B * c->max_blocks + 5;
    const int W = n_kv * d, stride = W + 3;
    const size_t cn = (size_t)c->n_blocks * bs * W;
    c->ctx_len = malloc(B * sizeof *c->ctx_len);
    c->table = malloc((size_t)B * c->max_blocks * sizeof *c->table);
    c->k_ref = calloc(cn, sizeof(float)), c->v_ref = calloc(cn, sizeof(float));
    c->kh = calloc(cn, sizeof(uint16_t)), c->vh = calloc(cn, sizeof(uint16_t));
    int32_t *perm = malloc(c->n_blocks * sizeof *perm);
    if (!c->ctx_len || !c->table || !c->k_ref || !c->v_ref || !c->kh || !c->vh || !perm) {
        free(perm);
        note(r, "out of host memory");
        return -1;
    }
    for (int i = 0; i < c->n_blocks; i++) perm[i] = i;
    for (int i = c->n_blocks - 1; i > 0; i--) {
        int k = ref_rng_int(&r->rng, 0, i), tmp = perm[i];
        perm[i] = perm[k], perm[k] = tmp;
    }
    for (int i = 0; i < B * c->max_blocks; i++) c->table[i] = perm[i];
    free(perm);
    c->dk = dev_put(r, NULL, cn * 2), c->dv = dev_put(r, NULL, cn * 2);
    for (int b = 0; b < B && !r->msg[0]; b++) {
        const int L = lens[b];
        c->ctx_len[b] = L;
        float *k = rnd(r, (size_t)(L ? L : 1) * stride, -1, 1), *v = rnd(r, (size_t)(L ? L : 1) * stride, -1, 1);
        int32_t *slot = malloc((L ? L : 1) * sizeof *slot);
        if (!k || !v || !slot) note(r, "out of host memory");
        for (int j = 0; j < L && !r->msg[0]; j++) {
            slot[j] = c->table[b * c->max_blocks + j / bs] * bs + j % bs;
            for (int e = 0; e < W; e++) {
                size_t at = (size_t)slot[j] * W + e;
                c->kh[at] = dref_float_to_half(k[(size_t)j * stride + e]);
                c->vh[at] = dref_float_to_half(v[(size_t)j * stride + e]);
                c->k_ref[at] = dref_half_to_float(c->kh[at]);
                c->v_ref[at] = dref_half_to_float(c->vh[at]);
            }
        }
        if (L && !r->msg[0]) {
            const int mark = r->ndev;
            float *dk = dev_put(r, k, (size_t)L * stride * sizeof *k), *dv = dev_put(r, v, (size_t)L * stride * sizeof *v);
            int32_t *ds = dev_put(r, slot, L * sizeof *slot);
            if (!r->msg[0]) op_rc(r, r->gpu->kv_store(r->gpu, c->dk, c->dv, dk, dv, stride, ds, L, n_kv, d), "kv_store");
            /* give these back at once (the cache outlives them) */
            while (r->ndev > mark) r->gpu->mem_free(r->gpu, r->dev[--r->ndev]);
        }
        free(k), free(v), free(slot);
    }
    c->dtable = dev_put(r, c->table, (size_t)B * c->max_blocks * sizeof *c->table);
    c->dctx = dev_put(r, c->ctx_len, B * sizeof *c->ctx_len);
    return r->msg[0] ? -1 : 0;
}

/* Downloads the device cache and compares the slots written with the expected fp16 bits. */
static int cache_bits_ok(run_t *r, const cache_t *c) {
    const size_t cn = (size_t)c->n_blocks * c->bs * c->n_kv * c->d;
    uint16_t *k = malloc(cn * 2), *v = malloc(cn * 2);
    int ok = 0;
    if (k && v) {
        dev_get(r, k, c->dk, cn * 2);
        dev_get(r, v, c->dv, cn * 2);
        ok = !r->msg[0];
        const int W = c->n_kv * c->d;
        for (int b = 0; b < c->B && ok; b++)
            for (int j = 0; j < c->ctx_len[b] && ok; j++) {
                size_t at = ((size_t)c->table[b * c->max_blocks + j / c->bs] * c->bs + j % c->bs) * W;
                ok = !memcmp(k + at, c->kh + at, W * 2) && !memcmp(v + at, c->vh + at, W * 2);
            }
    }
    free(k), free(v);
    return ok;
}

static void family_kv_store(run_t *r) {
    static const int cfg[][4] = {{3, 64, 16, 0}, {1, 128, 7, 1}, {4, 20, 1, 2}}; /* n_kv, d, bs, lens set */
    static const int lens[][3] = {{1, 17, 40}, {130, 3, 64}, {9, 1, 23}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "kv_store n_kv=%d d=%d bs=%d lens=%d,%d,%d (fp16 bits)", cfg[i][0], cfg[i][1],
                 cfg[i][2], lens[cfg[i][3]][0], lens[cfg[i][3]][1], lens[cfg[i][3]][2]);
        cache_t c;
        memset(&c, 0, sizeof c);
        int ok = cache_make(r, &c, 3, lens[cfg[i][3]], cfg[i][0], cfg[i][1], cfg[i][2]) == 0 && cache_bits_ok(r, &c);
        if (!ok && !r->msg[0]) note(r, "a stored k or v is not the fp16 rounding of its float");
        check_end(r, name, ok ? 0.0 : 1.0, 0.0, -1);
        cache_free(&c);
    }
}

/* Runs attention_paged for queries n[b] (the last n[b] positions of each
 * sequence) of q (T, q_stride) on the device; out (T, n_heads*d) on the host.
 * table/ctx: device arrays for these B sequences (a view into a cache's). */
static void run_attention_via(run_t *r, const cache_t *c, float *out, const float *q, int q_stride, int B,
                              const int *n, const int32_t *dtable, const int32_t *dctx, int max_ctx, int n_heads,
                              ops_t *uploader);

static void run_attention(run_t *r, const cache_t *c, float *out, const float *q, int q_stride, int B,
                          const int *n, const int32_t *dtable, const int32_t *dctx, int max_ctx, int n_heads) {
    run_attention_via(r, c, out, q, q_stride, B, n, dtable, dctx, max_ctx, n_heads, NULL);
}

/* uploader: the ops_t that uploads seq_off (NULL: r->gpu). A sibling (its own
 * stream, synced before the op) must lead to the same bits as r->gpu itself. */
static void run_attention_via(run_t *r, const cache_t *c, float *out, const float *q, int q_stride, int B,
                              const int *n, const int32_t *dtable, const int32_t *dctx, int max_ctx, int n_heads,
                              ops_t *uploader) {
    int T = 0;
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    if (!seq_off) {
        note(r, "out of host memory");
        return;
    }
    seq_off[0] = 0;
    for (int b = 0; b < B; b++) seq_off[b + 1] = seq_off[b] + n[b];
    T = seq_off[B];
    const int H = n_heads * c->d, mark = r->ndev;
    float *dq = dev_put(r, q, (size_t)(T ? T : 1) * q_stride * sizeof *q), *dout = dev_nan(r, (size_t)T * H);
    int32_t *doff = dev_put(r, uploader ? NULL : seq_off, (B + 1) * sizeof *seq_off);
    if (uploader && doff &&
        (uploader->upload(uploader, doff, seq_off, (B + 1) * sizeof *seq_off) || uploader->sync(uploader)))
        note(r, "sibling upload: %s", uploader->err);
    if (!r->msg[0])
        op_rc(r, r->gpu->attention_paged(r->gpu, dout, dq, q_stride, c->dk, c->dv, dtable, c->max_blocks, doff, T,
                                         dctx, B, max_ctx, n_heads, c->n_kv, c->d, c->bs, 0.125f),
              "attention_paged");
    dev_get(r, out, dout, (size_t)T * H * sizeof *out);
    /* free this call's buffers now: a check may run several calls */
    while (r->ndev > mark) r->gpu->mem_free(r->gpu, r->dev[--r->ndev]);
    free(seq_off);
}

static void check_attention(run_t *r, int B, const int *lens, const int *n, int n_heads, int n_kv, int d, int bs) {
    char name[160];
    int T = 0, longest = 0;
    for (int b = 0; b < B; b++) T += n[b], longest = lens[b] > longest ? lens[b] : longest;
    snprintf(name, sizeof name, "attention_paged B=%d T=%d ctx<=%d heads=%d/%d d=%d bs=%d", B, T, longest, n_heads,
             n_kv, d, bs);
    const int H = n_heads * d, q_stride = H + 2 * n_kv * d;
    cache_t c;
    memset(&c, 0, sizeof c);
    float *q = rnd(r, (size_t)(T ? T : 1) * q_stride, -1.5, 1.5), *out = malloc((size_t)(T ? T : 1) * H * sizeof *out);
    double *ref = malloc((size_t)(T ? T : 1) * H * sizeof *ref);
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    if (!q || !out || !ref || !seq_off) note(r, "out of host memory");
    else if (cache_make(r, &c, B, lens, n_kv, d, bs) == 0) {
        seq_off[0] = 0;
        for (int b = 0; b < B; b++) seq_off[b + 1] = seq_off[b] + n[b];
        dref_attention_paged(ref, q, q_stride, c.k_ref, c.v_ref, c.table, c.max_blocks, seq_off, c.ctx_len, B,
                             n_heads, n_kv, d, bs, 0.125);
        run_attention(r, &c, out, q, q_stride, B, n, c.dtable, c.dctx, c.max_ctx, n_heads);
    }
    judge(r, name, out, ref, (size_t)T * H, ATT_TOL);
    cache_free(&c);
    free(q), free(out), free(ref), free(seq_off);
}

static void family_attention_paged(run_t *r) {
    { /* decode: one query each, lengths not multiples of the block, GQA 3; one past a split */
        int lens[] = {1, 17, 40, 300, 33}, n[] = {1, 1, 1, 1, 1};
        check_attention(r, 5, lens, n, 9, 3, 64, 16);
    }
    { /* prefill of whole prompts and a chunk, mixed with decodes, over several splits */
        int lens[] = {70, 5, 260, 16}, n[] = {70, 1, 150, 16};
        check_attention(r, 4, lens, n, 9, 3, 64, 16);
    }
    { /* GQA 1, odd head_dim, block of 1 and of 7 */
        int lens[] = {9, 23}, n[] = {4, 23};
        check_attention(r, 2, lens, n, 4, 4, 20, 7);
        check_attention(r, 2, lens, n, 4, 4, 24, 1);
    }
    { /* a sequence with no queries in the call; GQA 16 (4 heads a warp) with head_dim 128 */
        int lens[] = {12, 30}, n[] = {0, 3};
        check_attention(r, 2, lens, n, 6, 2, 16, 8);
        check_attention(r, 2, lens, n, 16, 1, 128, 16);
    }
    { /* GQA 8, a long context: many splits */
        int lens[] = {1000, 129}, n[] = {1, 2};
        check_attention(r, 2, lens, n, 32, 4, 128, 32);
    }
}

/* ---------------- batch invariance ---------------- */

/* Rows of one call of Tw tokens against calls of parts of it: rows 0..Tw-1
 * alone (T = 1) when single, rows [a, a+na) and [b, b+nb) as calls of their own.
 * Every call is on one side of mma_min_t (the caller picks the sizes). */
static void invariance_matmul_q_calls(run_t *r, ops_wtype_t wt, int Tw, int single, int a, int na, int b, int nb,
                                      const char *path) {
    const int K = 576, N = 200;
    char name[160];
    snprintf(name, sizeof name, "invariance matmul_q %s %s: %s %d..%d, %d..%d vs all %d (bits)", wname(wt), path,
             single ? "each row alone, rows" : "rows", a, a + na - 1, b, b + nb - 1, Tw);
    void *W = dref_random_weights(&r->rng, wt, N, K);
    float *x = rnd(r, (size_t)Tw * K, -1, 1), *whole = malloc((size_t)Tw * N * 4), *part = malloc((size_t)Tw * N * 4);
    int same = 0;
    if (!W || !x || !whole || !part) note(r, "out of host memory");
    else {
        void *dW = dev_put(r, W, (size_t)N * dref_row_bytes(wt, K));
        float *dx = dev_put(r, x, (size_t)Tw * K * 4), *dout = dev_nan(r, (size_t)Tw * N);
        if (!r->msg[0]) op_rc(r, r->gpu->matmul_q(r->gpu, dout, dx, dW, wt, Tw, K, N), "matmul_q");
        dev_get(r, whole, dout, (size_t)Tw * N * 4);
        same = 1;
        for (int t = 0; single && t < Tw && same && !r->msg[0]; t++) {
            op_rc(r, r->gpu->matmul_q(r->gpu, dout, dx + (size_t)t * K, dW, wt, 1, K, N), "matmul_q");
            dev_get(r, part, dout, (size_t)N * 4);
            same = !memcmp(part, whole + (size_t)t * N, (size_t)N * 4);
        }
        const int from[2] = {a, b}, cnt[2] = {na, nb};
        for (int c = 0; c < 2 && same && !r->msg[0]; c++) {
            op_rc(r, r->gpu->matmul_q(r->gpu, dout, dx + (size_t)from[c] * K, dW, wt, cnt[c], K, N), "matmul_q");
            dev_get(r, part, dout, (size_t)cnt[c] * N * 4);
            same = !memcmp(part, whole + (size_t)from[c] * N, (size_t)cnt[c] * N * 4);
        }
    }
    judge_bits(r, name, &same, &(int){1}, sizeof same);
    free(W), free(x), free(whole), free(part);
}

/* Each path of matmul_q on its own (ops.h: bit-identical rows among calls on
 * one side of mma_min_t): the GEMV with calls under the threshold, the tensor
 * cores with calls at or over it. */
static void invariance_matmul_q(run_t *r, ops_wtype_t wt) {
    const int mt = wt >= OPS_W_Q8_0 ? r->gpu->mma_min_t : 0;
    if (mt <= 0) invariance_matmul_q_calls(r, wt, 37, 1, 5, 8, 20, 17, "(one path)");
    else {
        if (mt > 1) {
            const int Tg = mt - 1 < 37 ? mt - 1 : 37; /* the GEMV's largest call */
            invariance_matmul_q_calls(r, wt, Tg, 1, Tg / 3, Tg - Tg / 3, 0, (Tg + 1) / 2, "GEMV");
        }
        invariance_matmul_q_calls(r, wt, mt + 84, 0, 5, mt + 21, 84, mt, "tensor cores");
    }
}

/* Sequence 2 alone (B = 1: one split, the direct path; seq_off uploaded by this
 * ops_t, then by a sibling) and among others
 * with a context of 700 (six splits and the merge); then its prompt in two
 * chunks. */
static void invariance_attention(run_t *r) {
    int lens[] = {30, 700, 77, 5}, n[] = {30, 1, 77, 1};
    const int n_heads = 9, n_kv = 3, d = 64, H = n_heads * d, q_stride = H + 2 * n_kv * d, T = 30 + 1 + 77 + 1, at = 31;
    cache_t c;
    memset(&c, 0, sizeof c);
    float *q = rnd(r, (size_t)T * q_stride, -1.5, 1.5), *all = malloc((size_t)T * H * 4),
          *alone = malloc((size_t)77 * H * 4), *chunked = malloc((size_t)77 * H * 4);
    int same_alone = 0, same_chunked = 0;
    if (!q || !all || !alone || !chunked) note(r, "out of host memory");
    else if (cache_make(r, &c, 4, lens, n_kv, d, 16) == 0) {
        run_attention(r, &c, all, q, q_stride, 4, n, c.dtable, c.dctx, c.max_ctx, n_heads);
        int n_one[] = {77}, n40[] = {40}, n37[] = {37};
        int32_t ctx40 = 40;
        run_attention(r, &c, alone, q + (size_t)at * q_stride, q_stride, 1, n_one, c.dtable + 2 * c.max_blocks,
                      c.dctx + 2, 77, n_heads);
        same_alone = !r->msg[0] && !memcmp(alone, all + (size_t)at * H, (size_t)77 * H * 4);
        ops_t *sib = r->gpu->clone(r->gpu);
        if (!sib) note(r, "clone: %s", r->gpu->err);
        else {
            memset(alone, 0, (size_t)77 * H * 4);
            run_attention_via(r, &c, alone, q + (size_t)at * q_stride, q_stride, 1, n_one, c.dtable + 2 * c.max_blocks,
                              c.dctx + 2, 77, n_heads, sib);
            same_alone = same_alone && !r->msg[0] && !memcmp(alone, all + (size_t)at * H, (size_t)77 * H * 4);
            ops_destroy(sib);
        }
        int32_t *d40 = dev_put(r, &ctx40, sizeof ctx40);
        run_attention(r, &c, chunked, q + (size_t)at * q_stride, q_stride, 1, n40, c.dtable + 2 * c.max_blocks, d40,
                      c.max_ctx, n_heads);
        run_attention(r, &c, chunked + (size_t)40 * H, q + (size_t)(at + 40) * q_stride, q_stride, 1, n37,
                      c.dtable + 2 * c.max_blocks, c.dctx + 2, 77, n_heads);
        same_chunked = !r->msg[0] && !memcmp(chunked, all + (size_t)at * H, (size_t)77 * H * 4);
    }
    int both = same_alone && same_chunked;
    if (!r->msg[0] && !both)
        note(r, "%s differs", !same_alone ? "the sequence alone (one split; seq_off uploaded here, "
                                            "then by a sibling) vs among others (six)" : "the chunked prompt");
    judge_bits(r, "invariance attention_paged: alone vs among others, chunked vs whole (bits)", &both, &(int){1},
               sizeof both);
    cache_free(&c);
    free(q), free(all), free(alone), free(chunked);
}

static void family_invariance(run_t *r) {
    for (size_t w = 0; w < sizeof all_wtypes / sizeof all_wtypes[0]; w++) invariance_matmul_q(r, all_wtypes[w]);
    invariance_attention(r);
}

/* ---------------- refusals ---------------- */

static void refuse(run_t *r, const char *what, int rc, int want, const char *needle) {
    char name[160];
    snprintf(name, sizeof name, "refusal: %s", what);
    if (rc != want) note(r, "returned %d, expected %d (%s)", rc, want, r->gpu->err);
    else if (needle && !strstr(r->gpu->err, needle)) note(r, "message lacks \"%s\": %s", needle, r->gpu->err);
    check_end(r, name, r->msg[0] ? 1.0 : 0.0, 0.0, -1);
}

static void family_refusals(run_t *r) {
    ops_t *g = r->gpu;
    float *buf = dev_put(r, NULL, 4096);
    if (!buf) {
        check_end(r, "refusal: setup", 1.0, 0.0, -1);
        return;
    }
    r->ndev = 0; /* kept across the checks below, freed at the end */
    refuse(r, "matmul_q K not a multiple of 32", g->matmul_q(g, buf, buf + 256, buf, OPS_W_Q4_1, 1, 48, 1), OPS_EINVAL,
           "multiple of 32");
    refuse(r, "matmul_q unknown type", g->matmul_q(g, buf, buf + 256, buf, (ops_wtype_t)9, 1, 32, 1), OPS_EINVAL, "type");
    refuse(r, "matmul_q out aliases x", g->matmul_q(g, buf, buf, buf, OPS_W_F32, 1, 4, 1), OPS_EINVAL, "alias");
    refuse(r, "argmax n = 0", g->argmax ? g->argmax(g, (int32_t *)buf, buf, 1, 0) : OPS_OK, OPS_EINVAL, "shape");
    refuse(r, "matmul_q T = 0 is a no-op", g->matmul_q(g, NULL, NULL, NULL, OPS_W_Q8_0, 0, 32, 1), OPS_OK, NULL);
    refuse(r, "embed_q block type with H not whole blocks", g->embed_q(g, buf, (int32_t *)buf, buf, OPS_W_Q8_0, 1, 40),
           OPS_EINVAL, "multiple of 32");
    refuse(r, "add_rms_norm out aliases resid", g->add_rms_norm(g, buf, buf, NULL, buf, 1, 8, 1e-5f), OPS_EINVAL,
           "alias");
    refuse(r, "rope odd head_dim", g->rope(g, buf, (int32_t *)buf, 1, 1, 3, 3, 1e4f), OPS_EINVAL, "head_dim");
    refuse(r, "silu_mul overlap", g->silu_mul(g, buf + 1, buf, 1, 4), OPS_EINVAL, "overlap");
    refuse(r, "attention_paged heads not a multiple of kv heads",
           g->attention_paged(g, buf, buf, 8, buf, buf, (int32_t *)buf, 2, (int32_t *)buf, 1, (int32_t *)buf, 1, 2, 3, 2,
                              4, 2, 1.0f),
           OPS_EINVAL, "heads");
    refuse(r, "attention_paged context longer than the table",
           g->attention_paged(g, buf, buf, 8, buf, buf, (int32_t *)buf, 2, (int32_t *)buf, 1, (int32_t *)buf, 1, 8, 2, 1,
                              4, 2, 1.0f),
           OPS_EINVAL, "cache shape");
    refuse(r, "attention_paged group of 32 query heads",
           g->attention_paged(g, buf, buf, 32 * 4, buf, buf, (int32_t *)buf, 2, (int32_t *)buf, 1, (int32_t *)buf, 1, 2,
                              32, 1, 4, 2, 1.0f),
           OPS_EINVAL, "group");
    g->mem_free(g, buf);
}

int cuda_decoder_run(ops_t *gpu, const char *family, uint64_t seed, cuda_parity_report_fn report, void *ctx) {
    static void (*const runs[])(run_t *) = {family_matmul_q,        family_matmul_q_mma, family_embed_q,
                                            family_add_rms_norm,    family_rope,         family_silu_mul,
                                            family_kv_store,        family_attention_paged, family_argmax,
                                            family_invariance,      family_refusals};
    for (int i = 0; cuda_decoder_families[i]; i++)
        if (!strcmp(family, cuda_decoder_families[i])) {
            run_t r;
            memset(&r, 0, sizeof r);
            r.gpu = gpu, r.seed = seed, r.report = report, r.ctx = ctx;
            ref_rng_init(&r.rng, seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)));
            runs[i](&r);
            return r.failed;
        }
    return -1;
}
