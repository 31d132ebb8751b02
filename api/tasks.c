/* api/tasks.c - the Redis intake (lease -> batcher -> ack) and the /v1/tasks routes.
 *
 * Per queue three threads, each with its own Redis connection:
 *   intake     leases as many tasks as the batcher has room for, decodes and
 *              tokenizes them (api/embed_job.c) and submits them; renews the
 *              leases of every task it holds (waiting or computing) every
 *              lease/3; cancels work whose lease was lost or whose
 *              cancellation was requested; reaps expired leases every second.
 *   completion takes finished tasks from the batcher's callbacks and, in
 *              batches, acks results (queue_ack_many), fails errors, and hands
 *              back leases of work not done (expired in our queue, shutdown).
 *   waiter     answers GET /v1/tasks/{id}?wait= long-polls: requests stay
 *              suspended while it polls their tasks, so no HTTP thread waits.
 * HTTP routes borrow a connection from a small pool for one round trip.
 * Redis down: every thread reconnects with backoff, /readyz reports it, the
 * routes answer 503, HTTP embeddings go on.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/ctl.h"
#include "api/embed_job.h"
#include "api/expand_job.h"
#include "api/http.h"
#include "api/log.h"
#include "api/tasks.h"
#include "queue/queue.h"

#define LEASE_BATCH 64   /* tasks per lease call at most */
#define POOL_MAX 8       /* idle route connections kept */
#define IDLE_POLL_MS 20  /* intake poll interval while Redis has nothing */
#define WAIT_POLL_MS 25  /* waiter poll interval */

typedef struct task_queue task_queue_t;

typedef enum { T_HELD = 0, T_DONE = 1 } task_stage_t;

/* One leased task while we hold it. */
typedef struct task {
    task_queue_t *q;
    char id[QUEUE_ID_MAX];
    int64_t token;
    api_embed_job_t *job;     /* NULL when the payload was refused before submit */
    int refuse_status;        /* validation failure: answered as a result with this status */
    char *refuse_json;        /* its error JSON */
    int release;              /* hand back instead of ack/fail (EBUSY at submit) */
    int cancel_requested, lost;
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
    atomic_int intake_up, completion_up;
    atomic_int stop_intake, stop;
};

typedef struct waiter {
    api_req_t *r;
    char id[QUEUE_ID_MAX];
    task_queue_t *q;
    int64_t until_ns;
    queue_info_t info;
    int found, rc;
    struct waiter *next;
} waiter_t;

struct api_tasks {
    api_serve_t *srv;
    task_queue_t *queues;
    int n;
    char worker[128];
    /* route connections */
    pthread_mutex_t pool_mu;
    queue_conn_t *pool[POOL_MAX];
    char pool_q[POOL_MAX][QUEUE_NAME_MAX];
    int n_pool;
    /* long-polls */
    pthread_t waiter_thr;
    int waiter_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    waiter_t *waiters;
    int wstop;
};

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The request parser of an op. */
static api_job_parse_fn task_job_parse(batcher_op_t op) {
    return op == BATCHER_OP_EXPAND ? api_expand_parse : api_embed_parse;
}

static void task_free(task_t *k) {
    if (!k) return;
    api_embed_job_free(k->job);
    free(k->refuse_json);
    free(k);
}

/* ---------------------------------------------------------------- connections */

/* Connect with backoff until it works or stop is set; NULL only on stop. */
static queue_conn_t *connect_retry(task_queue_t *q, atomic_int *up, atomic_int *stop, const char *who) {
    int backoff = 100, logged = 0;
    while (!atomic_load(stop)) {
        char err[512];
        queue_conn_t *c = queue_connect(&q->qc, err, sizeof err);
        if (c) {
            atomic_store(up, 1);
            if (logged)
                api_log(API_LOG_INFO, "redis reconnected", json_pack("{s:s,s:s}", "queue", q->name, "thread", who));
            return c;
        }
        atomic_store(up, 0);
        if (!logged++)
            api_log(API_LOG_WARN, "redis unreachable, retrying",
                    json_pack("{s:s,s:s,s:s}", "queue", q->name, "thread", who, "error", err));
        for (int waited = 0; waited < backoff && !atomic_load(stop); waited += 20) sleep_ms(20);
        if (backoff < 2000) backoff *= 2;
    }
    return NULL;
}

static void conn_broken(queue_conn_t **c, atomic_int *up, task_queue_t *q, const char *who) {
    api_log(API_LOG_WARN, "redis call failed",
            json_pack("{s:s,s:s,s:s}", "queue", q->name, "thread", who, "error", queue_last_error(*c)));
    queue_close(*c);
    *c = NULL;
    atomic_store(up, 0);
}

/* ---------------------------------------------------------------- held and done lists (q->mu held) */

static void held_remove(task_queue_t *q, task_t *k) {
    if (k->prev) k->prev->next = k->next;
    else q->held = k->next;
    if (k->next) k->next->prev = k->prev;
    q->n_held--;
    k->prev = k->next = NULL;
}

static void done_push(task_queue_t *q, task_t *k) {
    k->next = NULL;
    if (q->done_tail) q->done_tail->next = k;
    else q->done_head = k;
    q->done_tail = k;
    pthread_cond_broadcast(&q->cv);
}

/* ---------------------------------------------------------------- batcher callback */

static void task_done(batcher_item_t *item, void *user) {
    (void)item;
    task_t *k = user;
    task_queue_t *q = k->q;
    pthread_mutex_lock(&q->mu);
    held_remove(q, k);
    done_push(q, k);
    pthread_mutex_unlock(&q->mu);
}

/* Straight to the completion thread (refused before the batcher). */
static void task_to_done(task_queue_t *q, task_t *k) {
    pthread_mutex_lock(&q->mu);
    done_push(q, k);
    pthread_mutex_unlock(&q->mu);
}

/* ---------------------------------------------------------------- intake */

static char *error_json(unsigned status, const char *code, const char *param, const char *msg) {
    json_t *o = json_pack("{s:{s:s,s:s,s:o,s:s},s:i}", "error", "message", msg, "type",
                          status >= 500 ? "server_error" : "invalid_request_error", "param",
                          param ? json_string(param) : json_null(), "code", code, "status", (int)status);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Decode one leased task and hand it to the batcher (or straight to completion). */
static void intake_one(task_queue_t *q, queue_lease_t *l) {
    api_serve_t *srv = q->t->srv;
    task_t *k = calloc(1, sizeof *k);
    if (!k) return; /* the lease runs out and the reaper hands the task out again */
    k->q = q;
    memcpy(k->id, l->id, sizeof k->id);
    k->token = l->token;
    queue_payload_t p;
    char err[512];
    api_err_t e = {0};
    if (queue_payload_parse(l->payload, l->payload_len, &p, err, sizeof err)) {
        k->refuse_status = 400;
        k->refuse_json = error_json(400, "invalid_payload", NULL, err);
        task_to_done(q, k);
        return;
    }
    batcher_op_t op;
    json_t *in = json_loads(p.inputs_json, JSON_DECODE_ANY, NULL);
    json_t *body = NULL;
    if (batcher_op_parse(p.op, &op)) {
        snprintf(err, sizeof err, "unknown op '%s' (this server runs: embed, expand)", p.op);
        k->refuse_status = 400;
        k->refuse_json = error_json(400, "unknown_op", "op", err);
    } else {
        /* inputs: the input value itself (embed: "input", expand: "terms"), or an
         * object of the op's options holding it */
        const char *field = op == BATCHER_OP_EXPAND ? "terms" : "input";
        body = json_is_object(in) ? json_deep_copy(in) : json_pack("{s:O}", field, in ? in : json_null());
        json_object_set_new(body, "model", json_string(p.model));
        json_object_del(body, "deadline_ms");
        if (task_job_parse(op)(api_srv_registry(srv), api_srv_config(srv), body, &k->job, &e)) {
            k->refuse_status = (int)e.status;
            k->refuse_json = error_json(e.status, e.code, e.param, e.message);
        }
    }
    json_decref(in);
    json_decref(body);
    if (!k->job) {
        queue_payload_clear(&p);
        task_to_done(q, k);
        return;
    }
    batcher_item_t *it = &k->job->item;
    it->priority = l->priority;
    if (l->deadline_ms > 0) {
        int64_t left = l->deadline_ms - unix_ms();
        it->deadline_ns = batcher_now_ns() + (left > 0 ? left : 0) * 1000000LL;
        if (left <= 0) it->deadline_ns = batcher_now_ns(); /* expires at once, without compute */
    }
    snprintf(it->request_id, sizeof it->request_id, "%s", p.request_id ? p.request_id : k->id);
    if (p.traceparent && api_traceparent_valid(p.traceparent))
        snprintf(it->traceparent, sizeof it->traceparent, "%s", p.traceparent);
    queue_payload_clear(&p);
    it->done = task_done;
    it->user = k;
    pthread_mutex_lock(&q->mu);
    k->next = q->held;
    if (q->held) q->held->prev = k;
    q->held = k;
    q->n_held++;
    pthread_mutex_unlock(&q->mu);
    int rc = batcher_submit(api_srv_batcher(srv), it, err, sizeof err);
    if (rc) {
        pthread_mutex_lock(&q->mu);
        held_remove(q, k);
        pthread_mutex_unlock(&q->mu);
        if (rc == BATCHER_EBUSY || rc == BATCHER_EPAUSED || rc == BATCHER_ESTOPPED) {
            k->release = 1; /* not ours to run now: back to the queue, not a failure */
        } else { /* the model does not fit or failed to load: retried with backoff, then the DLQ */
            it->outcome = BATCHER_DONE_FAILED;
            it->err_code = rc;
            snprintf(it->err, sizeof it->err, "%.255s", err);
        }
        task_to_done(q, k);
    }
}

/* Renew every held lease in one round trip; act on lost and cancelled ones. */
static int renew_held(task_queue_t *q, queue_conn_t *c) {
    pthread_mutex_lock(&q->mu);
    int n = q->n_held;
    if (n == 0) {
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    queue_ref_t *refs = calloc((size_t)n, sizeof *refs);
    char (*ids)[QUEUE_ID_MAX] = calloc((size_t)n, QUEUE_ID_MAX);
    uint64_t *item_ids = calloc((size_t)n, sizeof *item_ids);
    int *status = calloc((size_t)n, sizeof *status);
    if (!refs || !ids || !item_ids || !status) {
        pthread_mutex_unlock(&q->mu);
        free(refs), free(ids), free(item_ids), free(status);
        return 0;
    }
    int i = 0;
    for (task_t *k = q->held; k && i < n; k = k->next, i++) {
        memcpy(ids[i], k->id, QUEUE_ID_MAX);
        refs[i].id = ids[i];
        refs[i].token = k->token;
        item_ids[i] = k->job->item.id;
    }
    pthread_mutex_unlock(&q->mu);
    int lease_ms = api_srv_config(q->t->srv)->lease_ms;
    int rc = queue_renew(c, refs, (size_t)n, lease_ms > 0 ? lease_ms : 30000, status);
    if (rc == 0) {
        for (int j = 0; j < n; j++) {
            if (status[j] == QUEUE_RENEWED) continue;
            /* mark it, then drop it from the batcher if it has not started */
            pthread_mutex_lock(&q->mu);
            for (task_t *k = q->held; k; k = k->next)
                if (!strcmp(k->id, ids[j])) {
                    if (status[j] == QUEUE_LOST) k->lost = 1;
                    else k->cancel_requested = 1;
                }
            pthread_mutex_unlock(&q->mu);
            batcher_cancel(api_srv_batcher(q->t->srv), item_ids[j]);
        }
    }
    free(refs), free(ids), free(item_ids), free(status);
    return rc;
}

static void *intake_main(void *arg) {
    task_queue_t *q = arg;
    api_serve_t *srv = q->t->srv;
    const api_config_t *cfg = api_srv_config(srv);
    int64_t lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 30000;
    int64_t renew_every_ns = lease_ms * 1000000LL / 3, next_renew = 0, next_reap = 0;
    queue_lease_t leases[LEASE_BATCH];
    queue_conn_t *c = NULL;
    for (;;) {
        int stopping = atomic_load(&q->stop_intake);
        pthread_mutex_lock(&q->mu);
        int held = q->n_held;
        pthread_mutex_unlock(&q->mu);
        if (atomic_load(&q->stop) || (stopping && held == 0)) break;
        if (!c && !(c = connect_retry(q, &q->intake_up, &q->stop, "intake"))) break;
        int64_t now = batcher_now_ns();
        if (now >= next_renew) {
            if (renew_held(q, c) == QUEUE_EREDIS) {
                conn_broken(&c, &q->intake_up, q, "intake");
                continue;
            }
            next_renew = now + renew_every_ns;
        }
        if (now >= next_reap && !stopping) {
            queue_reap_t rp;
            if (queue_reap(c, 0, 0, &rp) == QUEUE_EREDIS) {
                conn_broken(&c, &q->intake_up, q, "intake");
                continue;
            }
            next_reap = now + 1000000000LL;
        }
        int got = 0;
        int room = stopping ? 0 : batcher_room(api_srv_batcher(srv), -1);
        if (room > LEASE_BATCH) room = LEASE_BATCH;
        if (room > 0) {
            int rc = queue_lease(c, room, q->t->worker, lease_ms, leases, &got);
            if (rc == QUEUE_EREDIS) {
                conn_broken(&c, &q->intake_up, q, "intake");
                continue;
            }
            if (rc) {
                api_log(API_LOG_WARN, "lease failed", json_pack("{s:s,s:s}", "queue", q->name, "error", queue_last_error(c)));
                got = 0;
            }
            atomic_store(&q->intake_up, 1);
            for (int i = 0; i < got; i++) intake_one(q, &leases[i]);
            queue_lease_clear(leases, (size_t)got);
        }
        if (got == 0) {
            /* nothing to take (or no room): wait a little, or until held work ends */
            pthread_mutex_lock(&q->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += IDLE_POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            pthread_mutex_unlock(&q->mu);
        }
    }
    queue_close(c);
    return NULL;
}

/* ---------------------------------------------------------------- completion */

static void wake_waiters(api_tasks_t *t) {
    pthread_mutex_lock(&t->wmu);
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->wmu);
}

/* One line per finished task: what became of it, with its ids and times. */
static void log_task(task_queue_t *q, task_t *k, batcher_item_t *it) {
    if (api_log_level() > API_LOG_INFO) return;
    json_t *f = json_pack("{s:s,s:s}", "queue", q->name, "task", k->id);
    if (it) {
        json_object_set_new(f, "request_id", json_string(it->request_id));
        if (it->traceparent[0]) json_object_set_new(f, "traceparent", json_string(it->traceparent));
        json_object_set_new(f, "model", json_string(k->job->model_name));
        json_object_set_new(f, "outcome", json_string(k->lost ? "lost" : k->release ? "released"
                                                                  : batcher_outcome_name(it->outcome)));
        if (it->batch_id) json_object_set_new(f, "batch_id", json_integer((json_int_t)it->batch_id));
        if (it->t_start_ns) json_object_set_new(f, "queue_wait_s", json_real((it->t_start_ns - it->t_submit_ns) * 1e-9));
        json_object_set_new(f, "compute_s", json_real(it->compute_s));
    } else {
        json_object_set_new(f, "outcome", json_string("refused"));
        json_object_set_new(f, "status", json_integer(k->refuse_status));
    }
    api_log(API_LOG_INFO, "task", f);
}

/* Settle a list of finished tasks: acks in one round trip, then fails and
 * hand-backs. Returns the tasks it could not settle (Redis down). */
static task_t *settle(task_queue_t *q, queue_conn_t *c, task_t *list, int *broken) {
    const api_config_t *cfg = api_srv_config(q->t->srv);
    int64_t ttl = (int64_t)cfg->result_ttl_s * 1000;
    int n = 0;
    for (task_t *k = list; k; k = k->next) n++;
    queue_ack_t *acks = calloc((size_t)n, sizeof *acks);
    char **bodies = calloc((size_t)n, sizeof *bodies);
    task_t **acked = calloc((size_t)n, sizeof *acked);
    int *status = calloc((size_t)n, sizeof *status);
    task_t *left = NULL, **left_tail = &left;
    int na = 0, expired = 0;
    *broken = 0;
    if (!acks || !bodies || !acked || !status) {
        free(acks), free(bodies), free(acked), free(status);
        return list;
    }
    for (task_t *k = list, *next; k; k = next) {
        next = k->next;
        k->next = NULL;
        int rc = 0;
        const char *what = NULL;
        if (*broken) {
            *left_tail = k;
            left_tail = &k->next;
            continue;
        }
        batcher_item_t *it = k->job ? &k->job->item : NULL;
        log_task(q, k, it);
        if (k->lost) {
            what = "lost"; /* someone else holds it now: nothing to do */
        } else if (k->release || (it && (it->outcome == BATCHER_DONE_SHUTDOWN || it->outcome == BATCHER_DONE_EXPIRED))) {
            /* not run: back to ready; one past its deadline ends expired at the next reap */
            queue_ref_t ref = {k->id, k->token};
            int st = 0;
            rc = queue_release(c, &ref, 1, &st);
            if (it && it->outcome == BATCHER_DONE_EXPIRED) expired++;
            what = "released";
        } else if (k->cancel_requested || (it && it->outcome == BATCHER_DONE_CANCELLED)) {
            rc = queue_fail(c, k->id, k->token, "cancelled", NULL, NULL);
            what = "cancelled";
        } else if (!it) { /* refused: the error is its result */
            bodies[na] = k->refuse_json;
            k->refuse_json = NULL;
            acks[na] = (queue_ack_t){k->id, k->token, bodies[na], bodies[na] ? strlen(bodies[na]) : 0};
            acked[na++] = k;
            continue;
        } else if (it->outcome == BATCHER_DONE_OK) {
            size_t len = 0;
            bodies[na] = api_embed_result_json(k->job, &len);
            if (!bodies[na]) {
                rc = queue_fail(c, k->id, k->token, "out of memory writing the result", NULL, NULL);
                what = "failed";
            } else {
                acks[na] = (queue_ack_t){k->id, k->token, bodies[na], len};
                acked[na++] = k;
                continue;
            }
        } else {
            rc = queue_fail(c, k->id, k->token, it->err[0] ? it->err : "failed", NULL, NULL);
            what = "failed";
        }
        if (rc == QUEUE_EREDIS) {
            *broken = 1;
            *left_tail = k;
            left_tail = &k->next;
            continue;
        }
        if (rc && rc != QUEUE_ESTALE)
            api_log(API_LOG_WARN, "task settle failed",
                    json_pack("{s:s,s:s,s:s}", "task", k->id, "action", what, "error", queue_last_error(c)));
        task_free(k);
    }
    if (na > 0 && !*broken) {
        int rc = queue_ack_many(c, acks, (size_t)na, ttl, status);
        if (rc == QUEUE_EREDIS) *broken = 1;
        else if (rc)
            api_log(API_LOG_WARN, "ack failed", json_pack("{s:s,s:s}", "queue", q->name, "error", queue_last_error(c)));
    }
    for (int i = 0; i < na; i++) {
        if (*broken) { /* keep it to ack after the reconnect */
            if (!acked[i]->job) acked[i]->refuse_json = bodies[i];
            else free(bodies[i]);
            acked[i]->next = NULL;
            *left_tail = acked[i];
            left_tail = &acked[i]->next;
        } else {
            free(bodies[i]);
            task_free(acked[i]);
        }
    }
    if (expired && !*broken) {
        queue_reap_t rp;
        queue_reap(c, 1, 0, &rp); /* end them expired now, not at the next sweep */
    }
    free(acks), free(bodies), free(acked), free(status);
    if (na || expired) wake_waiters(q->t);
    return left;
}

static void *completion_main(void *arg) {
    task_queue_t *q = arg;
    queue_conn_t *c = NULL;
    task_t *pending = NULL; /* taken but not yet settled (Redis down) */
    for (;;) {
        /* connected before work arrives, so readiness reflects Redis; at stop
         * with Redis down the rest is dropped: the leases run out and the
         * reaper hands the tasks out again */
        if (!c && !(c = connect_retry(q, &q->completion_up, &q->stop, "completion"))) break;
        pthread_mutex_lock(&q->mu);
        while (!q->done_head && !pending && !atomic_load(&q->stop)) pthread_cond_wait(&q->cv, &q->mu);
        task_t *list = q->done_head;
        q->done_head = q->done_tail = NULL;
        int stop = atomic_load(&q->stop);
        pthread_mutex_unlock(&q->mu);
        if (pending) { /* older first */
            task_t *tail = pending;
            while (tail->next) tail = tail->next;
            tail->next = list;
            list = pending;
            pending = NULL;
        }
        if (!list) {
            if (stop) break;
            continue;
        }
        int broken = 0;
        pending = settle(q, c, list, &broken);
        if (broken) {
            conn_broken(&c, &q->completion_up, q, "completion");
            sleep_ms(100);
        }
    }
    while (pending) {
        task_t *next = pending->next;
        task_free(pending);
        pending = next;
    }
    queue_close(c);
    return NULL;
}

/* ---------------------------------------------------------------- route connections */

static task_queue_t *find_queue(api_tasks_t *t, const char *name) {
    if (!name) return &t->queues[0];
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->queues[i].name, name)) return &t->queues[i];
    return NULL;
}

static queue_conn_t *pool_get(api_tasks_t *t, task_queue_t *q, char *err, size_t errlen) {
    pthread_mutex_lock(&t->pool_mu);
    for (int i = t->n_pool - 1; i >= 0; i--)
        if (!strcmp(t->pool_q[i], q->name)) {
            queue_conn_t *c = t->pool[i];
            t->pool[i] = t->pool[t->n_pool - 1];
            memcpy(t->pool_q[i], t->pool_q[t->n_pool - 1], QUEUE_NAME_MAX);
            t->n_pool--;
            pthread_mutex_unlock(&t->pool_mu);
            return c;
        }
    pthread_mutex_unlock(&t->pool_mu);
    queue_config_t qc = q->qc;
    qc.reconnect_ms = 300; /* a route must not hang on a dead Redis */
    qc.connect_timeout_ms = 300;
    return queue_connect(&qc, err, errlen);
}

static void pool_put(api_tasks_t *t, task_queue_t *q, queue_conn_t *c, int rc) {
    if (rc == QUEUE_EREDIS) {
        queue_close(c);
        return;
    }
    pthread_mutex_lock(&t->pool_mu);
    if (t->n_pool < POOL_MAX) {
        t->pool[t->n_pool] = c;
        snprintf(t->pool_q[t->n_pool], QUEUE_NAME_MAX, "%s", q->name);
        t->n_pool++;
        c = NULL;
    }
    pthread_mutex_unlock(&t->pool_mu);
    queue_close(c);
}

/* ---------------------------------------------------------------- routes */

static int need_tasks(api_req_t *r, api_tasks_t **t) {
    *t = api_srv_tasks(r->srv);
    if (!*t) {
        api_respond_error(r, 503, "queue_disabled", NULL, "the Redis task queue is off (--redis none)");
        return -1;
    }
    if (!api_tasks_up(*t)) { /* do not hang an HTTP thread on a dead Redis */
        api_respond_error(r, 503, "queue_unavailable", NULL, "Redis is unreachable (reconnecting)");
        return -1;
    }
    return 0;
}

int api_route_tasks_post(api_req_t *r) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)",
                                 je.text, je.position);
    if (!json_is_object(body)) {
        json_decref(body);
        return api_respond_error(r, 400, "invalid_json", NULL, "request body must be a JSON object");
    }
    const char *op = "embed", *qname = NULL;
    char dedup_buf[201], *dedup = NULL, op_buf[32] = "embed";
    int priority = 0;
    int64_t deadline_ms = 0;
    json_t *v;
    batcher_op_t bop;
    unsigned st = 0;
    const char *code = NULL, *param = NULL;
    char msg[512] = "";
    if ((v = json_object_get(body, "op")) && !json_is_null(v)) {
        if (!json_is_string(v) || batcher_op_parse(json_string_value(v), &bop))
            st = 400, code = "invalid_value", param = "op", snprintf(msg, sizeof msg, "op must be \"embed\" or \"expand\"");
        else op = strcpy(op_buf, batcher_op_name(bop));
    }
    if (!st && (v = json_object_get(body, "priority")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > QUEUE_PRIORITY_MAX)
            st = 400, code = "invalid_value", param = "priority",
            snprintf(msg, sizeof msg, "priority must be an integer from 0 to %d", QUEUE_PRIORITY_MAX);
        else priority = (int)json_integer_value(v);
    }
    if (!st && (v = json_object_get(body, "deadline_ms")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            st = 400, code = "invalid_value", param = "deadline_ms", snprintf(msg, sizeof msg, "deadline_ms must be a positive integer");
        else deadline_ms = json_integer_value(v);
    }
    if (!st && (v = json_object_get(body, "dedup_key")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
            st = 400, code = "invalid_value", param = "dedup_key", snprintf(msg, sizeof msg, "dedup_key must be a string of 1..200 bytes");
        else dedup = strcpy(dedup_buf, json_string_value(v));
    }
    if (!st && (v = json_object_get(body, "queue")) && !json_is_null(v)) {
        qname = json_is_string(v) ? json_string_value(v) : "";
    }
    task_queue_t *q = st ? NULL : find_queue(t, qname);
    qname = q ? q->name : qname; /* body is freed below */
    if (!st && !q) st = 404, code = "queue_not_found", param = "queue", snprintf(msg, sizeof msg, "this server serves no queue '%s'", qname);
    if (st) {
        json_decref(body);
        return api_respond_error(r, st, code, param, "%s", msg);
    }
    /* validate now (400/404/413/422 here rather than a failed task later) */
    api_err_t e;
    api_embed_job_t *j = NULL;
    batcher_op_parse(op, &bop);
    if (task_job_parse(bop)(api_srv_registry(r->srv), api_srv_config(r->srv), body, &j, &e)) {
        json_decref(body);
        return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    }
    snprintf(r->model_name, sizeof r->model_name, "%s", j->model_name);
    api_ctl_charge_tokens(r, j->prompt_tokens);
    /* inputs: the op's options that travel with the task */
    json_t *inputs = json_object();
    const char *keep[] = {"input", "encoding_format", "dimensions", "truncate", "terms", "k", "min_score",
                          "exclude_input"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if ((v = json_object_get(body, keep[i]))) json_object_set(inputs, keep[i], v);
    char *inputs_json = json_dumps(inputs, JSON_COMPACT);
    json_decref(inputs);
    char err[512];
    char *payload = inputs_json ? queue_payload_build(j->model_name, op, inputs_json, r->request_id,
                                                      r->traceparent[0] ? r->traceparent : NULL,
                                                      err, sizeof err)
                                : NULL;
    api_embed_job_free(j);
    free(inputs_json);
    json_decref(body);
    if (!payload) return api_respond_error(r, 400, "invalid_input", NULL, "%s", err);
    queue_conn_t *c = pool_get(t, q, err, sizeof err);
    if (!c) {
        free(payload);
        return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", q->name, err);
    }
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload), .priority = priority,
                         .ttl_ms = deadline_ms, .dedup_key = dedup};
    char id[QUEUE_ID_MAX];
    int outcome = 0;
    int rc = queue_enqueue(c, &task, id, &outcome);
    free(payload);
    snprintf(err, sizeof err, "%s", rc ? queue_last_error(c) : "");
    pool_put(t, q, c, rc);
    if (rc == QUEUE_EBUSY) return api_respond_error(r, 429, "queue_full", NULL, "Redis queue %s is full: %s", q->name, err);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "enqueue into %s failed: %s", q->name, err);
    return api_respond_json(r, 202, json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", id, "object", "task", "queue", q->name,
                                              "state", outcome == QUEUE_ENQ_DEDUPED ? "deduplicated" : "queued",
                                              "deduplicated", outcome == QUEUE_ENQ_DEDUPED));
}

/* The answer for a task: state, result (parsed), error, times. */
static int respond_task(api_req_t *r, const char *id, task_queue_t *q, int rc, queue_info_t *info) {
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, q->name);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s: %s", q->name, queue_strerror(rc));
    json_t *res = json_null();
    if (info->result) {
        res = json_loadb(info->result, info->result_len, JSON_DECODE_ANY, NULL);
        if (!res) res = json_stringn(info->result, info->result_len);
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:I,s:o,s:o}", "id", id, "object", "task", "queue", q->name,
                          "state", queue_state_name(info->state), "attempts", info->attempts, "max_attempts",
                          info->max_attempts, "priority", info->priority, "enqueued_at_ms", (json_int_t)info->enqueued_ms,
                          "result", res, "error", info->error ? json_string(info->error) : json_null());
    if (info->finished_ms) json_object_set_new(o, "finished_at_ms", json_integer(info->finished_ms));
    if (info->cancel_requested) json_object_set_new(o, "cancel_requested", json_true());
    /* the ids the task was enqueued with, so a caller can find its log lines */
    queue_payload_t p;
    char perr[128];
    if (info->payload && !queue_payload_parse(info->payload, info->payload_len, &p, perr, sizeof perr)) {
        if (p.request_id) json_object_set_new(o, "request_id", json_string(p.request_id));
        if (p.traceparent) json_object_set_new(o, "traceparent", json_string(p.traceparent));
        queue_payload_clear(&p);
    }
    return api_respond_json(r, 200, o);
}

static int waiter_finish(api_req_t *r) {
    waiter_t *w = r->work;
    return respond_task(r, w->id, w->q, w->rc, &w->info);
}

static void waiter_cleanup(api_req_t *r) {
    waiter_t *w = r->work;
    if (w) queue_info_clear(&w->info);
    free(w);
    r->work = NULL;
}

int api_route_tasks_get(api_req_t *r, const char *id) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    task_queue_t *q = find_queue(t, api_query(r, "queue"));
    if (!q) return api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", api_query(r, "queue"));
    double wait_s = 0;
    const char *ws = api_query(r, "wait");
    if (ws) {
        char *end;
        wait_s = strtod(ws, &end);
        if (end == ws || *end || !(wait_s >= 0) || wait_s > 300)
            return api_respond_error(r, 400, "invalid_value", "wait", "wait must be seconds from 0 to 300");
    }
    char err[512];
    queue_conn_t *c = pool_get(t, q, err, sizeof err);
    if (!c) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", q->name, err);
    queue_info_t info;
    memset(&info, 0, sizeof info);
    int rc = queue_get(c, id, &info);
    pool_put(t, q, c, rc);
    if (rc || wait_s <= 0 || queue_state_is_terminal(info.state)) {
        int out = respond_task(r, id, q, rc, &info);
        queue_info_clear(&info);
        return out;
    }
    queue_info_clear(&info);
    /* long-poll: hand it to the waiter thread and suspend */
    waiter_t *w = calloc(1, sizeof *w);
    if (!w) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    w->r = r;
    w->q = q;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->until_ns = batcher_now_ns() + (int64_t)(wait_s * 1e9);
    r->work = w;
    r->finish = waiter_finish;
    r->cleanup = waiter_cleanup;
    pthread_mutex_lock(&t->wmu);
    w->next = t->waiters;
    t->waiters = w;
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->wmu);
    return API_ASYNC;
}

int api_route_tasks_delete(api_req_t *r, const char *id) {
    api_tasks_t *t;
    if (need_tasks(r, &t)) return API_DONE;
    task_queue_t *q = find_queue(t, api_query(r, "queue"));
    if (!q) return api_respond_error(r, 404, "queue_not_found", "queue", "this server serves no queue '%s'", api_query(r, "queue"));
    char err[512];
    queue_conn_t *c = pool_get(t, q, err, sizeof err);
    if (!c) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s unreachable: %s", q->name, err);
    int outcome = 0;
    int rc = queue_cancel(c, id, &outcome);
    pool_put(t, q, c, rc);
    if (rc == QUEUE_ENOTFOUND) return api_respond_error(r, 404, "task_not_found", NULL, "no task %s in queue %s", id, q->name);
    if (rc == QUEUE_ESTATE) return api_respond_error(r, 409, "task_finished", NULL, "task %s has already ended", id);
    if (rc) return api_respond_error(r, 503, "queue_unavailable", NULL, "Redis queue %s: %s", q->name, queue_strerror(rc));
    /* a task we hold right now: drop it before compute if it has not started */
    if (outcome == QUEUE_CANCEL_PENDING) {
        uint64_t item = 0;
        pthread_mutex_lock(&q->mu);
        for (task_t *k = q->held; k; k = k->next)
            if (!strcmp(k->id, id)) {
                k->cancel_requested = 1;
                item = k->job->item.id;
            }
        pthread_mutex_unlock(&q->mu);
        if (item) batcher_cancel(api_srv_batcher(r->srv), item);
    }
    return api_respond_json(r, outcome == QUEUE_CANCELLED_NOW ? 200 : 202,
                            json_pack("{s:s,s:s,s:s}", "id", id, "object", "task", "state",
                                      outcome == QUEUE_CANCELLED_NOW ? "cancelled" : "cancelling"));
}

/* ---------------------------------------------------------------- waiter */

static void *waiter_main(void *arg) {
    api_tasks_t *t = arg;
    queue_conn_t *conns[16] = {0};
    pthread_mutex_lock(&t->wmu);
    for (;;) {
        int final = t->wstop; /* shutting down: one last look, then answer everyone */
        waiter_t *list = t->waiters;
        t->waiters = NULL;
        pthread_mutex_unlock(&t->wmu);
        waiter_t *keep = NULL;
        int64_t now = final ? INT64_MAX : batcher_now_ns();
        for (waiter_t *w = list, *next; w; w = next) {
            next = w->next;
            int qi = (int)(w->q - t->queues);
            if (qi < 16 && !conns[qi]) {
                char err[512];
                conns[qi] = pool_get(t, w->q, err, sizeof err);
            }
            queue_conn_t *c = qi < 16 ? conns[qi] : NULL;
            queue_info_clear(&w->info);
            w->rc = c ? queue_get(c, w->id, &w->info) : QUEUE_EREDIS;
            if (w->rc == QUEUE_EREDIS && c) {
                queue_close(c);
                conns[qi] = NULL;
            }
            if (w->rc || queue_state_is_terminal(w->info.state) || now >= w->until_ns) {
                api_req_wake(w->r); /* the request owns w from here */
            } else {
                w->next = keep;
                keep = w;
            }
        }
        pthread_mutex_lock(&t->wmu);
        /* put the still-waiting back in front of the newcomers */
        while (keep) {
            waiter_t *next = keep->next;
            keep->next = t->waiters;
            t->waiters = keep;
            keep = next;
        }
        if (final) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WAIT_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&t->wcv, &t->wmu, &ts);
    }
    pthread_mutex_unlock(&t->wmu);
    for (int i = 0; i < 16; i++) queue_close(conns[i]);
    return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

int api_tasks_start(api_serve_t *s, api_tasks_t **out, char *err, size_t errlen) {
    *out = NULL;
    const api_config_t *cfg = api_srv_config(s);
    api_tasks_t *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->srv = s;
    pthread_mutex_init(&t->pool_mu, NULL);
    pthread_mutex_init(&t->wmu, NULL);
    pthread_cond_init(&t->wcv, NULL);
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(t->worker, sizeof t->worker, "%s:%d", host, (int)getpid());
    /* one task_queue per name in cfg->queue */
    int n = 1;
    for (const char *p = cfg->queue; *p; p++) n += *p == ',';
    t->queues = calloc((size_t)n, sizeof *t->queues);
    if (!t->queues) goto oom;
    for (const char *p = cfg->queue; *p || t->n == 0;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= QUEUE_NAME_MAX) {
            snprintf(err, errlen, "queue names must be 1..%d characters (got '%s')", QUEUE_NAME_MAX - 1, cfg->queue);
            api_tasks_destroy(t);
            return -1;
        }
        task_queue_t *q = &t->queues[t->n++];
        q->t = t;
        memcpy(q->name, p, len);
        q->name[len] = '\0';
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->cv, NULL);
        queue_config_defaults(&q->qc);
        q->qc.url = cfg->redis;
        q->qc.name = q->name;
        q->qc.result_ttl_ms = (int64_t)cfg->result_ttl_s * 1000;
        q->qc.wait_replicas = cfg->redis_wait_replicas;
        q->qc.wait_timeout_ms = cfg->redis_wait_timeout_ms;
        if (cfg->task_signing_key[0]) { /* enqueue signs; the intake refuses unsigned or forged tasks */
            q->qc.signing_key = (const unsigned char *)cfg->task_signing_key;
            q->qc.signing_key_len = strlen(cfg->task_signing_key);
        }
        p += len + (p[len] == ',');
        if (!*p) break;
    }
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
        if (pthread_create(&q->intake_thr, NULL, intake_main, q)) goto nothread;
        q->intake_started = 1;
        if (pthread_create(&q->completion_thr, NULL, completion_main, q)) goto nothread;
        q->completion_started = 1;
    }
    if (pthread_create(&t->waiter_thr, NULL, waiter_main, t)) goto nothread;
    t->waiter_started = 1;
    *out = t;
    return 0;
oom:
    snprintf(err, errlen, "out of memory starting the Redis intake");
    api_tasks_destroy(t);
    return -1;
nothread:
    snprintf(err, errlen, "cannot start the Redis intake threads");
    api_tasks_destroy(t);
    return -1;
}

void api_tasks_stop_intake(api_tasks_t *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) atomic_store(&t->queues[i].stop_intake, 1);
    if (t->waiter_started) { /* long-polls get their answer now */
        pthread_mutex_lock(&t->wmu);
        t->wstop = 1;
        pthread_cond_signal(&t->wcv);
        pthread_mutex_unlock(&t->wmu);
        pthread_join(t->waiter_thr, NULL);
        t->waiter_started = 0;
    }
}

void api_tasks_destroy(api_tasks_t *t) {
    if (!t) return;
    api_tasks_stop_intake(t);
    /* Called after the batcher stopped, so every task we held is on a done
     * list: the intake may go now (also out of a reconnect loop while Redis
     * is down), and completion settles what is left before it exits. */
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
        pthread_mutex_lock(&q->mu);
        atomic_store(&q->stop, 1);
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
        if (q->intake_started) pthread_join(q->intake_thr, NULL);
        if (q->completion_started) pthread_join(q->completion_thr, NULL);
    }
    for (int i = 0; i < t->n; i++) {
        pthread_mutex_destroy(&t->queues[i].mu);
        pthread_cond_destroy(&t->queues[i].cv);
    }
    for (int i = 0; i < t->n_pool; i++) queue_close(t->pool[i]);
    free(t->queues);
    pthread_mutex_destroy(&t->pool_mu);
    pthread_mutex_destroy(&t->wmu);
    pthread_cond_destroy(&t->wcv);
    free(t);
}

int api_tasks_up(api_tasks_t *t) {
    for (int i = 0; i < t->n; i++)
        if (!api_tasks_queue_up(t, i, NULL)) return 0;
    return 1;
}

int api_tasks_queue_up(api_tasks_t *t, int i, char *name) {
    if (!t || i < 0 || i >= t->n) return -1;
    if (name) snprintf(name, QUEUE_NAME_MAX, "%s", t->queues[i].name);
    return atomic_load(&t->queues[i].intake_up) && atomic_load(&t->queues[i].completion_up);
}

int api_tasks_queue_count(api_tasks_t *t) { return t ? t->n : 0; }

int api_tasks_queue_stats(api_tasks_t *t, int i, char *name, queue_stats_t *out) {
    if (!t || i < 0 || i >= t->n) return -1;
    task_queue_t *q = &t->queues[i];
    snprintf(name, QUEUE_NAME_MAX, "%s", q->name);
    char err[512];
    queue_conn_t *c = pool_get(t, q, err, sizeof err);
    if (!c) return -1;
    int rc = queue_stats(c, out);
    pool_put(t, q, c, rc);
    return rc ? -1 : 0;
}
