/* api/http/routes_tasks.c - POST /v1/tasks, GET and DELETE /v1/tasks/{id}:
 * the HTTP side of the Redis task queue. The request is validated here with
 * the operation's job type (400/404/413/422 now rather than a failed task
 * later); Redis itself is reached through api/redis/tasks.h. Redis off: 503
 * queue_disabled; Redis down: 503 queue_unavailable, without waiting on it.
 */
#include <stdarg.h>
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

/* 503 queue_unavailable: Redis failed or is not asked right now (the
 * queue's breaker, api/redis/tasks.h); Retry-After says when it will be
 * asked again. qname: the queue (NULL: any). */
static int unavailable(api_req_t *r, const char *qname, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int unavailable(api_req_t *r, const char *qname, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (qname) r->retry_after_s = api_tasks_retry_after_s(r->ctx->tasks, api_tasks_find_queue(r->ctx->tasks, qname));
    return api_respond_error(r, 503, "queue_unavailable", NULL, "%s", msg);
}

static int need_tasks(api_req_t *r, api_tasks_t **t) {
    *t = r->ctx->tasks;
    if (!*t) {
        api_respond_error(r, 503, "queue_disabled", NULL, "the Redis task queue is off (--redis none)");
        return -1;
    }
    if (!api_tasks_up(*t)) { /* do not hang an HTTP thread on a dead Redis */
        unavailable(r, NULL, "Redis is unreachable (reconnecting)");
        return -1;
    }
    return 0;
}

/* The fields a task object may have: the task's own, then each op's
 * (the request fields its parser reads). An op without a row here takes any
 * field (its parser is the judge). */
static const char *const task_fields[] = {"op", "model", "queue", "priority", "deadline_ms", "delay_ms",
                                          "max_attempts", "result_ttl_ms", "dedup_key", NULL};
static const struct {
    const char *op;
    const char *const *fields;
} op_fields[] = {
    {"embed", (const char *const[]){"input", "encoding_format", "dimensions", "truncate", "user", NULL}},
    {"expand", (const char *const[]){"terms", "k", "min_score", "exclude_input", "truncate", NULL}},
};

static int in_list(const char *const *list, const char *key) {
    for (; *list; list++)
        if (!strcmp(*list, key)) return 1;
    return 0;
}

/* Every field of body that neither the task nor op takes, named in e. */
static int check_fields(json_t *body, const char *op, api_err_t *e) {
    const char *const *own = NULL;
    for (size_t i = 0; i < sizeof op_fields / sizeof op_fields[0]; i++)
        if (!strcmp(op_fields[i].op, op)) own = op_fields[i].fields;
    if (!own) return 0;
    char names[400] = "";
    size_t len = 0;
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if (in_list(task_fields, key) || in_list(own, key)) continue;
        if (len < sizeof names - 1)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s'%.64s'", n ? ", " : "", key);
        n++;
    }
    if (!n) return 0;
    return api_err_set(e, 400, "unknown_field", NULL, "unknown field%s %s (a %s task takes op, model, queue, "
                       "priority, deadline_ms, delay_ms, max_attempts, result_ttl_ms, dedup_key and its op's fields)",
                       n > 1 ? "s" : "", names, op);
}

/* One task of a POST body, validated by its op's parser and made into a
 * queue task (payload owned). */
typedef struct {
    queue_task_t task;
    char *payload;
    char dedup[201];
} http_task_t;

#define TASK_MS_MAX (INT64_C(366) * 24 * 3600 * 1000) /* a year: delays, deadlines and lifetimes */

static int task_parse(api_req_t *r, json_t *body, http_task_t *out, api_err_t *e) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(body)) return api_err_set(e, 400, "invalid_json", NULL, "a task must be a JSON object");
    const api_job_type_t *type = api_jobs_find("embed");
    json_t *v = json_object_get(body, "op");
    if (v && !json_is_null(v) && (!json_is_string(v) || !(type = api_jobs_find(json_string_value(v)))))
        return api_err_set(e, 400, "invalid_value", "op", "op must be one of: %s", api_jobs_names());
    if (check_fields(body, type->name, e)) return -1;
    int64_t prio = 0, deadline = 0, delay = 0, attempts = 0, rttl = 0;
    if (api_json_int(body, "priority", 0, QUEUE_PRIORITY_MAX, &prio, e) ||
        api_json_int(body, "deadline_ms", 1, TASK_MS_MAX, &deadline, e) ||
        api_json_int(body, "delay_ms", 0, TASK_MS_MAX, &delay, e) ||
        api_json_int(body, "max_attempts", 1, 1000, &attempts, e) ||
        api_json_int(body, "result_ttl_ms", 1, TASK_MS_MAX, &rttl, e))
        return -1;
    if ((v = json_object_get(body, "dedup_key")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
            return api_err_set(e, 400, "invalid_value", "dedup_key", "dedup_key must be a string of 1..200 bytes");
        strcpy(out->dedup, json_string_value(v));
    }
    /* validate now (400/404/413/422 here rather than a failed task later) */
    api_job_t *j = NULL;
    /* an op that reads every field (generate: OpenAI's strict body) parses
     * the op's own fields alone, without the task's */
    json_t *opts = type->task_all_fields ? json_deep_copy(body) : NULL;
    for (size_t i = 0; opts && task_fields[i]; i++)
        if (strcmp(task_fields[i], "model")) json_object_del(opts, task_fields[i]);
    int prc = api_jobs_parse(r->ctx->jobs, type, opts ? opts : body, &j, e);
    json_decref(opts);
    if (prc) return -1;
    snprintf(r->model_name, sizeof r->model_name, "%s", j->model_name);
    api_ctl_charge_tokens(r->ctx->ctl, r->key, batcher_now_ns(), j->prompt_tokens);
    /* inputs: the op's fields travel with the task */
    json_t *inputs = json_object();
    const char *key;
    json_object_foreach(body, key, v) {
        if (!in_list(task_fields, key)) json_object_set(inputs, key, v);
    }
    char *inputs_json = inputs ? json_dumps(inputs, JSON_COMPACT) : NULL;
    json_decref(inputs);
    char err[512] = "out of memory";
    out->payload = inputs_json ? queue_payload_build(j->model_name, type->name, inputs_json, r->request_id,
                                                     r->traceparent[0] ? r->traceparent : NULL, err, sizeof err)
                               : NULL;
    api_job_free(j);
    free(inputs_json);
    if (!out->payload) return api_err_set(e, 400, "invalid_input", NULL, "%s", err);
    out->task = (queue_task_t){.payload = out->payload, .payload_len = strlen(out->payload), .priority = (int)prio,
                               .delay_ms = delay, .ttl_ms = deadline, .max_attempts = (int)attempts,
                               .dedup_key = out->dedup[0] ? out->dedup : NULL, .result_ttl_ms = rttl};
    return 0;
}

/* The queue a body names ("queue", or the first), or -1 with the answer sent. */
static int body_queue(api_req_t *r, api_tasks_t *t, json_t *body) {
    json_t *v = json_object_get(body, "queue");
    const char *name = v && !json_is_null(v) ? (json_is_string(v) ? json_string_value(v) : "") : NULL;
    int q = api_tasks_find_queue(t, name);
    if (q < 0) api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", name);
    return q;
}

static json_t *load_object(api_req_t *r) {
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body) {
        api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)", je.text,
                          je.position);
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        api_respond_error(r, 400, "invalid_json", NULL, "request body must be a JSON object");
        return NULL;
    }
    return body;
}

static int enqueue_failed(api_req_t *r, int rc, const char *qname, const char *err) {
    if (rc == QUEUE_EBUSY) return api_respond_error(r, 429, "queue_full", NULL, "Redis queue %s is full: %s", qname, err);
    if (rc == API_TASKS_ENOCONN)
        return unavailable(r, qname, "Redis queue %s unreachable: %s", qname, err);
    return unavailable(r, qname, "enqueue into %s failed: %s", qname, err);
}

static json_t *enqueued_json(const char *id, const char *qname, int status) {
    if (status == QUEUE_EBUSY) {
        json_t *e = api_error_object(429, "queue_full", NULL, "the queue is full", 0);
        json_t *o = json_pack("{s:n,s:s,s:s,s:s,s:O}", "id", "object", "task", "queue", qname, "state", "rejected",
                              "error", json_object_get(e, "error"));
        json_decref(e);
        return o;
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", id, "object", "task", "queue", qname, "state",
                     status == QUEUE_ENQ_DEDUPED ? "deduplicated" : "queued", "deduplicated",
                     status == QUEUE_ENQ_DEDUPED);
}

int api_route_tasks_post(api_req_t *r) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    json_t *body = load_object(r);
    if (!body) return API_DONE;
    int q = body_queue(r, t, body);
    http_task_t ht;
    api_err_t e;
    if (q < 0 || task_parse(r, body, &ht, &e)) {
        json_decref(body);
        return q < 0 ? API_DONE : api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    }
    json_decref(body);
    const char *qname = api_tasks_queue_name(t, q);
    char id[QUEUE_ID_MAX], err[512];
    int outcome = 0;
    int rc = api_tasks_enqueue(t, q, &ht.task, owner_of(r), id, &outcome, err, sizeof err);
    free(ht.payload);
    if (rc) return enqueue_failed(r, rc, qname, err);
    return api_respond_json(r, 202, enqueued_json(id, qname, outcome));
}

/* POST /v1/tasks/batch {"queue":..,"tasks":[task, ...]}: every task is
 * validated first (one bad task: 400 naming it, nothing stored), then all go
 * to Redis in one script call. Tasks refused for a full queue are answered
 * "rejected" in their place (all of them: 429). */
int api_route_tasks_batch(api_req_t *r) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    json_t *body = load_object(r);
    if (!body) return API_DONE;
    json_t *tasks = json_object_get(body, "tasks");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if (strcmp(key, "queue") && strcmp(key, "tasks")) {
            char name[80];
            snprintf(name, sizeof name, "%.64s", key);
            json_decref(body);
            return api_respond_error(r, 400, "unknown_field", NULL, "unknown field '%s' (a batch takes queue and tasks)", name);
        }
    }
    size_t n = json_array_size(tasks);
    if (!json_is_array(tasks) || n == 0 || n > API_TASKS_BATCH_MAX) {
        unsigned st = json_is_array(tasks) && n ? 413 : 400; /* tasks goes with body */
        json_decref(body);
        return api_respond_error(r, st, "invalid_value", "tasks",
                                 "tasks must be an array of 1..%d task objects", API_TASKS_BATCH_MAX);
    }
    int q = body_queue(r, t, body);
    http_task_t *ht = q < 0 ? NULL : calloc(n, sizeof *ht);
    queue_task_t *qt = ht ? calloc(n, sizeof *qt) : NULL;
    char (*ids)[QUEUE_ID_MAX] = qt ? calloc(n, QUEUE_ID_MAX) : NULL;
    int *status = ids ? calloc(n, sizeof *status) : NULL;
    size_t parsed = 0;
    int out = -1;
    if (q < 0) goto done;
    if (!status) {
        out = api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
        goto done;
    }
    for (; parsed < n; parsed++) {
        api_err_t e;
        json_t *one = json_array_get(tasks, parsed);
        if (json_is_object(one) && json_object_get(one, "queue")) {
            out = api_respond_error(r, 400, "invalid_value", "queue", "tasks[%zu]: the queue of a batch is given once, "
                                    "next to \"tasks\"", parsed);
            goto done;
        }
        if (task_parse(r, one, &ht[parsed], &e)) {
            out = api_respond_error(r, e.status, e.code, e.param, "tasks[%zu]: %s", parsed, e.message);
            goto done;
        }
        qt[parsed] = ht[parsed].task;
    }
    const char *qname = api_tasks_queue_name(t, q);
    char err[512];
    int rc = api_tasks_enqueue_many(t, q, qt, n, owner_of(r), ids, status, err, sizeof err);
    if (rc) {
        out = enqueue_failed(r, rc, qname, err);
        goto done;
    }
    json_t *data = json_array();
    size_t busy = 0;
    for (size_t i = 0; i < n; i++) {
        busy += status[i] == QUEUE_EBUSY;
        json_array_append_new(data, enqueued_json(ids[i], qname, status[i]));
    }
    out = api_respond_json(r, busy == n ? 429 : 202,
                           json_pack("{s:s,s:s,s:o}", "object", "list", "queue", qname, "data", data));
done:
    for (size_t i = 0; ht && i < parsed; i++) free(ht[i].payload);
    free(ht);
    free(qt);
    free(ids);
    free(status);
    json_decref(body);
    return out < 0 ? API_DONE : out;
}

/* The answer for a task: state, result (parsed), error, times. */
static int respond_task(api_req_t *r, const char *id, const char *qname, int rc, queue_info_t *info) {
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, qname);
    if (rc) return unavailable(r, qname, "Redis queue %s: %s", qname, queue_strerror(rc));
    json_t *o = api_task_info_json(id, info);
    if (!o) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    json_object_set_new(o, "object", json_string("task"));
    json_object_set_new(o, "queue", json_string(qname));
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
    if (rc == API_TASKS_ENOCONN) return unavailable(r, qname, "Redis queue %s unreachable: %s", qname, err);
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
    if (rc == API_TASKS_ENOCONN) return unavailable(r, qname, "Redis queue %s unreachable: %s", qname, err);
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, qname);
    if (rc == QUEUE_ESTATE) return api_respond_error(r, 409, "task_finished", NULL, "task %s has already ended", id);
    if (rc) return unavailable(r, qname, "Redis queue %s: %s", qname, queue_strerror(rc));
    return api_respond_json(r, outcome == QUEUE_CANCELLED_NOW ? 200 : 202,
                            json_pack("{s:s,s:s,s:s}", "id", id, "object", "task", "state",
                                      outcome == QUEUE_CANCELLED_NOW ? "cancelled" : "cancelling"));
}


/* ---------------------------------------------------------------- admin: stats and the dead-letter queue */

/* The ?queue= of an admin route and a borrowed connection to it, or NULL with the answer sent. */
static queue_conn_t *admin_conn(api_req_t *r, int *q) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return NULL;
    *q = api_tasks_find_queue(t, api_query(r, "queue"));
    if (*q < 0) {
        api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", api_query(r, "queue"));
        return NULL;
    }
    char err[512];
    queue_conn_t *c = api_tasks_borrow(t, *q, err, sizeof err);
    if (!c) unavailable(r, api_tasks_queue_name(t, *q), "Redis queue %s unreachable: %s", api_tasks_queue_name(t, *q), err);
    return c;
}

/* Give the connection back and answer: o on success, 503 naming the call otherwise. */
static int admin_done(api_req_t *r, int q, queue_conn_t *c, int rc, const char *what, json_t *o) {
    api_tasks_t *t = r->ctx->tasks;
    char err[512];
    snprintf(err, sizeof err, "%s", rc ? queue_last_error(c) : "");
    api_tasks_give_back(t, q, c, rc);
    if (rc) {
        json_decref(o);
        return unavailable(r, api_tasks_queue_name(t, q), "%s on %s: %s", what, api_tasks_queue_name(t, q), err);
    }
    json_object_set_new(o, "queue", json_string(api_tasks_queue_name(t, q)));
    return api_respond_json(r, 200, o);
}

int api_route_queue_stats(api_req_t *r) {
    int q;
    queue_conn_t *c = admin_conn(r, &q);
    if (!c) return API_DONE;
    queue_stats_t s;
    int rc = queue_stats(c, &s);
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("queue.stats"));
    const struct { const char *name; int64_t v; } f[] = {
        {"ready", s.ready},         {"delayed", s.delayed},     {"leased", s.leased},       {"dlq", s.dlq},
        {"enqueued", s.enqueued},   {"acked", s.acked},         {"retried", s.retried},     {"failed", s.failed},
        {"expired", s.expired},     {"cancelled", s.cancelled}, {"deduped", s.deduped},     {"rejected", s.rejected},
        {"reaped", s.reaped},       {"released", s.released},   {"requeued", s.requeued},   {"purged", s.purged},
        {"bad_signature", s.bad_signature}};
    for (size_t i = 0; !rc && i < sizeof f / sizeof f[0]; i++) json_object_set_new(o, f[i].name, json_integer(f[i].v));
    return admin_done(r, q, c, rc, "stats", o);
}

/* A query integer in [min, max] (absent: def), or -1 with the answer sent. */
static int query_int(api_req_t *r, const char *name, long long min, long long max, long long def, long long *out) {
    const char *s = api_query(r, name);
    *out = def;
    if (!s) return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < min || v > max) {
        api_respond_error(r, 400, "invalid_value", name, "%s must be an integer from %lld to %lld", name, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* GET /v1/admin/dlq?queue=&offset=&limit= (limit 1..1000, default 100). */
int api_route_dlq_list(api_req_t *r) {
    long long offset, limit;
    if (query_int(r, "offset", 0, INT32_MAX, 0, &offset) || query_int(r, "limit", 1, 1000, 100, &limit)) return API_DONE;
    int q;
    queue_conn_t *c = admin_conn(r, &q);
    if (!c) return API_DONE;
    queue_dlq_entry_t *e = calloc((size_t)limit, sizeof *e);
    size_t got = 0;
    int rc = e ? queue_dlq_list(c, (size_t)offset, (size_t)limit, e, &got) : QUEUE_ENOMEM;
    json_t *data = json_array();
    for (size_t i = 0; !rc && i < got; i++)
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:i,s:i,s:s}", "id", e[i].id, "object", "task", "dead_at_ms",
                                              (json_int_t)e[i].dead_ms, "attempts", e[i].attempts, "max_attempts",
                                              e[i].max_attempts, "error", e[i].error ? e[i].error : ""));
    if (e) queue_dlq_entries_clear(e, got);
    free(e);
    return admin_done(r, q, c, rc, "dlq list", json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* POST /v1/admin/dlq/requeue {"id": ..} or {"all": true}. */
int api_route_dlq_requeue(api_req_t *r) {
    json_t *body = load_object(r);
    if (!body) return API_DONE;
    json_t *id = json_object_get(body, "id"), *all = json_object_get(body, "all");
    if (json_object_size(body) != 1 || !((id && json_is_string(id)) || json_is_true(all))) {
        json_decref(body);
        return api_respond_error(r, 400, "invalid_value", NULL, "the body must be {\"id\": \"<task id>\"} or {\"all\": true}");
    }
    char idbuf[QUEUE_ID_MAX] = "";
    if (id) snprintf(idbuf, sizeof idbuf, "%s", json_string_value(id));
    json_decref(body);
    int q;
    queue_conn_t *c = admin_conn(r, &q);
    if (!c) return API_DONE;
    int64_t moved = 0;
    int rc = queue_dlq_requeue(c, idbuf[0] ? idbuf : NULL, &moved);
    return admin_done(r, q, c, rc, "dlq requeue", json_pack("{s:s,s:I}", "object", "dlq.requeue", "requeued", (json_int_t)moved));
}

/* POST /v1/admin/dlq/purge {"all": true} or {"keep": N, "older_than_ms": T} (either or both). */
int api_route_dlq_purge(api_req_t *r) {
    json_t *body = load_object(r);
    if (!body) return API_DONE;
    int64_t keep = -1, older = 0;
    api_err_t e;
    const char *key;
    json_t *v;
    int bad = 0, all = 0;
    json_object_foreach(body, key, v) {
        if (!strcmp(key, "all")) all = json_is_true(v);
        bad |= strcmp(key, "all") && strcmp(key, "keep") && strcmp(key, "older_than_ms");
    }
    if (!bad && (api_json_int(body, "keep", 0, INT64_MAX, &keep, &e) || api_json_int(body, "older_than_ms", 1, INT64_MAX, &older, &e))) {
        json_decref(body);
        return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    }
    json_decref(body);
    if (bad || (all ? keep >= 0 || older : keep < 0 && !older))
        return api_respond_error(r, 400, "invalid_value", NULL,
                                 "the body must be {\"all\": true} or name keep (newest entries kept) and/or older_than_ms");
    if (all) keep = 0;
    int q;
    queue_conn_t *c = admin_conn(r, &q);
    if (!c) return API_DONE;
    int64_t removed = 0, n;
    int rc = 0;
    do { /* one script call removes up to 1000 */
        n = 0;
        rc = queue_dlq_purge(c, keep, older, &n);
        removed += n;
    } while (!rc && n >= 1000);
    return admin_done(r, q, c, rc, "dlq purge", json_pack("{s:s,s:I}", "object", "dlq.purge", "purged", (json_int_t)removed));
}
