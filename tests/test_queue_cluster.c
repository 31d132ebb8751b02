/* tests/test_queue_cluster.c - the queue on a real Redis Cluster: the slot
 * function against Redis's own values, redirect and seed parsing, then six
 * redis-server processes (tests/support_cluster.c): queues spread over three
 * masters, a master SIGKILLed mid-run with its replica promoted (with and
 * without WAIT), a queue's slot migrated mid-run (ASK, then MOVED), a DLQ
 * purged and signed tasks run while the slot moves, and `sluice queue stats`
 * for queues wherever they live. */
#include <criterion/criterion.h>
#include <hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "api/cli/cli.h"
#include "tests/support_cli.h"
#include "queue/cluster.h"
#include "queue/queue.h"
#include "tests/support_cluster.h"
#include "tests/support_http.h"
#include "tests/support_server.h"

/* ---- pure functions ---- */

static unsigned slot_of(const char *key) { return queue_key_slot(key, strlen(key)); }

Test(cluster_slots, crc16_and_key_slot_match_redis) {
    cr_expect_eq(queue_crc16("123456789", 9), 0x31C3); /* the check value in Redis's crc16.c */
    cr_expect_eq(queue_crc16("", 0), 0);
    /* CLUSTER KEYSLOT examples of the Redis docs */
    cr_expect_eq(slot_of("somekey"), 11058);
    cr_expect_eq(slot_of("foo{hash_tag}"), 2515);
    cr_expect_eq(slot_of("bar{hash_tag}"), 2515);
    /* hash tag rules of the cluster spec */
    cr_expect_eq(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    cr_expect_eq(slot_of("{user1000}.following"), slot_of("user1000"));
    cr_expect_eq(slot_of("foo{}{bar}"), queue_crc16("foo{}{bar}", 10) & 16383, "empty tag: the whole key");
    cr_expect_eq(slot_of("foo{{bar}}zap"), slot_of("{bar"), "the tag ends at the first }");
    cr_expect_eq(slot_of("foo{bar}{zap}"), slot_of("bar"), "only the first tag counts");
    cr_expect_eq(slot_of("{q}:seq"), slot_of("{q}:t:0123"), "every key of a queue in one slot");
}

Test(cluster_slots, redirect_replies) {
    queue_node_t n;
    cr_expect_eq(queue_redirect_parse("MOVED 3999 127.0.0.1:6381", &n), QUEUE_REDIR_MOVED);
    cr_expect_str_eq(n.host, "127.0.0.1");
    cr_expect_eq(n.port, 6381);
    cr_expect_eq(queue_redirect_parse("ASK 3999 10.0.0.2:7000", &n), QUEUE_REDIR_ASK);
    cr_expect_str_eq(n.host, "10.0.0.2");
    cr_expect_eq(queue_redirect_parse("MOVED 1 [::1]:7001", &n), QUEUE_REDIR_MOVED);
    cr_expect_str_eq(n.host, "::1");
    cr_expect_eq(queue_redirect_parse("MOVED 3999 :6381", &n), QUEUE_REDIR_NONE, "no host");
    cr_expect_eq(queue_redirect_parse("MOVED 16384 h:1", &n), QUEUE_REDIR_NONE);
    cr_expect_eq(queue_redirect_parse("MOVED x h:1", &n), QUEUE_REDIR_NONE);
    cr_expect_eq(queue_redirect_parse("MOVED 1 h:0", &n), QUEUE_REDIR_NONE);
    cr_expect_eq(queue_redirect_parse("ERR MOVED 1 h:1", &n), QUEUE_REDIR_NONE);
}

Test(cluster_slots, seed_lists_and_options) {
    queue_seeds_t s;
    char err[256];
    cr_assert_eq(queue_seeds_parse("redis://:pw@a:7000,b:7001,[::1]:7002", &s, err, sizeof err), 0, "%s", err);
    cr_expect_eq(s.n, 3);
    cr_expect(s.cluster);
    cr_expect_str_eq(s.nodes[1].host, "b");
    cr_expect_eq(s.nodes[2].port, 7002);
    cr_expect_str_eq(s.nodes[2].host, "::1");
    queue_seeds_clear(&s);
    cr_assert_eq(queue_seeds_parse("redis+cluster://h:7000?wait_replicas=1", &s, err, sizeof err), 0, "%s", err);
    cr_expect(s.cluster && s.n == 1);
    queue_seeds_clear(&s);
    cr_assert_eq(queue_seeds_parse("redis://h:7000/3", &s, err, sizeof err), 0, "%s", err);
    cr_expect(!s.cluster);
    queue_seeds_clear(&s);
    cr_expect_eq(queue_seeds_parse("redis://a:1,b:2/3", &s, err, sizeof err), QUEUE_EINVAL);
    cr_expect(strstr(err, "database 0") != NULL, "%s", err);
    cr_expect_eq(queue_seeds_parse("redis://a:1,,b:2", &s, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_seeds_parse("redis://a:1,b:x", &s, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_seeds_parse("http://a:1", &s, err, sizeof err), QUEUE_EINVAL);

    queue_url_t u;
    cr_assert_eq(queue_url_parse("redis+cluster://u:p@a:7000,b:7001?wait_replicas=2&wait_timeout_ms=250", &u, err,
                                 sizeof err), 0, "%s", err);
    cr_expect_str_eq(u.host, "a");
    cr_expect_eq(u.port, 7000);
    cr_expect_str_eq(u.password, "p");
    cr_expect_eq(u.wait_replicas, 2);
    cr_expect_eq(u.wait_timeout_ms, 250);
    cr_expect_eq(queue_url_parse("redis://h:1/0?wait=1", &u, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_url_parse("redis://h:1/0?wait_replicas=x", &u, err, sizeof err), QUEUE_EINVAL);
    cr_expect_eq(queue_url_parse("redis://h:1/0?wait_replicas=-1", &u, err, sizeof err), QUEUE_EINVAL);
}

/* ---- a real cluster ---- */

static support_cluster_t cl;
static void cluster_up(void) { cr_assert_eq(support_cluster_start(&cl), 0, "%s", cl.err); }
static void cluster_down(void) { support_cluster_stop(&cl); }
TestSuite(cluster, .init = cluster_up, .fini = cluster_down, .timeout = 60);

#define QUEUES 8
#define MAX_IDS 4096

typedef struct {
    char name[32];
    int wait_replicas;
    atomic_int stop;          /* producers stop */
    pthread_mutex_t mu;
    char (*ids)[QUEUE_ID_MAX];/* enqueues that returned 0 */
    int nids;
    atomic_int enq_errors, ack_errors, acked;
    int per_queue;            /* tasks to enqueue */
    int pace_us;              /* pause between enqueues */
    int extra;                /* tasks enqueued by other means (the CLI) */
} qrun_t;

static queue_conn_t *connect_q(const char *name, int wait_replicas) {
    queue_config_t qc;
    queue_config_defaults(&qc);
    qc.url = cl.url;
    qc.name = name;
    qc.reconnect_ms = 10000; /* longer than node timeout + election */
    qc.command_timeout_ms = 1000;
    qc.connect_timeout_ms = 300;
    qc.wait_replicas = wait_replicas;
    qc.wait_timeout_ms = 200;
    char err[512];
    queue_conn_t *c = queue_connect(&qc, err, sizeof err);
    cr_assert(c, "connect %s: %s", name, err);
    return c;
}

static void *producer(void *arg) {
    qrun_t *q = arg;
    queue_conn_t *c = connect_q(q->name, q->wait_replicas);
    for (int i = 0; i < q->per_queue && !atomic_load(&q->stop); i++) {
        queue_task_t t = {.payload = "{\"x\":1}", .payload_len = 7};
        char id[QUEUE_ID_MAX];
        if (queue_enqueue(c, &t, id, NULL) == 0) {
            pthread_mutex_lock(&q->mu);
            memcpy(q->ids[q->nids++], id, QUEUE_ID_MAX);
            pthread_mutex_unlock(&q->mu);
        } else if (atomic_fetch_add(&q->enq_errors, 1) < 3) {
            printf("cluster: %s: enqueue: %s\n", q->name, queue_last_error(c));
        }
        if (q->pace_us) usleep(q->pace_us);
    }
    queue_close(c);
    return NULL;
}

/* Lease, ack, reap until the producer is done and nothing is waiting or leased. */
static void *consumer(void *arg) {
    qrun_t *q = arg;
    queue_conn_t *c = connect_q(q->name, q->wait_replicas);
    int idle = 0;
    for (;;) {
        queue_lease_t l[16];
        int got = 0;
        queue_reap(c, 0, 0, NULL);
        if (queue_lease(c, 16, "test", 1500, l, &got) != 0) got = 0;
        for (int i = 0; i < got; i++)
            if (queue_ack(c, l[i].id, l[i].token, "ok", 2, 0) == 0) atomic_fetch_add(&q->acked, 1);
            else if (atomic_fetch_add(&q->ack_errors, 1) < 3)
                printf("cluster: %s: ack: %s\n", q->name, queue_last_error(c));
        queue_lease_clear(l, got);
        if (got) {
            idle = 0;
            continue;
        }
        if (atomic_load(&q->stop) == 2) {
            queue_stats_t st;
            if (queue_stats(c, &st) == 0 && st.ready + st.delayed + st.leased == 0 && ++idle > 2) break;
        }
        usleep(20000);
    }
    queue_close(c);
    return NULL;
}

static void qrun_init(qrun_t *q, const char *name, int wait_replicas, int per_queue, int pace_us) {
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%.30s", name);
    q->wait_replicas = wait_replicas;
    q->per_queue = per_queue;
    q->pace_us = pace_us;
    q->ids = calloc(MAX_IDS, QUEUE_ID_MAX);
    pthread_mutex_init(&q->mu, NULL);
}

/* Every acknowledged enqueue ended done, once. Returns the number lost. */
static int check_queue(qrun_t *q, int strict) {
    queue_conn_t *c = connect_q(q->name, 0);
    int lost = 0, done = 0;
    for (int i = 0; i < q->nids; i++) {
        queue_info_t info;
        int rc = queue_get(c, q->ids[i], &info);
        if (rc == 0 && info.state == QUEUE_S_DONE) done++;
        else lost++;
        if (rc == 0 && strict)
            cr_expect_eq(info.state, QUEUE_S_DONE, "%s %s: %s, attempts %d, token %lld, enqueued %lld, error %s", q->name,
                         q->ids[i], queue_state_name(info.state), info.attempts, (long long)info.token,
                         (long long)info.enqueued_ms, info.error ? info.error : "-");
        if (rc == 0 && info.state == QUEUE_S_DONE) cr_expect(info.result && !strcmp(info.result, "ok"));
        queue_info_clear(&info);
    }
    queue_stats_t st;
    cr_assert_eq(queue_stats(c, &st), 0, "%s", queue_last_error(c));
    if (strict) {
        cr_expect_eq(lost, 0, "%s: %d of %d acknowledged enqueues lost", q->name, lost, q->nids);
        cr_expect_eq(st.acked, done + q->extra, "%s: acked counter %lld, tasks done %d (a task ended twice?)", q->name,
                     (long long)st.acked, done);
        cr_expect_eq(st.ready + st.delayed + st.leased, 0);
    }
    queue_close(c);
    return lost;
}

static void qrun_free(qrun_t *q) {
    free(q->ids);
    pthread_mutex_destroy(&q->mu);
}

/* Eight queue names whose slots cover all three masters. */
static void pick_names(char names[QUEUES][32]) {
    int owners[3] = {0}, n = 0, owner_ports[3] = {0}, nown = 0;
    for (int i = 0; n < QUEUES && i < 1000; i++) {
        char name[32], prefix[40];
        snprintf(name, sizeof name, "q%d", i);
        snprintf(prefix, sizeof prefix, "{%.30s}:", name);
        int o = support_cluster_owner(&cl, queue_key_slot(prefix, strlen(prefix)));
        int k = 0;
        while (k < nown && owner_ports[k] != o) k++;
        if (k == nown && nown < 3) owner_ports[nown++] = o;
        if (k < 3 && owners[k] < 3) { /* at most three per master: spread */
            owners[k]++;
            snprintf(names[n++], 32, "%s", name);
        }
    }
    cr_assert_eq(n, QUEUES);
    cr_assert_eq(nown, 3, "the queues cover the three masters");
}

static unsigned queue_slot(const char *name) {
    char prefix[40];
    snprintf(prefix, sizeof prefix, "{%.30s}:", name);
    return queue_key_slot(prefix, strlen(prefix));
}

static char cli_out[8192];

static int cli(const char *queue, const char *first, ...) {
    const char *argv[32] = {"queue", "--redis", cl.url, "--queue", queue};
    int argc = 5;
    va_list ap;
    va_start(ap, first);
    for (const char *w = first; w && argc < 31; w = va_arg(ap, const char *)) argv[argc++] = w;
    va_end(ap);
    int rc = support_cli_capture(cli_queue, argc, argv, cli_out, sizeof cli_out);
    cr_assert_geq(rc, 0);
    return rc;
}

static void start_all(qrun_t *q, int n, pthread_t *th) {
    for (int i = 0; i < n; i++) {
        pthread_create(&th[2 * i], NULL, producer, &q[i]);
        pthread_create(&th[2 * i + 1], NULL, consumer, &q[i]);
    }
}

static void finish_all(qrun_t *q, int n, pthread_t *th) {
    for (int i = 0; i < n; i++) pthread_join(th[2 * i], NULL);
    for (int i = 0; i < n; i++) atomic_store(&q[i].stop, 2);
    for (int i = 0; i < n; i++) pthread_join(th[2 * i + 1], NULL);
}

Test(cluster, eight_queues_over_three_masters_each_task_done_once) {
    char names[QUEUES][32];
    pick_names(names);
    /* our slot function against the cluster's own */
    for (int i = 0; i < QUEUES; i++) {
        char prefix[40];
        snprintf(prefix, sizeof prefix, "{%.30s}:seq", names[i]);
        const char *w[] = {"CLUSTER", "KEYSLOT", prefix, NULL};
        cr_expect_eq(support_redis_cmd(&cl.node[0], w), (long long)queue_slot(names[i]), "%s", names[i]);
    }
    qrun_t q[QUEUES];
    pthread_t th[2 * QUEUES];
    for (int i = 0; i < QUEUES; i++) qrun_init(&q[i], names[i], 0, 150, 0);
    start_all(q, QUEUES, th);
    /* producers through the CLI too, on every queue */
    for (int i = 0; i < QUEUES; i++) {
        cr_assert_eq(cli(names[i], "enqueue", "--payload", "{\"cli\":1}", NULL), 0, "%s", cli_out);
        q[i].extra = 1;
    }
    finish_all(q, QUEUES, th);
    for (int i = 0; i < QUEUES; i++) {
        check_queue(&q[i], 1);
        cr_expect_eq(atomic_load(&q[i].enq_errors), 0);
        cr_assert_eq(cli(names[i], "stats", NULL), 0, "%s", cli_out);
        char want[64];
        snprintf(want, sizeof want, "\"acked\":%d", q[i].nids + 1);
        cr_expect(strstr(cli_out, want) != NULL, "%s: want %s in %s", names[i], want, cli_out);
        qrun_free(&q[i]);
    }
}

/* Kill the master of names[0] mid-run, wait for its replica to take over,
 * start the dead node again (it rejoins as a replica). Returns lost tasks. */
static int failover_run(int wait_replicas) {
    char names[QUEUES][32];
    pick_names(names);
    qrun_t q[QUEUES];
    pthread_t th[2 * QUEUES];
    for (int i = 0; i < QUEUES; i++) qrun_init(&q[i], names[i], wait_replicas, 400, 2000);
    unsigned slot = queue_slot(names[0]);
    int master = support_cluster_owner(&cl, slot);
    int replica = support_cluster_replica_of(&cl, master);
    cr_assert(master >= 0 && replica >= 0);
    start_all(q, QUEUES, th);
    usleep(300000);
    support_redis_kill(&cl.node[master], 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 200 && !support_cluster_is_master(&cl, replica); i++) usleep(50000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert(support_cluster_is_master(&cl, replica), "the replica was not promoted");
    printf("cluster: replica promoted %.2f s after SIGKILL of its master\n",
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    cr_assert_eq(support_redis_restart(&cl.node[master], 1), 0, "%s", cl.node[master].err);
    finish_all(q, QUEUES, th);
    cr_assert_eq(support_cluster_wait_ok(&cl, slot, 10000), 0);
    int lost = 0, enq_err = 0, ack_err = 0, total = 0;
    for (int i = 0; i < QUEUES; i++) {
        lost += check_queue(&q[i], wait_replicas > 0);
        enq_err += atomic_load(&q[i].enq_errors);
        ack_err += atomic_load(&q[i].ack_errors);
        total += q[i].nids;
        qrun_free(&q[i]);
    }
    printf("cluster: wait_replicas=%d: %d tasks acknowledged, %d lost, %d enqueue errors, %d ack errors\n",
           wait_replicas, total, lost, enq_err, ack_err);
    return lost;
}

Test(cluster, master_killed_with_wait_replicas_loses_nothing) {
    cr_expect_eq(failover_run(1), 0);
}

Test(cluster, master_killed_without_wait_records_lost_writes) {
    failover_run(0); /* recorded, not asserted: replication is asynchronous */
}

Test(cluster, slot_migrated_mid_run_ask_then_moved_nothing_lost) {
    char names[QUEUES][32];
    pick_names(names);
    qrun_t q[2];
    pthread_t th[4];
    for (int i = 0; i < 2; i++) qrun_init(&q[i], names[i], 0, 400, 2000);
    unsigned slot = queue_slot(names[0]);
    int from = support_cluster_owner(&cl, slot), to = -1;
    for (int i = 0; i < SUPPORT_CLUSTER_NODES && to < 0; i++)
        if (i != from && support_cluster_is_master(&cl, i)) to = i;
    start_all(q, 2, th);
    usleep(300000);
    const char *flush[] = {"SCRIPT", "FLUSH", NULL}; /* ASK meets a node without the scripts */
    cr_assert_eq(support_redis_cmd(&cl.node[to], flush), 0);
    cr_assert_eq(support_cluster_migrate(&cl, slot, to, 300), 0, "%s", cl.err);
    cr_expect_eq(support_cluster_owner(&cl, slot), to);
    finish_all(q, 2, th);
    /* nothing of the queue left behind on the old owner (or its replica) */
    char slot_s[16];
    snprintf(slot_s, sizeof slot_s, "%u", slot);
    const char *count[] = {"CLUSTER", "COUNTKEYSINSLOT", slot_s, NULL};
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++)
        if (i != to && support_cluster_replica_of(&cl, to) != i)
            cr_expect_eq(support_redis_cmd(&cl.node[i], count), 0, "node %d still holds keys of slot %u", i, slot);
    for (int i = 0; i < 2; i++) {
        check_queue(&q[i], 1);
        cr_expect_eq(atomic_load(&q[i].enq_errors), 0);
        qrun_free(&q[i]);
    }
    cr_assert_eq(cli(names[0], "stats", NULL), 0, "%s", cli_out);
}

typedef struct {
    unsigned slot;
    int from, to;
} move_t;

/* Start moving queue name's slot to another master: once this returns,
 * every key of the slot is on the new node and the old one answers ASK. */
static void move_begin(move_t *m, const char *name) {
    m->slot = queue_slot(name);
    m->from = support_cluster_owner(&cl, m->slot);
    m->to = -1;
    for (int i = 0; i < SUPPORT_CLUSTER_NODES && m->to < 0; i++)
        if (i != m->from && support_cluster_is_master(&cl, i)) m->to = i;
    cr_assert_eq(support_cluster_migrate_begin(&cl, m->slot, m->to), m->from, "%s", cl.err);
}

/* The calls since move_begin met ASK; now the slot changes hands (MOVED). */
static void move_end(move_t *m) {
    cr_assert_eq(support_cluster_migrate_end(&cl, m->slot, m->from, m->to), 0, "%s", cl.err);
}

/* While the slot is half-way (keys on the importing node, clients sent
 * there by ASK) a purge of the DLQ deletes each entry's task hash and
 * result. The importing node refuses (TRYAGAIN) a command naming several
 * keys when one of them is missing, and a DLQ entry has a hash but no
 * result: one DEL of both failed the script after the entry had left the
 * DLQ, leaving its hash behind for good (no TTL, in no set). */
Test(cluster, dlq_purged_while_the_slot_moves_leaves_nothing) {
    char names[QUEUES][32];
    pick_names(names);
    const char *name = names[3];
    queue_conn_t *c = connect_q(name, 0);
    enum { N = 5 };
    char ids[N][QUEUE_ID_MAX];
    for (int i = 0; i < N; i++) {
        queue_task_t t = {.payload = "{}", .payload_len = 2, .max_attempts = 1};
        cr_assert_eq(queue_enqueue(c, &t, ids[i], NULL), 0, "%s", queue_last_error(c));
    }
    queue_lease_t l[N];
    int got = 0;
    cr_assert_eq(queue_lease(c, N, "test", 30000, l, &got), 0, "%s", queue_last_error(c));
    cr_assert_eq(got, N);
    for (int i = 0; i < N; i++) cr_assert_eq(queue_fail(c, l[i].id, l[i].token, "boom", NULL, NULL), 0, "%s", queue_last_error(c));
    queue_lease_clear(l, got);

    move_t m;
    move_begin(&m, name);
    int64_t removed = -1;
    int rc = queue_dlq_purge(c, 0, 0, &removed);
    move_end(&m);
    cr_expect_eq(rc, 0, "purge during the move: %s", queue_last_error(c));
    cr_expect_eq(removed, N);
    for (int i = 0; i < N; i++) {
        queue_info_t info;
        cr_expect_eq(queue_get(c, ids[i], &info), QUEUE_ENOTFOUND, "%s: %s left behind", ids[i],
                     queue_state_name(info.state));
        queue_info_clear(&info);
    }
    queue_stats_t st;
    cr_assert_eq(queue_stats(c, &st), 0, "%s", queue_last_error(c));
    cr_expect_eq(st.dlq, 0);
    queue_close(c);
}

/* ASKING, then one command, on ctx: a write straight to the importing node. */
static void asking_cmd(redisContext *ctx, int argc, const char **argv, const size_t *lens) {
    freeReplyObject(redisCommand(ctx, "ASKING"));
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "%s: %s", argv[0], r ? r->str : ctx->errstr);
    freeReplyObject(r);
}

/* Signed tasks while the slot moves (clients meet ASK). A task's tombstone
 * is written by the ack script and checked by the lease script, which follow
 * ASK to the importing node (as plain commands on the connection to the old
 * owner they were lost or read "not seen"): the tombstone of a task acked
 * then must land on the importing node, and a finished task put back then
 * must be refused as replayed (its tombstone moved with the slot). */
Test(cluster, signed_tasks_while_the_slot_moves) {
    char names[QUEUES][32];
    pick_names(names);
    const char *name = names[4];
    int from = support_cluster_owner(&cl, queue_slot(name));
    static const unsigned char key[] = "a cluster signing secret";
    queue_config_t qc;
    queue_config_defaults(&qc);
    qc.url = cl.url;
    qc.name = name;
    qc.reconnect_ms = 10000;
    qc.signing_key = key;
    qc.signing_key_len = sizeof key - 1;
    char err[512];
    queue_conn_t *c = queue_connect(&qc, err, sizeof err);
    cr_assert(c, "%s", err);
    const char *payload = "{\"model\":\"m\",\"op\":\"embed\",\"inputs\":\"x\"}";
    queue_task_t t = {.payload = payload, .payload_len = strlen(payload)};
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX], tk[96], rk[64], tomb[96];
    cr_assert_eq(queue_enqueue(c, &t, a, NULL), 0, "%s", queue_last_error(c));
    cr_assert_eq(queue_enqueue(c, &t, b, NULL), 0, "%s", queue_last_error(c));
    /* b as it waits, to put back later */
    snprintf(tk, sizeof tk, "{%s}:t:%s", name, b);
    snprintf(rk, sizeof rk, "{%s}:ready", name);
    redisContext *src = redisConnect("127.0.0.1", cl.node[from].port);
    cr_assert(src && !src->err);
    redisReply *fields = redisCommand(src, "HGETALL %s", tk);
    redisReply *score = redisCommand(src, "ZSCORE %s %s", rk, b);
    cr_assert(fields && fields->type == REDIS_REPLY_ARRAY && score && score->type == REDIS_REPLY_STRING);
    redisFree(src);
    queue_lease_t l[4];
    int got = 0;
    cr_assert_eq(queue_lease(c, 4, "test", 30000, l, &got), 0, "%s", queue_last_error(c));
    cr_assert_eq(got, 2, "%s", queue_last_error(c));
    int ia = !strcmp(l[0].id, a) ? 0 : 1;
    cr_assert_eq(queue_ack(c, l[1 - ia].id, l[1 - ia].token, "{}", 2, 0), 0, "%s", queue_last_error(c)); /* b */

    move_t m;
    move_begin(&m, name);
    /* a acked while the clients meet ASK: its tombstone */
    cr_expect_eq(queue_ack(c, l[ia].id, l[ia].token, "{}", 2, 0), 0, "%s", queue_last_error(c));
    queue_lease_clear(l, got);
    /* b, finished, put back on the importing node as it was while waiting */
    redisContext *dst = redisConnect("127.0.0.1", cl.node[m.to].port);
    cr_assert(dst && !dst->err);
    const char *argv[64];
    size_t lens[64];
    int n = 0;
    argv[n] = "HSET", lens[n++] = 4;
    argv[n] = tk, lens[n++] = strlen(tk);
    for (size_t i = 0; i < fields->elements && n < 64; i++)
        argv[n] = fields->element[i]->str, lens[n++] = fields->element[i]->len;
    asking_cmd(dst, n, argv, lens);
    asking_cmd(dst, 4, (const char *[]){"ZADD", rk, score->str, b}, (size_t[]){4, strlen(rk), score->len, strlen(b)});
    redisFree(dst);
    cr_assert_eq(queue_lease(c, 4, "test", 30000, l, &got), 0, "%s", queue_last_error(c));
    cr_expect_eq(got, 0, "a finished signed task put back ran again");
    queue_lease_clear(l, got);
    queue_info_t info;
    cr_assert_eq(queue_get(c, b, &info), 0, "%s", queue_last_error(c));
    cr_expect_str_eq(info.error ? info.error : "", "replayed");
    queue_info_clear(&info);
    move_end(&m);
    snprintf(tomb, sizeof tomb, "{%s}:tomb:%s", name, a);
    const char *exists[] = {"EXISTS", tomb, NULL};
    cr_expect_eq(support_redis_cmd(&cl.node[m.to], exists), 1, "the tombstone of a task acked during the move is lost");
    freeReplyObject(fields);
    freeReplyObject(score);
    queue_close(c);
}

Test(cluster, wait_replicas_error_names_the_counts) {
    unsigned slot = queue_slot("w");
    int master = support_cluster_owner(&cl, slot);
    int replica = support_cluster_replica_of(&cl, master);
    cr_assert(master >= 0 && replica >= 0);
    queue_config_t qc;
    queue_config_defaults(&qc);
    char url[600];
    snprintf(url, sizeof url, "%s?wait_replicas=1&wait_timeout_ms=100", cl.url); /* the URL path */
    qc.url = url;
    qc.name = "w";
    qc.reconnect_ms = 400;
    char err[512], id[QUEUE_ID_MAX];
    queue_conn_t *c = queue_connect(&qc, err, sizeof err);
    cr_assert(c, "%s", err);
    queue_task_t t = {.payload = "{}", .payload_len = 2};
    cr_assert_eq(queue_enqueue(c, &t, id, NULL), 0, "%s", queue_last_error(c));
    support_redis_kill(&cl.node[replica], 1);
    int rc = queue_enqueue(c, &t, id, NULL);
    cr_expect_eq(rc, QUEUE_EREDIS);
    cr_expect(strstr(queue_last_error(c), "applied on the master but 0 of 1 replicas acknowledged"), "%s",
              queue_last_error(c));
    /* reads are not held back */
    queue_stats_t st;
    cr_expect_eq(queue_stats(c, &st), 0, "%s", queue_last_error(c));
    cr_expect_eq(st.enqueued, 2, "the refused write was applied on the master");
    /* the replica back: writes go through again (the call waits meanwhile) */
    cr_assert_eq(support_redis_restart(&cl.node[replica], 1), 0, "%s", cl.node[replica].err);
    queue_close(c);
    qc.reconnect_ms = 10000;
    c = queue_connect(&qc, err, sizeof err);
    cr_assert(c, "%s", err);
    cr_expect_eq(queue_enqueue(c, &t, id, NULL), 0, "%s", queue_last_error(c));
    queue_close(c);
}

/* Two `sluice serve` workers serving the eight queues (WAIT on), producers
 * through HTTP on both workers and `sluice queue`: every task done once, its
 * result readable through either worker; stats and /metrics per queue. Then
 * a master SIGKILLed while the workers hold tasks: all still done once. */
Test(cluster, two_serve_workers_http_and_cli_producers, .timeout = 90) {
    char names[QUEUES][32], list[QUEUES * 33] = "";
    pick_names(names);
    for (int i = 0; i < QUEUES; i++) strcat(strcat(list, i ? "," : ""), names[i]);
    /* A lease whose reply the failover lost leaves its tasks leased to nobody
     * until the lease ends: a short lease keeps the test short. */
    const char *extra[] = {"--redis", cl.url, "--queue", list, "--redis-wait-replicas", "1", "--lease-ms", "3000", NULL};
    support_proc_t w[2];
    for (int k = 0; k < 2; k++) cr_assert_eq(support_proc_start(&w[k], extra), 0, "worker %d: %s", k, w[k].err);
    for (int k = 0; k < 2; k++) { /* ready: model loaded, every queue's Redis up */
        int status = 0;
        for (int t = 0; t < 300 && status != 200; t++) {
            http_resp_t r;
            memset(&r, 0, sizeof r);
            status = http_get(w[k].port, "/readyz", &r) == 0 ? r.status : 0;
            http_resp_free(&r);
            if (status != 200) usleep(100000);
        }
        cr_assert_eq(status, 200, "worker %d never ready", k);
    }
    const char *model = strrchr(support_model_dir(), '/') ? strrchr(support_model_dir(), '/') + 1 : support_model_dir();
    char ids[QUEUES][7][QUEUE_ID_MAX];
    for (int i = 0; i < QUEUES; i++) {
        for (int j = 0; j < 6; j++) { /* three tasks through each worker */
            char body[160];
            snprintf(body, sizeof body, "{\"input\":\"task %d of %.31s\",\"queue\":\"%.31s\"}", j, names[i], names[i]);
            http_resp_t r;
            cr_assert_eq(http_post_json(w[j % 2].port, "/v1/tasks", body, &r), 0);
            cr_assert_eq(r.status, 202, "%s", r.body);
            const char *p = strstr(r.body, "\"id\":\"");
            cr_assert(p && sscanf(p + 6, "%32[0-9a-f]", ids[i][j]) == 1, "%s", r.body);
            http_resp_free(&r);
        }
        cr_assert_eq(cli(names[i], "enqueue", "--model", model, "--op", "embed", "--input", "[\"from the cli\"]", NULL), 0,
                     "%s", cli_out);
        cr_assert_eq(sscanf(cli_out, "%32[0-9a-f]", ids[i][6]), 1, "%s", cli_out);
    }
    for (int i = 0; i < QUEUES; i++) {
        for (int j = 0; j < 7; j++) { /* each result read through the other worker */
            char path[200];
            snprintf(path, sizeof path, "/v1/tasks/%s?wait=30&queue=%.31s", ids[i][j], names[i]);
            http_resp_t r;
            cr_assert_eq(http_get(w[(j + 1) % 2].port, path, &r), 0);
            cr_expect_eq(r.status, 200, "%s", r.body);
            cr_expect(strstr(r.body, "\"state\":\"done\"") && strstr(r.body, "\"embedding\""), "%s %s: %.300s",
                      names[i], ids[i][j], r.body);
            http_resp_free(&r);
        }
        cr_assert_eq(cli(names[i], "stats", NULL), 0, "%s", cli_out);
        cr_expect(strstr(cli_out, "\"acked\":7") != NULL, "%s: %s", names[i], cli_out);
    }
    http_resp_t m;
    cr_assert_eq(http_get(w[0].port, "/metrics", &m), 0);
    for (int i = 0; i < QUEUES; i++) {
        char want[128];
        snprintf(want, sizeof want, "sluice_queue_tasks_total{queue=\"%.31s\",event=\"acked\"} 7", names[i]);
        cr_expect(strstr(m.body, want) != NULL, "/metrics lacks %s", want);
    }
    http_resp_free(&m);

    /* A master killed while the workers have tasks in hand: its replica takes
     * over, the workers follow, every task still ends done once. */
    enum { MORE = 20 };
    char err[256];
    char *payload = queue_payload_build(model, "embed", "[\"after the failover\"]", NULL, NULL, err, sizeof err);
    cr_assert(payload, "%s", err);
    char (*more)[MORE][QUEUE_ID_MAX] = calloc(QUEUES, sizeof *more);
    for (int i = 0; i < QUEUES; i++) {
        queue_conn_t *c = connect_q(names[i], 1);
        for (int j = 0; j < MORE; j++) {
            queue_task_t t = {.payload = payload, .payload_len = strlen(payload)};
            cr_assert_eq(queue_enqueue(c, &t, more[i][j], NULL), 0, "%s", queue_last_error(c));
        }
        queue_close(c);
    }
    int master = support_cluster_owner(&cl, queue_slot(names[0]));
    int replica = support_cluster_replica_of(&cl, master);
    cr_assert(master >= 0 && replica >= 0);
    support_redis_kill(&cl.node[master], 1);
    for (int i = 0; i < 200 && !support_cluster_is_master(&cl, replica); i++) usleep(50000);
    cr_assert(support_cluster_is_master(&cl, replica), "the replica was not promoted");
    cr_assert_eq(support_redis_restart(&cl.node[master], 1), 0, "%s", cl.node[master].err);
    for (int i = 0; i < QUEUES; i++) {
        queue_conn_t *c = connect_q(names[i], 0);
        for (int j = 0; j < MORE; j++) {
            queue_info_t info;
            cr_assert_eq(queue_wait(c, more[i][j], 30000, &info), 0, "%s", queue_last_error(c));
            cr_expect_eq(info.state, QUEUE_S_DONE, "%s %s: %s", names[i], more[i][j], queue_state_name(info.state));
            queue_info_clear(&info);
        }
        queue_stats_t st;
        cr_assert_eq(queue_stats(c, &st), 0, "%s", queue_last_error(c));
        cr_expect_eq(st.acked, 7 + MORE, "%s: acked %lld", names[i], (long long)st.acked);
        queue_close(c);
    }
    free(more);
    free(payload);
    for (int k = 0; k < 2; k++) cr_expect_eq(support_proc_stop(&w[k], SIGTERM, 20000), 0);
}
