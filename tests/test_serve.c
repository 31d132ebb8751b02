/* tests/test_serve.c - `sluice serve` over real HTTP on loopback with the real model:
 * every route and error code of /v1/embeddings, batching under concurrency
 * (results equal to single runs), budgets (429, 507), deadlines (408),
 * readiness, the CLI's config sources, and SIGTERM with work in flight.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/config.h"
#include "api/server.h"
#include "tests/support_http.h"
#include "tests/support_server.h"

#define H 384

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* POST a body, parse the JSON answer (NULL if not JSON); *status gets the code. */
static json_t *post(int port, const char *path, const char *body, int *status) {
    http_resp_t r;
    cr_assert_eq(http_post_json(port, path, body, &r), 0, "no answer from POST %s", path);
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    http_resp_free(&r);
    return j;
}

static void check_error(json_t *j, const char *code, const char *param) {
    cr_assert(j, "error body is not JSON");
    json_t *e = json_object_get(j, "error");
    cr_assert(json_is_object(e), "no error object");
    cr_assert(json_is_string(json_object_get(e, "message")));
    cr_assert(json_is_string(json_object_get(e, "type")));
    cr_assert(json_object_get(e, "param"), "error.param missing (null is fine)");
    const char *c = json_string_value(json_object_get(e, "code"));
    cr_assert(c, "error.code missing");
    if (code) cr_assert_str_eq(c, code, "error.code %s (message: %s)", c, json_string_value(json_object_get(e, "message")));
    if (param) cr_assert_str_eq(json_string_value(json_object_get(e, "param")), param);
}

static int embedding_at(json_t *j, int i, float *out, int dim) {
    json_t *d = json_array_get(json_object_get(j, "data"), (size_t)i);
    json_t *e = json_object_get(d, "embedding");
    if (!json_is_array(e) || (int)json_array_size(e) != dim) return -1;
    for (int k = 0; k < dim; k++) out[k] = (float)json_number_value(json_array_get(e, (size_t)k));
    return 0;
}

typedef struct {
    char *text;
    int tokens[520];
    int n_tokens;
    float emb[H];
} fixture_t;

static int load_fixtures(fixture_t *fx, int max) {
    char path[600];
    snprintf(path, sizeof path, "tests/fixtures/embeddings.jsonl");
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (n < max && getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j) continue;
        json_t *t = json_object_get(j, "tokens"), *e = json_object_get(j, "embedding");
        if (json_array_size(t) < 520 && json_array_size(e) == H) {
            fx[n].text = strdup(json_string_value(json_object_get(j, "text")));
            fx[n].n_tokens = (int)json_array_size(t);
            for (int k = 0; k < fx[n].n_tokens; k++) fx[n].tokens[k] = (int)json_integer_value(json_array_get(t, k));
            for (int k = 0; k < H; k++) fx[n].emb[k] = (float)json_number_value(json_array_get(e, k));
            if (fx[n].text[0]) n++;
            else free(fx[n].text);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

static char *embed_body(const char *text) {
    json_t *b = json_pack("{s:s,s:s}", "model", "all-minilm-l6-v2", "input", text);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static support_server_t start(api_config_t *c) {
    support_server_t s;
    int rc = support_server_start(&s, c);
    cr_assert_eq(rc, 0, "server start: %s", s.err);
    return s;
}

/* ---------------------------------------------------------------- shapes */

Test(serve, embeddings_shapes_match_reference, .timeout = 120) {
    static fixture_t fx[8];
    int n = load_fixtures(fx, 8);
    cr_assert_geq(n, 4);
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start(&c);

    /* a string, with the model named as sentence-transformers does */
    json_t *b = json_pack("{s:s,s:s}", "model", "sentence-transformers/all-MiniLM-L6-v2", "input", fx[0].text);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    int st;
    json_t *j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "list");
    cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "all-minilm-l6-v2");
    json_t *d0 = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(d0, "object")), "embedding");
    cr_assert_eq(json_integer_value(json_object_get(d0, "index")), 0);
    json_t *usage = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "prompt_tokens")), fx[0].n_tokens);
    cr_assert_eq(json_integer_value(json_object_get(usage, "total_tokens")), fx[0].n_tokens);
    float v[H], single[4][H];
    cr_assert_eq(embedding_at(j, 0, v, H), 0);
    for (int k = 0; k < H; k++) cr_assert_float_eq(v[k], fx[0].emb[k], 1e-4, "dim %d vs sentence-transformers", k);
    json_decref(j);

    /* an array of strings: each equals its reference, index in order */
    json_t *arr = json_array();
    for (int i = 0; i < 4; i++) json_array_append_new(arr, json_string(fx[i].text));
    b = json_pack("{s:s,s:o}", "model", "all-minilm-l6-v2", "input", arr);
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_array_size(json_object_get(j, "data")), 4);
    int total = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(j, "data"), i), "index")), i);
        cr_assert_eq(embedding_at(j, i, single[i], H), 0);
        for (int k = 0; k < H; k++) cr_assert_float_eq(single[i][k], fx[i].emb[k], 1e-4);
        total += fx[i].n_tokens;
    }
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), total);
    json_decref(j);

    /* token ids: one list, then a list of lists: same vectors as the texts */
    json_t *ids = json_array();
    for (int k = 0; k < fx[1].n_tokens; k++) json_array_append_new(ids, json_integer(fx[1].tokens[k]));
    b = json_pack("{s:s,s:o}", "model", "all-minilm-l6-v2", "input", ids);
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    cr_assert_eq(embedding_at(j, 0, v, H), 0);
    for (int k = 0; k < H; k++) cr_assert_float_eq(v[k], single[1][k], 1e-6);
    json_decref(j);
    json_t *lists = json_array();
    for (int i = 2; i < 4; i++) {
        json_t *l = json_array();
        for (int k = 0; k < fx[i].n_tokens; k++) json_array_append_new(l, json_integer(fx[i].tokens[k]));
        json_array_append_new(lists, l);
    }
    b = json_pack("{s:o}", "input", lists); /* model omitted: the only one */
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(embedding_at(j, i, v, H), 0);
        for (int k = 0; k < H; k++) cr_assert_float_eq(v[k], single[2 + i][k], 1e-6);
    }
    json_decref(j);

    /* base64: little-endian float32, same values */
    body = embed_body(fx[0].text);
    b = json_loads(body, 0, NULL);
    free(body);
    json_object_set_new(b, "encoding_format", json_string("base64"));
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    const char *b64 = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding"));
    cr_assert(b64, "base64 embedding is not a string");
    unsigned char raw[H * 4 + 8];
    int rawn = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)strlen(b64));
    cr_assert_geq(rawn, H * 4);
    float f[H];
    memcpy(f, raw, sizeof f);
    for (int k = 0; k < H; k++) cr_assert_float_eq(f[k], fx[0].emb[k], 1e-4);
    json_decref(j);

    /* dimensions: the first d values, back to unit length */
    body = embed_body(fx[0].text);
    b = json_loads(body, 0, NULL);
    free(body);
    json_object_set_new(b, "dimensions", json_integer(32));
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    j = post(s.port, "/v1/embeddings", body, &st);
    free(body);
    cr_assert_eq(st, 200);
    float d[32];
    cr_assert_eq(embedding_at(j, 0, d, 32), 0, "dimensions=32 did not give 32 values");
    double ss = 0, sf = 0;
    for (int k = 0; k < 32; k++) ss += (double)d[k] * d[k], sf += (double)f[k] * f[k];
    cr_assert_float_eq(ss, 1.0, 1e-5);
    for (int k = 0; k < 32; k++) cr_assert_float_eq(d[k], f[k] / sqrt(sf), 1e-5);
    json_decref(j);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- errors */

Test(serve, errors_have_openai_shape_and_status, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_body_bytes = 64 * 1024;
    c.max_inputs = 8;
    support_server_t s = start(&c);
    int st;
    json_t *j;
    struct { const char *body; int status; const char *code; const char *param; } cases[] = {
        {"{\"input\": \"x\"", 400, "invalid_json", NULL},
        {"[1,2]", 400, "invalid_json", NULL},
        {"{\"model\":\"all-minilm-l6-v2\"}", 400, "missing_field", "input"},
        {"{\"input\":[]}", 400, "empty_input", "input"},
        {"{\"input\":\"\"}", 400, "empty_input", "input"},
        {"{\"input\":[[]]}", 400, "empty_input", "input"},
        {"{\"input\":{\"a\":1}}", 400, "invalid_type", "input"},
        {"{\"input\":[\"a\", 3]}", 400, "invalid_type", "input"},
        {"{\"input\":[1, 99999999]}", 400, "invalid_input", "input"},
        {"{\"input\":\"a\",\"model\":7}", 400, "invalid_type", "model"},
        {"{\"input\":\"a\",\"encoding_format\":\"hex\"}", 400, "invalid_value", "encoding_format"},
        {"{\"input\":\"a\",\"dimensions\":0}", 400, "invalid_value", "dimensions"},
        {"{\"input\":\"a\",\"dimensions\":385}", 400, "invalid_value", "dimensions"},
        {"{\"input\":\"a\",\"truncate\":\"no\"}", 400, "invalid_type", "truncate"},
        {"{\"input\":\"a\",\"model\":\"no-such-model\"}", 404, "model_not_found", "model"},
        {"{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}", 413, "too_many_inputs", "input"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        j = post(s.port, "/v1/embeddings", cases[i].body, &st);
        cr_assert_eq(st, cases[i].status, "%s -> %d, want %d", cases[i].body, st, cases[i].status);
        check_error(j, cases[i].code, cases[i].param);
        json_decref(j);
    }
    /* over-length input: truncated by default (256 tokens like sentence-transformers), 422 with truncate:false */
    size_t n = 3000;
    char *longtext = malloc(n * 6 + 1), *p = longtext;
    for (size_t i = 0; i < n; i++) p += sprintf(p, "word ");
    json_t *b = json_pack("{s:s}", "input", longtext);
    char *body = json_dumps(b, JSON_COMPACT);
    j = post(s.port, "/v1/embeddings", body, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 256);
    json_decref(j);
    free(body);
    json_object_set_new(b, "truncate", json_false());
    body = json_dumps(b, JSON_COMPACT);
    j = post(s.port, "/v1/embeddings", body, &st);
    cr_assert_eq(st, 422);
    check_error(j, "input_too_long", "input");
    json_decref(j);
    free(body);
    json_decref(b);
    /* body over the limit: 413 (declared Content-Length, answered before the body is read) */
    char *big = malloc(200 * 1024);
    memset(big, ' ', 200 * 1024);
    memcpy(big, "{\"input\":\"", 10);
    big[200 * 1024 - 2] = '"';
    big[200 * 1024 - 1] = '}';
    http_resp_t r;
    cr_assert_eq(http_request(s.port, "POST", "/v1/embeddings", NULL, big, 200 * 1024, &r, 30000), 0);
    cr_assert_eq(r.status, 413);
    j = json_loads(r.body, 0, NULL);
    check_error(j, "body_too_large", NULL);
    json_decref(j);
    http_resp_free(&r);
    free(big);
    free(longtext);
    /* unknown route 404, wrong method 405 */
    cr_assert_eq(http_get(s.port, "/v1/nothing", &r), 0);
    cr_assert_eq(r.status, 404);
    j = json_loads(r.body, 0, NULL);
    check_error(j, "not_found", NULL);
    json_decref(j);
    http_resp_free(&r);
    cr_assert_eq(http_get(s.port, "/v1/embeddings", &r), 0);
    cr_assert_eq(r.status, 405);
    http_resp_free(&r);
    /* request ids: echoed when given, made up when not */
    const char *hdr[] = {"X-Request-ID: test-rid-42", NULL};
    cr_assert_eq(http_request(s.port, "POST", "/v1/embeddings", hdr, "{\"input\":\"hi\"}", 14, &r, 30000), 0);
    char buf[128];
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(http_header(&r, "X-Request-ID", buf, sizeof buf), "test-rid-42");
    http_resp_free(&r);
    cr_assert_eq(http_request(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"hi\"}", 14, &r, 30000), 0);
    cr_assert(http_header(&r, "X-Request-ID", buf, sizeof buf) && strlen(buf) >= 16);
    http_resp_free(&r);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- batching */

typedef struct {
    int port;
    fixture_t *fx;
    int first, count;
    float (*out)[H];
    int fails;
} client_arg_t;

static void *client_main(void *p) {
    client_arg_t *a = p;
    for (int i = a->first; i < a->first + a->count; i++) {
        char *body = embed_body(a->fx[i].text);
        http_resp_t r;
        if (http_post_json(a->port, "/v1/embeddings", body, &r) || r.status != 200) a->fails++;
        else {
            json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
            if (!j || embedding_at(j, 0, a->out[i], H)) a->fails++;
            json_decref(j);
        }
        http_resp_free(&r);
        free(body);
    }
    return NULL;
}

Test(serve, concurrent_clients_batch_and_match_single_runs, .timeout = 180) {
    static fixture_t fx[64];
    int n = load_fixtures(fx, 64);
    cr_assert_geq(n, 48);
    n = 48;
    api_config_t c;
    support_server_config(&c);
    c.max_queue_delay_ms = 20;
    support_server_t s = start(&c);
    static float alone[64][H], together[64][H];
    /* single runs, one at a time */
    client_arg_t one = {s.port, fx, 0, n, alone, 0};
    client_main(&one);
    cr_assert_eq(one.fails, 0);
    batcher_stats_t st0;
    batcher_stats(api_serve_batcher(s.srv), &st0);
    cr_assert_eq(st0.max_batch_seqs_seen, 1, "sequential requests should run alone");
    /* 24 clients at once, 2 requests each */
    pthread_t th[24];
    client_arg_t args[24];
    for (int t = 0; t < 24; t++) {
        args[t] = (client_arg_t){s.port, fx, t * 2, 2, together, 0};
        pthread_create(&th[t], NULL, client_main, &args[t]);
    }
    for (int t = 0; t < 24; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(args[t].fails, 0, "client %d had failures", t);
    }
    batcher_stats_t st;
    batcher_stats(api_serve_batcher(s.srv), &st);
    cr_assert_gt(st.max_batch_seqs_seen, 1, "no batch larger than one formed under concurrency");
    cr_assert_lt(st.batches - st0.batches, (uint64_t)n, "every request ran alone: %llu batches",
                 (unsigned long long)(st.batches - st0.batches));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < H; k++)
            cr_assert_float_eq(together[i][k], alone[i][k], 1e-6, "input %d dim %d: batched %g alone %g", i, k,
                               together[i][k], alone[i][k]);
    /* the counters the metrics issue exports */
    http_resp_t r;
    cr_assert_eq(http_get(s.port, "/metrics", &r), 0);
    cr_assert(strstr(r.body, "sluice_batches_total"));
    http_resp_free(&r);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- budgets */

typedef struct {
    int port;
    const char *body;
    int status;
} one_req_t;

static void *one_req_main(void *p) {
    one_req_t *a = p;
    http_resp_t r;
    a->status = http_post_json(a->port, "/v1/embeddings", a->body, &r) ? -1 : r.status;
    http_resp_free(&r);
    return NULL;
}

Test(serve, full_queue_answers_429_and_loses_nothing, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_pending_items = 3;
    c.max_queue_delay_ms = 4000; /* nothing leaves before the queue is full, even on a loaded machine */
    support_server_t s = start(&c);
    pthread_t th[3];
    one_req_t reqs[3];
    for (int i = 0; i < 3; i++) {
        reqs[i] = (one_req_t){s.port, "{\"input\":\"wait in the queue\"}", 0};
        pthread_create(&th[i], NULL, one_req_main, &reqs[i]);
    }
    batcher_stats_t st;
    for (int i = 0; i < 1500; i++) {
        batcher_stats(api_serve_batcher(s.srv), &st);
        if (st.pending_items == 3) break;
        sleep_ms(2);
    }
    cr_assert_eq(st.pending_items, 3);
    http_resp_t r;
    cr_assert_eq(http_post_json(s.port, "/v1/embeddings", "{\"input\":\"one too many\"}", &r), 0);
    cr_assert_eq(r.status, 429);
    char buf[32];
    cr_assert(http_header(&r, "Retry-After", buf, sizeof buf), "429 without Retry-After");
    json_t *j = json_loads(r.body, 0, NULL);
    check_error(j, "queue_full", NULL);
    json_decref(j);
    http_resp_free(&r);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(reqs[i].status, 200, "queued request %d answered %d", i, reqs[i].status);
    }
    batcher_stats(api_serve_batcher(s.srv), &st);
    cr_assert_eq(st.items_ok, 3);
    cr_assert_eq(st.items_rejected, 1);
    cr_assert_eq(st.batches, 1, "the three waited and ran together");
    support_server_stop(&s);
}

Test(serve, model_over_budget_is_refused_with_507, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.host_memory_budget = 16 << 20; /* the model needs ~90 MB of weights */
    support_server_t s = start(&c);
    int st;
    json_t *j = post(s.port, "/v1/embeddings", "{\"input\":\"too big\"}", &st);
    cr_assert_eq(st, 507);
    check_error(j, "model_too_large", "model");
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    cr_assert(strstr(msg, "needs") && strstr(msg, "budget"), "507 message without the numbers: %s", msg);
    json_decref(j);
    /* asked again right away: refused fast with the same answer, the process is fine */
    j = post(s.port, "/v1/embeddings", "{\"input\":\"too big\"}", &st);
    cr_assert_eq(st, 507);
    json_decref(j);
    cr_assert_eq(registry_used(api_serve_registry(s.srv)), 0, "a refused model left bytes in the arena");
    support_server_stop(&s);
}

Test(serve, deadline_passed_in_queue_answers_408_without_compute, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.max_queue_delay_ms = 800;
    support_server_t s = start(&c);
    int st;
    json_t *j = post(s.port, "/v1/embeddings", "{\"input\":\"late\",\"deadline_ms\":50}", &st);
    cr_assert_eq(st, 408);
    check_error(j, "deadline_exceeded", NULL);
    json_decref(j);
    batcher_stats_t bs;
    batcher_stats(api_serve_batcher(s.srv), &bs);
    cr_assert_eq(bs.items_expired, 1);
    cr_assert_eq(bs.batches, 0, "an expired item was computed");
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- health */

Test(serve, health_and_readiness, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    snprintf(c.preload, sizeof c.preload, "all");
    support_server_t s = start(&c);
    http_resp_t r;
    cr_assert_eq(http_get(s.port, "/healthz", &r), 0);
    cr_assert_eq(r.status, 200);
    http_resp_free(&r);
    json_t *j = NULL;
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(http_get(s.port, "/readyz", &r), 0);
        json_decref(j);
        j = json_loadb(r.body, r.body_len, 0, NULL);
        int st = r.status;
        http_resp_free(&r);
        if (st == 200) break;
        cr_assert_eq(st, 503);
        cr_assert(json_array_size(json_object_get(j, "not_ready")) > 0, "503 without a reason");
        sleep_ms(20);
    }
    cr_assert(json_is_true(json_object_get(j, "ready")), "preloaded model never became ready");
    json_t *m = json_object_get(json_object_get(j, "models"), "all-minilm-l6-v2");
    cr_assert_str_eq(json_string_value(json_object_get(m, "state")), "ready");
    cr_assert_gt(json_integer_value(json_object_get(m, "weight_bytes")), 80 << 20);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "queue"), "redis")), "off");
    json_decref(j);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- config */

Test(serve, config_sources_flags_over_env_over_file) {
    char path[] = "/tmp/sluice-cfg-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *text = "{\"port\": 9001, \"max_batch_seqs\": 8, \"queue\": [\"a\", \"b\"], \"host_memory_budget\": \"1G\"}";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("SLUICE_MAX_BATCH_SEQS", "16", 1);
    setenv("SLUICE_MAX_QUEUE_DELAY_MS", "7", 1);
    api_config_t c;
    api_config_defaults(&c);
    char *argv[] = {"serve", "--config", path, "--max-queue-delay-ms", "9", "--device=cpu", NULL};
    char err[256];
    cr_assert_eq(api_config_load(&c, 6, argv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.port, 9001);
    cr_assert_eq(c.max_batch_seqs, 16);
    cr_assert_eq(c.max_queue_delay_ms, 9);
    cr_assert_str_eq(c.queue, "a,b");
    cr_assert_eq(c.host_memory_budget, (size_t)1 << 30);
    cr_assert_str_eq(c.device, "cpu");
    char *bad[] = {"serve", "--no-such-flag", "1", NULL};
    cr_assert_eq(api_config_load(&c, 3, bad, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "no-such-flag"));
    unlink(path);
    unsetenv("SLUICE_MAX_BATCH_SEQS");
    unsetenv("SLUICE_MAX_QUEUE_DELAY_MS");
}

/* ---------------------------------------------------------------- SIGTERM */

Test(serve, sigterm_with_work_in_flight_loses_nothing, .timeout = 120) {
    support_proc_t p;
    const char *extra[] = {"--max-queue-delay-ms", "3000", NULL};
    int rc = support_proc_start(&p, extra);
    cr_assert_eq(rc, 0, "%s", p.err);
    enum { N = 16 };
    pthread_t th[N];
    one_req_t reqs[N];
    for (int i = 0; i < N; i++) {
        reqs[i] = (one_req_t){p.port, "{\"input\":[\"in flight at shutdown\",\"a second input\"]}", 0};
        pthread_create(&th[i], NULL, one_req_main, &reqs[i]);
    }
    /* wait until all are in (pending, waiting for the 3 s batch window) */
    int pending = 0;
    for (int i = 0; i < 500 && pending != N; i++) {
        http_resp_t r;
        pending = 0;
        if (http_get(p.port, "/metrics", &r) == 0) {
            const char *m = strstr(r.body, "\nsluice_pending_items ");
            if (m) pending = atoi(m + 22);
        }
        http_resp_free(&r);
        if (pending != N) sleep_ms(5);
    }
    /* the signal goes right after the scrape that saw all of them pending */
    int status = support_proc_stop(&p, SIGTERM, 60000);
    cr_assert_eq(pending, N, "%d of the %d requests were pending when SIGTERM went", pending, N);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(reqs[i].status, 200, "request %d answered %d across SIGTERM", i, reqs[i].status);
    }
    cr_assert_eq(status, 0, "sluice serve exited %d after SIGTERM", status);
}

/* ---------------------------------------------------------------- CLI */

Test(serve, cli_help_and_bad_flags) {
    const char *bin = getenv("SLUICE_BIN");
    if (!bin || !*bin) bin = "bin/sluice";
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s serve --help", bin);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "serve --help exited %d", st);
    const char *flags[] = {"--port", "--models", "--device", "--gpu-memory-budget", "--host-memory-budget",
                           "--max-batch-seqs", "--max-queue-delay-ms", "--redis", "--queue", "SLUICE_"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) cr_assert(strstr(buf, flags[i]), "--help lacks %s", flags[i]);
    snprintf(cmd, sizeof cmd, "%s serve --no-such-flag 1 2>/dev/null", bin);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a bad flag exited %d, want 2", st);
    snprintf(cmd, sizeof cmd, "SLUICE_MAX_BATCH_SEQS=many %s serve 2>/dev/null", bin);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a bad SLUICE_ variable exited %d, want 2", st);
}

/* ---------------------------------------------------------------- logs */

Test(serve, logs_are_json_lines_carrying_the_request_id, .timeout = 60) {
    support_proc_t p;
    const char *extra[] = {"--log-level", "info", NULL};
    cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
    const char *hdr[] = {"X-Request-ID: log-check-7", NULL};
    http_resp_t r;
    cr_assert_eq(http_request(p.port, "POST", "/v1/embeddings", hdr, "{\"input\":\"log me\"}", 18, &r, 30000), 0);
    cr_assert_eq(r.status, 200);
    http_resp_free(&r);
    FILE *f = fopen(p.log, "r");
    cr_assert(f, "no log file");
    char *line = NULL;
    size_t cap = 0;
    int lines = 0, found = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(json_is_object(j), "log line is not a JSON object: %s", line);
        cr_assert(json_is_string(json_object_get(j, "time")) && json_is_string(json_object_get(j, "level")) &&
                      json_is_string(json_object_get(j, "msg")),
                  "log line without time/level/msg: %s", line);
        const char *rid = json_string_value(json_object_get(j, "request_id"));
        if (rid && !strcmp(rid, "log-check-7")) {
            found = 1;
            cr_assert_eq(json_integer_value(json_object_get(j, "status")), 200);
            cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "all-minilm-l6-v2");
            cr_assert(json_is_number(json_object_get(j, "duration_s")));
        }
        json_decref(j);
        lines++;
    }
    free(line);
    fclose(f);
    cr_assert_gt(lines, 1);
    cr_assert(found, "no log line carries the request id");
    cr_assert_eq(support_proc_stop(&p, SIGTERM, 30000), 0);
}
