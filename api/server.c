/* api/server.c - `sluice serve` wired together: the registry (device and
 * models), the batcher, the control plane, the HTTP server with its route
 * table, the generation scheduler, and the Redis intake. Every part gets what it needs at creation, in
 * one context (api/http/http.h) for the HTTP room; no part calls back into
 * this file, which owns them all and stops them in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/ctl.h"
#include "api/http/metrics.h"
#include "api/http/http.h"
#include "api/http/routes.h"
#include "api/jobs.h"
#include "api/log.h"
#include "api/redis/tasks.h"
#include "api/server.h"

/* The scheduler's calls, as the intakes take them (api/job.h). */
static const api_sched_ops_t SCHED_OPS = {sched_submit, sched_cancel, sched_stats};

struct api_serve {
    api_config_t cfg;
    api_ctx_t ctx;       /* what the HTTP handlers see: points into this struct */
    registry_t *reg;
    batcher_t *bat;
    sched_t *sched;      /* generation (batcher/sched.h), on the batcher's worker */
    api_jobs_t *jobs;    /* the operations, attached to the batcher */
    api_tasks_t *tasks;  /* NULL: Redis off */
    api_ctl_t *ctl;      /* keys, rate limits, cache, route metrics */
    api_http_t *http;
    int started;         /* api_serve_start got to the end: shutdown logs what it does */
    int shut_down;
};

static void preload_models(api_serve_t *s) {
    if (!strcmp(s->cfg.preload, "all")) {
        for (int i = 0; i < registry_count(s->reg); i++) batcher_request_load(s->bat, i);
        return;
    }
    char name[REGISTRY_NAME_MAX];
    for (int i = 0; !api_config_preload_name(&s->cfg, i, name, sizeof name); i++) {
        int idx = registry_find(s->reg, name);
        if (idx < 0) api_log(API_LOG_WARN, "preload: no such model", json_pack("{s:s}", "model", name));
        else batcher_request_load(s->bat, idx);
    }
}

/* The registry on the device cfg asks for, with that device's budget flag. */
static int open_registry(const api_config_t *cfg, registry_t **out, char *err, size_t errlen) {
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
    if (registry_create(&ro, out, err, errlen)) return -1;
    if (!strcmp(cfg->device, "auto")) { /* auto: again with the budget of the backend it picked */
        size_t want = !strcmp(registry_device_name(*out), "cuda") ? cfg->gpu_memory_budget : cfg->host_memory_budget;
        if (want && want != registry_budget(*out)) {
            registry_destroy(*out);
            *out = NULL;
            ro.budget = want;
            if (registry_create(&ro, out, err, errlen)) return -1;
        }
    }
    return 0;
}

int api_serve_start(const api_config_t *cfg, api_serve_t **out, char *err, size_t errlen) {
    *out = NULL;
    api_serve_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = *cfg;
    cfg = &s->cfg;
    if (api_log_set_level(cfg->log_level)) {
        snprintf(err, errlen, "log_level must be debug, info, warn or error (got '%s')", cfg->log_level);
        goto fail;
    }
    if (open_registry(cfg, &s->reg, err, errlen)) goto fail;
    if (registry_device_note(s->reg)[0]) api_log(API_LOG_INFO, registry_device_note(s->reg), NULL);
    if (registry_count(s->reg) == 0)
        api_log(API_LOG_WARN, "no models found", json_pack("{s:s}", "models", cfg->models));
    if (api_ctl_create(cfg, registry_count(s->reg), api_routes, api_routes_count, &s->ctl, err, errlen)) goto fail;

    batcher_limits_t lim = {
        .max_batch_seqs = cfg->max_batch_seqs,
        .max_batch_tokens = cfg->max_batch_tokens,
        .max_queue_delay_us = cfg->max_queue_delay_ms * 1000,
        .max_pending_items = cfg->max_pending_items,
        .max_pending_bytes = cfg->max_pending_bytes,
    };
    if (batcher_create(s->reg, &lim, &s->bat, err, errlen)) goto fail;
    api_ctl_attach(s->ctl, s->bat);
    if (api_jobs_start(s->reg, cfg, s->bat, &s->jobs, err, errlen)) goto fail;
    /* generation shares the device worker with the encoder batcher */
    sched_config_t sc;
    api_config_sched(cfg, &sc);
    if (sched_create(s->reg, batcher_worker(s->bat), &sc, &s->sched, err, errlen)) goto fail;
    sched_set_observer(s->sched, api_metrics_gen_observe, api_ctl_metrics(s->ctl));
    api_jobs_set_sched(s->jobs, s->sched, &SCHED_OPS);
    preload_models(s);

    if (cfg->redis[0] && strcmp(cfg->redis, "none") && strcmp(cfg->redis, "off")) {
        if (api_tasks_start(cfg, s->reg, s->bat, s->jobs, &s->tasks, err, errlen)) goto fail;
    }

    s->ctx = (api_ctx_t){.cfg = cfg, .reg = s->reg, .bat = s->bat, .sched = s->sched, .sched_ops = &SCHED_OPS,
                         .jobs = s->jobs, .tasks = s->tasks, .ctl = s->ctl, .routes = api_routes,
                         .n_routes = api_routes_count};
    if (api_http_start(&s->ctx, &s->http, err, errlen)) goto fail;
    s->ctx.http = s->http; /* before the first request: MHD calls back only once a connection arrives */
    /* the Redis URL may carry a password: log host and port only */
    char redis_where[300] = "off";
    if (s->tasks) {
        const char *at = strrchr(cfg->redis, '@'), *sl = strstr(cfg->redis, "://");
        snprintf(redis_where, sizeof redis_where, "%s", at ? at + 1 : sl ? sl + 3 : cfg->redis);
    }
    api_log(API_LOG_INFO, "listening",
            json_pack("{s:s,s:i,s:s,s:s,s:I,s:i,s:s}", "host", cfg->host, "port", api_http_port(s->http), "device",
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
    api_http_quiesce(s->http);      /* no new connections; requests from now on answer 503 */
    api_admin_stop_watchers(&s->ctx); /* control requests waiting on a load or drain answer 503 */
    if (s->started) api_log(API_LOG_INFO, "shutting down", json_pack("{s:i}", "drain_timeout_ms", drain_timeout_ms));
    if (s->tasks) api_tasks_stop_intake(s->tasks); /* lease nothing new */
    int left = 0;
    /* streams in flight finish (or end "shutdown" at the deadline) while the HTTP threads still serve them */
    if (s->sched) left += sched_drain(s->sched, drain_timeout_ms);
    if (s->bat) {
        left += batcher_drain(s->bat, drain_timeout_ms);
        batcher_stop(s->bat); /* what is left: HTTP 503, Redis leases handed back */
    }
    /* Every suspended request has been woken; give the HTTP threads a moment to answer. */
    api_http_wait_quiet(s->http, 2000);
    api_http_destroy(s->http);
    s->http = NULL;
    s->ctx.http = NULL;
    if (s->tasks) {
        api_tasks_destroy(s->tasks); /* flushes acks and lease hand-backs */
        s->tasks = NULL;
    }
    sched_destroy(s->sched); /* uses the batcher's worker: before the batcher goes */
    s->sched = NULL;
    batcher_destroy(s->bat);
    s->bat = NULL;
    api_jobs_destroy(s->jobs); /* what the ops built on the models goes before the models */
    s->jobs = NULL;
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
    free(s);
}

int api_serve_port(const api_serve_t *s) { return api_http_port(s->http); }
registry_t *api_serve_registry(api_serve_t *s) { return s->reg; }
batcher_t *api_serve_batcher(api_serve_t *s) { return s->bat; }
void api_serve_http_stats(api_serve_t *s, api_http_stats_t *out) { api_http_stats(s->http, out); }
int api_serve_queue_up(api_serve_t *s) { return s->tasks ? api_tasks_up(s->tasks) : -1; }
int api_serve_reload(api_serve_t *s, char *err, size_t errlen) { return api_ctl_reload_keys(s->ctl, err, errlen); }
