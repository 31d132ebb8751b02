/* api/server.c - the HTTP server (libmicrohttpd) and the wiring of `sluice serve`.
 *
 * MHD runs an internal epoll thread pool with suspend/resume: a route handler
 * parses, validates and tokenizes on the HTTP thread, submits work and
 * suspends the connection; the batcher's completion callback only marks the
 * request done and resumes it, and the response is built back on an HTTP
 * thread. So a few HTTP threads hold thousands of open requests and never
 * wait for compute.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/ctl.h"
#include "api/http.h"
#include "api/log.h"
#include "api/metrics.h"
#include "api/server.h"
#include "api/tasks.h"

struct api_serve {
    api_config_t cfg;
    registry_t *reg;
    batcher_t *bat;
    api_tasks_t *tasks;
    api_ctl_t *ctl;      /* keys, rate limits, cache, route metrics (api/ctl.h) */
    struct MHD_Daemon *mhd;
    int port;
    atomic_int stopping;
    int started;   /* api_serve_start got to the end: shutdown logs what it does */
    int shut_down;
    pthread_mutex_t mu; /* guards st, signals quiet */
    pthread_cond_t quiet;
    api_http_stats_t st;
    atomic_ullong rid_counter;
    uint64_t rid_seed;
};

/* ---------------------------------------------------------------- helpers */


const api_config_t *api_srv_config(api_serve_t *s) { return &s->cfg; }
registry_t *api_srv_registry(api_serve_t *s) { return s->reg; }
batcher_t *api_srv_batcher(api_serve_t *s) { return s->bat; }
api_ctl_t *api_srv_ctl(api_serve_t *s) { return s ? s->ctl : NULL; }

void api_srv_note_embed(api_serve_t *s, double request_s, double compute_s) {
    pthread_mutex_lock(&s->mu);
    s->st.embed_requests++;
    s->st.embed_request_s += request_s;
    s->st.embed_compute_s += compute_s;
    pthread_mutex_unlock(&s->mu);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Accept a caller's X-Request-ID when it is short, printable ASCII without
 * quotes or backslashes (it goes into logs and JSON); else make one. */
static void set_request_id(api_serve_t *s, api_req_t *r) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-ID");
    if (h) {
        size_t n = strlen(h);
        int ok = n > 0 && n < sizeof r->request_id;
        for (size_t i = 0; ok && i < n; i++)
            if (h[i] <= 0x20 || h[i] >= 0x7f || h[i] == '"' || h[i] == '\\') ok = 0;
        if (ok) {
            memcpy(r->request_id, h, n + 1);
            return;
        }
    }
    uint64_t c = atomic_fetch_add(&s->rid_counter, 1);
    uint64_t a = splitmix64(s->rid_seed ^ c), b = splitmix64(a ^ c);
    snprintf(r->request_id, sizeof r->request_id, "%016llx%016llx", (unsigned long long)a,
             (unsigned long long)b);
}

const char *api_query(api_req_t *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* ---------------------------------------------------------------- responses */

int api_respond_raw(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type) {
    api_serve_t *s = r->srv;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return API_DONE;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    if (status == 429 || status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after_s > 0 ? r->retry_after_s : 1);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (r->cache_hit) MHD_add_response_header(resp, "X-Cache", "hit");
    if (atomic_load(&s->stopping)) MHD_add_response_header(resp, "Connection", "close");
    MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    r->status = (int)status;
    double dur = (batcher_now_ns() - r->t_start_ns) * 1e-9;
    pthread_mutex_lock(&s->mu);
    s->st.requests++;
    if (status / 100 < 6) s->st.by_class[status / 100]++;
    if (status == 429) s->st.rejected_busy++;
    s->st.request_s += dur;
    pthread_mutex_unlock(&s->mu);
    api_ctl_note_response(r, status, dur);
    /* probes are polled often: their lines only at debug */
    int probe = !strcmp(r->path, "/healthz") || !strcmp(r->path, "/readyz") || !strcmp(r->path, "/metrics");
    api_log_level_t lvl = probe ? API_LOG_DEBUG : status >= 500 ? API_LOG_WARN : API_LOG_INFO;
    if (lvl >= api_log_level()) {
        json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:f,s:s}", "request_id", r->request_id, "method", r->method,
                              "path", r->path, "status", (int)status, "duration_s", dur, "model", r->model_name);
        if (r->traceparent[0]) json_object_set_new(f, "traceparent", json_string(r->traceparent));
        if (r->key_name[0]) json_object_set_new(f, "key", json_string(r->key_name));
        if (r->batch_id) json_object_set_new(f, "batch_id", json_integer((json_int_t)r->batch_id));
        if (r->cache_hit) json_object_set_new(f, "cache", json_string("hit"));
        api_log(lvl, "request", f);
    }
    return API_DONE;
}

int api_respond_json(api_req_t *r, unsigned status, json_t *body) {
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)); /* float32 round-trips */
    json_decref(body);
    if (!text) text = strdup("{}");
    return api_respond_raw(r, status, text, strlen(text), "application/json");
}

static const char *error_type(unsigned status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    case 507: return "insufficient_storage_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

int api_respond_error(api_req_t *r, unsigned status, const char *code, const char *param,
                      const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s,s:s,s:o,s:s}", "message", msg, "type", error_type(status), "param",
                          param ? json_string(param) : json_null(), "code", code ? code : "error");
    if (status >= 500 && api_log_level() <= API_LOG_WARN)
        api_log(API_LOG_WARN, msg, json_pack("{s:s,s:s,s:i}", "request_id", r->request_id, "code",
                                             code ? code : "error", "status", (int)status));
    return api_respond_json(r, status, json_pack("{s:o}", "error", e));
}

unsigned api_status_for_batcher(int err_code, const char **code) {
    switch (err_code) {
    case BATCHER_EINVAL: *code = "invalid_input"; return 400;
    case BATCHER_EBUSY: *code = "queue_full"; return 429;
    case BATCHER_EPAUSED: *code = "not_accepting_work"; return 503;
    case BATCHER_ENOMEM: *code = "model_too_large"; return 507;
    case BATCHER_EMODEL: *code = "model_unavailable"; return 503;
    case BATCHER_ESTOPPED: *code = "shutting_down"; return 503;
    default: *code = "compute_failed"; return 500;
    }
}

void api_req_wake(api_req_t *r) {
    pthread_mutex_lock(&r->mu);
    r->woken = 1;
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- health */

static int route_healthz(api_req_t *r) {
    return api_respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static int route_readyz(api_req_t *r) {
    api_serve_t *s = r->srv;
    json_t *models = json_object();
    int ready = !atomic_load(&s->stopping);
    json_t *why = json_array();
    if (!ready) json_array_append_new(why, json_string("shutting down"));
    for (int i = 0; i < registry_count(s->reg); i++) {
        registry_model_info_t info;
        registry_info(s->reg, i, &info);
        json_t *m = json_pack("{s:s,s:I,s:I,s:I,s:I}", "state", registry_state_name(info.state),
                              "weight_bytes", (json_int_t)info.weight_bytes, "workspace_bytes",
                              (json_int_t)info.workspace_bytes, "requests", (json_int_t)info.requests,
                              "errors", (json_int_t)info.errors);
        if (info.last_error[0]) json_object_set_new(m, "last_error", json_string(info.last_error));
        json_object_set_new(models, info.name, m);
        /* A preloaded model must be ready; lazy ones load on first use. */
        const char *pl = s->cfg.preload;
        int wanted = !strcmp(pl, "all");
        for (const char *p = pl; *p && !wanted;) {
            size_t n = strcspn(p, ",");
            if (n == strlen(info.name) && !strncmp(p, info.name, n)) wanted = 1;
            p += n + (p[n] == ',');
        }
        if (wanted && info.state != REGISTRY_READY) {
            ready = 0;
            char line[300];
            snprintf(line, sizeof line, "model %s is %s", info.name, registry_state_name(info.state));
            json_array_append_new(why, json_string(line));
        }
    }
    batcher_stats_t bs;
    batcher_stats(s->bat, &bs);
    if (bs.paused || bs.draining) {
        ready = 0;
        json_array_append_new(why, json_string(bs.draining ? "draining" : "paused"));
    }
    int q = s->tasks ? api_tasks_up(s->tasks) : -1;
    if (q == 0) {
        ready = 0;
        json_array_append_new(why, json_string("redis queue down (reconnecting)"));
    }
    json_t *body = json_pack("{s:b,s:o,s:{s:s,s:s},s:s,s:o}", "ready", ready, "models", models, "queue",
                             "redis", q < 0 ? "off" : q ? "up" : "down", "name", s->cfg.queue,
                             "device", registry_device_name(s->reg), "not_ready", why);
    return api_respond_json(r, ready ? 200 : 503, body);
}

/* Prometheus text: the batcher and HTTP counters (the metrics issue extends this). */
static int route_metrics(api_req_t *r) {
    api_serve_t *s = r->srv;
    batcher_stats_t b;
    batcher_stats(s->bat, &b);
    api_http_stats_t h;
    api_serve_http_stats(s, &h);
    size_t cap = 16384, n = 0;
    char *t = malloc(cap);
    if (!t) return api_respond_error(r, 500, "oom", NULL, "out of memory");
#define P(...) n += (size_t)snprintf(t + n, n < cap ? cap - n : 0, __VA_ARGS__)
    P("# TYPE sluice_batches_total counter\nsluice_batches_total %llu\n", (unsigned long long)b.batches);
    P("# TYPE sluice_batch_sequences_max gauge\nsluice_batch_sequences_max %d\n", b.max_batch_seqs_seen);
    /* histograms from the batcher's power-of-two buckets */
    uint64_t waits = 0;
    for (int i = 0; i < BATCHER_HIST; i++) waits += b.queue_wait_hist[i];
    struct { const char *name; const uint64_t *h; double first, sum; uint64_t count; } hs[] = {
        {"sluice_batch_size", b.batch_seqs_hist, 1, (double)b.seqs, b.batches},
        {"sluice_batch_tokens", b.batch_tokens_hist, 16, (double)b.tokens, b.batches},
        {"sluice_queue_wait_seconds", b.queue_wait_hist, 1e-4, b.queue_wait_s, waits},
    };
    for (size_t k = 0; k < sizeof hs / sizeof hs[0]; k++) {
        P("# TYPE %s histogram\n", hs[k].name);
        uint64_t cum = 0;
        double edge = hs[k].first;
        for (int i = 0; i < BATCHER_HIST - 1; i++, edge *= 2) {
            cum += hs[k].h[i];
            P("%s_bucket{le=\"%g\"} %llu\n", hs[k].name, edge, (unsigned long long)cum);
        }
        P("%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", hs[k].name, (unsigned long long)hs[k].count,
          hs[k].name, hs[k].sum, hs[k].name, (unsigned long long)hs[k].count);
    }
    P("# TYPE sluice_compute_seconds_total counter\nsluice_compute_seconds_total %.6f\n", b.compute_s);
    P("# TYPE sluice_pack_seconds_total counter\nsluice_pack_seconds_total %.6f\n", b.pack_s);
    P("# TYPE sluice_items_total counter\n");
    P("sluice_items_total{outcome=\"ok\"} %llu\n", (unsigned long long)b.items_ok);
    P("sluice_items_total{outcome=\"expired\"} %llu\n", (unsigned long long)b.items_expired);
    P("sluice_items_total{outcome=\"cancelled\"} %llu\n", (unsigned long long)b.items_cancelled);
    P("sluice_items_total{outcome=\"failed\"} %llu\n", (unsigned long long)b.items_failed);
    P("sluice_items_total{outcome=\"shutdown\"} %llu\n", (unsigned long long)b.items_shutdown);
    P("sluice_items_total{outcome=\"rejected\"} %llu\n", (unsigned long long)b.items_rejected);
    P("# TYPE sluice_pending_items gauge\nsluice_pending_items %d\n", b.pending_items);
    P("# TYPE sluice_http_requests_total counter\n");
    for (int c = 2; c <= 5; c++) P("sluice_http_requests_total{class=\"%dxx\"} %llu\n", c, (unsigned long long)h.by_class[c]);
    P("# TYPE sluice_http_request_seconds_total counter\nsluice_http_request_seconds_total %.6f\n", h.request_s);
    P("# TYPE sluice_embed_requests_total counter\nsluice_embed_requests_total %llu\n", (unsigned long long)h.embed_requests);
    P("# TYPE sluice_embed_request_seconds_total counter\nsluice_embed_request_seconds_total %.6f\n", h.embed_request_s);
    P("# TYPE sluice_embed_compute_seconds_total counter\nsluice_embed_compute_seconds_total %.6f\n", h.embed_compute_s);
    P("# TYPE sluice_memory_used_bytes gauge\nsluice_memory_used_bytes{device=\"%s\"} %zu\n", registry_device_name(s->reg), registry_used(s->reg));
    P("# TYPE sluice_memory_budget_bytes gauge\nsluice_memory_budget_bytes{device=\"%s\"} %zu\n", registry_device_name(s->reg), registry_budget(s->reg));
#undef P
    if (n >= cap) n = cap - 1;
    api_metrics_append(s, api_ctl_metrics(s->ctl), &t, &n, &cap);
    return api_respond_raw(r, 200, t, n, "text/plain; version=0.0.4");
}

/* ---------------------------------------------------------------- MHD callbacks */

static int route(api_req_t *r) {
    const char *p = r->path, *m = r->method;
    int get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
    if (api_ctl_check_body(r)) return API_DONE; /* 400 nesting_too_deep (api/ctl.h) */
    if (!strcmp(p, "/healthz")) return get ? route_healthz(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use GET");
    if (!strcmp(p, "/readyz")) return get ? route_readyz(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use GET");
    if (!strcmp(p, "/metrics")) return get ? route_metrics(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use GET");
    if (atomic_load(&r->srv->stopping))
        return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down");
    if (!strcmp(p, "/v1/embeddings"))
        return post ? api_route_embeddings(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use POST");
    if (!strcmp(p, "/v1/expand"))
        return post ? api_route_expand(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use POST");
    if (!strcmp(p, "/v1/tasks"))
        return post ? api_route_tasks_post(r) : api_respond_error(r, 405, "method_not_allowed", NULL, "use POST");
    if (!strcmp(p, "/v1/models") || !strncmp(p, "/v1/models/", 11) || !strncmp(p, "/v1/admin/", 10))
        return api_route_control(r);
    if (!strncmp(p, "/v1/tasks/", 10) && p[10] && !strchr(p + 10, '/')) {
        if (get) return api_route_tasks_get(r, p + 10);
        if (del) return api_route_tasks_delete(r, p + 10);
        return api_respond_error(r, 405, "method_not_allowed", NULL, "use GET or DELETE");
    }
    return api_respond_error(r, 404, "not_found", NULL, "no route %s %s", r->method, r->path);
}

static void req_free(api_req_t *r) {
    if (r->cleanup) r->cleanup(r);
    pthread_mutex_destroy(&r->mu);
    free(r->body);
    free(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls) {
    (void)version;
    api_serve_t *s = cls;
    api_req_t *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->t_start_ns = batcher_now_ns();
        pthread_mutex_init(&r->mu, NULL);
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        set_request_id(s, r);
        r->key = -1;
        api_ctl_accept_trace(r);
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        s->st.open_requests++;
        pthread_mutex_unlock(&s->mu);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (api_ctl_gate(r)) return MHD_YES; /* 401, 403, 429 before the body is read (api/ctl.h) */
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes) {
            api_respond_error(r, 413, "body_too_large", NULL, "request body of %s bytes is over the limit of %zu bytes",
                              cl, s->cfg.max_body_bytes);
        }
        return MHD_YES;
    }
    if (r->responded) { /* answered early (413): swallow the rest of the body */
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->async) { /* resumed: the work is done */
        pthread_mutex_lock(&r->mu);
        int woken = r->woken;
        pthread_mutex_unlock(&r->mu);
        if (woken) r->finish(r);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->body_too_large) {
            if (r->body_len + *upload_size > s->cfg.max_body_bytes) {
                r->body_too_large = 1;
                free(r->body);
                r->body = NULL;
                r->body_len = r->body_cap = 0;
            } else {
                if (r->body_len + *upload_size + 1 > r->body_cap) {
                    size_t cap = r->body_cap ? r->body_cap : 4096;
                    while (cap < r->body_len + *upload_size + 1) cap *= 2;
                    char *nb = realloc(r->body, cap);
                    if (!nb) return MHD_NO;
                    r->body = nb;
                    r->body_cap = cap;
                }
                memcpy(r->body + r->body_len, upload_data, *upload_size);
                r->body_len += *upload_size;
                r->body[r->body_len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->body_too_large) {
        api_respond_error(r, 413, "body_too_large", NULL, "request body is over the limit of %zu bytes",
                          s->cfg.max_body_bytes);
        return MHD_YES;
    }
    if (!r->body) {
        r->body = strdup("");
        if (!r->body) return MHD_NO;
    }
    if (route(r) == API_ASYNC) {
        r->async = 1;
        pthread_mutex_lock(&r->mu);
        if (!r->woken) {
            MHD_suspend_connection(conn);
            r->suspended = 1;
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&r->mu);
        r->finish(r);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    (void)toe;
    api_serve_t *s = cls;
    api_req_t *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    req_free(r);
    pthread_mutex_lock(&s->mu);
    s->st.open_requests--;
    if (s->st.open_requests == 0) pthread_cond_broadcast(&s->quiet);
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- lifecycle */

static void preload_models(api_serve_t *s) {
    const char *pl = s->cfg.preload;
    if (!*pl) return;
    if (!strcmp(pl, "all")) {
        for (int i = 0; i < registry_count(s->reg); i++) batcher_request_load(s->bat, i);
        return;
    }
    for (const char *p = pl; *p;) {
        size_t n = strcspn(p, ",");
        char name[REGISTRY_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), p);
        int idx = registry_find(s->reg, name);
        if (idx < 0) api_log(API_LOG_WARN, "preload: no such model", json_pack("{s:s}", "model", name));
        else batcher_request_load(s->bat, idx);
        p += n + (p[n] == ',');
    }
}

int api_serve_start(const api_config_t *cfg, api_serve_t **out, char *err, size_t errlen) {
    *out = NULL;
    api_serve_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = *cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->quiet, NULL);
    s->rid_seed = splitmix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)s);
    if (api_log_set_level(cfg->log_level)) {
        snprintf(err, errlen, "log_level must be debug, info, warn or error (got '%s')", cfg->log_level);
        goto fail;
    }

    registry_opts_t ro = {
        .models_dir = cfg->models,
        .device = cfg->device,
        .cpu_threads = cfg->cpu_threads,
        .dtype = cfg->dtype,
        .engine = {.max_batch_tokens = cfg->workspace_tokens, .max_batch_seqs = cfg->workspace_seqs},
    };
    /* The budget flag of the device we end up on; "auto" decides inside. */
    ro.budget = !strcmp(cfg->device, "cpu") ? cfg->host_memory_budget
                : !strcmp(cfg->device, "cuda") ? cfg->gpu_memory_budget
                                               : 0;
    char e2[512];
    if (registry_create(&ro, &s->reg, e2, sizeof e2)) {
        /* auto: retry with the budget of the backend it picked */
        snprintf(err, errlen, "%s", e2);
        goto fail;
    }
    if (!strcmp(cfg->device, "auto")) {
        size_t want = !strcmp(registry_device_name(s->reg), "cuda") ? cfg->gpu_memory_budget
                                                                     : cfg->host_memory_budget;
        if (want && want != registry_budget(s->reg)) {
            registry_destroy(s->reg);
            s->reg = NULL;
            ro.budget = want;
            if (registry_create(&ro, &s->reg, e2, sizeof e2)) {
                snprintf(err, errlen, "%s", e2);
                goto fail;
            }
        }
    }
    if (registry_device_note(s->reg)[0])
        api_log(API_LOG_INFO, registry_device_note(s->reg), NULL);
    if (registry_count(s->reg) == 0)
        api_log(API_LOG_WARN, "no models found", json_pack("{s:s}", "models", cfg->models));
    if (api_ctl_create(cfg, registry_count(s->reg), &s->ctl, err, errlen)) goto fail;

    batcher_limits_t lim = {
        .max_batch_seqs = cfg->max_batch_seqs,
        .max_batch_tokens = cfg->max_batch_tokens,
        .max_queue_delay_us = cfg->max_queue_delay_ms * 1000,
        .max_pending_items = cfg->max_pending_items,
        .max_pending_bytes = cfg->max_pending_bytes,
    };
    if (batcher_create(s->reg, &lim, &s->bat, err, errlen)) goto fail;
    api_ctl_attach(s->ctl, s->bat);
    preload_models(s);

    if (cfg->redis[0] && strcmp(cfg->redis, "none") && strcmp(cfg->redis, "off")) {
        if (api_tasks_start(s, &s->tasks, err, errlen)) goto fail;
    }

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "host must be an IPv4 address (got '%s')", cfg->host);
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO;
    s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_access, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads > 0 ? cfg->http_threads : 1),
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%d (%s)", cfg->host, cfg->port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (cfg->port_file[0]) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", cfg->port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", s->port) < 0 || fclose(f) || rename(tmp, cfg->port_file)) {
            snprintf(err, errlen, "cannot write the port file %s", cfg->port_file);
            goto fail;
        }
    }
    /* the Redis URL may carry a password: log host and port only */
    char redis_where[300] = "off";
    if (s->tasks) {
        const char *at = strrchr(cfg->redis, '@'), *sl = strstr(cfg->redis, "://");
        snprintf(redis_where, sizeof redis_where, "%s", at ? at + 1 : sl ? sl + 3 : cfg->redis);
    }
    api_log(API_LOG_INFO, "listening",
            json_pack("{s:s,s:i,s:s,s:s,s:I,s:i,s:s}", "host", cfg->host, "port", s->port, "device",
                      registry_device_name(s->reg), "precision", registry_precision(s->reg),
                      "memory_budget_bytes", (json_int_t)registry_budget(s->reg), "models",
                      registry_count(s->reg), "redis", redis_where));
    s->started = 1;
    *out = s;
    return 0;
fail:
    api_serve_destroy(s);
    return -1;
}

int api_serve_shutdown(api_serve_t *s, int drain_timeout_ms) {
    if (!s || s->shut_down) return 0;
    s->shut_down = 1;
    int64_t t0 = batcher_now_ns();
    atomic_store(&s->stopping, 1);
    api_ctl_stop_watchers(s->ctl); /* control requests waiting on a load or drain answer 503 */
    if (s->started) api_log(API_LOG_INFO, "shutting down", json_pack("{s:i}", "drain_timeout_ms", drain_timeout_ms));
    if (s->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(s->mhd); /* no new connections */
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    if (s->tasks) api_tasks_stop_intake(s->tasks); /* lease nothing new */
    int left = 0;
    if (s->bat) {
        left = batcher_drain(s->bat, drain_timeout_ms);
        batcher_stop(s->bat); /* what is left: HTTP 503, Redis leases handed back */
    }
    /* Every suspended request has been woken; give the HTTP threads a moment to answer. */
    pthread_mutex_lock(&s->mu);
    int64_t until = batcher_now_ns() + 2000000000LL;
    while (s->st.open_requests > 0 && batcher_now_ns() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->quiet, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->mhd) {
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
    if (s->tasks) {
        api_tasks_destroy(s->tasks); /* flushes acks and lease hand-backs */
        s->tasks = NULL;
    }
    batcher_destroy(s->bat);
    s->bat = NULL;
    if (s->reg) {
        for (int i = 0; i < registry_count(s->reg); i++) registry_unload(s->reg, i);
    }
    if (s->started)
        api_log(API_LOG_INFO, "stopped",
                json_pack("{s:i,s:f}", "unfinished_items", left, "shutdown_s", (batcher_now_ns() - t0) * 1e-9));
    return left;
}

void api_serve_destroy(api_serve_t *s) {
    if (!s) return;
    api_serve_shutdown(s, 0);
    registry_destroy(s->reg);
    api_ctl_destroy(s->ctl);
    pthread_cond_destroy(&s->quiet);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int api_serve_port(const api_serve_t *s) { return s->port; }
registry_t *api_serve_registry(api_serve_t *s) { return s->reg; }
batcher_t *api_serve_batcher(api_serve_t *s) { return s->bat; }

void api_serve_http_stats(api_serve_t *s, api_http_stats_t *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

int api_serve_queue_up(api_serve_t *s) { return s->tasks ? api_tasks_up(s->tasks) : -1; }
int api_serve_reload(api_serve_t *s, char *err, size_t errlen) { return api_ctl_reload_keys(s->ctl, err, errlen); }

/* for api/tasks.c */
api_tasks_t *api_srv_tasks(api_serve_t *s) { return s->tasks; }
