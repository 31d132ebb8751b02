/* tests/test_serve_tasks.c - the Redis intake of `sluice serve` against a real
 * redis-server (tests/support_redis) and the real model: POST /v1/tasks ->
 * lease -> batch -> ack -> GET /v1/tasks/{id}?wait=, backpressure (the
 * backlog waits in Redis), deadlines, cancellation, Redis going away and
 * coming back, and shutdown handing leases back without losing a task.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/server.h"
#include "queue/queue.h"
#include "tests/support_http.h"
#include "tests/support_redis.h"
#include "tests/support_server.h"

#define H 384

static support_redis_t redis;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void redis_start(void) { cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err); }
static void redis_stop(void) { support_redis_stop(&redis); }

/* A server on the test's Redis serving queues (comma-separated). */
static support_server_t start_on(api_config_t *c, const char *queues) {
    snprintf(c->redis, sizeof c->redis, "%s", redis.url);
    snprintf(c->queue, sizeof c->queue, "%s", queues);
    support_server_t s;
    cr_assert_eq(support_server_start(&s, c), 0, "server: %s", s.err);
    /* the intake's connections come up in the background */
    for (int i = 0; i < 200 && api_serve_queue_up(s.srv) != 1; i++) sleep_ms(10);
    cr_assert_eq(api_serve_queue_up(s.srv), 1, "redis intake never came up");
    return s;
}

static support_server_t start_with(api_config_t *c) { return start_on(c, "tq"); }

static json_t *call(int port, const char *method, const char *path, const char *body, int *status) {
    http_resp_t r;
    cr_assert_eq(http_request(port, method, path, NULL, body, body ? strlen(body) : 0, &r, 60000), 0,
                 "no answer: %s %s", method, path);
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    http_resp_free(&r);
    return j;
}

static void enqueue(int port, const char *body, char id[QUEUE_ID_MAX]) {
    int st;
    json_t *j = call(port, "POST", "/v1/tasks", body, &st);
    cr_assert_eq(st, 202, "POST /v1/tasks -> %d", st);
    snprintf(id, QUEUE_ID_MAX, "%s", json_string_value(json_object_get(j, "id")));
    cr_assert(id[0]);
    json_decref(j);
}

static json_t *task_wait(int port, const char *id, double wait_s, int *status) {
    char path[600];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=%g", id, wait_s);
    return call(port, "GET", path, NULL, status);
}

static const char *state_of(json_t *t) { return json_string_value(json_object_get(t, "state")); }

/* The length of the first embedding in a task's result. */
static size_t dims_of(json_t *t) {
    json_t *data = json_object_get(json_object_get(t, "result"), "data");
    return json_array_size(json_object_get(json_array_get(data, 0), "embedding"));
}

static queue_conn_t *redis_conn(void) {
    char err[256];
    queue_conn_t *c = support_redis_queue(&redis, "tq", err, sizeof err);
    cr_assert(c, "connect: %s", err);
    return c;
}

Test(serve_tasks, results_come_back_through_wait_and_match_http, .init = redis_start, .fini = redis_stop,
     .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start_with(&c);
    const char *texts[] = {"The cat sat on the mat.", "Redis queues hold the backlog.", "Short.",
                           "A fourth sentence about batching.", "and a fifth", "six"};
    enum { N = 6 };
    char ids[N][QUEUE_ID_MAX];
    for (int i = 0; i < N; i++) {
        json_t *b = json_pack("{s:s,s:s,s:i}", "model", "all-minilm-l6-v2", "input", texts[i], "priority", i % 3);
        char *body = json_dumps(b, JSON_COMPACT);
        enqueue(s.port, body, ids[i]);
        free(body);
        json_decref(b);
    }
    for (int i = 0; i < N; i++) {
        int st;
        json_t *t = task_wait(s.port, ids[i], 30, &st);
        cr_assert_eq(st, 200);
        cr_assert_str_eq(state_of(t), "done", "task %d ended %s (error %s)", i, state_of(t),
                         json_string_value(json_object_get(t, "error")));
        /* the same names as `sluice queue get`: the worker that ran it, *_at_ms times */
        cr_assert(json_is_string(json_object_get(t, "worker")));
        cr_assert_geq(json_integer_value(json_object_get(t, "finished_at_ms")),
                      json_integer_value(json_object_get(t, "enqueued_at_ms")));
        json_t *res = json_object_get(t, "result");
        json_t *emb = json_object_get(json_array_get(json_object_get(res, "data"), 0), "embedding");
        cr_assert_eq(json_array_size(emb), H);
        /* the same input over HTTP gives the same vector */
        json_t *b = json_pack("{s:s}", "input", texts[i]);
        char *body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        json_t *h = call(s.port, "POST", "/v1/embeddings", body, &st);
        free(body);
        cr_assert_eq(st, 200);
        json_t *hemb = json_object_get(json_array_get(json_object_get(h, "data"), 0), "embedding");
        for (int k = 0; k < H; k++)
            cr_assert_float_eq(json_number_value(json_array_get(emb, k)), json_number_value(json_array_get(hemb, k)),
                               1e-6, "task %d dim %d", i, k);
        json_decref(h);
        json_decref(t);
    }
    /* options travel with the task; dedup keys give the same id */
    char a[QUEUE_ID_MAX], b2[QUEUE_ID_MAX];
    enqueue(s.port, "{\"input\":\"dedup me\",\"dimensions\":16,\"dedup_key\":\"k1\"}", a);
    enqueue(s.port, "{\"input\":\"dedup me\",\"dimensions\":16,\"dedup_key\":\"k1\"}", b2);
    cr_assert_str_eq(a, b2);
    int st;
    json_t *t = task_wait(s.port, a, 30, &st);
    cr_assert_str_eq(state_of(t), "done");
    cr_assert_eq(dims_of(t), 16);
    json_decref(t);
    support_server_stop(&s);
}

Test(serve_tasks, route_errors, .init = redis_start, .fini = redis_stop, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start_with(&c);
    int st;
    json_t *j;
    struct { const char *method, *path, *body; int status; const char *code; } cases[] = {
        {"POST", "/v1/tasks", "{\"input\":", 400, "invalid_json"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"op\":\"explode\"}", 400, "invalid_value"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"priority\":300}", 400, "invalid_value"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"deadline_ms\":0}", 400, "invalid_value"},
        {"POST", "/v1/tasks", "{\"input\":\"\"}", 400, "empty_input"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"model\":\"nope\"}", 404, "model_not_found"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"queue\":\"other\"}", 404, "queue_not_found"},
        {"GET", "/v1/tasks/0123456789abcdef0123456789abcdef", NULL, 404, "task_not_found"},
        {"GET", "/v1/tasks/abc?wait=forever", NULL, 400, "invalid_value"},
        {"DELETE", "/v1/tasks/0123456789abcdef0123456789abcdef", NULL, 404, "task_not_found"},
        {"PUT", "/v1/tasks/abc", NULL, 405, "method_not_allowed"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"prioity\":3,\"colour\":1}", 400, "unknown_field"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"max_attempts\":0}", 400, "invalid_value"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"delay_ms\":-1}", 400, "invalid_value"},
        {"POST", "/v1/tasks", "{\"input\":\"x\",\"result_ttl_ms\":1.5}", 400, "invalid_value"},
        {"POST", "/v1/tasks/batch", "{\"tasks\":[]}", 400, "invalid_value"},
        {"POST", "/v1/tasks/batch", "{\"tasks\":[{\"input\":\"x\"},{\"input\":\"\"}]}", 400, "empty_input"},
        {"POST", "/v1/tasks/batch", "{\"tasks\":[{\"input\":\"x\",\"queue\":\"tq\"}]}", 400, "invalid_value"},
        {"POST", "/v1/tasks/batch", "{\"tasks\":[{\"input\":\"x\"}],\"extra\":1}", 400, "unknown_field"},
        {"POST", "/v1/admin/dlq/purge", "{}", 400, "invalid_value"},
        {"POST", "/v1/admin/dlq/requeue", "{\"id\":1}", 400, "invalid_value"},
        {"GET", "/v1/admin/dlq?limit=0", NULL, 400, "invalid_value"},
        {"GET", "/v1/admin/queue/stats?queue=nope", NULL, 404, "queue_not_found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        j = call(s.port, cases[i].method, cases[i].path, cases[i].body, &st);
        cr_assert_eq(st, cases[i].status, "%s %s %s -> %d", cases[i].method, cases[i].path,
                     cases[i].body ? cases[i].body : "", st);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), cases[i].code);
        if (i == 11) /* every unknown field is named */
            cr_assert(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "'prioity', 'colour'"));
        json_decref(j);
    }
    /* a bad batch stored nothing */
    j = call(s.port, "GET", "/v1/admin/queue/stats", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(j, "enqueued")), 0);
    json_decref(j);
    /* a finished task cannot be cancelled: 409 */
    char id[QUEUE_ID_MAX];
    enqueue(s.port, "{\"input\":\"finish first\"}", id);
    json_decref(task_wait(s.port, id, 30, &st));
    char path[600];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    j = call(s.port, "DELETE", path, NULL, &st);
    cr_assert_eq(st, 409);
    json_decref(j);
    support_server_stop(&s);
    /* with Redis off the routes say so */
    support_server_config(&c);
    cr_assert_eq(support_server_start(&s, &c), 0, "%s", s.err);
    j = call(s.port, "POST", "/v1/tasks", "{\"input\":\"x\"}", &st);
    cr_assert_eq(st, 503);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "queue_disabled");
    json_decref(j);
    support_server_stop(&s);
}

Test(serve_tasks, backlog_waits_in_redis_and_nothing_is_lost, .init = redis_start, .fini = redis_stop,
     .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_pending_items = 2;
    c.max_queue_delay_ms = 1000;
    support_server_t s = start_with(&c);
    enum { N = 12 };
    char ids[N][QUEUE_ID_MAX];
    for (int i = 0; i < N; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"input\":\"backlog item %d\"}", i);
        enqueue(s.port, body, ids[i]);
    }
    /* while the first two wait for their batch window, the rest stay in Redis */
    sleep_ms(100);
    queue_conn_t *q = redis_conn();
    queue_stats_t qs;
    cr_assert_eq(queue_stats(q, &qs), 0);
    cr_assert_leq(qs.leased, 2, "leased %lld with room for 2", (long long)qs.leased);
    cr_assert_geq(qs.ready, N - 2);
    batcher_stats_t bs;
    batcher_stats(api_serve_batcher(s.srv), &bs);
    cr_assert_leq(bs.pending_items, 2);
    for (int i = 0; i < N; i++) {
        int st;
        json_t *t = task_wait(s.port, ids[i], 60, &st);
        cr_assert_str_eq(state_of(t), "done", "task %d: %s", i, state_of(t));
        json_decref(t);
    }
    cr_assert_eq(queue_stats(q, &qs), 0);
    cr_assert_eq(qs.acked, N);
    cr_assert_eq(qs.failed + qs.dlq, 0);
    queue_close(q);
    support_server_stop(&s);
}

Test(serve_tasks, deadline_and_cancellation, .init = redis_start, .fini = redis_stop, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.max_queue_delay_ms = 5000; /* leased tasks wait in our queue */
    support_server_t s = start_with(&c);
    int st;
    /* past its deadline while waiting for a batch: ends expired, never computed */
    char late[QUEUE_ID_MAX];
    enqueue(s.port, "{\"input\":\"too late\",\"deadline_ms\":1000}", late); /* leased well before */
    json_t *t = task_wait(s.port, late, 10, &st);
    cr_assert_str_eq(state_of(t), "expired");
    json_decref(t);
    /* leased, then cancelled: dropped before compute */
    char id[QUEUE_ID_MAX];
    enqueue(s.port, "{\"input\":\"cancel me\"}", id);
    char path[600];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    int leased = 0;
    for (int i = 0; i < 500 && !leased; i++) {
        t = call(s.port, "GET", path, NULL, &st);
        leased = !strcmp(state_of(t), "leased");
        json_decref(t);
        if (!leased) sleep_ms(10);
    }
    cr_assert(leased, "the intake did not lease the task within 5 s");
    t = call(s.port, "DELETE", path, NULL, &st);
    cr_assert_eq(st, 202, "cancel of a leased task -> %d", st);
    cr_assert_str_eq(state_of(t), "cancelling");
    json_decref(t);
    t = task_wait(s.port, id, 10, &st);
    cr_assert_str_eq(state_of(t), "cancelled");
    json_decref(t);
    batcher_stats_t bs;
    batcher_stats(api_serve_batcher(s.srv), &bs);
    cr_assert_eq(bs.batches, 0, "expired or cancelled work was computed");
    cr_assert_eq(bs.items_cancelled, 1);
    cr_assert_eq(bs.items_expired, 1);
    /* waiting in Redis (intake paused), cancelled at once */
    batcher_pause(api_serve_batcher(s.srv));
    sleep_ms(50);
    enqueue(s.port, "{\"input\":\"never leased\"}", id);
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    t = call(s.port, "DELETE", path, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(state_of(t), "cancelled");
    json_decref(t);
    batcher_resume(api_serve_batcher(s.srv));
    support_server_stop(&s);
}

Test(serve_tasks, redis_down_http_goes_on_and_intake_reconnects, .init = redis_start, .fini = redis_stop,
     .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start_with(&c);
    int st;
    json_t *j = call(s.port, "GET", "/readyz", NULL, &st);
    cr_assert_eq(st, 200);
    json_decref(j);
    support_redis_kill(&redis, 1);
    /* the intake notices within its poll interval */
    for (int i = 0; i < 300 && api_serve_queue_up(s.srv) != 0; i++) sleep_ms(10);
    j = call(s.port, "GET", "/readyz", NULL, &st);
    cr_assert_eq(st, 503);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "queue"), "redis")), "down");
    json_decref(j);
    http_resp_t m;
    cr_assert_eq(http_get(s.port, "/metrics", &m), 0);
    cr_assert(strstr(m.body, "sluice_redis_up{queue=\"tq\"} 0"), "metrics do not show Redis down");
    http_resp_free(&m);
    j = call(s.port, "POST", "/v1/embeddings", "{\"input\":\"HTTP does not need Redis\"}", &st);
    cr_assert_eq(st, 200);
    json_decref(j);
    j = call(s.port, "POST", "/v1/tasks", "{\"input\":\"x\"}", &st);
    cr_assert_eq(st, 503);
    json_decref(j);
    cr_assert_eq(support_redis_restart(&redis, 1), 0, "%s", redis.err);
    for (int i = 0; i < 500 && api_serve_queue_up(s.srv) != 1; i++) sleep_ms(10);
    cr_assert_eq(api_serve_queue_up(s.srv), 1, "intake did not reconnect");
    char id[QUEUE_ID_MAX];
    enqueue(s.port, "{\"input\":\"after the outage\"}", id);
    j = task_wait(s.port, id, 30, &st);
    cr_assert_str_eq(state_of(j), "done");
    json_decref(j);
    /* and a shutdown while Redis is down does not hang */
    support_redis_kill(&redis, 1);
    for (int i = 0; i < 300 && api_serve_queue_up(s.srv) != 0; i++) sleep_ms(10);
    int64_t t0 = batcher_now_ns();
    support_server_stop(&s);
    cr_assert_lt(batcher_now_ns() - t0, 10000000000LL, "shutdown with Redis down took over 10 s");
}

Test(serve_tasks, redis_up_is_one_series_per_queue, .init = redis_start, .fini = redis_stop, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start_on(&c, "tq,tq2");
    http_resp_t m;
    cr_assert_eq(http_get(s.port, "/metrics", &m), 0);
    cr_assert(strstr(m.body, "\nsluice_redis_up{queue=\"tq\"} 1\n"), "no up series for tq");
    cr_assert(strstr(m.body, "\nsluice_redis_up{queue=\"tq2\"} 1\n"), "no up series for tq2");
    cr_assert_null(strstr(m.body, "queue=\"tq,tq2\""), "a series labelled with the joined queue list");
    http_resp_free(&m);
    support_server_stop(&s);
}

Test(serve_tasks, shutdown_hands_leases_back_and_a_second_server_finishes, .init = redis_start,
     .fini = redis_stop, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_queue_delay_ms = 5000; /* leased work waits; the drain window is shorter */
    c.max_batch_seqs = 1;
    support_server_t s = start_with(&c);
    enum { N = 6 };
    char ids[N][QUEUE_ID_MAX];
    for (int i = 0; i < N; i++) {
        char body[400];
        snprintf(body, sizeof body,
                 "{\"input\":\"item %d: a longer sentence so that each batch of one takes a little while to "
                 "compute on one CPU thread, repeated: a longer sentence so that each batch takes a while\"}", i);
        enqueue(s.port, body, ids[i]);
    }
    queue_conn_t *q = redis_conn();
    queue_stats_t qs = {0};
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(queue_stats(q, &qs), 0);
        if (qs.leased == N) break;
        sleep_ms(10);
    }
    cr_assert_eq(qs.leased, N);
    /* drain for 1 ms: what does not finish is handed back, not failed */
    api_serve_shutdown(s.srv, 1);
    api_serve_destroy(s.srv);
    cr_assert_eq(queue_stats(q, &qs), 0);
    cr_assert_eq(qs.leased, 0, "leases left behind at shutdown");
    cr_assert_eq(qs.failed + qs.dlq + qs.retried, 0, "shutdown counted as failure");
    cr_assert_eq(qs.acked + qs.released, N, "acked %lld + released %lld != %d", (long long)qs.acked,
                 (long long)qs.released, N);
    /* one batch of one at a time cannot finish six within the 1 ms drain */
    cr_assert_geq(qs.released, 1, "nothing was handed back (acked %lld of %d)", (long long)qs.acked, N);
    /* a second server takes the handed-back tasks and finishes them */
    support_server_config(&c);
    s = start_with(&c);
    int st;
    for (int i = 0; i < N; i++) {
        json_t *t = task_wait(s.port, ids[i], 60, &st);
        cr_assert_str_eq(state_of(t), "done", "task %d: %s", i, state_of(t));
        cr_assert_eq(json_integer_value(json_object_get(t, "attempts")), 1, "a hand-back counted as an attempt");
        json_decref(t);
    }
    queue_close(q);
    support_server_stop(&s);
}

/* --result-ttl-s 1: a repeated dedup_key answers the task while its result
 * lives, and a new task after that (it answered an id GET called 404 before). */
Test(serve_tasks, dedup_key_ends_with_the_result, .init = redis_start, .fini = redis_stop, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    c.result_ttl_s = 1;
    support_server_t s = start_with(&c);
    const char *body = "{\"input\":\"dedup\",\"dedup_key\":\"ttl\"}";
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX], d[QUEUE_ID_MAX];
    int st;
    enqueue(s.port, body, a);
    json_decref(task_wait(s.port, a, 30, &st));
    enqueue(s.port, body, b);
    cr_expect_str_eq(a, b);
    sleep_ms(1300);
    json_t *j = call(s.port, "GET", "/v1/tasks/0123", NULL, &st); /* any call: give Redis time to expire */
    json_decref(j);
    enqueue(s.port, body, d);
    cr_expect_str_neq(a, d, "the dedup key outlived its task");
    char path[600];
    snprintf(path, sizeof path, "/v1/tasks/%s", d);
    json_decref(call(s.port, "GET", path, NULL, &st));
    cr_expect_eq(st, 200, "the answered id exists");
    support_server_stop(&s);
}

/* Batch submit, per-task options, and the admin routes of the queue. */
Test(serve_tasks, batch_options_and_admin_routes, .init = redis_start, .fini = redis_stop, .timeout = 90) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s = start_with(&c);
    int st;
    json_t *j = call(s.port, "POST", "/v1/tasks/batch",
                     "{\"tasks\":[{\"input\":\"one\",\"dedup_key\":\"b\"},{\"input\":\"two\",\"dedup_key\":\"b\"},"
                     "{\"op\":\"embed\",\"input\":\"three\",\"priority\":9,\"max_attempts\":5,\"delay_ms\":50,"
                     "\"result_ttl_ms\":60000,\"dimensions\":8}]}", &st);
    cr_assert_eq(st, 202);
    json_t *data = json_object_get(j, "data");
    cr_assert_eq(json_array_size(data), 3);
    const char *id0 = json_string_value(json_object_get(json_array_get(data, 0), "id"));
    cr_expect_str_eq(id0, json_string_value(json_object_get(json_array_get(data, 1), "id")));
    cr_expect(json_is_true(json_object_get(json_array_get(data, 1), "deduplicated")));
    char id2[QUEUE_ID_MAX];
    snprintf(id2, sizeof id2, "%s", json_string_value(json_object_get(json_array_get(data, 2), "id")));
    json_decref(j);
    json_t *t = task_wait(s.port, id2, 30, &st);
    cr_assert_str_eq(state_of(t), "done");
    cr_expect_eq(json_integer_value(json_object_get(t, "max_attempts")), 5);
    cr_expect_eq(json_integer_value(json_object_get(t, "priority")), 9);
    cr_expect_eq(dims_of(t), 8);
    json_decref(t);
    /* the result lives as the task asked */
    queue_conn_t *qc = redis_conn();
    char key[80];
    snprintf(key, sizeof key, "{tq}:t:%s", id2); /* the result is a field of the task's hash */
    long long pttl = support_redis_cmd(&redis, (const char *[]){"PTTL", key, NULL});
    cr_expect(pttl > 0 && pttl <= 60000, "pttl %lld", pttl);
    /* two tasks in the DLQ (put there by hand: the server's intake would
     * answer a bad payload as a result): list, requeue one, purge the rest */
    const char *dead = "deaddeaddeaddeaddeaddeaddeaddead";
    support_redis_cmd(&redis, (const char *[]){"HSET", "{tq}:t:deaddeaddeaddeaddeaddeaddeaddead", "payload", "{}", "state",
                                               "dlq", "attempts", "1", "maxatt", "1", "error", "boom", "score", "1", NULL});
    support_redis_cmd(&redis, (const char *[]){"HSET", "{tq}:t:dead2", "payload", "{}", "state", "dlq", "score", "2", NULL});
    support_redis_cmd(&redis, (const char *[]){"ZADD", "{tq}:dlq", "1000", dead, "2000", "dead2", NULL});
    j = call(s.port, "GET", "/v1/admin/dlq?limit=10", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_array_size(json_object_get(j, "data")), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "error")), "boom");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")), dead);
    json_decref(j);
    j = call(s.port, "GET", "/v1/admin/queue/stats", NULL, &st);
    cr_assert_eq(st, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "dlq")), 2);
    cr_expect_eq(json_integer_value(json_object_get(j, "enqueued")), 2); /* one was a duplicate */
    cr_expect_str_eq(json_string_value(json_object_get(j, "queue")), "tq");
    json_decref(j);
    char body[200];
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", dead);
    j = call(s.port, "POST", "/v1/admin/dlq/requeue", body, &st);
    cr_assert_eq(st, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "requeued")), 1);
    json_decref(j);
    j = call(s.port, "POST", "/v1/admin/dlq/purge", "{\"all\":true}", &st);
    cr_assert_eq(st, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "purged")), 1);
    json_decref(j);
    queue_close(qc);
    support_server_stop(&s);
}
