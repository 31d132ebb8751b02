/* api/redis/tasks.c - the Redis room's lifecycle (threads per queue, the
 * waiter), the connection pool, and the task routes' Redis side. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/redis/tasks_internal.h"

/* ---------------------------------------------------------------- connections for one round trip */

int api_tasks_find_queue(api_tasks_t *t, const char *name) {
    if (!name) return 0;
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->queues[i].name, name)) return i;
    return -1;
}

const char *api_tasks_queue_name(api_tasks_t *t, int q) { return q >= 0 && q < t->n ? t->queues[q].name : ""; }

/* ---- the breaker: a failing Redis is asked again after a backoff, not by every request */

#define BREAKER_MIN_MS 100
#define BREAKER_MAX_MS 5000

/* A call failed with err: open the breaker for a jittered, doubling wait. */
static void breaker_trip(task_queue_t *q, const char *err) {
    pthread_mutex_lock(&q->mu);
    int ms = q->brk_wait_ms ? q->brk_wait_ms * 2 : BREAKER_MIN_MS;
    if (ms > BREAKER_MAX_MS) ms = BREAKER_MAX_MS;
    q->brk_wait_ms = ms;
    int wait = ms / 2 + (int)(rand_r(&q->brk_seed) % (unsigned)(ms / 2 + 1)); /* half to all of it */
    q->brk_until_ns = batcher_now_ns() + (int64_t)wait * 1000000LL;
    snprintf(q->brk_err, sizeof q->brk_err, "%s", err && err[0] ? err : "Redis error");
    pthread_mutex_unlock(&q->mu);
}

static void breaker_reset(task_queue_t *q) {
    pthread_mutex_lock(&q->mu);
    q->brk_wait_ms = 0;
    q->brk_until_ns = 0;
    pthread_mutex_unlock(&q->mu);
}

/* 0: the caller may ask Redis (the one trial call after a wait); else the
 * ms the breaker stays open, with err filled. */
static int64_t breaker_check(task_queue_t *q, char *err, size_t errlen) {
    int64_t now = batcher_now_ns(), left = 0;
    pthread_mutex_lock(&q->mu);
    if (q->brk_wait_ms) {
        if (now < q->brk_until_ns) {
            left = (q->brk_until_ns - now + 999999) / 1000000;
            snprintf(err, errlen, "Redis failed moments ago (%s); not asked again for %lld ms", q->brk_err,
                     (long long)left);
        } else { /* this call is the trial: the others wait for its outcome */
            q->brk_until_ns = now + (int64_t)q->brk_wait_ms * 1000000LL;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return left;
}

int api_tasks_retry_after_s(api_tasks_t *t, int qi) {
    if (!t || qi < 0 || qi >= t->n) return 1;
    task_queue_t *q = &t->queues[qi];
    int64_t now = batcher_now_ns();
    pthread_mutex_lock(&q->mu);
    int64_t left_ms = q->brk_wait_ms && q->brk_until_ns > now ? (q->brk_until_ns - now) / 1000000 : 0;
    pthread_mutex_unlock(&q->mu);
    return (int)(left_ms / 1000) + 1;
}

queue_conn_t *api_tasks_pool_get(api_tasks_t *t, task_queue_t *q, char *err, size_t errlen) {
    if (breaker_check(q, err, errlen)) return NULL;
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
    queue_conn_t *c = queue_connect(&qc, err, errlen);
    if (!c) breaker_trip(q, err);
    return c;
}

void api_tasks_pool_put(api_tasks_t *t, task_queue_t *q, queue_conn_t *c, int rc) {
    if (rc == QUEUE_EREDIS || rc == QUEUE_EPROTO) { /* out of memory, read-only, lost: back off */
        breaker_trip(q, queue_last_error(c));
        queue_close(c);
        return;
    }
    breaker_reset(q); /* Redis answered (a task, none, a full queue...) */
    pthread_mutex_lock(&t->pool_mu);
    if (t->n_pool < API_TASKS_POOL_MAX) {
        t->pool[t->n_pool] = c;
        snprintf(t->pool_q[t->n_pool], QUEUE_NAME_MAX, "%s", q->name);
        t->n_pool++;
        c = NULL;
    }
    pthread_mutex_unlock(&t->pool_mu);
    queue_close(c);
}


/* ---------------------------------------------------------------- the task routes' Redis side */

/* ---- tenants: the owner in the payload, the dedup key per owner */

/* The payload with "owner" set (malloc'd), or NULL when it is not a JSON object. */
static char *payload_with_owner(const char *payload, size_t len, const char *owner) {
    json_t *o = json_loadb(payload, len, 0, NULL);
    char *out = NULL;
    if (json_is_object(o) && !json_object_set_new(o, "owner", json_string(owner)))
        out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return out;
}

/* May owner (NULL: anyone's) see the task whose payload this is? */
static int owner_may_see(const queue_info_t *info, const char *owner) {
    if (!owner) return 1;
    json_t *o = info->payload ? json_loadb(info->payload, info->payload_len, 0, NULL) : NULL;
    json_t *v = json_object_get(o, "owner");
    int ok = !v || (json_is_string(v) && !strcmp(json_string_value(v), owner));
    json_decref(o);
    return ok;
}

/* task as owner enqueues it: *mine with the owner in its payload and its
 * dedup key scoped to the owner (both malloc'd into *payload, *dedup, which
 * the caller frees); task itself when owner is NULL. */
static int owned_task(const queue_task_t *task, const char *owner, queue_task_t *mine, char **payload, char **dedup,
                      char *err, size_t errlen) {
    *mine = *task;
    *payload = *dedup = NULL;
    if (!owner) return 0;
    /* the length first, so no two (owner, key) pairs make the same string */
    if (!(*payload = payload_with_owner(task->payload, task->payload_len, owner)) ||
        (task->dedup_key && asprintf(dedup, "%zu:%s:%s", strlen(owner), owner, task->dedup_key) < 0)) {
        free(*payload);
        *payload = *dedup = NULL;
        snprintf(err, errlen, "out of memory, or a payload that is not a JSON object");
        return QUEUE_EINVAL;
    }
    mine->payload = *payload;
    mine->payload_len = strlen(*payload);
    if (task->dedup_key) mine->dedup_key = *dedup;
    return 0;
}

int api_tasks_enqueue(api_tasks_t *t, int qi, const queue_task_t *task, const char *owner, char id[QUEUE_ID_MAX],
                      int *outcome, char *err, size_t errlen) {
    task_queue_t *q = &t->queues[qi];
    queue_task_t mine;
    char *payload, *dedup;
    int rc = owned_task(task, owner, &mine, &payload, &dedup, err, errlen);
    if (rc) return rc;
    queue_conn_t *c = api_tasks_pool_get(t, q, err, errlen);
    rc = API_TASKS_ENOCONN;
    if (c) {
        rc = queue_enqueue(c, &mine, id, outcome);
        snprintf(err, errlen, "%s", rc ? queue_last_error(c) : "");
        api_tasks_pool_put(t, q, c, rc);
    }
    free(payload);
    free(dedup);
    return rc;
}

int api_tasks_enqueue_many(api_tasks_t *t, int qi, const queue_task_t *tasks, size_t n, const char *owner,
                           char (*ids)[QUEUE_ID_MAX], int *status, char *err, size_t errlen) {
    task_queue_t *q = &t->queues[qi];
    if (n > API_TASKS_BATCH_MAX) {
        snprintf(err, errlen, "at most %d tasks per call", API_TASKS_BATCH_MAX);
        return QUEUE_EINVAL;
    }
    /* every task of the batch as owner's, like api_tasks_enqueue's one */
    queue_task_t *mine = owner ? calloc(n ? n : 1, sizeof *mine) : NULL;
    char **owned = owner ? calloc(2 * n + 1, sizeof *owned) : NULL;
    int rc = 0;
    if (owner && (!mine || !owned)) {
        snprintf(err, errlen, "out of memory");
        rc = QUEUE_ENOMEM;
    }
    for (size_t i = 0; owner && !rc && i < n; i++)
        rc = owned_task(&tasks[i], owner, &mine[i], &owned[2 * i], &owned[2 * i + 1], err, errlen);
    queue_conn_t *c = rc ? NULL : api_tasks_pool_get(t, q, err, errlen);
    if (!rc && !c) rc = API_TASKS_ENOCONN;
    if (c) {
        rc = queue_enqueue_many(c, owner ? mine : tasks, n, ids, status);
        snprintf(err, errlen, "%s", rc ? queue_last_error(c) : "");
        api_tasks_pool_put(t, q, c, rc);
    }
    for (size_t i = 0; owned && i < 2 * n; i++) free(owned[i]);
    free(owned);
    free(mine);
    return rc;
}

queue_conn_t *api_tasks_borrow(api_tasks_t *t, int qi, char *err, size_t errlen) {
    return api_tasks_pool_get(t, &t->queues[qi], err, errlen);
}

void api_tasks_give_back(api_tasks_t *t, int qi, queue_conn_t *c, int rc) { api_tasks_pool_put(t, &t->queues[qi], c, rc); }

int api_tasks_get(api_tasks_t *t, int qi, const char *id, const char *owner, queue_info_t *info, char *err,
                  size_t errlen) {
    task_queue_t *q = &t->queues[qi];
    memset(info, 0, sizeof *info);
    if (!id[0] || strlen(id) >= QUEUE_ID_MAX) return QUEUE_ENOTFOUND; /* no task has such an id */
    queue_conn_t *c = api_tasks_pool_get(t, q, err, errlen);
    if (!c) return API_TASKS_ENOCONN;
    int rc = queue_get(c, id, info);
    api_tasks_pool_put(t, q, c, rc);
    if (rc == QUEUE_OK && !owner_may_see(info, owner)) { /* another tenant's: as if there were none */
        queue_info_clear(info);
        memset(info, 0, sizeof *info);
        rc = QUEUE_ENOTFOUND;
    }
    return rc;
}

int api_tasks_cancel(api_tasks_t *t, int qi, const char *id, const char *owner, int *outcome, char *err,
                     size_t errlen) {
    task_queue_t *q = &t->queues[qi];
    if (!id[0] || strlen(id) >= QUEUE_ID_MAX) return QUEUE_ENOTFOUND;
    if (owner) {
        queue_info_t info;
        int rc = api_tasks_get(t, qi, id, owner, &info, err, errlen);
        queue_info_clear(&info);
        if (rc) return rc;
    }
    queue_conn_t *c = api_tasks_pool_get(t, q, err, errlen);
    if (!c) return API_TASKS_ENOCONN;
    int rc = queue_cancel(c, id, outcome);
    api_tasks_pool_put(t, q, c, rc);
    /* a task we hold right now: drop it before compute if it has not started */
    if (rc == QUEUE_OK && *outcome == QUEUE_CANCEL_PENDING) {
        uint64_t work[API_TASKS_CANCEL_IDS];
        int nw = 0;
        const api_job_type_t *type = NULL;
        pthread_mutex_lock(&q->mu);
        for (task_t *k = q->held; k; k = k->next)
            if (!strcmp(k->id, id)) {
                k->cancel_requested = 1;
                type = k->job->type;
                nw = api_jobs_cancel_ids(k->job, work, API_TASKS_CANCEL_IDS);
            }
        pthread_mutex_unlock(&q->mu);
        for (int w = 0; w < nw; w++) api_jobs_cancel(t->jobs, t->bat, type, work[w]);
    }
    return rc;
}

json_t *api_json_or_string(const char *s, size_t len) {
    if (!s) return json_null();
    json_t *j = json_loadb(s, len, JSON_DECODE_ANY, NULL);
    return j ? j : json_stringn(s, len);
}

json_t *api_task_info_json(const char *id, const queue_info_t *i) {
    json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:o,s:I,s:o,s:o,s:b}", "id", id, "state", queue_state_name(i->state),
                          "attempts", i->attempts, "max_attempts", i->max_attempts, "priority", i->priority, "worker",
                          i->worker && *i->worker ? json_string(i->worker) : json_null(), "enqueued_at_ms",
                          (json_int_t)i->enqueued_ms, "result", api_json_or_string(i->result, i->result_len), "error",
                          i->error ? json_string(i->error) : json_null(), "cancel_requested", i->cancel_requested);
    const struct { const char *name; int64_t v; } t[] = {{"finished_at_ms", i->finished_ms}, {"deadline_at_ms", i->deadline_ms},
                                                          {"due_at_ms", i->due_ms},           {"lease_until_ms", i->lease_until_ms},
                                                          {"dead_at_ms", i->dead_ms}};
    for (size_t k = 0; o && k < sizeof t / sizeof t[0]; k++)
        if (t[k].v) json_object_set_new(o, t[k].name, json_integer(t[k].v));
    return o;
}

/* ---------------------------------------------------------------- lifecycle */

int api_tasks_start(const api_config_t *cfg, registry_t *reg, batcher_t *bat, const api_jobs_t *jobs,
                    api_tasks_t **out, char *err, size_t errlen) {
    *out = NULL;
    api_tasks_t *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->cfg = cfg;
    t->reg = reg;
    t->bat = bat;
    t->jobs = jobs;
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
        char name[QUEUE_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        if (len >= QUEUE_NAME_MAX || !queue_name_valid(name)) { /* refused at start, not retried forever */
            snprintf(err, errlen, "queue name '%.*s': use 1..%d of [A-Za-z0-9_.:-]", (int)len, p,
                     QUEUE_NAME_MAX - 1);
            api_tasks_destroy(t);
            return -1;
        }
        task_queue_t *q = &t->queues[t->n++];
        q->t = t;
        memcpy(q->name, name, len + 1);
        pthread_mutex_init(&q->mu, NULL);
        q->brk_seed = (unsigned)(batcher_now_ns() ^ (int64_t)(uintptr_t)q);
        pthread_cond_init(&q->cv, NULL);
        queue_config_defaults(&q->qc);
        q->qc.url = cfg->redis;
        q->qc.name = q->name;
        q->qc.result_ttl_ms = (int64_t)cfg->result_ttl_s * 1000;
        q->qc.dedup_ttl_ms = (int64_t)cfg->dedup_ttl_s * 1000;
        q->qc.wait_replicas = cfg->redis_wait_replicas;
        q->qc.wait_timeout_ms = cfg->redis_wait_timeout_ms;
        q->qc.max_payload_bytes = cfg->max_body_bytes; /* a bigger payload is never sent to us */
        if (cfg->task_signing_key[0]) { /* enqueue signs; the intake refuses unsigned or forged tasks */
            q->qc.signing_key = (const unsigned char *)cfg->task_signing_key;
            q->qc.signing_key_len = strlen(cfg->task_signing_key);
            q->qc.signed_max_age_ms = (int64_t)cfg->task_signed_max_age_s * 1000;
        }
        p += len + (p[len] == ',');
        if (!*p) break;
    }
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
        if (pthread_create(&q->intake_thr, NULL, api_tasks_intake_main, q)) goto nothread;
        q->intake_started = 1;
        if (pthread_create(&q->completion_thr, NULL, api_tasks_completion_main, q)) goto nothread;
        q->completion_started = 1;
    }
    if (pthread_create(&t->waiter_thr, NULL, api_tasks_waiter_main, t)) goto nothread;
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

/* Raise one of q's stop flags and wake its threads. */
static void queue_signal(task_queue_t *q, atomic_int *flag) {
    pthread_mutex_lock(&q->mu);
    atomic_store(flag, 1);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void api_tasks_destroy(api_tasks_t *t) {
    if (!t) return;
    api_tasks_stop_intake(t);
    /* Called after the batcher stopped, so every task we held is on a done
     * list: the intake may go now (also out of a reconnect loop while Redis
     * is down). Only once it is gone (it may still be finishing the task it
     * was decoding, whose hand-back lands on the done list) is completion
     * told to settle what is left and exit. */
    for (int i = 0; i < t->n; i++) queue_signal(&t->queues[i], &t->queues[i].stop);
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
        if (q->intake_started) pthread_join(q->intake_thr, NULL);
        q->intake_started = 0;
        queue_signal(q, &q->stop_completion);
    }
    for (int i = 0; i < t->n; i++) {
        task_queue_t *q = &t->queues[i];
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
    queue_conn_t *c = api_tasks_pool_get(t, q, err, sizeof err);
    if (!c) return -1;
    int rc = queue_stats(c, out);
    api_tasks_pool_put(t, q, c, rc);
    return rc ? -1 : 0;
}
