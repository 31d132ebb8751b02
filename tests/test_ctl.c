/* tests/test_ctl.c - the control plane and the route table as units, without
 * a server: trace ids and body depth, token buckets on a synthetic clock, the
 * result cache, the door (api_ctl_gate: keys, scopes, rate limits, probes)
 * with a real key file, the route table (match, 405 methods, scopes, labels),
 * the one error mapping of both intakes, and the tokenizer interface with
 * both kinds behind it (WordPiece of the encoder, byte-level BPE of the
 * decoder GGUF). The same behaviour through a
 * running server is tests/test_serve_ctl.c.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/http/auth.h"
#include "api/http/cache.h"
#include "api/http/ctl.h"
#include "api/http/ratelimit.h"
#include "api/http/routes.h"
#include "api/job.h"
#include "api/log.h"
#include "engine/model.h"
#include "engine/tok_bpe.h"
#include "engine/tokenizer.h"
#include "tests/support_llm.h"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *model_dir(void) {
    const char *m = getenv("SLUICE_TEST_MODEL");
    return m ? m : "models/all-minilm-l6-v2";
}

Test(ctl_unit, traceparent_and_json_depth) {
    cr_assert(api_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    cr_assert(!api_traceparent_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "upper case");
    cr_assert(!api_traceparent_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace id");
    cr_assert(!api_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "zero parent id");
    cr_assert(!api_traceparent_valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version");
    cr_assert(!api_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
    cr_assert(!api_traceparent_valid(""));
    const char *s = "{\"input\":\"[[[[{{{{\\\"]]]\",\"x\":[[1]]}";
    cr_assert_eq(api_json_depth(s, strlen(s)), 3, "brackets inside strings count");
    cr_assert_eq(api_json_depth("[]", 2), 1);
    cr_assert_eq(api_json_depth("", 0), 0);
    cr_assert(api_host_is_loopback("127.0.0.1") && api_host_is_loopback("127.1.2.3") && api_host_is_loopback("localhost"));
    cr_assert(!api_host_is_loopback("0.0.0.0") && !api_host_is_loopback("10.0.0.1"));
}

Test(ctl_unit, token_buckets_on_a_synthetic_clock) {
    api_ratelimit_t *rl;
    cr_assert_eq(api_ratelimit_create(2, &rl), 0);
    api_ratelimit_configure(rl, 0, 2, 0);    /* 2 requests/s */
    api_ratelimit_configure(rl, 1, 0, 100);  /* 100 tokens/s */
    int64_t t = 1000000000LL;
    int ra = 0;
    cr_assert_eq(api_ratelimit_take(rl, 0, t, &ra), API_RL_OK);
    cr_assert_eq(api_ratelimit_take(rl, 0, t, &ra), API_RL_OK);
    cr_assert_eq(api_ratelimit_take(rl, 0, t, &ra), API_RL_REQUESTS);
    cr_assert_eq(ra, 1);
    cr_assert_eq(api_ratelimit_take(rl, 0, t + 500000000LL, &ra), API_RL_OK, "half a second refills one");
    cr_assert_eq(api_ratelimit_take(rl, 0, t + 500000000LL, &ra), API_RL_REQUESTS);
    /* tokens: debt of 250 at 100/s -> about 3 s, then admitted again */
    cr_assert_eq(api_ratelimit_take(rl, 1, t, &ra), API_RL_OK);
    api_ratelimit_charge(rl, 1, t, 350);
    cr_assert_eq(api_ratelimit_take(rl, 1, t, &ra), API_RL_TOKENS);
    cr_assert_eq(ra, 3);
    cr_assert_eq(api_ratelimit_take(rl, 1, t + 2000000000LL, &ra), API_RL_TOKENS);
    cr_assert_eq(api_ratelimit_take(rl, 1, t + 2600000000LL, &ra), API_RL_OK);
    /* no limits, unknown bucket: always ok */
    cr_assert_eq(api_ratelimit_take(rl, 7, t, &ra), API_RL_OK);
    api_ratelimit_destroy(rl);
}

Test(ctl_unit, cache_bounds_and_ttl) {
    api_cache_t *c;
    cr_assert_eq(api_cache_create(2, 1 << 20, 200, &c), 0);
    unsigned char k[3][API_CACHE_KEY_BYTES];
    json_t *b = json_pack("{s:s}", "input", "x");
    for (int i = 0; i < 3; i++) {
        char m[8];
        snprintf(m, sizeof m, "m%d", i);
        api_cache_key("", m, b, k[i]);
    }
    json_decref(b);
    cr_assert(memcmp(k[0], k[1], API_CACHE_KEY_BYTES));
    api_cache_put(c, k[0], "zero", 4);
    api_cache_put(c, k[1], "one", 3);
    api_cache_put(c, k[2], "two", 3); /* evicts the oldest */
    size_t len;
    char *v = api_cache_get(c, k[0], &len);
    cr_assert_null(v);
    v = api_cache_get(c, k[2], &len);
    cr_assert(v && len == 3 && !memcmp(v, "two", 3));
    free(v);
    api_cache_stats_t st;
    api_cache_stats(c, &st);
    cr_assert(st.entries == 2 && st.bytes == 6 && st.hits == 1 && st.misses == 1);
    sleep_ms(250);
    cr_assert_null(api_cache_get(c, k[2], &len), "expired entry answered");
    api_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    api_cache_destroy(c);
    /* the key ignores priority and deadline, not the input */
    unsigned char a1[32], a2[32], a3[32];
    json_t *x = json_pack("{s:s,s:i}", "input", "q", "priority", 5), *y = json_pack("{s:s,s:i}", "input", "q", "deadline_ms", 9),
           *z = json_pack("{s:s}", "input", "r");
    api_cache_key("", "m", x, a1), api_cache_key("", "m", y, a2), api_cache_key("", "m", z, a3);
    cr_assert(!memcmp(a1, a2, 32) && memcmp(a1, a3, 32));
    /* nor the API key: one tenant's answer is never another's hit */
    api_cache_key("alice", "m", x, a2), api_cache_key("bob", "m", x, a3);
    cr_assert(memcmp(a1, a2, 32) && memcmp(a2, a3, 32), "two API keys share a cache entry");
    json_decref(x), json_decref(y), json_decref(z);
}


/* ---------------------------------------------------------------- the door */

/* A control plane over a fresh key file: keys[0] infer (2 requests/s),
 * keys[1] admin; 1000 tokens/s for everyone. */
static api_ctl_t *ctl_with_keys(char keys[2][96], char *path, size_t pathlen, int auth_probes) {
    snprintf(path, pathlen, "/tmp/sluice-test-ctl-%d.keys", (int)getpid());
    unlink(path);
    char err[256];
    cr_assert_eq(api_key_generate(keys[0], 96), 0);
    cr_assert_eq(api_key_generate(keys[1], 96), 0);
    cr_assert_eq(api_keys_append(path, "reader", keys[0], API_SCOPE_INFER, 2, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(api_keys_append(path, "ops", keys[1], API_SCOPE_ADMIN, 0, 0, err, sizeof err), 0, "%s", err);
    api_config_t cfg;
    api_config_defaults(&cfg);
    snprintf(cfg.key_file, sizeof cfg.key_file, "%s", path);
    cfg.auth_probes = auth_probes;
    cfg.rate_limit_tokens_per_s = 1000;
    api_ctl_t *c = NULL;
    cr_assert_eq(api_ctl_create(&cfg, 1, api_routes, api_routes_count, &c, err, sizeof err), 0, "%s", err);
    return c;
}

/* The gate's answer for one request: 0 let in, else the status. */
static int gate(api_ctl_t *c, const char *method, const char *path, const char *key, int64_t now, api_gate_t *g) {
    api_route_match_t m;
    api_route_match(api_routes, api_routes_count, method, path, &m);
    char auth[128];
    snprintf(auth, sizeof auth, "Bearer %s", key ? key : "");
    return api_ctl_gate(c, &m, method, path, key ? auth : NULL, now, g) ? (int)g->status : 0;
}

Test(ctl_unit, gate_keys_scopes_and_open_probes) {
    char keys[2][96], path[128];
    api_ctl_t *c = ctl_with_keys(keys, path, sizeof path, 0);
    api_gate_t g;
    int64_t t = 1000000000LL;
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", NULL, t, &g), 401);
    cr_assert_str_eq(g.code, "missing_api_key");
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", "sk-sluice-not-a-key", t, &g), 401);
    cr_assert_str_eq(g.code, "invalid_api_key");
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[0], t, &g), 0);
    cr_assert(g.key == 0 && !strcmp(g.key_name, "reader"));
    cr_assert_eq(gate(c, "POST", "/v1/admin/pause", keys[0], t, &g), 403, "an infer key pausing the server");
    cr_assert_str_eq(g.code, "insufficient_scope");
    cr_assert(strstr(g.message, "POST /v1/admin/pause needs admin"), "%s", g.message);
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[1], t, &g), 403, "an admin key embedding");
    /* models: reading takes either scope, anything else admin (also methods no row has) */
    cr_assert_eq(gate(c, "GET", "/v1/models/x", keys[1], t, &g), 0);
    cr_assert_eq(gate(c, "POST", "/v1/models/x/load", keys[1], t, &g), 0);
    cr_assert_eq(gate(c, "DELETE", "/v1/models/x", keys[0], t, &g), 403);
    cr_assert_eq(gate(c, "GET", "/v1/models/x/reboot", keys[0], t, &g), 403, "unknown model actions need admin");
    /* probes are open without --auth-probes, and never rate limited */
    for (int i = 0; i < 10; i++) cr_assert_eq(gate(c, "GET", "/readyz", NULL, t, &g), 0);
    cr_assert_eq(gate(c, "GET", "/no/such/path", NULL, t, &g), 401, "unknown paths need a key");
    api_ctl_destroy(c);
    c = ctl_with_keys(keys, path, sizeof path, 1);
    cr_assert_eq(gate(c, "GET", "/metrics", NULL, t, &g), 401, "--auth-probes");
    cr_assert_eq(gate(c, "GET", "/metrics", keys[1], t, &g), 0);
    api_ctl_destroy(c);
    unlink(path);
}

Test(ctl_unit, gate_rate_limits_per_key_and_recovers) {
    char keys[2][96], path[128];
    api_ctl_t *c = ctl_with_keys(keys, path, sizeof path, 0);
    api_gate_t g;
    int64_t t = 5000000000LL;
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[0], t, &g), 0);
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[0], t, &g), 0);
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[0], t, &g), 429, "the key's own 2 requests/s");
    cr_assert(!strcmp(g.code, "rate_limited") && g.retry_after_s >= 1);
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[1], t, &g), 403, "another key's bucket is its own");
    cr_assert_eq(gate(c, "POST", "/v1/embeddings", keys[0], t + 600000000LL, &g), 0, "refilled");
    /* input tokens: the server-wide 1000/s, charged after admission */
    cr_assert_eq(gate(c, "GET", "/v1/admin/config", keys[1], t, &g), 0);
    api_ctl_charge_tokens(c, 1, t, 3500);
    cr_assert_eq(gate(c, "GET", "/v1/admin/config", keys[1], t, &g), 429);
    cr_assert(strstr(g.message, "input tokens"), "%s", g.message);
    cr_assert_eq(gate(c, "GET", "/v1/admin/config", keys[1], t + 3000000000LL, &g), 0, "debt paid after 2.5 s");
    int depth = 0, limit = 0;
    cr_assert(api_ctl_body_too_deep(c, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 40, &depth, &limit));
    cr_assert(depth == 40 && limit == 32);
    cr_assert(!api_ctl_body_too_deep(c, "{\"input\":[1]}", 13, &depth, &limit));
    api_ctl_destroy(c);
    unlink(path);
}

/* ---------------------------------------------------------------- the route table */

Test(ctl_unit, route_table_match_methods_and_labels) {
    api_route_match_t m;
    cr_assert(api_route_match(api_routes, api_routes_count, "GET", "/v1/tasks/abc", &m));
    cr_assert(m.row && m.row->handler == api_route_tasks_get && !strcmp(m.params[0], "abc"));
    cr_assert(api_route_match(api_routes, api_routes_count, "PUT", "/v1/tasks/abc", &m) && !m.row);
    char allowed[64];
    api_route_allowed(&m, allowed, sizeof allowed);
    cr_assert_str_eq(allowed, "use GET or DELETE");
    cr_assert(!api_route_match(api_routes, api_routes_count, "GET", "/v1/tasks/abc/x", &m));
    cr_assert(!api_route_match(api_routes, api_routes_count, "GET", "/v1/tasks/", &m), "{id} is one non-empty segment");
    cr_assert(api_route_match(api_routes, api_routes_count, "POST", "/v1/models/m/load", &m));
    cr_assert(m.row && m.row->handler == api_route_model_load && !strcmp(m.params[0], "m"));
    cr_assert(api_route_match(api_routes, api_routes_count, "POST", "/v1/models/m/reboot", &m));
    cr_assert(m.row && m.row->handler == api_route_not_found, "the catch-all row");
    cr_assert(api_route_match(api_routes, api_routes_count, "POST", "/healthz", &m) && api_route_is_probe(&m));
    /* labels: one per pattern, in table order, then "other"; the count is fixed */
    int n = api_route_label_count(api_routes, api_routes_count);
    cr_assert_eq(n, 27);
    cr_assert_str_eq(api_route_label(api_routes, api_routes_count, 0), "/healthz");
    cr_assert_str_eq(api_route_label(api_routes, api_routes_count, 8), "/v1/tasks/batch");
    cr_assert_str_eq(api_route_label(api_routes, api_routes_count, 9), "/v1/tasks/{id}");
    cr_assert_str_eq(api_route_label(api_routes, api_routes_count, n - 1), "other");
    api_route_match(api_routes, api_routes_count, "DELETE", "/v1/tasks/zz", &m);
    cr_assert_eq(api_route_label_index(api_routes, api_routes_count, &m), 9);
    /* a fixed segment before {id}: the batch route is not a task id */
    cr_assert(api_route_match(api_routes, api_routes_count, "POST", "/v1/tasks/batch", &m));
    cr_assert(m.row && m.row->handler == api_route_tasks_batch);
    api_route_match(api_routes, api_routes_count, "GET", "/v1/admin/nope", &m);
    cr_assert_eq(api_route_label_index(api_routes, api_routes_count, &m), n - 1);
    api_route_match(api_routes, api_routes_count, "GET", "/nope", &m);
    cr_assert_eq(api_route_label_index(api_routes, api_routes_count, &m), n - 1);
}

/* ---------------------------------------------------------------- job layer, interfaces */

Test(ctl_unit, one_error_mapping_for_both_intakes) {
    cr_assert_str_eq(api_error_type(404), "not_found_error");
    cr_assert_str_eq(api_error_type(503), "service_unavailable_error");
    cr_assert_str_eq(api_error_type(422), "invalid_request_error");
    cr_assert_str_eq(api_error_type(500), "server_error");
    char *http = api_error_json(404, "model_not_found", "model", "no such model", 0);
    char *task = api_error_json(404, "model_not_found", "model", "no such model", 1);
    json_t *h = json_loads(http, 0, NULL), *t = json_loads(task, 0, NULL);
    cr_assert(json_equal(json_object_get(h, "error"), json_object_get(t, "error")), "%s vs %s", http, task);
    cr_assert_eq(json_integer_value(json_object_get(t, "status")), 404);
    json_decref(h), json_decref(t);
    free(http), free(task);
}

Test(ctl_unit, tokenizer_interface_decodes_incrementally) {
    tok_t *t = NULL;
    char err[256];
    cr_assert_eq(model_tokenizer(model_dir(), &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_str_eq(tok_kind(t), "wordpiece");
    cr_assert_eq(tok_special(t, "cls"), tok_lookup(t, "[CLS]"));
    cr_assert_eq(tok_special(t, "bos"), -1, "WordPiece has no BOS");
    const char *text = "the unbelievable tokenizer decodes";
    int32_t ids[64];
    int n = tok_encode(t, text, strlen(text), ids, 64, NULL, err, sizeof err);
    cr_assert_gt(n, 4, "%s", err);
    char out[256];
    cr_assert_eq(tok_decode(t, ids, n, out, sizeof out), (int)strlen(text));
    cr_assert_str_eq(out, text, "[CLS]/[SEP] dropped, ## pieces glued");
    /* one token at a time gives the same bytes */
    tok_decode_state_t st = {0};
    char inc[256];
    size_t w = 0;
    for (int i = 0; i < n; i++) w += (size_t)tok_decode_next(t, &st, ids[i], inc + w, sizeof inc - 1 - w);
    inc[w] = '\0';
    cr_assert_str_eq(inc, text);
    cr_assert_eq(tok_decode_next(t, &st, tok_vocab_size(t), inc, sizeof inc), TOK_EINVAL);
    tok_destroy(t);
    cr_assert_eq(model_family_for(model_dir()), &model_bert);
    cr_assert_null(model_family_for("/nonexistent"));
}

Test(ctl_unit, bpe_behind_the_tokenizer_interface) {
    gguf_file_t *f = support_llm_open();
    tok_t *t = NULL;
    char err[256];
    cr_assert_eq(tok_bpe_from_gguf(f, &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_str_eq(tok_kind(t), "bpe");
    cr_assert_gt(tok_max_len(t), 1000, "the model's context");
    cr_assert_geq(tok_special(t, "eos"), 0);
    cr_assert_eq(tok_special(t, "cls"), -1);
    /* the same ids as the BPE module itself, special-token text parsed */
    const char *text = "<|im_start|>user\nHello, wörld! 你好 🙂<|im_end|>";
    int32_t ids[128], ref[128];
    int n = tok_encode(t, text, strlen(text), ids, 128, NULL, err, sizeof err);
    cr_assert_gt(n, 5, "%s", err);
    size_t nr = 0;
    cr_assert_eq(bpe_encode(tok_bpe(t), text, strlen(text), ref, 128, &nr, BPE_PARSE_SPECIAL, err, sizeof err), 0);
    cr_assert_eq((size_t)n, nr + (size_t)bpe_add_bos(tok_bpe(t)));
    cr_assert(!memcmp(ids + bpe_add_bos(tok_bpe(t)), ref, nr * sizeof *ref));
    cr_assert_eq(ids[0], tok_lookup(t, "<|im_start|>"));
    /* decoded whole and token by token: control tokens dropped, every piece whole UTF-8 */
    char out[256], inc[256];
    cr_assert_gt(tok_decode(t, ids, n, out, sizeof out), 0);
    cr_assert_str_eq(out, "user\nHello, wörld! 你好 🙂");
    tok_decode_state_t st = {0};
    size_t w = 0;
    for (int i = 0; i < n; i++) {
        int k = tok_decode_next(t, &st, ids[i], inc + w, sizeof inc - 1 - w);
        cr_assert_geq(k, 0);
        w += (size_t)k;
        inc[w] = '\0';
        for (size_t p = 0; p < w;) { /* what has come out so far is valid UTF-8 */
            unsigned char c = (unsigned char)inc[p];
            int len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            cr_assert_leq(p + (size_t)len, w, "token %d left half a character out", i);
            p += (size_t)len;
        }
    }
    w += (size_t)tok_decode_flush(t, &st, inc + w, sizeof inc - 1 - w);
    inc[w] = '\0';
    cr_assert_str_eq(inc, out);
    /* truncation keeps the first max_ids and says how many there were */
    int untrunc = 0;
    cr_assert_eq(tok_encode(t, text, strlen(text), ids, 3, &untrunc, err, sizeof err), 3);
    cr_assert_eq(untrunc, n);
    tok_destroy(t);
    gguf_close(f);
}
