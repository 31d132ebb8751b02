/* batcher/batcher.h - work items, per-model pending queues, micro-batches, dispatch.
 *
 * Both intakes (HTTP and Redis) hand the batcher *work items*: one request of
 * n sequences (token ids, already tokenized) for one model and one op. The
 * batcher keeps a pending queue per model, ordered by priority (higher first)
 * then age, and bounded in items and bytes: a submit that does not fit gets
 * BATCHER_EBUSY (HTTP answers 429, the Redis intake stops leasing), so the
 * backlog waits outside our memory.
 *
 * Per device, one dispatch thread and one worker per engine runner
 * (registry_engine_opts(reg)->runners: 1 on cpu, 2 on cuda):
 *   - the dispatch thread forms the next micro-batch (one model, one op) from
 *     the pending queue, bounded by max sequences, max tokens and the engine's
 *     workspace (engine_max_batch_tokens/seqs), and packs it while the worker
 *     computes the current one. A batch leaves when it is full or when its
 *     oldest item has waited max_queue_delay. Until the worker takes it, a
 *     prepared batch is topped up with items that arrive meanwhile. Items past
 *     their deadline are answered EXPIRED without compute, cancelled ones
 *     CANCELLED.
 *   - the worker threads run batches through the op's handler (registered
 *     with batcher_register_op; the batcher registers embed itself, see
 *     batcher/worker.h), load models on first use (lazy) and unload them;
 *     every engine call for a device happens on its workers, so a model is
 *     never unloaded under a running batch.
 * An item larger than one batch is split across consecutive batches (its
 * sequences stay in order); it completes when its last sequence is computed.
 *
 * Ownership: the submitter allocates the item and the buffers it points to
 * (ids, seq_off, out) and keeps them alive until `done` is called; `done` is
 * called exactly once per accepted item, never under the batcher's lock and
 * never from inside batcher_submit; after it returns the item belongs to the
 * submitter again. `done` runs on a batcher thread (or on the thread calling
 * batcher_cancel/batcher_destroy) and must not block: queue a response, wake
 * a connection, push to a completion queue.
 *
 * Thread-safety: every public call is thread-safe.
 */
#ifndef SLUICE_BATCHER_H
#define SLUICE_BATCHER_H

#include <stddef.h>
#include <stdint.h>
#include "engine/registry.h"

#define BATCHER_RID_MAX 64 /* request id bytes incl. NUL */
#define BATCHER_TRACE_MAX 56 /* W3C traceparent (55 chars) incl. NUL */

/* Ops: numbers and names fixed here; each runs through the handler registered
 * for it (batcher_register_op). */
typedef enum { BATCHER_OP_EMBED = 0, BATCHER_OP_EXPAND = 1, BATCHER_OP_COUNT } batcher_op_t;

enum {
    BATCHER_OK = 0,
    BATCHER_EINVAL = -1,   /* bad item (no sequences, ids out of range, unknown op/model) */
    BATCHER_EBUSY = -2,    /* the model's pending queue is full (items or bytes) */
    BATCHER_EPAUSED = -3,  /* paused or draining: not taking work */
    BATCHER_ENOMEM = -4,   /* the model does not fit its device budget */
    BATCHER_EMODEL = -5,   /* the model failed to load */
    BATCHER_ECOMPUTE = -6, /* the forward pass failed */
    BATCHER_ESTOPPED = -7, /* shutting down */
};

typedef enum {
    BATCHER_DONE_OK = 0,        /* out holds the result */
    BATCHER_DONE_EXPIRED = 1,   /* deadline passed before compute started */
    BATCHER_DONE_CANCELLED = 2, /* batcher_cancel before compute started */
    BATCHER_DONE_FAILED = 3,    /* err_code (BATCHER_E*) and err say why */
    BATCHER_DONE_SHUTDOWN = 4,  /* not computed: the batcher stopped (hand the work back) */
} batcher_outcome_t;

typedef struct batcher_item batcher_item_t;
typedef void (*batcher_done_fn)(batcher_item_t *item, void *user);

struct batcher_item {
    /* ---- in: filled by the submitter ---- */
    int model;                      /* registry index */
    batcher_op_t op;
    int priority;                   /* higher runs first */
    uint32_t tenant;                /* who asked (an API key, a client address; 0: anyone): within one
                                       priority each batch is shared between tenants, a quantum of
                                       tokens each in turn, so one heavy client cannot starve another */
    int64_t deadline_ns;            /* CLOCK_MONOTONIC ns (batcher_now_ns); 0 = none */
    char request_id[BATCHER_RID_MAX];
    char traceparent[BATCHER_TRACE_MAX]; /* W3C traceparent or "": carried for the logs */
    int n_seqs;                     /* >= 1 */
    const int32_t *ids;             /* (seq_off[n_seqs]) token ids, sequences end to end */
    const int32_t *seq_off;         /* (n_seqs+1), seq_off[0] = 0; each sequence 1..max_seq_len */
    float *out;                     /* (n_seqs, batcher_result_floats) float32, written on OK */
    batcher_done_fn done;
    void *user;

    /* ---- out: set before done() ---- */
    uint64_t id;                    /* assigned by batcher_submit (for batcher_cancel) */
    batcher_outcome_t outcome;
    int err_code;                   /* BATCHER_E* when FAILED */
    char err[256];
    int64_t t_submit_ns, t_start_ns, t_end_ns; /* submit, first compute start, completion */
    double compute_s;               /* seconds of the batches it rode in */
    int batches;                    /* how many batches carried it */
    uint64_t batch_id;              /* the last batch that carried it (1, 2, ...; 0: none) */

    /* ---- private to the batcher ---- */
    batcher_item_t *prev, *next;
    int next_seq;                   /* first sequence not yet in a batch */
    int seqs_done;
    size_t bytes;                   /* counted against the pending budget */
    int cancelled;
};

typedef struct {
    int max_batch_seqs;       /* sequences per batch (clamped to the engine's workspace) */
    int max_batch_tokens;     /* tokens per batch (clamped to the engine's workspace) */
    int max_queue_delay_us;   /* longest an item waits for a fuller batch */
    int max_pending_items;    /* per model queue */
    size_t max_pending_bytes; /* per model queue: items + ids + results + answers not yet sent */
} batcher_limits_t;

#define BATCHER_HIST 16 /* histogram buckets: bucket i counts values <= 2^i (last: everything) */

typedef struct {
    uint64_t batches;
    uint64_t seqs;             /* sequences computed */
    uint64_t tokens;           /* tokens computed */
    uint64_t items_ok, items_expired, items_cancelled, items_failed, items_shutdown;
    uint64_t items_rejected;   /* submits refused BUSY */
    uint64_t batch_seqs_hist[BATCHER_HIST];   /* sequences per batch */
    uint64_t batch_tokens_hist[BATCHER_HIST]; /* tokens per batch, bucket i: <= 16*2^i */
    uint64_t queue_wait_hist[BATCHER_HIST];   /* seconds, bucket i: <= 1e-4*2^i */
    int max_batch_seqs_seen;
    double queue_wait_s;       /* sum over items of submit -> start of their first compute */
    double compute_s;          /* sum over batches of forward-pass seconds */
    double item_compute_s;     /* sum over items of the compute of their batches */
    double pack_s;             /* sum over batches of formation + packing seconds */
    int pending_items;         /* all models: accepted, not yet completed */
    size_t pending_bytes;
    size_t unsent_bytes;       /* all models: answers held, not yet sent (batcher_hold_answer) */
    int in_flight_batches;     /* prepared + computing */
    int paused, draining;
} batcher_stats_t;

typedef struct batcher batcher_t;
typedef struct worker_op worker_op_t; /* batcher/worker.h */
typedef struct worker worker_t;       /* batcher/worker.h */

/* Defaults: 64 seqs, 8192 tokens, 5 ms delay, 4096 items, 256 MiB per model. */
void batcher_limits_default(batcher_limits_t *l);
int batcher_limits_check(const batcher_limits_t *l, char *err, size_t errlen);

/* Start the threads of one device over the registry (which must outlive the batcher). */
int batcher_create(registry_t *reg, const batcher_limits_t *limits, batcher_t **out, char *err,
                   size_t errlen);
/* Stop the threads: the batches computing finish, items not yet computed
 * complete SHUTDOWN, later submits get ESTOPPED; stats still answer.
 * Idempotent. Does not unload models (the registry owns them). */
void batcher_stop(batcher_t *b);
/* Stop (if not yet) and free. NULL is a no-op. */
void batcher_destroy(batcher_t *b);

/* Accept an item (0) or refuse it with BATCHER_E* and a message; a refused
 * item's done() is never called. */
int batcher_submit(batcher_t *b, batcher_item_t *item, char *err, size_t errlen);
/* Cancel an item: 0 (done() is called with CANCELLED: at once when none of
 * it is computing, else when its batches in flight end; its sequences not yet
 * in a batch are never computed), -1 when it is unknown or finished. */
int batcher_cancel(batcher_t *b, uint64_t item_id);

/* An answer of the model's work waiting to be sent to its client (an HTTP
 * response a slow reader has not read yet) counts against the model's
 * max_pending_bytes with its pending items until it is sent or dropped, so a
 * model whose answers pile up refuses new work (BATCHER_EBUSY) as it does for
 * pending input. Every held byte is released exactly once. */
void batcher_hold_answer(batcher_t *b, int model, size_t bytes);
void batcher_release_answer(batcher_t *b, int model, size_t bytes);

/* How many more items the model's queue takes now (0 when paused); model -1:
 * the least over all models (what a shared intake like Redis may lease). */
int batcher_room(batcher_t *b, int model);
/* Floats of result per sequence for this op on this model (embed: hidden;
 * others: what their handler says); 0 when the op has no handler. */
int batcher_result_floats(batcher_t *b, batcher_op_t op, int model);
/* Serve op with handler h (batcher/worker.h; h and user outlive the batcher),
 * before work of that op arrives. Items of an op without a handler are
 * refused BATCHER_EINVAL. 0 or BATCHER_EINVAL. */
int batcher_register_op(batcher_t *b, batcher_op_t op, const worker_op_t *h, void *user);

/* Live limits (PATCH /v1/admin/config): checked, then applied to the next batch. */
int batcher_set_limits(batcher_t *b, const batcher_limits_t *l, char *err, size_t errlen);
void batcher_get_limits(batcher_t *b, batcher_limits_t *l);

/* Intake control: pause refuses new work (EPAUSED) and pending work still runs;
 * resume takes work again; drain refuses new work, dispatches what is pending
 * without waiting for fuller batches and waits up to timeout_ms for it all to
 * finish. Returns the items still pending (0: drained). */
void batcher_pause(batcher_t *b);
void batcher_resume(batcher_t *b);
int batcher_drain(batcher_t *b, int timeout_ms);

/* Model lifecycle on the device worker: load now (preload), or unload once
 * its in-flight batches finish (pending items of that model load it again).
 * Asynchronous; watch registry_info for the state. */
int batcher_request_load(batcher_t *b, int model);
int batcher_request_unload(batcher_t *b, int model);

void batcher_stats(batcher_t *b, batcher_stats_t *out);
/* The device worker the batcher runs on, for a second producer on the same
 * device (the generation scheduler, batcher/sched.h). */
worker_t *batcher_worker(batcher_t *b);

/* One finished micro-batch, for metrics and logs. */
typedef struct {
    uint64_t batch_id;        /* 1, 2, ... in order of completion */
    int model;
    batcher_op_t op;
    int n_items, n_seqs, n_tokens;
    double compute_s, pack_s;
    int failed;
    const char *first_request_id, *first_traceparent; /* of its first item */
} batcher_batch_info_t;
typedef void (*batcher_batch_fn)(const batcher_batch_info_t *info, void *user);
/* Called on the worker after every batch, with the batcher's lock held: it
 * must be quick and must not call the batcher. Set it before work arrives. */
void batcher_set_batch_hook(batcher_t *b, batcher_batch_fn fn, void *user);

const char *batcher_op_name(batcher_op_t op);
int batcher_op_parse(const char *name, batcher_op_t *op); /* 0 or BATCHER_EINVAL */
const char *batcher_outcome_name(batcher_outcome_t o);
int64_t batcher_now_ns(void); /* CLOCK_MONOTONIC */

#endif
