/* api/routes_embeddings.c - POST /v1/embeddings (OpenAI-compatible) and
 * POST /v1/expand (term expansion, api/expand_job.h).
 *
 * Parse, validate and tokenize on the HTTP thread, submit one work item and
 * return API_ASYNC; the batcher's callback wakes the request and
 * embed_finish writes the answer on an HTTP thread. Both routes make the same
 * kind of job, so they share all of it but the parser.
 */
#include <stdlib.h>
#include <string.h>

#include "api/ctl.h"
#include "api/embed_job.h"
#include "api/expand_job.h"
#include "api/http.h"

static void embed_done(batcher_item_t *item, void *user) {
    (void)item;
    api_req_wake(user);
}

static int embed_finish(api_req_t *r) {
    api_embed_job_t *j = r->work;
    batcher_item_t *it = &j->item;
    r->batch_id = it->batch_id;
    switch (it->outcome) {
    case BATCHER_DONE_OK: {
        size_t len = 0;
        char *body = api_embed_result_json(j, &len);
        if (!body) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory writing the answer");
        api_srv_note_embed(r->srv, (batcher_now_ns() - r->t_start_ns) * 1e-9, it->compute_s);
        api_ctl_cache_store(r, body, len);
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

static void embed_cleanup(api_req_t *r) {
    api_embed_job_free(r->work);
    r->work = NULL;
}

static int route_job(api_req_t *r, api_job_parse_fn parse) {
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)",
                                 je.text, je.position);
    api_err_t e;
    api_embed_job_t *j = NULL;
    const api_config_t *cfg = api_srv_config(r->srv);
    int rc = parse(api_srv_registry(r->srv), cfg, body, &j, &e);
    if (!rc) api_ctl_cache_key(r, j->model_name, body, j->item.op);
    json_decref(body);
    if (rc) return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    snprintf(r->model_name, sizeof r->model_name, "%s", j->model_name);
    int64_t ms = j->deadline_ms ? j->deadline_ms : cfg->request_timeout_ms;
    j->item.deadline_ns = ms > 0 ? batcher_now_ns() + ms * 1000000LL : 0;
    snprintf(j->item.request_id, sizeof j->item.request_id, "%s", r->request_id);
    snprintf(j->item.traceparent, sizeof j->item.traceparent, "%s", r->traceparent);
    j->item.done = embed_done;
    j->item.user = r;
    r->work = j;
    r->cleanup = embed_cleanup;
    r->finish = embed_finish;
    api_ctl_charge_tokens(r, j->prompt_tokens);
    if (api_ctl_cache_answer(r)) return API_DONE;
    char err[512];
    rc = batcher_submit(api_srv_batcher(r->srv), &j->item, err, sizeof err);
    if (rc) {
        const char *code;
        unsigned st = api_status_for_batcher(rc, &code);
        return api_respond_error(r, st, code, st == 507 ? "model" : NULL, "%s", err);
    }
    return API_ASYNC;
}

int api_route_embeddings(api_req_t *r) { return route_job(r, api_embed_parse); }

int api_route_expand(api_req_t *r) { return route_job(r, api_expand_parse); }
