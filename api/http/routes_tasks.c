/* api/http/routes_tasks.c - POST /v1/tasks, GET and DELETE /v1/tasks/{id}:
 * the HTTP side of the Redis task queue. The request is validated here with
 * the operation's job type (400/404/413/422 now rather than a failed task
 * later); Redis itself is reached through api/redis/tasks.h. Redis off: 503
 * queue_disabled; Redis down: 503 queue_unavailable, without waiting on it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/ctl.h"
#include "api/http/routes.h"
#include "api/jobs.h"
#include "api/redis/tasks.h"

/* The tenant acting: its key's name, or NULL (no keys, or an admin key: every task). */
static const char *owner_of(api_req_t *r) {
    return r->key >= 0 && !api_ctl_key_is_admin(r->ctx->ctl, r->key) ? r->key_name : NULL;
}

static int need_tasks(api_req_t *r, api_tasks_t **t) {
    *t = r->ctx->tasks;
    if (!*t) {
        api_respond_error(r, 503, "queue_disabled", NULL, "the Redis task queue is off (--redis none)");
        return -1;
    }
    if (!api_tasks_up(*t)) { /* do not hang an HTTP thread on a dead Redis */
        api_respond_error(r, 503, "queue_unavailable", NULL, "Redis is unreachable (reconnecting)");
        return -1;
    }
    return 0;
}

int api_route_tasks_post(api_req_t *r) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)",
                                 je.text, je.position);
    if (!json_is_object(body)) {
        json_decref(body);
        return api_respond_error(r, 400, "invalid_json", NULL, "request body must be a JSON object");
    }
    const char *op = "embed", *qname = NULL;
    char dedup_buf[201], *dedup = NULL;
    int priority = 0;
    int64_t deadline_ms = 0;
    json_t *v;
    unsigned st = 0;
    const char *code = NULL, *param = NULL;
    char msg[512] = "";
    const api_job_type_t *type = api_jobs_find("embed");
    if ((v = json_object_get(body, "op")) && !json_is_null(v)) {
        if (!json_is_string(v) || !(type = api_jobs_find(json_string_value(v))))
            st = 400, code = "invalid_value", param = "op", snprintf(msg, sizeof msg, "op must be \"embed\" or \"expand\"");
        else op = type->name;
    }
    if (!st && (v = json_object_get(body, "priority")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > QUEUE_PRIORITY_MAX)
            st = 400, code = "invalid_value", param = "priority",
            snprintf(msg, sizeof msg, "priority must be an integer from 0 to %d", QUEUE_PRIORITY_MAX);
        else priority = (int)json_integer_value(v);
    }
    if (!st && (v = json_object_get(body, "deadline_ms")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            st = 400, code = "invalid_value", param = "deadline_ms", snprintf(msg, sizeof msg, "deadline_ms must be a positive integer");
        else deadline_ms = json_integer_value(v);
    }
    if (!st && (v = json_object_get(body, "dedup_key")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
            st = 400, code = "invalid_value", param = "dedup_key", snprintf(msg, sizeof msg, "dedup_key must be a string of 1..200 bytes");
        else dedup = strcpy(dedup_buf, json_string_value(v));
    }
    if (!st && (v = json_object_get(body, "queue")) && !json_is_null(v)) {
        qname = json_is_string(v) ? json_string_value(v) : "";
    }
    int q = st ? -1 : api_tasks_find_queue(t, qname);
    qname = q >= 0 ? api_tasks_queue_name(t, q) : qname; /* body is freed below */
    if (!st && q < 0) st = 404, code = "queue_not_found", param = "queue", snprintf(msg, sizeof msg, "this server serves no queue '%s'", qname);
    if (st) {
        json_decref(body);
        return api_respond_error(r, st, code, param, "%s", msg);
    }
    /* validate now (400/404/413/422 here rather than a failed task later) */
    api_err_t e;
    api_job_t *j = NULL;
    if (api_jobs_parse(r->ctx->jobs, type, body, &j, &e)) {
        json_decref(body);
        return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    }
    snprintf(r->model_name, sizeof r->model_name, "%s", j->model_name);
    api_ctl_charge_tokens(r->ctx->ctl, r->key, batcher_now_ns(), j->prompt_tokens);
    /* inputs: the op's options that travel with the task */
    json_t *inputs = json_object();
    const char *keep[] = {"input", "encoding_format", "dimensions", "truncate", "terms", "k", "min_score",
                          "exclude_input"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if ((v = json_object_get(body, keep[i]))) json_object_set(inputs, keep[i], v);
    char *inputs_json = json_dumps(inputs, JSON_COMPACT);
    json_decref(inputs);
    char err[512];
    char *payload = inputs_json ? queue_payload_build(j->model_name, op, inputs_json, r->request_id,
                                                      r->traceparent[0] ? r->traceparent : NULL,
                                                      err, sizeof err)
                                : NULL;
    api_job_free(j);
    free(inputs_json);
    json_decref(body);
    if (!payload) return api_respond_error(r, 400, "invalid_input", NULL, "%s", err);
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload), .priority = priority,
                         .ttl_ms = deadline_ms, .dedup_key = dedup};
    char id[QUEUE_ID_MAX];
    int outcome = 0;
    int rc = api_tasks_enqueue(t, q, &task, owner_of(r), id, &outcome, err, sizeof err);
    free(payload);
    if (rc == API_TASKS_ENOCONN)
        return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", qname, err);
    if (rc == QUEUE_EBUSY) return api_respond_error(r, 429, "queue_full", NULL, "Redis queue %s is full: %s", qname, err);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "enqueue into %s failed: %s", qname, err);
    return api_respond_json(r, 202, json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", id, "object", "task", "queue", qname,
                                              "state", outcome == QUEUE_ENQ_DEDUPED ? "deduplicated" : "queued",
                                              "deduplicated", outcome == QUEUE_ENQ_DEDUPED));
}

/* The answer for a task: state, result (parsed), error, times. */
static int respond_task(api_req_t *r, const char *id, const char *qname, int rc, queue_info_t *info) {
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, qname);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s: %s", qname, queue_strerror(rc));
    json_t *res = json_null();
    if (info->result) {
        res = json_loadb(info->result, info->result_len, JSON_DECODE_ANY, NULL);
        if (!res) res = json_stringn(info->result, info->result_len);
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:I,s:o,s:o}", "id", id, "object", "task", "queue", qname,
                          "state", queue_state_name(info->state), "attempts", info->attempts, "max_attempts",
                          info->max_attempts, "priority", info->priority, "enqueued_at_ms", (json_int_t)info->enqueued_ms,
                          "result", res, "error", info->error ? json_string(info->error) : json_null());
    if (info->finished_ms) json_object_set_new(o, "finished_at_ms", json_integer(info->finished_ms));
    if (info->cancel_requested) json_object_set_new(o, "cancel_requested", json_true());
    /* the ids the task was enqueued with, so a caller can find its log lines */
    queue_payload_t p;
    char perr[128];
    if (info->payload && !queue_payload_parse(info->payload, info->payload_len, &p, perr, sizeof perr)) {
        if (p.request_id) json_object_set_new(o, "request_id", json_string(p.request_id));
        if (p.traceparent) json_object_set_new(o, "traceparent", json_string(p.traceparent));
        queue_payload_clear(&p);
    }
    return api_respond_json(r, 200, o);
}

static int watch_finish(api_req_t *r) {
    api_task_watch_t *w = r->work;
    return respond_task(r, w->id, api_tasks_queue_name(r->ctx->tasks, w->q), w->rc, &w->info);
}

static void watch_cleanup(api_req_t *r) {
    api_tasks_watch_free(r->work);
    r->work = NULL;
}

static void watch_wake(void *user) { api_req_wake(user); }

int api_route_tasks_get(api_req_t *r) {
    const char *id = api_req_param(r, 0);
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    int q = api_tasks_find_queue(t, api_query(r, "queue"));
    if (q < 0) return api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", api_query(r, "queue"));
    double wait_s = 0;
    const char *ws = api_query(r, "wait");
    if (ws) {
        char *end;
        wait_s = strtod(ws, &end);
        if (end == ws || *end || !(wait_s >= 0) || wait_s > 300)
            return api_respond_error(r, 400, "invalid_value", "wait", "wait must be seconds from 0 to 300");
    }
    char err[512];
    const char *qname = api_tasks_queue_name(t, q);
    queue_info_t info;
    int rc = api_tasks_get(t, q, id, owner_of(r), &info, err, sizeof err);
    if (rc == API_TASKS_ENOCONN) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", qname, err);
    if (rc || wait_s <= 0 || queue_state_is_terminal(info.state)) {
        int out = respond_task(r, id, qname, rc, &info);
        queue_info_clear(&info);
        return out;
    }
    queue_info_clear(&info);
    /* long-poll: the waiter thread looks for us and wakes the request */
    r->finish = watch_finish;
    r->cleanup = watch_cleanup;
    r->work = api_tasks_watch(t, q, id, batcher_now_ns() + (int64_t)(wait_s * 1e9), watch_wake, r);
    if (!r->work) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    return API_ASYNC;
}

int api_route_tasks_delete(api_req_t *r) {
    const char *id = api_req_param(r, 0);
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    int q = api_tasks_find_queue(t, api_query(r, "queue"));
    if (q < 0) return api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", api_query(r, "queue"));
    char err[512];
    const char *qname = api_tasks_queue_name(t, q);
    int outcome = 0;
    int rc = api_tasks_cancel(t, q, id, owner_of(r), &outcome, err, sizeof err);
    if (rc == API_TASKS_ENOCONN) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", qname, err);
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, qname);
    if (rc == QUEUE_ESTATE) return api_respond_error(r, 409, "task_finished", NULL, "task %s has already ended", id);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s: %s", qname, queue_strerror(rc));
    return api_respond_json(r, outcome == QUEUE_CANCELLED_NOW ? 200 : 202,
                            json_pack("{s:s,s:s,s:s}", "id", id, "object", "task", "state",
                                      outcome == QUEUE_CANCELLED_NOW ? "cancelled" : "cancelling"));
}

