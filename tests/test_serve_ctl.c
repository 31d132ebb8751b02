/* tests/test_serve_ctl.c - the control plane of `sluice serve` over real HTTP on
 * loopback with the real model (and a real redis-server where the queue is
 * involved): API keys and scopes (401/403, `sluice keys add`, loopback-only
 * without keys, the constant-time check), rate limits hit and recovered,
 * every bad-input class, model load/unload (memory back to its baseline),
 * pause/resume/drain, live config, request id and traceparent from HTTP
 * through Redis to the result and the logs, /metrics parsed by
 * prometheus_client, health bodies, and the result cache. The same parts as
 * units, without a server: tests/test_ctl.c.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/http/auth.h"
#include "api/server.h"
#include "queue/queue.h"
#include "tests/support_http.h"
#include "tests/support_redis.h"
#include "tests/support_server.h"

#define MODEL "all-minilm-l6-v2"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One request; *out keeps headers and body (free with http_resp_free). */
static int req(int port, const char *method, const char *path, const char *key, const char *body,
               http_resp_t *out) {
    char auth[200];
    const char *hdrs[] = {auth, NULL};
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key ? key : "");
    cr_assert_eq(http_request(port, method, path, key ? hdrs : NULL, body, body ? strlen(body) : 0, out, 60000), 0,
                 "no answer: %s %s", method, path);
    return out->status;
}

/* Status of a request; when code is given, the error code must match. */
static int status_of(int port, const char *method, const char *path, const char *key, const char *body,
                     const char *code) {
    http_resp_t r;
    int st = req(port, method, path, key, body, &r);
    if (code) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        cr_assert(c && !strcmp(c, code), "%s %s: want error code %s, got %d %s", method, path, code, st, r.body);
        json_decref(j);
    }
    http_resp_free(&r);
    return st;
}

static json_t *json_of(int port, const char *method, const char *path, const char *key, const char *body, int *st) {
    http_resp_t r;
    *st = req(port, method, path, key, body, &r);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    cr_assert(j, "%s %s: not JSON: %s", method, path, r.body);
    http_resp_free(&r);
    return j;
}

/* A temp key file with the given keys (name, scope, rps, tps); keys[i] gets the secret. */
typedef struct {
    const char *name, *scope;
    double rps, tps;
} key_spec_t;

static void make_keys(char *path, size_t len, const key_spec_t *spec, int n, char keys[][96]) {
    snprintf(path, len, "/tmp/sluice-keys-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    unlink(path);
    for (int i = 0; i < n; i++) {
        unsigned scopes;
        cr_assert_eq(api_scopes_parse(spec[i].scope, &scopes), 0);
        cr_assert_eq(api_key_generate(keys[i], 96), 0);
        char err[256];
        cr_assert_eq(api_keys_append(path, spec[i].name, keys[i], scopes, spec[i].rps, spec[i].tps, err, sizeof err), 0,
                     "%s", err);
    }
}

static support_server_t start(api_config_t *c) {
    support_server_t s;
    cr_assert_eq(support_server_start(&s, c), 0, "server: %s", s.err);
    return s;
}

static char *scrape(int port) {
    http_resp_t r;
    cr_assert_eq(req(port, "GET", "/metrics", NULL, NULL, &r), 200);
    char *t = strdup(r.body);
    http_resp_free(&r);
    return t;
}

/* The value of one series ("name{labels}" exactly as written), or -1. */
static double metric(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)); p += n)
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return atof(p + n + 1);
    return -1;
}

/* ---------------------------------------------------------------- keys and scopes */

Test(ctl, keys_scopes_401_403_and_open_probes, .timeout = 60) {
    char path[64], keys[3][96];
    key_spec_t spec[] = {{"inf", "infer", 0, 0}, {"adm", "admin", 0, 0}, {"both", "infer,admin", 0, 0}};
    make_keys(path, sizeof path, spec, 3, keys);
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    support_server_t s = start(&c);
    const char *emb = "{\"input\":\"scopes\"}";
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, emb, "missing_api_key"), 401);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", "sk-sluice-not-a-key", emb, "invalid_api_key"), 401);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[1], emb, "insufficient_scope"), 403);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[0], emb, NULL), 200);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[2], emb, NULL), 200);
    /* refused as soon as the headers are in: a large body from a stranger is never kept */
    char *big = malloc(1 << 20);
    memset(big, ' ', (1 << 20) - 1);
    big[(1 << 20) - 1] = '\0';
    big[0] = '{', big[(1 << 20) - 2] = '}';
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, big, "missing_api_key"), 401);
    free(big);
    /* a key differing in its last character is not accepted */
    char near[96];
    snprintf(near, sizeof near, "%s", keys[0]);
    near[strlen(near) - 1] ^= 1;
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", near, emb, "invalid_api_key"), 401);
    /* admin routes need admin; GET /v1/models takes either scope */
    cr_assert_eq(status_of(s.port, "POST", "/v1/admin/pause", keys[0], NULL, "insufficient_scope"), 403);
    cr_assert_eq(status_of(s.port, "PATCH", "/v1/admin/config", keys[0], "{\"max_batch_seqs\":8}", "insufficient_scope"), 403);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/unload", keys[0], NULL, "insufficient_scope"), 403);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/config", NULL, NULL, "missing_api_key"), 401);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/config", keys[1], NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/v1/models", keys[0], NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/v1/models", keys[1], NULL, NULL), 200);
    /* probes are open by default */
    cr_assert_eq(status_of(s.port, "GET", "/healthz", NULL, NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/readyz", NULL, NULL, NULL), 200);
    char *m = scrape(s.port);
    cr_assert_eq(metric(m, "sluice_auth_rejections_total{reason=\"missing_key\"}"), 3);
    cr_assert_eq(metric(m, "sluice_auth_rejections_total{reason=\"invalid_key\"}"), 2);
    cr_assert_eq(metric(m, "sluice_auth_rejections_total{reason=\"wrong_scope\"}"), 4);
    cr_assert_eq(metric(m, "sluice_requests_total{route=\"/v1/embeddings\",status=\"401\"}"), 4);
    cr_assert_eq(metric(m, "sluice_requests_total{route=\"/v1/embeddings\",status=\"200\"}"), 2);
    free(m);
    support_server_stop(&s);

    /* --auth-probes closes them */
    c.auth_probes = 1;
    s = start(&c);
    cr_assert_eq(status_of(s.port, "GET", "/metrics", NULL, NULL, "missing_api_key"), 401);
    cr_assert_eq(status_of(s.port, "GET", "/healthz", NULL, NULL, "missing_api_key"), 401);
    cr_assert_eq(status_of(s.port, "GET", "/readyz", keys[0], NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/metrics", keys[1], NULL, NULL), 200);
    support_server_stop(&s);
    unlink(path);
}

Test(ctl, no_key_file_means_loopback_only) {
    api_config_t c;
    support_server_config(&c);
    snprintf(c.host, sizeof c.host, "0.0.0.0");
    api_serve_t *srv = NULL;
    char err[1024];
    cr_assert_neq(api_serve_start(&c, &srv, err, sizeof err), 0, "started on 0.0.0.0 without keys");
    cr_assert(strstr(err, "refusing to listen on 0.0.0.0 without API keys") && strstr(err, "--key-file"), "%s", err);
    /* with a key file it starts */
    char path[64], keys[1][96];
    key_spec_t spec[] = {{"k", "infer", 0, 0}};
    make_keys(path, sizeof path, spec, 1, keys);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    cr_assert_eq(api_serve_start(&c, &srv, err, sizeof err), 0, "%s", err);
    api_serve_destroy(srv);
    /* a bad key file is refused with the line */
    FILE *f = fopen(path, "a");
    fprintf(f, "broken sha256:abc scopes=infer\n");
    fclose(f);
    cr_assert_neq(api_serve_start(&c, &srv, err, sizeof err), 0);
    cr_assert(strstr(err, "line 2"), "%s", err);
    unlink(path);
}

Test(ctl, constant_time_key_check_is_present) {
    /* the check goes through CRYPTO_memcmp: present in the object, used by the source */
    FILE *p = popen("nm build/api/http/auth.o 2>/dev/null | grep -c ' U CRYPTO_memcmp'", "r");
    cr_assert(p);
    int n = 0;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    cr_assert_geq(n, 1, "api/http/auth.o does not call CRYPTO_memcmp");
    FILE *f = fopen("api/http/auth.c", "r");
    cr_assert(f);
    char line[512];
    int uses = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "CRYPTO_memcmp(")) uses++;
        cr_assert(!(strstr(line, "memcmp(") && !strstr(line, "CRYPTO_memcmp(")), "plain memcmp in api/http/auth.c: %s", line);
    }
    fclose(f);
    cr_assert_geq(uses, 1);
    unsigned char a[32], b[32];
    api_sha256("key", 3, a);
    memcpy(b, a, 32);
    cr_assert(api_hash_equal(a, b));
    b[31] ^= 1;
    cr_assert(!api_hash_equal(a, b));
}

Test(ctl, keys_cli_prints_once_and_stores_the_hash, .timeout = 60) {
    const char *bin = getenv("SLUICE_BIN") ? getenv("SLUICE_BIN") : "bin/sluice";
    char dir[] = "/tmp/sluice-keycli-XXXXXX";
    cr_assert(mkdtemp(dir));
    char cmd[1024], file[300], key[200] = "";
    snprintf(file, sizeof file, "%s/keys", dir);
    snprintf(cmd, sizeof cmd, "%s keys add --scope admin --name ops --file %s 2>/dev/null", bin, file);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    cr_assert(fgets(key, sizeof key, p));
    cr_assert_eq(pclose(p), 0);
    key[strcspn(key, "\n")] = '\0';
    cr_assert(!strncmp(key, "sk-sluice-", 10) && strlen(key) == 74, "key: %s", key);
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    FILE *f = fopen(file, "r");
    char text[1024] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_assert(!strstr(text, key + 10), "the key itself is in the file");
    unsigned char h[32];
    api_sha256(key, strlen(key), h);
    char hex[80] = "sha256:";
    for (int i = 0; i < 32; i++) snprintf(hex + 7 + 2 * i, 3, "%02x", h[i]);
    cr_assert(strstr(text, hex) && strstr(text, "ops ") && strstr(text, "scopes=admin"), "file: %s", text);
    /* the same name twice is refused (exit 2); a bad scope too */
    snprintf(cmd, sizeof cmd, "%s keys add --scope admin --name ops --file %s >/dev/null 2>&1", bin, file);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s keys add --scope root --file %s >/dev/null 2>&1", bin, file);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
    /* the server takes the file and the key */
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", file);
    support_server_t s = start(&c);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/config", key, NULL, NULL), 200);
    support_server_stop(&s);
    unlink(file);
    rmdir(dir);
}

/* ---------------------------------------------------------------- rate limits */

Test(ctl, rate_limit_hit_and_recovered, .timeout = 60) {
    char path[64], keys[2][96];
    key_spec_t spec[] = {{"slow", "infer", 2, 0}, {"fewtokens", "infer", 0, 20}};
    make_keys(path, sizeof path, spec, 2, keys);
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    support_server_t s = start(&c);
    const char *emb = "{\"input\":\"rate\"}";
    /* 2 requests/s: a burst of 2 passes, the third is refused with Retry-After */
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[0], emb, NULL), 200);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[0], emb, NULL), 200);
    http_resp_t r;
    int st = req(s.port, "POST", "/v1/embeddings", keys[0], emb, &r);
    if (st == 200) { /* a slow machine refilled one token meanwhile: the next is refused */
        http_resp_free(&r);
        st = req(s.port, "POST", "/v1/embeddings", keys[0], emb, &r);
    }
    cr_assert_eq(st, 429, "%s", r.body);
    char ra[32];
    cr_assert(http_header(&r, "Retry-After", ra, sizeof ra), "no Retry-After");
    cr_assert_geq(atoi(ra), 1);
    cr_assert(strstr(r.body, "rate_limited"));
    http_resp_free(&r);
    /* the other key is not affected */
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[1], emb, NULL), 200);
    sleep_ms(1100);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[0], emb, NULL), 200, "not recovered after 1.1 s");

    /* 20 input tokens/s: a 60-token request is let in, then the debt refuses the next for ~2 s */
    char big[2048] = "{\"input\":\"";
    for (int i = 0; i < 55; i++) strcat(big, "word ");
    strcat(big, "\"}");
    st = req(s.port, "POST", "/v1/embeddings", keys[1], big, &r);
    cr_assert_eq(st, 200, "%s", r.body);
    http_resp_free(&r);
    st = req(s.port, "POST", "/v1/embeddings", keys[1], emb, &r);
    cr_assert_eq(st, 429);
    cr_assert(http_header(&r, "Retry-After", ra, sizeof ra));
    cr_assert(atoi(ra) >= 2 && atoi(ra) <= 4, "Retry-After %s for a ~40-token debt at 20/s", ra);
    http_resp_free(&r);
    char *m = scrape(s.port);
    cr_assert_geq(metric(m, "sluice_rate_limited_total{limit=\"requests\"}"), 1);
    cr_assert_eq(metric(m, "sluice_rate_limited_total{limit=\"tokens\"}"), 1);
    cr_assert_geq(metric(m, "sluice_requests_total{route=\"/v1/embeddings\",status=\"429\"}"), 2);
    free(m);
    sleep_ms(1000 * atoi(ra) + 100);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", keys[1], emb, NULL), 200, "not recovered");
    support_server_stop(&s);
    unlink(path);

    /* without keys the defaults apply to everyone together; probes are not limited */
    c.key_file[0] = '\0';
    c.rate_limit_rps = 1;
    s = start(&c);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/config", NULL, NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/config", NULL, NULL, "rate_limited"), 429);
    cr_assert_eq(status_of(s.port, "GET", "/healthz", NULL, NULL, NULL), 200, "probes are not limited");
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- bad input */

Test(ctl, every_bad_input_class_is_refused_naming_the_field, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.max_body_bytes = 4096;
    c.max_inputs = 4;
    support_server_t s = start(&c);
    int p = s.port;
    const char *E = "/v1/embeddings";
    /* size limits: 413 */
    char *huge = malloc(8192);
    memset(huge, 'a', 8191);
    huge[8191] = '\0';
    memcpy(huge, "{\"input\":\"", 10);
    memcpy(huge + 8189, "\"}", 2);
    cr_assert_eq(status_of(p, "POST", E, NULL, huge, "body_too_large"), 413);
    free(huge);
    cr_assert_eq(status_of(p, "POST", E, NULL, "{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "too_many_inputs"), 413);
    /* malformed JSON, wrong types, empty input, bad UTF-8, nesting bombs: 400/422 */
    cr_assert_eq(status_of(p, "POST", E, NULL, "{\"input\": \"unterminated", "invalid_json"), 400);
    cr_assert_eq(status_of(p, "POST", E, NULL, "[1,2]", "invalid_json"), 400);
    cr_assert_eq(status_of(p, "POST", E, NULL, "", "invalid_json"), 400);
    struct { const char *body, *code, *param; } cases[] = {
        {"{\"input\":5}", "invalid_type", "input"},
        {"{\"input\":[\"a\",7]}", "invalid_type", "input"},
        {"{\"input\":[[1,2],[3,\"x\"]]}", "invalid_type", "input"},
        {"{\"input\":\"a\",\"model\":3}", "invalid_type", "model"},
        {"{\"input\":\"a\",\"dimensions\":\"x\"}", "invalid_value", "dimensions"},
        {"{\"input\":\"a\",\"encoding_format\":\"hex\"}", "invalid_value", "encoding_format"},
        {"{\"input\":\"a\",\"truncate\":\"no\"}", "invalid_type", "truncate"},
        {"{\"input\":\"a\",\"priority\":1e9}", "invalid_value", "priority"},
        {"{\"model\":\"" MODEL "\"}", "missing_field", "input"},
        {"{\"input\":\"\"}", "empty_input", "input"},
        {"{\"input\":[]}", "empty_input", "input"},
        {"{\"input\":[[]]}", "empty_input", "input"},
        {"{\"input\":[999999999]}", "invalid_input", "input"},
        {"{\"input\":\"a\",\"model\":\"nope\"}", "model_not_found", "model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        json_t *j = json_of(p, "POST", E, NULL, cases[i].body, &st);
        json_t *e = json_object_get(j, "error");
        cr_assert(st == 400 || st == 404 || st == 422, "%s -> %d", cases[i].body, st);
        cr_assert_str_eq(json_string_value(json_object_get(e, "code")), cases[i].code, "%s", cases[i].body);
        cr_assert_str_eq(json_string_value(json_object_get(e, "param")), cases[i].param, "%s", cases[i].body);
        json_decref(j);
    }
    /* invalid UTF-8 (an overlong encoding and a lone continuation byte) */
    cr_assert_eq(status_of(p, "POST", E, NULL, "{\"input\":\"ab\xc0\xaf\"}", "invalid_json"), 400);
    cr_assert_eq(status_of(p, "POST", E, NULL, "{\"input\":\"\x80\"}", "invalid_json"), 400);
    /* nesting bomb: refused before the parser sees it */
    char bomb[3000];
    memset(bomb, '[', 2999);
    bomb[2999] = '\0';
    cr_assert_eq(status_of(p, "POST", E, NULL, bomb, "nesting_too_deep"), 400);
    char obj[4000] = "";
    for (int i = 0; i < 300; i++) strcat(obj, "{\"a\":");
    cr_assert_eq(status_of(p, "POST", "/v1/tasks", NULL, obj, "nesting_too_deep"), 400);
    /* over-long input with truncate false: 422 */
    char longin[4096] = "{\"truncate\":false,\"input\":\"";
    for (int i = 0; i < 300; i++) strcat(longin, "word ");
    strcat(longin, "\"}");
    cr_assert_eq(status_of(p, "POST", E, NULL, longin, "input_too_long"), 422);
    /* the server is fine afterwards */
    cr_assert_eq(status_of(p, "POST", E, NULL, "{\"input\":\"still alive\"}", NULL), 200);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- models and admin */

static json_t *model_of(json_t *j) { return json_object_get(j, "model"); }

Test(ctl, models_list_load_unload_memory_back_to_baseline, .timeout = 90) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start(&c);
    registry_t *reg = api_serve_registry(s.srv);
    size_t baseline = registry_used(reg);
    char *m0 = scrape(s.port);
    double base_metric = metric(m0, "sluice_memory_used_bytes{device=\"cpu\"}");
    free(m0);
    cr_assert_eq(base_metric, (double)baseline);

    int st;
    json_t *j = json_of(s.port, "GET", "/v1/models", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "id")), MODEL);
    cr_assert_str_eq(json_string_value(json_object_get(m, "state")), "unloaded");
    cr_assert_str_eq(json_string_value(json_object_get(m, "backend")), "cpu");
    cr_assert_str_eq(json_string_value(json_object_get(m, "precision")), "fp32");
    const char *fields[] = {"weight_bytes", "workspace_bytes", "requests", "errors"};
    for (int i = 0; i < 4; i++) cr_assert(json_is_integer(json_object_get(m, fields[i])), "%s", fields[i]);
    cr_assert(json_is_null(json_object_get(m, "last_error")));
    json_decref(j);

    /* a load not done within ?timeout_ms answers 202 with the state so far */
    j = json_of(s.port, "POST", "/v1/models/" MODEL "/load?timeout_ms=0", NULL, NULL, &st);
    cr_assert_eq(st, 202);
    cr_assert(strcmp(json_string_value(json_object_get(model_of(j), "state")), "ready"));
    json_decref(j);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/load?timeout_ms=-1", NULL, NULL, "invalid_value"), 400);
    j = json_of(s.port, "POST", "/v1/models/" MODEL "/load", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(json_string_value(json_object_get(model_of(j), "state")), "ready");
    cr_assert_gt(json_integer_value(json_object_get(model_of(j), "weight_bytes")), 1000000);
    json_decref(j);
    cr_assert_gt(registry_used(reg), baseline);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"loaded\"}", NULL), 200);
    j = json_of(s.port, "GET", "/v1/models/" MODEL, NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(model_of(j), "requests")), 1);
    json_decref(j);

    j = json_of(s.port, "POST", "/v1/models/" MODEL "/unload", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(json_string_value(json_object_get(model_of(j), "state")), "unloaded");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "memory"), "used_bytes")), (json_int_t)baseline);
    json_decref(j);
    cr_assert_eq(registry_used(reg), baseline, "unload left %zu bytes over the baseline", registry_used(reg) - baseline);
    char *m1 = scrape(s.port);
    cr_assert_eq(metric(m1, "sluice_memory_used_bytes{device=\"cpu\"}"), (double)baseline);
    cr_assert_eq(metric(m1, "sluice_model_memory_bytes{model=\"" MODEL "\",device=\"cpu\",kind=\"weights\"}"), 0);
    cr_assert_eq(metric(m1, "sluice_model_state{model=\"" MODEL "\",state=\"unloaded\"}"), 1);
    free(m1);
    /* a request after the unload loads it again lazily */
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"again\"}", NULL), 200);

    cr_assert_eq(status_of(s.port, "POST", "/v1/models/nope/load", NULL, NULL, "model_not_found"), 404);
    cr_assert_eq(status_of(s.port, "GET", "/v1/models/nope", NULL, NULL, "model_not_found"), 404);
    cr_assert_eq(status_of(s.port, "GET", "/v1/models/" MODEL "/load", NULL, NULL, "method_not_allowed"), 405);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models", NULL, NULL, "method_not_allowed"), 405);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/reload", NULL, NULL, "not_found"), 404);
    support_server_stop(&s);
}

Test(ctl, model_too_big_for_the_budget_answers_507_on_load, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.host_memory_budget = (size_t)32 << 20;
    support_server_t s = start(&c);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/load", NULL, NULL, "model_too_large"), 507);
    int st;
    json_t *j = json_of(s.port, "GET", "/v1/models", NULL, NULL, &st);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "state")), "failed");
    cr_assert(strstr(json_string_value(json_object_get(m, "last_error")), "budget"));
    json_decref(j);
    support_server_stop(&s);
}

/* Does the JSON text of j hold word? */
static int json_says(json_t *j, const char *word) {
    char *t = json_dumps(j, 0);
    int yes = t && strstr(t, word);
    free(t);
    return yes;
}

Test(ctl, pause_resume_drain_and_readiness, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start(&c);
    const char *emb = "{\"input\":\"admin\"}";
    int st;
    json_t *j = json_of(s.port, "GET", "/readyz", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    j = json_of(s.port, "POST", "/v1/admin/pause", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert(json_is_true(json_object_get(j, "paused")));
    json_decref(j);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, emb, "not_accepting_work"), 503);
    j = json_of(s.port, "GET", "/readyz", NULL, NULL, &st);
    cr_assert_eq(st, 503);
    cr_assert(json_says(j, "paused"), "readyz does not say paused");
    json_decref(j);
    cr_assert_eq(status_of(s.port, "GET", "/healthz", NULL, NULL, NULL), 200);
    j = json_of(s.port, "POST", "/v1/admin/resume", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert(json_is_false(json_object_get(j, "paused")));
    json_decref(j);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, emb, NULL), 200);
    j = json_of(s.port, "POST", "/v1/admin/drain?timeout_ms=5000", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert(json_is_true(json_object_get(j, "drained")) && json_is_true(json_object_get(j, "draining")));
    json_decref(j);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, emb, "not_accepting_work"), 503);
    j = json_of(s.port, "GET", "/readyz", NULL, NULL, &st);
    cr_assert_eq(st, 503);
    cr_assert(json_says(j, "draining"), "readyz does not say draining");
    json_decref(j);
    cr_assert_eq(status_of(s.port, "POST", "/v1/admin/drain?timeout_ms=x", NULL, NULL, "invalid_value"), 400);
    cr_assert_eq(status_of(s.port, "POST", "/v1/admin/resume", NULL, NULL, NULL), 200);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, emb, NULL), 200);
    cr_assert_eq(status_of(s.port, "GET", "/v1/admin/pause", NULL, NULL, "method_not_allowed"), 405);
    cr_assert_eq(status_of(s.port, "POST", "/v1/admin/reboot", NULL, NULL, "not_found"), 404);
    support_server_stop(&s);
}

Test(ctl, config_get_and_patch_live_validated, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start(&c);
    int st;
    json_t *j = json_of(s.port, "GET", "/v1/admin/config", NULL, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_batch_seqs")), c.max_batch_seqs);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_queue_delay_ms")), c.max_queue_delay_ms);
    json_decref(j);
    j = json_of(s.port, "PATCH", "/v1/admin/config", NULL,
                "{\"max_batch_seqs\":4,\"max_batch_tokens\":512,\"max_queue_delay_ms\":2}", &st);
    cr_assert_eq(st, 200);
    json_decref(j);
    batcher_limits_t l;
    batcher_get_limits(api_serve_batcher(s.srv), &l);
    cr_assert(l.max_batch_seqs == 4 && l.max_batch_tokens == 512 && l.max_queue_delay_us == 2000);
    j = json_of(s.port, "GET", "/v1/admin/config", NULL, NULL, &st);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_batch_tokens")), 512);
    json_decref(j);
    /* refused: wrong type, unknown field, out of range, above the workspace; nothing applied */
    struct { const char *body, *code; int status; } bad[] = {
        {"{\"max_batch_seqs\":\"8\"}", "invalid_type", 400},
        {"{\"max_batch_seqs\":1.5}", "invalid_type", 400},
        {"{\"port\":1}", "unknown_field", 400},
        {"{\"max_batch_seqs\":0}", "invalid_value", 422},
        {"{\"max_batch_seqs\":8,\"max_queue_delay_ms\":999999}", "invalid_value", 422},
        {"{\"max_batch_seqs\":100000}", "invalid_value", 422},
        {"{}", "invalid_json", 400},
        {"not json", "invalid_json", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(status_of(s.port, "PATCH", "/v1/admin/config", NULL, bad[i].body, bad[i].code), bad[i].status,
                     "%s", bad[i].body);
    batcher_get_limits(api_serve_batcher(s.srv), &l);
    cr_assert(l.max_batch_seqs == 4 && l.max_queue_delay_us == 2000, "a refused PATCH changed the limits");
    cr_assert_eq(status_of(s.port, "POST", "/v1/admin/config", NULL, "{}", "method_not_allowed"), 405);
    /* the new limit holds: 10 inputs run in batches of at most 4 */
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL,
                           "{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\"]}", NULL), 200);
    batcher_stats_t bs;
    batcher_stats(api_serve_batcher(s.srv), &bs);
    cr_assert_leq(bs.max_batch_seqs_seen, 4);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- cache */

Test(ctl, result_cache_hits_and_misses, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.cache_ttl_ms = 60000;
    support_server_t s = start(&c);
    http_resp_t a, b, d;
    char hdr[16];
    cr_assert_eq(req(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"cache me\",\"priority\":1}", &a), 200);
    cr_assert_null(http_header(&a, "X-Cache", hdr, sizeof hdr));
    cr_assert_eq(req(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"cache me\"}", &b), 200);
    cr_assert(http_header(&b, "X-Cache", hdr, sizeof hdr) && !strcmp(hdr, "hit"));
    cr_assert_eq(a.body_len, b.body_len);
    cr_assert_eq(memcmp(a.body, b.body, a.body_len), 0);
    cr_assert_eq(req(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"cache me\",\"dimensions\":8}", &d), 200);
    cr_assert_null(http_header(&d, "X-Cache", hdr, sizeof hdr));
    http_resp_free(&a), http_resp_free(&b), http_resp_free(&d);
    batcher_stats_t bs;
    batcher_stats(api_serve_batcher(s.srv), &bs);
    cr_assert_eq(bs.items_ok, 2, "the hit was computed");
    char *m = scrape(s.port);
    cr_assert_eq(metric(m, "sluice_cache_hits_total"), 1);
    cr_assert_eq(metric(m, "sluice_cache_misses_total"), 2);
    cr_assert_eq(metric(m, "sluice_cache_entries"), 2);
    free(m);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- Redis: ids, logs, metrics */

static support_redis_t redis;
static void redis_start(void) { cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err); }
static void redis_stop(void) { support_redis_stop(&redis); }

/* A server with config c on the test's redis-server, serving queue q, once its intake is up. */
static support_server_t start_on_redis(api_config_t *c, const char *q) {
    snprintf(c->redis, sizeof c->redis, "%s", redis.url);
    snprintf(c->queue, sizeof c->queue, "%s", q);
    support_server_t s = start(c);
    for (int i = 0; i < 200 && api_serve_queue_up(s.srv) != 1; i++) sleep_ms(10);
    cr_assert_eq(api_serve_queue_up(s.srv), 1, "the Redis intake never came up");
    return s;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = malloc((size_t)n + 1);
    size_t got = fread(t, 1, (size_t)n, f);
    t[got] = '\0';
    fclose(f);
    return t;
}

/* The log line (JSON) holding all of needles, or NULL. */
static json_t *log_line_with(const char *log, const char *const *needles) {
    char *text = slurp(log);
    json_t *found = NULL;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
        int all = 1;
        for (const char *const *n = needles; *n; n++)
            if (!strstr(line, *n)) all = 0;
        if (all) found = json_loads(line, 0, NULL);
    }
    free(text);
    return found;
}

Test(ctl, request_id_and_traceparent_from_http_through_redis_to_result_and_logs, .init = redis_start,
     .fini = redis_stop, .timeout = 90) {
    const char *extra[] = {"--redis", redis.url, "--queue", "ctlq", "--log-level", "info", NULL};
    support_proc_t p;
    cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
    const char *rid = "rid-roundtrip-42";
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const char *hdrs[] = {"X-Request-ID: rid-roundtrip-42", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL};
    http_resp_t r;
    const char *body = "{\"input\":\"trace me through redis\"}";
    /* the queue's connections come up in the background */
    int st = 0;
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(http_request(p.port, "POST", "/v1/tasks", hdrs, body, strlen(body), &r, 10000), 0);
        st = r.status;
        if (st == 202) break;
        http_resp_free(&r);
        sleep_ms(50);
    }
    cr_assert_eq(st, 202, "POST /v1/tasks -> %d", st);
    char echoed[80];
    cr_assert(http_header(&r, "X-Request-ID", echoed, sizeof echoed));
    cr_assert_str_eq(echoed, rid);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    char id[QUEUE_ID_MAX];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    http_resp_free(&r);
    /* in the Redis task */
    char err[256];
    queue_conn_t *qcn = support_redis_queue(&redis, "ctlq", err, sizeof err);
    cr_assert(qcn, "%s", err);
    queue_info_t info;
    cr_assert_eq(queue_get(qcn, id, &info), 0);
    queue_payload_t pl;
    cr_assert_eq(queue_payload_parse(info.payload, info.payload_len, &pl, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(pl.request_id, rid);
    cr_assert_str_eq(pl.traceparent, tp);
    queue_payload_clear(&pl);
    queue_info_clear(&info);
    queue_close(qcn);
    /* the result */
    char path[200];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=20", id);
    cr_assert_eq(http_request(p.port, "GET", path, hdrs, NULL, 0, &r, 30000), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "done", "%s", r.body);
    cr_assert(json_is_array(json_object_get(json_object_get(j, "result"), "data")), "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(j, "request_id")), rid);
    cr_assert_str_eq(json_string_value(json_object_get(j, "traceparent")), tp);
    json_decref(j);
    http_resp_free(&r);
    /* an HTTP embedding with the same ids, and one without: a 32-hex id is made */
    cr_assert_eq(http_request(p.port, "POST", "/v1/embeddings", hdrs, body, strlen(body), &r, 30000), 0);
    cr_assert_eq(r.status, 200);
    http_resp_free(&r);
    cr_assert_eq(http_request(p.port, "GET", "/healthz", NULL, NULL, 0, &r, 5000), 0);
    cr_assert(http_header(&r, "X-Request-ID", echoed, sizeof echoed));
    cr_assert_eq(strlen(echoed), 32);
    http_resp_free(&r);
    /* an invalid traceparent is dropped, not carried */
    const char *bad_tp[] = {"X-Request-ID: rid-badtrace", "traceparent: 00-XYZ-00-01", NULL};
    cr_assert_eq(http_request(p.port, "POST", "/v1/embeddings", bad_tp, body, strlen(body), &r, 30000), 0);
    cr_assert_eq(r.status, 200);
    http_resp_free(&r);
    sleep_ms(300);
    /* the logs (read before the stop removes them): the task line and the
     * request line carry request id, traceparent, model, batch id */
    const char *task_needles[] = {"\"msg\":\"task\"", "rid-roundtrip-42", NULL};
    json_t *t = log_line_with(p.log, task_needles);
    cr_assert(t, "no task log line with the request id in %s", p.log);
    cr_assert_str_eq(json_string_value(json_object_get(t, "traceparent")), tp);
    cr_assert_str_eq(json_string_value(json_object_get(t, "model")), MODEL);
    cr_assert_str_eq(json_string_value(json_object_get(t, "outcome")), "ok");
    cr_assert(json_integer_value(json_object_get(t, "batch_id")) > 0);
    cr_assert(json_is_number(json_object_get(t, "compute_s")) && json_is_number(json_object_get(t, "queue_wait_s")));
    cr_assert(json_is_string(json_object_get(t, "time")) && json_is_string(json_object_get(t, "level")));
    json_decref(t);
    const char *req_needles[] = {"\"msg\":\"request\"", "/v1/embeddings", "rid-roundtrip-42", NULL};
    t = log_line_with(p.log, req_needles);
    cr_assert(t, "no request log line");
    cr_assert_str_eq(json_string_value(json_object_get(t, "traceparent")), tp);
    cr_assert(json_integer_value(json_object_get(t, "batch_id")) > 0);
    cr_assert(json_is_number(json_object_get(t, "duration_s")));
    json_decref(t);
    const char *post_needles[] = {"\"msg\":\"request\"", "\"path\":\"/v1/tasks\"", "rid-roundtrip-42", NULL};
    t = log_line_with(p.log, post_needles);
    cr_assert(t, "no request log line for POST /v1/tasks");
    json_decref(t);
    const char *bad_needles[] = {"rid-badtrace", NULL};
    t = log_line_with(p.log, bad_needles);
    cr_assert(t);
    cr_assert_null(json_object_get(t, "traceparent"));
    json_decref(t);
    cr_assert_eq(support_proc_stop(&p, SIGTERM, 20000), 0);
}

Test(ctl, metrics_parse_as_prometheus_exposition, .init = redis_start, .fini = redis_stop, .timeout = 400) {
    api_config_t c;
    support_server_config(&c);
    c.cache_ttl_ms = 1000;
    support_server_t s = start_on_redis(&c, "mq");
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":[\"one\",\"two\"]}", NULL), 200);
    cr_assert_eq(status_of(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":5}", NULL), 400);
    cr_assert_eq(status_of(s.port, "POST", "/v1/tasks", NULL, "{\"input\":\"queued\"}", NULL), 202);
    cr_assert_eq(status_of(s.port, "GET", "/v1/tasks/nope", NULL, NULL, NULL), 404);
    char *m = scrape(s.port);
    const char *must[] = {"sluice_queue_depth{queue=\"mq\",state=\"ready\"}", "sluice_queue_tasks_total{queue=\"mq\",event=\"enqueued\"}",
                          "sluice_redis_reconnects_total", "sluice_redis_errors_total", "sluice_pending_items",
                          "sluice_memory_budget_bytes{device=\"cpu\"}", "sluice_requests_total{route=\"/v1/tasks/{id}\",status=\"404\"}"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) cr_assert_geq(metric(m, must[i]), 0, "no %s", must[i]);
    char file[] = "/tmp/sluice-metrics-XXXXXX";
    int fd = mkstemp(file);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, m, strlen(m)), (ssize_t)strlen(m));
    close(fd);
    free(m);
    support_server_stop(&s);
    const char *build = getenv("SLUICE_BUILD_DIR") ? getenv("SLUICE_BUILD_DIR") : "build";
    char cmd[1024];
    /* prometheus_client strips _total from counter family names */
    snprintf(cmd, sizeof cmd,
             "sh tests/tools/prom_check.sh %s %s sluice_requests sluice_request_duration_seconds sluice_compute_seconds "
             "sluice_queue_wait_seconds sluice_batch_size sluice_batch_tokens sluice_pending_items sluice_queue_depth "
             "sluice_queue_tasks sluice_memory_used_bytes sluice_memory_budget_bytes sluice_model_memory_bytes "
             "sluice_auth_rejections sluice_rate_limited sluice_redis_reconnects sluice_redis_errors sluice_cache_hits "
             "sluice_cache_misses 2>&1",
             file, build);
    FILE *pp = popen(cmd, "r");
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, pp);
    out[n] = '\0';
    int rc = pclose(pp);
    unlink(file);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "prom-check: ok"), "%s", out);
}

/* Embedding requests in flight while the model is unloaded: every one is answered,
 * and the unload waits for their batches. */
typedef struct {
    int port, status;
} flight_t;

static void *embed_thread(void *arg) {
    flight_t *f = arg;
    http_resp_t r;
    const char *body = "{\"input\":[\"in flight one\",\"in flight two\",\"in flight three\",\"four\"]}";
    if (http_request(f->port, "POST", "/v1/embeddings", NULL, body, strlen(body), &r, 60000) == 0) f->status = r.status;
    http_resp_free(&r);
    return NULL;
}

Test(ctl, unload_with_requests_in_flight_answers_them_all, .timeout = 90) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start(&c);
    registry_t *reg = api_serve_registry(s.srv);
    size_t baseline = registry_used(reg);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/load", NULL, NULL, NULL), 200);
    enum { N = 8 };
    flight_t f[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        f[i] = (flight_t){s.port, 0};
        pthread_create(&th[i], NULL, embed_thread, &f[i]);
    }
    sleep_ms(20);
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/unload", NULL, NULL, NULL), 200);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(f[i].status, 200, "request %d in flight during the unload got %d", i, f[i].status);
    }
    /* work that arrived after the unload loaded it again; a last unload returns to the baseline */
    cr_assert_eq(status_of(s.port, "POST", "/v1/models/" MODEL "/unload", NULL, NULL, NULL), 200);
    cr_assert_eq(registry_used(reg), baseline);
    support_server_stop(&s);
}

Test(ctl, redis_outage_counted_in_reconnects_and_errors, .init = redis_start, .fini = redis_stop, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    snprintf(c.log_level, sizeof c.log_level, "error");
    support_server_t s = start_on_redis(&c, "oq");
    char *m = scrape(s.port);
    cr_assert_eq(metric(m, "sluice_redis_reconnects_total"), 0);
    cr_assert_geq(metric(m, "sluice_queue_depth{queue=\"oq\",state=\"ready\"}"), 0);
    free(m);
    cr_assert_eq(support_redis_restart(&redis, 1), 0, "%s", redis.err);
    /* the intake notices, reconnects with backoff (generous: CI machines are loaded) */
    int64_t waited = 0;
    double reconnects = 0;
    while (waited < 60000) {
        m = scrape(s.port);
        reconnects = metric(m, "sluice_redis_reconnects_total");
        double errors = metric(m, "sluice_redis_errors_total");
        free(m);
        if (reconnects >= 1 && errors >= 1 && api_serve_queue_up(s.srv) == 1) break;
        sleep_ms(100);
        waited += 100;
    }
    cr_assert_geq(reconnects, 1, "no reconnect counted after a Redis restart");
    m = scrape(s.port);
    cr_assert_geq(metric(m, "sluice_redis_errors_total"), 1);
    cr_assert_geq(metric(m, "sluice_queue_depth{queue=\"oq\",state=\"ready\"}"), 0, "no depth after the reconnect");
    free(m);
    support_server_stop(&s);
}

Test(ctl, sighup_reloads_the_key_file, .timeout = 60) {
    char path[64], keys[2][96];
    key_spec_t spec[] = {{"first", "infer", 0, 0}};
    make_keys(path, sizeof path, spec, 1, keys);
    const char *extra[] = {"--key-file", path, "--log-level", "info", NULL};
    support_proc_t p;
    cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
    cr_assert_eq(status_of(p.port, "GET", "/v1/models", keys[0], NULL, NULL), 200);
    cr_assert_eq(api_key_generate(keys[1], 96), 0);
    char err[256];
    cr_assert_eq(api_keys_append(path, "second", keys[1], API_SCOPE_ADMIN, 0, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(status_of(p.port, "GET", "/v1/models", keys[1], NULL, "invalid_api_key"), 401);
    kill(p.pid, SIGHUP);
    int st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        sleep_ms(20);
        st = status_of(p.port, "GET", "/v1/admin/config", keys[1], NULL, NULL);
    }
    cr_assert_eq(st, 200, "the new key does not work after SIGHUP");
    /* a broken file is refused and the keys in use stay */
    FILE *f = fopen(path, "a");
    fprintf(f, "third sha256:nothex scopes=infer\n");
    fclose(f);
    kill(p.pid, SIGHUP);
    sleep_ms(200);
    cr_assert_eq(status_of(p.port, "GET", "/v1/admin/config", keys[1], NULL, NULL), 200);
    cr_assert_eq(status_of(p.port, "GET", "/v1/models", keys[0], NULL, NULL), 200);
    const char *needles[] = {"keys not reloaded", "line 3", NULL};
    json_t *l = log_line_with(p.log, needles);
    cr_assert(l, "no log line about the refused reload");
    json_decref(l);
    /* request lines name the key, never show it */
    const char *kn[] = {"\"msg\":\"request\"", "\"key\":\"second\"", NULL};
    l = log_line_with(p.log, kn);
    cr_assert(l, "no request line naming the key");
    json_decref(l);
    char *all = slurp(p.log);
    cr_assert_null(strstr(all, keys[1] + 10), "a key in the log");
    cr_assert_null(strstr(all, keys[0] + 10), "a key in the log");
    free(all);
    cr_assert_eq(support_proc_stop(&p, SIGTERM, 20000), 0);
    unlink(path);
}

Test(ctl, signed_tasks_run_and_unsigned_ones_are_refused, .init = redis_start, .fini = redis_stop, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    snprintf(c.task_signing_key, sizeof c.task_signing_key, "a shared secret");
    support_server_t s = start_on_redis(&c, "sq");
    int st;
    json_t *j = json_of(s.port, "POST", "/v1/tasks", NULL, "{\"input\":\"signed by the server\"}", &st);
    cr_assert_eq(st, 202);
    char path[200];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=20", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    j = json_of(s.port, "GET", path, NULL, NULL, &st);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "done");
    json_decref(j);
    /* a stranger writing to Redis without the key */
    char err[256], id[QUEUE_ID_MAX];
    queue_conn_t *qcn = support_redis_queue(&redis, "sq", err, sizeof err);
    cr_assert(qcn, "%s", err);
    char *payload = queue_payload_build(MODEL, "embed", "\"not signed\"", NULL, NULL, err, sizeof err);
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    int outcome;
    cr_assert_eq(queue_enqueue(qcn, &task, id, &outcome), 0, "%s", queue_last_error(qcn));
    free(payload);
    queue_info_t info = {0};
    for (int i = 0; i < 200; i++) {
        queue_info_clear(&info);
        cr_assert_eq(queue_get(qcn, id, &info), 0);
        if (queue_state_is_terminal(info.state)) break;
        sleep_ms(50);
    }
    cr_assert_eq(info.state, QUEUE_S_DLQ, "unsigned task ended %s", queue_state_name(info.state));
    cr_assert_null(info.result, "an unsigned task was computed");
    queue_info_clear(&info);
    queue_close(qcn);
    support_server_stop(&s);
}
