/* tests/support_cuda_parity.c - the CUDA-vs-CPU parity checks (see
 * support_cuda_parity.h). A check keeps every buffer it makes in its
 * parity_t, so one failure path frees all of them; inputs come from the
 * shared splitmix generator of support_ref.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/support_cuda_parity.h"
#include "tests/support_ref.h"

const char *const cuda_parity_families[] = {"embed_ln", "matmul", "add_ln", "attention", "mean_pool", "graph", NULL};

/* fp16 rounds 8 times finer than bf16 (11 mantissa bits against 8): on the
 * H200 the bf16 checks landed at 1.3e-3 .. 2.4e-3, all of it rounding, so fp16
 * should land near 2e-4 .. 3e-4. 2e-3 keeps a margin of about 7 for what we
 * have not measured (fp16 subnormals in P and GELU tails) while staying 5
 * times tighter than bf16's bound. */
double cuda_parity_tolerance(ops_dtype_t dtype) {
    return dtype == OPS_BF16 ? 1e-2 : dtype == OPS_F16 ? 2e-3 : 1e-5;
}

#define PARITY_MAX_BUFS 48

/* One check in progress. */
typedef struct parity {
    ops_t *gpu, *cpu;
    ref_rng_t rng;
    int half;        /* the CUDA backend's activations and weights are 16-bit (bf16 or fp16) */
    ops_dtype_t dt;  /* which: the GPU backend's dtype */
    int misalign;    /* elements to offset every backend buffer by (alignment checks) */
    void *gbase[PARITY_MAX_BUFS], *cbase[PARITY_MAX_BUFS], *host[PARITY_MAX_BUFS];
    int ng, nc, nh;
    int failed;      /* set by the first failure; later steps are skipped */
    cuda_parity_result_t res;
    cuda_parity_report_fn report;
    void *report_ctx;
    int failures;    /* checks failed so far in this run */
} parity_t;

static void fail(parity_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parity_t *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->res.msg, sizeof p->res.msg, fmt, ap);
    va_end(ap);
}

static void begin(parity_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void begin(parity_t *p, const char *fmt, ...) {
    memset(&p->res, 0, sizeof p->res);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->res.name, sizeof p->res.name, fmt, ap);
    va_end(ap);
    p->res.dtype = p->gpu->dtype;
    p->res.tol = cuda_parity_tolerance(p->gpu->dtype);
    p->res.rel_err = NAN;
    p->res.bad_index = -1;
    p->failed = 0;
    p->misalign = 0;
}

/* Frees the check's buffers, decides and reports. A check that measured
 * nothing (no compare ran) counts as failed. */
static void finish(parity_t *p) {
    if (!p->failed && isnan(p->res.rel_err)) fail(p, "nothing was compared");
    p->res.passed = !p->failed;
    if (p->failed) p->failures++;
    p->gpu->sync(p->gpu); /* no kernel may still use a buffer freed below */
    for (int i = 0; i < p->ng; i++) p->gpu->mem_free(p->gpu, p->gbase[i]);
    for (int i = 0; i < p->nc; i++) p->cpu->mem_free(p->cpu, p->cbase[i]);
    for (int i = 0; i < p->nh; i++) free(p->host[i]);
    p->ng = p->nc = p->nh = 0;
    if (p->report) p->report(&p->res, p->report_ctx);
}

/* ---- host side ---- */

static void *host_alloc(parity_t *p, size_t bytes) {
    if (p->failed) return NULL;
    if (p->nh == PARITY_MAX_BUFS) {
        fail(p, "too many host buffers in one check");
        return NULL;
    }
    void *m = calloc(1, bytes ? bytes : 1);
    if (!m) fail(p, "out of host memory (%zu bytes)", bytes);
    else p->host[p->nh++] = m;
    return m;
}

static float *rand_floats(parity_t *p, size_t n, double lo, double hi) {
    float *x = host_alloc(p, n * sizeof *x);
    if (x) ref_fill_uniform(&p->rng, x, n, lo, hi);
    return x;
}

static uint16_t f32_to_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                    /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float bf16_bits_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half through the compiler's _Float16 (round to nearest even, NaN kept,
 * beyond +-65504 to +-inf: the device's __float2half_rn does the same). */
static uint16_t f32_to_f16_bits(float f) {
    _Float16 h = (_Float16)f;
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}

static float f16_bits_to_f32(uint16_t b) {
    _Float16 h;
    memcpy(&h, &b, 2);
    return (float)h;
}

/* The 16-bit storage of the GPU backend's dtype, both ways. */
static uint16_t to_act_bits(const parity_t *p, float f) {
    return p->dt == OPS_F16 ? f32_to_f16_bits(f) : f32_to_bf16_bits(f);
}

static float from_act_bits(const parity_t *p, uint16_t b) {
    return p->dt == OPS_F16 ? f16_bits_to_f32(b) : bf16_bits_to_f32(b);
}

/* In bf16 and fp16 runs, activations and weights are rounded to that type
 * before either backend sees them, so both start from the same values. */
static void round_like_gpu(parity_t *p, float *x, size_t n) {
    if (!p->half || !x) return;
    for (size_t i = 0; i < n; i++) x[i] = from_act_bits(p, to_act_bits(p, x[i]));
}

/* Packed offsets of B sequences of lengths in [lo, hi]; returns T. */
static int rand_seq_off(parity_t *p, int32_t *seq_off, int B, int lo, int hi) {
    seq_off[0] = 0;
    for (int b = 0; b < B; b++) seq_off[b + 1] = seq_off[b] + ref_rng_int(&p->rng, lo, hi);
    return seq_off[B];
}

/* ---- backend buffers: every pair_* gives (gpu, cpu) buffers with the same content ---- */

static void *backend_alloc(parity_t *p, ops_t *ops, size_t bytes, size_t elem) {
    if (p->failed) return NULL;
    int *n = ops == p->gpu ? &p->ng : &p->nc;
    void **base = ops == p->gpu ? p->gbase : p->cbase;
    if (*n == PARITY_MAX_BUFS) {
        fail(p, "too many buffers in one check");
        return NULL;
    }
    size_t off = (size_t)p->misalign * elem;
    void *m = ops->mem_alloc(ops, bytes + off + 1);
    if (!m) {
        fail(p, "%s mem_alloc(%zu): %s", ops->name, bytes + off + 1, ops->err);
        return NULL;
    }
    base[(*n)++] = m;
    return (char *)m + off;
}

static void upload(parity_t *p, ops_t *ops, void *dst, const void *src, size_t bytes) {
    if (p->failed) return;
    if (ops->upload(ops, dst, src, bytes)) fail(p, "%s upload(%zu bytes): %s", ops->name, bytes, ops->err);
}

/* float32 data (biases, LayerNorm parameters, tables): the same bytes on both. */
static void pair_f32(parity_t *p, const float *x, size_t n, void **g, void **c) {
    *g = backend_alloc(p, p->gpu, n * 4, 4);
    *c = backend_alloc(p, p->cpu, n * 4, 4);
    upload(p, p->gpu, *g, x, n * 4);
    upload(p, p->cpu, *c, x, n * 4);
}

static void pair_i32(parity_t *p, const int32_t *x, size_t n, void **g, void **c) {
    *g = backend_alloc(p, p->gpu, n * 4, 4);
    *c = backend_alloc(p, p->cpu, n * 4, 4);
    upload(p, p->gpu, *g, x, n * 4);
    upload(p, p->cpu, *c, x, n * 4);
}

/* Activations x (n floats, already rounded for bf16/fp16): the GPU copy in its dtype. */
static void pair_act_upload(parity_t *p, void *g, void *c, const float *x, size_t n) {
    if (p->failed) return;
    upload(p, p->cpu, c, x, n * 4);
    if (!p->half) {
        upload(p, p->gpu, g, x, n * 4);
        return;
    }
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) {
        fail(p, "out of host memory");
        return;
    }
    for (size_t i = 0; i < n; i++) h[i] = to_act_bits(p, x[i]);
    upload(p, p->gpu, g, h, n * 2);
    free(h);
}

static void pair_act(parity_t *p, float *x, size_t n, void **g, void **c) {
    round_like_gpu(p, x, n);
    *g = backend_alloc(p, p->gpu, n * (p->half ? 2 : 4), p->half ? 2 : 4);
    *c = backend_alloc(p, p->cpu, n * 4, 4);
    pair_act_upload(p, *g, *c, x, n);
}

/* Activation outputs, poisoned with NaN on both sides. */
static void pair_act_out(parity_t *p, size_t n, void **g, void **c) {
    float *nan = host_alloc(p, n * 4);
    if (nan) ref_fill_nan(nan, n);
    *g = backend_alloc(p, p->gpu, n * (p->half ? 2 : 4), p->half ? 2 : 4);
    *c = backend_alloc(p, p->cpu, n * 4, 4);
    pair_act_upload(p, *g, *c, nan, n);
}

/* float32 outputs (mean_pool), poisoned with NaN. */
static void pair_f32_out(parity_t *p, size_t n, void **g, void **c) {
    float *nan = host_alloc(p, n * 4);
    if (nan) ref_fill_nan(nan, n);
    pair_f32(p, nan, n, g, c);
}

/* Weight matrices: through upload_weight on both (the GPU converts to its dtype). */
static void pair_weight(parity_t *p, float *W, size_t n, void **g, void **c) {
    round_like_gpu(p, W, n);
    *g = backend_alloc(p, p->gpu, n * (p->half ? 2 : 4), p->half ? 2 : 4);
    *c = backend_alloc(p, p->cpu, n * 4, 4);
    if (p->failed) return;
    if (p->gpu->upload_weight(p->gpu, *g, W, n)) fail(p, "cuda upload_weight: %s", p->gpu->err);
    else if (p->cpu->upload_weight(p->cpu, *c, W, n)) fail(p, "cpu upload_weight: %s", p->cpu->err);
}

/* An op's return code: on error the message carries the backend's own. */
static void op_rc(parity_t *p, ops_t *ops, const char *op, int rc) {
    if (!p->failed && rc) fail(p, "%s %s returned %d: %s", ops->name, op, rc, ops->err);
}

/* ---- comparing ---- */

/* Downloads the GPU result (activations when act, else float32) and the CPU
 * result, n elements each, into host floats. */
static int fetch(parity_t *p, const void *g, const void *c, size_t n, int act, float **gout, float **cout) {
    *gout = host_alloc(p, n * 4);
    *cout = host_alloc(p, n * 4);
    if (p->failed) return -1;
    if (act && p->half) {
        uint16_t *h = host_alloc(p, n * 2);
        if (!h) return -1;
        if (p->gpu->download(p->gpu, h, g, n * 2) || p->gpu->sync(p->gpu)) {
            fail(p, "cuda download: %s", p->gpu->err);
            return -1;
        }
        for (size_t i = 0; i < n; i++) (*gout)[i] = from_act_bits(p, h[i]);
    } else if (p->gpu->download(p->gpu, *gout, g, n * 4) || p->gpu->sync(p->gpu)) {
        fail(p, "cuda download: %s", p->gpu->err);
        return -1;
    }
    if (p->cpu->download(p->cpu, *cout, c, n * 4) || p->cpu->sync(p->cpu)) {
        fail(p, "cpu download: %s", p->cpu->err);
        return -1;
    }
    return 0;
}

/* Error of got against want (n host floats), with the bound tol: records the
 * result in p->res (keeping the worst error of the check). */
static void judge(parity_t *p, const float *got, const float *want, size_t n, double tol, const char *what) {
    if (p->failed) return;
    long bad_ref = ref_first_nonfinite(want, n);
    if (bad_ref >= 0) {
        fail(p, "%s: the reference element %ld is not finite", what, bad_ref);
        return;
    }
    double *ref = host_alloc(p, n * sizeof *ref);
    if (!ref) return;
    for (size_t i = 0; i < n; i++) ref[i] = want[i];
    long bad = ref_first_nonfinite(got, n);
    double err = ref_rel_error(got, ref, n);
    if (isnan(p->res.rel_err) || err > p->res.rel_err) p->res.rel_err = err;
    p->res.tol = tol;
    if (bad >= 0) {
        p->res.bad_index = bad;
        fail(p, "%s: element %ld is %g (not written or not finite)", what, bad, (double)got[bad]);
    } else if (!(err <= tol)) {
        fail(p, "%s: relative error %.3e > %.0e", what, err, tol);
    }
}

static void compare(parity_t *p, const void *g, const void *c, size_t n, int act) {
    float *gout, *cout;
    if (fetch(p, g, c, n, act, &gout, &cout)) return;
    judge(p, gout, cout, n, cuda_parity_tolerance(p->gpu->dtype), "cuda vs cpu");
}

/* ---- embed_ln ---- */

static void check_embed_ln(parity_t *p, int T, int H) {
    begin(p, "embed_ln T=%d H=%d", T, H);
    const int V = 1000, P = 512;
    float *word = rand_floats(p, (size_t)V * H, -2, 2), *pos = rand_floats(p, (size_t)P * H, -0.5, 0.5);
    float *type = rand_floats(p, 2 * (size_t)H, 3, 4); /* an offset: the mean must come out */
    float *gamma = rand_floats(p, H, 0.5, 1.5), *beta = rand_floats(p, H, -0.5, 0.5);
    int32_t *ids = host_alloc(p, (size_t)T * 4), *pos_ids = host_alloc(p, (size_t)T * 4);
    if (p->failed) goto done;
    for (int t = 0; t < T; t++) {
        ids[t] = ref_rng_int(&p->rng, 0, V - 1);
        pos_ids[t] = ref_rng_int(&p->rng, 0, P - 1);
    }
    void *gw, *cw, *gp, *cp, *gt, *ct, *gg, *cg, *gb, *cb, *gi, *ci, *gpi, *cpi, *go, *co;
    pair_f32(p, word, (size_t)V * H, &gw, &cw);
    pair_f32(p, pos, (size_t)P * H, &gp, &cp);
    pair_f32(p, type, 2 * (size_t)H, &gt, &ct);
    pair_f32(p, gamma, H, &gg, &cg);
    pair_f32(p, beta, H, &gb, &cb);
    pair_i32(p, ids, T, &gi, &ci);
    pair_i32(p, pos_ids, T, &gpi, &cpi);
    pair_act_out(p, (size_t)T * H, &go, &co);
    if (p->failed) goto done;
    op_rc(p, p->gpu, "embed_ln", p->gpu->embed_ln(p->gpu, go, gi, gpi, gw, gp, gt, gg, gb, T, H, 1e-12f));
    op_rc(p, p->cpu, "embed_ln", p->cpu->embed_ln(p->cpu, co, ci, cpi, cw, cp, ct, cg, cb, T, H, 1e-12f));
    compare(p, go, co, (size_t)T * H, 1);
done:
    finish(p);
}

/* ---- matmul ---- */

static const char *epi_name(ops_epilogue_t e) {
    return e == OPS_EPI_BIAS_GELU ? "bias+gelu" : e == OPS_EPI_BIAS ? "bias" : "none";
}

static void check_matmul(parity_t *p, int T, int K, int N, ops_epilogue_t epi, int misalign) {
    begin(p, "matmul T=%d K=%d N=%d %s%s", T, K, N, epi_name(epi), misalign ? " misaligned" : "");
    p->misalign = misalign;
    float *in = rand_floats(p, (size_t)T * K, -1, 1), *W = rand_floats(p, (size_t)N * K, -0.5, 0.5);
    float *bias = rand_floats(p, N, -1, 1);
    void *gi, *ci, *gw, *cw, *gb = NULL, *cb = NULL, *go, *co;
    pair_act(p, in, (size_t)T * K, &gi, &ci);
    pair_weight(p, W, (size_t)N * K, &gw, &cw);
    if (epi != OPS_EPI_NONE) pair_f32(p, bias, N, &gb, &cb);
    pair_act_out(p, (size_t)T * N, &go, &co);
    if (p->failed) goto done;
    op_rc(p, p->gpu, "matmul", p->gpu->matmul(p->gpu, go, gi, gw, gb, T, K, N, epi));
    op_rc(p, p->cpu, "matmul", p->cpu->matmul(p->cpu, co, ci, cw, cb, T, K, N, epi));
    compare(p, go, co, (size_t)T * N, 1);
done:
    finish(p);
}

/* ---- add_ln ---- */

/* alias: 0 none, 1 out == x, 2 out == residual */
static void check_add_ln(parity_t *p, int T, int H, int with_bias, int alias) {
    static const char *const alias_name[] = {"", " out=x", " out=residual"};
    begin(p, "add_ln T=%d H=%d%s%s", T, H, with_bias ? " bias" : "", alias_name[alias]);
    size_t n = (size_t)T * H;
    float *x = rand_floats(p, n, -3, 3), *res = rand_floats(p, n, -1, 5), *bias = rand_floats(p, H, -1, 1);
    float *gamma = rand_floats(p, H, 0.5, 1.5), *beta = rand_floats(p, H, -0.5, 0.5);
    void *gx, *cx, *gr, *cr, *gb = NULL, *cb = NULL, *gg, *cg, *gbe, *cbe, *go, *co;
    pair_act(p, x, n, &gx, &cx);
    pair_act(p, res, n, &gr, &cr);
    if (with_bias) pair_f32(p, bias, H, &gb, &cb);
    pair_f32(p, gamma, H, &gg, &cg);
    pair_f32(p, beta, H, &gbe, &cbe);
    if (alias == 0) pair_act_out(p, n, &go, &co);
    else if (alias == 1) go = gx, co = cx;
    else go = gr, co = cr;
    if (p->failed) goto done;
    op_rc(p, p->gpu, "add_ln", p->gpu->add_ln(p->gpu, go, gx, gb, gr, gg, gbe, T, H, 1e-12f));
    op_rc(p, p->cpu, "add_ln", p->cpu->add_ln(p->cpu, co, cx, cb, cr, cg, cbe, T, H, 1e-12f));
    compare(p, go, co, n, 1);
done:
    finish(p);
}

/* ---- attention ---- */

/* with_bias: a random qkv bias (the engine's call: the QKV matmul leaves it to
 * attention), else NULL. */
static void check_attention(parity_t *p, int B, int lo, int hi, int n_heads, int head_dim, int with_bias) {
    begin(p, "attention B=%d len=%d..%d heads=%d head_dim=%d%s", B, lo, hi, n_heads, head_dim,
          with_bias ? " qkv-bias" : "");
    int32_t *seq_off = host_alloc(p, (size_t)(B + 1) * 4);
    if (p->failed) goto done;
    int T = rand_seq_off(p, seq_off, B, lo, hi), max_len = 0;
    for (int b = 0; b < B; b++)
        if (seq_off[b + 1] - seq_off[b] > max_len) max_len = seq_off[b + 1] - seq_off[b];
    const int H = n_heads * head_dim;
    /* Wide enough that softmax is far from uniform: the scores span several units. */
    float *qkv = rand_floats(p, (size_t)T * 3 * H, -2, 2), *bias = rand_floats(p, 3 * (size_t)H, -1, 1);
    void *gq, *cq, *gb = NULL, *cb = NULL, *gs, *cs, *go, *co;
    pair_act(p, qkv, (size_t)T * 3 * H, &gq, &cq);
    if (with_bias) pair_f32(p, bias, 3 * (size_t)H, &gb, &cb);
    pair_i32(p, seq_off, (size_t)B + 1, &gs, &cs);
    pair_act_out(p, (size_t)T * H, &go, &co);
    if (p->failed) goto done;
    const float scale = 1.0f / sqrtf((float)head_dim);
    op_rc(p, p->gpu, "attention", p->gpu->attention(p->gpu, go, gq, gb, gs, B, max_len, n_heads, head_dim, scale));
    op_rc(p, p->cpu, "attention", p->cpu->attention(p->cpu, co, cq, cb, cs, B, max_len, n_heads, head_dim, scale));
    compare(p, go, co, (size_t)T * H, 1);
done:
    finish(p);
}

/* ---- mean_pool ---- */

static void check_mean_pool(parity_t *p, int B, int lo, int hi, int H, int l2) {
    begin(p, "mean_pool B=%d len=%d..%d H=%d%s", B, lo, hi, H, l2 ? " l2" : "");
    int32_t *seq_off = host_alloc(p, (size_t)(B + 1) * 4);
    if (p->failed) goto done;
    int T = rand_seq_off(p, seq_off, B, lo, hi);
    float *x = rand_floats(p, (size_t)T * H, -1, 2);
    void *gx, *cx, *gs, *cs, *go, *co;
    pair_act(p, x, (size_t)T * H, &gx, &cx);
    pair_i32(p, seq_off, (size_t)B + 1, &gs, &cs);
    pair_f32_out(p, (size_t)B * H, &go, &co);
    if (p->failed) goto done;
    op_rc(p, p->gpu, "mean_pool", p->gpu->mean_pool(p->gpu, go, gx, gs, B, H, l2));
    op_rc(p, p->cpu, "mean_pool", p->cpu->mean_pool(p->cpu, co, cx, cs, B, H, l2));
    compare(p, go, co, (size_t)B * H, 0);
done:
    finish(p);
}

/* ---- graph: a small encoder layer captured, replayed, compared ---- */

/* The buffers of one backend for the chain below. */
typedef struct chain {
    void *ids, *pos_ids, *seq_off, *word, *pos, *type, *g0, *b0;
    void *w_qkv, *b_qkv, *w_in, *b_in, *w_out, *b_out, *g1, *b1;
    void *x, *qkv, *ctx, *ffn, *dense, *pooled;
} chain_t;

enum { CH_V = 300, CH_P = 64, CH_H = 128, CH_HEADS = 4, CH_HD = 32, CH_I = 256 };

/* embed -> qkv -> attention -> ffn (gelu) -> ffn out -> add+LN (in place) -> pool */
static int chain_run(ops_t *o, const chain_t *c, int T, int B, int max_len) {
    const float scale = 1.0f / sqrtf((float)CH_HD);
    int rc = o->embed_ln(o, c->x, c->ids, c->pos_ids, c->word, c->pos, c->type, c->g0, c->b0, T, CH_H, 1e-12f);
    /* as engine/bert.c: the QKV bias is added by attention */
    if (!rc) rc = o->matmul(o, c->qkv, c->x, c->w_qkv, NULL, T, CH_H, 3 * CH_H, OPS_EPI_NONE);
    if (!rc) rc = o->attention(o, c->ctx, c->qkv, c->b_qkv, c->seq_off, B, max_len, CH_HEADS, CH_HD, scale);
    if (!rc) rc = o->matmul(o, c->ffn, c->ctx, c->w_in, c->b_in, T, CH_H, CH_I, OPS_EPI_BIAS_GELU);
    if (!rc) rc = o->matmul(o, c->dense, c->ffn, c->w_out, NULL, T, CH_I, CH_H, OPS_EPI_NONE);
    if (!rc) rc = o->add_ln(o, c->x, c->dense, c->b_out, c->x, c->g1, c->b1, T, CH_H, 1e-12f);
    if (!rc) rc = o->mean_pool(o, c->pooled, c->x, c->seq_off, B, CH_H, 1);
    return rc;
}

static void chain_ids(parity_t *p, int32_t *ids, int32_t *pos_ids, const int32_t *seq_off, int B) {
    for (int b = 0; b < B; b++)
        for (int t = seq_off[b]; t < seq_off[b + 1]; t++) {
            ids[t] = ref_rng_int(&p->rng, 0, CH_V - 1);
            pos_ids[t] = t - seq_off[b];
        }
}

static void check_graph(parity_t *p) {
    const int B = 6;
    begin(p, "graph capture+replay of embed..pool (B=%d, H=%d) vs eager and cpu", B, CH_H);
    if (!p->gpu->capture_begin || !p->gpu->capture_end || !p->gpu->graph_launch || !p->gpu->graph_destroy) {
        fail(p, "the CUDA backend has no graph entries");
        finish(p);
        return;
    }
    void *graph = NULL;
    int32_t *seq_off = host_alloc(p, (B + 1) * 4);
    if (p->failed) goto done;
    int T = rand_seq_off(p, seq_off, B, 1, 40), max_len = 0;
    for (int b = 0; b < B; b++)
        if (seq_off[b + 1] - seq_off[b] > max_len) max_len = seq_off[b + 1] - seq_off[b];
    int32_t *ids = host_alloc(p, (size_t)T * 4), *pos_ids = host_alloc(p, (size_t)T * 4);
    if (p->failed) goto done;
    chain_ids(p, ids, pos_ids, seq_off, B);
    chain_t g, c;
    const size_t H = CH_H, I = CH_I;
    pair_i32(p, ids, T, &g.ids, &c.ids);
    pair_i32(p, pos_ids, T, &g.pos_ids, &c.pos_ids);
    pair_i32(p, seq_off, B + 1, &g.seq_off, &c.seq_off);
    pair_f32(p, rand_floats(p, CH_V * H, -2, 2), CH_V * H, &g.word, &c.word);
    pair_f32(p, rand_floats(p, CH_P * H, -0.5, 0.5), CH_P * H, &g.pos, &c.pos);
    pair_f32(p, rand_floats(p, 2 * H, -0.5, 0.5), 2 * H, &g.type, &c.type);
    pair_f32(p, rand_floats(p, H, 0.5, 1.5), H, &g.g0, &c.g0);
    pair_f32(p, rand_floats(p, H, -0.5, 0.5), H, &g.b0, &c.b0);
    pair_weight(p, rand_floats(p, 3 * H * H, -0.2, 0.2), 3 * H * H, &g.w_qkv, &c.w_qkv);
    pair_f32(p, rand_floats(p, 3 * H, -0.5, 0.5), 3 * H, &g.b_qkv, &c.b_qkv);
    pair_weight(p, rand_floats(p, I * H, -0.2, 0.2), I * H, &g.w_in, &c.w_in);
    pair_f32(p, rand_floats(p, I, -0.5, 0.5), I, &g.b_in, &c.b_in);
    pair_weight(p, rand_floats(p, H * I, -0.1, 0.1), H * I, &g.w_out, &c.w_out);
    pair_f32(p, rand_floats(p, H, -0.5, 0.5), H, &g.b_out, &c.b_out);
    pair_f32(p, rand_floats(p, H, 0.5, 1.5), H, &g.g1, &c.g1);
    pair_f32(p, rand_floats(p, H, -0.5, 0.5), H, &g.b1, &c.b1);
    pair_act_out(p, (size_t)T * H, &g.x, &c.x);
    pair_act_out(p, (size_t)T * 3 * H, &g.qkv, &c.qkv);
    pair_act_out(p, (size_t)T * H, &g.ctx, &c.ctx);
    pair_act_out(p, (size_t)T * I, &g.ffn, &c.ffn);
    pair_act_out(p, (size_t)T * H, &g.dense, &c.dense);
    pair_f32_out(p, (size_t)B * H, &g.pooled, &c.pooled);
    float *nan = host_alloc(p, (size_t)B * H * 4);
    if (p->failed) goto done;
    ref_fill_nan(nan, (size_t)B * H);
    const double tol = cuda_parity_tolerance(p->gpu->dtype);
    /* Replays run the very kernels (and cuBLASLt algorithms) of the eager run. */
    const double replay_tol = tol / 10;
    float *eager, *cpu1, *replay, *cpu2, *unused;

    /* 1. eager, against the CPU */
    op_rc(p, p->gpu, "eager chain", chain_run(p->gpu, &g, T, B, max_len));
    op_rc(p, p->cpu, "chain", chain_run(p->cpu, &c, T, B, max_len));
    if (fetch(p, g.pooled, c.pooled, (size_t)B * H, 0, &eager, &cpu1)) goto done;
    judge(p, eager, cpu1, (size_t)B * H, tol, "eager cuda vs cpu");

    /* 2. capture (nothing runs), poison, replay: the eager result again */
    op_rc(p, p->gpu, "capture_begin", p->gpu->capture_begin(p->gpu));
    if (p->failed) goto done;
    int rc = chain_run(p->gpu, &g, T, B, 512); /* the engine captures with the model's longest length */
    int erc = p->gpu->capture_end(p->gpu, &graph);
    op_rc(p, p->gpu, "captured chain", rc);
    op_rc(p, p->gpu, "capture_end", erc);
    upload(p, p->gpu, g.pooled, nan, (size_t)B * H * 4);
    if (p->failed) goto done;
    op_rc(p, p->gpu, "graph_launch", p->gpu->graph_launch(p->gpu, graph));
    if (fetch(p, g.pooled, c.pooled, (size_t)B * H, 0, &replay, &unused)) goto done;
    judge(p, replay, eager, (size_t)B * H, replay_tol, "replay vs eager");

    /* 3. new token ids and embedding table, poison, replay: the graph reads the buffers anew */
    chain_ids(p, ids, pos_ids, seq_off, B);
    float *word2 = rand_floats(p, CH_V * H, -2, 2);
    if (p->failed) goto done;
    upload(p, p->gpu, g.ids, ids, (size_t)T * 4);
    upload(p, p->cpu, c.ids, ids, (size_t)T * 4);
    upload(p, p->gpu, g.word, word2, CH_V * H * 4);
    upload(p, p->cpu, c.word, word2, CH_V * H * 4);
    upload(p, p->gpu, g.pooled, nan, (size_t)B * H * 4);
    if (p->failed) goto done;
    op_rc(p, p->gpu, "graph_launch", p->gpu->graph_launch(p->gpu, graph));
    op_rc(p, p->cpu, "chain", chain_run(p->cpu, &c, T, B, max_len));
    if (fetch(p, g.pooled, c.pooled, (size_t)B * H, 0, &replay, &cpu2)) goto done;
    judge(p, replay, cpu2, (size_t)B * H, tol, "replay with new inputs vs cpu");
done:
    if (graph) p->gpu->graph_destroy(p->gpu, graph);
    finish(p);
}

/* ---- the families ---- */

static void run_embed_ln(parity_t *p) {
    static const int shapes[][2] = {{1, 384}, {512, 384}, {37, 129}, {3000, 768}, {5, 1}, {7, 4096}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_embed_ln(p, shapes[i][0], shapes[i][1]);
}

static void run_matmul(parity_t *p) {
    static const int shapes[][4] = {
        /* T, K, N, epilogue */
        {1, 384, 1152, OPS_EPI_BIAS},     {1, 384, 1536, OPS_EPI_BIAS_GELU}, {512, 384, 1536, OPS_EPI_BIAS_GELU},
        {512, 1536, 384, OPS_EPI_NONE},   {37, 129, 97, OPS_EPI_NONE},        {37, 129, 97, OPS_EPI_BIAS_GELU},
        {4096, 384, 1152, OPS_EPI_BIAS}, {3, 1, 5, OPS_EPI_BIAS},            {333, 768, 768, OPS_EPI_BIAS}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_matmul(p, shapes[i][0], shapes[i][1], shapes[i][2], (ops_epilogue_t)shapes[i][3], 0);
    /* Buffers carved from an arena need not be 16-byte aligned. */
    check_matmul(p, 19, 64, 48, OPS_EPI_BIAS_GELU, 1);
    check_matmul(p, 130, 384, 384, OPS_EPI_NONE, 1);
}

static void run_add_ln(parity_t *p) {
    check_add_ln(p, 1, 384, 1, 0);
    check_add_ln(p, 512, 384, 1, 2);
    check_add_ln(p, 37, 129, 0, 1);
    check_add_ln(p, 5000, 1024, 1, 0);
    check_add_ln(p, 3, 12288, 1, 2);
}

static void run_attention(parity_t *p) {
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        check_attention(p, 1, 1, 1, 12, 32, with_bias);     /* one token */
        check_attention(p, 40, 1, 1, 12, 32, with_bias);    /* many one-token sequences */
        check_attention(p, 1, 512, 512, 12, 32, with_bias); /* the longest sequence, MiniLM heads */
        check_attention(p, 1, 512, 512, 2, 128, with_bias); /* the widest head */
        check_attention(p, 2, 300, 512, 16, 64, with_bias);
        check_attention(p, 3, 1, 77, 5, 48, with_bias);     /* head_dim between the tile sizes */
        check_attention(p, 7, 20, 45, 3, 17, with_bias);    /* odd head_dim */
        check_attention(p, 2000, 1, 8, 12, 32, with_bias);  /* many short sequences packed */
        check_attention(p, 33, 31, 33, 4, 64, with_bias);   /* lengths around the 32-key tile */
    }
}

static void run_mean_pool(parity_t *p) {
    check_mean_pool(p, 1, 1, 1, 384, 1);
    check_mean_pool(p, 1, 512, 512, 384, 1);
    check_mean_pool(p, 2000, 1, 16, 384, 1);
    check_mean_pool(p, 7, 1, 50, 129, 0);
    check_mean_pool(p, 3, 100, 512, 1024, 1);
}

int cuda_parity_run(ops_t *gpu, ops_t *cpu, const char *family, uint64_t seed, cuda_parity_report_fn report,
                    void *ctx) {
    static const struct {
        const char *name;
        void (*run)(parity_t *p);
    } families[] = {{"embed_ln", run_embed_ln}, {"matmul", run_matmul},       {"add_ln", run_add_ln},
                    {"attention", run_attention}, {"mean_pool", run_mean_pool}, {"graph", check_graph}};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (strcmp(family, families[i].name)) continue;
        parity_t *p = calloc(1, sizeof *p);
        if (!p) return 1;
        p->gpu = gpu;
        p->cpu = cpu;
        p->dt = gpu->dtype;
        p->half = gpu->dtype == OPS_BF16 || gpu->dtype == OPS_F16;
        p->report = report;
        p->report_ctx = ctx;
        ref_rng_init(&p->rng, seed);
        families[i].run(p);
        int failures = p->failures;
        free(p);
        return failures;
    }
    return -1;
}
