/* api/tasks.h - the Redis intake of `sluice serve` and the /v1/tasks routes.
 *
 * Per Redis queue: one intake thread leases only as many tasks as the
 * batcher has room for (so under load the backlog waits in Redis, not in our
 * memory), decodes and tokenizes them into work items, renews the leases of
 * everything it holds while it waits or computes, and reaps expired leases
 * periodically; one completion thread acks results and fails errors in
 * pipelined batches. Each thread has its own Redis connection. When Redis is
 * unreachable both keep reconnecting and api_tasks_up answers 0; HTTP goes on.
 *
 * Thread-safety: api_tasks_up is safe from any thread; start/stop/destroy are
 * called by the server's owner thread.
 */
#ifndef SLUICE_API_TASKS_H
#define SLUICE_API_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

typedef struct api_serve api_serve_t;
typedef struct api_tasks api_tasks_t;

int api_tasks_start(api_serve_t *s, api_tasks_t **out, char *err, size_t errlen);
/* Stop leasing (shutdown step 1); leases held stay renewed until their items end. */
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

/* For the routes (api/server.c owns the pointer). */
api_tasks_t *api_srv_tasks(api_serve_t *s);

#endif
