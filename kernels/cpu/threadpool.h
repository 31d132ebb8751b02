/* kernels/cpu/threadpool.h - the CPU backend's fixed pool of worker threads.
 *
 * One pool per ops_t (clones get their own). ops_cpu_threadpool_run hands out
 * n_tasks task indices to the calling thread and the workers, and returns when
 * every task has finished. After a job, workers spin on an atomic for about
 * 2 ms, yielding the core to any other runnable thread (a decode step's jobs
 * come microseconds apart: waking a sleeping thread would cost more than the
 * job), then sleep on a condition variable, so an idle pool takes no CPU.
 *
 * Thread safety: one thread at a time calls run on a given pool (the ops_t
 * contract: one thread per ops_t). fn runs concurrently on several threads.
 */
#ifndef SLUICE_CPU_THREADPOOL_H
#define SLUICE_CPU_THREADPOOL_H

typedef struct ops_cpu_threadpool ops_cpu_threadpool_t;

/* fn(ctx, task, worker): task in [0, n_tasks), worker in [0, size) names the
 * thread (0 = the caller), so per-worker scratch can be indexed by it. */
typedef void (*ops_cpu_task_fn)(void *ctx, int task, int worker);

/* A pool of n_threads threads in all, the caller included (n_threads - 1 workers).
 * NULL on failure. */
ops_cpu_threadpool_t *ops_cpu_threadpool_create(int n_threads);
void ops_cpu_threadpool_destroy(ops_cpu_threadpool_t *pool); /* NULL is a no-op */
int ops_cpu_threadpool_size(const ops_cpu_threadpool_t *pool);

/* Runs fn for every task in [0, n_tasks), tasks taken in order by whichever
 * thread is free (dynamic scheduling). Inline on the caller when n_tasks <= 1. */
void ops_cpu_threadpool_run(ops_cpu_threadpool_t *pool, ops_cpu_task_fn fn, void *ctx, int n_tasks);

#endif
