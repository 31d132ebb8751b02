/* api/http/admin.c - the control routes: models (list, load, unload) and admin
 * (pause, resume, drain, live batching limits).
 *
 * Load, unload and drain take time (a load reads and uploads weights; an
 * unload waits for the model's in-flight batches; a drain for every pending
 * item). They are asked of the batcher, whose device worker does them, and
 * the request is suspended like an inference request: a small watcher thread
 * polls the state and wakes it, so no HTTP thread waits. A watcher gives up
 * after its timeout (answering the state reached so far) or when the server
 * shuts down (api_admin_stop_watchers).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/http/routes.h"
#include "api/log.h"
#include "kernels/util.h"

#define WATCH_POLL_MS 2
#define LOAD_TIMEOUT_MS 120000
#define FAILED_GRACE_MS 2000 /* a model failed before: how long to wait for the new attempt to show */


typedef enum { W_LOAD, W_UNLOAD, W_DRAIN } watch_kind_t;

typedef struct {
    api_req_t *r;
    watch_kind_t kind;
    int model;
    int64_t until_ns;
    int timed_out, stopped;
    int left;       /* drain: items still pending */
    uint64_t unloads0; /* unload: the model's unload count when asked (pending work may load it again at once) */
} watch_t;

void api_admin_stop_watchers(api_ctx_t *c) {
    if (!c) return;
    atomic_store(&c->watch_stop, 1);
    for (int i = 0; i < 5000 && atomic_load(&c->watch_running) > 0; i++) util_sleep_ms(1);
}

/* ---------------------------------------------------------------- JSON */

static json_t *model_json(registry_t *reg, int i) {
    registry_model_info_t info;
    char err[256];
    /* the tokenizer (host memory, made once) gives the lengths before any load */
    (void)registry_tokenizer(reg, i, err, sizeof err);
    if (registry_info(reg, i, &info)) return json_null();
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "id", info.name, "object",
                          "model", "owned_by", "sluice", "state", registry_state_name(info.state), "backend",
                          registry_device_name(reg), "precision", registry_precision(reg), "hidden",
                          (json_int_t)info.hidden, "max_seq_len", (json_int_t)info.max_seq_len, "weight_bytes",
                          (json_int_t)info.weight_bytes, "workspace_bytes", (json_int_t)info.workspace_bytes,
                          "requests", (json_int_t)info.requests, "errors", (json_int_t)info.errors, "loads",
                          (json_int_t)info.loads, "load_s", info.load_s);
    json_object_set_new(m, "unloads", json_integer((json_int_t)info.unloads));
    if (info.kind == MODEL_DECODER) { /* what generation may use */
        json_object_set_new(m, "kind", json_string("decoder"));
        json_object_set_new(m, "context_length", json_integer(info.max_seq_len));
    } else {
        json_object_set_new(m, "kind", json_string("encoder"));
    }
    json_object_set_new(m, "last_error", info.last_error[0] ? json_string(info.last_error) : json_null());
    return m;
}

static json_t *memory_json(registry_t *reg) {
    return json_pack("{s:s,s:I,s:I}", "device", registry_device_name(reg), "used_bytes",
                     (json_int_t)registry_used(reg), "budget_bytes", (json_int_t)registry_budget(reg));
}

static json_t *limits_json(api_req_t *r) {
    batcher_limits_t l;
    batcher_get_limits(r->ctx->bat, &l);
    const engine_opts_t *eo = registry_engine_opts(r->ctx->reg);
    return json_pack("{s:i,s:i,s:i,s:i,s:I,s:{s:i,s:i}}", "max_batch_seqs", l.max_batch_seqs, "max_batch_tokens",
                     l.max_batch_tokens, "max_queue_delay_ms", l.max_queue_delay_us / 1000, "max_pending_items",
                     l.max_pending_items, "max_pending_bytes", (json_int_t)l.max_pending_bytes, "workspace",
                     "max_batch_seqs", eo->max_batch_seqs, "max_batch_tokens", eo->max_batch_tokens);
}

static json_t *state_json(api_req_t *r) {
    batcher_stats_t bs;
    batcher_stats(r->ctx->bat, &bs);
    return json_pack("{s:b,s:b,s:i,s:i}", "paused", bs.paused, "draining", bs.draining, "pending_items",
                     bs.pending_items, "in_flight_batches", bs.in_flight_batches);
}

/* ---------------------------------------------------------------- watchers */

static int watch_done(watch_t *w) {
    registry_t *reg = w->r->ctx->reg;
    if (w->kind == W_DRAIN) {
        batcher_stats_t bs;
        batcher_stats(w->r->ctx->bat, &bs);
        w->left = bs.pending_items;
        return bs.pending_items == 0;
    }
    registry_model_info_t info;
    if (registry_info(reg, w->model, &info)) return 1;
    registry_state_t st = info.state;
    if (w->kind == W_UNLOAD) return info.unloads > w->unloads0 || (st != REGISTRY_READY && st != REGISTRY_LOADING);
    return st == REGISTRY_READY || st == REGISTRY_FAILED;
}

static void *watch_main(void *arg) {
    watch_t *w = arg;
    registry_t *reg = w->r->ctx->reg;
    api_ctx_t *c = w->r->ctx;
    /* a model that failed before shows FAILED until the worker takes the new
     * attempt: wait to see it leave FAILED (or give it a grace period) */
    int64_t start = batcher_now_ns();
    int seen_other = !(w->kind == W_LOAD && registry_state(reg, w->model) == REGISTRY_FAILED);
    for (;;) {
        if (atomic_load(&c->watch_stop)) {
            w->stopped = 1;
            break;
        }
        if (!seen_other && registry_state(reg, w->model) != REGISTRY_FAILED) seen_other = 1;
        if ((seen_other || batcher_now_ns() - start > FAILED_GRACE_MS * 1000000LL) && watch_done(w)) break;
        if (batcher_now_ns() > w->until_ns) {
            w->timed_out = 1;
            break;
        }
        util_sleep_ms(WATCH_POLL_MS);
    }
    api_req_wake(w->r); /* after this the request (and w) may be gone */
    atomic_fetch_sub(&c->watch_running, 1);
    return NULL;
}

static int watch_finish(api_req_t *r) {
    watch_t *w = r->work;
    registry_t *reg = r->ctx->reg;
    if (w->stopped) return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down");
    if (w->kind == W_DRAIN) {
        json_t *o = state_json(r);
        json_object_set_new(o, "drained", json_boolean(!w->timed_out && w->left == 0));
        return api_respond_json(r, 200, o);
    }
    json_t *o = json_pack("{s:o,s:o}", "model", model_json(reg, w->model), "memory", memory_json(reg));
    registry_model_info_t info;
    registry_info(reg, w->model, &info);
    if (w->timed_out) return api_respond_json(r, 202, o);
    if (w->kind == W_LOAD && info.state == REGISTRY_FAILED) {
        json_decref(o);
        return api_respond_error(r, info.last_error_code == ENGINE_ENOMEM ? 507 : 503,
                                 info.last_error_code == ENGINE_ENOMEM ? "model_too_large" : "model_unavailable",
                                 "model", "model %s failed to load: %s", info.name, info.last_error);
    }
    return api_respond_json(r, 200, o);
}

static void watch_cleanup(api_req_t *r) {
    free(r->work);
    r->work = NULL;
}

static int start_watch(api_req_t *r, watch_kind_t kind, int model, int timeout_ms) {
    watch_t *w = calloc(1, sizeof *w);
    if (!w) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    w->r = r;
    w->kind = kind;
    w->model = model;
    w->until_ns = batcher_now_ns() + (int64_t)timeout_ms * 1000000;
    registry_model_info_t info;
    if (model >= 0 && !registry_info(r->ctx->reg, model, &info)) w->unloads0 = info.unloads;
    r->work = w;
    r->cleanup = watch_cleanup;
    r->finish = watch_finish;
    api_ctx_t *c = r->ctx;
    if (atomic_load(&c->watch_stop))
        return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down");
    atomic_fetch_add(&c->watch_running, 1);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, watch_main, w);
    pthread_attr_destroy(&at);
    if (rc) {
        atomic_fetch_sub(&c->watch_running, 1);
        return api_respond_error(r, 503, "out_of_threads", NULL, "cannot start a watcher thread");
    }
    return API_ASYNC;
}

/* ?timeout_ms=N (0..600000), default def; -1 on a bad value (answered). */
static int timeout_param(api_req_t *r, int def, int *out) {
    const char *v = api_query(r, "timeout_ms");
    *out = def;
    if (!v) return 0;
    char *end;
    long t = strtol(v, &end, 10);
    if (end == v || *end || t < 0 || t > 600000) {
        api_respond_error(r, 400, "invalid_value", "timeout_ms", "timeout_ms must be an integer from 0 to 600000");
        return -1;
    }
    *out = (int)t;
    return 0;
}

/* ---------------------------------------------------------------- routes */

int api_route_not_found(api_req_t *r) {
    return api_respond_error(r, 404, "not_found", NULL, "no route %s %s", r->method, r->path);
}

int api_route_models_list(api_req_t *r) {
    registry_t *reg = r->ctx->reg;
    json_t *data = json_array();
    for (int i = 0; i < registry_count(reg); i++) json_array_append_new(data, model_json(reg, i));
    return api_respond_json(r, 200, json_pack("{s:s,s:o,s:o}", "object", "list", "data", data, "memory", memory_json(reg)));
}

/* The route's model ({name}, checked by the dispatcher: API_ROUTE_NEEDS_MODEL). */
static int route_model(api_req_t *r) { return registry_find(r->ctx->reg, api_req_param(r, 0)); }

int api_route_model_get(api_req_t *r) {
    registry_t *reg = r->ctx->reg;
    return api_respond_json(r, 200, json_pack("{s:o,s:o}", "model", model_json(reg, route_model(r)), "memory",
                                              memory_json(reg)));
}

static int model_lifecycle(api_req_t *r, int load) {
    int idx = route_model(r);
    int timeout;
    if (timeout_param(r, LOAD_TIMEOUT_MS, &timeout)) return API_DONE;
    /* the watcher first: it notes the unload count before the batcher can act */
    int rc = start_watch(r, load ? W_LOAD : W_UNLOAD, idx, timeout);
    if (rc != API_ASYNC) return rc;
    if (load) batcher_request_load(r->ctx->bat, idx); /* idx is valid: these cannot fail */
    else batcher_request_unload(r->ctx->bat, idx);
    api_log(API_LOG_INFO, load ? "model load requested" : "model unload requested",
            json_pack("{s:s,s:s}", "request_id", r->request_id, "model", r->model_name));
    return API_ASYNC;
}

int api_route_model_load(api_req_t *r) { return model_lifecycle(r, 1); }
int api_route_model_unload(api_req_t *r) { return model_lifecycle(r, 0); }

/* PATCH /v1/admin/config: only the live batching limits, each an integer, checked
 * together before any is applied. */
int api_route_admin_config_patch(api_req_t *r) {    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)", je.text,
                                 je.position);
    if (!json_is_object(body) || json_object_size(body) == 0) {
        json_decref(body);
        return api_respond_error(r, 400, "invalid_json", NULL,
                                 "body must be a JSON object with max_batch_seqs, max_batch_tokens, "
                                 "max_queue_delay_ms or max_pending_items");
    }
    batcher_t *bat = r->ctx->bat;
    const engine_opts_t *eo = registry_engine_opts(r->ctx->reg);
    batcher_limits_t l;
    batcher_get_limits(bat, &l);
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        int *dst = !strcmp(key, "max_batch_seqs")      ? &l.max_batch_seqs
                   : !strcmp(key, "max_batch_tokens")  ? &l.max_batch_tokens
                   : !strcmp(key, "max_pending_items") ? &l.max_pending_items
                   : !strcmp(key, "max_queue_delay_ms") ? &l.max_queue_delay_us
                                                        : NULL;
        char field[64];
        snprintf(field, sizeof field, "%s", key);
        if (!dst) {
            json_decref(body);
            return api_respond_error(r, 400, "unknown_field", NULL,
                                     "'%s' cannot be changed live (max_batch_seqs, max_batch_tokens, "
                                     "max_queue_delay_ms, max_pending_items)", field);
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 24) {
            json_decref(body);
            r->model_name[0] = '\0';
            return api_respond_error(r, 400, "invalid_type", dst == &l.max_batch_seqs ? "max_batch_seqs"
                                                             : dst == &l.max_batch_tokens ? "max_batch_tokens"
                                                             : dst == &l.max_pending_items ? "max_pending_items"
                                                                                           : "max_queue_delay_ms",
                                     "%s must be an integer from 0 to 16777216", field);
        }
        long long x = json_integer_value(v);
        *dst = dst == &l.max_queue_delay_us ? (int)(x > 60000 ? 60001 : x) * 1000 : (int)x;
    }
    json_decref(body);
    if (l.max_batch_seqs > eo->max_batch_seqs)
        return api_respond_error(r, 422, "invalid_value", "max_batch_seqs",
                                 "max_batch_seqs %d is above the engine workspace (%d sequences; restart with "
                                 "--workspace-seqs to raise it)", l.max_batch_seqs, eo->max_batch_seqs);
    if (l.max_batch_tokens > eo->max_batch_tokens)
        return api_respond_error(r, 422, "invalid_value", "max_batch_tokens",
                                 "max_batch_tokens %d is above the engine workspace (%d tokens; restart with "
                                 "--workspace-tokens to raise it)", l.max_batch_tokens, eo->max_batch_tokens);
    char err[256];
    if (batcher_set_limits(bat, &l, err, sizeof err)) {
        const char *param = !strncmp(err, "max_batch_seqs", 14)      ? "max_batch_seqs"
                            : !strncmp(err, "max_batch_tokens", 16)  ? "max_batch_tokens"
                            : !strncmp(err, "max_queue_delay", 15)   ? "max_queue_delay_ms"
                            : !strncmp(err, "max_pending_items", 17) ? "max_pending_items"
                                                                     : NULL;
        return api_respond_error(r, 422, "invalid_value", param, "%s", err);
    }
    json_t *now = limits_json(r);
    api_log(API_LOG_INFO, "batching limits changed", json_pack("{s:s,s:O}", "request_id", r->request_id, "limits", now));
    return api_respond_json(r, 200, now);
}

int api_route_admin_config_get(api_req_t *r) { return api_respond_json(r, 200, limits_json(r)); }

/* pause, resume, drain: one log line, then the batcher. */
static int admin_action(api_req_t *r, int pause, int resume, int drain) {
    batcher_t *bat = r->ctx->bat;
    api_log(API_LOG_INFO, pause ? "paused" : resume ? "resumed" : "draining", json_pack("{s:s}", "request_id", r->request_id));
    if (pause) batcher_pause(bat);
    if (resume) batcher_resume(bat);
    if (!drain) return api_respond_json(r, 200, state_json(r));
    int timeout;
    if (timeout_param(r, r->ctx->cfg->drain_timeout_ms, &timeout)) return API_DONE;
    batcher_drain(bat, 0); /* refuse new work, dispatch what is pending without waiting for fuller batches */
    return start_watch(r, W_DRAIN, -1, timeout);
}

int api_route_admin_pause(api_req_t *r) { return admin_action(r, 1, 0, 0); }
int api_route_admin_resume(api_req_t *r) { return admin_action(r, 0, 1, 0); }
int api_route_admin_drain(api_req_t *r) { return admin_action(r, 0, 0, 1); }
