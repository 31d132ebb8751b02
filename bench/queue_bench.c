/* bench/queue_bench.c - throughput of the Redis queue: tasks/s through
 * enqueue -> lease (batches) -> ack, with W worker threads on one Redis.
 *
 * One producer thread enqueues N tasks in batches (queue_enqueue_many) while
 * W workers lease up to --batch tasks each round and ack them in one call
 * (queue_ack_many), each thread on its own connection, as the serving side
 * does. The clock runs from the first enqueue to the last ack; the queue must
 * be empty afterwards (checked). Built by `make bench` as bin/bench-queue_bench;
 * bench/queue_bench.sh starts a private redis-server and runs the usual set.
 *
 * usage: bench-queue_bench [--redis URL] [--queue NAME] [--tasks N] [--workers W]
 *                          [--batch B] [--payload-bytes P] [--prefill]
 * --prefill: enqueue everything first, then start the workers, and time the
 * two phases apart (the default runs producer and workers together).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "queue/queue.h"

typedef struct {
    queue_config_t cfg;
    int tasks, batch, payload_bytes;
    atomic_int acked, enqueued, failed;
    atomic_int lease_calls, empty_leases;
} bench_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static queue_conn_t *connect_or_die(bench_t *b) {
    char err[512];
    queue_conn_t *c = queue_connect(&b->cfg, err, sizeof err);
    if (!c) {
        fprintf(stderr, "queue-bench: %s\n", err);
        atomic_store(&b->failed, 1);
    }
    return c;
}

static void *producer(void *arg) {
    bench_t *b = arg;
    queue_conn_t *c = connect_or_die(b);
    if (!c) return NULL;
    enum { CHUNK = 256 };
    char *payload = malloc(b->payload_bytes + 1);
    queue_task_t *t = calloc(CHUNK, sizeof *t);
    char (*ids)[QUEUE_ID_MAX] = calloc(CHUNK, QUEUE_ID_MAX);
    int *st = calloc(CHUNK, sizeof *st);
    if (!payload || !t || !ids || !st) {
        atomic_store(&b->failed, 1);
        goto done;
    }
    memset(payload, 'x', b->payload_bytes);
    payload[b->payload_bytes] = 0;
    for (int i = 0; i < CHUNK; i++) t[i] = (queue_task_t){.payload = payload, .payload_len = b->payload_bytes};
    for (int sent = 0; sent < b->tasks && !atomic_load(&b->failed);) {
        int n = b->tasks - sent < CHUNK ? b->tasks - sent : CHUNK;
        if (queue_enqueue_many(c, t, n, ids, st)) {
            fprintf(stderr, "queue-bench: enqueue: %s\n", queue_last_error(c));
            atomic_store(&b->failed, 1);
            break;
        }
        sent += n;
        atomic_store(&b->enqueued, sent);
    }
done:
    free(payload);
    free(t);
    free(ids);
    free(st);
    queue_close(c);
    return NULL;
}

static void *worker(void *arg) {
    bench_t *b = arg;
    queue_conn_t *c = connect_or_die(b);
    if (!c) return NULL;
    queue_lease_t *l = calloc(b->batch, sizeof *l);
    queue_ack_t *acks = calloc(b->batch, sizeof *acks);
    int *st = calloc(b->batch, sizeof *st);
    static const char result[] = "{\"ok\":true}";
    while (l && acks && st && atomic_load(&b->acked) < b->tasks && !atomic_load(&b->failed)) {
        int got = 0;
        if (queue_lease(c, b->batch, "bench", 30000, l, &got)) {
            fprintf(stderr, "queue-bench: lease: %s\n", queue_last_error(c));
            atomic_store(&b->failed, 1);
            break;
        }
        atomic_fetch_add(&b->lease_calls, 1);
        if (!got) {
            /* Nothing ready: wait a little, as an intake thread would, so
             * idle polling does not eat the Redis core the producer needs. */
            atomic_fetch_add(&b->empty_leases, 1);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i < got; i++) acks[i] = (queue_ack_t){l[i].id, l[i].token, result, sizeof result - 1};
        if (queue_ack_many(c, acks, got, 60000, st)) {
            fprintf(stderr, "queue-bench: ack: %s\n", queue_last_error(c));
            atomic_store(&b->failed, 1);
        }
        queue_lease_clear(l, got);
        atomic_fetch_add(&b->acked, got);
    }
    free(l);
    free(acks);
    free(st);
    queue_close(c);
    return NULL;
}

int main(int argc, char **argv) {
    bench_t b = {.tasks = 200000, .batch = 64, .payload_bytes = 100};
    int workers = 1, prefill = 0;
    queue_config_defaults(&b.cfg);
    b.cfg.name = "bench";
    b.cfg.result_ttl_ms = 60000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--prefill")) {
            prefill = 1;
            continue;
        }
        if (!v) goto usage;
        if (!strcmp(a, "--redis")) b.cfg.url = v;
        else if (!strcmp(a, "--queue")) b.cfg.name = v;
        else if (!strcmp(a, "--tasks")) b.tasks = atoi(v);
        else if (!strcmp(a, "--workers")) workers = atoi(v);
        else if (!strcmp(a, "--batch")) b.batch = atoi(v);
        else if (!strcmp(a, "--payload-bytes")) b.payload_bytes = atoi(v);
        else goto usage;
        i++;
    }
    if (b.tasks < 1 || workers < 1 || workers > 64 || b.batch < 1 || b.batch > 10000 || b.payload_bytes < 0)
        goto usage;

    queue_conn_t *c = connect_or_die(&b);
    if (!c) return 1;
    queue_stats_t before;
    if (queue_stats(c, &before)) {
        fprintf(stderr, "queue-bench: %s\n", queue_last_error(c));
        return 1;
    }
    pthread_t prod, *th = calloc(workers, sizeof *th);
    double t0 = now_s();
    pthread_create(&prod, NULL, producer, &b);
    if (prefill) pthread_join(prod, NULL);
    double t_enq = now_s() - t0;
    for (int i = 0; i < workers; i++) pthread_create(&th[i], NULL, worker, &b);
    if (!prefill) {
        pthread_join(prod, NULL);
        t_enq = now_s() - t0;
    }
    for (int i = 0; i < workers; i++) pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    free(th);
    queue_stats_t after;
    int rc = queue_stats(c, &after);
    queue_close(c);
    if (atomic_load(&b.failed) || rc) return 1;
    long long acked = after.acked - before.acked;
    printf("workers=%d batch=%d tasks=%d payload=%dB: %.2f s, %.0f tasks/s end to end (enqueue finished at %.2f s)"
           "; acked %lld, left ready %lld leased %lld\n",
           workers, b.batch, b.tasks, b.payload_bytes, secs, b.tasks / secs, t_enq, acked, (long long)after.ready,
           (long long)after.leased);
    int calls = atomic_load(&b.lease_calls), empty = atomic_load(&b.empty_leases);
    printf("  leases: %d calls, %.1f tasks per non-empty call, %d found nothing\n", calls,
           calls > empty ? (double)b.tasks / (calls - empty) : 0.0, empty);
    if (prefill)
        printf("  phases: enqueue %.0f tasks/s alone, lease+ack %.0f tasks/s alone\n", b.tasks / t_enq,
               b.tasks / (secs - t_enq));
    return acked == b.tasks && after.ready == 0 && after.leased == 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: bench-queue_bench [--redis URL] [--queue NAME] [--tasks N] [--workers 1..64] "
                    "[--batch B] [--payload-bytes P] [--prefill]\n");
    return 2;
}
