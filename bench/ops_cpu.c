/* bench/ops_cpu.c - microbenchmark of the CPU backend's heavy ops at
 * all-MiniLM-L6-v2 shapes (H=384, 12 heads of 32, FFN 1536).
 *
 *   make CUDA=0 bin/bench-ops_cpu && bin/bench-ops_cpu [threads] [cpu]
 *
 * Times ops->matmul for the four linear layers of a BERT layer at several
 * token counts, next to a bare multi-threaded OpenBLAS sgemm of the same shape
 * (no epilogue) as the yardstick, ops->attention at 128-token sequences, and
 * one whole encoder layer (the seven ops the engine issues, in its order) on
 * packed batches, with each op's share. Each figure is the median of repeated
 * runs (wall time; the load average is printed, since this box is shared).
 * "cpu" times with the process's CPU time instead: with threads = 1 that is
 * the op's own work, unaffected by other processes on a busy machine, which
 * makes A/B comparisons of a change possible there (it sums the threads, so
 * it is not a latency when threads > 1).
 * Random inputs; numbers only.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "bench/bench_time.h"
#include "kernels/ops.h"

static float *random_floats(size_t n, float amp) {
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = amp * ((float)rand() / (float)RAND_MAX * 2.0f - 1.0f);
    return p;
}

#define REPS 15

/* Median seconds of one call of what the macro body runs. */
#define MEDIAN_SECONDS(result, body)                          \
    do {                                                      \
        double t_[REPS];                                      \
        body; /* warm-up */                                   \
        for (int r_ = 0; r_ < REPS; r_++) {                   \
            double t0_ = bench_now_s();                             \
            body;                                             \
            t_[r_] = bench_now_s() - t0_;                           \
        }                                                     \
        qsort(t_, REPS, sizeof t_[0], bench_cmp_double);            \
        result = t_[REPS / 2];                                \
    } while (0)

static void bench_matmul(ops_t *ops, int threads, int T, int K, int N, ops_epilogue_t epi, const char *label) {
    float *in = random_floats((size_t)T * K, 1.0f), *W = random_floats((size_t)N * K, 0.05f);
    float *bias = random_floats(N, 0.1f), *out = malloc((size_t)T * N * sizeof *out);
    double ours, bare;
    MEDIAN_SECONDS(ours, {
        if (ops->matmul(ops, out, in, W, bias, T, K, N, epi)) {
            fprintf(stderr, "matmul: %s\n", ops->err);
            exit(1);
        }
    });
    openblas_set_num_threads(threads);
    MEDIAN_SECONDS(bare, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, in, K, W, K, 0.0f, out, N));
    openblas_set_num_threads(1); /* what the backend runs with */
    double gflop = 2.0 * T * K * N * 1e-9;
    printf("matmul %-10s T=%5d K=%5d N=%5d  %8.3f ms %6.1f GFLOP/s | bare openblas(%d thr) %8.3f ms %6.1f GFLOP/s\n",
           label, T, K, N, ours * 1e3, gflop / ours, threads, bare * 1e3, gflop / bare);
    free(in), free(W), free(bias), free(out);
}

static void bench_attention(ops_t *ops, int B, int len) {
    int n_heads = 12, d = 32, H = n_heads * d, T = B * len;
    float *qkv = random_floats((size_t)T * 3 * H, 1.0f), *out = malloc((size_t)T * H * sizeof *out);
    float *bias = random_floats((size_t)3 * H, 0.1f); /* as the engine calls it */
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    for (int b = 0; b <= B; b++) seq_off[b] = b * len;
    double s;
    MEDIAN_SECONDS(s, {
        if (ops->attention(ops, out, qkv, bias, seq_off, B, len, n_heads, d, 1.0f / sqrtf((float)d))) {
            fprintf(stderr, "attention: %s\n", ops->err);
            exit(1);
        }
    });
    double gflop = 4.0 * B * (double)len * len * H * 1e-9;
    printf("attention B=%4d x %4d tokens, 12x32 heads  %8.3f ms %6.1f GFLOP/s %9.0f tokens/s\n", B, len, s * 1e3,
           gflop / s, T / s);
    free(qkv), free(bias), free(out), free(seq_off);
}

/* One encoder layer as engine/bert.c issues it, on B sequences of random
 * lengths in [lo, hi]; prints tokens/s and each op's share of the time. */
static void bench_layer(ops_t *ops, int B, int lo, int hi) {
    enum { H = 384, FFN = 1536, HEADS = 12, D = 32, N_OPS = 7 };
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    int max_len = 0;
    seq_off[0] = 0;
    for (int b = 0; b < B; b++) {
        int len = lo + rand() % (hi - lo + 1);
        seq_off[b + 1] = seq_off[b] + len;
        if (len > max_len) max_len = len;
    }
    int T = seq_off[B];
    float *x = random_floats((size_t)T * H, 1.0f), *qkv = random_floats((size_t)T * 3 * H, 1.0f);
    float *ctx = random_floats((size_t)T * H, 1.0f), *dense = random_floats((size_t)T * H, 1.0f);
    float *ffn = random_floats((size_t)T * FFN, 1.0f);
    float *w_qkv = random_floats((size_t)3 * H * H, 0.05f), *w_ao = random_floats((size_t)H * H, 0.05f);
    float *w_in = random_floats((size_t)FFN * H, 0.05f), *w_out = random_floats((size_t)H * FFN, 0.03f);
    float *bias = random_floats(3 * H > FFN ? 3 * H : FFN, 0.1f), *gamma = random_floats(H, 1.0f);
    static const char *names[N_OPS] = {"qkv", "attention", "attn-out", "add_ln", "ffn-up+gelu", "ffn-down", "add_ln"};
    double op_s[N_OPS][REPS], total[REPS];
    for (int r = -1; r < REPS; r++) { /* r = -1: warm-up */
        double t[N_OPS + 1];
        int rc = 0;
        t[0] = bench_now_s();
        rc |= ops->matmul(ops, qkv, x, w_qkv, NULL, T, H, 3 * H, OPS_EPI_NONE);
        t[1] = bench_now_s();
        rc |= ops->attention(ops, ctx, qkv, bias, seq_off, B, max_len, HEADS, D, 1.0f / sqrtf((float)D));
        t[2] = bench_now_s();
        rc |= ops->matmul(ops, dense, ctx, w_ao, NULL, T, H, H, OPS_EPI_NONE);
        t[3] = bench_now_s();
        rc |= ops->add_ln(ops, x, dense, bias, x, gamma, bias, T, H, 1e-12f);
        t[4] = bench_now_s();
        rc |= ops->matmul(ops, ffn, x, w_in, bias, T, H, FFN, OPS_EPI_BIAS_GELU);
        t[5] = bench_now_s();
        rc |= ops->matmul(ops, dense, ffn, w_out, NULL, T, FFN, H, OPS_EPI_NONE);
        t[6] = bench_now_s();
        rc |= ops->add_ln(ops, x, dense, bias, x, gamma, bias, T, H, 1e-12f);
        t[7] = bench_now_s();
        if (rc) {
            fprintf(stderr, "layer: %s\n", ops->err);
            exit(1);
        }
        if (r < 0) continue;
        for (int i = 0; i < N_OPS; i++) op_s[i][r] = t[i + 1] - t[i];
        total[r] = t[N_OPS] - t[0];
    }
    qsort(total, REPS, sizeof total[0], bench_cmp_double);
    double med = total[REPS / 2];
    printf("layer B=%4d len %3d..%3d T=%6d  %8.3f ms/layer %9.0f tokens/s/layer (6 layers: %7.0f tokens/s)\n  ", B,
           lo, hi, T, med * 1e3, T / med, T / med / 6);
    for (int i = 0; i < N_OPS; i++) {
        qsort(op_s[i], REPS, sizeof op_s[i][0], bench_cmp_double);
        printf(" %s %.0f%%", names[i], 100.0 * op_s[i][REPS / 2] / med);
    }
    printf("\n");
    free(seq_off), free(x), free(qkv), free(ctx), free(dense), free(ffn);
    free(w_qkv), free(w_ao), free(w_in), free(w_out), free(bias), free(gamma);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (argc > 2 && !strcmp(argv[2], "cpu")) bench_clock = CLOCK_PROCESS_CPUTIME_ID;
    ops_t *ops = ops_cpu_create(threads);
    if (!ops) {
        fprintf(stderr, "cannot create the CPU backend\n");
        return 1;
    }
    double load[3] = {0};
    getloadavg(load, 3);
    printf("CPU backend, %d threads (load average %.2f), %s time\n", threads, load[0],
           bench_clock == CLOCK_MONOTONIC ? "wall" : "process CPU");
    static const int tokens[] = {16, 128, 2048};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        int T = tokens[i];
        bench_matmul(ops, threads, T, 384, 1152, OPS_EPI_BIAS, "qkv");
        bench_matmul(ops, threads, T, 384, 384, OPS_EPI_BIAS, "attn-out");
        bench_matmul(ops, threads, T, 384, 1536, OPS_EPI_BIAS_GELU, "ffn-up+gelu");
        bench_matmul(ops, threads, T, 1536, 384, OPS_EPI_BIAS, "ffn-down");
    }
    bench_attention(ops, 1, 128);
    bench_attention(ops, 16, 128);
    bench_attention(ops, 128, 16);
    bench_layer(ops, 1, 12, 12);
    bench_layer(ops, 1, 54, 54); /* the corpus's mean sentence alone: batch 1 */
    bench_layer(ops, 32, 5, 40);
    bench_layer(ops, 256, 5, 60);
    bench_layer(ops, 16, 128, 128);
    ops_destroy(ops);
    return 0;
}
