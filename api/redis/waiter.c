/* api/redis/waiter.c - long-polls (GET /v1/tasks/{id}?wait=): one thread
 * looks at every waited-for task each WAIT_POLL_MS (and at once when a task
 * this server settles ends) and wakes the caller when the task ended or the
 * wait ran out, so no HTTP thread waits on Redis. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/redis/tasks_internal.h"
#include "kernels/util.h"

#define WAIT_POLL_MS 25 /* waiter poll interval */

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

void *api_tasks_waiter_main(void *arg) {
    api_tasks_t *t = arg;
    queue_conn_t *conns[16] = {0};
    pthread_mutex_lock(&t->wmu);
    for (;;) {
        int final = t->wstop; /* shutting down: one last look, then answer everyone */
        api_task_watch_t *list = t->waiters;
        t->waiters = NULL;
        pthread_mutex_unlock(&t->wmu);
        api_task_watch_t *keep = NULL;
        int64_t now = final ? INT64_MAX : batcher_now_ns();
        for (api_task_watch_t *w = list, *next; w; w = next) {
            next = w->next;
            int qi = w->q;
            if (qi < 16 && !conns[qi]) {
                char err[512];
                conns[qi] = api_tasks_pool_get(t, &t->queues[qi], err, sizeof err);
            }
            queue_conn_t *c = qi < 16 ? conns[qi] : NULL;
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
        pthread_mutex_lock(&t->wmu);
        /* put the still-waiting back in front of the newcomers */
        while (keep) {
            api_task_watch_t *next = keep->next;
            keep->next = t->waiters;
            t->waiters = keep;
            keep = next;
        }
        if (final) break;
        struct timespec ts;
        util_deadline(&ts, CLOCK_REALTIME, WAIT_POLL_MS * 1000000LL);
        pthread_cond_timedwait(&t->wcv, &t->wmu, &ts);
    }
    pthread_mutex_unlock(&t->wmu);
    for (int i = 0; i < 16; i++) queue_close(conns[i]);
    return NULL;
}

