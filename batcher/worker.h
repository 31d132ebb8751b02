/* batcher/worker.h - the device side of the batcher: the operations a device
 * runs and every call into the engine (forward passes, loads, unloads).
 *
 * Batching policy (batcher/batcher.c: queues, priority, age, budgets,
 * deadlines) decides *what* runs; this decides *how*: an operation is a
 * handler registered by number (batcher_op_t), with its result width, its
 * run over one packed batch, and an unload hook for what it built on a
 * model (e.g. the expand job's term index). The batcher registers embed (the
 * encoder forward pass) itself; others register theirs when they start, so
 * neither the batcher nor this file knows their engine modules. A second
 * producer (the generation scheduler) calls the same worker for its model
 * lifecycle and forward steps.
 *
 * Serialization: runs of a model hold it shared and its unload exclusive, so
 * a model is never unloaded under a running batch whichever producer runs
 * it; several runs may overlap on one model (the engine's runners > 1 lets
 * one batch upload while another computes). The batcher's policy also keeps
 * unloads away from models with batches in flight, so the wait is short.
 *
 * Thread-safety: worker_register_op before work arrives; every other call
 * from any thread.
 */
#ifndef SLUICE_BATCHER_WORKER_H
#define SLUICE_BATCHER_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/registry.h"

#define WORKER_MAX_OPS 8

/* One packed batch for an operation: n_seqs sequences end to end. */
typedef struct {
    int model;              /* registry index */
    int n_seqs;
    const int32_t *ids;     /* (seq_off[n_seqs]) */
    const int32_t *seq_off; /* (n_seqs+1) */
} worker_batch_t;

typedef struct worker_op {
    const char *name;
    /* Floats of result per sequence on this model (0: the op cannot run it). */
    int (*result_floats)(void *user, registry_t *reg, int model);
    /* Fill out (n_seqs, result_floats) float32 host; 0, or nonzero with a message
     * (the batch's items fail with it). */
    int (*run)(void *user, registry_t *reg, model_t *m, const worker_batch_t *in, float *out, char *err,
               size_t errlen);
    /* The model is about to unload: free what the op built on it (NULL: nothing). */
    void (*unload)(void *user, int model);
} worker_op_t;

typedef struct worker worker_t;

int worker_create(registry_t *reg, worker_t **out); /* 0, or -1 out of memory */
void worker_destroy(worker_t *w);                   /* NULL is a no-op */

/* Register the handler of op (0 .. WORKER_MAX_OPS-1); h must outlive the worker. 0, or -1. */
int worker_register_op(worker_t *w, int op, const worker_op_t *h, void *user);
int worker_has_op(const worker_t *w, int op);
int worker_result_floats(worker_t *w, int op, int model);

/* One batch of op: resolve the loaded model and run the handler; 0, or
 * nonzero with a message (ENGINE_EMODEL: the model is not loaded). */
int worker_run(worker_t *w, int op, const worker_batch_t *in, float *out, char *err, size_t errlen);
/* Run fn on the loaded model holding it shared, as worker_run does: for a
 * producer that drives the engine itself (the generation scheduler's
 * decoder steps, batcher/sched.h). fn's result, or ENGINE_EMODEL with a
 * message when the model is not loaded. */
typedef int (*worker_model_fn)(void *user, model_t *m, char *err, size_t errlen);
int worker_with_model(worker_t *w, int model, worker_model_fn fn, void *user, char *err, size_t errlen);
/* Load a model (ENGINE_OK or ENGINE_E* with a message); unload it after every
 * op's unload hook. */
int worker_load(worker_t *w, int model, char *err, size_t errlen);
void worker_unload(worker_t *w, int model);

/* The embed operation (the encoder forward pass), for batcher_create. */
extern const worker_op_t worker_embed_op;

#endif
