/* tests/test_queue.c - every queue operation against a real redis-server:
 * enqueue, dedup, priority order, delay, TTL expiry, lease/renew/ack, backoff
 * schedule, DLQ, cancellation in both states, signing, release, reap, wait,
 * backpressure; plus the URL parser and the payload codec. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "queue/events.h"
#include "queue/scripts.h"
#include "tests/test_queue.h"

TestSuite(queue, .init = redis_up, .fini = redis_down, .timeout = 60);

Test(queue, enqueue_then_get) {
    queue_conn_t *c = open_default();
    char id[QUEUE_ID_MAX];
    put(c, "{\"x\":1}", 3, id);
    cr_expect_eq(strlen(id), 32);
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0, "%s", queue_last_error(c));
    cr_expect_eq(info.state, QUEUE_S_READY);
    cr_expect_eq(info.priority, 3);
    cr_expect_eq(info.attempts, 0);
    cr_expect_eq(info.max_attempts, 3);
    cr_expect_str_eq(info.payload, "{\"x\":1}");
    cr_expect_null(info.result);
    cr_expect_gt(info.enqueued_ms, 1700000000000LL);
    queue_info_clear(&info);
    cr_expect_eq(queue_get(c, "nosuchtask", &info), QUEUE_ENOTFOUND);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.ready, 1);
    cr_expect_eq(s.enqueued, 1);
    /* all keys carry the hash tag */
    cr_expect_eq(support_redis_cmd(&srv, (const char *[]){"EXISTS", "{tq}:ready", NULL}), 1);
    queue_close(c);
}

Test(queue, dedup_returns_the_existing_task) {
    queue_conn_t *c = open_default();
    queue_task_t t = {.payload = "a", .payload_len = 1, .dedup_key = "order-17"};
    char id1[QUEUE_ID_MAX], id2[QUEUE_ID_MAX];
    int o1 = -1, o2 = -1;
    cr_assert_eq(queue_enqueue(c, &t, id1, &o1), 0);
    t.payload = "b";
    cr_assert_eq(queue_enqueue(c, &t, id2, &o2), 0);
    cr_expect_eq(o1, QUEUE_ENQ_NEW);
    cr_expect_eq(o2, QUEUE_ENQ_DEDUPED);
    cr_expect_str_eq(id1, id2);
    /* duplicates within one batch too */
    queue_task_t many[3] = {t, t, {.payload = "c", .payload_len = 1, .dedup_key = "other"}};
    many[0].dedup_key = many[1].dedup_key = "batch";
    char ids[3][QUEUE_ID_MAX];
    int st[3];
    cr_assert_eq(queue_enqueue_many(c, many, 3, ids, st), 0);
    cr_expect_eq(st[0], QUEUE_ENQ_NEW);
    cr_expect_eq(st[1], QUEUE_ENQ_DEDUPED);
    cr_expect_eq(st[2], QUEUE_ENQ_NEW);
    cr_expect_str_eq(ids[0], ids[1]);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.ready, 3);
    cr_expect_eq(s.deduped, 2);
    queue_close(c);
}

/* The dedup key never answers with an id that is gone: with results kept
 * 200 ms and dedup keys an hour, the same key after the task's result
 * expired makes a new task (it answered the vanished id before). A dedup
 * key ends with its task: ack, cancel and expiry shorten it to the result's
 * lifetime. */
Test(queue, dedup_key_dies_with_its_task) {
    queue_config_t cfg = test_config();
    cfg.result_ttl_ms = 200;
    cfg.dedup_ttl_ms = 3600000;
    queue_conn_t *c = open_with(&cfg);
    queue_task_t t = {.payload = "a", .payload_len = 1, .dedup_key = "short-lived"};
    char id1[QUEUE_ID_MAX], id2[QUEUE_ID_MAX], id3[QUEUE_ID_MAX];
    int o = -1;
    cr_assert_eq(queue_enqueue(c, &t, id1, &o), 0, "%s", queue_last_error(c));
    queue_lease_t l;
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 5000, &l, &got), 0);
    cr_assert_eq(got, 1);
    cr_assert_eq(queue_ack(c, l.id, l.token, "{}", 2, 0), 0, "%s", queue_last_error(c));
    queue_lease_clear(&l, 1);
    /* while the result lives, the key answers the finished task */
    cr_assert_eq(queue_enqueue(c, &t, id2, &o), 0);
    cr_expect_eq(o, QUEUE_ENQ_DEDUPED);
    cr_expect_str_eq(id1, id2);
    long long pttl = support_redis_cmd(&srv, (const char *[]){"PTTL", "{tq}:dd:short-lived", NULL});
    cr_expect(pttl > 0 && pttl <= 200, "the dedup key lives as long as the result (pttl %lld)", pttl);
    nap(300);
    cr_assert_eq(queue_enqueue(c, &t, id3, &o), 0);
    cr_expect_eq(o, QUEUE_ENQ_NEW, "the key of a task that is gone must not answer");
    cr_expect_str_neq(id1, id3);
    queue_info_t info;
    cr_expect_eq(queue_get(c, id3, &info), 0, "the answered id exists");
    queue_info_clear(&info);
    /* a key whose task hash went away by other means (a DLQ purge, a DEL) does not answer either */
    char path[128];
    snprintf(path, sizeof path, "{tq}:t:%s", id3);
    support_redis_cmd(&srv, (const char *[]){"DEL", path, NULL});
    support_redis_cmd(&srv, (const char *[]){"ZREM", "{tq}:ready", id3, NULL});
    queue_task_t many[2] = {t, {.payload = "z", .payload_len = 1}};
    char ids[2][QUEUE_ID_MAX];
    int st[2];
    cr_assert_eq(queue_enqueue_many(c, many, 2, ids, st), 0);
    cr_expect_eq(st[0], QUEUE_ENQ_NEW);
    cr_expect_str_neq(ids[0], id3);
    /* cancel ends the key with the task too */
    queue_task_t t2 = {.payload = "c", .payload_len = 1, .dedup_key = "cancel-me"};
    cr_assert_eq(queue_enqueue(c, &t2, id1, &o), 0);
    cr_assert_eq(queue_cancel(c, id1, &o), 0);
    pttl = support_redis_cmd(&srv, (const char *[]){"PTTL", "{tq}:dd:cancel-me", NULL});
    cr_expect(pttl > 0 && pttl <= 200, "cancel: pttl %lld", pttl);
    queue_close(c);
}

/* A task's own result lifetime wins over the acker's. */
Test(queue, result_ttl_per_task) {
    queue_conn_t *c = open_default();
    queue_task_t t = {.payload = "a", .payload_len = 1, .result_ttl_ms = 150};
    char id[QUEUE_ID_MAX], key[64];
    cr_assert_eq(queue_enqueue(c, &t, id, NULL), 0, "%s", queue_last_error(c));
    queue_lease_t l;
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 5000, &l, &got), 0);
    cr_assert_eq(queue_ack(c, l.id, l.token, "{}", 2, 3600000), 0, "%s", queue_last_error(c));
    queue_lease_clear(&l, 1);
    snprintf(key, sizeof key, "{tq}:t:%s", id); /* the result is a field of the task's hash */
    long long pttl = support_redis_cmd(&srv, (const char *[]){"PTTL", key, NULL});
    cr_expect(pttl > 0 && pttl <= 150, "result pttl %lld", pttl);
    t.result_ttl_ms = -1;
    cr_expect_eq(queue_enqueue(c, &t, id, NULL), QUEUE_EINVAL);
    queue_close(c);
}

/* A task finished by an older sluice kept its result in its own key
 * {q}:r:<id>; get reads it there when the hash has none (and when the hash
 * itself is gone), so results survive an upgrade for their TTL. */
Test(queue, result_of_an_older_ack_is_read_from_its_own_key) {
    queue_conn_t *c = open_default();
    char id[QUEUE_ID_MAX], tkey[80], rkey[80];
    put(c, "a", 0, id);
    queue_lease_t l;
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 5000, &l, &got), 0);
    cr_assert_eq(queue_ack(c, l.id, l.token, "new", 3, 60000), 0, "%s", queue_last_error(c));
    queue_lease_clear(&l, 1);
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_str_eq(info.result, "new");
    queue_info_clear(&info);
    /* the layout an older ack left: no result field, the result in {q}:r:<id> */
    snprintf(tkey, sizeof tkey, "{tq}:t:%s", id);
    snprintf(rkey, sizeof rkey, "{tq}:r:%s", id);
    support_redis_cmd(&srv, (const char *[]){"HDEL", tkey, "result", NULL});
    support_redis_cmd(&srv, (const char *[]){"SET", rkey, "old", "PX", "60000", NULL});
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DONE);
    cr_expect_str_eq(info.result ? info.result : "(null)", "old");
    queue_info_clear(&info);
    support_redis_cmd(&srv, (const char *[]){"DEL", tkey, NULL});
    cr_assert_eq(queue_get(c, id, &info), 0, "the old result key alone still answers");
    cr_expect_str_eq(info.result ? info.result : "(null)", "old");
    queue_info_clear(&info);
    queue_close(c);
}

/* Task ends are published only while a listener has marked the queue
 * ({q}:subs). The waiter's order (subscribe, mark, look, then sleep on
 * messages) misses nothing: an end before the mark is seen by the look, an
 * end after it is published. */
Test(queue, task_ends_are_published_only_while_listened_to) {
    queue_conn_t *c = open_default();
    char err[256], msg[512], a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    const char *names[] = {"tq"};
    queue_events_t *ev = queue_events_open(srv.url, names, 1, 1000, err, sizeof err);
    cr_assert_not_null(ev, "%s", err);
    put(c, "a", 0, a);
    put(c, "b", 0, b);
    queue_lease_t l[2];
    int got = 0, q = -1;
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 2);
    /* nobody marked: a ends unpublished, and a look after it sees it */
    cr_assert_eq(queue_ack(c, a, l[0].token, "{}", 2, 60000), 0, "%s", queue_last_error(c));
    cr_expect_eq(queue_events_next(ev, 200, &q, msg, sizeof msg), 0, "published with nobody listening: %s", msg);
    cr_expect_eq(queue_mark_listening(c, 0), QUEUE_EINVAL);
    cr_assert_eq(queue_mark_listening(c, 10000), 0, "%s", queue_last_error(c));
    cr_expect_eq(state_of(c, a), QUEUE_S_DONE, "the look after the mark sees the unpublished end");
    cr_expect_eq(state_of(c, b), QUEUE_S_LEASED);
    /* marked: b's end is published */
    cr_assert_eq(queue_ack(c, b, l[1].token, "{}", 2, 60000), 0, "%s", queue_last_error(c));
    cr_assert_eq(queue_events_next(ev, 2000, &q, msg, sizeof msg), 1, "an end while listened to was not published");
    char want[80];
    snprintf(want, sizeof want, "%s done", b);
    cr_expect_str_eq(msg, want);
    /* the mark runs out: no more messages */
    support_redis_cmd(&srv, (const char *[]){"PEXPIRE", "{tq}:subs", "1", NULL});
    nap(20);
    char d[QUEUE_ID_MAX];
    put(c, "d", 0, d);
    cr_assert_eq(queue_cancel(c, d, NULL), 0);
    cr_expect_eq(queue_events_next(ev, 200, &q, msg, sizeof msg), 0, "published after the mark ran out: %s", msg);
    queue_lease_clear(l, (size_t)got);
    queue_events_close(ev);
    queue_close(c);
}

/* Put a finished task's hash back in ready, as an attacker replaying a captured task would. */
static void back_to_ready(const char *id) {
    char tkey[80];
    snprintf(tkey, sizeof tkey, "{tq}:t:%s", id);
    support_redis_cmd(&srv, (const char *[]){"HSET", tkey, "state", "ready", NULL});
    support_redis_cmd(&srv, (const char *[]){"PERSIST", tkey, NULL});
    support_redis_cmd(&srv, (const char *[]){"ZADD", "{tq}:ready", "1", id, NULL});
}

static long long tomb_pttl(const char *id) {
    char key[80];
    snprintf(key, sizeof key, "{tq}:tomb:%s", id);
    return support_redis_cmd(&srv, (const char *[]){"PTTL", key, NULL});
}

/* A finished signed task leaves a tombstone written by the script that ends
 * it, not by a later command a crash could skip: checked inside one MULTI
 * with the ack script itself, then for the DLQ, cancel and expiry. A replay
 * after such an ack is refused; a requeue from the DLQ runs again. */
Test(queue, signed_task_tombstone_is_written_by_the_ending_script) {
    static const unsigned char key[] = "tomb key";
    queue_config_t cfg = test_config();
    cfg.signing_key = key;
    cfg.signing_key_len = sizeof key - 1;
    cfg.result_ttl_ms = 60000;
    cfg.signed_max_age_ms = 100000; /* tombstones live 100 s + 5 min */
    cfg.max_attempts = 1;
    queue_conn_t *c = open_with(&cfg);
    char id[QUEUE_ID_MAX];
    put(c, "{}", 0, id);
    queue_lease_t l[2];
    int got = 0;
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 1, "%s", queue_last_error(c));
    /* the ack script and the checks in one transaction: nothing else runs between */
    redisContext *rc = redisConnect("127.0.0.1", srv.port);
    cr_assert(rc && !rc->err);
    size_t len = strlen(queue_script_prelude) + strlen(queue_script_body[QS_ACK]) + 1;
    char *lua = malloc(len), token[32];
    snprintf(lua, len, "%s%s", queue_script_prelude, queue_script_body[QS_ACK]);
    snprintf(token, sizeof token, "%lld", (long long)l[0].token);
    freeReplyObject(redisCommand(rc, "MULTI"));
    freeReplyObject(redisCommand(rc, "EVAL %s 1 {tq}:seq 60000 %s %s {}", lua, id, token));
    freeReplyObject(redisCommand(rc, "PTTL {tq}:tomb:%s", id));
    redisReply *r = redisCommand(rc, "EXEC");
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "EXEC");
    cr_assert_eq(r->element[0]->type, REDIS_REPLY_ARRAY, "ack: %s", r->element[0]->str ? r->element[0]->str : "?");
    cr_expect_eq(r->element[0]->element[0]->integer, 0, "acked");
    long long ttl = r->element[1]->integer;
    cr_expect(ttl > 390000 && ttl <= 400000, "the ack script left no tombstone of the right life (PTTL %lld)", ttl);
    freeReplyObject(r);
    free(lua);
    redisFree(rc);
    queue_lease_clear(l, (size_t)got);
    /* replayed after that ack alone: refused */
    back_to_ready(id);
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    cr_expect_eq(got, 0, "a finished signed task ran again");
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_str_eq(info.error ? info.error : "", "replayed");
    cr_expect_eq(info.state, QUEUE_S_DLQ);
    queue_info_clear(&info);
    cr_expect_eq(stats_of(c).bad_signature, 1);
    /* failed into the DLQ: a tombstone; requeued by an operator: gone, and it runs */
    char f[QUEUE_ID_MAX];
    put(c, "{}", 0, f);
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 1);
    int outcome = -1;
    cr_assert_eq(queue_fail(c, f, l[0].token, "boom", &outcome, NULL), 0);
    cr_expect_eq(outcome, QUEUE_FAIL_DEAD);
    queue_lease_clear(l, (size_t)got);
    cr_expect_gt(tomb_pttl(f), 390000, "a task failed into the DLQ left no tombstone");
    cr_assert_eq(queue_dlq_requeue(c, f, NULL), 0);
    cr_expect_eq(tomb_pttl(f), -2, "a requeue from the DLQ kept the tombstone");
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    cr_expect_eq(got, 1, "a task requeued from the DLQ did not run");
    queue_lease_clear(l, (size_t)got);
    /* cancelled while waiting, and expired before it ran */
    char x[QUEUE_ID_MAX], e[QUEUE_ID_MAX];
    put(c, "{}", 0, x);
    cr_assert_eq(queue_cancel(c, x, NULL), 0);
    cr_expect_gt(tomb_pttl(x), 390000, "a cancelled signed task left no tombstone");
    queue_task_t t = {.payload = "{}", .payload_len = 2, .ttl_ms = 1};
    cr_assert_eq(queue_enqueue(c, &t, e, NULL), 0);
    nap(20);
    queue_reap_t rp;
    cr_assert_eq(queue_reap(c, 1, 0, &rp), 0);
    cr_expect_eq(rp.expired, 1);
    cr_expect_gt(tomb_pttl(e), 390000, "an expired signed task left no tombstone");
    /* an unsigned task leaves none */
    queue_conn_t *plain = open_default();
    char u[QUEUE_ID_MAX];
    put(plain, "{}", 0, u);
    cr_assert_eq(queue_lease(plain, 2, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 1);
    cr_assert_eq(queue_ack(plain, u, l[0].token, "{}", 2, 0), 0);
    queue_lease_clear(l, (size_t)got);
    cr_expect_eq(tomb_pttl(u), -2, "an unsigned task left a tombstone");
    queue_close(plain);
    queue_close(c);
}

/* A queue records the protocol version of its first client; a client of
 * another version refuses it with a message that says so. */
Test(queue, protocol_version_is_stored_and_checked) {
    queue_conn_t *c = open_default();
    queue_close(c);
    char want[16];
    snprintf(want, sizeof want, "%d", QUEUE_PROTOCOL_VERSION);
    cr_expect_eq(support_redis_cmd(&srv, (const char *[]){"EXISTS", "{tq}:protocol", NULL}), 1);
    support_redis_cmd(&srv, (const char *[]){"SET", "{tq}:protocol", "999", NULL});
    queue_config_t cfg = test_config();
    char err[512] = "";
    c = queue_connect(&cfg, err, sizeof err);
    cr_expect_null(c, "a queue of protocol 999 must be refused");
    queue_close(c);
    cr_expect(strstr(err, "protocol version 999") && strstr(err, want), "%s", err);
}

/* What the C code runs is the text of queue/lua/ (the tests run from the repository root). */
Test(queue, embedded_scripts_are_the_lua_files) {
    for (int i = -1; i < QS_COUNT; i++) {
        char path[128];
        snprintf(path, sizeof path, "queue/lua/%s.lua", i < 0 ? "prelude" : queue_script_name[i]);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        static char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        cr_expect_str_eq(i < 0 ? queue_script_prelude : queue_script_body[i], buf, "%s", path);
    }
}

Test(queue, strict_priority_then_fifo) {
    queue_conn_t *c = open_default();
    const struct { const char *p; int prio; } in[] = {{"a", 1}, {"b", 5}, {"c", 5}, {"d", 0}, {"e", 255}, {"f", 1}};
    char id[QUEUE_ID_MAX];
    for (size_t i = 0; i < 6; i++) put(c, in[i].p, in[i].prio, id);
    queue_lease_t l[6];
    int got = 0;
    cr_assert_eq(queue_lease(c, 6, "w", 5000, l, &got), 0, "%s", queue_last_error(c));
    cr_assert_eq(got, 6);
    const char *want = "ebcafd";
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(l[i].payload[0], want[i], "position %d: got %s", i, l[i].payload);
        cr_expect_eq(l[i].attempt, 1);
        cr_expect_gt(l[i].lease_until_ms, l[i].enqueued_ms);
    }
    for (int i = 1; i < 6; i++) cr_expect_gt(l[i].token, l[i - 1].token, "fencing tokens increase");
    queue_lease_clear(l, got);
    queue_task_t bad = {.payload = "x", .payload_len = 1, .priority = 256};
    cr_expect_eq(queue_enqueue(c, &bad, id, NULL), QUEUE_EINVAL);
    queue_close(c);
}

Test(queue, delayed_task_waits_for_its_time) {
    queue_conn_t *c = open_default();
    queue_task_t t = {.payload = "later", .payload_len = 5, .delay_ms = 300};
    char id[QUEUE_ID_MAX];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(queue_enqueue(c, &t, id, NULL), 0);
    queue_lease_t l[1];
    int got = -1;
    cr_assert_eq(queue_lease(c, 1, "w", 1000, l, &got), 0);
    if (ms_since(&t0) < 300) {
        cr_expect_eq(got, 0, "not before its time");
        nap(400);
        cr_assert_eq(queue_lease(c, 1, "w", 1000, l, &got), 0);
    }
    cr_assert_eq(got, 1);
    cr_expect_str_eq(l[0].id, id);
    queue_lease_clear(l, got);
    queue_close(c);
}

Test(queue, ttl_expiry_at_lease_and_at_reap) {
    queue_conn_t *c = open_default();
    queue_task_t t = {.payload = "x", .payload_len = 1, .ttl_ms = 150};
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(c, &t, a, NULL), 0);
    nap(250);
    queue_lease_t l[2];
    int got = -1;
    cr_assert_eq(queue_lease(c, 2, "w", 1000, l, &got), 0);
    cr_expect_eq(got, 0, "an expired task is never handed out");
    queue_info_t info;
    cr_assert_eq(queue_get(c, a, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_EXPIRED);
    cr_assert_not_null(info.result);
    cr_expect(strstr(info.result, "expired") != NULL, "result says so: %s", info.result);
    queue_info_clear(&info);

    t.delay_ms = 1000; /* still delayed when its deadline passes */
    cr_assert_eq(queue_enqueue(c, &t, b, NULL), 0);
    nap(250);
    queue_reap_t r;
    cr_assert_eq(queue_reap(c, 1, 0, &r), 0, "%s", queue_last_error(c));
    cr_expect_eq(r.swept, 1);
    cr_expect_eq(r.expired, 1);
    cr_expect_eq(state_of(c, b), QUEUE_S_EXPIRED);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.expired, 2);
    cr_expect_eq(s.ready + s.delayed + s.leased, 0);
    queue_close(c);
}

Test(queue, ack_is_fenced_and_idempotent) {
    queue_conn_t *c = open_default();
    char id[QUEUE_ID_MAX];
    put(c, "job", 0, id);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w1", 5000, l, &got), 0);
    cr_assert_eq(got, 1);
    cr_expect_eq(state_of(c, id), QUEUE_S_LEASED);
    cr_expect_eq(queue_ack(c, id, l[0].token + 1, "no", 2, 0), QUEUE_ESTALE, "a wrong token cannot ack");
    cr_assert_eq(queue_ack(c, id, l[0].token, "{\"ok\":1}", 8, 60000), 0, "%s", queue_last_error(c));
    cr_expect_eq(queue_ack(c, id, l[0].token, "{\"ok\":1}", 8, 60000), 0, "a repeated ack is harmless");
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DONE);
    cr_expect_str_eq(info.result, "{\"ok\":1}");
    cr_expect_str_eq(info.worker, "w1");
    queue_info_clear(&info);
    char rkey[80], tkey[80];
    snprintf(rkey, sizeof rkey, "{tq}:r:%s", id);
    snprintf(tkey, sizeof tkey, "{tq}:t:%s", id);
    long long pttl = support_redis_cmd(&srv, (const char *[]){"PTTL", tkey, NULL});
    cr_expect(pttl > 50000 && pttl <= 60000, "result TTL %lld", pttl);
    cr_expect_eq(support_redis_cmd(&srv, (const char *[]){"EXISTS", rkey, NULL}), 0, "no result key of its own");
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.acked, 1);
    cr_expect_eq(s.leased, 0);
    queue_lease_clear(l, got);
    queue_close(c);
}

Test(queue, renew_extends_and_reports_lost) {
    queue_conn_t *c = open_default();
    char id[QUEUE_ID_MAX];
    put(c, "job", 0, id);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 200, l, &got), 0);
    cr_assert_eq(got, 1);
    queue_ref_t refs[2] = {{id, l[0].token}, {id, l[0].token - 1}};
    int st[2];
    cr_assert_eq(queue_renew(c, refs, 2, 2000, st), 0, "%s", queue_last_error(c));
    cr_expect_eq(st[0], QUEUE_RENEWED);
    cr_expect_eq(st[1], QUEUE_LOST);
    nap(350);
    queue_reap_t r;
    cr_assert_eq(queue_reap(c, 1, 0, &r), 0);
    cr_expect_eq(r.reaped, 0, "a renewed lease is not reaped");
    cr_expect_eq(state_of(c, id), QUEUE_S_LEASED);
    queue_lease_clear(l, got);
    queue_close(c);
}

Test(queue, backoff_schedule_then_dlq) {
    queue_config_t cfg = test_config();
    cfg.backoff_base_ms = 100;
    cfg.backoff_cap_ms = 300;
    queue_conn_t *c = open_with(&cfg);
    queue_task_t t = {.payload = "flaky", .payload_len = 5, .max_attempts = 5};
    char id[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(c, &t, id, NULL), 0);
    const int64_t want[] = {100, 200, 300, 300}; /* min(cap, base*2^(attempt-1)) */
    for (int attempt = 1; attempt <= 5; attempt++) {
        queue_lease_t l[1];
        int got = 0;
        for (int tries = 0; tries < 40 && got == 0; tries++) {
            cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
            if (!got) nap(25);
        }
        cr_assert_eq(got, 1, "attempt %d delivered", attempt);
        cr_expect_eq(l[0].attempt, attempt);
        int outcome = -1;
        int64_t delay = -1;
        char why[32];
        snprintf(why, sizeof why, "boom %d", attempt);
        long long before = redis_now_ms();
        cr_assert_eq(queue_fail(c, id, l[0].token, why, &outcome, &delay), 0, "%s", queue_last_error(c));
        long long after = redis_now_ms();
        if (attempt < 5) {
            cr_expect_eq(outcome, QUEUE_FAIL_RETRY);
            cr_expect_eq(delay, want[attempt - 1], "attempt %d delay", attempt);
            queue_info_t info;
            cr_assert_eq(queue_get(c, id, &info), 0);
            cr_expect_eq(info.state, QUEUE_S_DELAYED);
            cr_expect_str_eq(info.error, why);
            /* due exactly `delay` after the fail, on the Redis clock */
            cr_expect(info.due_ms >= before + delay && info.due_ms <= after + delay,
                      "due %lld not in [%lld, %lld] + %lld", (long long)info.due_ms, before, after, (long long)delay);
            queue_info_clear(&info);
        } else {
            cr_expect_eq(outcome, QUEUE_FAIL_DEAD);
        }
        /* a repeated fail by the same holder reports what happened, changes nothing */
        int again = -1;
        cr_expect_eq(queue_fail(c, id, l[0].token, why, &again, NULL), 0);
        cr_expect_eq(again, outcome);
        queue_lease_clear(l, got);
    }
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DLQ);
    cr_expect_eq(info.attempts, 5);
    cr_expect_str_eq(info.error, "boom 5");
    cr_expect_gt(info.dead_ms, 0);
    queue_info_clear(&info);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.retried, 4);
    cr_expect_eq(s.failed, 1);
    cr_expect_eq(s.dlq, 1);
    queue_close(c);
}

Test(queue, backoff_jitter_stays_in_range) {
    queue_config_t cfg = test_config();
    cfg.backoff_base_ms = 1000;
    cfg.backoff_cap_ms = 1000;
    cfg.backoff_jitter = 0.5;
    queue_conn_t *c = open_with(&cfg);
    int distinct = 0;
    int64_t first = -1;
    for (int i = 0; i < 20; i++) {
        char id[QUEUE_ID_MAX];
        put(c, "j", 0, id);
        queue_lease_t l[1];
        int got = 0;
        cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
        cr_assert_eq(got, 1);
        int64_t delay = -1;
        cr_assert_eq(queue_fail(c, l[0].id, l[0].token, "x", NULL, &delay), 0);
        cr_expect(delay >= 500 && delay <= 1000, "delay %lld", (long long)delay);
        if (first < 0) first = delay;
        else if (delay != first) distinct = 1;
        queue_lease_clear(l, got);
    }
    cr_expect(distinct, "jitter varies the delay");
    queue_close(c);
}

Test(queue, dlq_list_requeue_purge_and_caps) {
    queue_config_t cfg = test_config();
    cfg.max_attempts = 1;
    cfg.dlq_max_length = 4;
    queue_conn_t *c = open_with(&cfg);
    char ids[6][QUEUE_ID_MAX];
    for (int i = 0; i < 6; i++) {
        char p[8];
        snprintf(p, sizeof p, "t%d", i);
        put(c, p, 0, ids[i]);
        queue_lease_t l[1];
        int got = 0, outcome = -1;
        cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
        cr_assert_eq(got, 1);
        cr_assert_eq(queue_fail(c, l[0].id, l[0].token, "bad input", &outcome, NULL), 0);
        cr_expect_eq(outcome, QUEUE_FAIL_DEAD);
        queue_lease_clear(l, got);
    }
    /* capped by count: the two oldest are gone for good */
    queue_dlq_entry_t e[10];
    size_t n = 0;
    cr_assert_eq(queue_dlq_list(c, 0, 10, e, &n), 0, "%s", queue_last_error(c));
    cr_assert_eq(n, 4);
    cr_expect_str_eq(e[0].id, ids[2]);
    cr_expect_str_eq(e[0].error, "bad input");
    cr_expect_eq(e[0].attempts, 1);
    cr_expect_gt(e[0].dead_ms, 0);
    queue_dlq_entries_clear(e, n);
    queue_info_t info;
    cr_expect_eq(queue_get(c, ids[0], &info), QUEUE_ENOTFOUND);

    /* requeue one: back to ready, attempts reset */
    int64_t moved = 0;
    cr_assert_eq(queue_dlq_requeue(c, ids[2], &moved), 0);
    cr_expect_eq(moved, 1);
    cr_expect_eq(queue_dlq_requeue(c, ids[2], &moved), QUEUE_ENOTFOUND);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 1);
    cr_expect_str_eq(l[0].id, ids[2]);
    cr_expect_eq(l[0].attempt, 1);
    cr_assert_eq(queue_ack(c, l[0].id, l[0].token, "ok", 2, 0), 0);
    queue_lease_clear(l, got);

    /* requeue all, fail them again, then purge */
    cr_assert_eq(queue_dlq_requeue(c, NULL, &moved), 0);
    cr_expect_eq(moved, 3);
    cr_expect_eq(stats_of(c).dlq, 0);
    queue_lease_t all[3];
    cr_assert_eq(queue_lease(c, 3, "w", 5000, all, &got), 0);
    cr_assert_eq(got, 3);
    for (int i = 0; i < 3; i++) cr_assert_eq(queue_fail(c, all[i].id, all[i].token, "again", NULL, NULL), 0);
    queue_lease_clear(all, got);
    int64_t removed = 0;
    cr_assert_eq(queue_dlq_purge(c, 1, 0, &removed), 0);
    cr_expect_eq(removed, 2);
    cr_assert_eq(queue_dlq_purge(c, -1, 1, &removed), 0, "older than 1 ms: the rest");
    nap(5);
    cr_assert_eq(queue_dlq_purge(c, 0, 0, &removed), 0);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.dlq, 0);
    cr_expect_eq(s.requeued, 4);
    cr_expect_eq(s.purged, 2 + 3);
    queue_close(c);
}

Test(queue, cancel_waiting_task) {
    queue_conn_t *c = open_default();
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    put(c, "a", 0, a);
    queue_task_t t = {.payload = "b", .payload_len = 1, .delay_ms = 10000};
    cr_assert_eq(queue_enqueue(c, &t, b, NULL), 0);
    int o = -1;
    cr_assert_eq(queue_cancel(c, a, &o), 0, "%s", queue_last_error(c));
    cr_expect_eq(o, QUEUE_CANCELLED_NOW);
    cr_assert_eq(queue_cancel(c, b, &o), 0);
    cr_expect_eq(o, QUEUE_CANCELLED_NOW);
    cr_expect_eq(queue_cancel(c, a, &o), QUEUE_ESTATE, "a task ends once");
    cr_expect_eq(queue_cancel(c, "nosuch", &o), QUEUE_ENOTFOUND);
    cr_expect_eq(state_of(c, a), QUEUE_S_CANCELLED);
    cr_expect_eq(state_of(c, b), QUEUE_S_CANCELLED);
    queue_lease_t l[2];
    int got = -1;
    cr_assert_eq(queue_lease(c, 2, "w", 1000, l, &got), 0);
    cr_expect_eq(got, 0);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.cancelled, 2);
    cr_expect_eq(s.ready + s.delayed, 0);
    queue_close(c);
}

Test(queue, cancel_leased_task_is_reported_by_renew) {
    queue_conn_t *c = open_default();
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX], d[QUEUE_ID_MAX];
    put(c, "a", 2, a);
    put(c, "b", 1, b);
    put(c, "d", 0, d);
    queue_lease_t l[3];
    int got = 0, o = -1;
    cr_assert_eq(queue_lease(c, 3, "w", 300, l, &got), 0);
    cr_assert_eq(got, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(queue_cancel(c, l[i].id, &o), 0);
        cr_expect_eq(o, QUEUE_CANCEL_PENDING);
    }
    queue_ref_t refs[3] = {{l[0].id, l[0].token}, {l[1].id, l[1].token}, {l[2].id, l[2].token}};
    int st[3];
    cr_assert_eq(queue_renew(c, refs, 1, 1000, st), 0);
    cr_expect_eq(st[0], QUEUE_CANCEL_REQUESTED);
    /* the batcher drops it and reports it failed: it ends cancelled, not retried */
    int outcome = -1;
    cr_assert_eq(queue_fail(c, a, l[0].token, "dropped", &outcome, NULL), 0);
    cr_expect_eq(outcome, QUEUE_FAIL_CANCELLED);
    cr_expect_eq(state_of(c, a), QUEUE_S_CANCELLED);
    /* released: cancelled too */
    cr_assert_eq(queue_release(c, &refs[1], 1, st), 0);
    cr_expect_eq(st[0], 1);
    cr_expect_eq(state_of(c, b), QUEUE_S_CANCELLED);
    /* left to expire: the reaper ends it cancelled */
    nap(400);
    queue_reap_t r;
    cr_assert_eq(queue_reap(c, 1, 0, &r), 0);
    cr_expect_eq(r.cancelled, 1);
    cr_expect_eq(state_of(c, d), QUEUE_S_CANCELLED);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.cancelled, 3);
    cr_expect_eq(s.leased + s.ready + s.delayed + s.dlq, 0);
    queue_lease_clear(l, got);
    queue_close(c);
}

Test(queue, signing_good_bad_missing) {
    static const unsigned char key[] = "the right key", other[] = "a stranger's key";
    queue_config_t cfg = test_config();
    cfg.signing_key = key;
    cfg.signing_key_len = sizeof key - 1;
    queue_conn_t *signer = open_with(&cfg);
    cfg.signing_key = other;
    cfg.signing_key_len = sizeof other - 1;
    queue_conn_t *stranger = open_with(&cfg);
    queue_conn_t *unsigned_ = open_default();
    cfg.signing_key = key;
    cfg.signing_key_len = sizeof key - 1;
    queue_conn_t *worker = open_with(&cfg);

    char good[QUEUE_ID_MAX], bad[QUEUE_ID_MAX], missing[QUEUE_ID_MAX];
    put(signer, "good", 2, good);
    put(stranger, "bad", 1, bad);
    put(unsigned_, "missing", 0, missing);
    queue_lease_t l[3];
    int got = 0;
    cr_assert_eq(queue_lease(worker, 3, "w", 5000, l, &got), 0, "%s", queue_last_error(worker));
    cr_assert_eq(got, 1, "only the signed task runs");
    cr_expect_str_eq(l[0].id, good);
    cr_expect_str_eq(l[0].payload, "good");
    queue_lease_clear(l, got);
    queue_info_t info;
    cr_assert_eq(queue_get(worker, bad, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DLQ);
    cr_expect_str_eq(info.error, "bad_signature");
    queue_info_clear(&info);
    cr_expect_eq(state_of(worker, missing), QUEUE_S_DLQ);
    queue_stats_t s = stats_of(worker);
    cr_expect_eq(s.bad_signature, 2);
    cr_expect_eq(s.dlq, 2);
    /* the same payload under another id does not verify */
    char sig1[65], sig2[65];
    queue_sign(key, sizeof key - 1, "id1", "p", 1, sig1);
    queue_sign(key, sizeof key - 1, "id2", "p", 1, sig2);
    cr_expect_str_neq(sig1, sig2);
    cr_expect_eq(strlen(sig1), 64);
    queue_close(signer);
    queue_close(stranger);
    queue_close(unsigned_);
    queue_close(worker);
}

Test(queue, release_hands_back_without_an_attempt) {
    queue_conn_t *c = open_default();
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    put(c, "a", 0, a);
    put(c, "b", 0, b);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
    cr_assert_eq(got, 1);
    cr_expect_str_eq(l[0].id, a);
    queue_ref_t ref = {a, l[0].token};
    int st = -1;
    cr_assert_eq(queue_release(c, &ref, 1, &st), 0);
    cr_expect_eq(st, 0);
    cr_assert_eq(queue_release(c, &ref, 1, &st), 0);
    cr_expect_eq(st, QUEUE_ESTALE);
    queue_info_t info;
    cr_assert_eq(queue_get(c, a, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_READY);
    cr_expect_eq(info.attempts, 0);
    queue_info_clear(&info);
    queue_lease_clear(l, got);
    cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
    cr_expect_str_eq(l[0].id, a, "back in its original place");
    cr_expect_eq(l[0].attempt, 1);
    queue_lease_clear(l, got);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.released, 1);
    cr_expect_eq(s.retried + s.failed, 0);
    queue_close(c);
}

Test(queue, reap_requeues_expired_leases_then_dlq) {
    queue_config_t cfg = test_config();
    cfg.max_attempts = 2;
    queue_conn_t *c = open_with(&cfg);
    char id[QUEUE_ID_MAX];
    put(c, "slow", 0, id);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w", 100, l, &got), 0);
    cr_assert_eq(got, 1);
    int64_t old_token = l[0].token;
    queue_lease_clear(l, got);
    nap(200);
    queue_reap_t r;
    cr_assert_eq(queue_reap(c, 0, 0, &r), 0);
    cr_expect_eq(r.swept, 1);
    cr_expect_eq(r.reaped, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(queue_reap(c, 0, 0, &r), 0);
    if (ms_since(&t0) < 900) cr_expect_eq(r.swept, 0, "guarded: one sweep per interval");
    cr_expect_eq(queue_ack(c, id, old_token, "late", 4, 0), QUEUE_ESTALE, "the old holder lost it");
    cr_assert_eq(queue_lease(c, 1, "w", 100, l, &got), 0);
    cr_assert_eq(got, 1);
    cr_expect_eq(l[0].attempt, 2);
    queue_lease_clear(l, got);
    nap(200);
    cr_assert_eq(queue_reap(c, 1, 0, &r), 0);
    cr_expect_eq(r.dead, 1);
    queue_info_t info;
    cr_assert_eq(queue_get(c, id, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DLQ);
    cr_expect(strstr(info.error, "lease expired") != NULL, "%s", info.error);
    queue_info_clear(&info);
    queue_close(c);
}

struct acker {
    const char *url;
    char id[QUEUE_ID_MAX];
};

static void *ack_later(void *arg) {
    struct acker *a = arg;
    queue_config_t cfg = test_config();
    char err[256];
    queue_conn_t *c = queue_connect(&cfg, err, sizeof err);
    if (!c) return NULL;
    nap(200);
    queue_lease_t l[1];
    int got = 0;
    if (queue_lease(c, 1, "w", 5000, l, &got) == 0 && got == 1) {
        memcpy(a->id, l[0].id, QUEUE_ID_MAX);
        queue_ack(c, l[0].id, l[0].token, "answer", 6, 0);
        queue_lease_clear(l, got);
    }
    queue_close(c);
    return NULL;
}

Test(queue, wait_wakes_on_completion_and_times_out) {
    queue_conn_t *c = open_default();
    queue_conn_t *c2 = open_default();
    char id[QUEUE_ID_MAX], other[QUEUE_ID_MAX];
    put(c, "a", 1, id);
    put(c, "b", 0, other);
    struct acker a = {srv.url, ""};
    pthread_t th;
    pthread_create(&th, NULL, ack_later, &a);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    queue_info_t info;
    cr_assert_eq(queue_wait(c, id, 5000, &info), 0, "%s", queue_last_error(c));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(info.state, QUEUE_S_DONE);
    cr_expect_str_eq(info.result, "answer");
    cr_expect(s >= 0.15 && s < 3, "woken by the ack after %.3f s", s);
    queue_info_clear(&info);
    pthread_join(th, NULL);
    /* a second waiter on a finished task returns at once */
    cr_assert_eq(queue_wait(c2, id, 5000, &info), 0);
    cr_expect_eq(info.state, QUEUE_S_DONE);
    queue_info_clear(&info);
    /* nothing happens: returns the live state after the timeout */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(queue_wait(c, other, 300, &info), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(info.state, QUEUE_S_READY);
    cr_expect(s >= 0.25 && s < 2, "timed out after %.3f s", s);
    queue_info_clear(&info);
    cr_expect_eq(queue_wait(c, "nosuch", 100, &info), QUEUE_ENOTFOUND);
    queue_close(c);
    queue_close(c2);
}

Test(queue, backpressure_refuses_and_harms_nothing) {
    queue_config_t cfg = test_config();
    cfg.max_length = 5;
    queue_conn_t *c = open_with(&cfg);
    char ids[5][QUEUE_ID_MAX], id[QUEUE_ID_MAX];
    for (int i = 0; i < 5; i++) put(c, "x", 0, ids[i]);
    queue_task_t t = {.payload = "y", .payload_len = 1};
    cr_expect_eq(queue_enqueue(c, &t, id, NULL), QUEUE_EBUSY);
    cr_expect(strstr(queue_last_error(c), "full") != NULL, "%s", queue_last_error(c));
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.ready, 5);
    cr_expect_eq(s.rejected, 1);
    for (int i = 0; i < 5; i++) cr_expect_eq(state_of(c, ids[i]), QUEUE_S_READY);
    /* room again after a lease; a batch is admitted up to the limit */
    queue_lease_t l[2];
    int got = 0;
    cr_assert_eq(queue_lease(c, 2, "w", 5000, l, &got), 0);
    queue_lease_clear(l, got);
    queue_task_t many[3] = {t, t, t};
    char mids[3][QUEUE_ID_MAX];
    int st[3];
    cr_assert_eq(queue_enqueue_many(c, many, 3, mids, st), 0);
    cr_expect_eq(st[0], QUEUE_ENQ_NEW);
    cr_expect_eq(st[1], QUEUE_ENQ_NEW);
    cr_expect_eq(st[2], QUEUE_EBUSY);
    cr_expect_eq(stats_of(c).ready, 5);
    queue_close(c);
}

Test(queue, payload_codec) {
    char err[256];
    char *p = queue_payload_build("minilm", "embed", "[\"hello\",\"world\"]", "req-1", "00-abc-def-01", err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    queue_payload_t t;
    cr_assert_eq(queue_payload_parse(p, strlen(p), &t, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(t.model, "minilm");
    cr_expect_str_eq(t.op, "embed");
    cr_expect_str_eq(t.inputs_json, "[\"hello\",\"world\"]");
    cr_expect_str_eq(t.request_id, "req-1");
    cr_expect_str_eq(t.traceparent, "00-abc-def-01");
    queue_payload_clear(&t);
    free(p);
    cr_expect_null(queue_payload_build("m", "op", "[oops", NULL, NULL, err, sizeof err));
    cr_expect_eq(queue_payload_parse("{\"op\":\"x\"}", 10, &t, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_payload_parse("not json", 8, &t, err, sizeof err), QUEUE_EINVAL);
}

Test(queue, url_parsing) {
    queue_url_t u;
    char err[256];
    cr_assert_eq(queue_url_parse("redis://127.0.0.1:6380/2", &u, err, sizeof err), 0);
    cr_expect_str_eq(u.host, "127.0.0.1");
    cr_expect_eq(u.port, 6380);
    cr_expect_eq(u.db, 2);
    cr_expect_str_eq(u.password, "");
    cr_assert_eq(queue_url_parse("redis://:s3cr@t@redis.local/0", &u, err, sizeof err), 0);
    cr_expect_str_eq(u.host, "redis.local");
    cr_expect_eq(u.port, 6379);
    cr_expect_str_eq(u.password, "s3cr@t");
    cr_expect_str_eq(u.user, "");
    cr_assert_eq(queue_url_parse("redis://alice:pw@h:1", &u, err, sizeof err), 0);
    cr_expect_str_eq(u.user, "alice");
    cr_expect_str_eq(u.password, "pw");
    cr_expect_eq(u.port, 1);
    cr_assert_eq(queue_url_parse("redis://[::1]:7000", &u, err, sizeof err), 0);
    cr_expect_str_eq(u.host, "::1");
    cr_expect_eq(u.port, 7000);
    cr_expect_eq(queue_url_parse("http://x", &u, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_url_parse("redis://h:99999", &u, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_url_parse("redis://h/x", &u, err, sizeof err), QUEUE_EINVAL);
}

Test(queue, auth_and_select) {
    cr_assert_gt(support_redis_cmd(&srv, (const char *[]){"CONFIG", "SET", "requirepass", "pw", NULL}), -1);
    queue_config_t cfg = test_config();
    char url[128], err[512];
    snprintf(url, sizeof url, "redis://:pw@127.0.0.1:%d/3", srv.port);
    cfg.url = url;
    queue_conn_t *c = queue_connect(&cfg, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    char id[QUEUE_ID_MAX];
    put(c, "x", 0, id);
    queue_close(c);
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d/0", srv.port);
    cfg.reconnect_ms = 200;
    c = queue_connect(&cfg, err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, "AUTH") != NULL, "%s", err);
}

/* A resent enqueue call (its reply was lost) reports what the first did and
 * stores nothing twice: run the script itself twice with the same ARGV. */
Test(queue, resent_enqueue_stores_nothing_twice) {
    queue_conn_t *c = open_default(); /* loads the scripts */
    char *text = malloc(strlen(queue_script_prelude) + strlen(queue_script_body[QS_ENQUEUE]) + 1);
    cr_assert_not_null(text);
    strcpy(text, queue_script_prelude);
    strcat(text, queue_script_body[QS_ENQUEUE]);
    const char *argv[] = {"EVAL", text, "1", "{tq}:seq", "0", "60000", "60000",
                          "id-a", "pa", "1", "0", "0", "3", "", "", "0",
                          "id-b", "pb", "1", "0", "0", "3", "dk", "", "0",
                          "id-c", "pc", "1", "0", "0", "3", "dk", "", "0"};
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    cr_assert(rc && !rc->err);
    for (int round = 0; round < 2; round++) {
        redisReply *r = redisCommandArgv(rc, 34, argv, NULL);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 6, "round %d: %s", round,
                  r && r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        cr_expect_eq(r->element[0]->integer, 0);
        cr_expect_str_eq(r->element[1]->str, "id-a");
        cr_expect_eq(r->element[2]->integer, 0);
        cr_expect_eq(r->element[4]->integer, 1, "round %d: dedup within the call", round);
        cr_expect_str_eq(r->element[5]->str, "id-b");
        freeReplyObject(r);
    }
    /* a one-task call is recognised by its task key */
    const char *one[] = {"EVAL", text, "1", "{tq}:seq", "0", "60000", "60000", "id-d", "pd", "1", "0", "0", "3", "", "", "0"};
    for (int round = 0; round < 2; round++) {
        redisReply *r = redisCommandArgv(rc, 16, one, NULL);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        cr_expect_eq(r->element[0]->integer, 0);
        freeReplyObject(r);
    }
    redisFree(rc);
    free(text);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.ready, 3);
    cr_expect_eq(s.enqueued, 3);
    cr_expect_eq(s.deduped, 1);
    queue_close(c);
}

/* A running task's token stream: appended only under the current lease,
 * capped, expiring with the results. */
Test(queue, token_stream_follows_the_lease) {
    queue_conn_t *c = open_default();
    char id[QUEUE_ID_MAX];
    put(c, "{\"x\":1}", 0, id);
    queue_lease_t l[1];
    int got = 0;
    cr_assert_eq(queue_lease(c, 1, "w1", 60000, l, &got), 0, "%s", queue_last_error(c));
    cr_assert_eq(got, 1);
    queue_stream_entry_t e[2] = {{id, l[0].token, "text", "Hel", 3}, {id, l[0].token, "text", "lo", 2}};
    int st[2] = {9, 9};
    cr_assert_eq(queue_stream_add(c, e, 2, 1000, 60000, st), 0, "%s", queue_last_error(c));
    cr_expect_eq(st[0], 0);
    cr_expect_eq(st[1], 0);
    char key[96];
    snprintf(key, sizeof key, "{tq}:s:%s", id);
    cr_expect_eq(support_redis_cmd(&srv, (const char *[]){"XLEN", key, NULL}), 2);
    long long ttl = support_redis_cmd(&srv, (const char *[]){"PTTL", key, NULL});
    cr_expect(ttl > 0 && ttl <= 60000, "ttl %lld", ttl);
    /* a stale token adds nothing */
    queue_stream_entry_t stale = {id, l[0].token + 1, "text", "x", 1};
    cr_assert_eq(queue_stream_add(c, &stale, 1, 1000, 60000, st), 0);
    cr_expect_eq(st[0], -1);
    cr_expect_eq(support_redis_cmd(&srv, (const char *[]){"XLEN", key, NULL}), 2);
    /* capped near maxlen */
    queue_stream_entry_t many[300];
    for (int i = 0; i < 300; i++) many[i] = (queue_stream_entry_t){id, l[0].token, "text", "t", 1};
    cr_assert_eq(queue_stream_add(c, many, 300, 10, 60000, NULL), 0);
    long long n = support_redis_cmd(&srv, (const char *[]){"XLEN", key, NULL});
    cr_expect(n >= 10 && n < 302, "XLEN %lld: MAXLEN ~ 10 trimmed nothing", n);
    /* after the ack the stream stays for readers until its TTL */
    cr_assert_eq(queue_ack(c, id, l[0].token, "{}", 2, 60000), 0, "%s", queue_last_error(c));
    cr_assert_eq(queue_stream_add(c, e, 1, 1000, 60000, st), 0);
    cr_expect_eq(st[0], -1, "a finished task's stream takes no more");
    queue_lease_clear(l, 1);
    queue_close(c);
}
