/* tests/test_queue.h - shared set-up of the queue suites: a private
 * redis-server per test (tests/support_redis.h) and connections to it. */
#ifndef SLUICE_TEST_QUEUE_H
#define SLUICE_TEST_QUEUE_H

#include <criterion/criterion.h>
#include <hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "queue/queue.h"
#include "tests/support_redis.h"

/* Criterion counts a passed test as passed even when LeakSanitizer reports
 * at exit, so under ASan each test asks for a leak check at teardown. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define assert_no_leaks() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)")
#else
#define assert_no_leaks() ((void)0)
#endif

static support_redis_t srv;

static inline void redis_up(void) {
    cr_assert_eq(support_redis_start(&srv, NULL), 0, "%s", srv.err);
}

static inline void redis_down(void) {
    support_redis_stop(&srv);
    assert_no_leaks();
}

/* Defaults tuned for tests: short timeouts, no jitter unless a test sets it. */
static inline queue_config_t test_config(void) {
    queue_config_t cfg;
    queue_config_defaults(&cfg);
    cfg.url = srv.url;
    cfg.name = "tq";
    cfg.backoff_base_ms = 100;
    cfg.backoff_cap_ms = 400;
    cfg.backoff_jitter = 0;
    cfg.reconnect_ms = 5000;
    return cfg;
}

static inline queue_conn_t *open_with(const queue_config_t *cfg) {
    char err[512];
    queue_conn_t *c = queue_connect(cfg, err, sizeof err);
    cr_assert_not_null(c, "connect: %s", err);
    return c;
}

static inline queue_conn_t *open_default(void) {
    queue_config_t cfg = test_config();
    return open_with(&cfg);
}

static inline void put(queue_conn_t *c, const char *payload, int priority, char id[QUEUE_ID_MAX]) {
    queue_task_t t = {.payload = payload, .payload_len = strlen(payload), .priority = priority};
    int rc = queue_enqueue(c, &t, id, NULL);
    cr_assert_eq(rc, 0, "enqueue: %s", queue_last_error(c));
}

static inline void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Milliseconds since t0 (CLOCK_MONOTONIC): timing checks that a loaded
 * machine could break assert only when the test ran fast enough. */
static inline double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1e3 + (t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The Redis clock (TIME) in unix ms: the queue's own time source. */
static inline long long redis_now_ms(void) {
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    cr_assert(rc && !rc->err, "connect for TIME");
    redisReply *r = redisCommand(rc, "TIME");
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    long long ms = atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000;
    freeReplyObject(r);
    redisFree(rc);
    return ms;
}

static inline queue_stats_t stats_of(queue_conn_t *c) {
    queue_stats_t s;
    cr_assert_eq(queue_stats(c, &s), 0, "stats: %s", queue_last_error(c));
    return s;
}

static inline queue_state_t state_of(queue_conn_t *c, const char *id) {
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0, "get %s: %s", id, queue_last_error(c));
    queue_state_t s = info.state;
    queue_info_clear(&info);
    return s;
}

#endif
