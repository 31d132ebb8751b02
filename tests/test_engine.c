/* tests/test_engine.c - the BERT engine on the CPU backend against the model's
 * own library (tests/fixtures/embeddings.jsonl from sentence-transformers),
 * batch independence, budgets and bad model folders. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"

typedef struct {
    char *text;
    int n_tokens;
    int32_t *tokens;
    float *embedding;
} ref_t;

static ref_t *refs;
static int n_refs;
static ops_t *ops;
static arena_t *arena;
static engine_model_t *model;

static const char *model_dir(void) {
    const char *d = getenv("SLUICE_TEST_MODEL");
    return d && *d ? d : "models/all-minilm-l6-v2";
}

static void load_refs(void) {
    FILE *f = fopen("tests/fixtures/embeddings.jsonl", "rb");
    cr_assert_not_null(f, "tests/fixtures/embeddings.jsonl missing (run from the repo root)");
    char *line = NULL;
    size_t cap = 0;
    refs = calloc(1024, sizeof *refs);
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        cr_assert_not_null(j, "bad fixture line: %s", je.text);
        ref_t *r = &refs[n_refs++];
        r->text = strdup(json_string_value(json_object_get(j, "text")));
        json_t *toks = json_object_get(j, "tokens"), *emb = json_object_get(j, "embedding");
        r->n_tokens = (int)json_array_size(toks);
        r->tokens = malloc(sizeof(int32_t) * (size_t)r->n_tokens);
        for (int i = 0; i < r->n_tokens; i++) r->tokens[i] = (int32_t)json_integer_value(json_array_get(toks, i));
        r->embedding = malloc(sizeof(float) * json_array_size(emb));
        for (size_t i = 0; i < json_array_size(emb); i++)
            r->embedding[i] = (float)json_number_value(json_array_get(emb, i));
        json_decref(j);
    }
    free(line);
    fclose(f);
    cr_assert_geq(n_refs, 200, "the fixture must hold at least 200 sentences, has %d", n_refs);
}

static void setup(void) {
    char err[1024];
    ops = ops_cpu_create(0);
    cr_assert_not_null(ops);
    size_t w, ws;
    cr_assert_eq(engine_model_need(model_dir(), OPS_F32, NULL, &w, &ws, err, sizeof err), 0, "%s", err);
    arena = arena_create(ops, w + ws, err, sizeof err);
    cr_assert_not_null(arena, "%s", err);
    cr_assert_eq(engine_model_load(model_dir(), ops, arena, NULL, &model, err, sizeof err), 0, "%s", err);
    load_refs();
}

static void teardown(void) {
    engine_model_destroy(model);
    cr_assert_eq(arena_used(arena), 0, "unload left %zu bytes in the arena", arena_used(arena));
    arena_destroy(arena);
    ops_destroy(ops);
    for (int i = 0; i < n_refs; i++) {
        free(refs[i].text);
        free(refs[i].tokens);
        free(refs[i].embedding);
    }
    free(refs);
}

/* Embed refs[idx[0..n)] as one packed batch into out (n, H). */
static void embed_refs(const int *idx, int n, float *out) {
    int T = 0;
    for (int i = 0; i < n; i++) T += refs[idx[i]].n_tokens;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T), *off = malloc(sizeof(int32_t) * (size_t)(n + 1));
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        memcpy(ids + off[i], refs[idx[i]].tokens, sizeof(int32_t) * (size_t)refs[idx[i]].n_tokens);
        off[i + 1] = off[i] + refs[idx[i]].n_tokens;
    }
    char err[512];
    cr_assert_eq(engine_embed(model, ids, off, n, out, err, sizeof err), 0, "%s", err);
    free(ids);
    free(off);
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 300);

Test(engine, tokens_match_the_model_library) {
    const tok_t *tok = engine_tokenizer(model);
    int32_t ids[512];
    for (int i = 0; i < n_refs; i++) {
        char err[256];
        int n = tok_encode(tok, refs[i].text, strlen(refs[i].text), ids, 512, NULL, err, sizeof err);
        cr_assert_eq(n, refs[i].n_tokens, "sentence %d: %d tokens, library has %d", i, n, refs[i].n_tokens);
        cr_assert_arr_eq(ids, refs[i].tokens, sizeof(int32_t) * (size_t)n, "sentence %d: token ids differ", i);
    }
}

Test(engine, embeddings_match_sentence_transformers) {
    const int H = engine_info(model)->hidden;
    int lens_seen_long = 0, lens_seen_short = 0;
    float *out = malloc(sizeof(float) * (size_t)H * 64);
    for (int first = 0; first < n_refs; first += 64) {
        int idx[64], n = 0;
        for (int i = first; i < n_refs && n < 64; i++) idx[n++] = i;
        embed_refs(idx, n, out);
        for (int k = 0; k < n; k++) {
            const ref_t *r = &refs[idx[k]];
            double dot = 0, na = 0, nb = 0, maxd = 0;
            for (int h = 0; h < H; h++) {
                double a = out[(size_t)k * H + h], b = r->embedding[h];
                dot += a * b, na += a * a, nb += b * b;
                if (fabs(a - b) > maxd) maxd = fabs(a - b);
            }
            double cos = dot / sqrt(na * nb);
            cr_assert_geq(cos, 0.99999, "sentence %d (%d tokens): cosine %.8f", idx[k], r->n_tokens, cos);
            cr_assert_leq(maxd, 1e-4, "sentence %d (%d tokens): max abs diff %.3g", idx[k], r->n_tokens, maxd);
            if (r->n_tokens >= 256) lens_seen_long++;
            if (r->n_tokens <= 3) lens_seen_short++;
        }
    }
    cr_assert_gt(lens_seen_long, 0, "the fixture must include truncated (256-token) inputs");
    cr_assert_gt(lens_seen_short, 0, "the fixture must include 1-token inputs");
    free(out);
}

Test(engine, result_does_not_depend_on_batch_company) {
    const int H = engine_info(model)->hidden;
    const int n = 40;
    int idx[40], rev[40];
    for (int i = 0; i < n; i++) idx[i] = (i * 7) % n_refs;
    for (int i = 0; i < n; i++) rev[i] = idx[n - 1 - i];
    float *together = malloc(sizeof(float) * (size_t)H * n), *reversed = malloc(sizeof(float) * (size_t)H * n);
    float alone[4096];
    embed_refs(idx, n, together);
    embed_refs(rev, n, reversed);
    for (int i = 0; i < n; i++) {
        embed_refs(&idx[i], 1, alone);
        for (int h = 0; h < H; h++) {
            cr_assert_float_eq(together[(size_t)i * H + h], alone[h], 1e-6, "sentence %d alone vs batched, dim %d",
                               idx[i], h);
            cr_assert_float_eq(reversed[(size_t)(n - 1 - i) * H + h], alone[h], 1e-6,
                               "sentence %d alone vs reversed batch, dim %d", idx[i], h);
        }
    }
    free(together);
    free(reversed);
}

Test(engine, bad_batches_are_refused) {
    char err[512];
    float out[384 * 2];
    int32_t ids[4] = {101, 2000, 102, 0}, off[3] = {0, 3, 3};
    cr_assert_eq(engine_embed(model, ids, off, 2, out, err, sizeof err), ENGINE_EINVAL, "empty sequence accepted");
    cr_assert(strstr(err, "sequence 1"), "message: %s", err);
    int32_t bad_ids[3] = {101, 999999, 102}, off1[2] = {0, 3};
    cr_assert_eq(engine_embed(model, bad_ids, off1, 1, out, err, sizeof err), ENGINE_EINVAL);
    cr_assert(strstr(err, "vocabulary"), "message: %s", err);
    cr_assert_eq(engine_embed(model, ids, off1, 0, out, err, sizeof err), ENGINE_EINVAL);
    int32_t *long_ids = calloc(600, sizeof(int32_t)), off_long[2] = {0, 600};
    cr_assert_eq(engine_embed(model, long_ids, off_long, 1, out, err, sizeof err), ENGINE_EINVAL);
    cr_assert(strstr(err, "600 tokens"), "message: %s", err);
    free(long_ids);
}

/* ---- model folders and budgets (no shared model) ---- */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(engine_load, missing_folder_is_a_clear_error) {
    ops_t *o = ops_cpu_create(1);
    char err[1024];
    arena_t *a = arena_create(o, 1 << 20, err, sizeof err);
    engine_model_t *m = NULL;
    cr_assert_eq(engine_model_load("/nonexistent/model", o, a, NULL, &m, err, sizeof err), ENGINE_EMODEL);
    cr_assert_null(m);
    cr_assert(strstr(err, "/nonexistent/model/config.json"), "message: %s", err);
    arena_destroy(a);
    ops_destroy(o);
}

Test(engine_load, wrong_architecture_is_refused) {
    char dir[] = "/tmp/sluice-arch-XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"model_type\":\"gpt2\",\"architectures\":[\"GPT2LMHeadModel\"]}");
    ops_t *o = ops_cpu_create(1);
    char err[1024];
    arena_t *a = arena_create(o, 1 << 20, err, sizeof err);
    engine_model_t *m = NULL;
    cr_assert_eq(engine_model_load(dir, o, a, NULL, &m, err, sizeof err), ENGINE_EMODEL);
    cr_assert(strstr(err, "unsupported architecture") && strstr(err, "gpt2"), "message: %s", err);
    write_file(path, "{\"model_type\":\"bert\", \"hidden_size\": 384}");
    cr_assert_eq(engine_model_load(dir, o, a, NULL, &m, err, sizeof err), ENGINE_EMODEL);
    cr_assert(strstr(err, "num_hidden_layers"), "message: %s", err);
    write_file(path, "{not json");
    cr_assert_eq(engine_model_load(dir, o, a, NULL, &m, err, sizeof err), ENGINE_EMODEL);
    cr_assert(strstr(err, "invalid JSON"), "message: %s", err);
    cr_assert_eq(arena_used(a), 0);
    unlink(path);
    rmdir(dir);
    arena_destroy(a);
    ops_destroy(o);
}

Test(engine_load, a_model_over_budget_is_refused_with_numbers) {
    ops_t *o = ops_cpu_create(1);
    char err[1024];
    size_t w, ws;
    cr_assert_eq(engine_model_need(model_dir(), OPS_F32, NULL, &w, &ws, err, sizeof err), 0, "%s", err);
    arena_t *a = arena_create(o, w / 2, err, sizeof err);
    engine_model_t *m = NULL;
    cr_assert_eq(engine_model_load(model_dir(), o, a, NULL, &m, err, sizeof err), ENGINE_ENOMEM, "%s", err);
    cr_assert(strstr(err, "budget") && strstr(err, "bytes"), "message: %s", err);
    cr_assert_eq(arena_used(a), 0, "a refused model left %zu bytes behind", arena_used(a));
    arena_destroy(a);
    /* the need estimate is exact enough to load in precisely that budget */
    a = arena_create(o, w + ws, err, sizeof err);
    cr_assert_eq(engine_model_load(model_dir(), o, a, NULL, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(engine_weight_bytes(m) <= w, 1);
    engine_model_destroy(m);
    cr_assert_eq(arena_used(a), 0);
    arena_destroy(a);
    ops_destroy(o);
}

Test(engine_cli, missing_model_exits_2_with_one_line) {
    const char *bin = getenv("SLUICE_BIN") ? getenv("SLUICE_BIN") : "bin/sluice";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s embed --device cpu --model /nonexistent --text hi 2>/tmp/sluice-cli-err.txt", bin);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit status %d", WEXITSTATUS(st));
    FILE *f = fopen("/tmp/sluice-cli-err.txt", "r");
    char line[1024] = "", extra[16];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert(strstr(line, "/nonexistent"), "message: %s", line);
    cr_assert_null(fgets(extra, sizeof extra, f), "more than one line of error");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s embed --device cpu --file /nonexistent.txt 2>/dev/null", bin);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "missing file: exit status %d", WEXITSTATUS(st));
    snprintf(cmd, sizeof cmd, "%s embed --bogus 2>/dev/null", bin);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}
