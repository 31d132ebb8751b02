/* batcher/sched.c - the generation scheduler (see sched.h).
 *
 * Threads: submit/cancel/stats/drain take s->mu; the scheduler thread owns
 * the waiting and running sets, the KV pools and the prefix caches, and
 * takes s->mu only to collect new requests and cancel flags at the start of
 * an iteration and to publish counters at its end. Callbacks run with no
 * lock held (a callback may call sched_cancel).
 *
 * A request's tokens (prompt, then every sampled token) are the truth; its
 * kv_seq_t holds the K/V of the first seq.n_tokens of them. The tokens past
 * that are fed by the next steps (a prefill chunk, the one sampled token, or
 * everything again after a preemption); when the sequence has fed them all,
 * its step's logits give the next token. So a preempted request resumes with
 * the same logits, and its sampler (its own PRNG, drawn from only when a new
 * token is due) the same tokens.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher/sched.h"
#include "engine/kv.h"
#include "engine/prefix.h"
#include "engine/tok.h"
#include "kernels/util.h"

#define DEF_MAX_SEQS 64
#define DEF_MAX_WAITING 1024
#define DEF_STEP_TOKENS 256
#define DEF_KV_SHARE 0.5f
#define PIECE_CAP 1024

typedef struct req {
    uint64_t id, age; /* age: submit order */
    int model;
    int32_t *toks;    /* (n_prompt + max_tokens) prompt, then sampled tokens */
    int n_toks, n_prompt, max_tokens;
    sample_params_t sp; /* stops point into stop_buf */
    char stop_buf[SAMPLE_MAX_STOPS][SAMPLE_MAX_STOP_LEN + 1];
    sample_seq_t ss;
    int ss_ready;
    tok_decode_state_t dec;
    int logprobs, top_logprobs, priority;
    int64_t deadline_ns, t_submit, t_admit, t_first, t_last;
    sched_delta_fn on_delta;
    sched_done_fn on_done;
    void *user;
    kv_seq_t seq;
    int has_seq;
    int n_keyed;       /* full blocks of seq offered to the prefix cache */
    uint64_t last_key; /* prefix key of the first n_keyed blocks */
    int n_cached, preemptions, admitted;
    int32_t stop_id;   /* the stop token that ended it, or -1 */
    int cancel_req;    /* under s->mu: 1 + the sched_finish_t asked for (cancel, shutdown) */
    int end;           /* scheduler thread's copy of cancel_req */
    int placed;        /* in this step's batch */
} req_t;

typedef struct {
    int ready;
    model_info_t info;
    const tok_t *tok;
    kv_pool_t *kv;
    prefix_cache_t *pc;
    int n_ctx, kv_tokens, max_seqs, step_tokens, bs;
    req_t **run, **wait;
    int n_run, n_wait, cap_wait;
    int queued;        /* under s->mu: waiting + running + inbox, for max_waiting */
    float *logits;     /* (max_seqs, vocab) */
    int32_t *ids, *seq_off;
    void **seqs;
    req_t **batch;
    sched_stats_t st;  /* under s->mu (published each iteration) */
} smodel_t;

struct sched {
    registry_t *reg;
    worker_t *w;
    sched_config_t cfg;
    int n_models;
    smodel_t *m;
    pthread_mutex_t mu, prep_mu;
    pthread_cond_t cv, idle_cv;
    pthread_t thread;
    int thread_started, stop, draining;
    req_t **inbox;
    int n_inbox, cap_inbox;
    req_t **live; /* every accepted request not yet done (under mu) */
    int n_live, cap_live;
    uint64_t next_id, next_age;
    sched_observe_fn observe;
    void *observe_user;
    char piece[PIECE_CAP];
};

const char *sched_finish_name(sched_finish_t f) {
    static const char *const names[] = {"stop", "length", "cancelled", "deadline", "error", "shutdown"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "error";
}

static int grow(void *arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *p = realloc(*(void **)arr, (size_t)nc * elem);
    if (!p) return -1;
    *(void **)arr = p;
    *cap = nc;
    return 0;
}

static void observe(sched_t *s, int model, const char *kind, double secs) {
    if (s->observe) s->observe(s->observe_user, model, kind, secs);
}

/* ------------------------------------------------------------ preparing */

static int prepare_locked(sched_t *s, int model, char *err, size_t errlen) {
    smodel_t *M = &s->m[model];
    if (M->ready) return SCHED_OK;
    int rc = worker_load(s->w, model, err, errlen);
    if (rc) return rc == ENGINE_ENOMEM ? SCHED_ENOMEM : SCHED_EMODEL;
    model_t *mdl = registry_model(s->reg, model);
    if (!mdl) {
        snprintf(err, errlen, "model is not loaded");
        return SCHED_EMODEL;
    }
    model_info(mdl, &M->info);
    if (M->info.kind != MODEL_DECODER) {
        snprintf(err, errlen, "model is a %s encoder, not a decoder: it does not generate", M->info.family);
        return SCHED_EMODEL;
    }
    if (!(M->tok = registry_tokenizer(s->reg, model, err, errlen))) return SCHED_EMODEL;
    M->bs = s->cfg.block_size;
    M->n_ctx = M->info.max_seq_len;
    if (s->cfg.max_ctx > 0 && s->cfg.max_ctx < M->n_ctx) M->n_ctx = s->cfg.max_ctx;
    M->step_tokens = s->cfg.step_tokens < M->info.max_batch_tokens ? s->cfg.step_tokens : M->info.max_batch_tokens;
    M->max_seqs = s->cfg.max_seqs < M->info.max_batch_seqs ? s->cfg.max_seqs : M->info.max_batch_seqs;
    if (M->max_seqs > M->step_tokens) M->max_seqs = M->step_tokens;
    kv_config_t kc = {.n_layers = M->info.kv_layers, .n_kv_heads = M->info.kv_heads,
                      .head_dim = M->info.kv_head_dim, .block_size = M->bs, .n_blocks = 1,
                      .dtype = M->info.kv_dtype};
    arena_t *arena = device_arena(registry_device(s->reg));
    size_t bytes = s->cfg.kv_bytes ? s->cfg.kv_bytes : (size_t)((double)arena_largest_free(arena) * s->cfg.kv_share);
    size_t per = kv_block_bytes(&kc);
    kc.n_blocks = per ? (int)(bytes / per > (1u << 30) ? (1u << 30) : bytes / per) : 0;
    if (s->cfg.kv_tokens > 0) kc.n_blocks = (s->cfg.kv_tokens + M->bs - 1) / M->bs;
    if (kc.n_blocks < 1) {
        snprintf(err, errlen, "KV cache of %zu bytes holds no block of %d tokens (%zu bytes)", bytes, M->bs, per);
        return SCHED_ENOMEM;
    }
    if (kv_pool_create(arena, &kc, &M->kv, err, errlen)) return SCHED_ENOMEM;
    M->kv_tokens = kc.n_blocks * M->bs;
    size_t V = (size_t)M->info.vocab, B = (size_t)M->max_seqs;
    M->logits = malloc(B * V * sizeof *M->logits);
    M->ids = malloc((size_t)M->step_tokens * sizeof *M->ids);
    M->seq_off = malloc((B + 1) * sizeof *M->seq_off);
    M->seqs = malloc(B * sizeof *M->seqs);
    M->batch = malloc(B * sizeof *M->batch);
    M->run = malloc(B * sizeof *M->run);
    if ((s->cfg.prefix_cache > 0 && prefix_create(M->kv, &M->pc)) || !M->logits || !M->ids || !M->seq_off ||
        !M->seqs || !M->batch || !M->run) {
        snprintf(err, errlen, "out of host memory");
        return SCHED_ENOMEM;
    }
    M->st.kv_blocks_total = kc.n_blocks;
    M->st.block_size = M->bs;
    M->ready = 1;
    return SCHED_OK;
}

int sched_prepare(sched_t *s, int model, int *n_ctx, int *kv_tokens, char *err, size_t errlen) {
    if (model < 0 || model >= s->n_models) {
        snprintf(err, errlen, "no such model (index %d)", model);
        return SCHED_EINVAL;
    }
    pthread_mutex_lock(&s->prep_mu);
    int rc = prepare_locked(s, model, err, errlen);
    pthread_mutex_unlock(&s->prep_mu);
    if (rc == SCHED_OK) {
        if (n_ctx) *n_ctx = s->m[model].n_ctx;
        if (kv_tokens) *kv_tokens = s->m[model].kv_tokens;
    }
    return rc;
}

/* ------------------------------------------------------------ requests */

static void req_free(req_t *r) {
    if (!r) return;
    sample_seq_free(&r->ss);
    free(r->toks);
    free(r);
}

/* Release r's blocks; its full blocks stay in the prefix cache. */
static void drop_seq(smodel_t *M, req_t *r) {
    if (!r->has_seq) return;
    kv_seq_free(M->kv, &r->seq);
    r->has_seq = 0;
    r->n_keyed = 0;
    r->last_key = 0;
}

static void remove_at(req_t **a, int *n, int i) {
    memmove(a + i, a + i + 1, (size_t)(*n - i - 1) * sizeof *a);
    (*n)--;
}

/* The gauges, for sched_stats; with s->mu held. */
static void gauges_locked(smodel_t *M, int used, int idle) {
    M->st.running = M->n_run;
    M->st.waiting = M->queued - M->n_run;
    M->st.kv_blocks_used = used;
    M->st.kv_blocks_cached = idle;
    if (M->pc) {
        M->st.prefix_lookups = prefix_lookups(M->pc);
        M->st.prefix_hits = prefix_hits(M->pc);
    }
}

static int kv_used(const smodel_t *M) { return M->st.kv_blocks_total - kv_free_blocks(M->kv); }
static int kv_idle(const smodel_t *M) { return M->pc ? prefix_idle(M->pc) : 0; }

static void publish(sched_t *s, smodel_t *M) {
    int used = kv_used(M), idle = kv_idle(M);
    pthread_mutex_lock(&s->mu);
    gauges_locked(M, used, idle);
    pthread_mutex_unlock(&s->mu);
}

/* End r: callbacks, counters, free. r is already out of the run/wait sets. */
static void finish(sched_t *s, req_t *r, sched_finish_t f, const char *msg) {
    smodel_t *M = &s->m[r->model];
    drop_seq(M, r);
    int64_t now = util_now_ns();
    sched_result_t res = {
        .finish = f,
        .stop_id = f == SCHED_FINISH_STOP ? r->stop_id : -1,
        .message = msg ? msg : "",
        .prompt_tokens = r->n_prompt,
        .completion_tokens = r->n_toks - r->n_prompt,
        .cached_prompt_tokens = r->n_cached,
        .preemptions = r->preemptions,
        .queue_s = r->admitted ? (r->t_admit - r->t_submit) * 1e-9 : (now - r->t_submit) * 1e-9,
        .ttft_s = r->t_first ? (r->t_first - r->t_submit) * 1e-9 : -1,
        .e2e_s = (now - r->t_submit) * 1e-9,
    };
    observe(s, r->model, "e2e", res.e2e_s);
    int used = kv_used(M), idle = kv_idle(M);
    pthread_mutex_lock(&s->mu); /* the gauges first: whoever on_done wakes may read them */
    M->queued--;
    M->st.finished++;
    M->st.prompt_tokens += (uint64_t)r->n_prompt;
    gauges_locked(M, used, idle);
    pthread_mutex_unlock(&s->mu);
    r->on_done(r->user, &res);
    pthread_mutex_lock(&s->mu); /* then drain may see it gone */
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i] == r) {
            s->live[i] = s->live[--s->n_live];
            break;
        }
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    req_free(r);
}

int sched_submit(sched_t *s, const sched_req_t *q, uint64_t *id, char *err, size_t errlen) {
    if (id) *id = 0;
    if (!q || !q->on_done || q->n_prompt < 1 || !q->prompt) {
        snprintf(err, errlen, !q || !q->on_done ? "on_done is required" : "prompt: at least one token");
        return SCHED_EINVAL;
    }
    if (q->top_logprobs < 0 || q->top_logprobs > SCHED_MAX_TOP_LOGPROBS) {
        snprintf(err, errlen, "top_logprobs: %d is outside 0..%d", q->top_logprobs, SCHED_MAX_TOP_LOGPROBS);
        return SCHED_EINVAL;
    }
    if (q->sample.max_tokens < 0) {
        snprintf(err, errlen, "max_tokens: %d is negative", q->sample.max_tokens);
        return SCHED_EINVAL;
    }
    int rc = sched_prepare(s, q->model, NULL, NULL, err, errlen);
    if (rc) return rc;
    smodel_t *M = &s->m[q->model];
    int V = M->info.vocab;
    for (int i = 0; i < q->n_prompt; i++)
        if (q->prompt[i] < 0 || q->prompt[i] >= V) {
            snprintf(err, errlen, "prompt: token id %d at %d is outside the vocabulary (%d)", (int)q->prompt[i], i, V);
            return SCHED_EINVAL;
        }
    /* the whole request must fit the context and the cache, alone */
    int limit = M->n_ctx < M->kv_tokens ? M->n_ctx : M->kv_tokens;
    const char *what = M->n_ctx < M->kv_tokens ? "context" : "KV cache";
    int max_tokens = q->sample.max_tokens;
    if (q->n_prompt >= limit || (max_tokens && q->n_prompt + max_tokens > limit)) {
        snprintf(err, errlen,
                 "prompt of %d tokens + max_tokens %d = %d tokens exceeds the model's %s of %d tokens "
                 "(context %d, KV cache %d)",
                 q->n_prompt, max_tokens, q->n_prompt + max_tokens, what, limit, M->n_ctx, M->kv_tokens);
        pthread_mutex_lock(&s->mu);
        M->st.refused++;
        pthread_mutex_unlock(&s->mu);
        return SCHED_ETOOBIG;
    }
    if (!max_tokens) max_tokens = limit - q->n_prompt;
    /* the sampler's parameters are checked now; it is set up at admission */
    sample_seq_t probe;
    if (sample_seq_init(&probe, &q->sample, V, NULL, 0, err, errlen)) return SCHED_EINVAL;
    sample_seq_free(&probe);

    req_t *r = calloc(1, sizeof *r);
    if (!r || !(r->toks = malloc((size_t)(q->n_prompt + max_tokens) * sizeof *r->toks))) {
        req_free(r);
        snprintf(err, errlen, "out of host memory");
        return SCHED_ENOMEM;
    }
    memcpy(r->toks, q->prompt, (size_t)q->n_prompt * sizeof *r->toks);
    r->n_toks = r->n_prompt = q->n_prompt;
    r->max_tokens = max_tokens;
    r->model = q->model;
    r->sp = q->sample;
    r->sp.max_tokens = max_tokens;
    for (int i = 0; i < r->sp.n_stops; i++) {
        snprintf(r->stop_buf[i], sizeof r->stop_buf[i], "%s", q->sample.stops[i]);
        r->sp.stops[i] = r->stop_buf[i];
    }
    r->logprobs = q->logprobs || q->top_logprobs;
    r->top_logprobs = q->top_logprobs;
    r->priority = q->priority;
    r->deadline_ns = q->deadline_ns;
    r->on_delta = q->on_delta;
    r->on_done = q->on_done;
    r->user = q->user;
    r->t_submit = util_now_ns();
    r->stop_id = -1;

    pthread_mutex_lock(&s->mu);
    if (s->draining || s->stop) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        snprintf(err, errlen, "the server is shutting down");
        return SCHED_EDRAIN;
    }
    if (M->queued >= s->cfg.max_waiting + M->max_seqs) {
        M->st.refused++;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        snprintf(err, errlen, "%d requests are queued for this model already; try again later", s->cfg.max_waiting);
        return SCHED_EFULL;
    }
    if (grow(&s->inbox, &s->cap_inbox, s->n_inbox + 1, sizeof *s->inbox) ||
        grow(&s->live, &s->cap_live, s->n_live + 1, sizeof *s->live)) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        snprintf(err, errlen, "out of host memory");
        return SCHED_ENOMEM;
    }
    r->id = ++s->next_id;
    r->age = ++s->next_age;
    s->inbox[s->n_inbox++] = r;
    s->live[s->n_live++] = r;
    M->queued++;
    M->st.submitted++;
    if (id) *id = r->id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return SCHED_OK;
}

int sched_cancel(sched_t *s, uint64_t id) {
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i]->id == id && !s->live[i]->cancel_req) {
            s->live[i]->cancel_req = 1 + SCHED_FINISH_CANCELLED;
            rc = 0;
            pthread_cond_signal(&s->cv);
            break;
        }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ------------------------------------------------------------ one step */

/* Higher priority first, then older. */
static int before(const req_t *a, const req_t *b) {
    return a->priority != b->priority ? a->priority > b->priority : a->age < b->age;
}

static int cmp_run(const void *pa, const void *pb) {
    const req_t *a = *(req_t *const *)pa, *b = *(req_t *const *)pb;
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

static void add_wait(smodel_t *M, req_t *r) {
    if (grow(&M->wait, &M->cap_wait, M->n_wait + 1, sizeof *M->wait)) abort(); /* host OOM in a tiny array */
    M->wait[M->n_wait++] = r;
}

/* Free r's blocks and send it back to waiting: it will recompute its tokens. */
static void preempt(sched_t *s, smodel_t *M, int i) {
    req_t *r = M->run[i];
    remove_at(M->run, &M->n_run, i);
    drop_seq(M, r);
    r->preemptions++;
    add_wait(M, r);
    pthread_mutex_lock(&s->mu);
    M->st.preemptions++;
    pthread_mutex_unlock(&s->mu);
}

/* Make room for n more positions of r: evict idle cached blocks, then
 * preempt the last running sequence not yet in this step's batch (lowest
 * priority, newest), r itself included when it is that one (*self = 1). */
static int make_room(sched_t *s, smodel_t *M, req_t *r, int n, int may_preempt, int *self) {
    *self = 0;
    for (;;) {
        int need = kv_seq_blocks_needed(M->kv, &r->seq, n) - kv_free_blocks(M->kv);
        if (need <= 0) return 1;
        if (M->pc && prefix_evict(M->pc, need) > 0) continue;
        if (!may_preempt) return 0;
        int v = -1;
        for (int i = M->n_run - 1; i >= 0 && v < 0; i--)
            if (!M->run[i]->placed) v = i;
        if (v < 0) return 0;
        *self = M->run[v] == r;
        preempt(s, M, v);
        if (*self) return 0;
    }
}

/* Offer r's newly full blocks to the prefix cache. */
static void key_blocks(smodel_t *M, req_t *r) {
    int full = r->seq.n_tokens / M->bs;
    for (; r->n_keyed < full; r->n_keyed++) {
        const int32_t *t = r->toks + (size_t)r->n_keyed * M->bs;
        if (M->pc) prefix_insert(M->pc, r->last_key, t, r->seq.blocks[r->n_keyed]);
        r->last_key = prefix_hash(r->last_key, t, M->bs);
    }
}

/* A sequence for r, starting on the cached blocks of its tokens (all but
 * the last, whose logits are needed). */
static int start_seq(smodel_t *M, req_t *r, char *err, size_t errlen) {
    if (kv_seq_init(M->kv, &r->seq, M->n_ctx, err, errlen)) return -1;
    r->has_seq = 1;
    int cached = 0;
    if (M->pc) {
        int32_t blocks[4096];
        int max = (r->n_toks - 1) / M->bs;
        int n = prefix_lookup(M->pc, r->toks, r->n_toks, blocks, max < 4096 ? max : 4096);
        if (n && kv_seq_attach(M->kv, &r->seq, blocks, n, err, errlen)) return -1;
        cached = n * M->bs;
        r->n_keyed = 0;
        r->last_key = 0;
        key_blocks(M, r); /* advances the key chain over the attached blocks */
    }
    if (!r->admitted) r->n_cached = cached < r->n_prompt ? cached : r->n_prompt;
    return 0;
}

/* Put up to `room` of r's pending tokens into the batch. 1 placed, 0 not. */
static int place(sched_t *s, smodel_t *M, req_t *r, int room, int may_preempt, int *nb, int *nt) {
    int pending = r->n_toks - r->seq.n_tokens;
    int c = pending < room ? pending : room;
    if (c <= 0) return 0;
    int self;
    if (!make_room(s, M, r, c, may_preempt, &self)) return 0;
    int32_t slots[1024];
    char err[256];
    int32_t *sl = c <= 1024 ? slots : malloc((size_t)c * sizeof *sl);
    int rc = sl ? kv_seq_append(M->kv, &r->seq, c, sl, err, sizeof err) : KV_ENOMEM;
    if (sl != slots) free(sl);
    if (rc) return 0;
    memcpy(M->ids + *nt, r->toks + r->seq.n_tokens - c, (size_t)c * sizeof *M->ids);
    M->batch[*nb] = r;
    M->seqs[*nb] = &r->seq;
    *nt += c;
    M->seq_off[++*nb] = *nt;
    r->placed = 1;
    return 1;
}

static int run_step(void *user, model_t *m, char *err, size_t errlen) {
    return model_step(m, user, err, errlen);
}

static void logprobs_of(const float *row, int V, int32_t tok, int top, sched_logprob_t *lp) {
    float mx = row[0];
    for (int i = 1; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)row[i] - mx);
    float lse = mx + (float)log(sum);
    lp->id = tok;
    lp->logprob = row[tok] - lse;
    lp->n_top = 0;
    for (int i = 0; i < V; i++) {
        int k = lp->n_top;
        if (k == top && (k == 0 || row[i] <= row[lp->top_ids[k - 1]])) continue;
        if (k < top) lp->n_top++;
        else k--;
        while (k > 0 && row[lp->top_ids[k - 1]] < row[i]) {
            lp->top_ids[k] = lp->top_ids[k - 1];
            k--;
        }
        lp->top_ids[k] = i;
    }
    for (int k = 0; k < lp->n_top; k++) lp->top_logprobs[k] = row[lp->top_ids[k]] - lse;
}

/* r has fed every token: its next one from row. 1 when r is finished. */
static int next_token(sched_t *s, smodel_t *M, req_t *r, const float *row, sched_finish_t *why) {
    int32_t tok = sample_next(&r->ss, row);
    sched_logprob_t lp;
    if (r->logprobs) logprobs_of(row, M->info.vocab, tok, r->top_logprobs, &lp);
    int k = tok_decode_next(M->tok, &r->dec, tok, s->piece, sizeof s->piece);
    const char *out;
    size_t olen;
    sample_finish_t f = sample_accept(&r->ss, tok, s->piece, k > 0 ? (size_t)k : 0, &out, &olen);
    r->toks[r->n_toks++] = tok;
    int64_t now = util_now_ns();
    if (!r->t_first) {
        r->t_first = now;
        observe(s, r->model, "ttft", (now - r->t_submit) * 1e-9);
    } else {
        observe(s, r->model, "itl", (now - r->t_last) * 1e-9);
    }
    r->t_last = now;
    if (r->on_delta) {
        sched_delta_t d = {.text = out, .text_len = olen, .ids = &tok, .n_ids = 1,
                           .logprobs = r->logprobs ? &lp : NULL};
        r->on_delta(r->user, &d);
    }
    if (f == SAMPLE_CONTINUE) return 0;
    if (f == SAMPLE_LENGTH) { /* a character the limit cut */
        int n = tok_decode_flush(M->tok, &r->dec, s->piece, sizeof s->piece);
        if (n > 0 && r->on_delta) {
            sched_delta_t d = {.text = s->piece, .text_len = (size_t)n};
            r->on_delta(r->user, &d);
        }
    }
    if (f == SAMPLE_STOP_TOKEN) r->stop_id = tok;
    *why = f == SAMPLE_LENGTH ? SCHED_FINISH_LENGTH : SCHED_FINISH_STOP;
    return 1;
}

/* End what was cancelled, ran out of time or was shut down. */
static void reap(sched_t *s, smodel_t *M) {
    int64_t now = util_now_ns();
    for (int pass = 0; pass < 2; pass++) {
        req_t **a = pass ? M->wait : M->run;
        int *n = pass ? &M->n_wait : &M->n_run;
        for (int i = 0; i < *n;) {
            req_t *r = a[i];
            sched_finish_t f;
            if (r->end) f = (sched_finish_t)(r->end - 1);
            else if (r->deadline_ns && now > r->deadline_ns) f = SCHED_FINISH_DEADLINE;
            else {
                i++;
                continue;
            }
            remove_at(a, n, i);
            finish(s, r, f, f == SCHED_FINISH_DEADLINE ? "the request's deadline passed" :
                            f == SCHED_FINISH_SHUTDOWN ? "the server is shutting down" : "");
        }
    }
}

/* One engine step for model M: decode tokens of the running sequences,
 * prefill chunks of the others, admissions from waiting. */
static void step_model(sched_t *s, int model) {
    smodel_t *M = &s->m[model];
    reap(s, M);
    if (!M->n_run && !M->n_wait) {
        publish(s, M);
        return;
    }
    qsort(M->run, (size_t)M->n_run, sizeof *M->run, cmp_run);
    for (int i = 0; i < M->n_run; i++) M->run[i]->placed = 0;
    int nb = 0, nt = 0, n_dec = 0, budget = M->step_tokens;
    M->seq_off[0] = 0;
    /* decode tokens first (one each), then prefill chunks, in priority order */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < M->n_run && nt < budget; i++) {
            req_t *r = M->run[i];
            int decoding = r->n_toks - r->seq.n_tokens == 1;
            if (r->placed || decoding != !pass) continue;
            int n_before = M->n_run;
            n_dec += place(s, M, r, budget - nt, 1, &nb, &nt) && decoding;
            if (M->n_run < n_before) i = -1; /* a preemption reordered the set: look again */
        }
    /* admissions: best waiting first, while there is room; no preemption for them */
    char err[256];
    while (M->n_run < M->max_seqs && nt < budget && M->n_wait) {
        int best = 0;
        for (int i = 1; i < M->n_wait; i++)
            if (before(M->wait[i], M->wait[best])) best = i;
        req_t *r = M->wait[best];
        if (!r->ss_ready) {
            if (sample_seq_init(&r->ss, &r->sp, M->info.vocab, r->toks, r->n_prompt, err, sizeof err)) {
                remove_at(M->wait, &M->n_wait, best);
                finish(s, r, SCHED_FINISH_ERROR, err);
                continue;
            }
            r->ss_ready = 1;
        }
        if (!r->has_seq && start_seq(M, r, err, sizeof err)) {
            remove_at(M->wait, &M->n_wait, best);
            finish(s, r, SCHED_FINISH_ERROR, err);
            continue;
        }
        if (!place(s, M, r, budget - nt, 0, &nb, &nt)) {
            drop_seq(M, r); /* its cached blocks stay listed */
            break;
        }
        remove_at(M->wait, &M->n_wait, best);
        M->run[M->n_run++] = r;
        if (!r->admitted) {
            r->admitted = 1;
            r->t_admit = util_now_ns();
            observe(s, model, "queue", (r->t_admit - r->t_submit) * 1e-9);
        }
    }
    if (!nb) {
        publish(s, M);
        return;
    }

    model_step_t ctx = {.n_seqs = nb, .ids = M->ids, .seq_off = M->seq_off, .kv = M->kv,
                        .seqs = (void *const *)M->seqs, .logits = M->logits, .all_logits = 0};
    int64_t t0 = util_now_ns();
    char serr[512];
    int rc = worker_with_model(s->w, model, run_step, &ctx, serr, sizeof serr);
    if (rc == ENGINE_EMODEL && registry_state(s->reg, model) != REGISTRY_READY &&
        worker_load(s->w, model, serr, sizeof serr) == ENGINE_OK) /* unloaded meanwhile (admin): load again */
        rc = worker_with_model(s->w, model, run_step, &ctx, serr, sizeof serr);
    double dt = (util_now_ns() - t0) * 1e-9;
    uint64_t gen = 0;
    for (int b = 0; b < nb; b++) {
        req_t *r = M->batch[b];
        sched_finish_t why = SCHED_FINISH_ERROR;
        int done = rc != 0;
        if (!rc) {
            key_blocks(M, r);
            if (r->seq.n_tokens == r->n_toks) {
                done = next_token(s, M, r, M->logits + (size_t)b * M->info.vocab, &why);
                gen++;
            }
        }
        if (done) {
            for (int i = 0; i < M->n_run; i++)
                if (M->run[i] == r) {
                    remove_at(M->run, &M->n_run, i);
                    break;
                }
            finish(s, r, why, rc ? serr : "");
        }
    }
    pthread_mutex_lock(&s->mu);
    M->st.steps++;
    M->st.step_s += dt;
    M->st.prefill_tokens += (uint64_t)(nt - n_dec);
    M->st.generated_tokens += gen;
    pthread_mutex_unlock(&s->mu);
    publish(s, M);
}

/* ------------------------------------------------------------ the thread */

static int has_work(const sched_t *s) {
    if (s->n_inbox) return 1;
    for (int i = 0; i < s->n_models; i++)
        if (s->m[i].n_run || s->m[i].n_wait) return 1;
    return 0;
}

static void *sched_main(void *arg) {
    sched_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !has_work(s)) pthread_cond_wait(&s->cv, &s->mu);
        int stop = s->stop;
        req_t **in = s->inbox;
        int n_in = s->n_inbox;
        s->inbox = NULL;
        s->n_inbox = s->cap_inbox = 0;
        for (int i = 0; i < s->n_live; i++) {
            if (stop && !s->live[i]->cancel_req) s->live[i]->cancel_req = 1 + SCHED_FINISH_SHUTDOWN;
            s->live[i]->end = s->live[i]->cancel_req;
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n_in; i++) add_wait(&s->m[in[i]->model], in[i]);
        free(in);
        for (int i = 0; i < s->n_models; i++)
            if (s->m[i].ready) step_model(s, i);
        if (stop) {
            for (int i = 0; i < s->n_models; i++)
                if (s->m[i].ready) reap(s, &s->m[i]);
            break;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

void sched_config_default(sched_config_t *c) {
    *c = (sched_config_t){.kv_share = DEF_KV_SHARE, .block_size = KV_DEFAULT_BLOCK_SIZE, .max_seqs = DEF_MAX_SEQS,
                          .max_waiting = DEF_MAX_WAITING, .step_tokens = DEF_STEP_TOKENS, .prefix_cache = 1};
}

int sched_create(registry_t *reg, worker_t *w, const sched_config_t *cfg, sched_t **out, char *err, size_t errlen) {
    *out = NULL;
    sched_t *s = calloc(1, sizeof *s);
    int n = registry_count(reg);
    if (!s || !(s->m = calloc((size_t)(n > 0 ? n : 1), sizeof *s->m))) {
        free(s);
        snprintf(err, errlen, "out of host memory");
        return SCHED_ENOMEM;
    }
    s->reg = reg;
    s->w = w;
    s->n_models = n;
    sched_config_t d;
    sched_config_default(&d);
    if (cfg) s->cfg = *cfg;
    if (s->cfg.kv_share <= 0 || s->cfg.kv_share > 1) s->cfg.kv_share = d.kv_share;
    if (s->cfg.block_size <= 0) s->cfg.block_size = d.block_size;
    if (s->cfg.max_seqs <= 0) s->cfg.max_seqs = d.max_seqs;
    if (s->cfg.max_waiting <= 0) s->cfg.max_waiting = d.max_waiting;
    if (s->cfg.step_tokens <= 0) s->cfg.step_tokens = d.step_tokens;
    if (s->cfg.prefix_cache == 0) s->cfg.prefix_cache = d.prefix_cache;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->prep_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        snprintf(err, errlen, "cannot start the scheduler thread");
        sched_destroy(s);
        return SCHED_ENOMEM;
    }
    s->thread_started = 1;
    *out = s;
    return SCHED_OK;
}

void sched_destroy(sched_t *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; i < s->n_models; i++) {
        smodel_t *M = &s->m[i];
        prefix_destroy(M->pc);
        kv_pool_destroy(M->kv);
        free(M->logits);
        free(M->ids);
        free(M->seq_off);
        free(M->seqs);
        free(M->batch);
        free(M->run);
        free(M->wait);
    }
    free(s->m);
    free(s->inbox);
    free(s->live);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->prep_mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

void sched_set_observer(sched_t *s, sched_observe_fn fn, void *user) {
    pthread_mutex_lock(&s->mu);
    s->observe = fn;
    s->observe_user = user;
    pthread_mutex_unlock(&s->mu);
}

static void add_stats(sched_stats_t *o, const sched_stats_t *a) {
    o->kv_blocks_total += a->kv_blocks_total;
    o->block_size = a->block_size ? a->block_size : o->block_size;
    o->submitted += a->submitted;
    o->finished += a->finished;
    o->refused += a->refused;
    o->preemptions += a->preemptions;
    o->prefix_lookups += a->prefix_lookups;
    o->prefix_hits += a->prefix_hits;
    o->prompt_tokens += a->prompt_tokens;
    o->prefill_tokens += a->prefill_tokens;
    o->generated_tokens += a->generated_tokens;
    o->steps += a->steps;
    o->step_s += a->step_s;
}

void sched_stats(sched_t *s, int model, sched_stats_t *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_models; i++) {
        if (model >= 0 && i != model) continue;
        smodel_t *M = &s->m[i];
        add_stats(out, &M->st);
        out->running += M->st.running;
        out->waiting += M->st.waiting;
        out->kv_blocks_used += M->st.kv_blocks_used;
        out->kv_blocks_cached += M->st.kv_blocks_cached;
    }
    pthread_mutex_unlock(&s->mu);
}

int sched_drain(sched_t *s, int timeout_ms) {
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    struct timespec ts;
    util_deadline(&ts, CLOCK_MONOTONIC, (int64_t)timeout_ms * 1000000);
    while (s->n_live > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > ts.tv_sec || (now.tv_sec == ts.tv_sec && now.tv_nsec >= ts.tv_nsec)) break;
        /* idle_cv uses the realtime clock; wake every 50 ms to check the monotonic deadline */
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        rt.tv_nsec += 50000000;
        if (rt.tv_nsec >= 1000000000) {
            rt.tv_sec++;
            rt.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->idle_cv, &s->mu, &rt);
    }
    int ended = 0;
    for (int i = 0; i < s->n_live; i++)
        if (!s->live[i]->cancel_req) {
            s->live[i]->cancel_req = 1 + SCHED_FINISH_SHUTDOWN;
            ended++;
        }
    pthread_cond_signal(&s->cv);
    while (s->n_live > 0) pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return ended;
}
