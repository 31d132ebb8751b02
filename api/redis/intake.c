/* api/redis/intake.c - the Redis intake: lease -> job -> batcher -> ack.
 *
 * Per queue two threads, each with its own Redis connection:
 *   intake     leases as many tasks as the batcher has room for, decodes them
 *              through the job layer (api/jobs.h) and submits them; renews the
 *              leases of every task it holds (waiting or computing) every
 *              lease/3; cancels work whose lease was lost or whose
 *              cancellation was requested; reaps expired leases every second.
 *   completion takes finished tasks from the batcher's callbacks and, in
 *              batches, acks results (queue_ack_many), fails errors, and hands
 *              back leases of work not done (expired in our queue, shutdown).
 * Redis down or answering errors (out of memory, read-only...): both back
 * off with jitter after every failed call (100 ms doubling to 5 s), warn at
 * most once per 10 s per thread with a count of the lines held back, and
 * api_tasks_up says so; a task's outcome line is written once.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/gen_job.h"
#include "api/jobs.h"
#include "api/log.h"
#include "api/redis/tasks_internal.h"
#include "kernels/util.h"

#define LEASE_BATCH 64   /* tasks per lease call at most */
#define IDLE_POLL_MS 20  /* intake poll interval while Redis has nothing */

void api_task_free(task_t *k) {
    if (!k) return;
    api_job_free(k->job);
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
        if (!logged++) /* a queue of another protocol version is refused, not unreachable */
            api_log(strstr(err, "speaks protocol") ? API_LOG_ERROR : API_LOG_WARN,
                    strstr(err, "speaks protocol") ? "queue refused, retrying" : "redis unreachable, retrying",
                    json_pack("{s:s,s:s,s:s}", "queue", q->name, "thread", who, "error", err));
        for (int waited = 0; waited < backoff && !atomic_load(stop); waited += 20) util_sleep_ms(20);
        if (backoff < 2000) backoff *= 2;
    }
    return NULL;
}

/* A thread's state across Redis errors of any kind (down, out of memory,
 * read-only replica...): the next wait, and the warnings held back. */
typedef struct {
    int backoff_ms;       /* next wait; 0 after a success */
    unsigned seed;        /* jitter */
    int64_t log_next_ns;  /* no warning before this... */
    long held_back;       /* ...and how many were not written since the last */
} trouble_t;

#define TROUBLE_MIN_MS 100
#define TROUBLE_MAX_MS 5000
#define TROUBLE_LOG_EVERY_NS 10000000000LL /* one warning per 10 s per thread, with a count */

static void trouble_init(trouble_t *tr, const void *salt) {
    memset(tr, 0, sizeof *tr);
    tr->seed = (unsigned)(batcher_now_ns() ^ (int64_t)(uintptr_t)salt);
}

/* A success: the next error waits from the start again. */
static void trouble_over(trouble_t *tr) { tr->backoff_ms = 0; }

/* Wait a jittered, doubling delay (half to all of it), waking early on stop. */
static void trouble_wait(trouble_t *tr, atomic_int *stop) {
    int ms = tr->backoff_ms ? tr->backoff_ms : TROUBLE_MIN_MS;
    int wait = ms / 2 + (int)(rand_r(&tr->seed) % (unsigned)(ms / 2 + 1));
    for (int waited = 0; waited < wait && !atomic_load(stop); waited += 20) util_sleep_ms(20);
    tr->backoff_ms = ms * 2 < TROUBLE_MAX_MS ? ms * 2 : TROUBLE_MAX_MS;
}

/* A warning, unless one went out less than TROUBLE_LOG_EVERY_NS ago; the
 * next one that goes out says how many were held back ("repeated"). */
static void trouble_log(trouble_t *tr, const char *msg, json_t *fields) {
    int64_t now = batcher_now_ns();
    if (now < tr->log_next_ns) {
        tr->held_back++;
        json_decref(fields);
        return;
    }
    if (tr->held_back) json_object_set_new(fields, "repeated", json_integer(tr->held_back));
    tr->held_back = 0;
    tr->log_next_ns = now + TROUBLE_LOG_EVERY_NS;
    api_log(API_LOG_WARN, msg, fields);
}

/* A call failed: warn (collapsed), drop the connection, back off before the next try. */
static void conn_broken(queue_conn_t **c, atomic_int *up, task_queue_t *q, const char *who, trouble_t *tr,
                        atomic_int *stop) {
    trouble_log(tr, "redis call failed",
                json_pack("{s:s,s:s,s:s}", "queue", q->name, "thread", who, "error", queue_last_error(*c)));
    queue_close(*c);
    *c = NULL;
    atomic_store(up, 0);
    trouble_wait(tr, stop);
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

/* A generate task's text as it comes (scheduler thread: only queue it). */
static void stream_listen(void *user, api_job_t *j, int index, const char *text, size_t len, const char *finish) {
    (void)j;
    task_t *k = user;
    task_queue_t *q = k->q;
    stream_entry_t *e = calloc(1, sizeof *e);
    if (!e) return; /* the stream misses a piece; the result still has it all */
    json_t *o = finish ? json_pack("{s:i,s:s}", "index", index, "finish_reason", finish)
                       : json_pack("{s:i,s:s%}", "index", index, "text", text, len);
    e->value = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!e->value) {
        free(e);
        return;
    }
    e->len = strlen(e->value);
    e->field = finish ? "done" : "delta";
    memcpy(e->id, k->id, sizeof e->id);
    e->token = k->token;
    pthread_mutex_lock(&q->mu);
    if (q->stream_tail) q->stream_tail->next = e;
    else q->stream_head = e;
    q->stream_tail = e;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Straight to the completion thread (refused before the batcher). */
static void task_to_done(task_queue_t *q, task_t *k) {
    pthread_mutex_lock(&q->mu);
    done_push(q, k);
    pthread_mutex_unlock(&q->mu);
}

/* ---------------------------------------------------------------- intake */

/* Decode one leased task and hand it to the batcher (or straight to completion). */
static void intake_one(task_queue_t *q, queue_lease_t *l) {
    api_tasks_t *t = q->t;
    task_t *k = calloc(1, sizeof *k);
    if (!k) return; /* the lease runs out and the reaper hands the task out again */
    k->q = q;
    memcpy(k->id, l->id, sizeof k->id);
    k->token = l->token;
    k->attempt = l->attempt;
    k->max_attempts = l->max_attempts;
    queue_payload_t p;
    char err[512];
    api_err_t e = {0};
    /* a task is held to what an HTTP request may carry; Redis withholds a bigger payload (queue_lease) */
    size_t cap = t->cfg->max_body_bytes, size = l->payload_withheld ? l->payload_withheld : l->payload_len;
    if (cap && size > cap) {
        snprintf(err, sizeof err, "task payload of %zu bytes is over the limit of %zu bytes (--max-body-bytes)",
                 size, cap);
        k->refuse_status = 413;
        k->refuse_json = api_error_json(413, "payload_too_large", NULL, err, 1);
        task_to_done(q, k);
        return;
    }
    if (queue_payload_parse(l->payload, l->payload_len, &p, err, sizeof err)) {
        k->refuse_status = 400;
        k->refuse_json = api_error_json(400, "invalid_payload", NULL, err, 1);
        task_to_done(q, k);
        return;
    }
    const api_job_type_t *type = api_jobs_find(p.op);
    json_t *in = json_loads(p.inputs_json, JSON_DECODE_ANY, NULL);
    json_t *body = NULL;
    if (!type) {
        snprintf(err, sizeof err, "unknown op '%s' (this server runs: %s)", p.op, api_jobs_names());
        k->refuse_status = 400;
        k->refuse_json = api_error_json(400, "unknown_op", "op", err, 1);
    } else {
        /* inputs: the input value itself (embed: "input", expand: "terms"), or an
         * object of the op's options holding it */
        body = json_is_object(in) ? json_deep_copy(in) : json_pack("{s:O}", type->input_field, in ? in : json_null());
        json_object_set_new(body, "model", json_string(p.model));
        json_object_del(body, "deadline_ms");
        if (api_jobs_parse(t->jobs, type, body, &k->job, &e)) {
            k->refuse_status = (int)e.status;
            k->refuse_json = api_error_json(e.status, e.code, e.param, e.message, 1);
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
        int64_t left = l->deadline_ms - util_wall_ms();
        it->deadline_ns = batcher_now_ns() + (left > 0 ? left : 0) * 1000000LL;
        if (left <= 0) it->deadline_ns = batcher_now_ns(); /* expires at once, without compute */
    }
    snprintf(it->request_id, sizeof it->request_id, "%s", p.request_id ? p.request_id : k->id);
    if (p.traceparent && api_traceparent_valid(p.traceparent))
        snprintf(it->traceparent, sizeof it->traceparent, "%s", p.traceparent);
    queue_payload_clear(&p);
    it->done = task_done;
    it->user = k;
    if (type == &api_gen_task_job) api_gen_task_listen(k->job, stream_listen, k);
    pthread_mutex_lock(&q->mu);
    k->next = q->held;
    if (q->held) q->held->prev = k;
    q->held = k;
    q->n_held++;
    pthread_mutex_unlock(&q->mu);
    int rc = api_jobs_submit(t->jobs, t->bat, k->job, err, sizeof err);
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
    int *status = calloc((size_t)n, sizeof *status);
    if (!refs || !ids || !status) {
        pthread_mutex_unlock(&q->mu);
        free(refs), free(ids), free(status);
        return 0;
    }
    int i = 0;
    for (task_t *k = q->held; k && i < n; k = k->next, i++) {
        memcpy(ids[i], k->id, QUEUE_ID_MAX);
        refs[i].id = ids[i];
        refs[i].token = k->token;
    }
    pthread_mutex_unlock(&q->mu);
    int lease_ms = q->t->cfg->lease_ms;
    int rc = queue_renew(c, refs, (size_t)n, lease_ms > 0 ? lease_ms : API_DEFAULT_LEASE_MS, status);
    if (rc == 0) {
        for (int j = 0; j < n; j++) {
            if (status[j] == QUEUE_RENEWED) continue;
            /* mark it, then drop its work (the batcher's if not started, or its generation) */
            uint64_t work[API_TASKS_CANCEL_IDS];
            int nw = 0;
            const api_job_type_t *type = NULL;
            pthread_mutex_lock(&q->mu);
            for (task_t *k = q->held; k; k = k->next)
                if (!strcmp(k->id, ids[j])) {
                    if (status[j] == QUEUE_LOST) k->lost = 1;
                    else k->cancel_requested = 1;
                    type = k->job->type;
                    nw = api_jobs_cancel_ids(k->job, work, API_TASKS_CANCEL_IDS);
                }
            pthread_mutex_unlock(&q->mu);
            for (int w = 0; w < nw; w++) api_jobs_cancel(q->t->jobs, q->t->bat, type, work[w]);
        }
    }
    free(refs), free(ids), free(status);
    return rc;
}

/* Leases taken but not decoded, back to ready in one round trip. */
static int hand_back(queue_conn_t *c, const queue_lease_t *l, int n) {
    queue_ref_t refs[LEASE_BATCH];
    int status[LEASE_BATCH];
    for (int i = 0; i < n; i++) refs[i] = (queue_ref_t){l[i].id, l[i].token};
    return queue_release(c, refs, (size_t)n, status);
}

void *api_tasks_intake_main(void *arg) {
    task_queue_t *q = arg;
    const api_config_t *cfg = q->t->cfg;
    int64_t lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : API_DEFAULT_LEASE_MS;
    int64_t renew_every_ns = lease_ms * 1000000LL / 3, next_renew = 0, next_reap = 0;
    queue_lease_t leases[LEASE_BATCH];
    queue_conn_t *c = NULL;
    trouble_t tr;
    trouble_init(&tr, q);
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
                conn_broken(&c, &q->intake_up, q, "intake", &tr, &q->stop);
                continue;
            }
            next_renew = now + renew_every_ns;
        }
        if (now >= next_reap && !stopping) {
            queue_reap_t rp;
            if (queue_reap(c, 0, 0, &rp) == QUEUE_EREDIS) {
                conn_broken(&c, &q->intake_up, q, "intake", &tr, &q->stop);
                continue;
            }
            next_reap = now + 1000000000LL;
        }
        int got = 0;
        int room = stopping ? 0 : batcher_room(q->t->bat, -1);
        if (room > LEASE_BATCH) room = LEASE_BATCH;
        if (room > 0) {
            int rc = queue_lease(c, room, q->t->worker, lease_ms, leases, &got);
            if (rc == QUEUE_EREDIS) {
                conn_broken(&c, &q->intake_up, q, "intake", &tr, &q->stop);
                continue;
            }
            if (rc) {
                trouble_log(&tr, "lease failed", json_pack("{s:s,s:s}", "queue", q->name, "error", queue_last_error(c)));
                trouble_wait(&tr, &q->stop);
                got = 0;
            } else {
                trouble_over(&tr);
            }
            atomic_store(&q->intake_up, 1);
            /* decoding a big task takes a while: a shutdown stops between tasks and
             * hands the rest of the batch back at once, never computed, attempt not counted */
            int i = 0;
            for (; i < got && !atomic_load(&q->stop_intake); i++) intake_one(q, &leases[i]);
            if (i < got && hand_back(c, leases + i, got - i) == QUEUE_EREDIS) {
                queue_lease_clear(leases, (size_t)got);
                conn_broken(&c, &q->intake_up, q, "intake", &tr, &q->stop);
                continue;
            }
            queue_lease_clear(leases, (size_t)got);
        }
        if (got == 0) {
            /* nothing to take (or no room): wait a little, or until held work ends */
            pthread_mutex_lock(&q->mu);
            struct timespec ts;
            util_deadline(&ts, CLOCK_REALTIME, IDLE_POLL_MS * 1000000LL);
            pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            pthread_mutex_unlock(&q->mu);
        }
    }
    queue_close(c);
    return NULL;
}

/* ---------------------------------------------------------------- completion */

/* One line per finished task: what became of it, with its ids and times. */
static void log_task(task_queue_t *q, task_t *k, batcher_item_t *it) {
    if (k->logged || api_log_level() > API_LOG_INFO) return;
    k->logged = 1;
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
        if (k->job->type == &api_gen_task_job) { /* token counts, TTFT and finish reason */
            api_gen_usage_t u;
            double ttft;
            const char *fin;
            api_gen_task_counts(k->job, &u, &ttft, &fin);
            json_object_set_new(f, "prompt_tokens", json_integer(u.prompt_tokens));
            json_object_set_new(f, "completion_tokens", json_integer(u.completion_tokens));
            json_object_set_new(f, "cached_tokens", json_integer(u.cached_tokens));
            if (ttft >= 0) json_object_set_new(f, "ttft_s", json_real(ttft));
            json_object_set_new(f, "finish_reason", json_string(fin));
        }
    } else {
        json_object_set_new(f, "outcome", json_string("refused"));
        json_object_set_new(f, "status", json_integer(k->refuse_status));
    }
    api_log(API_LOG_INFO, "task", f);
}

/* A failed attempt: its error, which attempt of how many, and what became
 * of the task (retried after a delay, moved to the dead-letter queue, or
 * cancelled) - at warn, so it shows at the default log level. */
static void log_failure(task_queue_t *q, task_t *k, const char *why, int outcome, int64_t delay_ms) {
    json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:i,s:s}", "queue", q->name, "task", k->id, "error", why, "attempt",
                          k->attempt, "max_attempts", k->max_attempts, "next",
                          outcome == QUEUE_FAIL_DEAD ? "dlq" : outcome == QUEUE_FAIL_CANCELLED ? "cancelled" : "retry");
    if (outcome == QUEUE_FAIL_RETRY) json_object_set_new(f, "retry_in_ms", json_integer((json_int_t)delay_ms));
    if (k->job && k->job->item.request_id[0]) json_object_set_new(f, "request_id", json_string(k->job->item.request_id));
    api_log(API_LOG_WARN, outcome == QUEUE_FAIL_DEAD ? "task failed, moved to the dead-letter queue" : "task failed",
            f);
}

/* Settle a list of finished tasks: acks in one round trip, then fails and
 * hand-backs. Returns the tasks it could not settle (Redis down). */
static task_t *settle(task_queue_t *q, queue_conn_t *c, task_t *list, int *broken, trouble_t *tr) {
    const api_config_t *cfg = q->t->cfg;
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
            bodies[na] = api_job_result_json(k->job, &len);
            if (!bodies[na]) {
                rc = queue_fail(c, k->id, k->token, "out of memory writing the result", NULL, NULL);
                what = "failed";
            } else {
                acks[na] = (queue_ack_t){k->id, k->token, bodies[na], len};
                acked[na++] = k;
                continue;
            }
        } else {
            const char *why = it->err[0] ? it->err : "failed";
            int outcome = -1;
            int64_t delay = 0;
            rc = queue_fail(c, k->id, k->token, why, &outcome, &delay);
            what = "failed";
            if (!rc) log_failure(q, k, why, outcome, delay);
        }
        if (rc == QUEUE_EREDIS) {
            *broken = 1;
            *left_tail = k;
            left_tail = &k->next;
            continue;
        }
        if (rc && rc != QUEUE_ESTALE)
            trouble_log(tr, "task settle failed",
                        json_pack("{s:s,s:s,s:s}", "task", k->id, "action", what, "error", queue_last_error(c)));
        api_task_free(k);
    }
    if (na > 0 && !*broken) {
        int rc = queue_ack_many(c, acks, (size_t)na, ttl, status);
        if (rc == QUEUE_EREDIS) *broken = 1;
        else if (rc)
            trouble_log(tr, "ack failed", json_pack("{s:s,s:s}", "queue", q->name, "error", queue_last_error(c)));
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
            api_task_free(acked[i]);
        }
    }
    if (expired && !*broken) {
        queue_reap_t rp;
        queue_reap(c, 1, 0, &rp); /* end them expired now, not at the next sweep */
    }
    free(acks), free(bodies), free(acked), free(status);
    if (na || expired) api_tasks_wake_waiters(q->t);
    return left;
}

/* Append the queued token-stream entries (one round trip); 0, or QUEUE_EREDIS
 * with the entries kept for after the reconnect. */
static int flush_streams(task_queue_t *q, queue_conn_t *c) {
    pthread_mutex_lock(&q->mu);
    stream_entry_t *list = q->stream_head;
    q->stream_head = q->stream_tail = NULL;
    pthread_mutex_unlock(&q->mu);
    if (!list) return 0;
    size_t n = 0;
    for (stream_entry_t *e = list; e; e = e->next) n++;
    queue_stream_entry_t *qe = calloc(n, sizeof *qe);
    int rc = 0;
    if (qe) {
        size_t i = 0;
        for (stream_entry_t *e = list; e; e = e->next, i++)
            qe[i] = (queue_stream_entry_t){e->id, e->token, e->field, e->value, e->len};
        int64_t ttl = (int64_t)q->t->cfg->result_ttl_s * 1000;
        rc = queue_stream_add(c, qe, n, API_TASKS_STREAM_MAXLEN, ttl > 0 ? ttl : 3600000, NULL);
        free(qe);
    }
    if (rc == QUEUE_EREDIS) { /* put them back in front, in order */
        pthread_mutex_lock(&q->mu);
        stream_entry_t *tail = list;
        while (tail->next) tail = tail->next;
        tail->next = q->stream_head;
        if (!q->stream_head) q->stream_tail = tail;
        q->stream_head = list;
        pthread_mutex_unlock(&q->mu);
        return rc;
    }
    while (list) {
        stream_entry_t *next = list->next;
        free(list->value);
        free(list);
        list = next;
    }
    return 0;
}

void *api_tasks_completion_main(void *arg) {
    task_queue_t *q = arg;
    queue_conn_t *c = NULL;
    task_t *pending = NULL; /* taken but not yet settled (Redis down) */
    trouble_t tr;
    trouble_init(&tr, &q->completion_thr);
    for (;;) {
        /* connected before work arrives, so readiness reflects Redis; at stop
         * with Redis down the rest is dropped: the leases run out and the
         * reaper hands the tasks out again */
        if (!c && !(c = connect_retry(q, &q->completion_up, &q->stop_completion, "completion"))) break;
        pthread_mutex_lock(&q->mu);
        while (!q->done_head && !q->stream_head && !pending && !atomic_load(&q->stop_completion))
            pthread_cond_wait(&q->cv, &q->mu);
        task_t *list = q->done_head;
        q->done_head = q->done_tail = NULL;
        int stop = atomic_load(&q->stop_completion);
        pthread_mutex_unlock(&q->mu);
        /* a task's text before its result: its last entries were queued before
         * it was done, so flushing after taking the done list sends them all,
         * and a reader that sees the result has the whole stream */
        int flush_broken = flush_streams(q, c) == QUEUE_EREDIS;
        if (pending) { /* older first */
            task_t *tail = pending;
            while (tail->next) tail = tail->next;
            tail->next = list;
            list = pending;
            pending = NULL;
        }
        if (flush_broken) { /* settle after the reconnect, the stream first */
            pending = list;
            conn_broken(&c, &q->completion_up, q, "completion", &tr, &q->stop_completion);
            continue;
        }
        if (!list) {
            if (stop) break;
            continue;
        }
        int broken = 0;
        pending = settle(q, c, list, &broken, &tr);
        if (broken) conn_broken(&c, &q->completion_up, q, "completion", &tr, &q->stop_completion);
        else trouble_over(&tr);
    }
    while (pending) {
        task_t *next = pending->next;
        api_task_free(pending);
        pending = next;
    }
    pthread_mutex_lock(&q->mu);
    for (stream_entry_t *e = q->stream_head, *next; e; e = next) {
        next = e->next;
        free(e->value);
        free(e);
    }
    q->stream_head = q->stream_tail = NULL;
    pthread_mutex_unlock(&q->mu);
    queue_close(c);
    return NULL;
}

