/* bench/ops_decoder.c - the CPU backend's decoder matmuls at SmolLM2-135M's
 * shapes, beside OpenBLAS sgemm on the same shapes.
 *
 *   make CUDA=0 bin/bench-ops_decoder && bin/bench-ops_decoder [reps] [cpu]
 *
 * One decode step's matmuls: 30 blocks of q/o 576x576, k/v 576->192,
 * gate/up 576->1536, down 1536->576 (Q4_1, a separate random matrix per
 * block, as the model streams 66 MB of them from memory each step), then the
 * 576->49152 Q8_0 LM head (30 MB). Timed with T = 1, 8 and 32 rows of x (one
 * token for each of T sequences) on 1 and 2 threads: milliseconds per step,
 * steps/s, tokens/s (T per step) and GFLOP/s (2 flops per weight per row).
 * The yardstick: cblas_sgemm (fp32 weights, one matrix per shape reused, so
 * it runs from cache: a generous peer) on each shape at the same T, on the
 * same thread count, summed over a step. Each figure is the median of the
 * repetitions; the load average is printed with each, since the box is shared.
 * "cpu" times with the process's CPU time instead (and runs 1 thread only):
 * the op's own work, unaffected by other processes on a busy machine, for
 * A/B comparisons of a change there.
 * Then one whole decode step (bench_step): the ops a Llama forward pass
 * issues per block, in order (add_rms_norm, the fused q|k|v matmul, rope on
 * q and k, kv_store, attention_paged over a paged cache, the o matmul,
 * add_rms_norm, the fused gate|up matmul, silu_mul, down), 30 times, then the
 * final norm and the LM head; B sequences each with a context of CTX tokens.
 * And a prefill of one 128-token prompt through the same ops (the head on its
 * last token).
 * The 30 blocks share one KV cache (the attention's work is the same; only
 * the cache's memory traffic is smaller than the model's).
 * Random weights of the right types; numbers only.
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench/bench_time.h"
#include "kernels/ops.h"

enum { LAYERS = 30, H = 576, KV = 192, FFN = 1536, VOCAB = 49152, N_SHAPES = 7 };

/* per block: {K, N} of q, k, v, o, gate, up, down */
static const int shapes[N_SHAPES][2] = {{H, H}, {H, KV}, {H, KV}, {H, H}, {H, FFN}, {H, FFN}, {FFN, H}};

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench-ops_decoder: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* xorshift64*: rand() made the set-up (100 MB of weights) take most of a run */
static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static float rnd_unit(void) { return (float)(rnd() >> 8) * 0x1p-24f; } /* [0, 1) */

static uint16_t half_of(float f) {
    /* values here are small normal numbers: exponent and 10 mantissa bits, truncated */
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b >> 16 & 0x8000) | (((b >> 23 & 0xff) - 112) << 10) | (b >> 13 & 0x3ff));
}

/* N rows of K values: Q4_1 (20-byte blocks) or Q8_0 (34-byte blocks), random. */
static uint8_t *random_blocks(ops_wtype_t wt, int N, int K) {
    size_t bb = wt == OPS_W_Q4_1 ? 20 : 34, n = (size_t)N * (K / 32) * bb;
    uint8_t *w = xmalloc(n);
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < n / bb; b++) {
        uint16_t d = half_of(0.002f + 0.01f * rnd_unit());
        uint16_t m = half_of(0.01f + 0.1f * rnd_unit()) | 0x8000;
        memcpy(w + b * bb, &d, 2);
        if (wt == OPS_W_Q4_1) memcpy(w + b * bb + 2, &m, 2);
    }
    return w;
}

static float *random_floats(size_t n) {
    float *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = rnd_unit() * 2.0f - 1.0f;
    return p;
}

static void loadavg(char *buf, size_t len) {
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = 0;
    if (f) {
        if (!fgets(buf, (int)len, f)) buf[0] = 0;
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
}

static void check(ops_t *ops, int rc) {
    if (rc) {
        fprintf(stderr, "matmul_q: %s\n", ops->err);
        exit(1);
    }
}

#define CTX 128 /* tokens in each sequence's cache at the timed step */
#define BLOCK 16
#define PREFILL 128 /* prompt tokens of the prefill figure (llama-bench -p 128) */

typedef struct {
    uint8_t *qkv, *o, *gu, *down; /* fused q|k|v (960 rows), o, fused gate|up (3072 rows), down */
} layer_t;

static void check_rc(ops_t *ops, int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "%s: %s\n", what, ops->err);
        exit(1);
    }
}

/* Median seconds of one whole forward step (see the top comment) over B
 * sequences of n new tokens each: a decode step (n = 1, a context of CTX
 * before it) or a prefill (n tokens from position 0). The LM head runs on
 * each sequence's last token, gathered as an engine does (embed_q on F32 rows). */
static double bench_step(ops_t *ops, const layer_t *layers, const uint8_t *head, int B, int n, int reps) {
    int ctx0 = n == 1 ? CTX : 0, ctx = ctx0 + n, T = B * n, QKV = H + 2 * KV;
    int max_blocks = (ctx + BLOCK - 1) / BLOCK, n_blocks = B * max_blocks;
    float *resid = random_floats((size_t)T * H), *delta = random_floats((size_t)T * H);
    float *hn = xmalloc((size_t)T * FFN * sizeof(float)), *qkv = xmalloc((size_t)T * QKV * sizeof(float));
    float *att = xmalloc((size_t)T * H * sizeof(float)), *gu = xmalloc((size_t)T * 2 * FFN * sizeof(float));
    float *act = xmalloc((size_t)T * FFN * sizeof(float)), *logits = xmalloc((size_t)B * VOCAB * sizeof(float));
    float *last = xmalloc((size_t)B * H * sizeof(float)), *norm_w = random_floats(H);
    float *kc = random_floats((size_t)n_blocks * BLOCK * KV), *vc = random_floats((size_t)n_blocks * BLOCK * KV);
    int32_t *table = xmalloc((size_t)n_blocks * sizeof *table), *seq_off = xmalloc((size_t)(B + 1) * sizeof *seq_off);
    int32_t *ctx_len = xmalloc((size_t)B * sizeof *ctx_len), *pos = xmalloc((size_t)T * sizeof *pos);
    int32_t *slot = xmalloc((size_t)T * sizeof *slot), *last_ids = xmalloc((size_t)B * sizeof *last_ids);
    for (int i = 0; i < n_blocks; i++) table[i] = (int32_t)(((long)i * 7919) % n_blocks); /* scattered */
    for (int b = 0; b <= B; b++) seq_off[b] = b * n;
    for (int b = 0; b < B; b++) {
        ctx_len[b] = ctx;
        last_ids[b] = (b + 1) * n - 1;
        for (int i = 0; i < n; i++) {
            int p = ctx0 + i;
            pos[b * n + i] = p;
            slot[b * n + i] = table[b * max_blocks + p / BLOCK] * BLOCK + p % BLOCK;
        }
    }
    double *t = xmalloc((size_t)reps * sizeof *t);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now_s();
        for (int l = 0; l < LAYERS; l++) {
            const layer_t *w = &layers[l];
            check_rc(ops, ops->add_rms_norm(ops, hn, resid, l ? delta : NULL, norm_w, T, H, 1e-5f), "add_rms_norm");
            check_rc(ops, ops->matmul_q(ops, qkv, hn, w->qkv, OPS_W_Q4_1, T, H, QKV), "matmul_q qkv");
            check_rc(ops, ops->rope(ops, qkv, pos, T, 9, 64, QKV, 100000.0f), "rope q");
            check_rc(ops, ops->rope(ops, qkv + H, pos, T, 3, 64, QKV, 100000.0f), "rope k");
            check_rc(ops, ops->kv_store(ops, kc, vc, qkv + H, qkv + H + KV, QKV, slot, T, 3, 64), "kv_store");
            check_rc(ops,
                     ops->attention_paged(ops, att, qkv, QKV, kc, vc, table, max_blocks, seq_off, T, ctx_len, B, ctx, 9,
                                          3, 64, BLOCK, 0.125f),
                     "attention_paged");
            check_rc(ops, ops->matmul_q(ops, delta, att, w->o, OPS_W_Q4_1, T, H, H), "matmul_q o");
            check_rc(ops, ops->add_rms_norm(ops, hn, resid, delta, norm_w, T, H, 1e-5f), "add_rms_norm");
            check_rc(ops, ops->matmul_q(ops, gu, hn, w->gu, OPS_W_Q4_1, T, H, 2 * FFN), "matmul_q gate|up");
            check_rc(ops, ops->silu_mul(ops, act, gu, T, FFN), "silu_mul");
            check_rc(ops, ops->matmul_q(ops, delta, act, w->down, OPS_W_Q4_1, T, FFN, H), "matmul_q down");
        }
        check_rc(ops, ops->add_rms_norm(ops, hn, resid, delta, norm_w, T, H, 1e-5f), "add_rms_norm");
        check_rc(ops, ops->embed_q(ops, last, last_ids, hn, OPS_W_F32, B, H), "embed_q gather");
        check_rc(ops, ops->matmul_q(ops, logits, last, head, OPS_W_Q8_0, B, H, VOCAB), "matmul_q head");
        if (r >= 0) t[r] = bench_now_s() - t0;
        /* keep the residual stream bounded across repetitions */
        for (size_t i = 0; i < (size_t)T * H; i++) resid[i] = (float)((i * 37) % 17) * 0.1f - 0.8f;
    }
    double med = bench_median(t, reps);
    free(resid), free(delta), free(hn), free(qkv), free(att), free(gu), free(act), free(logits), free(last);
    free(norm_w), free(kc), free(vc), free(table), free(seq_off), free(ctx_len), free(pos), free(slot), free(last_ids);
    free(t);
    return med;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    if (reps < 1) reps = 1;
    int max_threads = 2;
    if (argc > 2 && strcmp(argv[2], "cpu") == 0) {
        bench_clock = CLOCK_PROCESS_CPUTIME_ID;
        max_threads = 1;
    }
    uint8_t *layer_w[LAYERS][N_SHAPES];
    for (int l = 0; l < LAYERS; l++)
        for (int s = 0; s < N_SHAPES; s++) layer_w[l][s] = random_blocks(OPS_W_Q4_1, shapes[s][1], shapes[s][0]);
    uint8_t *head = random_blocks(OPS_W_Q8_0, VOCAB, H);
    enum { TMAX = 32 };
    float *x = random_floats((size_t)TMAX * FFN), *out = xmalloc((size_t)TMAX * VOCAB * sizeof(float));
    /* fp32 copies of one block's matrices and of the head for sgemm */
    float *fw[N_SHAPES], *fhead = random_floats((size_t)VOCAB * H);
    for (int s = 0; s < N_SHAPES; s++) fw[s] = random_floats((size_t)shapes[s][0] * shapes[s][1]);
    double params = (double)VOCAB * H;
    for (int s = 0; s < N_SHAPES; s++) params += (double)LAYERS * shapes[s][0] * shapes[s][1];

    static const int Ts[] = {1, 8, 32};
    double *t = xmalloc((size_t)reps * sizeof *t);
    char la[128];
    for (int threads = 1; threads <= max_threads; threads++) {
        ops_t *ops = ops_cpu_create(threads);
        if (!ops) return 1;
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti];
            double gflop = 2.0 * T * params * 1e-9;
            /* ours: a whole step, warm-up first */
            for (int r = -1; r < reps; r++) {
                double t0 = bench_now_s();
                for (int l = 0; l < LAYERS; l++)
                    for (int s = 0; s < N_SHAPES; s++)
                        check(ops, ops->matmul_q(ops, out, x, layer_w[l][s], OPS_W_Q4_1, T, shapes[s][0], shapes[s][1]));
                check(ops, ops->matmul_q(ops, out, x, head, OPS_W_Q8_0, T, H, VOCAB));
                if (r >= 0) t[r] = bench_now_s() - t0;
            }
            double ours = bench_median(t, reps);
            /* the head alone */
            for (int r = -1; r < reps; r++) {
                double t0 = bench_now_s();
                check(ops, ops->matmul_q(ops, out, x, head, OPS_W_Q8_0, T, H, VOCAB));
                if (r >= 0) t[r] = bench_now_s() - t0;
            }
            double ours_head = bench_median(t, reps);
            /* sgemm, the same shapes at the same T, on as many threads */
            openblas_set_num_threads(threads);
            for (int r = -1; r < reps; r++) {
                double t0 = bench_now_s();
                for (int l = 0; l < LAYERS; l++)
                    for (int s = 0; s < N_SHAPES; s++)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, shapes[s][1], shapes[s][0], 1.0f, x,
                                    shapes[s][0], fw[s], shapes[s][0], 0.0f, out, shapes[s][1]);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, VOCAB, H, 1.0f, x, H, fhead, H, 0.0f, out,
                            VOCAB);
                if (r >= 0) t[r] = bench_now_s() - t0;
            }
            double blas = bench_median(t, reps);
            openblas_set_num_threads(1);
            loadavg(la, sizeof la);
            printf("step matmuls T=%2d threads=%d: %7.2f ms (head %6.2f ms) %7.1f steps/s %8.1f tokens/s %6.1f GFLOP/s"
                   " | sgemm fp32 %7.2f ms %6.1f GFLOP/s | ratio %.2f | load %s\n",
                   T, threads, ours * 1e3, ours_head * 1e3, 1.0 / ours, T / ours, gflop / ours, blas * 1e3,
                   gflop / blas, blas / ours, la);
            fflush(stdout);
        }
        ops_destroy(ops);
    }

    layer_t *layers = xmalloc(LAYERS * sizeof *layers);
    for (int l = 0; l < LAYERS; l++) {
        layers[l].qkv = random_blocks(OPS_W_Q4_1, H + 2 * KV, H);
        layers[l].o = random_blocks(OPS_W_Q4_1, H, H);
        layers[l].gu = random_blocks(OPS_W_Q4_1, 2 * FFN, H);
        layers[l].down = random_blocks(OPS_W_Q4_1, H, FFN);
    }
    for (int threads = 1; threads <= max_threads; threads++) {
        ops_t *ops = ops_cpu_create(threads);
        if (!ops) return 1;
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int B = Ts[ti];
            double step = bench_step(ops, layers, head, B, 1, reps);
            loadavg(la, sizeof la);
            printf("whole decode step B=%2d (context %d) threads=%d: %7.2f ms %8.1f tokens/s | load %s\n", B, CTX + 1,
                   threads, step * 1e3, B / step, la);
            fflush(stdout);
        }
        double prefill = bench_step(ops, layers, head, 1, PREFILL, reps);
        loadavg(la, sizeof la);
        printf("prefill of %d tokens (one sequence) threads=%d: %7.2f ms %8.1f tokens/s | load %s\n", PREFILL, threads,
               prefill * 1e3, PREFILL / prefill, la);
        fflush(stdout);
        ops_destroy(ops);
    }
    for (int l = 0; l < LAYERS; l++) free(layers[l].qkv), free(layers[l].o), free(layers[l].gu), free(layers[l].down);
    free(layers);
    for (int l = 0; l < LAYERS; l++)
        for (int s = 0; s < N_SHAPES; s++) free(layer_w[l][s]);
    for (int s = 0; s < N_SHAPES; s++) free(fw[s]);
    free(head), free(fhead), free(x), free(out), free(t);
    return 0;
}
