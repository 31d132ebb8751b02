/* tests/test_expand.c - term expansion on the real model (SLUICE_TEST_MODEL,
 * default models/all-minilm-l6-v2) and the CPU backend: the default vocab
 * index finds related words (the examples listed in docs/api.md), its cache
 * round trip gives identical answers, a user's term file is trimmed and
 * de-duplicated, a stale cache is rebuilt, and bad queries are refused; then
 * the same op through a real server: POST /v1/expand and the Redis task op
 * (op "expand") answer alike. The server builds its index in the model
 * folder's cache on first use (one build per fresh checkout). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "engine/expand.h"
#include "engine/safetensors.h"
#include "queue/queue.h"
#include "tests/support_http.h"
#include "tests/support_redis.h"
#include "tests/support_server.h"

typedef struct {
    ops_t *ops;
    arena_t *arena;    /* the model's */
    arena_t *ix_arena; /* the index's: exactly expand_index_need bytes */
    engine_model_t *model;
    expand_index_t *ix;
    char note[1024];
} fixture_t;

static const char *model_dir(void) {
    const char *d = getenv("SLUICE_TEST_MODEL");
    return d && d[0] ? d : "models/all-minilm-l6-v2";
}

/* A fresh cache folder under /tmp; removed with its files by cache_dir_remove. */
static void cache_dir_make(char *dir, size_t len) {
    snprintf(dir, len, "/tmp/sluice-expand-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void cache_dir_remove(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Model and index on the CPU backend; the index's arena is exactly what
 * expand_index_need says, so a wrong sum fails here. */
static void fixture_open(fixture_t *f, const expand_opts_t *opts) {
    char err[1024];
    memset(f, 0, sizeof *f);
    char **terms;
    int n;
    cr_assert_eq(expand_terms_load(model_dir(), opts->terms_file, &terms, &n, err, sizeof err), 0, "%s", err);
    expand_terms_free(terms, n);
    size_t wb, wsb;
    cr_assert_eq(engine_model_need(model_dir(), OPS_F32, NULL, &wb, &wsb, err, sizeof err), 0, "%s", err);
    f->ops = ops_cpu_create(0);
    cr_assert_not_null(f->ops);
    f->arena = arena_create(f->ops, wb + wsb + (1 << 20), err, sizeof err);
    cr_assert_not_null(f->arena, "%s", err);
    cr_assert_eq(engine_model_load(model_dir(), f->ops, f->arena, NULL, &f->model, err, sizeof err), 0, "%s", err);
    size_t need = expand_index_need(f->ops, n, engine_info(f->model)->hidden, opts->max_queries);
    cr_assert_gt(need, 0);
    f->ix_arena = arena_create(f->ops, need, err, sizeof err);
    cr_assert_not_null(f->ix_arena, "%s", err);
    cr_assert_eq(expand_index_open(model_dir(), f->model, f->ops, f->ix_arena, opts, &f->ix, f->note,
                                   sizeof f->note, err, sizeof err),
                 0, "%s", err);
    cr_expect_eq(expand_index_bytes(f->ix), need, "index holds %zu arena bytes, need said %zu",
                 expand_index_bytes(f->ix), need);
}

static void fixture_close(fixture_t *f) {
    expand_index_destroy(f->ix);
    arena_destroy(f->ix_arena);
    engine_model_destroy(f->model);
    arena_destroy(f->arena);
    ops_destroy(f->ops);
}

/* Each query term and the related words of which at least one must be in its top 10. */
static const struct {
    const char *term;
    const char *related[6];
} quality[] = {
    {"car", {"cars", "vehicle", "automobile"}},
    {"doctor", {"physician", "nurse"}},
    {"king", {"queen", "monarch"}},
    {"happy", {"glad", "joyful", "cheerful", "pleased", "thrilled"}},
    {"paris", {"france", "french"}},
    {"dog", {"dogs", "puppy", "canine"}},
    {"computer", {"computers", "laptop", "pc", "software"}},
    {"river", {"rivers", "stream", "creek"}},
};
#define N_QUALITY ((int)(sizeof quality / sizeof quality[0]))

static int in_hits(const expand_index_t *ix, const expand_hit_t *h, int n, const char *term) {
    for (int j = 0; j < n; j++)
        if (!strcmp(expand_index_term(ix, h[j].id), term)) return 1;
    return 0;
}

Test(expand, vocab_index_quality_and_cache_round_trip, .timeout = 900) {
    char cache[256], err[1024];
    cache_dir_make(cache, sizeof cache);
    expand_opts_t opts = {.cache_dir = cache, .max_queries = 16};
    fixture_t f;
    fixture_open(&f, &opts);
    cr_expect(strstr(f.note, "embedded"), "first open should embed: %s", f.note);
    cr_expect_eq(access(expand_index_cache_path(f.ix), R_OK), 0, "no cache file: %s", f.note);

    /* the default list: whole words only */
    int N = expand_index_size(f.ix);
    cr_expect(N > 15000 && N < 30522, "vocab index of %d terms", N);
    for (int i = 0; i < N; i++) {
        const char *t = expand_index_term(f.ix, i);
        cr_assert(strncmp(t, "##", 2) && t[0] != '[' && strlen(t) >= 2, "term %d '%s' is not a whole word", i, t);
        cr_assert(strspn(t, "0123456789") < strlen(t), "term %d '%s' is digits only", i, t);
    }

    const char *terms[N_QUALITY];
    for (int i = 0; i < N_QUALITY; i++) terms[i] = quality[i].term;
    expand_hit_t hits[N_QUALITY * 10], again[N_QUALITY * 10];
    int n_hits[N_QUALITY], n_again[N_QUALITY];
    cr_assert_eq(expand_terms(f.ix, terms, N_QUALITY, 10, -1.0f, 1, hits, n_hits, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < N_QUALITY; i++) {
        const expand_hit_t *h = hits + i * 10;
        cr_expect_eq(n_hits[i], 10, "%s: %d hits", terms[i], n_hits[i]);
        cr_expect(!in_hits(f.ix, h, n_hits[i], terms[i]), "%s is its own neighbour with exclude_input", terms[i]);
        int found = 0;
        for (int r = 0; quality[i].related[r]; r++) found |= in_hits(f.ix, h, n_hits[i], quality[i].related[r]);
        char list[1024] = "";
        for (int j = 0; j < n_hits[i]; j++)
            snprintf(list + strlen(list), sizeof list - strlen(list), " %s(%.3f)", expand_index_term(f.ix, h[j].id),
                     h[j].score);
        cr_expect(found, "%s: no related word in its top 10:%s", terms[i], list);
        for (int j = 1; j < n_hits[i]; j++) cr_expect_geq(h[j - 1].score, h[j].score, "%s: not best first", terms[i]);
    }

    /* without exclusion a term finds itself first (cosine 1), and min_score cuts the tail */
    cr_assert_eq(expand_terms(f.ix, terms, 1, 3, 0.85f, 0, again, n_again, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(expand_index_term(f.ix, again[0].id), "car");
    cr_expect_float_eq(again[0].score, 1.0f, 1e-4);
    for (int j = 0; j < n_again[0]; j++) cr_expect_geq(again[j].score, 0.85f);
    fixture_close(&f);

    /* a second open loads the cache and answers identically */
    fixture_open(&f, &opts);
    cr_expect(strstr(f.note, "loaded"), "second open should load the cache: %s", f.note);
    cr_assert_eq(expand_terms(f.ix, terms, N_QUALITY, 10, -1.0f, 1, again, n_again, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < N_QUALITY; i++) {
        cr_expect_eq(n_again[i], n_hits[i]);
        for (int j = 0; j < n_hits[i] && j < n_again[i]; j++) {
            cr_expect_eq(again[i * 10 + j].id, hits[i * 10 + j].id, "%s rank %d", terms[i], j);
            cr_expect_eq(again[i * 10 + j].score, hits[i * 10 + j].score, "%s rank %d", terms[i], j);
        }
    }
    fixture_close(&f);
    cache_dir_remove(cache);
}

static void write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* A fresh cache folder holding terms.txt with text. */
static void terms_dir_make(char *dir, size_t dirlen, char *path, size_t pathlen, const char *text) {
    cache_dir_make(dir, dirlen);
    snprintf(path, pathlen, "%s/terms.txt", dir);
    write_file(path, text);
}

Test(expand, terms_file_trimmed_deduplicated_and_stale_cache_rebuilt, .timeout = 300) {
    char cache[256], path[512], err[1024];
    terms_dir_make(cache, sizeof cache, path, sizeof path,
                   "  apple\nbanana\r\n\n\tApple \ncherry\ncar\nautomobile\ntruck\n");
    expand_opts_t opts = {.terms_file = path, .cache_dir = cache};
    fixture_t f;
    fixture_open(&f, &opts);
    cr_assert_eq(expand_index_size(f.ix), 6, "6 distinct terms, got %d", expand_index_size(f.ix));
    cr_expect_str_eq(expand_index_term(f.ix, 0), "apple");
    cr_expect_str_eq(expand_index_term(f.ix, 1), "banana");
    cr_expect_eq(expand_index_find(f.ix, "APPLE"), 0);
    cr_expect_eq(expand_index_find(f.ix, "truck"), 5);
    cr_expect_eq(expand_index_find(f.ix, "plane"), -1);

    /* k beyond the index: every other term, best first; "car" finds a vehicle first */
    const char *q[] = {" car "};
    expand_hit_t hits[20];
    int n_hits[1];
    cr_assert_eq(expand_terms(f.ix, q, 1, 20, -1.0f, 1, hits, n_hits, err, sizeof err), 0, "%s", err);
    cr_expect_eq(n_hits[0], 5);
    const char *first = expand_index_term(f.ix, hits[0].id);
    cr_expect(!strcmp(first, "automobile") || !strcmp(first, "truck"), "car -> %s", first);

    /* a cache whose metadata names another model is not used */
    char cache_file[4096];
    snprintf(cache_file, sizeof cache_file, "%s", expand_index_cache_path(f.ix));
    fixture_close(&f);
    st_file_t *st;
    cr_assert_eq(st_open(cache_file, &st, err, sizeof err), 0, "%s", err);
    const st_tensor_t *t = st_find(st, "embeddings");
    cr_assert_not_null(t);
    float *emb = malloc(t->nbytes);
    st_to_f32(t, emb);
    const char *names[] = {"embeddings"}, *keys[] = {"format", "model_hash", "terms_hash"};
    const char *vals[] = {st_metadata(st, "format"), "0000000000000000", st_metadata(st, "terms_hash")};
    const int ndims[] = {2};
    const int64_t *shapes[] = {t->shape};
    const float *data[] = {emb};
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.stale", cache_file);
    cr_assert_eq(st_write_f32(tmp, 1, names, ndims, shapes, data, 3, keys, vals, err, sizeof err), 0, "%s", err);
    st_close(st);
    free(emb);
    cr_assert_eq(rename(tmp, cache_file), 0);
    fixture_open(&f, &opts);
    cr_expect(strstr(f.note, "embedded"), "a stale cache must be rebuilt: %s", f.note);
    fixture_close(&f);
    fixture_open(&f, &opts);
    cr_expect(strstr(f.note, "loaded"), "the rebuilt cache loads: %s", f.note);
    fixture_close(&f);
    cache_dir_remove(cache);
}

Test(expand, bad_queries_are_refused, .timeout = 300) {
    char cache[256], path[512], err[1024];
    terms_dir_make(cache, sizeof cache, path, sizeof path, "alpha\nbeta\ngamma\n");
    expand_opts_t opts = {.terms_file = path, .cache_dir = ""};
    fixture_t f;
    fixture_open(&f, &opts);
    cr_expect(strstr(f.note, "no cache"), "%s", f.note);
    cr_expect_str_eq(expand_index_cache_path(f.ix), "");
    expand_hit_t hits[4];
    int n_hits[2];
    const char *ok[] = {"delta"}, *empty[] = {"delta", "  "};
    cr_expect_eq(expand_terms(f.ix, ok, 1, 0, -1.0f, 1, hits, n_hits, err, sizeof err), EXPAND_EINVAL);
    cr_expect_eq(expand_terms(f.ix, ok, 1, EXPAND_MAX_K + 1, -1.0f, 1, hits, n_hits, err, sizeof err),
                 EXPAND_EINVAL);
    cr_expect_eq(expand_terms(f.ix, empty, 2, 2, -1.0f, 1, hits, n_hits, err, sizeof err), EXPAND_EINVAL);
    cr_expect(strstr(err, "term 1 is empty"), "%s", err);
    fixture_close(&f);

    write_file(path, "\n  \n");
    char **terms;
    int n;
    cr_expect_eq(expand_terms_load(model_dir(), path, &terms, &n, err, sizeof err), EXPAND_EIO);
    write_file(path, "ok\n\xff\xfe\n");
    cr_expect_eq(expand_terms_load(model_dir(), path, &terms, &n, err, sizeof err), EXPAND_EIO);
    cr_expect(strstr(err, ":2: not valid UTF-8"), "%s", err);
    cache_dir_remove(cache);
}

/* ---- the op through the server ---- */

static json_t *http_call(int port, const char *method, const char *path, const char *body, int *status) {
    http_resp_t r;
    cr_assert_eq(http_request(port, method, path, NULL, body, body ? strlen(body) : 0, &r, 600000), 0,
                 "no answer: %s %s", method, path);
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    http_resp_free(&r);
    return j;
}

static void expect_error(int port, const char *body, int status, const char *code, const char *param) {
    int st;
    json_t *j = http_call(port, "POST", "/v1/expand", body, &st);
    json_t *e = json_object_get(j, "error");
    cr_expect_eq(st, status, "%s -> %d", body, st);
    cr_expect_str_eq(json_string_value(json_object_get(e, "code")), code, "%s", body);
    if (param) cr_expect_str_eq(json_string_value(json_object_get(e, "param")), param, "%s", body);
    json_decref(j);
}

/* The neighbour names of data[i]. */
static int neighbour_has(json_t *answer, int i, const char *term) {
    json_t *n = json_object_get(json_array_get(json_object_get(answer, "data"), i), "neighbours");
    size_t k;
    json_t *h;
    json_array_foreach(n, k, h) if (!strcmp(json_string_value(json_object_get(h, "term")), term)) return 1;
    return 0;
}

Test(expand, http_route_and_redis_task_op, .timeout = 900) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    api_config_t c;
    support_server_config(&c);
    snprintf(c.redis, sizeof c.redis, "%s", redis.url);
    snprintf(c.queue, sizeof c.queue, "xq");
    c.request_timeout_ms = 600000; /* the first expansion may build the index */
    support_server_t s;
    cr_assert_eq(support_server_start(&s, &c), 0, "server: %s", s.err);

    int st;
    json_t *a = http_call(s.port, "POST", "/v1/expand", "{\"terms\":[\"car\",\" Doctor \"],\"k\":5}", &st);
    cr_assert_eq(st, 200, "POST /v1/expand -> %d", st);
    json_t *data = json_object_get(a, "data");
    cr_assert_eq(json_array_size(data), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(data, 1), "term")), "Doctor");
    for (int i = 0; i < 2; i++) {
        json_t *n = json_object_get(json_array_get(data, i), "neighbours");
        cr_expect_eq(json_array_size(n), 5);
        for (size_t j = 1; j < json_array_size(n); j++)
            cr_expect_geq(json_number_value(json_object_get(json_array_get(n, j - 1), "score")),
                          json_number_value(json_object_get(json_array_get(n, j), "score")));
    }
    cr_expect(!neighbour_has(a, 0, "car") && !neighbour_has(a, 1, "doctor"), "own terms are excluded by default");
    cr_expect(neighbour_has(a, 0, "cars") || neighbour_has(a, 0, "vehicle") || neighbour_has(a, 0, "automobile"));
    cr_expect(neighbour_has(a, 1, "physician") || neighbour_has(a, 1, "nurse"));
    cr_expect_gt(json_integer_value(json_object_get(json_object_get(a, "usage"), "prompt_tokens")), 0);

    json_t *b = http_call(s.port, "POST", "/v1/expand",
                          "{\"terms\":\"car\",\"k\":50,\"exclude_input\":false,\"min_score\":0.85}", &st);
    cr_assert_eq(st, 200);
    json_t *n = json_object_get(json_array_get(json_object_get(b, "data"), 0), "neighbours");
    cr_assert_gt(json_array_size(n), 0);
    cr_expect_lt(json_array_size(n), 50, "min_score cuts the list");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(n, 0), "term")), "car");
    json_decref(b);

    expect_error(s.port, "{\"k\":3}", 400, "missing_field", "terms");
    expect_error(s.port, "{\"terms\":[\"car\",\"  \"]}", 400, "empty_input", "terms");
    expect_error(s.port, "{\"terms\":[\"car\",7]}", 400, "invalid_type", "terms");
    expect_error(s.port, "{\"terms\":[\"car\"],\"k\":0}", 400, "invalid_value", "k");
    expect_error(s.port, "{\"terms\":[\"car\"],\"k\":1001}", 400, "invalid_value", "k");
    expect_error(s.port, "{\"terms\":[\"car\"],\"min_score\":\"high\"}", 400, "invalid_value", "min_score");
    expect_error(s.port, "{\"terms\":[\"car\"],\"exclude_input\":1}", 400, "invalid_type", "exclude_input");
    expect_error(s.port, "{\"terms\":[\"car\"],\"model\":\"nope\"}", 404, "model_not_found", "model");
    json_t *g = http_call(s.port, "GET", "/v1/expand", NULL, &st);
    cr_expect_eq(st, 405);
    json_decref(g);

    /* the Redis task op answers what HTTP answered */
    json_t *t = http_call(s.port, "POST", "/v1/tasks",
                          "{\"op\":\"expand\",\"terms\":[\"car\",\" Doctor \"],\"k\":5}", &st);
    cr_assert_eq(st, 202, "POST /v1/tasks -> %d", st);
    char path[300];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=60", json_string_value(json_object_get(t, "id")));
    json_decref(t);
    t = http_call(s.port, "GET", path, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(json_string_value(json_object_get(t, "state")), "done", "task: %s",
                     json_string_value(json_object_get(t, "error")));
    cr_expect(json_equal(json_object_get(json_object_get(t, "result"), "data"), data),
              "the task's answer differs from HTTP's");
    json_decref(t);
    t = http_call(s.port, "POST", "/v1/tasks", "{\"op\":\"expand\",\"terms\":[]}", &st);
    cr_expect_eq(st, 400, "an empty expand task is refused at enqueue");
    json_decref(t);
    json_decref(a);
    support_server_stop(&s);
    support_redis_stop(&redis);
}
