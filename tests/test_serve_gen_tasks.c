/* tests/test_serve_gen_tasks.c - generation as Redis tasks, with a real
 * redis-server, real `sluice serve` processes and the real SmolLM2 GGUF: a
 * `generate` task's round trip (POST /v1/tasks, GET ?wait=) under a lease
 * shorter than the generation (renewed), its token stream ({q}:s:<id>: the
 * deltas add up to the result's text), and a worker
 * SIGKILLed mid-generation: the task completes on a second worker once the
 * first one's lease runs out. */
#include <criterion/criterion.h>
#include <hiredis.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support_http.h"
#include "tests/support_llm.h"
#include "tests/support_redis.h"
#include "tests/support_server.h"

static support_redis_t redis;

static void redis_up(void) { cr_assert_eq(support_redis_start(&redis, NULL), 0, "%s", redis.err); }
static void redis_down(void) { support_redis_stop(&redis); }

TestSuite(serve_gen_tasks, .init = redis_up, .fini = redis_down, .timeout = 240);

static const char *llm_dir(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", support_llm_path());
    return dirname(dir);
}

static void worker_start(support_proc_t *p, const char *lease_ms) {
    const char *extra[] = {"--models", llm_dir(), "--redis", redis.url, "--lease-ms", lease_ms, "--cpu-threads", "2",
                           NULL};
    cr_assert_eq(support_proc_start(p, extra), 0, "%s", p->err);
    for (int i = 0; i < 200; i++) { /* ready once its Redis connections are up */
        http_resp_t r;
        int ok = http_get(p->port, "/readyz", &r) == 0 && r.status == 200;
        http_resp_free(&r);
        if (ok) return;
        usleep(50000);
    }
    cr_assert_fail("the worker never became ready");
}

static void enqueue(int port, const char *body, char id[64]) {
    http_resp_t r;
    cr_assert_eq(http_post_json(port, "/v1/tasks", body, &r), 0);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    json_t *o = json_loads(r.body, 0, NULL);
    snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);
    http_resp_free(&r);
}

/* GET /v1/tasks/{id}?wait=: the task object once it has ended. */
static json_t *wait_task(int port, const char *id, int seconds) {
    char path[160];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=%d", id, seconds);
    http_resp_t r;
    cr_assert_eq(http_request(port, "GET", path, NULL, NULL, 0, &r, (seconds + 30) * 1000), 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    json_t *o = json_loads(r.body, 0, NULL);
    http_resp_free(&r);
    return o;
}

/* The task's stream: text of choice 0 under the last token, the entry count and the finish seen. */
static int read_stream(const char *id, char *text, size_t cap, char *finish, size_t fcap) {
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    cr_assert(c && !c->err);
    char key[128];
    snprintf(key, sizeof key, "{sluice}:s:%s", id);
    redisReply *r = redisCommand(c, "XRANGE %s - +", key);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY);
    int n = (int)r->elements;
    char last_token[32] = "";
    text[0] = finish[0] = '\0';
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *f = r->element[i]->element[1]; /* token T field V */
        const char *tok = f->element[1]->str, *field = f->element[2]->str, *val = f->element[3]->str;
        if (strcmp(tok, last_token)) { /* a new run of the task starts over */
            snprintf(last_token, sizeof last_token, "%s", tok);
            text[0] = finish[0] = '\0';
        }
        json_t *o = json_loads(val, 0, NULL);
        cr_assert(o, "entry %s is not JSON", val);
        if (!strcmp(field, "delta") && json_integer_value(json_object_get(o, "index")) == 0)
            strncat(text, json_string_value(json_object_get(o, "text")), cap - strlen(text) - 1);
        if (!strcmp(field, "done")) snprintf(finish, fcap, "%s", json_string_value(json_object_get(o, "finish_reason")));
        json_decref(o);
    }
    freeReplyObject(r);
    r = redisCommand(c, "PTTL %s", key);
    cr_expect(r && r->integer > 0, "the stream has no TTL");
    freeReplyObject(r);
    redisFree(c);
    return n;
}

Test(serve_gen_tasks, generate_round_trip_and_token_stream) {
    support_proc_t w;
    worker_start(&w, "1000"); /* a lease shorter than the generation: it must be renewed */
    char id[64];
    /* a bad field is refused before anything is queued */
    http_resp_t r;
    cr_assert_eq(http_post_json(w.port, "/v1/tasks", "{\"op\":\"generate\",\"prompt\":\"x\",\"max_tokns\":3}", &r), 0);
    cr_expect_eq(r.status, 400, "%s", r.body);
    cr_expect(strstr(r.body, "\"param\":\"max_tokns\""), "%s", r.body);
    http_resp_free(&r);
    enqueue(w.port,
            "{\"op\":\"generate\",\"messages\":[{\"role\":\"user\",\"content\":\"Count from 1 to 300, separated by commas.\"}],"
            "\"max_tokens\":1000,\"temperature\":0,\"priority\":3}",
            id);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *t = wait_task(w.port, id, 60);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_str_eq(json_string_value(json_object_get(t, "state")), "done", "%s", json_dumps(t, 0));
    double took = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    cr_expect_gt(took, 2.5, "generation took %.2f s, within a lease and a reap: renewal untested", took);
    json_t *res = json_object_get(t, "result");
    cr_expect_str_eq(json_string_value(json_object_get(res, "object")), "chat.completion");
    json_t *c0 = json_array_get(json_object_get(res, "choices"), 0);
    const char *text = json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
    const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
    cr_assert(text && *text, "no text");
    cr_expect_gt(json_integer_value(json_object_get(json_object_get(res, "usage"), "completion_tokens")), 0);
    cr_expect_eq(json_integer_value(json_object_get(t, "attempts")), 1, "the lease lapsed while it generated");
    char streamed[4096], sfin[32];
    int n = read_stream(id, streamed, sizeof streamed, sfin, sizeof sfin);
    cr_expect_gt(n, 1, "the stream holds %d entries", n);
    cr_expect_str_eq(streamed, text, "the stream's text differs from the result");
    cr_expect_str_eq(sfin, fin);
    json_decref(t);
    cr_expect_eq(support_proc_stop(&w, SIGTERM, 60000), 0);
}

Test(serve_gen_tasks, sigkilled_worker_mid_generation_loses_nothing) {
    support_proc_t a, b;
    worker_start(&a, "1500");
    char id[64];
    /* counting goes on (greedy): long enough to kill the worker in the middle */
    enqueue(a.port, "{\"op\":\"generate\",\"prompt\":\"1, 2, 3, 4, 5,\",\"max_tokens\":400,\"temperature\":0}", id);
    char key[128], text[4096], fin[32];
    snprintf(key, sizeof key, "{sluice}:s:%s", id);
    int n = 0;
    for (int i = 0; i < 600 && n < 3; i++) { /* it is generating: some text is out */
        n = (int)support_redis_cmd(&redis, (const char *[]){"XLEN", key, NULL});
        usleep(50000);
    }
    cr_assert_geq(n, 3, "the task never started generating");
    kill(a.pid, SIGKILL);
    waitpid(a.pid, NULL, 0);
    a.pid = 0;
    worker_start(&b, "1500");
    json_t *t = wait_task(b.port, id, 120);
    cr_assert_str_eq(json_string_value(json_object_get(t, "state")), "done", "%s", json_dumps(t, 0));
    cr_expect_geq(json_integer_value(json_object_get(t, "attempts")), 2, "the task was not run again");
    json_t *c0 = json_array_get(json_object_get(json_object_get(t, "result"), "choices"), 0);
    const char *result = json_string_value(json_object_get(c0, "text"));
    cr_assert(result && strlen(result) > 20, "short result: %s", result ? result : "(none)");
    read_stream(id, text, sizeof text, fin, sizeof fin);
    cr_expect_str_eq(text, result, "the second run's stream differs from its result");
    json_decref(t);
    support_proc_stop(&a, SIGKILL, 1000);
    cr_expect_eq(support_proc_stop(&b, SIGTERM, 60000), 0);
}
