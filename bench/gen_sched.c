/* bench/gen_sched.c - the generation scheduler's throughput on the CPU: C
 * requests submitted at once (C = 1, 8, 32 ...), each a prompt of --prompt
 * tokens then --gen greedy tokens (no stop tokens, so all run to length),
 * through batcher/sched.h exactly as the server runs them (registry, device
 * worker, chunked prefill, KV blocks, the sampler). Prints engine steps/s,
 * output tokens/s, mean time to first token and the mean step time, with the
 * load average; bench-gen_cpu gives the bare forward pass's figures to
 * compare (the scheduler's overhead is the difference).
 *
 *   bin/bench-gen_sched [--model GGUF] [--threads N] [--prompt N] [--gen N] [--conc 1,8,32] [--cpu-time 1]
 *
 * --cpu-time 1 (with --threads 1) divides by the process's CPU time instead
 * of the wall clock, the figure a busy shared box does not move (as
 * bench-gen_cpu's switch); TTFT and step times stay wall-clock.
 * Prompts are distinct deterministic ids (no prefix-cache hits).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher/sched.h"
#include "batcher/worker.h"
#include "bench/bench_time.h"
#include "engine/registry.h"

static int32_t prompt_id(int b, int i) { return (int32_t)(17 + ((int64_t)i * 7919 + (int64_t)b * 104729) % 49000); }

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
    double ttft_sum;
    long gen;
} wait_t;

static void on_done(void *user, const sched_result_t *r) {
    wait_t *w = user;
    pthread_mutex_lock(&w->mu);
    w->ttft_sum += r->ttft_s;
    w->gen += r->completion_tokens;
    if (--w->left == 0) pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int main(int argc, char **argv) {
    const char *model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf", *conc = "1,8,32";
    int threads = 1, n_prompt = 32, n_gen = 32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conc")) conc = argv[i + 1];
        else if (!strcmp(argv[i], "--cpu-time")) bench_clock = atoi(argv[i + 1]) ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
        else {
            fprintf(stderr, "bench-gen_sched: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char err[1024];
    registry_t *reg;
    worker_t *w;
    sched_t *s;
    registry_opts_t ro = {.models_dir = model, .device = "cpu", .cpu_threads = threads};
    sched_config_t sc = {.max_seqs = 64, .prefix_cache = -1};
    if (registry_create(&ro, &reg, err, sizeof err) || worker_create(reg, &w) ||
        sched_create(reg, w, &sc, &s, err, sizeof err) || sched_prepare(s, 0, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "bench-gen_sched: %s\n", err);
        return 1;
    }
    int32_t *ids = malloc((size_t)n_prompt * sizeof *ids);
    printf("# prompt %d tokens, %d generated each, %d thread(s), %s time\n", n_prompt, n_gen, threads,
           bench_clock == CLOCK_MONOTONIC ? "wall" : "process CPU");
    printf("%6s %9s %12s %10s %11s %8s  %s\n", "seqs", "steps/s", "out tok/s", "ttft ms", "step ms", "time s",
           "loadavg");
    for (const char *p = conc; *p;) {
        int C = atoi(p);
        wait_t wt = {.left = C};
        pthread_mutex_init(&wt.mu, NULL);
        pthread_cond_init(&wt.cv, NULL);
        sched_stats_t a, b;
        sched_stats(s, 0, &a);
        double t0 = bench_now_s();
        for (int c = 0; c < C; c++) {
            for (int i = 0; i < n_prompt; i++) ids[i] = prompt_id(c, i);
            sched_req_t r = {.model = 0, .prompt = ids, .n_prompt = n_prompt, .sample = sample_params_default(),
                             .on_done = on_done, .user = &wt};
            r.sample.max_tokens = n_gen;
            if (sched_submit(s, &r, NULL, err, sizeof err)) {
                fprintf(stderr, "bench-gen_sched: %s\n", err);
                return 1;
            }
        }
        pthread_mutex_lock(&wt.mu);
        while (wt.left) pthread_cond_wait(&wt.cv, &wt.mu);
        pthread_mutex_unlock(&wt.mu);
        double dt = bench_now_s() - t0;
        sched_stats(s, 0, &b);
        char la[64] = "";
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (!fgets(la, sizeof la, f)) la[0] = 0;
            fclose(f);
        }
        la[strcspn(la, "\n")] = 0;
        uint64_t steps = b.steps - a.steps;
        printf("%6d %9.1f %12.1f %10.1f %11.2f %8.2f  %s\n", C, steps / dt, wt.gen / dt, 1e3 * wt.ttft_sum / C,
               1e3 * (b.step_s - a.step_s) / (double)(steps ? steps : 1), dt, la);
        fflush(stdout);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    free(ids);
    sched_destroy(s);
    worker_destroy(w);
    registry_destroy(reg);
    return 0;
}
