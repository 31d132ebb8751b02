/* api/http/ctl.c - keys, scopes, rate limits and body shape at the door; the
 * cache and the per-route metrics around the work. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/http/auth.h"
#include "api/http/cache.h"
#include "api/http/ctl.h"
#include "api/http/metrics.h"
#include "api/http/ratelimit.h"
#include "api/log.h"
#include "batcher/batcher.h"
#include "kernels/util.h"

struct api_ctl {
    api_config_t cfg;
    pthread_rwlock_t keys_lock; /* keys, rl, anon_bucket: swapped by a reload (SIGHUP) */
    api_keys_t *keys;          /* NULL: no key file */
    api_ratelimit_t *rl;       /* bucket per key, the last for requests without a key */
    int anon_bucket;
    api_metrics_t *metrics;
    api_cache_t *cache;        /* NULL: off */
};

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

int api_ctl_key_is_admin(api_ctl_t *c, int key) {
    if (!c || key < 0) return 0;
    pthread_rwlock_rdlock(&c->keys_lock);
    const api_key_t *k = key < api_keys_count(c->keys) ? api_keys_get(c->keys, key) : NULL;
    int admin = k && (k->scopes & API_SCOPE_ADMIN);
    pthread_rwlock_unlock(&c->keys_lock);
    return admin;
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

int api_ctl_create(const api_config_t *cfg, int n_models, const api_route_t *routes, int n_routes, api_ctl_t **out,
                   char *err, size_t errlen) {
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
    if (api_metrics_create(n_models, routes, n_routes, &c->metrics)) {
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

static int gate_locked(api_ctl_t *c, const api_route_match_t *m, const char *method, const char *path,
                       const char *h, int64_t now_ns, api_gate_t *g);

int api_ctl_gate(api_ctl_t *c, const api_route_match_t *m, const char *method, const char *path,
                 const char *authorization, int64_t now_ns, api_gate_t *g) {
    memset(g, 0, sizeof *g);
    g->key = -1;
    if (!c) return 0;
    pthread_rwlock_rdlock(&c->keys_lock);
    int rc = gate_locked(c, m, method, path, authorization, now_ns, g);
    pthread_rwlock_unlock(&c->keys_lock);
    return rc;
}

static int refuse(api_gate_t *g, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(api_gate_t *g, unsigned status, const char *code, const char *fmt, ...) {
    g->status = status;
    g->code = code;
    va_list ap;
    va_start(ap, fmt);
    util_verrf(g->message, sizeof g->message, fmt, ap);
    va_end(ap);
    return 1;
}

static int gate_locked(api_ctl_t *c, const api_route_match_t *m, const char *method, const char *path,
                       const char *h, int64_t now_ns, api_gate_t *g) {
    unsigned need = api_route_scope(m, c->cfg.auth_probes);
    if (c->keys && need) {
        if (!h || strncasecmp(h, "Bearer ", 7) || !h[7]) {
            api_metrics_auth_reject(c->metrics, API_AUTH_MISSING);
            return refuse(g, 401, "missing_api_key", "this route needs an API key: send Authorization: Bearer <key>");
        }
        const char *key = h + 7;
        while (*key == ' ') key++;
        int idx = api_keys_lookup(c->keys, key, strlen(key));
        if (idx < 0) {
            api_metrics_auth_reject(c->metrics, API_AUTH_INVALID);
            return refuse(g, 401, "invalid_api_key", "the API key is not valid");
        }
        const api_key_t *k = api_keys_get(c->keys, idx);
        g->key = idx;
        snprintf(g->key_name, sizeof g->key_name, "%s", k->name);
        if (!(k->scopes & need)) {
            char have[32];
            api_metrics_auth_reject(c->metrics, API_AUTH_SCOPE);
            return refuse(g, 403, "insufficient_scope", "key %s has scope %s; %s %s needs %s", k->name,
                          api_scopes_name(k->scopes, have, sizeof have), method, path,
                          need == API_SCOPE_ADMIN ? "admin" : need == API_SCOPE_INFER ? "infer" : "infer or admin");
        }
    }
    if (!api_route_is_probe(m)) {
        int retry = 1;
        int rc = api_ratelimit_take(c->rl, g->key >= 0 ? g->key : c->anon_bucket, now_ns, &retry);
        if (rc != API_RL_OK) {
            api_metrics_rate_limited(c->metrics, rc);
            g->retry_after_s = retry;
            return refuse(g, 429, "rate_limited", "rate limit of this key reached (%s per second); retry in %d s",
                          rc == API_RL_TOKENS ? "input tokens" : "requests", retry);
        }
    }
    return 0;
}

int api_ctl_body_too_deep(api_ctl_t *c, const char *body, size_t len, int *depth, int *limit) {
    if (!c || !len || c->cfg.max_json_depth <= 0) return 0;
    *depth = api_json_depth(body, len);
    *limit = c->cfg.max_json_depth;
    return *depth > *limit;
}

void api_ctl_charge_tokens(api_ctl_t *c, int key, int64_t now_ns, int tokens) {
    if (!c) return;
    pthread_rwlock_rdlock(&c->keys_lock);
    api_ratelimit_charge(c->rl, key >= 0 ? key : c->anon_bucket, now_ns, tokens);
    pthread_rwlock_unlock(&c->keys_lock);
}

void api_ctl_note_response(api_ctl_t *c, int label, unsigned status, double seconds) {
    if (c) api_metrics_request(c->metrics, label, status, seconds);
}
