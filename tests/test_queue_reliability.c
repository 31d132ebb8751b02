/* tests/test_queue_reliability.c - the queue under concurrency and failure:
 * 4 threads leasing and acking 20,000 tasks; a worker SIGKILLed while it
 * holds leases; a Redis SIGKILL + restart (AOF) and a SCRIPT FLUSH in the
 * middle of a run; Redis down. The invariant everywhere: every task ends in
 * exactly one terminal state, acked successfully exactly once, none lost. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "tests/test_queue.h"

TestSuite(queue_reliability, .init = redis_up, .fini = redis_down, .timeout = 90);

/* Tasks whose payload is their index; acks[i] counts successful acks. */
typedef struct {
    int n;
    char (*ids)[QUEUE_ID_MAX];
    atomic_int *acks;
    atomic_int total;
    atomic_int errors; /* calls that failed while Redis was away */
    int lease_ms;
} run_t;

static void run_init(run_t *run, queue_conn_t *c, int n, int lease_ms) {
    memset(run, 0, sizeof *run);
    run->n = n;
    run->lease_ms = lease_ms;
    run->ids = calloc(n, QUEUE_ID_MAX);
    run->acks = calloc(n, sizeof *run->acks);
    queue_task_t *tasks = calloc(n, sizeof *tasks);
    char (*payloads)[16] = calloc(n, 16);
    int *st = calloc(n, sizeof *st);
    cr_assert(run->ids && run->acks && tasks && payloads && st);
    for (int i = 0; i < n; i++) {
        snprintf(payloads[i], 16, "%d", i);
        tasks[i] = (queue_task_t){.payload = payloads[i], .payload_len = strlen(payloads[i])};
    }
    cr_assert_eq(queue_enqueue_many(c, tasks, n, run->ids, st), 0, "%s", queue_last_error(c));
    for (int i = 0; i < n; i++) cr_assert_eq(st[i], QUEUE_ENQ_NEW);
    free(tasks);
    free(payloads);
    free(st);
}

static void run_free(run_t *run) {
    free(run->ids);
    free(run->acks);
}

/* One worker: lease 64, ack them all in one call, reap now and then; until
 * every task is acked or 60 s pass. Errors (Redis away) are counted and
 * retried: the queue must recover by itself. */
static void *worker(void *arg) {
    run_t *run = arg;
    queue_config_t cfg = test_config();
    char err[512];
    queue_conn_t *c = NULL;
    for (int i = 0; i < 100 && !c; i++)
        if (!(c = queue_connect(&cfg, err, sizeof err))) nap(100);
    if (!c) return NULL;
    queue_lease_t l[64];
    queue_ack_t acks[64];
    int st[64];
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; atomic_load(&run->total) < run->n; round++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 60) break;
        if (round % 16 == 0 && queue_reap(c, 0, 0, NULL)) atomic_fetch_add(&run->errors, 1);
        int got = 0;
        if (queue_lease(c, 64, "w", run->lease_ms, l, &got)) {
            atomic_fetch_add(&run->errors, 1);
            nap(20);
            continue;
        }
        if (!got) {
            nap(10);
            continue;
        }
        for (int i = 0; i < got; i++) acks[i] = (queue_ack_t){l[i].id, l[i].token, l[i].payload, l[i].payload_len};
        int rc;
        while ((rc = queue_ack_many(c, acks, got, 0, st)) == QUEUE_EREDIS) atomic_fetch_add(&run->errors, 1);
        for (int i = 0; rc == 0 && i < got; i++) {
            if (st[i] != QUEUE_OK) continue; /* lease lost: someone else completes it */
            int idx = atoi(l[i].payload);
            if (idx >= 0 && idx < run->n) atomic_fetch_add(&run->acks[idx], 1);
            atomic_fetch_add(&run->total, 1);
        }
        queue_lease_clear(l, got);
    }
    queue_close(c);
    return NULL;
}

/* Every task acked exactly once, done in Redis, nothing left anywhere. */
static void check_all_done_once(queue_conn_t *c, run_t *run, int check_states) {
    int bad = 0;
    for (int i = 0; i < run->n; i++)
        if (atomic_load(&run->acks[i]) != 1 && bad++ < 5)
            cr_log_error("task %d (%s) acked %d times", i, run->ids[i], atomic_load(&run->acks[i]));
    cr_expect_eq(bad, 0, "%d tasks not acked exactly once", bad);
    for (int i = 0; check_states && i < run->n; i++) cr_expect_eq(state_of(c, run->ids[i]), QUEUE_S_DONE);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.acked, run->n);
    cr_expect_eq(s.ready + s.delayed + s.leased + s.dlq, 0, "left: ready %lld delayed %lld leased %lld dlq %lld",
                 (long long)s.ready, (long long)s.delayed, (long long)s.leased, (long long)s.dlq);
}

Test(queue_reliability, four_threads_20000_tasks_each_acked_once) {
    queue_conn_t *c = open_default();
    run_t run;
    run_init(&run, c, 20000, 5000);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, worker, &run);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    cr_expect_eq(atomic_load(&run.errors), 0);
    check_all_done_once(c, &run, 0);
    run_free(&run);
    queue_close(c);
}

Test(queue_reliability, killed_worker_tasks_are_redelivered) {
    queue_conn_t *c = open_default();
    run_t run;
    run_init(&run, c, 200, 300);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) { /* the doomed worker: lease 50 for 300 ms, say so, hang */
        queue_config_t cfg = test_config();
        char err[256];
        queue_conn_t *w = queue_connect(&cfg, err, sizeof err);
        queue_lease_t l[50];
        int got = 0;
        if (w) queue_lease(w, 50, "doomed", 300, l, &got);
        if (write(fds[1], &got, sizeof got) < 0) _exit(1);
        for (;;) pause();
    }
    int got = -1;
    cr_assert_eq(read(fds[0], &got, sizeof got), (ssize_t)sizeof got);
    cr_assert_eq(got, 50, "the child leased a batch");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    cr_expect_eq(stats_of(c).leased, 50);
    /* survivors: two workers finish everything, reaping the dead one's leases */
    run.lease_ms = 5000;
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, worker, &run);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    check_all_done_once(c, &run, 1);
    queue_stats_t s = stats_of(c);
    cr_expect_eq(s.reaped, 50, "the 50 dead leases went back to ready");
    cr_expect_eq(s.failed, 0);
    run_free(&run);
    queue_close(c);
}

Test(queue_reliability, redis_restart_and_script_flush_lose_nothing) {
    queue_conn_t *c = open_default();
    run_t run;
    run_init(&run, c, 3000, 1000);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, worker, &run);
    while (atomic_load(&run.total) < 800) nap(5);
    /* SIGKILL: only what appendfsync always wrote survives; the rest must come back by itself */
    cr_assert_eq(support_redis_restart(&srv, 1), 0, "%s", srv.err);
    int at_restart = atomic_load(&run.total);
    while (atomic_load(&run.total) < 2000) nap(5);
    cr_assert_eq(support_redis_cmd(&srv, (const char *[]){"SCRIPT", "FLUSH", NULL}), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    cr_log_info("restart at %d acks; %d calls failed while Redis was away", at_restart, atomic_load(&run.errors));
    queue_close(c);
    c = open_default();
    check_all_done_once(c, &run, 1);
    run_free(&run);
    queue_close(c);
}

Test(queue_reliability, redis_down_is_a_clear_error) {
    queue_config_t cfg = test_config();
    cfg.reconnect_ms = 300;
    cfg.connect_timeout_ms = 200;
    queue_conn_t *c = open_with(&cfg);
    char id[QUEUE_ID_MAX];
    put(c, "before", 0, id);
    support_redis_kill(&srv, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    queue_stats_t s;
    int rc = queue_stats(c, &s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(rc, QUEUE_EREDIS);
    cr_expect(strstr(queue_last_error(c), "127.0.0.1") != NULL, "%s", queue_last_error(c));
    cr_expect(secs < 2, "gave up after %.2f s", secs);
    char err[512];
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", srv.port);
    queue_config_t down = cfg;
    down.url = url;
    cr_expect_null(queue_connect(&down, err, sizeof err));
    cr_expect(strstr(err, "refused") != NULL, "%s", err);
    /* back up (AOF replay): the same connection carries on, the task is there */
    cr_assert_eq(support_redis_restart(&srv, 1), 0, "%s", srv.err);
    cr_expect_eq(state_of(c, id), QUEUE_S_READY);
    queue_close(c);
}

Test(queue_reliability, hung_redis_cannot_hang_a_call) {
    queue_config_t cfg = test_config();
    cfg.command_timeout_ms = 200;
    cfg.connect_timeout_ms = 200;
    cfg.reconnect_ms = 300;
    queue_conn_t *c = open_with(&cfg);
    char id[QUEUE_ID_MAX];
    put(c, "x", 0, id);
    kill(srv.pid, SIGSTOP); /* alive, listening, answering nothing */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    queue_lease_t l[1];
    int got = 0;
    int rc = queue_lease(c, 1, "w", 1000, l, &got);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    kill(srv.pid, SIGCONT);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(rc, QUEUE_EREDIS);
    cr_expect(secs < 3, "the call returned after %.2f s", secs);
    cr_log_info("hung Redis: %s after %.2f s", queue_last_error(c), secs);
    /* Redis answers again: the same connection works, and the lease the
     * timed-out call may have taken comes back after its deadline. */
    queue_reap_t r;
    nap(1100);
    cr_assert_eq(queue_reap(c, 1, 0, &r), 0, "%s", queue_last_error(c));
    cr_assert_eq(queue_lease(c, 1, "w", 1000, l, &got), 0, "%s", queue_last_error(c));
    cr_assert_eq(got, 1);
    cr_expect_str_eq(l[0].id, id);
    cr_expect_eq(queue_ack(c, l[0].id, l[0].token, "ok", 2, 0), 0);
    queue_lease_clear(l, got);
    queue_close(c);
}
