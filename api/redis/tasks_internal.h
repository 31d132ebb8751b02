/* api/redis/tasks_internal.h - internal to api/redis/: the state the intake
 * (intake.c), the task API and lifecycle (tasks.c) and the long-poll waiter
 * (waiter.c) share. Locks: a queue's mu guards its held and done lists; the
 * pool has pool_mu; the waiter list wmu.
 */
#ifndef SLUICE_API_REDIS_TASKS_INTERNAL_H
#define SLUICE_API_REDIS_TASKS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/jobs.h"
#include "api/redis/tasks.h"

#define API_TASKS_POOL_MAX 8 /* idle route connections kept */

typedef struct task_queue task_queue_t;

#define API_TASKS_CANCEL_IDS 64       /* work ids one task cancels at most (its choices) */
#define API_TASKS_STREAM_MAXLEN 10000 /* entries a task's token stream keeps (XADD MAXLEN ~) */

/* One entry for a task's token stream, waiting for the completion thread. */
typedef struct stream_entry {
    char id[QUEUE_ID_MAX];
    int64_t token;
    const char *field;        /* "delta" | "done" (static) */
    char *value;              /* JSON */
    size_t len;
    struct stream_entry *next;
} stream_entry_t;

/* One leased task while we hold it. */
typedef struct task {
    task_queue_t *q;
    char id[QUEUE_ID_MAX];
    int64_t token;
    int attempt, max_attempts; /* of this lease, for the log line of a failure */
    api_job_t *job;           /* NULL when the payload was refused before submit */
    int refuse_status;        /* validation failure: answered as a result with this status */
    char *refuse_json;        /* its error JSON */
    int release;              /* hand back instead of ack/fail (EBUSY at submit) */
    int cancel_requested, lost;
    int logged;               /* its outcome line is out (a settle retried after a Redis error logs nothing new) */
    struct task *prev, *next;
} task_t;

struct task_queue {
    api_tasks_t *t;
    char name[QUEUE_NAME_MAX];
    queue_config_t qc;
    pthread_t intake_thr, completion_thr;
    int intake_started, completion_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* completion: work arrived; intake: held list emptied */
    task_t *held;             /* leased, in the batcher */
    int n_held;
    task_t *done_head, *done_tail;
    stream_entry_t *stream_head, *stream_tail; /* token stream entries to append, in order */
    atomic_int intake_up, completion_up;
    atomic_int stop_intake;   /* shutdown step 1: lease nothing more, stop between tasks */
    atomic_int stop;          /* step 2 (the batcher has stopped): the intake goes */
    atomic_int stop_completion; /* step 3 (the intake is gone): settle what is left, then go */
    /* the task routes' circuit breaker (api_tasks_pool_get/put), under mu: after a
     * Redis error a route's call answers at once, without Redis, until brk_until_ns;
     * then one call tries (the others still answer at once) and its outcome
     * closes the breaker or opens it for twice as long (jittered, capped) */
    int64_t brk_until_ns;     /* CLOCK_MONOTONIC; 0: closed */
    int brk_wait_ms;          /* the last wait; 0 after a success */
    unsigned brk_seed;        /* jitter */
    char brk_err[200];        /* the error that opened it */
};

struct api_tasks {
    const api_config_t *cfg;
    registry_t *reg;
    batcher_t *bat;
    const api_jobs_t *jobs;
    task_queue_t *queues;
    int n;
    char worker[128];
    /* route connections */
    pthread_mutex_t pool_mu;
    queue_conn_t *pool[API_TASKS_POOL_MAX];
    char pool_q[API_TASKS_POOL_MAX][QUEUE_NAME_MAX];
    int n_pool;
    /* long-polls */
    pthread_t waiter_thr;
    int waiter_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    api_task_watch_t *waiters;
    int wstop;
};

/* A connection of queue q for one round trip (pooled; never hangs on a dead
 * Redis), and its return (rc: the call's QUEUE_* code; a broken one is
 * closed). While the queue's breaker is open (a Redis error moments ago)
 * pool_get answers NULL at once with err saying why, without Redis. */
queue_conn_t *api_tasks_pool_get(api_tasks_t *t, task_queue_t *q, char *err, size_t errlen);
void api_tasks_pool_put(api_tasks_t *t, task_queue_t *q, queue_conn_t *c, int rc);

void *api_tasks_intake_main(void *q);     /* task_queue_t */
void *api_tasks_completion_main(void *q); /* task_queue_t */
void *api_tasks_waiter_main(void *t);     /* api_tasks_t */
/* Some task ended: long-polls look again now. */
void api_tasks_wake_waiters(api_tasks_t *t);

void api_task_free(task_t *k); /* NULL is a no-op */

#endif
