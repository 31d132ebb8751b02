/* batcher/batcher.c - pending queues, micro-batch formation, the dispatch and
 * worker threads of one device (what a worker thread runs, and every engine
 * call, is batcher/worker.c).
 *
 * One mutex guards everything here; the work done under it is list surgery
 * and copying token ids, never compute and never a callback. Finished items
 * are collected on a local list and their callbacks run after unlocking.
 *
 * workers + 1 batch buffers are preallocated at the engine's workspace size,
 * so forming and packing a batch allocates nothing: `prepared` is filled by
 * the dispatch thread (and topped up until a worker takes it) while the
 * others compute on the workers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batcher/batcher.h"
#include "batcher/worker.h"
#include "kernels/util.h"

#define SWEEP_NS 10000000LL       /* look for expired items at least this often */
#define IDLE_TICK_NS 20000000LL   /* dispatcher wake-up while items wait */
#define LOAD_RETRY_NS 2000000000LL /* a failed model is retried after this long */

typedef struct {
    batcher_item_t *item;
    int first; /* first sequence of the item in this batch */
    int n;     /* sequences */
} batch_span_t;

typedef struct {
    int model;
    batcher_op_t op;
    int n_seqs, n_tokens;
    int32_t *ids;         /* (cap_tokens) packed token ids */
    int32_t *seq_off;     /* (cap_seqs+1) */
    batch_span_t *spans;  /* (cap_seqs) */
    int n_spans;
    float *out;           /* (n_seqs, result floats) */
    size_t out_cap;       /* floats */
    int64_t t_formed_ns;
    double pack_s;
    int busy;             /* a worker is computing it */
} batch_t;

typedef struct {
    batcher_item_t *head, *tail; /* priority desc, then submit order */
    int items;                   /* accepted, not completed (incl. in flight) */
    size_t bytes;
    size_t unsent;               /* answers of its items not yet sent to their clients (bytes) */
    int seqs_waiting, tokens_waiting; /* not yet in a batch */
    int load_wanted, unload_wanted, loading;
    int64_t retry_at_ns;         /* after a failed load: refuse fast until then */
} model_queue_t;

struct batcher {
    registry_t *reg;
    worker_t *worker;     /* the operations and every engine call (batcher/worker.h) */
    pthread_mutex_t mu;
    pthread_cond_t wake_dispatch, wake_worker, idle;
    batcher_limits_t lim;
    model_queue_t *q;
    int n_models;
    int cap_tokens, cap_seqs; /* the engine's workspace */
    batch_t *bufs;        /* (workers + 1): one being prepared, one per worker computing */
    int n_workers;
    batch_t *prepared;
    int models_busy;      /* a worker is loading/unloading */
    int running, paused, draining, stopped;
    uint64_t next_id;
    int64_t last_sweep_ns;
    batcher_stats_t st;
    pthread_t dispatch_thr;
    pthread_t *worker_thr; /* (n_workers) */
    int workers_started, dispatch_started;
    batcher_batch_fn batch_hook;
    void *batch_hook_user;
};

/* ---------------------------------------------------------------- ops */

/* Op numbers and names are fixed here; what an op does is registered with
 * the worker (batcher_register_op). */
static const char *const OP_NAMES[BATCHER_OP_COUNT] = {
    [BATCHER_OP_EMBED] = "embed",
    [BATCHER_OP_EXPAND] = "expand",
};

const char *batcher_op_name(batcher_op_t op) {
    return op >= 0 && op < BATCHER_OP_COUNT ? OP_NAMES[op] : "unknown";
}

int batcher_op_parse(const char *name, batcher_op_t *op) {
    for (int i = 0; i < BATCHER_OP_COUNT; i++)
        if (name && !strcmp(name, OP_NAMES[i])) {
            *op = (batcher_op_t)i;
            return 0;
        }
    return BATCHER_EINVAL;
}

const char *batcher_outcome_name(batcher_outcome_t o) {
    switch (o) {
    case BATCHER_DONE_OK: return "ok";
    case BATCHER_DONE_EXPIRED: return "expired";
    case BATCHER_DONE_CANCELLED: return "cancelled";
    case BATCHER_DONE_FAILED: return "failed";
    case BATCHER_DONE_SHUTDOWN: return "shutdown";
    }
    return "unknown";
}

int64_t batcher_now_ns(void) { return util_now_ns(); }

static void abs_deadline(struct timespec *ts, int64_t mono_ns) {
    /* the condition variables run on CLOCK_MONOTONIC */
    ts->tv_sec = mono_ns / 1000000000LL;
    ts->tv_nsec = mono_ns % 1000000000LL;
}

/* ---------------------------------------------------------------- limits */

void batcher_limits_default(batcher_limits_t *l) {
    l->max_batch_seqs = 64;
    l->max_batch_tokens = 8192;
    l->max_queue_delay_us = 5000;
    l->max_pending_items = 4096;
    l->max_pending_bytes = (size_t)256 << 20;
}

int batcher_limits_check(const batcher_limits_t *l, char *err, size_t errlen) {
    if (l->max_batch_seqs < 1 || l->max_batch_seqs > 65536) {
        snprintf(err, errlen, "max_batch_seqs must be 1..65536 (got %d)", l->max_batch_seqs);
        return BATCHER_EINVAL;
    }
    if (l->max_batch_tokens < 1 || l->max_batch_tokens > 1 << 24) {
        snprintf(err, errlen, "max_batch_tokens must be 1..16777216 (got %d)", l->max_batch_tokens);
        return BATCHER_EINVAL;
    }
    if (l->max_queue_delay_us < 0 || l->max_queue_delay_us > 60000000) {
        snprintf(err, errlen, "max_queue_delay must be 0..60 s (got %d us)", l->max_queue_delay_us);
        return BATCHER_EINVAL;
    }
    if (l->max_pending_items < 1) {
        snprintf(err, errlen, "max_pending_items must be >= 1 (got %d)", l->max_pending_items);
        return BATCHER_EINVAL;
    }
    if (l->max_pending_bytes < 4096) {
        snprintf(err, errlen, "max_pending_bytes must be >= 4096 (got %zu)", l->max_pending_bytes);
        return BATCHER_EINVAL;
    }
    return BATCHER_OK;
}

/* ---------------------------------------------------------------- helpers (lock held) */

static void hist_add(uint64_t *h, double v, double first) {
    int i = 0;
    for (double edge = first; i < BATCHER_HIST - 1 && v > edge; edge *= 2) i++;
    h[i]++;
}

static void list_remove(model_queue_t *q, batcher_item_t *it) {
    if (it->prev) it->prev->next = it->next;
    else q->head = it->next;
    if (it->next) it->next->prev = it->prev;
    else q->tail = it->prev;
    it->prev = it->next = NULL;
}

/* Keep priority desc, then submit order: walk back from the tail. */
static void list_insert(model_queue_t *q, batcher_item_t *it) {
    batcher_item_t *after = q->tail;
    while (after && after->priority < it->priority) after = after->prev;
    it->prev = after;
    it->next = after ? after->next : q->head;
    if (it->next) it->next->prev = it;
    else q->tail = it;
    if (after) after->next = it;
    else q->head = it;
}

static int seq_len(const batcher_item_t *it, int s) { return it->seq_off[s + 1] - it->seq_off[s]; }

/* Finish an item: account for it and chain it on *done (callbacks run later). */
static void finish(batcher_t *b, batcher_item_t *it, batcher_outcome_t o, int code, const char *msg,
                   batcher_item_t **done) {
    model_queue_t *q = &b->q[it->model];
    it->outcome = o;
    it->err_code = code;
    if (msg && msg != it->err) snprintf(it->err, sizeof it->err, "%s", msg);
    it->t_end_ns = batcher_now_ns();
    q->items--;
    q->bytes -= it->bytes;
    b->st.pending_items--;
    b->st.pending_bytes -= it->bytes;
    switch (o) {
    case BATCHER_DONE_OK: b->st.items_ok++; break;
    case BATCHER_DONE_EXPIRED: b->st.items_expired++; break;
    case BATCHER_DONE_CANCELLED: b->st.items_cancelled++; break;
    case BATCHER_DONE_FAILED: b->st.items_failed++; break;
    case BATCHER_DONE_SHUTDOWN: b->st.items_shutdown++; break;
    }
    registry_count_request(b->reg, it->model, o == BATCHER_DONE_FAILED);
    it->prev = NULL;
    it->next = *done;
    *done = it;
    if (b->st.pending_items == 0) pthread_cond_broadcast(&b->idle);
}

/* Take a not-yet-started item off its queue and finish it. */
static void drop_waiting(batcher_t *b, batcher_item_t *it, batcher_outcome_t o, int code,
                         const char *msg, batcher_item_t **done) {
    model_queue_t *q = &b->q[it->model];
    list_remove(q, it);
    for (int s = it->next_seq; s < it->n_seqs; s++) {
        q->seqs_waiting--;
        q->tokens_waiting -= seq_len(it, s);
    }
    finish(b, it, o, code, msg, done);
}

static void run_callbacks(batcher_t *b, batcher_item_t *done) {
    if (!done) return;
    pthread_mutex_unlock(&b->mu);
    while (done) {
        batcher_item_t *next = done->next;
        done->next = NULL;
        done->done(done, done->user);
        done = next;
    }
    pthread_mutex_lock(&b->mu);
}

static void sweep_expired(batcher_t *b, int64_t now, batcher_item_t **done) {
    b->last_sweep_ns = now;
    for (int m = 0; m < b->n_models; m++)
        for (batcher_item_t *it = b->q[m].head, *next; it; it = next) {
            next = it->next;
            if (it->next_seq == 0 && it->deadline_ns && it->deadline_ns <= now)
                drop_waiting(b, it, BATCHER_DONE_EXPIRED, 0, "deadline passed before compute", done);
        }
}

static int limit_seqs(const batcher_t *b) {
    return b->lim.max_batch_seqs < b->cap_seqs ? b->lim.max_batch_seqs : b->cap_seqs;
}

static int limit_tokens(const batcher_t *b) {
    return b->lim.max_batch_tokens < b->cap_tokens ? b->lim.max_batch_tokens : b->cap_tokens;
}

/* Is span i the last of its item in the batch? (Fair sharing can give an
 * item several spans in one batch.) */
static int span_is_last(const batch_t *bt, int i) {
    for (int j = i + 1; j < bt->n_spans; j++)
        if (bt->spans[j].item == bt->spans[i].item) return 0;
    return 1;
}

/* Append the queue's next sequences to batch (same model, same op), in
 * priority-then-age order, while they fit. Expired items are answered. */
static void form_batch(batcher_t *b, batch_t *batch, int model, int64_t now, batcher_item_t **done) {
    int64_t t0 = batcher_now_ns();
    model_queue_t *q = &b->q[model];
    int max_seqs = limit_seqs(b), max_tokens = limit_tokens(b);
    if (batch->n_seqs == 0) {
        batch->model = model;
        batch->op = q->head->op;
        batch->n_tokens = 0;
        batch->n_spans = 0;
        batch->seq_off[0] = 0;
        batch->t_formed_ns = now;
        batch->pack_s = 0;
    }
    int full = 0;
    /* Fairness: rounds over the items of the highest priority left; in each
     * round a tenant's first item with work gets up to a quantum (an eighth
     * of the batch's tokens and of its sequences, at least one sequence),
     * then the next tenant's. One tenant alone takes its items in order, as
     * before. */
    int quantum = max_tokens / 8 > 0 ? max_tokens / 8 : 1; /* tokens, and sequences: */
    int quantum_seqs = max_seqs / 8 > 0 ? max_seqs / 8 : 1;
    int level = INT32_MIN, progress = 1;
    while (!full && q->head) {
        if (!progress) { /* the level is done for this batch (or has only other ops): the next one down */
            int next_level = INT32_MIN;
            for (batcher_item_t *it = q->head; it; it = it->next)
                if (it->priority < level) {
                    next_level = it->priority;
                    break;
                }
            if (next_level == INT32_MIN) break;
            level = next_level;
        } else if (level == INT32_MIN) {
            level = q->head->priority;
        }
        progress = 0;
        uint32_t served[64];
        int n_served = 0;
    for (batcher_item_t *it = q->head, *next; it && !full; it = next) {
        next = it->next;
        if (it->priority > level) continue;
        if (it->priority < level) break;
        if (it->op != batch->op) continue;
        if (it->next_seq == 0 && it->deadline_ns && it->deadline_ns <= now) {
            drop_waiting(b, it, BATCHER_DONE_EXPIRED, 0, "deadline passed before compute", done);
            continue;
        }
        int seen = 0;
        for (int k = 0; k < n_served && !seen; k++) seen = served[k] == it->tenant;
        if (seen) continue;
        if (n_served < 64) served[n_served++] = it->tenant;
        int took = 0, took_seqs = 0;
        while (it->next_seq < it->n_seqs && (took_seqs == 0 || (took < quantum && took_seqs < quantum_seqs))) {
            int len = seq_len(it, it->next_seq);
            if (batch->n_seqs + 1 > max_seqs ||
                (batch->n_seqs > 0 && batch->n_tokens + len > max_tokens)) {
                full = 1;
                break;
            }
            took += len;
            took_seqs++;
            progress = 1;
            memcpy(batch->ids + batch->n_tokens, it->ids + it->seq_off[it->next_seq],
                   (size_t)len * sizeof(int32_t));
            batch_span_t *last = batch->n_spans ? &batch->spans[batch->n_spans - 1] : NULL;
            if (last && last->item == it) last->n++;
            else batch->spans[batch->n_spans++] = (batch_span_t){it, it->next_seq, 1};
            batch->n_tokens += len;
            batch->n_seqs++;
            batch->seq_off[batch->n_seqs] = batch->n_tokens;
            it->next_seq++;
            q->seqs_waiting--;
            q->tokens_waiting -= len;
        }
        if (it->next_seq == it->n_seqs) list_remove(q, it);
    }
    }
    batch->pack_s += (batcher_now_ns() - t0) * 1e-9;
}

/* The model whose head item goes first: highest priority, then oldest. */
static int pick_model(batcher_t *b, int64_t now) {
    int best = -1;
    for (int m = 0; m < b->n_models; m++) {
        model_queue_t *q = &b->q[m];
        if (!q->head) continue;
        registry_state_t s = registry_state(b->reg, m);
        if (s != REGISTRY_READY) {
            if (s == REGISTRY_UNLOADED || (s == REGISTRY_FAILED && now >= q->retry_at_ns)) {
                if (!q->load_wanted && !q->loading) {
                    q->load_wanted = 1;
                    pthread_cond_signal(&b->wake_worker);
                }
            }
            continue;
        }
        if (best < 0) {
            best = m;
            continue;
        }
        batcher_item_t *h = q->head, *bh = b->q[best].head;
        if (h->priority > bh->priority ||
            (h->priority == bh->priority && h->t_submit_ns < bh->t_submit_ns))
            best = m;
    }
    return best;
}

/* ---------------------------------------------------------------- dispatch thread */

static void *dispatch_main(void *arg) {
    batcher_t *b = arg;
    pthread_mutex_lock(&b->mu);
    while (b->running) {
        batcher_item_t *done = NULL;
        int64_t now = batcher_now_ns();
        int64_t wake = now + (b->st.pending_items ? IDLE_TICK_NS : 1000000000LL);
        if (now - b->last_sweep_ns >= SWEEP_NS) sweep_expired(b, now, &done);

        if (b->prepared) {
            /* The worker is busy: top the prepared batch up with what came since. */
            if (b->q[b->prepared->model].head) form_batch(b, b->prepared, b->prepared->model, now, &done);
        } else {
            int m = pick_model(b, now);
            if (m >= 0) {
                model_queue_t *q = &b->q[m];
                int full = q->seqs_waiting >= limit_seqs(b) || q->tokens_waiting >= limit_tokens(b);
                int64_t due = q->head->t_submit_ns + (int64_t)b->lim.max_queue_delay_us * 1000;
                if (full || now >= due || b->draining) {
                    batch_t *buf = NULL;
                    for (int i = 0; i <= b->n_workers && !buf; i++)
                        if (!b->bufs[i].busy) buf = &b->bufs[i];
                    buf->n_seqs = 0;
                    form_batch(b, buf, m, now, &done);
                    if (buf->n_seqs > 0) {
                        b->prepared = buf;
                        b->st.in_flight_batches++;
                        pthread_cond_signal(&b->wake_worker);
                    }
                } else if (due < wake) {
                    wake = due;
                }
            }
        }
        if (done) {
            run_callbacks(b, done);
            continue; /* state may have moved while unlocked */
        }
        if (!b->running) break;
        struct timespec ts;
        abs_deadline(&ts, wake);
        pthread_cond_timedwait(&b->wake_dispatch, &b->mu, &ts);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---------------------------------------------------------------- worker thread */

static int engine_to_batcher_code(int rc) {
    return rc == ENGINE_ENOMEM ? BATCHER_ENOMEM : BATCHER_EMODEL;
}

/* Loads and unloads asked for since the last look (lock held; dropped around
 * the engine calls). A failed load answers the model's waiting items. */
static int model_in_use(batcher_t *b, int m) {
    if (b->prepared && b->prepared->model == m) return 1;
    for (int i = 0; i <= b->n_workers; i++)
        if (b->bufs[i].busy && b->bufs[i].model == m) return 1;
    return 0;
}

static void handle_models(batcher_t *b, batcher_item_t **done) {
    if (b->models_busy) return; /* another worker is at it */
    b->models_busy = 1;
    for (int m = 0; m < b->n_models; m++) {
        model_queue_t *q = &b->q[m];
        if (q->unload_wanted && !model_in_use(b, m)) {
            q->unload_wanted = 0;
            pthread_mutex_unlock(&b->mu);
            worker_unload(b->worker, m);
            pthread_mutex_lock(&b->mu);
        }
        if (q->load_wanted) {
            char err[512];
            q->load_wanted = 0;
            q->loading = 1;
            pthread_mutex_unlock(&b->mu);
            int rc = worker_load(b->worker, m, err, sizeof err);
            pthread_mutex_lock(&b->mu);
            q->loading = 0;
            if (rc != ENGINE_OK) {
                q->retry_at_ns = batcher_now_ns() + LOAD_RETRY_NS;
                for (batcher_item_t *it = q->head, *next; it; it = next) {
                    next = it->next;
                    if (it->next_seq == 0)
                        drop_waiting(b, it, BATCHER_DONE_FAILED, engine_to_batcher_code(rc), err, done);
                }
            }
            pthread_cond_signal(&b->wake_dispatch);
        }
    }
    b->models_busy = 0;
}

static void complete_batch(batcher_t *b, batch_t *bt, int rc, const char *err, double dt, int rf,
                           batcher_item_t **done) {
    b->st.batches++;
    b->st.seqs += bt->n_seqs;
    b->st.tokens += bt->n_tokens;
    b->st.compute_s += dt;
    b->st.pack_s += bt->pack_s;
    hist_add(b->st.batch_seqs_hist, bt->n_seqs, 1);
    hist_add(b->st.batch_tokens_hist, bt->n_tokens, 16);
    if (bt->n_seqs > b->st.max_batch_seqs_seen) b->st.max_batch_seqs_seen = bt->n_seqs;
    if (b->batch_hook && bt->n_spans > 0) {
        batcher_batch_info_t bi = {b->st.batches, bt->model, bt->op, bt->n_spans, bt->n_seqs, bt->n_tokens, dt,
                                   bt->pack_s, rc != 0, bt->spans[0].item->request_id,
                                   bt->spans[0].item->traceparent};
        b->batch_hook(&bi, b->batch_hook_user);
    }
    int seq = 0;
    for (int i = 0; i < bt->n_spans; i++) {
        batch_span_t *sp = &bt->spans[i];
        batcher_item_t *it = sp->item;
        if (rc == 0)
            memcpy(it->out + (size_t)sp->first * rf, bt->out + (size_t)seq * rf,
                   (size_t)sp->n * rf * sizeof(float));
        else if (!it->err_code) {
            it->err_code = BATCHER_ECOMPUTE;
            snprintf(it->err, sizeof it->err, "%.255s", err);
        }
        if (span_is_last(bt, i)) { /* an item may ride in several spans of one batch (fair sharing) */
            it->compute_s += dt;
            it->batches++;
        }
        it->batch_id = b->st.batches;
        b->st.item_compute_s += dt;
        it->seqs_done += sp->n;
        seq += sp->n;
        if (it->seqs_done == it->n_seqs) {
            batcher_outcome_t o = it->err_code ? BATCHER_DONE_FAILED
                                  : it->cancelled ? BATCHER_DONE_CANCELLED
                                                  : BATCHER_DONE_OK;
            finish(b, it, o, it->err_code, NULL, done);
        }
    }
    bt->n_seqs = 0;
}

static void *worker_main(void *arg) {
    batcher_t *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        batcher_item_t *done = NULL;
        handle_models(b, &done);
        if (b->running && b->prepared) {
            batch_t *bt = b->prepared;
            b->prepared = NULL;
            bt->busy = 1;
            pthread_cond_signal(&b->wake_dispatch);
            /* queue wait: submit -> the start of the first batch that computes it */
            int64_t t_start = batcher_now_ns();
            for (int i = 0; i < bt->n_spans; i++)
                if (bt->spans[i].first == 0) {
                    batcher_item_t *it = bt->spans[i].item;
                    it->t_start_ns = t_start;
                    double wait = (t_start - it->t_submit_ns) * 1e-9;
                    b->st.queue_wait_s += wait;
                    hist_add(b->st.queue_wait_hist, wait, 1e-4);
                }
            int rf = worker_result_floats(b->worker, bt->op, bt->model);
            char err[512] = "";
            int rc = 0;
            size_t need = (size_t)bt->n_seqs * (rf > 0 ? rf : 1);
            if (need > bt->out_cap) {
                float *o = realloc(bt->out, need * sizeof(float));
                if (o) {
                    bt->out = o;
                    bt->out_cap = need;
                } else {
                    rc = BATCHER_ECOMPUTE;
                    snprintf(err, sizeof err, "out of host memory for %zu result floats", need);
                }
            }
            pthread_mutex_unlock(&b->mu);
            int64_t t0 = batcher_now_ns();
            worker_batch_t wb = {bt->model, bt->n_seqs, bt->ids, bt->seq_off};
            if (!rc) rc = worker_run(b->worker, bt->op, &wb, bt->out, err, sizeof err);
            double dt = (batcher_now_ns() - t0) * 1e-9;
            pthread_mutex_lock(&b->mu);
            complete_batch(b, bt, rc, err, dt, rf, &done);
            bt->busy = 0;
            pthread_cond_broadcast(&b->wake_worker); /* a deferred unload may go now */
            b->st.in_flight_batches--;
            run_callbacks(b, done);
            continue;
        }
        if (done) {
            run_callbacks(b, done);
            continue;
        }
        if (!b->running) break;
        pthread_cond_wait(&b->wake_worker, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---------------------------------------------------------------- public */

static int alloc_batch(batch_t *bt, int cap_tokens, int cap_seqs) {
    memset(bt, 0, sizeof *bt);
    bt->ids = malloc((size_t)cap_tokens * sizeof *bt->ids);
    bt->seq_off = malloc(((size_t)cap_seqs + 1) * sizeof *bt->seq_off);
    bt->spans = malloc((size_t)cap_seqs * sizeof *bt->spans);
    return bt->ids && bt->seq_off && bt->spans ? 0 : -1;
}

static void free_batch(batch_t *bt) {
    free(bt->ids);
    free(bt->seq_off);
    free(bt->spans);
    free(bt->out);
}

int batcher_create(registry_t *reg, const batcher_limits_t *limits, batcher_t **out, char *err,
                   size_t errlen) {
    *out = NULL;
    batcher_limits_t lim;
    if (limits) lim = *limits;
    else batcher_limits_default(&lim);
    int rc = batcher_limits_check(&lim, err, errlen);
    if (rc) return rc;
    batcher_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory creating the batcher");
        return BATCHER_ENOMEM;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->wake_dispatch, &ca);
    pthread_cond_init(&b->wake_worker, &ca);
    pthread_cond_init(&b->idle, &ca);
    pthread_condattr_destroy(&ca);
    b->reg = reg;
    if (worker_create(reg, &b->worker) || worker_register_op(b->worker, BATCHER_OP_EMBED, &worker_embed_op, NULL))
        goto oom;
    b->lim = lim;
    b->running = 1;
    b->next_id = 1;
    b->n_models = registry_count(reg);
    const engine_opts_t *eo = registry_engine_opts(reg);
    b->n_workers = eo->runners > 0 ? eo->runners : 1;
    b->cap_tokens = eo->max_batch_tokens;
    b->cap_seqs = eo->max_batch_seqs;
    b->q = calloc(b->n_models ? b->n_models : 1, sizeof *b->q);
    b->bufs = calloc(b->n_workers + 1, sizeof *b->bufs);
    b->worker_thr = calloc(b->n_workers, sizeof *b->worker_thr);
    if (!b->q || !b->bufs || !b->worker_thr) goto oom;
    for (int i = 0; i <= b->n_workers; i++)
        if (alloc_batch(&b->bufs[i], b->cap_tokens, b->cap_seqs)) goto oom;
    for (; b->workers_started < b->n_workers; b->workers_started++)
        if (pthread_create(&b->worker_thr[b->workers_started], NULL, worker_main, b)) goto nothread;
    if (pthread_create(&b->dispatch_thr, NULL, dispatch_main, b)) goto nothread;
    b->dispatch_started = 1;
    *out = b;
    return BATCHER_OK;
oom:
    batcher_destroy(b);
    snprintf(err, errlen, "out of memory creating the batcher");
    return BATCHER_ENOMEM;
nothread:
    batcher_destroy(b);
    snprintf(err, errlen, "cannot start the batcher's threads");
    return BATCHER_ESTOPPED;
}

void batcher_stop(batcher_t *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    if (b->stopped) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->stopped = 1;
    b->running = 0;
    pthread_cond_broadcast(&b->wake_dispatch);
    pthread_cond_broadcast(&b->wake_worker);
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->mu);
    if (b->dispatch_started) pthread_join(b->dispatch_thr, NULL);
    for (int i = 0; i < b->workers_started; i++) pthread_join(b->worker_thr[i], NULL);
    /* Threads are gone: everything not computed is handed back. */
    pthread_mutex_lock(&b->mu);
    batcher_item_t *done = NULL;
    if (b->prepared) {
        for (int i = 0; i < b->prepared->n_spans; i++) {
            batcher_item_t *it = b->prepared->spans[i].item;
            /* items with sequences still queued are answered from the queue below */
            if (it->next_seq == it->n_seqs && span_is_last(b->prepared, i))
                finish(b, it, BATCHER_DONE_SHUTDOWN, BATCHER_ESTOPPED, "server shutting down", &done);
        }
        b->prepared->n_seqs = 0;
        b->prepared = NULL;
        b->st.in_flight_batches--;
    }
    for (int m = 0; m < b->n_models; m++)
        while (b->q[m].head)
            drop_waiting(b, b->q[m].head, BATCHER_DONE_SHUTDOWN, BATCHER_ESTOPPED,
                         "server shutting down", &done);
    run_callbacks(b, done);
    pthread_mutex_unlock(&b->mu);
}

void batcher_destroy(batcher_t *b) {
    if (!b) return;
    batcher_stop(b);
    if (b->bufs)
        for (int i = 0; i <= b->n_workers; i++) free_batch(&b->bufs[i]);
    free(b->bufs);
    free(b->worker_thr);
    free(b->q);
    worker_destroy(b->worker);
    pthread_cond_destroy(&b->wake_dispatch);
    pthread_cond_destroy(&b->wake_worker);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int batcher_result_floats(batcher_t *b, batcher_op_t op, int model) {
    if (op < 0 || op >= BATCHER_OP_COUNT || model < 0 || model >= b->n_models) return 0;
    return worker_result_floats(b->worker, op, model);
}

int batcher_register_op(batcher_t *b, batcher_op_t op, const worker_op_t *h, void *user) {
    if (op < 0 || op >= BATCHER_OP_COUNT) return BATCHER_EINVAL;
    return worker_register_op(b->worker, op, h, user) ? BATCHER_EINVAL : BATCHER_OK;
}

int batcher_submit(batcher_t *b, batcher_item_t *it, char *err, size_t errlen) {
    if (!it || !it->done || it->model < 0 || it->model >= b->n_models || it->op < 0 ||
        it->op >= BATCHER_OP_COUNT || it->n_seqs < 1 || !it->ids || !it->seq_off || !it->out) {
        snprintf(err, errlen, "invalid work item");
        return BATCHER_EINVAL;
    }
    if (!worker_has_op(b->worker, it->op)) {
        snprintf(err, errlen, "this server does not run op %s", batcher_op_name(it->op));
        return BATCHER_EINVAL;
    }
    char terr[256];
    const tok_t *tok = registry_tokenizer(b->reg, it->model, terr, sizeof terr);
    if (!tok) {
        snprintf(err, errlen, "model tokenizer: %s", terr);
        return BATCHER_EMODEL;
    }
    int vocab = tok_vocab_size(tok), max_len = tok_max_len(tok);
    if (it->seq_off[0] != 0) {
        snprintf(err, errlen, "seq_off[0] must be 0");
        return BATCHER_EINVAL;
    }
    for (int s = 0; s < it->n_seqs; s++) {
        int len = seq_len(it, s);
        if (len < 1 || len > max_len || len > b->cap_tokens) {
            snprintf(err, errlen, "input %d has %d tokens; this model takes 1..%d", s, len,
                     max_len < b->cap_tokens ? max_len : b->cap_tokens);
            return BATCHER_EINVAL;
        }
        for (int t = it->seq_off[s]; t < it->seq_off[s + 1]; t++)
            if (it->ids[t] < 0 || it->ids[t] >= vocab) {
                snprintf(err, errlen, "input %d: token id %d is outside the vocabulary (0..%d)", s,
                         it->ids[t], vocab - 1);
                return BATCHER_EINVAL;
            }
    }
    int rf = worker_result_floats(b->worker, it->op, it->model);
    size_t bytes = sizeof *it + (size_t)it->seq_off[it->n_seqs] * sizeof(int32_t) +
                   ((size_t)it->n_seqs + 1) * sizeof(int32_t) + (size_t)it->n_seqs * rf * sizeof(float);

    pthread_mutex_lock(&b->mu);
    model_queue_t *q = &b->q[it->model];
    int rc = BATCHER_OK;
    int64_t now = batcher_now_ns();
    if (!b->running) {
        snprintf(err, errlen, "server shutting down");
        rc = BATCHER_ESTOPPED;
    } else if (b->paused || b->draining) {
        snprintf(err, errlen, b->draining ? "server draining: not taking work" : "server paused: not taking work");
        rc = BATCHER_EPAUSED;
    } else if (now < q->retry_at_ns && registry_state(b->reg, it->model) == REGISTRY_FAILED) {
        registry_model_info_t info;
        registry_info(b->reg, it->model, &info);
        snprintf(err, errlen, "%s", info.last_error);
        rc = engine_to_batcher_code(info.last_error_code);
    } else if (q->items + 1 > b->lim.max_pending_items || q->bytes + q->unsent + bytes > b->lim.max_pending_bytes) {
        snprintf(err, errlen, "pending queue full (%d items, %zu bytes, and %zu bytes of answers not yet read by "
                 "their clients; limits %d items, %zu bytes)", q->items, q->bytes, q->unsent,
                 b->lim.max_pending_items, b->lim.max_pending_bytes);
        b->st.items_rejected++;
        rc = BATCHER_EBUSY;
    }
    if (rc) {
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    it->id = b->next_id++;
    it->outcome = BATCHER_DONE_OK;
    it->err_code = 0;
    it->err[0] = '\0';
    it->t_submit_ns = now;
    it->t_start_ns = it->t_end_ns = 0;
    it->compute_s = 0;
    it->batches = 0;
    it->batch_id = 0;
    it->next_seq = it->seqs_done = 0;
    it->cancelled = 0;
    it->bytes = bytes;
    list_insert(q, it);
    q->items++;
    q->bytes += bytes;
    q->seqs_waiting += it->n_seqs;
    q->tokens_waiting += it->seq_off[it->n_seqs];
    b->st.pending_items++;
    b->st.pending_bytes += bytes;
    pthread_cond_signal(&b->wake_dispatch);
    pthread_mutex_unlock(&b->mu);
    return BATCHER_OK;
}

int batcher_cancel(batcher_t *b, uint64_t item_id) {
    pthread_mutex_lock(&b->mu);
    batcher_item_t *done = NULL;
    int rc = -1;
    for (int m = 0; m < b->n_models && rc; m++)
        for (batcher_item_t *it = b->q[m].head; it; it = it->next)
            if (it->id == item_id) {
                if (it->next_seq == 0) {
                    drop_waiting(b, it, BATCHER_DONE_CANCELLED, 0, "cancelled", &done);
                } else {
                    /* started: the batches in flight finish and it answers CANCELLED; the
                     * sequences not yet in a batch are never computed (counted as done so
                     * the last span in flight ends it) */
                    model_queue_t *q = &b->q[m];
                    it->cancelled = 1;
                    list_remove(q, it);
                    for (int s = it->next_seq; s < it->n_seqs; s++) {
                        q->seqs_waiting--;
                        q->tokens_waiting -= seq_len(it, s);
                    }
                    it->seqs_done += it->n_seqs - it->next_seq;
                    it->next_seq = it->n_seqs;
                    if (it->seqs_done == it->n_seqs) finish(b, it, BATCHER_DONE_CANCELLED, 0, "cancelled", &done);
                }
                rc = 0;
                break;
            }
    run_callbacks(b, done);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int batcher_room(batcher_t *b, int model) {
    pthread_mutex_lock(&b->mu);
    int room = 0;
    if (b->running && !b->paused && !b->draining) {
        room = 1 << 30;
        for (int m = 0; m < b->n_models; m++) {
            if (model >= 0 && m != model) continue;
            int r = b->lim.max_pending_items - b->q[m].items;
            if (b->q[m].bytes + b->q[m].unsent >= b->lim.max_pending_bytes) r = 0; /* its bytes are spent */
            if (r < room) room = r;
        }
        if (room < 0 || room == 1 << 30) room = room < 0 ? 0 : room;
    }
    pthread_mutex_unlock(&b->mu);
    return room;
}

void batcher_hold_answer(batcher_t *b, int model, size_t bytes) {
    pthread_mutex_lock(&b->mu);
    if (model >= 0 && model < b->n_models) {
        b->q[model].unsent += bytes;
        b->st.unsent_bytes += bytes;
    }
    pthread_mutex_unlock(&b->mu);
}

void batcher_release_answer(batcher_t *b, int model, size_t bytes) {
    pthread_mutex_lock(&b->mu);
    if (model >= 0 && model < b->n_models) {
        b->q[model].unsent -= bytes;
        b->st.unsent_bytes -= bytes;
    }
    pthread_mutex_unlock(&b->mu);
}

int batcher_set_limits(batcher_t *b, const batcher_limits_t *l, char *err, size_t errlen) {
    int rc = batcher_limits_check(l, err, errlen);
    if (rc) return rc;
    pthread_mutex_lock(&b->mu);
    b->lim = *l;
    pthread_cond_signal(&b->wake_dispatch);
    pthread_mutex_unlock(&b->mu);
    return BATCHER_OK;
}

void batcher_get_limits(batcher_t *b, batcher_limits_t *l) {
    pthread_mutex_lock(&b->mu);
    *l = b->lim;
    pthread_mutex_unlock(&b->mu);
}

void batcher_pause(batcher_t *b) {
    pthread_mutex_lock(&b->mu);
    b->paused = 1;
    pthread_mutex_unlock(&b->mu);
}

void batcher_resume(batcher_t *b) {
    pthread_mutex_lock(&b->mu);
    b->paused = 0;
    b->draining = 0;
    pthread_cond_signal(&b->wake_dispatch);
    pthread_mutex_unlock(&b->mu);
}

int batcher_drain(batcher_t *b, int timeout_ms) {
    pthread_mutex_lock(&b->mu);
    b->draining = 1;
    pthread_cond_signal(&b->wake_dispatch);
    int64_t until = batcher_now_ns() + (int64_t)timeout_ms * 1000000;
    while (b->st.pending_items > 0 && b->running) {
        struct timespec ts;
        abs_deadline(&ts, until);
        if (pthread_cond_timedwait(&b->idle, &b->mu, &ts) == ETIMEDOUT) break;
    }
    int left = b->st.pending_items;
    pthread_mutex_unlock(&b->mu);
    return left;
}

/* A load or an unload for the worker; the later request wins. */
static int request_model_change(batcher_t *b, int model, int load) {
    if (model < 0 || model >= b->n_models) return BATCHER_EINVAL;
    pthread_mutex_lock(&b->mu);
    b->q[model].load_wanted = load;
    b->q[model].unload_wanted = !load;
    pthread_cond_signal(&b->wake_worker);
    pthread_mutex_unlock(&b->mu);
    return BATCHER_OK;
}

int batcher_request_load(batcher_t *b, int model) { return request_model_change(b, model, 1); }
int batcher_request_unload(batcher_t *b, int model) { return request_model_change(b, model, 0); }

void batcher_set_batch_hook(batcher_t *b, batcher_batch_fn fn, void *user) {
    pthread_mutex_lock(&b->mu);
    b->batch_hook = fn;
    b->batch_hook_user = user;
    pthread_mutex_unlock(&b->mu);
}

void batcher_stats(batcher_t *b, batcher_stats_t *out) {
    pthread_mutex_lock(&b->mu);
    *out = b->st;
    out->paused = b->paused;
    out->draining = b->draining;
    pthread_mutex_unlock(&b->mu);
}

worker_t *batcher_worker(batcher_t *b) { return b->worker; }
