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
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rand();
    for (size_t b = 0; b < n / bb; b++) {
        uint16_t d = half_of(0.002f + 0.01f * (float)rand() / (float)RAND_MAX);
        uint16_t m = half_of(0.01f + 0.1f * (float)rand() / (float)RAND_MAX) | 0x8000;
        memcpy(w + b * bb, &d, 2);
        if (wt == OPS_W_Q4_1) memcpy(w + b * bb + 2, &m, 2);
    }
    return w;
}

static float *random_floats(size_t n) {
    float *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
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

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    if (reps < 1) reps = 1;
    int max_threads = 2;
    if (argc > 2 && strcmp(argv[2], "cpu") == 0) {
        bench_clock = CLOCK_PROCESS_CPUTIME_ID;
        max_threads = 1;
    }
    srand(1);
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
    for (int l = 0; l < LAYERS; l++)
        for (int s = 0; s < N_SHAPES; s++) free(layer_w[l][s]);
    for (int s = 0; s < N_SHAPES; s++) free(fw[s]);
    free(head), free(fhead), free(x), free(out), free(t);
    return 0;
}
