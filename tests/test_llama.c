/* tests/test_llama.c - the Llama decoder on the CPU backend against
 * transformers fp32 on the same GGUF (tests/fixtures/llama_fixture.json and
 * llama_logits.bin, from tests/tools/gen_llama_fixture.py), batch and chunk
 * invariance, and the loader's refusals on small crafted files.
 *
 * Fidelity, per prompt position: max abs logit difference <= 1e-3 on the
 * stored entries (top-20 and 256 fixed vocabulary ids) and the same top-5
 * set; greedy continuations identical up to the first step whose reference
 * top-1/top-2 margin is under 1e-3. The prompt ids are the fixture's (HF
 * tokenizers), so these tests do not depend on our tokenizer.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/arena.h"
#include "engine/gguf.h"
#include "engine/kv.h"
#include "engine/llama.h"
#include "tests/support_gguf.h"
#include "tests/support_llm.h"
#include "tests/support_tmpdir.h"

#define LLM_PATH support_llm_path() /* $SLUICE_TEST_LLM or the file `make model` fetches */
#define FIX_JSON "tests/fixtures/llama_fixture.json"
#define FIX_BIN "tests/fixtures/llama_logits.bin"
#define TOL 1e-3
#define MARGIN 1e-3

static char err[512];

/* ---- the real model ---- */

typedef struct {
    ops_t *ops;
    arena_t *arena;
    gguf_file_t *file;
    llama_model_t *m;
    kv_pool_t *kv;
    int V;
} rig_t;

static rig_t rig;

static void rig_up(int threads, int n_blocks) {
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    memset(&rig, 0, sizeof rig);
    rig.ops = ops_cpu_create(threads);
    cr_assert_not_null(rig.ops);
    cr_assert_eq(gguf_open(LLM_PATH, &rig.file, err, sizeof err), GGUF_OK, "%s", err);
    rig.arena = arena_create(rig.ops, 400u << 20, err, sizeof err);
    cr_assert_not_null(rig.arena, "%s", err);
    llama_opts_t o = {.max_tokens = 512, .max_seqs = 32, .max_ctx = 2048};
    int rc = llama_load(rig.file, rig.ops, rig.arena, &o, &rig.m, err, sizeof err);
    cr_assert_eq(rc, LLAMA_OK, "llama_load: %s", err);
    kv_config_t kc = llama_kv_config(rig.m);
    kc.n_blocks = n_blocks;
    cr_assert_eq(kv_pool_create(rig.arena, &kc, &rig.kv, err, sizeof err), KV_OK, "%s", err);
    rig.V = llama_info(rig.m)->vocab;
}

static void rig_down(void) {
    kv_pool_destroy(rig.kv);
    llama_destroy(rig.m);
    arena_destroy(rig.arena);
    gguf_close(rig.file);
    ops_destroy(rig.ops);
    memset(&rig, 0, sizeof rig);
}

TestSuite(llama, .fini = rig_down, .timeout = 600);
TestSuite(llama_load, .init = tmpdir_init, .fini = tmpdir_fini);

/* ---- the fixture ---- */

typedef struct {
    json_t *root;
    float *bin;       /* positions x record floats */
    size_t n_floats;
    int top_n, n_sample, n_gen, rec; /* rec: floats per position */
    int32_t sample_ids[512];
} fixture_t;

static fixture_t fx;

static void fixture_load(void) {
    json_error_t je;
    fx.root = json_load_file(FIX_JSON, 0, &je);
    cr_assert_not_null(fx.root, "%s: %s (line %d)", FIX_JSON, je.text, je.line);
    fx.top_n = (int)json_integer_value(json_object_get(fx.root, "top_n"));
    fx.n_sample = (int)json_integer_value(json_object_get(fx.root, "n_sample"));
    fx.n_gen = (int)json_integer_value(json_object_get(fx.root, "n_gen"));
    fx.rec = (int)json_integer_value(json_object_get(fx.root, "record_bytes")) / 4;
    cr_assert(fx.top_n >= 6 && fx.n_sample > 0 && fx.n_sample <= 512 && fx.rec == 2 * fx.top_n + fx.n_sample + 1);
    json_t *ids = json_object_get(fx.root, "sample_ids");
    for (int i = 0; i < fx.n_sample; i++) fx.sample_ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
    FILE *fp = fopen(FIX_BIN, "rb");
    cr_assert_not_null(fp, "%s", FIX_BIN);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    fx.bin = malloc((size_t)len);
    cr_assert(fread(fx.bin, 1, (size_t)len, fp) == (size_t)len);
    fclose(fp);
    fx.n_floats = (size_t)len / 4;
    int n_pos = (int)json_integer_value(json_object_get(fx.root, "n_positions"));
    cr_assert_eq(fx.n_floats, (size_t)n_pos * fx.rec, "%s does not match %s", FIX_BIN, FIX_JSON);
}

static json_t *prompts(void) { return json_object_get(fx.root, "prompts"); }

/* A prompt's ids (malloc'd) and count. */
static int32_t *prompt_ids(json_t *p, int *n) {
    json_t *a = json_object_get(p, "ids");
    *n = (int)json_array_size(a);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* Run one sequence's tokens through a fresh kv seq in chunks of `chunk`
 * (0: one piece); logits of every position into out (n, V). */
static void prefill(kv_seq_t *s, const int32_t *ids, int n, int chunk, float *out) {
    if (chunk <= 0) chunk = n;
    int32_t slots[512];
    for (int t0 = 0; t0 < n; t0 += chunk) {
        int c = n - t0 < chunk ? n - t0 : chunk;
        cr_assert_eq(kv_seq_append(rig.kv, s, c, slots, err, sizeof err), KV_OK, "%s", err);
        int32_t off[2] = {0, c};
        kv_seq_t *seqs[1] = {s};
        int rc = llama_forward(rig.m, rig.kv, ids + t0, off, 1, seqs, out + (size_t)t0 * rig.V, 1, err, sizeof err);
        cr_assert_eq(rc, LLAMA_OK, "llama_forward: %s", err);
    }
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Indices of the k largest (descending; lower id first on ties). */
static void top_k(const float *x, int n, int k, int32_t *out) {
    for (int j = 0; j < k; j++) out[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (out[j - 1] < 0 || x[i] > x[out[j - 1]])) j--;
        if (j >= k) continue;
        memmove(out + j + 1, out + j, (size_t)(k - j - 1) * sizeof *out);
        out[j] = i;
    }
}

Test(llama, logits_match_transformers_at_every_position) {
    rig_up(0, 64);
    fixture_load();
    float *logits = malloc((size_t)512 * rig.V * sizeof *logits);
    double worst = 0.0;
    int checked = 0;
    for (size_t pi = 0; pi < json_array_size(prompts()); pi++) {
        json_t *p = json_array_get(prompts(), pi);
        int n;
        int32_t *ids = prompt_ids(p, &n);
        int off = (int)json_integer_value(json_object_get(p, "logits_offset"));
        kv_seq_t s;
        cr_assert_eq(kv_seq_init(rig.kv, &s, 1024, err, sizeof err), KV_OK);
        prefill(&s, ids, n, 0, logits);
        for (int t = 0; t < n; t++) {
            const float *ref = fx.bin + (size_t)(off + t) * fx.rec;
            const int32_t *ref_ids = (const int32_t *)ref;
            const float *ref_top = ref + fx.top_n, *ref_samp = ref + 2 * fx.top_n;
            const float *got = logits + (size_t)t * rig.V;
            for (int j = 0; j < fx.top_n; j++) {
                double d = fabs((double)got[ref_ids[j]] - ref_top[j]);
                if (d > worst) worst = d;
                cr_assert(d <= TOL, "prompt %zu pos %d: logit of id %d is %.6f, transformers %.6f", pi, t, ref_ids[j],
                          got[ref_ids[j]], ref_top[j]);
            }
            for (int j = 0; j < fx.n_sample; j++) {
                double d = fabs((double)got[fx.sample_ids[j]] - ref_samp[j]);
                if (d > worst) worst = d;
                cr_assert(d <= TOL, "prompt %zu pos %d: logit of id %d is %.6f, transformers %.6f", pi, t,
                          fx.sample_ids[j], got[fx.sample_ids[j]], ref_samp[j]);
            }
            /* the same top-5 set, unless the reference itself has a tie at
             * the border (5th and 6th within the tolerance) */
            int32_t mine[5];
            top_k(got, rig.V, 5, mine);
            int border_tie = ref_top[4] - ref_top[5] < 2 * TOL;
            for (int j = 0; j < 5 && !border_tie; j++) {
                int found = 0;
                for (int k = 0; k < 5; k++) found |= mine[k] == ref_ids[j];
                cr_assert(found, "prompt %zu pos %d: transformers' top-5 id %d (%.5f) is not in ours", pi, t,
                          ref_ids[j], ref_top[j]);
            }
            checked++;
        }
        kv_seq_free(rig.kv, &s);
        free(ids);
    }
    cr_log_info("%d positions, max abs logit difference %.3g", checked, worst);
    fprintf(stderr, "llama fidelity: %d positions, max abs logit difference %.3g\n", checked, worst);
    free(logits);
    json_decref(fx.root);
    free(fx.bin);
}

/* The decode steps below pick their tokens with llama_forward_greedy. */
Test(llama, greedy_continuations_match_transformers) {
    rig_up(0, 200);
    fixture_load();
    int np = (int)json_array_size(prompts());
    cr_assert(np <= 32);
    kv_seq_t seqs[32];
    kv_seq_t *sp[32];
    int32_t next[32], slots[512];
    float *logits = malloc((size_t)512 * rig.V * sizeof *logits);
    /* prefill one prompt at a time, then decode all of them together */
    for (int b = 0; b < np; b++) {
        int n;
        int32_t *ids = prompt_ids(json_array_get(prompts(), b), &n);
        cr_assert_eq(kv_seq_init(rig.kv, &seqs[b], 1024, err, sizeof err), KV_OK);
        sp[b] = &seqs[b];
        prefill(&seqs[b], ids, n, 0, logits);
        next[b] = argmax(logits + (size_t)(n - 1) * rig.V, rig.V);
        free(ids);
    }
    int live[32], compared = 0, stopped_at_tie = 0;
    for (int b = 0; b < np; b++) live[b] = 1;
    int32_t off[33];
    for (int step = 0; step < fx.n_gen; step++) {
        for (int b = 0; b < np; b++) {
            json_t *p = json_array_get(prompts(), b);
            double margin = json_real_value(json_array_get(json_object_get(p, "margins"), step));
            int32_t ref = (int32_t)json_integer_value(json_array_get(json_object_get(p, "greedy"), step));
            if (live[b] && margin < MARGIN) {
                live[b] = 0; /* a near-tie: from here either choice is right */
                stopped_at_tie++;
            }
            if (live[b]) {
                cr_assert_eq(next[b], ref, "prompt %d step %d: we chose %d, transformers %d (margin %.4f)", b, step,
                             next[b], ref, margin);
                compared++;
            }
            off[b] = b;
            cr_assert_eq(kv_seq_append(rig.kv, &seqs[b], 1, slots, err, sizeof err), KV_OK, "%s", err);
        }
        off[np] = np;
        if (step == fx.n_gen - 1) break;
        /* the ids chosen by the backend (ops->argmax): on even steps beside the
         * logits, which they must match; on odd steps alone (no logits copied) */
        int32_t ids[32];
        int rc = llama_forward_greedy(rig.m, rig.kv, next, off, np, sp, step % 2 ? NULL : logits, ids, err, sizeof err);
        cr_assert_eq(rc, LLAMA_OK, "%s", err);
        for (int b = 0; b < np; b++) {
            if (step % 2 == 0)
                cr_assert_eq(ids[b], argmax(logits + (size_t)b * rig.V, rig.V), "step %d sequence %d: greedy id %d, "
                             "argmax of its logits %d", step, b, ids[b], argmax(logits + (size_t)b * rig.V, rig.V));
            next[b] = ids[b];
        }
    }
    fprintf(stderr, "llama greedy: %d tokens compared, %d prompts stopped at a near-tie\n", compared, stopped_at_tie);
    cr_assert(compared > np * fx.n_gen / 2, "only %d tokens compared", compared);
    for (int b = 0; b < np; b++) kv_seq_free(rig.kv, &seqs[b]);
    free(logits);
    json_decref(fx.root);
    free(fx.bin);
}

/* A deterministic token string of length n (ids from a small LCG). */
static void some_tokens(int32_t *ids, int n, uint32_t seed, int V) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)(17 + (seed >> 8) % (uint32_t)(V - 17));
    }
}

Test(llama, batch_and_chunk_invariance_is_bit_exact) {
    rig_up(0, 200);
    enum { N = 77, DECODE = 3, OTHERS = 15 };
    int32_t ids[N + DECODE], slots[512];
    some_tokens(ids, N + DECODE, 1, rig.V);
    size_t row = (size_t)rig.V * sizeof(float);
    float *alone = malloc((size_t)(N + DECODE) * row);
    float *got = malloc((size_t)512 * rig.V * sizeof(float));

    /* alone, in one piece, then DECODE single steps */
    kv_seq_t s;
    cr_assert_eq(kv_seq_init(rig.kv, &s, 1024, err, sizeof err), KV_OK);
    prefill(&s, ids, N, 0, alone);
    for (int i = 0; i < DECODE; i++) prefill(&s, ids + N + i, 1, 0, alone + (size_t)(N + i) * rig.V);
    kv_seq_free(rig.kv, &s);

    /* alone in chunks of 1, 7, 16 and 64 */
    int chunks[] = {1, 7, 16, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        cr_assert_eq(kv_seq_init(rig.kv, &s, 1024, err, sizeof err), KV_OK);
        prefill(&s, ids, N + DECODE, chunks[c], got);
        for (int t = 0; t < N + DECODE; t++)
            cr_assert(memcmp(got + (size_t)t * rig.V, alone + (size_t)t * rig.V, row) == 0,
                      "chunks of %d: position %d differs from the one-piece prefill", chunks[c], t);
        kv_seq_free(rig.kv, &s);
    }

    /* with 15 others in the same calls: prefill all 16 together (ours third),
     * then decode all 16 together */
    kv_seq_t seqs[OTHERS + 1];
    kv_seq_t *sp[OTHERS + 1];
    int32_t packed[512], off[OTHERS + 2];
    int32_t lens[OTHERS + 1];
    int total = 0;
    off[0] = 0;
    for (int b = 0; b <= OTHERS; b++) {
        lens[b] = b == 2 ? N : 3 + (b * 5) % 23;
        if (b == 2) memcpy(packed + total, ids, N * sizeof(int32_t));
        else some_tokens(packed + total, lens[b], 100 + (uint32_t)b, rig.V);
        cr_assert_eq(kv_seq_init(rig.kv, &seqs[b], 1024, err, sizeof err), KV_OK);
        cr_assert_eq(kv_seq_append(rig.kv, &seqs[b], lens[b], slots, err, sizeof err), KV_OK);
        sp[b] = &seqs[b];
        total += lens[b];
        off[b + 1] = total;
    }
    cr_assert_eq(llama_forward(rig.m, rig.kv, packed, off, OTHERS + 1, sp, got, 1, err, sizeof err), LLAMA_OK, "%s",
                 err);
    for (int t = 0; t < N; t++)
        cr_assert(memcmp(got + (size_t)(off[2] + t) * rig.V, alone + (size_t)t * rig.V, row) == 0,
                  "with 15 others: position %d differs from alone", t);
    for (int i = 0; i < DECODE; i++) {
        int32_t step[OTHERS + 1];
        for (int b = 0; b <= OTHERS; b++) {
            step[b] = b == 2 ? ids[N + i] : (int32_t)(20 + b + i);
            off[b] = b;
            cr_assert_eq(kv_seq_append(rig.kv, &seqs[b], 1, slots, err, sizeof err), KV_OK);
        }
        off[OTHERS + 1] = OTHERS + 1;
        cr_assert_eq(llama_forward(rig.m, rig.kv, step, off, OTHERS + 1, sp, got, 0, err, sizeof err), LLAMA_OK,
                     "%s", err);
        cr_assert(memcmp(got + (size_t)2 * rig.V, alone + (size_t)(N + i) * rig.V, row) == 0,
                  "decode step %d with 15 others differs from alone", i);
    }
    for (int b = 0; b <= OTHERS; b++) kv_seq_free(rig.kv, &seqs[b]);
    free(alone);
    free(got);
}

Test(llama, shared_prefix_blocks_give_the_same_logits) {
    /* what a prefix cache does: a second sequence starts on the first's full
     * blocks and prefills only its own suffix */
    rig_up(0, 64);
    enum { P = 48, S = 21 }; /* 48 = 3 full blocks of 16 */
    int32_t a[P + S], b[P + S];
    some_tokens(a, P + S, 3, rig.V);
    memcpy(b, a, P * sizeof(int32_t));
    some_tokens(b + P, S, 4, rig.V);
    float *fresh = malloc((size_t)(P + S) * rig.V * sizeof(float));
    float *got = malloc((size_t)(P + S) * rig.V * sizeof(float));
    kv_seq_t sa, sb;
    cr_assert_eq(kv_seq_init(rig.kv, &sb, 1024, err, sizeof err), KV_OK);
    prefill(&sb, b, P + S, 0, fresh);
    kv_seq_free(rig.kv, &sb);
    cr_assert_eq(kv_seq_init(rig.kv, &sa, 1024, err, sizeof err), KV_OK);
    prefill(&sa, a, P + S, 0, got);
    cr_assert_eq(kv_seq_init(rig.kv, &sb, 1024, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_attach(rig.kv, &sb, sa.blocks, P / 16, err, sizeof err), KV_OK, "%s", err);
    prefill(&sb, b + P, S, 0, got);
    for (int t = 0; t < S; t++)
        cr_assert(memcmp(got + (size_t)t * rig.V, fresh + (size_t)(P + t) * rig.V, (size_t)rig.V * sizeof(float)) == 0,
                  "suffix position %d differs on shared prefix blocks", t);
    cr_assert_eq(kv_block_refs(rig.kv, sa.blocks[0]), 2);
    kv_seq_free(rig.kv, &sa);
    kv_seq_free(rig.kv, &sb);
    cr_assert_eq(kv_free_blocks(rig.kv), 64);
    free(fresh);
    free(got);
}

Test(llama, thread_count_does_not_change_logits) {
    enum { N = 40 };
    int32_t ids[N];
    float *a, *b;
    for (int run = 0; run < 2; run++) {
        rig_up(run == 0 ? 1 : 2, 16);
        some_tokens(ids, N, 9, rig.V);
        float *out = malloc((size_t)N * rig.V * sizeof(float));
        kv_seq_t s;
        cr_assert_eq(kv_seq_init(rig.kv, &s, 1024, err, sizeof err), KV_OK);
        prefill(&s, ids, N, 0, out);
        kv_seq_free(rig.kv, &s);
        if (run == 0) a = out;
        else b = out;
        if (run == 0) rig_down();
    }
    cr_assert(memcmp(a, b, (size_t)N * rig.V * sizeof(float)) == 0, "1 and 2 threads give different logits");
    free(a);
    free(b);
}

Test(llama, bad_calls_are_refused) {
    rig_up(0, 8);
    kv_seq_t s;
    int32_t slots[64], off[2] = {0, 2}, ids[2] = {5, 1 << 20};
    float *out = malloc((size_t)2 * rig.V * sizeof(float));
    kv_seq_t *sp[1] = {&s};
    cr_assert_eq(kv_seq_init(rig.kv, &s, 64, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(rig.kv, &s, 2, slots, err, sizeof err), KV_OK);
    cr_assert_eq(llama_forward(rig.m, rig.kv, ids, off, 1, sp, out, 0, err, sizeof err), LLAMA_EINVAL);
    cr_assert(strstr(err, "outside the vocabulary"), "%s", err);
    ids[1] = 7;
    off[1] = 3; /* more new tokens than the sequence holds */
    cr_assert_eq(llama_forward(rig.m, rig.kv, ids, off, 1, sp, out, 0, err, sizeof err), LLAMA_EINVAL);
    off[1] = 2;
    cr_assert_eq(llama_forward(rig.m, rig.kv, ids, off, 0, sp, out, 0, err, sizeof err), LLAMA_EINVAL);
    cr_assert_eq(llama_forward_greedy(rig.m, rig.kv, ids, off, 1, sp, out, NULL, err, sizeof err), LLAMA_EINVAL);
    cr_assert(strstr(err, "NULL ids"), "%s", err);
    cr_assert_eq(llama_forward(rig.m, rig.kv, ids, off, 1, sp, out, 0, err, sizeof err), LLAMA_OK, "%s", err);
    kv_seq_free(rig.kv, &s);
    free(out);
}

Test(llama, load_report_and_budget) {
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    ops_t *ops = ops_cpu_create(1);
    gguf_file_t *f;
    cr_assert_eq(gguf_open(LLM_PATH, &f, err, sizeof err), GGUF_OK, "%s", err);
    arena_t *a = arena_create(ops, 64u << 20, err, sizeof err);
    llama_model_t *m = (llama_model_t *)1;
    cr_assert_eq(llama_load(f, ops, a, NULL, &m, err, sizeof err), LLAMA_ENOMEM);
    cr_assert_null(m);
    cr_assert(strstr(err, "weights") && strstr(err, "workspace"), "%s", err);
    cr_assert_eq(arena_used(a), 0);
    arena_destroy(a);
    a = arena_create(ops, 256u << 20, err, sizeof err);
    cr_assert_eq(llama_load(f, ops, a, NULL, &m, err, sizeof err), LLAMA_OK, "%s", err);
    const llama_info_t *in = llama_info(m);
    cr_assert_eq(in->n_layers, 30);
    cr_assert_eq(in->hidden, 576);
    cr_assert_eq(in->ffn, 1536);
    cr_assert_eq(in->n_heads, 9);
    cr_assert_eq(in->n_kv_heads, 3);
    cr_assert_eq(in->head_dim, 64);
    cr_assert_eq(in->vocab, 49152);
    cr_assert_eq(in->n_ctx, 8192);
    cr_assert_float_eq(in->rope_theta, 100000.0f, 1e-3);
    cr_assert_float_eq(in->rms_eps, 1e-5f, 1e-9);
    /* quantized weights stay quantized: about the file's size */
    cr_assert(llama_weight_bytes(m) > 95000000u && llama_weight_bytes(m) < 99000000u, "%zu",
              llama_weight_bytes(m));
    llama_destroy(m);
    cr_assert_eq(arena_used(a), 0);
    /* a backend without a decoder op is refused by name */
    ops->rope = NULL;
    cr_assert_eq(llama_load(f, ops, a, NULL, &m, err, sizeof err), LLAMA_EMODEL);
    cr_assert(strstr(err, "rope"), "%s", err);
    arena_destroy(a);
    gguf_close(f);
    ops_destroy(ops);
    llama_destroy(NULL);
}

/* ---- crafted files ---- */

/* Sane bytes for a tensor of the tiny model: small fp16 scales and mins,
 * varied quants, F32 norms of 1 (pattern bytes could hold NaN halves). */
static uint8_t tiny_bytes[16][8192];
static int n_tiny;

static const void *tiny_data(uint32_t type, uint32_t n_dims, const uint64_t *ne) {
    size_t n = gw_tensor_bytes(type, n_dims, ne);
    cr_assert(n > 0 && n <= sizeof tiny_bytes[0] && n_tiny < 16);
    uint8_t *p = tiny_bytes[n_tiny++];
    size_t blk = type == GGUF_T_F32 ? 4 : type == GGUF_T_F16 ? 2 : gguf_type_block_bytes(type);
    for (size_t i = 0; i < n; i += blk) {
        uint8_t *b = p + i;
        if (type == GGUF_T_F32) {
            float one = 1.0f;
            memcpy(b, &one, 4);
        } else if (type == GGUF_T_F16) {
            uint16_t h = (uint16_t)(0x2000 + (i / 2 % 7) * 0x100); /* 0.0078 .. */
            memcpy(b, &h, 2);
        } else {
            uint16_t d = 0x2000, m = 0xA000; /* d = 0.0078, m = -0.0078 */
            memcpy(b, &d, 2);
            size_t q0 = 2;
            if (type == GGUF_T_Q4_1) {
                memcpy(b + 2, &m, 2);
                q0 = 4;
            }
            for (size_t j = q0; j < blk; j++) b[j] = (uint8_t)((i / blk * 13 + j * 7) % 251);
        }
    }
    return p;
}

/* A tiny valid llama GGUF: 1 layer, width 64, 2 heads, 1 KV head, FFN 64, vocab 8. */
static gw_t *tiny(void) {
    gw_t *w = gw_new();
    n_tiny = 0;
    gw_kv_str(w, "general.architecture", "llama");
    gw_kv_u32(w, "llama.block_count", 1);
    gw_kv_u32(w, "llama.embedding_length", 64);
    gw_kv_u32(w, "llama.feed_forward_length", 64);
    gw_kv_u32(w, "llama.attention.head_count", 2);
    gw_kv_u32(w, "llama.attention.head_count_kv", 1);
    gw_kv_u32(w, "llama.context_length", 128);
    gw_kv_f32(w, "llama.rope.freq_base", 10000.0f);
    gw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    uint64_t emb[2] = {64, 8}, q[2] = {64, 64}, kv[2] = {64, 32}, f[2] = {64, 64}, v1[1] = {64};
    static const struct {
        const char *name;
        uint32_t type;
        int shape; /* 0 emb, 1 q, 2 kv, 3 ffn, 4 vector */
    } ts[] = {{"token_embd.weight", GGUF_T_Q8_0, 0},        {"output_norm.weight", GGUF_T_F32, 4},
              {"blk.0.attn_q.weight", GGUF_T_Q4_1, 1},      {"blk.0.attn_k.weight", GGUF_T_Q4_1, 2},
              {"blk.0.attn_v.weight", GGUF_T_Q4_1, 2},      {"blk.0.attn_output.weight", GGUF_T_Q4_1, 1},
              {"blk.0.ffn_gate.weight", GGUF_T_Q4_0, 3},    {"blk.0.ffn_up.weight", GGUF_T_Q4_0, 3},
              {"blk.0.ffn_down.weight", GGUF_T_F16, 3},     {"blk.0.attn_norm.weight", GGUF_T_F32, 4},
              {"blk.0.ffn_norm.weight", GGUF_T_F32, 4}};
    const uint64_t *shapes[] = {emb, q, kv, f, v1};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint32_t nd = ts[i].shape == 4 ? 1 : 2;
        gw_tensor(w, ts[i].name, ts[i].type, nd, shapes[ts[i].shape],
                  tiny_data(ts[i].type, nd, shapes[ts[i].shape]));
    }
    return w;
}

/* Load a crafted file; returns the code, message in err. */
static int load_crafted(gw_t *w) {
    const char *path = tmpdir_file("m.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gw_free(w);
    gguf_file_t *f;
    cr_assert_eq(gguf_open(path, &f, err, sizeof err), GGUF_OK, "%s", err);
    ops_t *ops = ops_cpu_create(1);
    arena_t *a = arena_create(ops, 16u << 20, err, sizeof err);
    llama_model_t *m = NULL;
    int rc = llama_load(f, ops, a, &(llama_opts_t){.max_tokens = 16, .max_seqs = 4}, &m, err, sizeof err);
    if (rc == LLAMA_OK) {
        /* it also runs: a forward over the pattern weights gives finite logits */
        kv_config_t kc = llama_kv_config(m);
        kc.n_blocks = 4;
        kv_pool_t *kv;
        cr_assert_eq(kv_pool_create(a, &kc, &kv, err, sizeof err), KV_OK, "%s", err);
        kv_seq_t s;
        int32_t slots[5], ids[5] = {1, 2, 3, 4, 7}, off[2] = {0, 5};
        kv_seq_t *sp[1] = {&s};
        float out[8];
        cr_assert_eq(kv_seq_init(kv, &s, 64, err, sizeof err), KV_OK);
        cr_assert_eq(kv_seq_append(kv, &s, 5, slots, err, sizeof err), KV_OK);
        cr_assert_eq(llama_forward(m, kv, ids, off, 1, sp, out, 0, err, sizeof err), LLAMA_OK, "%s", err);
        for (int i = 0; i < 8; i++) cr_assert(isfinite(out[i]));
        kv_seq_free(kv, &s);
        kv_pool_destroy(kv);
    }
    llama_destroy(m);
    arena_destroy(a);
    gguf_close(f);
    ops_destroy(ops);
    return rc;
}

Test(llama_load, tiny_model_loads_and_runs) { cr_assert_eq(load_crafted(tiny()), LLAMA_OK, "%s", err); }

Test(llama_load, missing_key_named) {
    gw_t *w = gw_new();
    gw_kv_str(w, "general.architecture", "llama");
    gw_kv_u32(w, "llama.block_count", 1);
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "llama.embedding_length"), "%s", err);
}

Test(llama_load, other_architecture_refused) {
    gw_t *w = gw_new();
    gw_kv_str(w, "general.architecture", "gpt2");
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "gpt2"), "%s", err);
}

Test(llama_load, unsupported_tensor_type_named) {
    gw_t *w = tiny();
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, "blk.0.attn_output.weight") == 0) {
            w->tensors[i].type = GGUF_T_BF16;
            w->tensors[i].data = NULL;
            w->tensors[i].nbytes = gw_tensor_bytes(GGUF_T_BF16, 2, w->tensors[i].ne);
        }
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "blk.0.attn_output.weight") && strstr(err, "BF16"), "%s", err);
}

Test(llama_load, wrong_shape_and_missing_tensor_named) {
    gw_t *w = tiny();
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, "blk.0.attn_k.weight") == 0) {
            w->tensors[i].ne[1] = 64;
            w->tensors[i].data = NULL;
            w->tensors[i].nbytes = gw_tensor_bytes(GGUF_T_Q4_1, 2, w->tensors[i].ne);
        }
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "blk.0.attn_k.weight"), "%s", err);
    w = tiny();
    for (int i = 0; i < w->n_tensors; i++) /* rename ffn_norm away (same length) */
        if (strcmp(w->tensors[i].name, "blk.0.ffn_norm.weight") == 0) w->tensors[i].name[10] = 'x';
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "blk.0.ffn_norm.weight"), "%s", err);
}

Test(llama_load, rope_scaling_refused) {
    gw_t *w = tiny();
    gw_kv_str(w, "llama.rope.scaling.type", "yarn");
    cr_assert_eq(load_crafted(w), LLAMA_EMODEL);
    cr_assert(strstr(err, "yarn"), "%s", err);
}

/* ---- on CUDA (skipped without a GPU): decode steps replayed from graphs ---- */

TestSuite(llama_cuda, .timeout = 300);

/* B sequences prefilled in one call, then `steps` greedy decode steps together
 * (llama_forward_greedy, logits too); every step's logits and ids into lg/ids. */
static void cuda_decode_run(llama_model_t *m, kv_pool_t *kv, int B, int steps, int V, float *lg, int32_t *ids) {
    kv_seq_t seqs[24];
    kv_seq_t *sp[24];
    int32_t packed[1024], off[25], slots[64], next[24];
    off[0] = 0;
    for (int b = 0; b < B; b++) {
        int n = 3 + (b * 7) % 40;
        some_tokens(packed + off[b], n, 500 + (uint32_t)b, V);
        cr_assert_eq(kv_seq_init(kv, &seqs[b], 256, err, sizeof err), KV_OK, "%s", err);
        cr_assert_eq(kv_seq_append(kv, &seqs[b], n, slots, err, sizeof err), KV_OK, "%s", err);
        sp[b] = &seqs[b];
        off[b + 1] = off[b] + n;
    }
    cr_assert_eq(llama_forward_greedy(m, kv, packed, off, B, sp, lg, next, err, sizeof err), LLAMA_OK, "%s", err);
    for (int k = 0; k < steps; k++) {
        for (int b = 0; b < B; b++) {
            off[b + 1] = b + 1;
            cr_assert_eq(kv_seq_append(kv, &seqs[b], 1, slots, err, sizeof err), KV_OK, "%s", err);
        }
        cr_assert_eq(llama_forward_greedy(m, kv, next, off, B, sp, lg + (size_t)k * B * V, ids + (size_t)k * B, err,
                                          sizeof err),
                     LLAMA_OK, "%s", err);
        memcpy(next, ids + (size_t)k * B, (size_t)B * sizeof *next);
    }
    for (int b = 0; b < B; b++) kv_seq_free(kv, &seqs[b]);
}

/* The same steps on a model with graphs and one without (ops->capture_*):
 * logits and greedy ids bit-identical at 1, 5 (padded to 8) and 20 (padded to
 * 32) sequences, and graphs captured only by the first. */
Test(llama_cuda, graph_replay_gives_the_bits_of_plain_launches) {
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    char e[512];
    ops_t *ops = ops_cuda_create(0, OPS_F16, e, sizeof e);
    if (!ops) cr_skip_test("no CUDA backend: %s", e);
    gguf_file_t *f;
    cr_assert_eq(gguf_open(LLM_PATH, &f, err, sizeof err), GGUF_OK, "%s", err);
    arena_t *arena = arena_create(ops, (size_t)2 << 30, err, sizeof err);
    cr_assert_not_null(arena, "%s", err);
    llama_model_t *m[2];
    kv_pool_t *kv[2];
    for (int g = 0; g < 2; g++) {
        llama_opts_t o = {.max_tokens = 1024, .max_seqs = 32, .max_ctx = 256, .no_graphs = g};
        cr_assert_eq(llama_load(f, ops, arena, &o, &m[g], err, sizeof err), LLAMA_OK, "%s", err);
        kv_config_t kc = llama_kv_config(m[g]);
        kc.n_blocks = 24 * 16 + 8;
        cr_assert_eq(kv_pool_create(arena, &kc, &kv[g], err, sizeof err), KV_OK, "%s", err);
    }
    const int V = llama_info(m[0])->vocab, steps = 6;
    float *lg[2] = {malloc((size_t)steps * 20 * V * 4), malloc((size_t)steps * 20 * V * 4)};
    int32_t ids[2][6 * 20];
    static const int Bs[] = {1, 5, 20};
    for (size_t i = 0; i < sizeof Bs / sizeof Bs[0]; i++) {
        for (int g = 0; g < 2; g++) cuda_decode_run(m[g], kv[g], Bs[i], steps, V, lg[g], ids[g]);
        cr_assert(memcmp(ids[0], ids[1], (size_t)steps * Bs[i] * sizeof(int32_t)) == 0,
                  "%d sequences: greedy ids differ between graph replay and plain launches", Bs[i]);
        cr_assert(memcmp(lg[0], lg[1], (size_t)steps * Bs[i] * V * 4) == 0,
                  "%d sequences: logits differ between graph replay and plain launches", Bs[i]);
    }
    cr_assert_gt(llama_graph_count(m[0]), 0, "no decode step was captured");
    cr_assert_eq(llama_graph_count(m[1]), 0);
    free(lg[0]), free(lg[1]);
    for (int g = 0; g < 2; g++) kv_pool_destroy(kv[g]), llama_destroy(m[g]);
    arena_destroy(arena);
    gguf_close(f);
    ops_destroy(ops);
}
