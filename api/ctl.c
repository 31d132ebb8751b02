/* api/ctl.c - keys, scopes, rate limits, body shape and tracing at the door;
 * the cache and the per-route metrics around the work. */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/auth.h"
#include "api/cache.h"
#include "api/ctl.h"
#include "api/http.h"
#include "api/log.h"
#include "api/metrics.h"
#include "api/ratelimit.h"

struct api_ctl {
    api_config_t cfg;
    pthread_rwlock_t keys_lock; /* keys, rl, anon_bucket: swapped by a reload (SIGHUP) */
    api_keys_t *keys;          /* NULL: no key file */
    api_ratelimit_t *rl;       /* bucket per key, the last for requests without a key */
    int anon_bucket;
    api_metrics_t *metrics;
    api_cache_t *cache;        /* NULL: off */
    atomic_int watch_stop, watch_running; /* control watchers (api/admin.c) */
};

atomic_int *api_ctl_watch_stop(api_ctl_t *c) { return &c->watch_stop; }
atomic_int *api_ctl_watch_running(api_ctl_t *c) { return &c->watch_running; }

api_metrics_t *api_ctl_metrics(api_ctl_t *c) { return c ? c->metrics : NULL; }
api_cache_t *api_ctl_cache(api_ctl_t *c) { return c ? c->cache : NULL; }

int api_host_is_loopback(const char *host) {
    if (!strcmp(host, "localhost") || !strcmp(host, "::1")) return 1;
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1) return 0;
    return (ntohl(a.s_addr) >> 24) == 127;
}

/* The key table and its rate-limit buckets, from the key file (or none). */
static int build_keys(const api_config_t *cfg, api_keys_t **keys, api_ratelimit_t **rl, char *err, size_t errlen) {
    *keys = NULL;
    *rl = NULL;
    if (cfg->key_file[0] && api_keys_load(cfg->key_file, keys, err, errlen)) return -1;
    int nk = api_keys_count(*keys);
    if (api_ratelimit_create(nk + 1, rl)) {
        api_keys_destroy(*keys);
        *keys = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < nk; i++) {
        const api_key_t *k = api_keys_get(*keys, i);
        api_ratelimit_configure(*rl, i, k->rps > 0 ? k->rps : cfg->rate_limit_rps,
                                k->tokens_per_s > 0 ? k->tokens_per_s : cfg->rate_limit_tokens_per_s);
    }
    api_ratelimit_configure(*rl, nk, cfg->rate_limit_rps, cfg->rate_limit_tokens_per_s);
    return 0;
}

int api_ctl_reload_keys(api_ctl_t *c, char *err, size_t errlen) {
    if (!c || !c->cfg.key_file[0]) {
        snprintf(err, errlen, "no --key-file to reload (authentication cannot be turned on while running)");
        return -1;
    }
    api_keys_t *keys, *old_keys;
    api_ratelimit_t *rl, *old_rl;
    if (build_keys(&c->cfg, &keys, &rl, err, errlen)) return -1; /* the old keys stay */
    pthread_rwlock_wrlock(&c->keys_lock);
    old_keys = c->keys, old_rl = c->rl;
    c->keys = keys, c->rl = rl;
    c->anon_bucket = api_keys_count(keys);
    pthread_rwlock_unlock(&c->keys_lock);
    api_keys_destroy(old_keys);
    api_ratelimit_destroy(old_rl);
    api_log(API_LOG_INFO, "API keys reloaded",
            json_pack("{s:s,s:i}", "key_file", c->cfg.key_file, "keys", api_keys_count(keys)));
    return 0;
}

int api_ctl_create(const api_config_t *cfg, int n_models, api_ctl_t **out, char *err, size_t errlen) {
    *out = NULL;
    api_ctl_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->cfg = *cfg;
    pthread_rwlock_init(&c->keys_lock, NULL);
    if (!cfg->key_file[0] && !api_host_is_loopback(cfg->host)) {
        snprintf(err, errlen,
                 "refusing to listen on %s without API keys: anyone who can reach the port could use it. "
                 "Make a key file (sluice keys add --scope infer --file FILE) and pass --key-file FILE, "
                 "or listen on 127.0.0.1",
                 cfg->host);
        goto fail;
    }
    if (build_keys(cfg, &c->keys, &c->rl, err, errlen)) goto fail;
    int nk = api_keys_count(c->keys);
    c->anon_bucket = nk;
    if (api_metrics_create(n_models, &c->metrics)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->cache_ttl_ms > 0 && cfg->cache_max_entries > 0 &&
        api_cache_create((size_t)cfg->cache_max_entries, cfg->cache_max_bytes, cfg->cache_ttl_ms, &c->cache)) {
        snprintf(err, errlen, "out of memory for the result cache");
        goto fail;
    }
    if (c->keys)
        api_log(API_LOG_INFO, "API keys loaded",
                json_pack("{s:s,s:i,s:b}", "key_file", cfg->key_file, "keys", nk, "probes_need_key", cfg->auth_probes));
    else
        api_log(API_LOG_INFO, "no key file: authentication is off, so the server listens on loopback only",
                json_pack("{s:s}", "host", cfg->host));
    *out = c;
    return 0;
fail:
    api_ctl_destroy(c);
    return -1;
}

static void on_batch(const batcher_batch_info_t *bi, void *user) {
    api_ctl_t *c = user;
    api_metrics_batch(c->metrics, bi->model, bi->compute_s);
    if (api_log_level() <= API_LOG_DEBUG)
        api_log(API_LOG_DEBUG, "batch",
                json_pack("{s:I,s:i,s:s,s:i,s:i,s:i,s:f,s:f,s:b,s:s,s:s}", "batch_id", (json_int_t)bi->batch_id,
                          "model_index", bi->model, "op", batcher_op_name(bi->op), "items", bi->n_items, "sequences",
                          bi->n_seqs, "tokens", bi->n_tokens, "compute_s", bi->compute_s, "pack_s", bi->pack_s,
                          "failed", bi->failed, "request_id", bi->first_request_id, "traceparent",
                          bi->first_traceparent));
}

void api_ctl_attach(api_ctl_t *c, batcher_t *b) {
    if (c && b) batcher_set_batch_hook(b, on_batch, c);
}

void api_ctl_destroy(api_ctl_t *c) {
    if (!c) return;
    api_keys_destroy(c->keys);
    api_ratelimit_destroy(c->rl);
    pthread_rwlock_destroy(&c->keys_lock);
    api_metrics_destroy(c->metrics);
    api_cache_destroy(c->cache);
    free(c);
}

/* ---------------------------------------------------------------- tracing */

static int hex_run(const char *s, int n) {
    int nonzero = 0;
    for (int i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return -1;
        if (s[i] != '0') nonzero = 1;
    }
    return nonzero;
}

int api_traceparent_valid(const char *s) {
    if (!s || strlen(s) != 55) return 0;
    if (strncmp(s, "00-", 3) || s[35] != '-' || s[52] != '-') return 0;
    return hex_run(s + 3, 32) == 1 && hex_run(s + 36, 16) == 1 && hex_run(s + 53, 2) >= 0;
}

void api_ctl_accept_trace(api_req_t *r) {
    const char *tp = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "traceparent");
    /* an invalid one is dropped, as the W3C spec says: the trace restarts here */
    if (tp && api_traceparent_valid(tp)) snprintf(r->traceparent, sizeof r->traceparent, "%s", tp);
}

/* ---------------------------------------------------------------- the door */

int api_json_depth(const char *t, size_t n) {
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = 0;
            continue;
        }
        if (ch == '"') in_str = 1;
        else if (ch == '[' || ch == '{') {
            if (++depth > max) max = depth;
        } else if (ch == ']' || ch == '}') depth--;
    }
    return max;
}

/* The scope a route needs: 0 (open), API_SCOPE_INFER, API_SCOPE_ADMIN, or both bits (either will do). */
static unsigned needed_scope(const api_req_t *r, int probes_need_key) {
    const char *p = r->path;
    if (!strcmp(p, "/healthz") || !strcmp(p, "/readyz") || !strcmp(p, "/metrics"))
        return probes_need_key ? API_SCOPE_INFER | API_SCOPE_ADMIN : 0;
    if (!strncmp(p, "/v1/admin/", 10)) return API_SCOPE_ADMIN;
    if (!strcmp(p, "/v1/models") || (!strncmp(p, "/v1/models/", 11) && !strchr(p + 11, '/')))
        return !strcmp(r->method, "GET") ? API_SCOPE_INFER | API_SCOPE_ADMIN : API_SCOPE_ADMIN;
    if (!strncmp(p, "/v1/models/", 11)) return API_SCOPE_ADMIN;
    return API_SCOPE_INFER;
}

static int is_probe(const char *p) { return !strcmp(p, "/healthz") || !strcmp(p, "/readyz") || !strcmp(p, "/metrics"); }

static int gate_locked(api_ctl_t *c, api_req_t *r, unsigned need);

int api_ctl_gate(api_req_t *r) {
    api_ctl_t *c = api_srv_ctl(r->srv);
    r->key = -1;
    if (!c) return 0;
    unsigned need = needed_scope(r, c->cfg.auth_probes);
    pthread_rwlock_rdlock(&c->keys_lock);
    int rc = gate_locked(c, r, need);
    pthread_rwlock_unlock(&c->keys_lock);
    return rc;
}

static int gate_locked(api_ctl_t *c, api_req_t *r, unsigned need) {
    if (c->keys && need) {
        const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
        if (!h || strncasecmp(h, "Bearer ", 7) || !h[7]) {
            api_metrics_auth_reject(c->metrics, API_AUTH_MISSING);
            api_respond_error(r, 401, "missing_api_key", NULL,
                              "this route needs an API key: send Authorization: Bearer <key>");
            return 1;
        }
        const char *key = h + 7;
        while (*key == ' ') key++;
        int idx = api_keys_lookup(c->keys, key, strlen(key));
        if (idx < 0) {
            api_metrics_auth_reject(c->metrics, API_AUTH_INVALID);
            api_respond_error(r, 401, "invalid_api_key", NULL, "the API key is not valid");
            return 1;
        }
        const api_key_t *k = api_keys_get(c->keys, idx);
        r->key = idx;
        snprintf(r->key_name, sizeof r->key_name, "%s", k->name);
        if (!(k->scopes & need)) {
            char have[32];
            api_metrics_auth_reject(c->metrics, API_AUTH_SCOPE);
            api_respond_error(r, 403, "insufficient_scope", NULL, "key %s has scope %s; %s %s needs %s", k->name,
                              api_scopes_name(k->scopes, have, sizeof have), r->method, r->path,
                              need == API_SCOPE_ADMIN ? "admin" : need == API_SCOPE_INFER ? "infer" : "infer or admin");
            return 1;
        }
    }
    if (!is_probe(r->path)) {
        int retry = 1;
        int rc = api_ratelimit_take(c->rl, r->key >= 0 ? r->key : c->anon_bucket, batcher_now_ns(), &retry);
        if (rc != API_RL_OK) {
            api_metrics_rate_limited(c->metrics, rc);
            r->retry_after_s = retry;
            api_respond_error(r, 429, "rate_limited", NULL, "rate limit of this key reached (%s per second); retry in %d s",
                              rc == API_RL_TOKENS ? "input tokens" : "requests", retry);
            return 1;
        }
    }
    return 0;
}

int api_ctl_check_body(api_req_t *r) {
    api_ctl_t *c = api_srv_ctl(r->srv);
    if (!c || !r->body_len || c->cfg.max_json_depth <= 0) return 0;
    int d = api_json_depth(r->body, r->body_len);
    if (d <= c->cfg.max_json_depth) return 0;
    api_respond_error(r, 400, "nesting_too_deep", NULL, "request body nests %d levels deep; the limit is %d", d,
                      c->cfg.max_json_depth);
    return 1;
}

void api_ctl_charge_tokens(api_req_t *r, int tokens) {
    api_ctl_t *c = api_srv_ctl(r->srv);
    if (!c) return;
    pthread_rwlock_rdlock(&c->keys_lock);
    api_ratelimit_charge(c->rl, r->key >= 0 ? r->key : c->anon_bucket, batcher_now_ns(), tokens);
    pthread_rwlock_unlock(&c->keys_lock);
}

void api_ctl_note_response(api_req_t *r, unsigned status, double seconds) {
    api_ctl_t *c = api_srv_ctl(r->srv);
    if (c) api_metrics_request(c->metrics, r->path, status, seconds);
}

/* ---------------------------------------------------------------- cache */

void api_ctl_cache_key(api_req_t *r, const char *model, const void *json_body, int op) {
    api_ctl_t *c = api_srv_ctl(r->srv);
    if (!c || !c->cache || op != BATCHER_OP_EMBED) return;
    api_cache_key(model, json_body, r->cache_key);
    r->cache_on = 1;
}

int api_ctl_cache_answer(api_req_t *r) {
    if (!r->cache_on) return 0;
    size_t len = 0;
    char *body = api_cache_get(api_ctl_cache(api_srv_ctl(r->srv)), r->cache_key, &len);
    if (!body) return 0;
    r->cache_hit = 1;
    r->cache_on = 0;
    api_respond_raw(r, 200, body, len, "application/json");
    return 1;
}

void api_ctl_cache_store(api_req_t *r, const char *body, size_t len) {
    if (r->cache_on) api_cache_put(api_ctl_cache(api_srv_ctl(r->srv)), r->cache_key, body, len);
}
