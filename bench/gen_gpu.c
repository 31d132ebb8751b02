/* bench/gen_gpu.c - the Llama decoder on the CUDA backend: model files for the
 * GPU check, end-to-end parity against the CPU backend, and the speed figures.
 *
 *   gen-gpu layers --from GGUF --layers N --out GGUF
 *       a Llama GGUF whose layer l is the source's layer l % L (L: the source's
 *       layers): with N < L the first N layers (the subset that travels to the
 *       GPU machine), with N > L the carried layers repeated up to the real
 *       depth (same shapes and types, so the same bytes read and FLOPs per
 *       token: speed does not depend on the values). Metadata: the llama.*
 *       hyperparameters only (no tokenizer: the check feeds token ids).
 *       --vocab V: the token embedding (and output.weight) get V rows, the
 *       source's first V, or its rows repeated up to V (what travels is the
 *       real weights of V tokens; the speed file gets the real vocabulary's
 *       size back: the same LM-head bytes and FLOPs per token).
 *   gen-gpu parity --model GGUF [--fixture JSON] [--steps N]
 *       the same model on the CPU and CUDA backends (exit 1 on a failure):
 *       - the last-token logits of every prompt (the fixture's token ids plus
 *         deterministic prompts of 1..300 tokens): ||cuda - cpu|| / ||cpu||
 *         <= LOGIT_TOL (fp16 KV cache against the CPU's float32 one; float32
 *         activations on both);
 *       - greedy continuations of N steps: identical up to the first step
 *         whose CPU top-2 margin is under MARGIN (a near tie fp16 may flip);
 *         (the CUDA side picks its greedy tokens on the device: ids only);
 *       - on CUDA, batch invariance per matmul_q path (ops.h mma_min_t, mt):
 *         a sequence decoded alone and among mt - 2 others (GEMV), among
 *         mt - 1 and 2 mt - 1 others (tensor cores; 128 sequences at most):
 *         every step's logits bit-identical;
 *       - decode steps replayed from CUDA graphs against the same steps
 *         launched op by op (a second model with no_graphs): bit-identical
 *         logits of every sequence at 1, 40 and 100 sequences (40 and 100
 *         padded to their graph buckets, one on each side of mt = 64).
 *   gen-gpu speed --model GGUF [--streams 1,8,32,128,256] [--prompt 128] [--new 256] [--graphs 1|0]
 *       batch-1 latency per token, aggregate output tokens/s at each stream
 *       count (prompts prefilled in calls of up to 2,048 tokens, then every
 *       stream decodes one token per call), time to first token, and the
 *       prefill rate of one 2,048-token call (16 prompts of 128). Decode
 *       steps take their greedy ids from the device (llama_forward_greedy,
 *       no logits copied back); --graphs 0 launches them op by op. One JSON
 *       line per figure on stdout ("gen-gpu {...}").
 * --device cpu runs parity's CUDA side and speed on the CPU (the rehearsal).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_time.h"
#include "engine/arena.h"
#include "engine/gguf.h"
#include "engine/kv.h"
#include "engine/llama.h"
#include "tests/support_gguf.h"

#define LOGIT_TOL 5e-3
#define MARGIN 0.05f
#define MAX_STREAMS 256

static void die(const char *what, const char *err) {
    fprintf(stderr, "gen-gpu: %s: %s\n", what, err);
    exit(1);
}

static int32_t prompt_id(int b, int i) { return (int32_t)(17 + ((int64_t)i * 7919 + (int64_t)b * 104729) % 49000); }

static int32_t argmax(const float *x, int n, float *margin) {
    int32_t b = 0, s = -1;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) s = b, b = i;
        else if (s < 0 || x[i] > x[s]) s = i;
    if (margin) *margin = s >= 0 ? x[b] - x[s] : INFINITY;
    return b;
}

/* ---------------- layers ---------------- */

static int cmd_layers(const char *from, int n_out, const char *out, int vocab) {
    char err[512];
    gguf_file_t *f;
    if (gguf_open(from, &f, err, sizeof err)) die("open", err);
    int64_t L = 0;
    if (gguf_get_int(f, "llama.block_count", &L) || L < 1) die("layers", "the source has no llama.block_count");
    gw_t *w = gw_new();
    gw_kv_str(w, "general.architecture", "llama");
    static const char *ints[] = {"llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
                                 "llama.attention.head_count_kv", "llama.context_length", "llama.rope.dimension_count"};
    static const char *floats[] = {"llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"};
    gw_kv_u32(w, "llama.block_count", (uint32_t)n_out);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        if (gguf_get_int(f, ints[i], &v) == GGUF_OK) gw_kv_u32(w, ints[i], (uint32_t)v);
    }
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        double v;
        if (gguf_get_float(f, floats[i], &v) == GGUF_OK) gw_kv_f32(w, floats[i], (float)v);
    }
    void *resized[2] = {NULL, NULL};
    int n_resized = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) { /* the tensors outside the layers */
        const gguf_tensor_t *t = gguf_tensor(f, i);
        if (strncmp(t->name, "blk.", 4)) {
            uint64_t ne[GGUF_MAX_DIMS];
            for (int d = 0; d < t->n_dims; d++) ne[d] = (uint64_t)t->ne[d];
            const void *data = t->data;
            if (vocab > 0 && t->n_dims == 2 && n_resized < 2 &&
                (!strcmp(t->name, "token_embd.weight") || !strcmp(t->name, "output.weight"))) {
                const size_t row = t->nbytes / (size_t)t->ne[1];
                unsigned char *buf = malloc((size_t)vocab * row);
                if (!buf) die("layers", "out of memory");
                for (int r = 0; r < vocab; r++)
                    memcpy(buf + (size_t)r * row, (const unsigned char *)t->data + (size_t)(r % t->ne[1]) * row, row);
                ne[1] = (uint64_t)vocab;
                data = resized[n_resized++] = buf;
            }
            gw_tensor(w, t->name, t->type, (uint32_t)t->n_dims, ne, data);
        }
    }
    for (int l = 0; l < n_out; l++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "blk.%d.", (int)(l % L));
        for (int i = 0; i < gguf_n_tensors(f); i++) {
            const gguf_tensor_t *t = gguf_tensor(f, i);
            if (strncmp(t->name, prefix, strlen(prefix))) continue;
            char name[GGUF_MAX_NAME];
            snprintf(name, sizeof name, "blk.%d.%s", l, t->name + strlen(prefix));
            uint64_t ne[GGUF_MAX_DIMS];
            for (int d = 0; d < t->n_dims; d++) ne[d] = (uint64_t)t->ne[d];
            gw_tensor(w, name, t->type, (uint32_t)t->n_dims, ne, t->data);
        }
    }
    int rc = gw_write(w, out);
    gw_free(w);
    gguf_close(f);
    free(resized[0]), free(resized[1]);
    if (rc) die("write", out);
    printf("gen-gpu: wrote %s: %d layers from %s (%lld layers)%s\n", out, n_out, from, (long long)L,
           vocab > 0 ? ", vocabulary resized" : "");
    return 0;
}

/* ---------------- a loaded model ---------------- */

typedef struct {
    ops_t *ops;
    arena_t *arena;
    llama_model_t *m;
    kv_pool_t *kv;
    int V;
} model_t;

/* budget: the arena's bytes (taken at once; weights, workspace and KV cache). */
static void model_open(model_t *md, gguf_file_t *f, const char *device, size_t budget, int max_tokens, int max_seqs,
                       int ctx, int n_seq_kv, int graphs) {
    char err[1024], note[256];
    md->ops = ops_create(device, OPS_F16, 0, err, sizeof err, note, sizeof note);
    if (!md->ops) die(device, err);
    md->arena = arena_create(md->ops, budget, err, sizeof err);
    if (!md->arena) die("arena", err);
    llama_opts_t lo = {.max_tokens = max_tokens, .max_seqs = max_seqs, .max_ctx = ctx, .no_graphs = !graphs};
    if (llama_load(f, md->ops, md->arena, &lo, &md->m, err, sizeof err)) die("load", err);
    kv_config_t kc = llama_kv_config(md->m);
    kc.n_blocks = n_seq_kv * ((ctx + kc.block_size - 1) / kc.block_size) + 8;
    if (kv_pool_create(md->arena, &kc, &md->kv, err, sizeof err)) die("kv", err);
    md->V = llama_info(md->m)->vocab;
}

static void model_close(model_t *md) {
    kv_pool_destroy(md->kv);
    llama_destroy(md->m);
    arena_destroy(md->arena);
    ops_destroy(md->ops);
}

/* One forward of B sequences, n[b] tokens each from ids (end to end); logits (B, V),
 * or with logits NULL only each sequence's greedy id into next (B). */
static void step_ex(model_t *md, kv_seq_t *seqs, int B, const int *n, const int32_t *ids, float *logits,
                    int32_t *next) {
    char err[512];
    static int32_t off[MAX_STREAMS + 1], slots[4096];
    static kv_seq_t *sp[MAX_STREAMS];
    off[0] = 0;
    for (int b = 0; b < B; b++) {
        if (kv_seq_append(md->kv, &seqs[b], n[b], slots, err, sizeof err)) die("kv", err);
        off[b + 1] = off[b] + n[b];
        sp[b] = &seqs[b];
    }
    int rc = next ? llama_forward_greedy(md->m, md->kv, ids, off, B, sp, logits, next, err, sizeof err)
                  : llama_forward(md->m, md->kv, ids, off, B, sp, logits, 0, err, sizeof err);
    if (rc) die("forward", err);
}

static void step(model_t *md, kv_seq_t *seqs, int B, const int *n, const int32_t *ids, float *logits) {
    step_ex(md, seqs, B, n, ids, logits, NULL);
}

/* ---------------- parity ---------------- */

typedef struct {
    int32_t *ids;
    int n;
} prompt_t;

static int load_prompts(const char *fixture, prompt_t *p, int max, int V) {
    int np = 0;
    json_error_t je;
    json_t *root = fixture ? json_load_file(fixture, 0, &je) : NULL;
    if (fixture && !root) fprintf(stderr, "gen-gpu: %s: %s (deterministic prompts only)\n", fixture, je.text);
    json_t *arr = root ? json_object_get(root, "prompts") : NULL;
    for (size_t i = 0; arr && i < json_array_size(arr) && np < max; i++) {
        json_t *ids = json_object_get(json_array_get(arr, i), "ids");
        int n = (int)json_array_size(ids);
        if (n < 1) continue;
        p[np].ids = malloc(n * sizeof(int32_t));
        p[np].n = n;
        for (int j = 0; j < n; j++) p[np].ids[j] = (int32_t)json_integer_value(json_array_get(ids, j)) % V;
        np++;
    }
    json_decref(root);
    static const int lens[] = {1, 7, 37, 128, 300};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0] && np < max; k++, np++) {
        p[np].n = lens[k];
        p[np].ids = malloc(lens[k] * sizeof(int32_t));
        for (int j = 0; j < lens[k]; j++) p[np].ids[j] = prompt_id((int)k + 3, j) % V;
    }
    return np;
}

static double rel_err(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        if (!isfinite(a[i])) return INFINITY;
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Prefill p on a fresh sequence (chunks of 512), then greedy steps; tokens[s],
 * margins[s] and the logits after the prompt (first) are returned. With
 * device_ids the decode steps take the backend's greedy ids and copy no
 * logits (margins are then left unset). */
static void run_greedy(model_t *md, const prompt_t *p, int steps, int ctx, float *first, int32_t *tokens,
                       float *margins, int device_ids) {
    char err[512];
    kv_seq_t s;
    if (kv_seq_init(md->kv, &s, ctx, err, sizeof err)) die("kv", err);
    float *lg = malloc((size_t)md->V * sizeof *lg);
    for (int t0 = 0; t0 < p->n; t0 += 512) {
        int c = p->n - t0 < 512 ? p->n - t0 : 512;
        step(md, &s, 1, &c, p->ids + t0, lg);
    }
    memcpy(first, lg, (size_t)md->V * sizeof *lg);
    int32_t next = argmax(lg, md->V, &margins[0]);
    for (int k = 0; k < steps; k++) {
        if (device_ids) tokens[k] = next;
        else tokens[k] = argmax(lg, md->V, &margins[k]);
        int one = 1;
        if (k + 1 < steps) step_ex(md, &s, 1, &one, &tokens[k], device_ids ? NULL : lg, device_ids ? &next : NULL);
    }
    kv_seq_free(md->kv, &s);
    free(lg);
}

/* Prompt p decoded for `steps` greedy steps (its own argmax) among `others`
 * sequences (prompts of 5..32 tokens, their own greedy tokens), all prefilled
 * in one call; p's logits of every step into out (steps, V); with all set,
 * every sequence's logits into all (steps, others + 1, V). */
static void group_run(model_t *md, const prompt_t *p, int others, int steps, int ctx, float *out, float *all) {
    char err[512];
    const int B = others + 1, me = others < 7 ? others / 2 : 7, V = md->V;
    kv_seq_t *seqs = calloc(B, sizeof *seqs);
    int *n = calloc(B, sizeof *n);
    int32_t *ids = calloc(B, 4), *cat = calloc((size_t)(p->n + others * 32), 4);
    float *lg = malloc((size_t)B * V * 4);
    if (!seqs || !n || !ids || !cat || !lg) die("group", "out of host memory");
    int at = 0;
    for (int b = 0; b < B; b++) {
        if (kv_seq_init(md->kv, &seqs[b], ctx, err, sizeof err)) die("kv", err);
        if (b == me) {
            n[b] = p->n;
            memcpy(cat + at, p->ids, p->n * 4);
        } else {
            n[b] = 5 + (b * 11) % 28;
            for (int j = 0; j < n[b]; j++) cat[at + j] = prompt_id(b + 100, j) % V;
        }
        at += n[b];
    }
    step(md, seqs, B, n, cat, lg);
    for (int k = 0; k < steps; k++) {
        memcpy(out + (size_t)k * V, lg + (size_t)me * V, (size_t)V * 4);
        if (all) memcpy(all + (size_t)k * B * V, lg, (size_t)B * V * 4);
        for (int b = 0; b < B; b++) n[b] = 1, ids[b] = argmax(lg + (size_t)b * V, V, NULL);
        if (k + 1 < steps) step(md, seqs, B, n, ids, lg);
    }
    for (int b = 0; b < B; b++) kv_seq_free(md->kv, &seqs[b]);
    free(seqs), free(n), free(ids), free(cat), free(lg);
}

static int cmd_parity(const char *model, const char *fixture, int steps, const char *device) {
    char err[512];
    gguf_file_t *f;
    if (gguf_open(model, &f, err, sizeof err)) die("open", err);
    const int ctx = 512 + steps + 16, others = 127, seqs_max = others + 1;
    model_t cpu, gpu;
    model_t plain; /* the same device without graphs: the graph replays must give its bits */
    model_open(&cpu, f, "cpu", (size_t)1 << 30, 512, 64, ctx, 2, 0);
    model_open(&gpu, f, device, (size_t)2 << 30, 4608, seqs_max, ctx, others + 2, 1);
    model_open(&plain, f, device, (size_t)2 << 30, 4608, seqs_max, ctx, others + 2, 0);
    const int V = cpu.V;
    prompt_t prompts[64];
    int np = load_prompts(fixture, prompts, 64, V), failed = 0;
    float *lc = malloc((size_t)V * 4), *lg = malloc((size_t)V * 4), *mc = malloc(steps * 4), *mg = malloc(steps * 4);
    int32_t *tc = malloc(steps * 4), *tg = malloc(steps * 4);
    double worst = 0;
    for (int i = 0; i < np; i++) {
        run_greedy(&cpu, &prompts[i], steps, ctx, lc, tc, mc, 0);
        run_greedy(&gpu, &prompts[i], steps, ctx, lg, tg, mg, 1);
        double e = rel_err(lg, lc, V);
        worst = e > worst ? e : worst;
        int same = 0, low = -1;
        while (same < steps && tg[same] == tc[same]) {
            if (low < 0 && mc[same] < MARGIN) low = same;
            same++;
        }
        for (int k = same; low < 0 && k < steps; k++)
            if (mc[k] < MARGIN) low = k;
        /* a divergence is accepted only at or after the first low-margin step */
        int ok = e <= LOGIT_TOL && (same == steps || (low >= 0 && same >= low));
        failed += !ok;
        printf("gen-gpu {\"check\":\"e2e\",\"prompt\":%d,\"tokens\":%d,\"logit_rel_err\":%.3e,\"tol\":%.0e,"
               "\"greedy_same\":%d,\"steps\":%d,\"first_low_margin\":%d,\"pass\":%s}\n",
               i, prompts[i].n, e, LOGIT_TOL, same, steps, low, ok ? "true" : "false");
    }
    /* batch invariance on the device, per matmul_q path, and graphs against plain launches */
    {
        const prompt_t *p = &prompts[np - 3]; /* 37 tokens */
        const int mt = gpu.ops->mma_min_t;
        float *a = malloc((size_t)steps * V * 4), *b = malloc((size_t)steps * V * 4);
        float *ga = malloc((size_t)steps * seqs_max * V * 4), *gb = malloc((size_t)steps * seqs_max * V * 4);
        struct {
            char name[64];
            model_t *ma, *mb;
            int oa, ob, all;
        } cases[8];
        int nc = 0;
        /* each comparison keeps its decode batches on one side of mt */
        const int gemv_b = mt <= 0 ? 4 : mt - 1 < seqs_max ? mt - 1 : seqs_max;
        if (mt != 1 && gemv_b > 1) {
            snprintf(cases[nc].name, sizeof cases[nc].name, "invariance_gemv_1_vs_%d", gemv_b);
            cases[nc].ma = cases[nc].mb = &gpu, cases[nc].oa = 0, cases[nc].ob = gemv_b - 1, cases[nc].all = 0, nc++;
        }
        if (mt > 0 && mt < seqs_max) {
            const int b2 = 2 * mt < seqs_max ? 2 * mt : seqs_max;
            snprintf(cases[nc].name, sizeof cases[nc].name, "invariance_mma_%d_vs_%d", mt, b2);
            cases[nc].ma = cases[nc].mb = &gpu, cases[nc].oa = mt - 1, cases[nc].ob = b2 - 1, cases[nc].all = 0, nc++;
        }
        static const int graph_b[] = {1, 40, 100};
        for (size_t i = 0; i < sizeof graph_b / sizeof graph_b[0]; i++) {
            snprintf(cases[nc].name, sizeof cases[nc].name, "graph_vs_plain_%d", graph_b[i]);
            cases[nc].ma = &gpu, cases[nc].mb = &plain, cases[nc].oa = cases[nc].ob = graph_b[i] - 1;
            cases[nc].all = 1, nc++;
        }
        for (int c = 0; c < nc; c++) {
            group_run(cases[c].ma, p, cases[c].oa, steps, ctx, a, cases[c].all ? ga : NULL);
            group_run(cases[c].mb, p, cases[c].ob, steps, ctx, b, cases[c].all ? gb : NULL);
            int same = cases[c].all ? !memcmp(ga, gb, (size_t)steps * (cases[c].oa + 1) * V * 4)
                                    : !memcmp(a, b, (size_t)steps * V * 4);
            /* on a backend that captures, a graph comparison with no graph captured compared plain with plain */
            int vacuous = cases[c].all && gpu.ops->capture_begin && llama_graph_count(gpu.m) == 0;
            failed += !same || vacuous;
            printf("gen-gpu {\"check\":\"%s\",\"steps\":%d,\"mma_min_t\":%d,\"graphs_captured\":%d,"
                   "\"bit_identical\":%s,\"pass\":%s}\n",
                   cases[c].name, steps, mt, llama_graph_count(gpu.m), same ? "true" : "false",
                   same && !vacuous ? "true" : "false");
        }
        free(a), free(b), free(ga), free(gb);
    }
    printf("gen-gpu: parity %d prompts, worst logit error %.3e (tol %.0e), %d failed\n", np, worst, LOGIT_TOL, failed);
    for (int i = 0; i < np; i++) free(prompts[i].ids);
    free(lc), free(lg), free(mc), free(mg), free(tc), free(tg);
    model_close(&plain);
    model_close(&gpu);
    model_close(&cpu);
    gguf_close(f);
    return failed ? 1 : 0;
}

/* ---------------- speed ---------------- */

static int cmd_speed(const char *model, const char *device, const int *streams, int n_streams, int n_prompt,
                     int n_new, int graphs) {
    char err[512];
    gguf_file_t *f;
    if (gguf_open(model, &f, err, sizeof err)) die("open", err);
    const int ctx = n_prompt + n_new + 16, prefill_tokens = 2048;
    const int prefill_seqs = prefill_tokens / n_prompt < MAX_STREAMS ? prefill_tokens / n_prompt : MAX_STREAMS;
    int max_s = prefill_seqs;
    for (int i = 0; i < n_streams; i++) max_s = streams[i] > max_s ? streams[i] : max_s;
    model_t md;
    /* weights ~0.1 GB, workspace ~0.2 GB, KV (fp16) 30 x 2 x 256 x 400 x 192 x 2 B = 2.4 GB at 256 streams */
    model_open(&md, f, device, (size_t)(strcmp(device, "cpu") ? 6 : 2) << 30, prefill_tokens, max_s, ctx, max_s,
               graphs);
    const llama_info_t *in = llama_info(md.m);
    const int V = md.V;
    double macs = (double)in->n_layers * ((double)in->hidden * (in->n_heads + 2 * in->n_kv_heads) * in->head_dim +
                                          (double)in->n_heads * in->head_dim * in->hidden + 3.0 * in->hidden * in->ffn) +
                  (double)in->hidden * V;
    float *logits = malloc((size_t)max_s * V * 4);
    static kv_seq_t seqs[MAX_STREAMS];
    static int n[MAX_STREAMS];
    int32_t *ids = malloc((size_t)prefill_tokens * 4);
    printf("gen-gpu {\"model_layers\":%d,\"hidden\":%d,\"vocab\":%d,\"gflop_per_token\":%.3f,\"device\":\"%s\","
           "\"graphs\":%d,\"mma_min_t\":%d}\n",
           in->n_layers, in->hidden, V, 2 * macs / 1e9, md.ops->name, graphs, md.ops->mma_min_t);

    /* prefill: 16 prompts of 128 in one call of 2,048 tokens (after one warm-up; the
     * first run also loads the kernels) */
    for (int r = 0; r < 2; r++) {
        const int B = prefill_seqs;
        for (int b = 0; b < B; b++) {
            if (kv_seq_init(md.kv, &seqs[b], ctx, err, sizeof err)) die("kv", err);
            n[b] = n_prompt;
            for (int j = 0; j < n_prompt; j++) ids[b * n_prompt + j] = prompt_id(b, j) % V;
        }
        double t0 = bench_now_s();
        step(&md, seqs, B, n, ids, logits);
        double s = bench_now_s() - t0;
        for (int b = 0; b < B; b++) kv_seq_free(md.kv, &seqs[b]);
        if (r == 1)
            printf("gen-gpu {\"figure\":\"prefill\",\"mma_min_t\":%d,\"tokens\":%d,\"s\":%.6f,\"tokens_per_s\":%.1f,"
                   "\"tflops\":%.3f}\n",
                   md.ops->mma_min_t, B * n_prompt, s, B * n_prompt / s, 2 * macs * B * n_prompt / s / 1e12);
    }
    for (int si = 0; si < n_streams; si++) {
        const int S = streams[si];
        double t_start = bench_now_s(), t_first = 0;
        /* prefill every stream's prompt, in calls of up to 2,048 tokens */
        for (int b0 = 0; b0 < S;) {
            int B = 0;
            while (b0 + B < S && B < prefill_seqs) B++;
            for (int b = 0; b < B; b++) {
                if (kv_seq_init(md.kv, &seqs[b0 + b], ctx, err, sizeof err)) die("kv", err);
                n[b] = n_prompt;
                for (int j = 0; j < n_prompt; j++) ids[b * n_prompt + j] = prompt_id(b0 + b, j) % V;
            }
            step(&md, seqs + b0, B, n, ids, logits);
            if (!b0) t_first = bench_now_s() - t_start;
            b0 += B;
        }
        double t_prefilled = bench_now_s();
        int32_t next[MAX_STREAMS];
        for (int b = 0; b < S; b++) next[b] = prompt_id(b, n_prompt) % V, n[b] = 1;
        for (int k = 0; k < n_new; k++) {
            int32_t chosen[MAX_STREAMS];
            step_ex(&md, seqs, S, n, next, NULL, chosen); /* greedy ids from the device, no logits */
            memcpy(next, chosen, (size_t)S * sizeof *next);
        }
        double t_end = bench_now_s();
        for (int b = 0; b < S; b++) kv_seq_free(md.kv, &seqs[b]);
        double decode = t_end - t_prefilled;
        printf("gen-gpu {\"figure\":\"streams\",\"streams\":%d,\"graphs\":%d,\"mma_min_t\":%d,\"prompt\":%d,"
               "\"new\":%d,\"ttft_s\":%.6f,\"decode_s\":%.6f,\"ms_per_step\":%.4f,\"decode_tokens_per_s\":%.1f,"
               "\"output_tokens_per_s\":%.1f,\"total_s\":%.6f}\n",
               S, graphs, md.ops->mma_min_t, n_prompt, n_new, t_first, decode, 1e3 * decode / n_new, (double)S * n_new / decode,
               (double)S * n_new / (t_end - t_start), t_end - t_start);
    }
    free(logits), free(ids);
    model_close(&md);
    gguf_close(f);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) goto usage;
    const char *from = NULL, *out = NULL, *model = NULL, *fixture = NULL, *device = "cuda";
    int layers = 0, steps = 32, n_prompt = 128, n_new = 256, streams[16] = {1, 8, 32, 128, 256}, n_streams = 5;
    int graphs = 1, vocab = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--from")) from = v;
        else if (!strcmp(k, "--out")) out = v;
        else if (!strcmp(k, "--layers")) layers = atoi(v);
        else if (!strcmp(k, "--model")) model = v;
        else if (!strcmp(k, "--fixture")) fixture = v;
        else if (!strcmp(k, "--device")) device = v;
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--prompt")) n_prompt = atoi(v);
        else if (!strcmp(k, "--new")) n_new = atoi(v);
        else if (!strcmp(k, "--graphs")) graphs = atoi(v) != 0;
        else if (!strcmp(k, "--vocab")) vocab = atoi(v);
        else if (!strcmp(k, "--streams")) {
            n_streams = 0;
            for (const char *s = v; *s && n_streams < 16;) {
                char *e;
                streams[n_streams++] = (int)strtol(s, &e, 10);
                s = *e == ',' ? e + 1 : e;
                if (e == s && *s) break;
            }
        } else goto usage;
    }
    if (!strcmp(argv[1], "layers") && from && out && layers > 0 && vocab >= 0) return cmd_layers(from, layers, out, vocab);
    if (!strcmp(argv[1], "parity") && model && steps > 0) return cmd_parity(model, fixture, steps, device);
    if (!strcmp(argv[1], "speed") && model && n_prompt > 0 && n_prompt <= 2048 && n_new > 0) {
        for (int i = 0; i < n_streams; i++)
            if (streams[i] < 1 || streams[i] > MAX_STREAMS) die("options", "streams are 1..256");
        return cmd_speed(model, device, streams, n_streams, n_prompt, n_new, graphs);
    }
usage:
    fprintf(stderr, "usage: gen-gpu layers --from GGUF --layers N --out GGUF [--vocab V]\n"
                    "       gen-gpu parity --model GGUF [--fixture JSON] [--steps N] [--device cuda|cpu]\n"
                    "       gen-gpu speed --model GGUF [--streams 1,8,32,128,256] [--prompt 128] [--new 256] "
                    "[--graphs 1|0] [--device cuda|cpu]\n");
    return 2;
}
