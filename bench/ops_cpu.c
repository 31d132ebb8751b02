/* bench/ops_cpu.c - microbenchmark of the CPU backend's heavy ops at
 * all-MiniLM-L6-v2 shapes (H=384, 12 heads of 32, FFN 1536).
 *
 *   make CUDA=0 bin/bench-ops_cpu && bin/bench-ops_cpu [threads]
 *
 * Times ops->matmul for the four linear layers of a BERT layer at several
 * token counts, next to a bare multi-threaded OpenBLAS sgemm of the same shape
 * (no epilogue) as the yardstick, and ops->attention at 128-token sequences.
 * Each figure is the median of repeated runs. Random inputs; numbers only.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "kernels/ops.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

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
            double t0_ = now_s();                             \
            body;                                             \
            t_[r_] = now_s() - t0_;                           \
        }                                                     \
        qsort(t_, REPS, sizeof t_[0], cmp_double);            \
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
    int32_t *seq_off = malloc((B + 1) * sizeof *seq_off);
    for (int b = 0; b <= B; b++) seq_off[b] = b * len;
    double s;
    MEDIAN_SECONDS(s, {
        if (ops->attention(ops, out, qkv, seq_off, B, len, n_heads, d, 1.0f / sqrtf((float)d))) {
            fprintf(stderr, "attention: %s\n", ops->err);
            exit(1);
        }
    });
    double gflop = 4.0 * B * (double)len * len * H * 1e-9;
    printf("attention B=%4d x %4d tokens, 12x32 heads  %8.3f ms %6.1f GFLOP/s %9.0f tokens/s\n", B, len, s * 1e3,
           gflop / s, T / s);
    free(qkv), free(out), free(seq_off);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    ops_t *ops = ops_cpu_create(threads);
    if (!ops) {
        fprintf(stderr, "cannot create the CPU backend\n");
        return 1;
    }
    printf("CPU backend, %d threads\n", threads);
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
    ops_destroy(ops);
    return 0;
}
