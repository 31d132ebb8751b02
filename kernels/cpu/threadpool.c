/* kernels/cpu/threadpool.c - fixed worker pool for the CPU backend's own ops.
 *
 * A job is published under the mutex with a new generation number; workers
 * wake on the condition variable, join it (under the mutex) while it is still
 * open, take task indices from an atomic counter, and check out. The caller
 * takes tasks too, then closes the job and waits only for the workers that
 * joined: a worker the scheduler has not run yet (a busy machine) skips the
 * closed job instead of making the caller wait for its wake-up, and no worker
 * can still hold a stale job when run returns.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "kernels/cpu/threadpool.h"

struct ops_cpu_threadpool {
    int size;           /* threads in all, caller included */
    pthread_t *workers; /* (size - 1) */
    int n_started;      /* workers actually started */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* a new job or shutdown */
    pthread_cond_t done; /* the last worker checked out */
    unsigned long generation;
    int stop;
    int job_open;   /* the current job still takes new workers */
    int joined;     /* workers on the current job, not yet checked out */
    ops_cpu_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
};

typedef struct {
    ops_cpu_threadpool_t *pool;
    int worker;
} worker_arg_t;

static void take_tasks(ops_cpu_threadpool_t *pool, ops_cpu_task_fn fn, void *ctx, int n_tasks, int worker) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
        if (t >= n_tasks) break;
        fn(ctx, t, worker);
    }
}

static void *worker_main(void *p) {
    worker_arg_t arg = *(worker_arg_t *)p;
    free(p);
    ops_cpu_threadpool_t *pool = arg.pool;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stop && pool->generation == seen) pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->stop) break;
        seen = pool->generation;
        if (!pool->job_open) continue; /* finished without us */
        pool->joined++;
        ops_cpu_task_fn fn = pool->fn;
        void *ctx = pool->ctx;
        int n_tasks = pool->n_tasks;
        pthread_mutex_unlock(&pool->mu);
        take_tasks(pool, fn, ctx, n_tasks, arg.worker);
        pthread_mutex_lock(&pool->mu);
        if (--pool->joined == 0) pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

ops_cpu_threadpool_t *ops_cpu_threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    ops_cpu_threadpool_t *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->size = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    atomic_init(&pool->next_task, 0);
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            worker_arg_t *arg = malloc(sizeof *arg);
            if (!arg) goto fail;
            arg->pool = pool;
            arg->worker = i + 1;
            if (pthread_create(&pool->workers[i], NULL, worker_main, arg) != 0) {
                free(arg);
                goto fail;
            }
            pool->n_started++;
        }
    }
    return pool;
fail:
    ops_cpu_threadpool_destroy(pool);
    return NULL;
}

void ops_cpu_threadpool_destroy(ops_cpu_threadpool_t *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    free(pool->workers);
    free(pool);
}

int ops_cpu_threadpool_size(const ops_cpu_threadpool_t *pool) { return pool ? pool->size : 1; }

void ops_cpu_threadpool_run(ops_cpu_threadpool_t *pool, ops_cpu_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || !pool || pool->n_started == 0) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    pool->job_open = 1;
    pool->joined = 0;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);

    take_tasks(pool, fn, ctx, n_tasks, 0);

    pthread_mutex_lock(&pool->mu);
    pool->job_open = 0;
    while (pool->joined > 0) pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}
