/* api/http/probes.c - GET /healthz, /readyz (what is not ready, and why) and
 * /metrics (Prometheus text: the batcher's and the HTTP server's series here,
 * the per-route, per-model, queue and control-plane ones from
 * api/http/metrics.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/ctl.h"
#include "api/http/http.h"
#include "api/http/metrics.h"
#include "api/http/routes.h"
#include "api/redis/tasks.h"


int api_route_healthz(api_req_t *r) {
    return api_respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

int api_route_readyz(api_req_t *r) {
    api_ctx_t *s = r->ctx;
    json_t *models = json_object();
    int ready = !api_http_stopping(s->http);
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
        if (api_config_preloads(s->cfg, info.name) && info.state != REGISTRY_READY) {
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
                             "redis", q < 0 ? "off" : q ? "up" : "down", "name", s->cfg->queue,
                             "device", registry_device_name(s->reg), "not_ready", why);
    return api_respond_json(r, ready ? 200 : 503, body);
}

/* Prometheus text: the batcher and HTTP counters (the metrics issue extends this). */
int api_route_metrics(api_req_t *r) {
    api_ctx_t *s = r->ctx;
    batcher_stats_t b;
    batcher_stats(s->bat, &b);
    api_http_stats_t h;
    api_http_stats(s->http, &h);
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
    api_metrics_sources_t src = {.reg = s->reg, .bat = s->bat, .tasks = s->tasks, .cache = api_ctl_cache(s->ctl),
                                 .sched = s->sched, .sched_stats = s->sched_ops ? s->sched_ops->stats : NULL};
    api_metrics_append(api_ctl_metrics(s->ctl), &src, &t, &n, &cap);
    return api_respond_raw(r, 200, t, n, "text/plain; version=0.0.4");
}

