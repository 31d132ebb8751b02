/* batcher/sched.h - the generation scheduler: continuous (iteration-level)
 * batching of decoder requests over a paged KV cache, one thread per device.
 *
 * Model: a request (sched_req_t) is one choice of one completion: its prompt
 * ids, sampling parameters and callbacks. OpenAI's n > 1 is n separate
 * submits (each with its own seed if seeded; their prompts share KV blocks
 * through the prefix cache). Each decoder model of the registry has a
 * waiting set and a running set. Every engine step (one model_step through
 * the device worker, holding the model shared like the encoder batcher's
 * runs) feeds one token to every running sequence plus prefill chunks of
 * waiting ones, within the per-step token budget (step_tokens): a long
 * prompt is prefilled in chunks between decode steps, so it never stalls
 * the streams already running. Waiting requests are admitted by priority
 * (higher first), then age, up to max_seqs running at once.
 *
 * KV cache: a budget. At a model's first use the scheduler makes its pool
 * (engine/kv.h) in the device arena: kv_tokens, kv_bytes, or kv_share of
 * what the arena has left then, in blocks of block_size tokens. When a step needs a block
 * and none is free (after evicting unused prefix-cache blocks, LRU), the
 * running sequence with the lowest priority, newest first, is preempted: its
 * blocks are freed and it goes back to waiting, to be recomputed later from
 * its prompt and the tokens it already generated (what was streamed stays
 * streamed; the output is the same as without the preemption). Nothing ever
 * fails for want of blocks; a request that could never fit (prompt +
 * max_tokens over the context, or over what the whole cache holds) is
 * refused by sched_submit with the numbers (SCHED_ETOOBIG: HTTP 400).
 *
 * Prefix cache: full blocks are keyed by a hash of their tokens and of every
 * token before them; a new sequence whose prompt begins with cached blocks
 * attaches them (kv_seq_attach) and prefills only the rest. Cached blocks
 * nobody uses are evicted least recently used, only when free blocks run out.
 *
 * Determinism: the kernels are batch invariant and each request has its own
 * sampler (engine/sample.h, its own PRNG from its seed), so a request's
 * tokens are the same alone or among 63 others, with or without prefix-cache
 * hits or preemption, however its prompt was chunked (CPU backend).
 *
 * Callbacks: on_delta and on_done run on the scheduler thread and must not
 * block (copy what you need, wake your own thread, return). on_delta brings
 * text that is safe to send: whole UTF-8 characters, never part of a stop
 * string (held back until it cannot be one), control tokens dropped. The
 * last text of a request (what the end releases) comes in an on_delta
 * before on_done. on_done is called exactly once for every accepted submit
 * (also after cancel, deadline, drain or an engine error); after it the
 * scheduler never touches user again.
 *
 * Cancellation (client gone) and deadlines end a request at the next step
 * boundary; its blocks return to the pool then (the KV gauge goes back).
 * Drain (SIGTERM): stop admitting new submits (SCHED_EDRAIN), let running and
 * waiting requests finish until the deadline, then end the rest with
 * SCHED_FINISH_SHUTDOWN.
 *
 * Ownership: a sched_t owns its thread, its requests' copies (prompt ids,
 * stop strings) and one KV pool per decoder model it has run; the registry
 * and worker must outlive it. sched_destroy ends every request still there
 * (on_done SCHED_FINISH_SHUTDOWN) and frees the pools.
 * Thread-safety: every call but create/destroy from any thread.
 */
#ifndef SLUICE_BATCHER_SCHED_H
#define SLUICE_BATCHER_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "batcher/worker.h"
#include "engine/registry.h"
#include "engine/sample.h"

enum {
    SCHED_OK = 0,
    SCHED_EINVAL = -1,  /* bad request (field named in the message): HTTP 400 */
    SCHED_ETOOBIG = -2, /* prompt + max_tokens over the context or the whole KV cache: 400, with the numbers */
    SCHED_EFULL = -3,   /* waiting set full: 429/503, try later */
    SCHED_EDRAIN = -4,  /* draining or shut down: 503 */
    SCHED_EMODEL = -5,  /* not a decoder, or it failed to load: message says which */
    SCHED_ENOMEM = -6,
};

#define SCHED_MAX_TOP_LOGPROBS 20

typedef enum {
    SCHED_FINISH_STOP = 0,      /* a stop token or stop string ("stop") */
    SCHED_FINISH_LENGTH = 1,    /* max_tokens or the context ("length") */
    SCHED_FINISH_CANCELLED = 2, /* sched_cancel ("cancelled") */
    SCHED_FINISH_DEADLINE = 3,  /* its deadline passed ("deadline") */
    SCHED_FINISH_ERROR = 4,     /* engine failure; message says why ("error") */
    SCHED_FINISH_SHUTDOWN = 5,  /* drain deadline or destroy ("shutdown") */
} sched_finish_t;

const char *sched_finish_name(sched_finish_t f); /* the words in parentheses above */

typedef struct sched_config {
    int kv_tokens;    /* KV cache per decoder model in tokens (rounded up to blocks); 0: kv_bytes */
    size_t kv_bytes;  /* KV cache per decoder model in bytes; 0: kv_share */
    float kv_share;   /* share of the arena's largest free piece when the model's pool is made (0: 0.5) */
    int block_size;   /* tokens per KV block (0: KV_DEFAULT_BLOCK_SIZE) */
    int max_seqs;     /* running sequences per model (0: 64; capped by the model's workspace) */
    int max_waiting;  /* waiting requests per model before SCHED_EFULL (0: 1024) */
    int step_tokens;  /* new tokens per engine step, decode + prefill (0: 256; capped by the workspace) */
    int max_ctx;      /* positions per sequence (0: the model's context) */
    int prefix_cache; /* 1: automatic prefix caching (default); -1: off */
} sched_config_t;

/* The defaults (what 0 in each field means). */
void sched_config_default(sched_config_t *c);

/* One token's log-probabilities: natural log of the model's own
 * distribution (softmax of the raw logits, before penalties, temperature
 * and truncation), as OpenAI reports them. */
typedef struct {
    int32_t id;
    float logprob;
    int n_top;                               /* <= the request's top_logprobs */
    int32_t top_ids[SCHED_MAX_TOP_LOGPROBS]; /* most likely first */
    float top_logprobs[SCHED_MAX_TOP_LOGPROBS];
} sched_logprob_t;

/* What one step adds to a request's answer. */
typedef struct {
    const char *text;                /* bytes to stream now (may be 0 long: text held back) */
    size_t text_len;
    const int32_t *ids;              /* (n_ids) tokens generated since the last delta */
    int n_ids;
    const sched_logprob_t *logprobs; /* (n_ids), NULL unless the request asked for logprobs */
} sched_delta_t;

typedef struct {
    sched_finish_t finish;
    int32_t stop_id;        /* STOP by a stop token: its id; -1 otherwise (a stop string, or not STOP) */
    const char *message;    /* why, for ERROR / SHUTDOWN / DEADLINE ("" otherwise) */
    int prompt_tokens;
    int completion_tokens;
    int cached_prompt_tokens; /* prompt tokens the prefix cache supplied (first admission) */
    int preemptions;          /* times this request was preempted and recomputed */
    double queue_s;           /* submit to first admission */
    double ttft_s;            /* submit to first token (-1: none) */
    double e2e_s;             /* submit to done */
} sched_result_t;

typedef void (*sched_delta_fn)(void *user, const sched_delta_t *d);
typedef void (*sched_done_fn)(void *user, const sched_result_t *r);

typedef struct {
    int model;               /* registry index of a decoder model */
    const int32_t *prompt;   /* (n_prompt) ids, copied */
    int n_prompt;            /* >= 1 */
    sample_params_t sample;  /* copied (stop strings too); max_tokens 0: up to the context and the cache;
                              * the model's end tokens are NOT added here: put them in stop_ids */
    int logprobs;            /* 1: deltas carry logprobs */
    int top_logprobs;        /* 0 .. SCHED_MAX_TOP_LOGPROBS */
    int priority;            /* higher runs first (and is preempted last) */
    int64_t deadline_ns;     /* CLOCK_MONOTONIC (util_now_ns); 0: none */
    sched_delta_fn on_delta; /* may be NULL */
    sched_done_fn on_done;   /* required */
    void *user;
} sched_req_t;

typedef struct {
    /* gauges */
    int running;
    int waiting;
    int kv_blocks_used;       /* referenced by sequences or the prefix cache */
    int kv_blocks_cached;     /* held by the prefix cache only (evictable) */
    int kv_blocks_total;
    int block_size;
    /* counters since create */
    uint64_t submitted, finished, refused;
    uint64_t preemptions;
    uint64_t prefix_lookups;  /* full prompt blocks looked up */
    uint64_t prefix_hits;     /* of them found */
    uint64_t prompt_tokens;   /* prompt tokens of finished requests */
    uint64_t prefill_tokens;  /* tokens actually prefilled (prefix hits and recompute differ) */
    uint64_t generated_tokens;
    uint64_t steps;           /* engine steps */
    double step_s;            /* seconds inside engine steps */
} sched_stats_t;

/* Histogram inputs, called on the scheduler thread (must not block): kind
 * is "ttft", "itl" (between two tokens of one request), "e2e" or "queue". */
typedef void (*sched_observe_fn)(void *user, int model, const char *kind, double seconds);

typedef struct sched sched_t;

/* One scheduler (and its thread) for the device behind w/reg. cfg NULL:
 * defaults. 0, or SCHED_E* with a message. */
int sched_create(registry_t *reg, worker_t *w, const sched_config_t *cfg, sched_t **out, char *err, size_t errlen);
void sched_destroy(sched_t *s); /* NULL is a no-op; see Ownership */

void sched_set_observer(sched_t *s, sched_observe_fn fn, void *user); /* before submits */

/* Load the model and make its KV pool now (else on first submit). Also
 * says what a request may use: positions per sequence and tokens the whole
 * cache holds (either pointer may be NULL). 0 or SCHED_E*. */
int sched_prepare(sched_t *s, int model, int *n_ctx, int *kv_tokens, char *err, size_t errlen);

/* Queue a request; *id names it for sched_cancel. Checks everything up front
 * (loading the model if needed): SCHED_EINVAL / ETOOBIG / EFULL / EDRAIN /
 * EMODEL with a message, and then on_done is never called. */
int sched_submit(sched_t *s, const sched_req_t *r, uint64_t *id, char *err, size_t errlen);

/* End a request at the next step (on_done: SCHED_FINISH_CANCELLED). 0, or
 * -1 when the id is unknown or already finished. */
int sched_cancel(sched_t *s, uint64_t id);

void sched_stats(sched_t *s, int model, sched_stats_t *out); /* model -1: all models summed */

/* Stop admitting; wait up to timeout_ms for everything to finish, then end
 * the rest (SCHED_FINISH_SHUTDOWN). Returns the requests so ended. */
int sched_drain(sched_t *s, int timeout_ms);

#endif
