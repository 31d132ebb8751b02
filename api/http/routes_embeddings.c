/* api/http/routes_embeddings.c - POST /v1/embeddings (OpenAI-compatible) and
 * POST /v1/expand (term expansion): the job layer's operations over HTTP.
 *
 * Parse, validate and tokenize on the HTTP thread (the operation's job type,
 * api/jobs.h), submit one work item and return API_ASYNC; the batcher's
 * callback wakes the request and job_finish writes the answer on an HTTP
 * thread. Every operation shares all of it but the job type.
 */
#include <stdlib.h>
#include <string.h>

#include "api/http/cache.h"
#include "api/http/ctl.h"
#include "api/http/routes.h"
#include "api/jobs.h"

static void job_done(batcher_item_t *item, void *user) {
    (void)item;
    api_req_wake(user);
}

static int job_finish(api_req_t *r) {
    api_job_t *j = r->work;
    batcher_item_t *it = &j->item;
    r->batch_id = it->batch_id;
    switch (it->outcome) {
    case BATCHER_DONE_OK: {
        size_t len = 0;
        char *body = api_job_result_json(j, &len);
        if (!body) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory writing the answer");
        api_http_note_embed(r->ctx->http, (batcher_now_ns() - r->t_start_ns) * 1e-9, it->compute_s);
        if (r->cache_on) api_cache_put(api_ctl_cache(r->ctx->ctl), r->cache_key, body, len);
        return api_respond_raw(r, 200, body, len, "application/json");
    }
    case BATCHER_DONE_EXPIRED:
        return api_respond_error(r, 408, "deadline_exceeded", NULL,
                                 "the request waited %.3f s, past its deadline, and was not computed",
                                 (it->t_end_ns - it->t_submit_ns) * 1e-9);
    case BATCHER_DONE_CANCELLED:
        return api_respond_error(r, 503, "cancelled", NULL, "the request was cancelled");
    case BATCHER_DONE_SHUTDOWN:
        return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down; the request was not computed");
    case BATCHER_DONE_FAILED:
    default: {
        const char *code;
        unsigned st = api_status_for_batcher(it->err_code, &code);
        return api_respond_error(r, st, code, st == 507 ? "model" : NULL, "%s", it->err);
    }
    }
}

/* The client left: work that has not started is dropped before compute. */
static void job_gone(api_req_t *r) {
    api_job_t *j = r->work;
    batcher_cancel(r->ctx->bat, j->item.id);
}

static void job_cleanup(api_req_t *r) {
    api_job_free(r->work);
    r->work = NULL;
}

/* Answer from the result cache when the operation allows it: 1 when answered. */
static int cache_answer(api_req_t *r) {
    if (!r->cache_on) return 0;
    size_t len = 0;
    char *body = api_cache_get(api_ctl_cache(r->ctx->ctl), r->cache_key, &len);
    if (!body) return 0;
    r->cache_hit = 1;
    r->cache_on = 0;
    api_respond_raw(r, 200, body, len, "application/json");
    return 1;
}

static int route_job(api_req_t *r, const api_job_type_t *type) {
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)",
                                 je.text, je.position);
    api_err_t e;
    api_job_t *j = NULL;
    const api_config_t *cfg = r->ctx->cfg;
    int rc = api_jobs_parse(r->ctx->jobs, type, body, &j, &e);
    if (!rc && type->cacheable && api_ctl_cache(r->ctx->ctl)) {
        api_cache_key(r->key_name, j->model_name, body, r->cache_key);
        r->cache_on = 1;
    }
    json_decref(body);
    if (rc) return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    snprintf(r->model_name, sizeof r->model_name, "%s", j->model_name);
    r->model = j->item.model; /* its answer counts against this model's pending bytes until sent */
    int64_t ms = j->deadline_ms ? j->deadline_ms : cfg->request_timeout_ms;
    j->item.deadline_ns = ms > 0 ? batcher_now_ns() + ms * 1000000LL : 0;
    snprintf(j->item.request_id, sizeof j->item.request_id, "%s", r->request_id);
    snprintf(j->item.traceparent, sizeof j->item.traceparent, "%s", r->traceparent);
    j->item.tenant = api_req_tenant(r);
    j->item.done = job_done;
    j->item.user = r;
    r->work = j;
    r->cleanup = job_cleanup;
    r->finish = job_finish;
    r->on_gone = job_gone;
    api_ctl_charge_tokens(r->ctx->ctl, r->key, batcher_now_ns(), j->prompt_tokens);
    if (cache_answer(r)) return API_DONE;
    char err[512];
    rc = batcher_submit(r->ctx->bat, &j->item, err, sizeof err);
    if (rc) {
        const char *code;
        unsigned st = api_status_for_batcher(rc, &code);
        return api_respond_error(r, st, code, st == 507 ? "model" : NULL, "%s", err);
    }
    return API_ASYNC;
}

int api_route_embeddings(api_req_t *r) { return route_job(r, api_jobs_for_op(BATCHER_OP_EMBED)); }

int api_route_expand(api_req_t *r) { return route_job(r, api_jobs_for_op(BATCHER_OP_EXPAND)); }
