/* bench/gpu_bench.c - the engine-level half of bench/gpu-check.sh: end-to-end
 * parity of the real model across backends, and timed forward passes.
 *
 *   gpu-bench parity  --model DIR [--fixture F] [--dump DIR]
 *   gpu-bench bench   --model DIR [--device cuda|cpu] [--dtype bf16|fp16|fp32]
 *                     [--shapes 1x16,32x128,...] [--fixture F] [--seconds S]
 *   gpu-bench topk    [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--sizes 20000,1000000]
 *                     [--nq 1,256] [--k 10,100] [--dim 384] [--seconds S]
 *   gpu-bench profile --model DIR [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--n 1024] [--len 128]
 *
 * parity: the fixture's sentences (tests/fixtures/embeddings.jsonl) through the
 * CPU backend and through CUDA in fp32, bf16 and fp16, all from the same weights;
 * per-sentence cosine against the CPU result (fp32 >= 0.999999, bf16 and fp16
 * >= 0.9999), each of the first sentences alone against its batched result (a
 * sequence must not depend on its batch mates), a second identical run (an
 * error that moves between runs is a race), and, for information, the cosine
 * against the fixture's sentence-transformers embeddings. --dump writes the
 * embeddings as raw float32 (n, H) for bench/st_gpu_bench.py to compare.
 *
 * bench: one model loaded once; for each shape NxL, N synthetic sequences of
 * exactly L tokens ([CLS], ids from a fixed LCG that bench/st_gpu_bench.py
 * repeats, [SEP]) in one engine_embed call; then the fixture's texts as one
 * mixed-length batch, embed only and tokenize + embed. engine_embed returns
 * host results, so a host clock around it times the whole batch (ids up,
 * forward, embeddings down). Warm-up first, then the median of repeats. With
 * --runners R > 1 each shape is timed again with R threads and R batches in
 * flight (the batcher's way on a GPU): wall time over batches done.
 *
 * topk: the expand op's kernel (ops->similarity_topk) on an index of N random
 * unit vectors of D dims (in the backend's dtype) for nq random queries and k
 * best: the call and the download of the results timed together (median of
 * repeats); the first query's result is checked against an exact float64
 * top-k over the same rounded values (recall, ties counted as hits).
 *
 * profile: for a profiler to wrap (bench/gpu-check.sh runs it under ncu): the
 * model loaded without CUDA graphs, then exactly one forward pass of N
 * synthetic sequences of L tokens (the bench's ids), no warm-up, so every
 * kernel launch after the load is that pass. The load's own kernels (weight
 * conversion) come first; a profile report leaves them out by name.
 *
 * Output: one JSON object per line on stdout; notes on stderr. Exit status:
 * 0 passed / ran, 1 a parity check failed or a run broke, 2 bad usage or set-up.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

#define FIXTURE_DEFAULT "tests/fixtures/embeddings.jsonl"
#define SINGLES 16 /* sentences also embedded alone */
#define SUBBATCH 48 /* and the first ones as one smaller batch (graph-sized) */

static int g_graphs = 1;  /* engine_opts_t.graphs: CUDA graph replay for batches up to 4096 tokens */
static int g_runners = 1; /* engine_opts_t.runners: batches in flight (bench: as many threads) */

typedef struct {
    int n;
    char **text;
    int32_t **ref_tokens; /* sentence-transformers' ids */
    int *ref_n;
    float *ref_emb; /* (n, H) */
    int H;
} fixture_t;

typedef struct {
    ops_t *ops;
    arena_t *arena;
    engine_model_t *model;
} loaded_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fixture_free(fixture_t *fx) {
    for (int i = 0; i < fx->n; i++) {
        free(fx->text[i]);
        free(fx->ref_tokens[i]);
    }
    free(fx->text);
    free(fx->ref_tokens);
    free(fx->ref_n);
    free(fx->ref_emb);
    memset(fx, 0, sizeof *fx);
}

static int fixture_load(const char *path, fixture_t *fx) {
    memset(fx, 0, sizeof *fx);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "gpu-bench: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int alloc = 0, rc = -1;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) {
            fprintf(stderr, "gpu-bench: %s:%d: %s\n", path, fx->n + 1, je.text);
            goto done;
        }
        json_t *text = json_object_get(j, "text"), *toks = json_object_get(j, "tokens"),
               *emb = json_object_get(j, "embedding");
        int H = (int)json_array_size(emb);
        if (!json_is_string(text) || !json_is_array(toks) || H == 0 || (fx->H && H != fx->H)) {
            fprintf(stderr, "gpu-bench: %s:%d: expected text, tokens and embedding\n", path, fx->n + 1);
            json_decref(j);
            goto done;
        }
        if (fx->n == alloc) {
            alloc = alloc ? 2 * alloc : 256;
            fx->text = realloc(fx->text, (size_t)alloc * sizeof *fx->text);
            fx->ref_tokens = realloc(fx->ref_tokens, (size_t)alloc * sizeof *fx->ref_tokens);
            fx->ref_n = realloc(fx->ref_n, (size_t)alloc * sizeof *fx->ref_n);
            fx->ref_emb = realloc(fx->ref_emb, (size_t)alloc * H * sizeof *fx->ref_emb);
            if (!fx->text || !fx->ref_tokens || !fx->ref_n || !fx->ref_emb) abort();
        }
        fx->H = H;
        int i = fx->n++;
        fx->text[i] = strdup(json_string_value(text));
        fx->ref_n[i] = (int)json_array_size(toks);
        fx->ref_tokens[i] = malloc((size_t)fx->ref_n[i] * sizeof(int32_t) + 1);
        for (int k = 0; k < fx->ref_n[i]; k++)
            fx->ref_tokens[i][k] = (int32_t)json_integer_value(json_array_get(toks, k));
        for (int h = 0; h < H; h++) fx->ref_emb[(size_t)i * H + h] = (float)json_number_value(json_array_get(emb, h));
        json_decref(j);
    }
    rc = fx->n > 0 ? 0 : -1;
    if (rc) fprintf(stderr, "gpu-bench: %s holds no sentences\n", path);
done:
    free(line);
    fclose(f);
    if (rc) fixture_free(fx);
    return rc;
}

/* Tokenize texts[0..n) into packed ids/off (malloc'ed). Returns total tokens or -1. */
static int tokenize_all(const tok_t *tok, char *const *texts, int n, int32_t **ids_out, int32_t **off_out) {
    const int max_len = tok_max_len(tok);
    int32_t *ids = malloc((size_t)n * max_len * sizeof *ids), *off = malloc(((size_t)n + 1) * sizeof *off);
    char err[256];
    if (!ids || !off) abort();
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        int k = tok_encode(tok, texts[i], strlen(texts[i]), ids + off[i], max_len, NULL, err, sizeof err);
        if (k < 0) {
            fprintf(stderr, "gpu-bench: tokenizing sentence %d: %s\n", i, err);
            free(ids);
            free(off);
            return -1;
        }
        off[i + 1] = off[i] + k;
    }
    *ids_out = ids;
    *off_out = off;
    return off[n];
}

static void unload(loaded_t *l) {
    engine_model_destroy(l->model);
    arena_destroy(l->arena);
    ops_destroy(l->ops);
    memset(l, 0, sizeof *l);
}

/* Open the model on "cpu" or "cuda" (dtype applies to cuda), sized for T tokens and B sequences. */
static int load(const char *dir, const char *device, ops_dtype_t dtype, int T, int B, loaded_t *l) {
    memset(l, 0, sizeof *l);
    char err[1024];
    engine_opts_t opts = {.max_batch_tokens = T, .max_batch_seqs = B, .runners = g_runners, .graphs = g_graphs};
    size_t wbytes, wsbytes;
    double t0 = now_s();
    if (!strcmp(device, "cpu")) {
        l->ops = ops_cpu_create(0);
        if (!l->ops) snprintf(err, sizeof err, "cannot create the CPU backend");
    } else {
        l->ops = ops_cuda_create(0, dtype, err, sizeof err);
    }
    if (!l->ops) goto fail;
    if (engine_model_need(dir, l->ops->dtype, &opts, &wbytes, &wsbytes, err, sizeof err)) goto fail;
    if (!(l->arena = arena_create(l->ops, wbytes + wsbytes + (1 << 20), err, sizeof err))) goto fail;
    if (engine_model_load(dir, l->ops, l->arena, &opts, &l->model, err, sizeof err)) goto fail;
    fprintf(stderr, "gpu-bench: %s %s loaded in %.2f s (weights %.1f MB, workspace %.1f MB for %d tokens)\n",
            l->ops->name, ops_dtype_name(l->ops->dtype), now_s() - t0, engine_weight_bytes(l->model) / 1e6,
            engine_workspace_bytes(l->model) / 1e6, T);
    return 0;
fail:
    fprintf(stderr, "gpu-bench: %s %s: %s\n", device, ops_dtype_name(dtype), err);
    printf("{\"event\":\"load_failed\",\"device\":\"%s\",\"dtype\":\"%s\",\"error\":", device, ops_dtype_name(dtype));
    json_t *s = json_string(err);
    json_dumpf(s, stdout, JSON_ENCODE_ANY);
    json_decref(s);
    printf("}\n");
    fflush(stdout);
    unload(l);
    return -1;
}

static int embed(loaded_t *l, const int32_t *ids, const int32_t *off, int n, float *out) {
    char err[1024];
    if (engine_embed(l->model, ids, off, n, out, err, sizeof err)) {
        fprintf(stderr, "gpu-bench: engine_embed (%s %s, %d sequences, %d tokens): %s\n", l->ops->name,
                ops_dtype_name(l->ops->dtype), n, off[n], err);
        return -1;
    }
    return 0;
}

static double cosine(const float *a, const float *b, int H) {
    double ab = 0, aa = 0, bb = 0;
    for (int h = 0; h < H; h++) {
        ab += (double)a[h] * b[h];
        aa += (double)a[h] * a[h];
        bb += (double)b[h] * b[h];
    }
    if (!(aa > 0) || !(bb > 0)) return (aa == 0 && bb == 0) ? 1.0 : NAN;
    return ab / sqrt(aa * bb);
}

/* min cosine of x vs ref over n rows (NaN rows counted in *nan), worst row in *worst */
static double min_cosine(const float *x, const float *ref, int n, int H, int *worst, int *n_nan, double *mean) {
    double mn = 2, sum = 0;
    *worst = -1;
    *n_nan = 0;
    for (int i = 0; i < n; i++) {
        double c = cosine(x + (size_t)i * H, ref + (size_t)i * H, H);
        if (isnan(c)) {
            (*n_nan)++;
            *worst = i;
            mn = -2;
            continue;
        }
        sum += c;
        if (c < mn) {
            mn = c;
            if (*n_nan == 0) *worst = i;
        }
    }
    *mean = n ? sum / n : 0;
    return mn;
}

static int dump(const char *dir, const char *name, const float *x, size_t count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/emb-%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof *x, count, f) != count) {
        fprintf(stderr, "gpu-bench: cannot write %s\n", path);
        if (f) fclose(f);
        return -1;
    }
    return fclose(f) ? -1 : 0;
}

static int cmd_parity(const char *dir, const char *fixture, const char *dump_dir) {
    fixture_t fx;
    tok_t *tok = NULL;
    char err[1024];
    int rc = 2;
    if (fixture_load(fixture, &fx)) return 2;
    if (tok_create_for_model(dir, &tok, err, sizeof err)) {
        fprintf(stderr, "gpu-bench: %s\n", err);
        fixture_free(&fx);
        return 2;
    }
    int32_t *ids = NULL, *off = NULL;
    int T = tokenize_all(tok, fx.text, fx.n, &ids, &off);
    float *cpu = NULL, *gpu = NULL, *again = NULL, *one = NULL;
    if (T < 0) goto done;
    int same = 0;
    for (int i = 0; i < fx.n; i++)
        same += off[i + 1] - off[i] == fx.ref_n[i] &&
                !memcmp(ids + off[i], fx.ref_tokens[i], (size_t)fx.ref_n[i] * sizeof(int32_t));
    printf("{\"check\":\"tokens\",\"n\":%d,\"tokens\":%d,\"match_sentence_transformers\":%d}\n", fx.n, T, same);

    const int H = fx.H;
    const size_t nh = (size_t)fx.n * H;
    cpu = malloc(nh * sizeof *cpu), gpu = malloc(nh * sizeof *gpu), again = malloc(nh * sizeof *again);
    one = malloc((size_t)H * sizeof *one);
    if (!cpu || !gpu || !again || !one) abort();

    loaded_t l;
    if (load(dir, "cpu", OPS_F32, T, fx.n, &l)) goto done;
    if (engine_info(l.model)->hidden != H) {
        fprintf(stderr, "gpu-bench: the fixture's embeddings have %d values, the model %d\n", H,
                engine_info(l.model)->hidden);
        unload(&l);
        goto done;
    }
    double t0 = now_s();
    int bad = embed(&l, ids, off, fx.n, cpu);
    double cpu_s = now_s() - t0;
    unload(&l);
    if (bad) goto done;
    int worst, n_nan;
    double mean, mn = min_cosine(cpu, fx.ref_emb, fx.n, H, &worst, &n_nan, &mean);
    printf("{\"check\":\"e2e\",\"backend\":\"cpu-fp32\",\"ref\":\"fixture\",\"n\":%d,\"min_cos\":%.9f,"
           "\"mean_cos\":%.9f,\"worst\":%d,\"nan\":%d,\"seconds\":%.4f}\n",
           fx.n, mn, mean, worst, n_nan, cpu_s);
    if (dump_dir && dump(dump_dir, "cpu-fp32", cpu, nh)) goto done;
    fflush(stdout);

    rc = 0;
    const ops_dtype_t dts[3] = {OPS_F32, OPS_BF16, OPS_F16};
    const double thr[3] = {0.999999, 0.9999, 0.9999};
    for (int d = 0; d < 3; d++) {
        const char *dn = ops_dtype_name(dts[d]);
        if (load(dir, "cuda", dts[d], T, fx.n, &l)) {
            printf("{\"check\":\"e2e\",\"backend\":\"cuda-%s\",\"ref\":\"cpu-fp32\",\"pass\":false,"
                   "\"error\":\"load failed\"}\n", dn);
            rc = 1;
            continue;
        }
        const char *why = NULL;
        double t1 = now_s();
        if (embed(&l, ids, off, fx.n, gpu)) why = "engine_embed failed";
        double first_s = now_s() - t1;
        /* a second identical run: results should not move (a race would) */
        if (!why && embed(&l, ids, off, fx.n, again)) why = "engine_embed failed (second run)";
        double rerun = 0, singles = 2;
        for (size_t k = 0; !why && k < nh; k++) {
            double dlt = fabs((double)gpu[k] - again[k]);
            if (dlt > rerun || isnan(dlt)) rerun = isnan(dlt) ? INFINITY : dlt;
        }
        int32_t one_off[2] = {0, 0};
        for (int i = 0; !why && i < fx.n && i < SINGLES; i++) {
            one_off[1] = off[i + 1] - off[i];
            if (embed(&l, ids + off[i], one_off, 1, one)) why = "engine_embed failed (single)";
            else {
                double c = cosine(one, gpu + (size_t)i * H, H);
                if (!(c >= singles)) singles = isnan(c) ? -2 : c;
            }
        }
        /* the first sentences as one smaller batch: another graph bucket */
        int sub = fx.n < SUBBATCH ? fx.n : SUBBATCH;
        if (!why && embed(&l, ids, off, sub, again)) why = "engine_embed failed (sub-batch)";
        for (int i = 0; !why && i < sub; i++) {
            double c = cosine(again + (size_t)i * H, gpu + (size_t)i * H, H);
            if (!(c >= singles)) singles = isnan(c) ? -2 : c;
        }
        unload(&l);
        if (why) {
            printf("{\"check\":\"e2e\",\"backend\":\"cuda-%s\",\"ref\":\"cpu-fp32\",\"pass\":false,\"error\":\"%s\"}\n",
                   dn, why);
            rc = 1;
            continue;
        }
        if (!isfinite(rerun)) rerun = 1e30; /* NaN in a run: keep the JSON valid */
        mn = min_cosine(gpu, cpu, fx.n, H, &worst, &n_nan, &mean);
        int fworst, fnan;
        double fmean, fmn = min_cosine(gpu, fx.ref_emb, fx.n, H, &fworst, &fnan, &fmean);
        int pass = n_nan == 0 && mn >= thr[d] && singles >= thr[d] && rerun <= (dts[d] == OPS_F32 ? 1e-6 : 1e-3);
        printf("{\"check\":\"e2e\",\"backend\":\"cuda-%s\",\"ref\":\"cpu-fp32\",\"n\":%d,\"min_cos\":%.9f,"
               "\"mean_cos\":%.9f,\"worst\":%d,\"nan\":%d,\"threshold\":%g,\"sub_batch_min_cos\":%.9f,"
               "\"rerun_max_abs_diff\":%.3g,\"fixture_min_cos\":%.9f,\"first_call_s\":%.4f,\"graphs\":%d,"
               "\"pass\":%s}\n",
               dn, fx.n, mn, mean, worst, n_nan, thr[d], singles, rerun, fmn, first_s, g_graphs,
               pass ? "true" : "false");
        if (!pass) {
            rc = 1;
            if (worst >= 0)
                fprintf(stderr, "gpu-bench: cuda-%s worst sentence %d (%d tokens): %.80s\n", dn, worst,
                        off[worst + 1] - off[worst], fx.text[worst]);
        }
        char dump_name[32];
        snprintf(dump_name, sizeof dump_name, "cuda-%s", dn);
        if (dump_dir && dump(dump_dir, dump_name, gpu, nh)) rc = 1;
        fflush(stdout);
    }
done:
    free(ids);
    free(off);
    free(cpu);
    free(gpu);
    free(again);
    free(one);
    tok_destroy(tok);
    fixture_free(&fx);
    return rc;
}

/* ---- timing ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double median_ms, min_ms, p90_ms;
    int reps;
} timing_t;

/* Warm up, then repeat until `seconds` have passed (at least 5, at most 1000 runs). */
static int time_embed(loaded_t *l, const int32_t *ids, const int32_t *off, int n, float *out, double seconds,
                      timing_t *t) {
    enum { MAX_REPS = 1000 };
    static double ms[MAX_REPS];
    for (int w = 0; w < 3; w++)
        if (embed(l, ids, off, n, out)) return -1;
    double start = now_s();
    int reps = 0;
    while (reps < MAX_REPS && (reps < 5 || now_s() - start < seconds)) {
        double t0 = now_s();
        if (embed(l, ids, off, n, out)) return -1;
        ms[reps++] = (now_s() - t0) * 1e3;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    t->reps = reps;
    t->min_ms = ms[0];
    t->median_ms = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
    t->p90_ms = ms[(int)(0.9 * (reps - 1))];
    return 0;
}

/* R threads call engine_embed on the same batch at once for `seconds` (the
 * model has R runners: one batch uploads and launches while another
 * computes, as the batcher drives it); the effective time per batch is the
 * wall time over the batches done. */
typedef struct {
    loaded_t *l;
    const int32_t *ids, *off;
    int n, H;
    pthread_barrier_t *ready, *go;
    const double *until; /* set by the main thread between the two barriers */
    int calls, failed;
} pipe_arg_t;

static void *pipe_worker(void *p) {
    pipe_arg_t *a = p;
    float *out = malloc((size_t)a->n * a->H * sizeof *out);
    a->failed = out == NULL;
    /* warm up: every runner sees this batch shape (graph capture) before the clock starts */
    for (int w = 0; w < 2 && !a->failed; w++) a->failed = embed(a->l, a->ids, a->off, a->n, out) != 0;
    pthread_barrier_wait(a->ready);
    pthread_barrier_wait(a->go);
    while (!a->failed && now_s() < *a->until) {
        a->failed = embed(a->l, a->ids, a->off, a->n, out) != 0;
        a->calls++;
    }
    free(out);
    return NULL;
}

static int time_pipelined(loaded_t *l, const int32_t *ids, const int32_t *off, int n, int H, int threads,
                          double seconds, timing_t *t) {
    enum { MAX_THREADS = 8 };
    pthread_t th[MAX_THREADS];
    pipe_arg_t arg[MAX_THREADS];
    pthread_barrier_t ready, go;
    double until = 0, start;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_barrier_init(&ready, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        arg[i] = (pipe_arg_t){.l = l, .ids = ids, .off = off, .n = n, .H = H, .ready = &ready, .go = &go,
                              .until = &until};
        if (pthread_create(&th[i], NULL, pipe_worker, &arg[i])) abort(); /* the barriers would hang */
    }
    pthread_barrier_wait(&ready);
    start = now_s();
    until = start + seconds;
    pthread_barrier_wait(&go);
    int calls = 0, failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        calls += arg[i].calls;
        failed |= arg[i].failed;
    }
    double wall = now_s() - start;
    pthread_barrier_destroy(&ready);
    pthread_barrier_destroy(&go);
    if (failed || calls == 0) return -1;
    t->reps = calls;
    t->median_ms = t->min_ms = t->p90_ms = wall / calls * 1e3;
    return 0;
}

/* The synthetic token ids bench/st_gpu_bench.py repeats: a 64-bit LCG (Knuth's
 * MMIX constants) seeded per shape, ids in [2000, 29000) (ordinary word pieces). */
static void synth_ids(int N, int L, int32_t cls, int32_t sep, int32_t *ids, int32_t *off) {
    uint64_t x = 0x9E3779B97F4A7C15ull ^ ((uint64_t)N * 1000003u + (uint64_t)L);
    for (int b = 0; b < N; b++) {
        int32_t *s = ids + (size_t)b * L;
        off[b] = b * L;
        s[0] = cls;
        for (int k = 1; k < L - 1; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            s[k] = 2000 + (int32_t)((x >> 33) % 27000u);
        }
        s[L - 1] = sep;
    }
    off[N] = N * L;
}

static void print_timing(const char *device, const char *dtype, const char *kind, int N, int L, int T,
                         const timing_t *t) {
    printf("{\"bench\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"len\":%d,\"tokens\":%d,"
           "\"median_ms\":%.4f,\"min_ms\":%.4f,\"p90_ms\":%.4f,\"reps\":%d,\"tokens_per_s\":%.1f,"
           "\"seqs_per_s\":%.1f,\"graphs\":%d,\"runners\":%d}\n",
           kind, device, dtype, N, L, T, t->median_ms, t->min_ms, t->p90_ms, t->reps, T / (t->median_ms * 1e-3),
           N / (t->median_ms * 1e-3), g_graphs, g_runners);
    fflush(stdout);
}

static int cmd_bench(const char *dir, const char *device, ops_dtype_t dtype, const char *shapes,
                     const char *fixture, int mixed_limit, double seconds) {
    enum { MAX_SHAPES = 32 };
    int sn[MAX_SHAPES], sl[MAX_SHAPES], ns = 0, maxT = 0, maxB = 1;
    for (const char *p = shapes; p && *p;) {
        int n, len, used;
        if (ns == MAX_SHAPES || sscanf(p, "%dx%d%n", &n, &len, &used) != 2 || n < 1 || len < 2) {
            fprintf(stderr, "gpu-bench: bad --shapes '%s' (expected NxL[,NxL...], L >= 2)\n", shapes);
            return 2;
        }
        sn[ns] = n, sl[ns++] = len;
        if (n * len > maxT) maxT = n * len;
        if (n > maxB) maxB = n;
        p += used;
        if (*p == ',') p++;
    }
    fixture_t fx = {0};
    tok_t *tok = NULL;
    int32_t *mids = NULL, *moff = NULL, *ids = NULL, *off = NULL;
    float *out = NULL;
    char err[1024];
    int rc = 2, mT = 0, nm = 0; /* the mixed batch: nm texts, mT tokens */
    if (fixture) {
        if (fixture_load(fixture, &fx)) return 2;
        if (mixed_limit > 0 && mixed_limit < fx.n) nm = mixed_limit;
        else nm = fx.n;
        if (tok_create_for_model(dir, &tok, err, sizeof err)) {
            fprintf(stderr, "gpu-bench: %s\n", err);
            goto done;
        }
        if ((mT = tokenize_all(tok, fx.text, nm, &mids, &moff)) < 0) goto done;
        if (mT > maxT) maxT = mT;
        if (nm > maxB) maxB = nm;
    }
    loaded_t l;
    if (load(dir, device, dtype, maxT, maxB, &l)) {
        rc = 1;
        goto done;
    }
    const char *dn = ops_dtype_name(l.ops->dtype);
    const tok_t *mtok = engine_tokenizer(l.model);
    const int H = engine_info(l.model)->hidden, max_len = engine_info(l.model)->max_seq_len;
    ids = malloc((size_t)maxT * sizeof *ids), off = malloc(((size_t)maxB + 1) * sizeof *off);
    out = malloc((size_t)maxB * H * sizeof *out);
    if (!ids || !off || !out) abort();
    rc = 0;
    for (int s = 0; s < ns; s++) {
        if (sl[s] > max_len) {
            fprintf(stderr, "gpu-bench: shape %dx%d: longer than the model's %d tokens, skipped\n", sn[s], sl[s],
                    max_len);
            continue;
        }
        synth_ids(sn[s], sl[s], tok_cls_id(mtok), tok_sep_id(mtok), ids, off);
        timing_t t;
        if (time_embed(&l, ids, off, sn[s], out, seconds, &t)) {
            printf("{\"bench\":\"shape\",\"device\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"len\":%d,\"error\":true}\n",
                   device, dn, sn[s], sl[s]);
            rc = 1;
            continue;
        }
        print_timing(device, dn, "shape", sn[s], sl[s], sn[s] * sl[s], &t);
        if (g_runners > 1) {
            if (time_pipelined(&l, ids, off, sn[s], H, g_runners, seconds, &t)) {
                printf("{\"bench\":\"shape_pipelined\",\"device\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"len\":%d,"
                       "\"error\":true}\n", device, dn, sn[s], sl[s]);
                rc = 1;
            } else {
                print_timing(device, dn, "shape_pipelined", sn[s], sl[s], sn[s] * sl[s], &t);
            }
        }
    }
    if (fixture) {
        timing_t t;
        if (time_embed(&l, mids, moff, nm, out, seconds, &t)) rc = 1;
        else print_timing(device, dn, "mixed", nm, 0, mT, &t);
        /* tokenize + embed: what a caller holding texts pays */
        enum { REPS = 20 };
        double ms[REPS];
        int ok = 1;
        for (int r = 0; r < REPS && ok; r++) {
            double t0 = now_s();
            int32_t *i2, *o2;
            if (tokenize_all(mtok, fx.text, nm, &i2, &o2) < 0) ok = 0;
            else {
                ok = !embed(&l, i2, o2, nm, out);
                free(i2);
                free(o2);
            }
            ms[r] = (now_s() - t0) * 1e3;
        }
        if (!ok) rc = 1;
        else {
            qsort(ms, REPS, sizeof *ms, cmp_double);
            t = (timing_t){.median_ms = 0.5 * (ms[REPS / 2 - 1] + ms[REPS / 2]), .min_ms = ms[0],
                           .p90_ms = ms[(int)(0.9 * (REPS - 1))], .reps = REPS};
            print_timing(device, dn, "mixed_with_tokenize", nm, 0, mT, &t);
        }
    }
    unload(&l);
done:
    free(ids);
    free(off);
    free(out);
    free(mids);
    free(moff);
    tok_destroy(tok);
    fixture_free(&fx);
    return rc;
}

/* ---- similarity top-k (the expand op's kernel) ---- */

/* Parse "a,b,c" into at most max ints > 0; returns the count or -1. */
static int parse_ints(const char *s, int *v, int max) {
    int n = 0;
    for (const char *p = s; p && *p;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x <= 0 || x > 100000000 || n == max) return -1;
        v[n++] = (int)x;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* rows of D uniform [-1, 1) values scaled to unit length */
static void random_unit_rows(float *x, size_t rows, int D, uint64_t seed) {
    uint64_t s = seed | 1;
    for (size_t r = 0; r < rows; r++) {
        float *v = x + r * D;
        double nn = 0;
        for (int d = 0; d < D; d++) {
            v[d] = (float)((xorshift(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
            nn += (double)v[d] * v[d];
        }
        float inv = (float)(1.0 / sqrt(nn));
        for (int d = 0; d < D; d++) v[d] *= inv;
    }
}

static float round_f16(float f) { return (float)(_Float16)f; } /* IEEE half, nearest even, as the device */

static float round_bf16(float f) { /* round to nearest even, as the backend's conversion */
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* A value as the backend of dtype stores it. */
static float round_like(ops_dtype_t dt, float f) {
    return dt == OPS_BF16 ? round_bf16(f) : dt == OPS_F16 ? round_f16(f) : f;
}

/* Exact float64 scores of query q against every row, over the values the
 * backend holds (X and q rounded to bf16 or fp16 in those modes), and the same
 * sorted ascending: what the recall check needs, computed once per index. */
static void exact_scores(const float *X, int N, int D, const float *q, ops_dtype_t dt, double *sc, double *sorted) {
    float *qq = malloc((size_t)D * sizeof *qq);
    if (!qq) abort();
    for (int d = 0; d < D; d++) qq[d] = round_like(dt, q[d]);
    for (int i = 0; i < N; i++) {
        double a = 0;
        const float *x = X + (size_t)i * D;
        for (int d = 0; d < D; d++) a += (double)qq[d] * round_like(dt, x[d]);
        sc[i] = sorted[i] = a;
    }
    qsort(sorted, (size_t)N, sizeof *sorted, cmp_double);
    free(qq);
}

/* Share of got[0..k) at or above the exact k-th best score (ties count). */
static double topk_recall(const double *sc, const double *sorted, int N, const int32_t *got, int k) {
    double kth = sorted[N - k];
    int hits = 0;
    for (int j = 0; j < k; j++)
        if (got[j] >= 0 && got[j] < N && sc[got[j]] >= kth - 1e-6) hits++;
    return (double)hits / k;
}

static int cmd_topk(const char *device, ops_dtype_t dtype, const char *sizes, const char *nqs, const char *ks,
                    int D, double seconds) {
    int Ns[8], Qs[8], Ks[8];
    int nN = parse_ints(sizes, Ns, 8), nQ = parse_ints(nqs, Qs, 8), nK = parse_ints(ks, Ks, 8);
    if (nN < 1 || nQ < 1 || nK < 1 || D < 1) {
        fprintf(stderr, "gpu-bench: bad --sizes/--nq/--k (comma-separated positive integers)\n");
        return 2;
    }
    char err[512];
    ops_t *ops = !strcmp(device, "cpu") ? ops_cpu_create(0) : ops_cuda_create(0, dtype, err, sizeof err);
    if (!ops) {
        fprintf(stderr, "gpu-bench: %s %s: %s\n", device, ops_dtype_name(dtype), !strcmp(device, "cpu") ? "no CPU backend" : err);
        printf("{\"event\":\"load_failed\",\"device\":\"%s\",\"dtype\":\"%s\",\"op\":\"topk\"}\n", device,
               ops_dtype_name(dtype));
        return 1;
    }
    const char *dn = ops_dtype_name(ops->dtype);
    int maxQ = 0, maxK = 0, rc = 0;
    for (int i = 0; i < nQ; i++) maxQ = Qs[i] > maxQ ? Qs[i] : maxQ;
    for (int i = 0; i < nK; i++) maxK = Ks[i] > maxK ? Ks[i] : maxK;
    float *hq = malloc((size_t)maxQ * D * sizeof *hq);
    int32_t *hidx = malloc((size_t)maxQ * maxK * sizeof *hidx);
    float *hscore = malloc((size_t)maxQ * maxK * sizeof *hscore);
    void *dq = ops->mem_alloc(ops, (size_t)maxQ * D * sizeof(float));
    void *didx = ops->mem_alloc(ops, (size_t)maxQ * maxK * sizeof(int32_t));
    void *dscore = ops->mem_alloc(ops, (size_t)maxQ * maxK * sizeof(float));
    if (!hq || !hidx || !hscore || !dq || !didx || !dscore) {
        fprintf(stderr, "gpu-bench: topk: out of memory for the queries\n");
        rc = 1;
        goto done;
    }
    random_unit_rows(hq, (size_t)maxQ, D, 0x51ED);
    if (ops->upload(ops, dq, hq, (size_t)maxQ * D * sizeof(float)) || ops->sync(ops)) {
        fprintf(stderr, "gpu-bench: topk: upload: %s\n", ops->err);
        rc = 1;
        goto done;
    }
    for (int a = 0; a < nN; a++) {
        const int N = Ns[a];
        double t0 = now_s();
        float *hx = malloc((size_t)N * D * sizeof *hx);
        void *dx = ops->mem_alloc(ops, (size_t)N * D * ops_dtype_size(ops->dtype));
        if (!hx || !dx) {
            fprintf(stderr, "gpu-bench: topk: no memory for an index of %d x %d\n", N, D);
            free(hx);
            ops->mem_free(ops, dx);
            rc = 1;
            continue;
        }
        random_unit_rows(hx, (size_t)N, D, 0xC0FFEEull + (uint64_t)N);
        if (ops->upload_weight(ops, dx, hx, (size_t)N * D) || ops->sync(ops)) {
            fprintf(stderr, "gpu-bench: topk: upload_weight: %s\n", ops->err);
            free(hx);
            ops->mem_free(ops, dx);
            rc = 1;
            continue;
        }
        double *sc = malloc((size_t)N * sizeof *sc), *sorted = malloc((size_t)N * sizeof *sorted);
        if (!sc || !sorted) abort();
        exact_scores(hx, N, D, hq, ops->dtype, sc, sorted);
        fprintf(stderr, "gpu-bench: topk index %d x %d %s ready in %.1f s\n", N, D, dn, now_s() - t0);
        for (int b = 0; b < nQ; b++)
            for (int c = 0; c < nK; c++) {
                const int nq = Qs[b], k = Ks[c];
                if (k > N) continue;
                size_t wsb = ops->topk_workspace(ops, nq, N, k);
                void *ws = ops->mem_alloc(ops, wsb ? wsb : 1);
                if (!ws) {
                    fprintf(stderr, "gpu-bench: topk: no memory for a %zu-byte workspace\n", wsb);
                    rc = 1;
                    continue;
                }
                enum { MAX_REPS = 1000 };
                static double ms[MAX_REPS];
                int reps = 0, bad = 0;
                double start = 0;
                for (int r = -2; r < MAX_REPS && !bad; r++) { /* two warm-ups */
                    if (r == 0) start = now_s();
                    if (r >= 5 && now_s() - start >= seconds) break;
                    double t1 = now_s();
                    bad = ops->similarity_topk(ops, didx, dscore, dq, dx, nq, N, D, k, ws) ||
                          ops->download(ops, hidx, didx, (size_t)nq * k * sizeof(int32_t)) ||
                          ops->download(ops, hscore, dscore, (size_t)nq * k * sizeof(float)) || ops->sync(ops);
                    if (r >= 0) ms[reps++] = (now_s() - t1) * 1e3;
                }
                ops->mem_free(ops, ws);
                if (bad || reps == 0) {
                    fprintf(stderr, "gpu-bench: topk N=%d nq=%d k=%d: %s\n", N, nq, k, ops->err);
                    printf("{\"bench\":\"topk\",\"device\":\"%s\",\"dtype\":\"%s\",\"N\":%d,\"nq\":%d,\"k\":%d,"
                           "\"error\":true}\n", device, dn, N, nq, k);
                    rc = 1;
                    continue;
                }
                qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
                double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
                double recall = topk_recall(sc, sorted, N, hidx, k);
                printf("{\"bench\":\"topk\",\"device\":\"%s\",\"dtype\":\"%s\",\"N\":%d,\"D\":%d,\"nq\":%d,\"k\":%d,"
                       "\"median_ms\":%.4f,\"min_ms\":%.4f,\"reps\":%d,\"queries_per_s\":%.1f,"
                       "\"recall_first_query\":%.3f}\n",
                       device, dn, N, D, nq, k, med, ms[0], reps, nq / (med * 1e-3), recall);
                fflush(stdout);
                if (recall < 0.95) rc = 1;
            }
        ops->mem_free(ops, dx);
        free(hx);
        free(sc);
        free(sorted);
    }
done:
    ops->mem_free(ops, dq);
    ops->mem_free(ops, didx);
    ops->mem_free(ops, dscore);
    free(hq);
    free(hidx);
    free(hscore);
    ops_destroy(ops);
    return rc;
}

/* ---- one forward pass for a profiler ---- */

static int cmd_profile(const char *dir, const char *device, ops_dtype_t dtype, int n, int len) {
    if (n < 1 || len < 2 || (int64_t)n * len > 1 << 24) {
        fprintf(stderr, "gpu-bench: profile: bad --n %d / --len %d\n", n, len);
        return 2;
    }
    g_graphs = 0; /* a replayed graph would hide the kernels from a per-launch profiler */
    g_runners = 1;
    loaded_t l;
    if (load(dir, device, dtype, n * len, n, &l)) return 1;
    const tok_t *mtok = engine_tokenizer(l.model);
    const int H = engine_info(l.model)->hidden, max_len = engine_info(l.model)->max_seq_len;
    int rc = 1;
    int32_t *ids = malloc((size_t)n * len * sizeof *ids), *off = malloc(((size_t)n + 1) * sizeof *off);
    float *out = malloc((size_t)n * H * sizeof *out);
    if (!ids || !off || !out) abort();
    if (len > max_len) {
        fprintf(stderr, "gpu-bench: profile: --len %d is over the model's %d tokens\n", len, max_len);
        rc = 2;
        goto done;
    }
    synth_ids(n, len, tok_cls_id(mtok), tok_sep_id(mtok), ids, off);
    double t0 = now_s();
    if (embed(&l, ids, off, n, out)) goto done;
    printf("{\"profile\":\"forward\",\"device\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"len\":%d,\"tokens\":%d,"
           "\"graphs\":0,\"wall_ms\":%.3f}\n",
           device, ops_dtype_name(l.ops->dtype), n, len, n * len, (now_s() - t0) * 1e3);
    fflush(stdout);
    rc = 0;
done:
    free(ids);
    free(off);
    free(out);
    unload(&l);
    return rc;
}

/* "bf16", "fp16" or "fp32"; -1 for anything else. */
static int parse_dtype(const char *s, ops_dtype_t *dt) {
    if (!strcmp(s, "bf16")) *dt = OPS_BF16;
    else if (!strcmp(s, "fp16")) *dt = OPS_F16;
    else if (!strcmp(s, "fp32")) *dt = OPS_F32;
    else return -1;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: gpu-bench parity --model DIR [--fixture F] [--dump DIR]\n"
               "       gpu-bench bench  --model DIR [--device cuda|cpu] [--dtype bf16|fp16|fp32]\n"
               "                        [--shapes NxL,...] [--fixture F|none] [--mixed-limit N] [--seconds S]\n"
               "       both: [--graphs 1|0] (CUDA graph replay of small batches, default 1)\n"
               "       bench: [--runners R] (R > 1: each shape also timed with R threads, R batches in flight)\n"
               "       gpu-bench topk [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--sizes N,...] [--nq Q,...]\n"
               "                      [--k K,...] [--dim D] [--seconds S]\n"
               "       gpu-bench profile --model DIR [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--n N] [--len L]\n"
               "                      (one forward pass of N x L tokens, no graphs, no warm-up: for ncu)\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "parity") && strcmp(argv[1], "bench") && strcmp(argv[1], "topk") &&
                     strcmp(argv[1], "profile"))) {
        usage(stderr);
        return 2;
    }
    const char *model = NULL, *fixture = FIXTURE_DEFAULT, *dump_dir = NULL, *device = "cuda", *dtype = "bf16";
    const char *shapes = "1x16,1x32,32x128,256x128,1024x128";
    double seconds = 0.5;
    int mixed_limit = 0, dim = 384, prof_n = 1024, prof_len = 128;
    const char *sizes = "20000,1000000", *nqs = "1,256", *ks = "10,100";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--fixture")) fixture = strcmp(v, "none") ? v : NULL;
        else if (!strcmp(a, "--dump")) dump_dir = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--shapes")) shapes = v;
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--graphs")) g_graphs = atoi(v);
        else if (!strcmp(a, "--runners")) g_runners = atoi(v) > 0 ? atoi(v) : 1;
        else if (!strcmp(a, "--mixed-limit")) mixed_limit = atoi(v);
        else if (!strcmp(a, "--sizes")) sizes = v;
        else if (!strcmp(a, "--nq")) nqs = v;
        else if (!strcmp(a, "--k")) ks = v;
        else if (!strcmp(a, "--dim")) dim = atoi(v);
        else if (!strcmp(a, "--n")) prof_n = atoi(v);
        else if (!strcmp(a, "--len")) prof_len = atoi(v);
        else {
            usage(stderr);
            return 2;
        }
    }
    ops_dtype_t dt;
    if (parse_dtype(dtype, &dt) || (strcmp(device, "cuda") && strcmp(device, "cpu"))) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "topk")) return cmd_topk(device, dt, sizes, nqs, ks, dim, seconds);
    if (!model) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "profile")) return cmd_profile(model, device, dt, prof_n, prof_len);
    if (!strcmp(argv[1], "parity")) {
        if (!fixture) {
            usage(stderr);
            return 2;
        }
        return cmd_parity(model, fixture, dump_dir);
    }
    return cmd_bench(model, device, dt, shapes, fixture, mixed_limit, seconds);
}
