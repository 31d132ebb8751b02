/* api/redis/waiter.c - long-polls (GET /v1/tasks/{id}?wait=): one thread
 * holds every waited-for task, SUBSCRIBEd to the task-end events of the
 * queues served (queue/events.h), and looks a task up in Redis only when its
 * end is announced, when the wait runs out, once when the watch starts, and
 * in a safety sweep every 5 s (pub/sub may drop a message while reconnecting).
 * Scripts publish task ends only while the queue is marked listened to
 * ({q}:subs, queue_mark_listening), so while it has watches this thread marks
 * each queue before it looks at newcomers and every 2 s (the mark lives 10 s):
 * a task that ends before that look is seen by it, one that ends after it is
 * published. Without watches nothing is marked and the queue publishes nothing.
 * Without the subscription it falls back to looking every 250 ms. So 1,000
 * waiters cost Redis a few commands per task end, not 40 looks a second each;
 * no HTTP thread waits on Redis. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/redis/tasks_internal.h"
#include "kernels/util.h"
#include "queue/events.h"

#define WAITER_QUEUES 16 /* queues whose long-polls are served (the first ones) */
#define MARK_TTL_MS 10000 /* life of a listener mark */
#define MARK_EVERY_NS 2000000000LL /* marked again this often while there are watches */

void api_tasks_wake_waiters(api_tasks_t *t) {
    pthread_mutex_lock(&t->wmu);
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->wmu);
}

api_task_watch_t *api_tasks_watch(api_tasks_t *t, int q, const char *id, int64_t until_ns, void (*wake)(void *),
                                  void *user) {
    api_task_watch_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->q = q;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->until_ns = until_ns;
    w->wake = wake;
    w->user = user;
    pthread_mutex_lock(&t->wmu);
    w->next = t->waiters;
    t->waiters = w;
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->wmu);
    return w;
}

void api_tasks_watch_free(api_task_watch_t *w) {
    if (!w) return;
    queue_info_clear(&w->info);
    free(w);
}

/* The pooled connection of queue qi (NULL when it cannot be had now). */
static queue_conn_t *conn_of(api_tasks_t *t, queue_conn_t **conns, int qi) {
    if (qi >= WAITER_QUEUES) return NULL;
    if (!conns[qi]) {
        char err[512];
        conns[qi] = api_tasks_pool_get(t, &t->queues[qi], err, sizeof err);
    }
    return conns[qi];
}

/* Mark every served queue listened to; a queue whose mark fails is found by the safety sweep. */
static void mark_listening(api_tasks_t *t, queue_conn_t **conns, int nq) {
    for (int qi = 0; qi < nq; qi++) {
        queue_conn_t *c = conn_of(t, conns, qi);
        if (c && queue_mark_listening(c, MARK_TTL_MS) == QUEUE_EREDIS) {
            queue_close(c);
            conns[qi] = NULL;
        }
    }
}

/* Look at each watch of list (every one when all, else those due or past
 * their time) and wake those that are answered; the rest come back. */
static api_task_watch_t *look(api_tasks_t *t, queue_conn_t **conns, api_task_watch_t *list, int all, int64_t now) {
    api_task_watch_t *keep = NULL;
    for (api_task_watch_t *w = list, *next; w; w = next) {
        next = w->next;
        if (!all && !w->due && now < w->until_ns) {
            w->next = keep;
            keep = w;
            continue;
        }
        w->due = 0;
        int qi = w->q;
        queue_conn_t *c = conn_of(t, conns, qi);
        queue_info_clear(&w->info);
        w->rc = c ? queue_get(c, w->id, &w->info) : QUEUE_EREDIS;
        if (w->rc == QUEUE_EREDIS && c) {
            queue_close(c);
            conns[qi] = NULL;
        }
        if (w->rc || queue_state_is_terminal(w->info.state) || now >= w->until_ns) {
            w->wake(w->user); /* the caller owns w from here */
        } else {
            w->next = keep;
            keep = w;
        }
    }
    return keep;
}

/* Mark the watches of the tasks named in an event message ("<id> <state>" lines) due. */
static void mark_due(api_task_watch_t *list, int q, const char *msg) {
    for (const char *line = msg; *line;) {
        const char *sp = strchr(line, ' '), *nl = strchr(line, '\n');
        size_t idlen = sp && (!nl || sp < nl) ? (size_t)(sp - line) : 0;
        for (api_task_watch_t *w = list; w && idlen; w = w->next)
            if (w->q == q && strlen(w->id) == idlen && !memcmp(w->id, line, idlen)) w->due = 1;
        if (!nl) break;
        line = nl + 1;
    }
}

static int64_t earliest(const api_task_watch_t *list) {
    int64_t e = INT64_MAX;
    for (; list; list = list->next)
        if (list->until_ns < e) e = list->until_ns;
    return e;
}

void *api_tasks_waiter_main(void *arg) {
    api_tasks_t *t = arg;
    queue_conn_t *conns[WAITER_QUEUES] = {0};
    queue_events_t *ev = NULL;
    const char *names[WAITER_QUEUES];
    int nq = t->n < WAITER_QUEUES ? t->n : WAITER_QUEUES;
    for (int i = 0; i < nq; i++) names[i] = t->queues[i].name;
    api_task_watch_t *active = NULL;
    int64_t next_open = 0, next_sweep = 0, next_mark = 0;
    char msg[8192];
    for (;;) {
        pthread_mutex_lock(&t->wmu);
        int final = t->wstop; /* shutting down: one last look, then answer everyone */
        api_task_watch_t *fresh = t->waiters;
        t->waiters = NULL;
        pthread_mutex_unlock(&t->wmu);
        int64_t now = batcher_now_ns();
        if (final) {
            for (api_task_watch_t *w = fresh, *next; w; w = next) {
                next = w->next;
                w->next = active;
                active = w;
            }
            look(t, conns, active, 1, INT64_MAX);
            break;
        }
        int resubscribed = 0;
        if (!ev && now >= next_open) {
            char err[512];
            ev = queue_events_open(t->cfg->redis, names, nq, 300, err, sizeof err);
            next_open = now + 1000000000LL;
            resubscribed = ev != NULL; /* what ended while we were not listening is looked at below */
            next_mark = 0;             /* and the mark may have gone with the old connection's Redis */
        }
        /* listening and someone waits: the mark must live from before the looks below (a mark
         * younger than MARK_EVERY_NS still has most of its MARK_TTL_MS ahead) */
        if (ev && (fresh || active) && now >= next_mark) {
            mark_listening(t, conns, nq);
            next_mark = now + MARK_EVERY_NS;
        }
        /* a newcomer is looked at once now that we listen (it may have ended since the route's look) */
        for (api_task_watch_t *w = fresh; w; w = w->next) w->due = 1;
        for (api_task_watch_t *w = fresh, *next; w; w = next) {
            next = w->next;
            w->next = active;
            active = w;
        }
        /* subscribed: a safety look every 5 s (a message can be lost); not: every 250 ms */
        int sweep = resubscribed || now >= next_sweep;
        if (sweep) next_sweep = now + (ev ? 5000000000LL : 250000000LL);
        active = look(t, conns, active, sweep, now);
        /* wait for task ends, a deadline, or 100 ms (newcomers and stop are noticed then) */
        int64_t until = earliest(active);
        int wait_ms = until == INT64_MAX ? 100 : (int)((until - now) / 1000000LL) + 1;
        if (wait_ms > 100) wait_ms = 100;
        if (wait_ms < 1) wait_ms = 1;
        if (ev) {
            int q = 0, rc;
            while ((rc = queue_events_next(ev, wait_ms, &q, msg, sizeof msg)) == 1) {
                mark_due(active, q, msg);
                wait_ms = 0; /* drain what is there, then look */
            }
            if (rc < 0) {
                queue_events_close(ev);
                ev = NULL;
            }
        } else {
            pthread_mutex_lock(&t->wmu);
            struct timespec ts;
            util_deadline(&ts, CLOCK_REALTIME, wait_ms * 1000000LL);
            if (!t->wstop && !t->waiters) pthread_cond_timedwait(&t->wcv, &t->wmu, &ts);
            pthread_mutex_unlock(&t->wmu);
        }
    }
    queue_events_close(ev);
    for (int i = 0; i < WAITER_QUEUES; i++) queue_close(conns[i]);
    return NULL;
}
