/* bench/gen_cpu.c - the Llama decoder's end-to-end speed on the CPU backend:
 * prefill tokens/s of one prompt, decode tokens/s with 1, 8 and 32 sequences
 * stepping together (one token each per forward call), and the box's fp32
 * sgemm rate measured in the same run, so decode at 32 can be read as a share
 * of it (FLOPs per token: 2 x the weights' multiply-adds, attention left out).
 *
 *   bin/bench-gen_cpu [--model GGUF] [--threads N] [--prompt N] [--steps N] [--batches 1,8,32] [--cpu-time 1]
 *
 * --cpu-time 1 times with the process's CPU time on one thread instead of the
 * wall clock: on a shared, busy box that is the figure other processes do not
 * move (bench/gen_cpu_peer.py has the same switch).
 * Prompts are deterministic token ids (the same formula as bench/gen_cpu_peer.py
 * uses, so both sides run the same inputs). Each figure is the median of 3 runs.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_time.h"
#include "engine/arena.h"
#include "engine/gguf.h"
#include "engine/kv.h"
#include "engine/llama.h"

#define RUNS 3

static int32_t prompt_id(int b, int i) { return (int32_t)(17 + ((int64_t)i * 7919 + (int64_t)b * 104729) % 49000); }

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench-gen_cpu: %s: %s\n", what, err);
    exit(1);
}

/* Prefill B prompts of n tokens (one call per prompt, in chunks of 512). */
static void prefill_all(llama_model_t *m, kv_pool_t *kv, kv_seq_t *seqs, int B, int n, float *logits) {
    char err[512];
    int32_t ids[512], slots[512];
    for (int b = 0; b < B; b++) {
        for (int t0 = 0; t0 < n; t0 += 512) {
            int c = n - t0 < 512 ? n - t0 : 512;
            for (int i = 0; i < c; i++) ids[i] = prompt_id(b, t0 + i);
            if (kv_seq_append(kv, &seqs[b], c, slots, err, sizeof err)) die("kv", err);
            int32_t off[2] = {0, c};
            kv_seq_t *sp[1] = {&seqs[b]};
            if (llama_forward(m, kv, ids, off, 1, sp, logits, 0, err, sizeof err)) die("forward", err);
        }
    }
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

int main(int argc, char **argv) {
    const char *model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
    int threads = 0, n_prompt = 128, steps = 64;
    int batches[8] = {1, 8, 32}, n_batches = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cpu-time") && atoi(argv[i + 1])) {
            bench_clock = CLOCK_PROCESS_CPUTIME_ID;
            threads = 1;
        }
        else if (!strcmp(argv[i], "--batches")) {
            n_batches = 0;
            for (char *s = argv[i + 1]; *s && n_batches < 8;) {
                batches[n_batches++] = (int)strtol(s, &s, 10);
                if (*s == ',') s++;
            }
        } else {
            fprintf(stderr, "usage: bench-gen_cpu [--model GGUF] [--threads N] [--prompt N] [--steps N] "
                            "[--batches 1,8,32] [--cpu-time 1]\n");
            return 2;
        }
    }
    if (n_prompt < 1 || steps < 1) die("options", "--prompt and --steps must be positive");
    if (bench_clock == CLOCK_PROCESS_CPUTIME_ID) {
        threads = 1; /* CPU time of one thread is its wall time on an idle core */
        openblas_set_num_threads(1);
        printf("timing: process CPU time, 1 thread\n");
    }
    int max_b = 1;
    for (int i = 0; i < n_batches; i++) {
        if (batches[i] < 1 || batches[i] > 64) die("options", "batches are 1..64");
        if (batches[i] > max_b) max_b = batches[i];
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char err[1024];
    gguf_file_t *f;
    if (gguf_open(model, &f, err, sizeof err)) die("open", err);
    ops_t *ops = ops_cpu_create(threads);
    int ctx = n_prompt + steps + 16;
    arena_t *arena = arena_create(ops, (size_t)2 << 30, err, sizeof err);
    if (!arena) die("arena", err);
    llama_model_t *m;
    llama_opts_t lo = {.max_tokens = 512, .max_seqs = 64, .max_ctx = ctx};
    if (llama_load(f, ops, arena, &lo, &m, err, sizeof err)) die("load", err);
    kv_config_t kc = llama_kv_config(m);
    kc.n_blocks = max_b * ((ctx + kc.block_size - 1) / kc.block_size);
    kv_pool_t *kv;
    if (kv_pool_create(arena, &kc, &kv, err, sizeof err)) die("kv", err);
    const llama_info_t *in = llama_info(m);
    int V = in->vocab;
    float *logits = malloc((size_t)64 * V * sizeof *logits);
    kv_seq_t seqs[64];

    /* weights' multiply-adds per token */
    double macs = (double)in->n_layers * ((double)in->hidden * (in->n_heads + 2 * in->n_kv_heads) * in->head_dim +
                                          (double)in->n_heads * in->head_dim * in->hidden +
                                          3.0 * in->hidden * in->ffn) +
                  (double)in->hidden * V;
    double flop_tok = 2 * macs;

    /* fp32 sgemm yardstick: the FFN up shape at T = 32 and T = 128 */
    int K = in->hidden, N = 2 * in->ffn;
    float *A = malloc((size_t)128 * K * 4), *W = malloc((size_t)N * K * 4), *C = malloc((size_t)128 * N * 4);
    for (size_t i = 0; i < (size_t)128 * K; i++) A[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (float)(i % 7) * 0.01f;
    double gflops[2];
    int Ts[2] = {32, 128};
    for (int s = 0; s < 2; s++) {
        double t[RUNS];
        for (int r = 0; r < RUNS; r++) {
            double t0 = bench_now_s();
            for (int k = 0; k < 20; k++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ts[s], N, K, 1.0f, A, K, W, K, 0.0f, C, N);
            t[r] = (bench_now_s() - t0) / 20;
        }
        gflops[s] = 2.0 * Ts[s] * N * K / bench_median(t, RUNS) / 1e9;
    }
    printf("sgemm fp32 (N %d, K %d): T=32 %.1f GFLOP/s, T=128 %.1f GFLOP/s\n", N, K, gflops[0], gflops[1]);
    printf("model: %d layers, width %d, %.0f MFLOP per token (weights)\n", in->n_layers, in->hidden, flop_tok / 1e6);

    /* prefill */
    {
        double t[RUNS];
        for (int r = 0; r < RUNS; r++) {
            if (kv_seq_init(kv, &seqs[0], ctx, err, sizeof err)) die("kv", err);
            double t0 = bench_now_s();
            prefill_all(m, kv, seqs, 1, n_prompt, logits);
            t[r] = bench_now_s() - t0;
            kv_seq_free(kv, &seqs[0]);
        }
        double s = bench_median(t, RUNS);
        printf("prefill %d tokens: %.1f tokens/s (%.1f GFLOP/s)\n", n_prompt, n_prompt / s, n_prompt * flop_tok / s / 1e9);
    }
    /* decode: the B prompts are prefilled once; each run starts from them again */
    for (int bi = 0; bi < n_batches; bi++) {
        int B = batches[bi];
        double t[RUNS];
        for (int b = 0; b < B; b++)
            if (kv_seq_init(kv, &seqs[b], ctx, err, sizeof err)) die("kv", err);
        prefill_all(m, kv, seqs, B, n_prompt, logits);
        int32_t next[64], off[65], slots[1];
        kv_seq_t *sp[64];
        for (int b = 0; b < B; b++) {
            off[b] = b;
            sp[b] = &seqs[b];
        }
        off[B] = B;
        for (int r = 0; r < RUNS; r++) {
            for (int b = 0; b < B; b++) {
                kv_seq_truncate(kv, &seqs[b], n_prompt);
                next[b] = prompt_id(b, n_prompt);
            }
            double t0 = bench_now_s();
            for (int s = 0; s < steps; s++) {
                for (int b = 0; b < B; b++)
                    if (kv_seq_append(kv, &seqs[b], 1, slots, err, sizeof err)) die("kv", err);
                if (llama_forward(m, kv, next, off, B, sp, logits, 0, err, sizeof err)) die("forward", err);
                for (int b = 0; b < B; b++) next[b] = argmax(logits + (size_t)b * V, V);
            }
            t[r] = bench_now_s() - t0;
        }
        for (int b = 0; b < B; b++) kv_seq_free(kv, &seqs[b]);
        double s = bench_median(t, RUNS), tps = (double)B * steps / s;
        printf("decode batch %2d (%d steps after a %d-token prompt): %.1f tokens/s (%.1f GFLOP/s, %.0f%% of sgemm "
               "T=32)\n",
               B, steps, n_prompt, tps, tps * flop_tok / 1e9, 100.0 * tps * flop_tok / 1e9 / gflops[0]);
    }
    free(A), free(W), free(C), free(logits);
    kv_pool_destroy(kv);
    llama_destroy(m);
    arena_destroy(arena);
    ops_destroy(ops);
    gguf_close(f);
    return 0;
}
