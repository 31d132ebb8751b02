/* api/tasks.c - placeholder until the Redis queue (queue/queue.h) lands:
 * the task routes answer 503 and readiness reports the queue as down. */
#include <stdio.h>
#include <stdlib.h>

#include "api/http.h"
#include "api/tasks.h"

struct api_tasks {
    int unused;
};

int api_tasks_start(api_serve_t *s, api_tasks_t **out, char *err, size_t errlen) {
    (void)s;
    (void)err;
    (void)errlen;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -1;
}
void api_tasks_stop_intake(api_tasks_t *t) { (void)t; }
void api_tasks_destroy(api_tasks_t *t) { free(t); }
int api_tasks_up(api_tasks_t *t) {
    (void)t;
    return 0;
}

int api_route_tasks_post(api_req_t *r) {
    return api_respond_error(r, 503, "queue_unavailable", NULL, "the Redis task queue is not available");
}
int api_route_tasks_get(api_req_t *r, const char *id) {
    (void)id;
    return api_route_tasks_post(r);
}
int api_route_tasks_delete(api_req_t *r, const char *id) {
    (void)id;
    return api_route_tasks_post(r);
}
