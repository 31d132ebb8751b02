/* kernels/cpu/threadpool.c - fixed worker pool for the CPU backend's own ops.
 *
 * A decode step issues a few hundred short jobs (four matmuls and the
 * attention of each layer, tens of microseconds each at batch 1), so handing
 * a job out must cost far less than that: no lock and no system call on the
 * way in or out while the workers are awake.
 *
 * The job word. job (an atomic) is generation * 2 + open. run publishes the
 * job's fields, then a new odd word; a worker that sees it increments active,
 * then checks that the word is still the same (the job still open), and only
 * then takes task indices from an atomic counter (else it decrements and
 * skips). The caller takes tasks too, then closes the job (an even word) and
 * waits for active to reach 0. All of these are sequentially consistent, so
 * a worker either counted itself before the caller read active (and is
 * waited for) or saw the job closed: no worker can still hold a stale job
 * when run returns, and a worker the scheduler has not run yet (a busy
 * machine) never makes the caller wait for its wake-up.
 *
 * Waiting. After a job a worker spins on the job word for up to SPIN_NS (a
 * few hundred pauses, then sched_yield, so another process that wants the
 * core gets it), and the next job of the step finds it awake; then it sleeps on a
 * condition variable, counted in sleepers. run broadcasts only when a worker
 * sleeps: a worker adds itself to sleepers before its last look at the job
 * word, and run publishes the word before it reads sleepers, so one of the
 * two always sees the other. An idle pool (between requests) takes no CPU
 * after SPIN_NS.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "kernels/cpu/threadpool.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

#define SPIN_NS 2000000L /* 2 ms: longer than the gaps between a step's jobs and between steps */
#define SPIN_PAUSES 256   /* then the spin yields the core each time round (measured: pause-only spinning
                           * for 2 ms lost up to half the decode rate on a 2-core box with load 3-5) */

struct ops_cpu_threadpool {
    int size;           /* threads in all, caller included */
    pthread_t *workers; /* (size - 1) */
    int n_started;      /* workers actually started */
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a new job or shutdown, for sleeping workers */
    atomic_ulong job;         /* generation * 2 + (1 while the job takes workers) */
    atomic_int active;        /* workers counted in the current job */
    atomic_int sleepers;      /* workers asleep (or about to be) on wake */
    atomic_int stop;
    ops_cpu_task_fn fn;       /* the current job, written before its word is published */
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

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Waits until the job word differs from seen (or stop); returns the new word. */
static unsigned long wait_for_job(ops_cpu_threadpool_t *pool, unsigned long seen) {
    long t0 = now_ns();
    for (unsigned i = 1;; i++) {
        unsigned long w = atomic_load(&pool->job);
        if (w != seen || atomic_load(&pool->stop)) return w;
        if (i <= SPIN_PAUSES) POOL_PAUSE();
        else sched_yield(); /* a shared machine: hand the core to whoever else is runnable on it */
        if (i % 64 == 0 && now_ns() - t0 > SPIN_NS) break;
    }
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add(&pool->sleepers, 1);
    unsigned long w;
    while ((w = atomic_load(&pool->job)) == seen && !atomic_load(&pool->stop)) pthread_cond_wait(&pool->wake, &pool->mu);
    atomic_fetch_sub(&pool->sleepers, 1);
    pthread_mutex_unlock(&pool->mu);
    return w;
}

static void *worker_main(void *p) {
    worker_arg_t arg = *(worker_arg_t *)p;
    free(p);
    ops_cpu_threadpool_t *pool = arg.pool;
    unsigned long seen = atomic_load(&pool->job);
    for (;;) {
        unsigned long w = wait_for_job(pool, seen);
        if (atomic_load(&pool->stop)) break;
        seen = w;
        if (!(w & 1)) continue; /* closed before we looked */
        atomic_fetch_add(&pool->active, 1);
        if (atomic_load(&pool->job) == w) take_tasks(pool, pool->fn, pool->ctx, pool->n_tasks, arg.worker);
        atomic_fetch_sub(&pool->active, 1);
    }
    return NULL;
}

ops_cpu_threadpool_t *ops_cpu_threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    ops_cpu_threadpool_t *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->size = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    atomic_init(&pool->job, 0);
    atomic_init(&pool->active, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, 0);
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
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i], NULL);
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
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    unsigned long w = atomic_load(&pool->job) + 1u; /* the next generation, open (odd) */
    atomic_store(&pool->job, w);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
    }

    take_tasks(pool, fn, ctx, n_tasks, 0);

    atomic_store(&pool->job, w + 1u); /* closed (even) */
    /* the joined workers finish their last tasks; yield if one was preempted */
    for (unsigned i = 0; atomic_load(&pool->active) > 0; i++) {
        if (i < 4096) POOL_PAUSE();
        else sched_yield();
    }
}
