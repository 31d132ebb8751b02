/* queue/events.c - SUBSCRIBE to the {q}:events channels and read their
 * messages with a timeout, without the read timeout that would leave a
 * hiredis context unusable: poll the socket, then let the reader parse. */
#include <hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/events.h"
#include "queue/queue.h"

#define EVENTS_MAX_QUEUES 64

struct queue_events {
    redisContext *ctx;
    int n;
    char channel[EVENTS_MAX_QUEUES][QUEUE_NAME_MAX + 16]; /* "{q}:events" */
};

void queue_events_close(queue_events_t *e) {
    if (!e) return;
    if (e->ctx) redisFree(e->ctx);
    free(e);
}

/* One command on a fresh connection: 0, or -1 with err. */
static int command(queue_events_t *e, int argc, const char **argv, const size_t *lens, char *err, size_t errlen) {
    redisReply *r = redisCommandArgv(e->ctx, argc, argv, lens);
    int rc = r && r->type != REDIS_REPLY_ERROR ? 0 : -1;
    if (rc) snprintf(err, errlen, "redis: %s: %s", argv[0], r ? r->str : e->ctx->errstr);
    freeReplyObject(r);
    return rc;
}

queue_events_t *queue_events_open(const char *url, const char *const *queues, int n, int connect_timeout_ms,
                                  char *err, size_t errlen) {
    queue_url_t u;
    if (n < 1 || n > EVENTS_MAX_QUEUES) {
        snprintf(err, errlen, "events: 1 to %d queues", EVENTS_MAX_QUEUES);
        return NULL;
    }
    if (queue_url_parse(url, &u, err, errlen)) return NULL;
    queue_events_t *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->n = n;
    struct timeval tv = {connect_timeout_ms / 1000, (connect_timeout_ms % 1000) * 1000};
    e->ctx = redisConnectWithTimeout(u.host, u.port, tv);
    if (!e->ctx || e->ctx->err) {
        snprintf(err, errlen, "redis %s:%d: %s", u.host, u.port, e->ctx ? e->ctx->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(e->ctx, tv); /* for the set-up commands; reads later poll first */
    redisEnableKeepAlive(e->ctx);
    if (u.password[0]) {
        const char *argv[3] = {"AUTH", u.user[0] ? u.user : u.password, u.password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(u.password)};
        if (command(e, u.user[0] ? 3 : 2, argv, lens, err, errlen)) goto fail;
    }
    const char *argv[EVENTS_MAX_QUEUES + 1];
    size_t lens[EVENTS_MAX_QUEUES + 1];
    argv[0] = "SUBSCRIBE", lens[0] = 9;
    for (int i = 0; i < n; i++) {
        snprintf(e->channel[i], sizeof e->channel[i], "{%s}:events", queues[i]);
        argv[i + 1] = e->channel[i], lens[i + 1] = strlen(e->channel[i]);
    }
    if (redisAppendCommandArgv(e->ctx, n + 1, argv, lens) != REDIS_OK) {
        snprintf(err, errlen, "redis: SUBSCRIBE: %s", e->ctx->errstr);
        goto fail;
    }
    for (int i = 0; i < n; i++) { /* one confirmation per channel */
        redisReply *r = NULL;
        if (redisGetReply(e->ctx, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "redis: SUBSCRIBE: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : e->ctx->errstr);
            freeReplyObject(r);
            goto fail;
        }
        freeReplyObject(r);
    }
    return e;
fail:
    queue_events_close(e);
    return NULL;
}

int queue_events_next(queue_events_t *e, int timeout_ms, int *queue, char *buf, size_t len) {
    for (;;) {
        redisReply *r = NULL;
        if (redisGetReplyFromReader(e->ctx, (void **)&r) != REDIS_OK) return -1;
        if (r) {
            int got = 0;
            /* ["message", channel, text] */
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
                !strcmp(r->element[0]->str, "message") && r->element[1]->type == REDIS_REPLY_STRING &&
                r->element[2]->type == REDIS_REPLY_STRING) {
                for (int i = 0; i < e->n; i++)
                    if (!strcmp(r->element[1]->str, e->channel[i])) *queue = i, got = 1;
                size_t n = r->element[2]->len < len - 1 ? r->element[2]->len : len - 1;
                memcpy(buf, r->element[2]->str, n);
                buf[n] = '\0';
            }
            freeReplyObject(r);
            if (got) return 1;
            continue; /* not one of ours: read on */
        }
        struct pollfd p = {.fd = e->ctx->fd, .events = POLLIN};
        int rc = poll(&p, 1, timeout_ms);
        if (rc == 0) return 0;
        if (rc < 0 || redisBufferRead(e->ctx) != REDIS_OK) return -1;
        timeout_ms = 0; /* what arrived is parsed above; no second wait */
    }
}
