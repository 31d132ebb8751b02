/* api/redis/tasks.h - the Redis intake of `sluice serve`, and the Redis side
 * of the /v1/tasks routes.
 *
 * Per Redis queue: one intake thread leases only as many tasks as the
 * batcher has room for (so under load the backlog waits in Redis, not in our
 * memory), decodes them through the job layer (api/jobs.h) into work items,
 * renews the leases of everything it holds while it waits or computes, and
 * reaps expired leases periodically; one completion thread acks results and
 * fails errors in pipelined batches (api/redis/intake.c). Each thread has its
 * own Redis connection. When Redis is unreachable both keep reconnecting and
 * api_tasks_up answers 0; HTTP goes on.
 *
 * For the task routes (api/http/routes_tasks.c), which know HTTP but not
 * Redis: enqueue, get, cancel on a pooled connection, and long-polls served
 * by one waiter thread (api/redis/waiter.c) that calls the caller's wake
 * function when the task ends or the wait runs out. Nothing here knows HTTP.
 *
 * Thread-safety: every call but start/stop/destroy is safe from any thread;
 * those are called by the server's owner thread.
 */
#ifndef SLUICE_API_REDIS_TASKS_H
#define SLUICE_API_REDIS_TASKS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/config.h"
#include "batcher/batcher.h"
#include "engine/registry.h"
#include "queue/queue.h"

typedef struct api_tasks api_tasks_t;

/* One queue per name in cfg->queue (comma-separated); cfg, reg, bat and jobs
 * (the operations, api/jobs.h) must outlive the intake. 0, or -1 with a message. */
typedef struct api_jobs api_jobs_t;
int api_tasks_start(const api_config_t *cfg, registry_t *reg, batcher_t *bat, const api_jobs_t *jobs,
                    api_tasks_t **out, char *err, size_t errlen);
/* Stop leasing (shutdown step 1); leases held stay renewed until their items
 * end. Long-polls are answered now. */
void api_tasks_stop_intake(api_tasks_t *t);
/* Stop the threads after flushing acks, fails and lease hand-backs (call it
 * after batcher_stop, so nothing is still computing). With Redis down the
 * unsettled rest is dropped: the leases expire and the reaper re-queues them.
 * NULL: no-op. */
void api_tasks_destroy(api_tasks_t *t);
/* 1: every queue's connections are up; 0: some are down (reconnecting). */
int api_tasks_up(api_tasks_t *t);
/* The same for queue i alone (name: QUEUE_NAME_MAX bytes, or NULL); -1 when
 * there is no queue i. */
int api_tasks_queue_up(api_tasks_t *t, int i, char *name);

/* For /metrics: the queues and their stats (one round trip on a pooled
 * connection; -1 when Redis is unreachable). name: QUEUE_NAME_MAX bytes. */
int api_tasks_queue_count(api_tasks_t *t);
int api_tasks_queue_stats(api_tasks_t *t, int i, char *name, queue_stats_t *out);

/* The queue named `name` (NULL: the first): its index, or -1. */
int api_tasks_find_queue(api_tasks_t *t, const char *name);
const char *api_tasks_queue_name(api_tasks_t *t, int q);

/* Each returns a QUEUE_* code, or API_TASKS_ENOCONN when no connection
 * could be made; err gets the reason of a failure. A circuit breaker per
 * queue keeps these calls off a failing Redis: after a Redis error (lost,
 * out of memory, read-only...) they answer API_TASKS_ENOCONN at once,
 * without Redis, for 100 ms doubling to 5 s (each wait jittered between half
 * and all of it); then one call tries Redis again, and a success closes the
 * breaker. api_tasks_retry_after_s says how long it stays open (seconds,
 * rounded up, at least 1: a Retry-After).
 *
 * Tenants: owner is the name of the API key acting (NULL: no keys, or an
 * admin key, which may reach every task). A task records the owner that
 * enqueued it (an "owner" field in its payload); its dedup key is scoped to
 * that owner, so two keys with the same dedup_key get two tasks; get and
 * cancel of another owner's task answer QUEUE_ENOTFOUND, as for no task. A
 * task enqueued without an owner (the CLI, the queue library) is anyone's. */
#define API_TASKS_ENOCONN (-100)
int api_tasks_retry_after_s(api_tasks_t *t, int q);
int api_tasks_enqueue(api_tasks_t *t, int q, const queue_task_t *task, const char *owner, char id[QUEUE_ID_MAX],
                      int *outcome, char *err, size_t errlen);
int api_tasks_get(api_tasks_t *t, int q, const char *id, const char *owner, queue_info_t *info, char *err,
                  size_t errlen);
/* n tasks (at most API_TASKS_BATCH_MAX: one script call, one round trip),
 * each owner's as with api_tasks_enqueue; status[i] as queue_enqueue_many's. */
#define API_TASKS_BATCH_MAX 512
int api_tasks_enqueue_many(api_tasks_t *t, int q, const queue_task_t *tasks, size_t n, const char *owner,
                           char (*ids)[QUEUE_ID_MAX], int *status, char *err, size_t errlen);
/* A pooled connection of queue q for the calls that need no more than one
 * (stats, the dead-letter queue: admin routes, which see every tenant's
 * tasks), NULL with err when none could be made; give it back with the
 * call's QUEUE_* code. */
queue_conn_t *api_tasks_borrow(api_tasks_t *t, int q, char *err, size_t errlen);
void api_tasks_give_back(api_tasks_t *t, int q, queue_conn_t *c, int rc);
/* Cancel; a task this server holds right now is dropped before compute if it
 * has not started. */
int api_tasks_cancel(api_tasks_t *t, int q, const char *id, const char *owner, int *outcome, char *err,
                     size_t errlen);

/* The task as HTTP (GET /v1/tasks/{id}) and the CLI (sluice queue get) show
 * it, so both use the same names: id, state, attempts, max_attempts,
 * priority, worker (the last lease holder), error, cancel_requested, result
 * (parsed JSON when it is JSON), and the times as unix ms: enqueued_at_ms,
 * and when set finished_at_ms, deadline_at_ms, due_at_ms, lease_until_ms,
 * dead_at_ms. A new reference, or NULL when out of memory. */
json_t *api_task_info_json(const char *id, const queue_info_t *info);
/* Stored text as JSON: parsed when it is JSON, else a string; null for NULL. */
json_t *api_json_or_string(const char *s, size_t len);

/* A long-poll: the waiter watches the task until it ends or until_ns (CLOCK_MONOTONIC)
 * passes, fills rc and info, then calls wake(user) once; from then on the
 * caller owns the watch and frees it with api_tasks_watch_free. */
typedef struct api_task_watch {
    char id[QUEUE_ID_MAX];
    int q;
    int64_t until_ns;
    int rc;            /* QUEUE_* of the last look */
    queue_info_t info; /* the task as last seen */
    void (*wake)(void *user);
    void *user;
    int due;           /* waiter thread: look at it now (its end was announced) */
    struct api_task_watch *next;
} api_task_watch_t;

/* NULL when out of memory. */
api_task_watch_t *api_tasks_watch(api_tasks_t *t, int q, const char *id, int64_t until_ns, void (*wake)(void *),
                                  void *user);
void api_tasks_watch_free(api_task_watch_t *w); /* NULL is a no-op */

#endif
