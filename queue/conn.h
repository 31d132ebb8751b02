/* queue/conn.h - internal to queue/: the connection behind a queue_conn_t and
 * the one way every operation talks to Redis (script calls with timeouts,
 * reconnect with backoff, NOSCRIPT reload, cluster routing, WAIT). Not part
 * of the public API. */
#ifndef SLUICE_QUEUE_CONN_H
#define SLUICE_QUEUE_CONN_H

#include <hiredis.h>
#include <stdint.h>
#include "queue/cluster.h"
#include "queue/queue.h"
#include "queue/scripts.h"

struct queue_conn {
    queue_config_t cfg;        /* string fields point at the copies below */
    char *url_copy, *name_copy;
    unsigned char *key_copy;
    queue_url_t url;           /* auth, db and options (of the first seed) */
    char prefix[QUEUE_NAME_MAX + 4]; /* "{name}:" - every key of the queue starts with it */
    char key1[QUEUE_NAME_MAX + 8];   /* "{name}:seq" - KEYS[1] of every script (scripts.h) */
    redisContext *ctx;         /* NULL while disconnected */
    queue_node_t node;         /* the node ctx talks to: the URL's, or the slot's master */
    queue_seeds_t seeds;       /* hosts of the URL */
    int cluster;               /* route by slot: a cluster URL, or a MOVED was seen */
    int stale;                 /* ask the cluster where the slot lives before the next connect */
    unsigned slot;             /* hash slot of the prefix: every key of the queue */
    queue_slot_map_t map;      /* the last CLUSTER SLOTS */
    uint64_t rng;              /* xorshift state for jitter */
    int opened;                /* connected at least once (a later open is a reconnect) */
    char err[512];
};

/* Arguments of one command; numbers are formatted into owned storage. */
typedef struct {
    const char **v;
    size_t *len;
    char **owned; /* strings to free with the args */
    int n, cap, nowned;
    int failed;   /* an allocation failed; the call answers QUEUE_ENOMEM */
} queue_args_t;

void queue_args_init(queue_args_t *a);
void queue_args_free(queue_args_t *a);
void queue_args_add(queue_args_t *a, const char *s, size_t len);
void queue_args_str(queue_args_t *a, const char *s);
void queue_args_int(queue_args_t *a, int64_t v);
void queue_args_double(queue_args_t *a, double v);

/* EVALSHA script with KEYS[1] = key1 and the given ARGV. On 0, *reply is
 * the answer (never an error reply; free it). Reconnects and retries as
 * the header of queue.h says. */
int queue_conn_eval(queue_conn_t *c, queue_script_id_t s, const queue_args_t *argv, redisReply **reply);

/* BLPOP key for up to timeout_ms, no retry: 1 popped, 0 timed out, <0 error. */
int queue_conn_blpop(queue_conn_t *c, const char *key, int64_t timeout_ms);

int queue_set_err(queue_conn_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int64_t queue_reply_int(const redisReply *r);    /* INTEGER or numeric STRING; 0 otherwise */
char *queue_reply_dup(const redisReply *r, size_t *len); /* STRING copy (NUL-ended), NULL for nil */
double queue_rand01(queue_conn_t *c);            /* uniform in [0, 1) */

#define QUEUE_SIGN_SKEW_MS 300000 /* clocks of producers, workers and Redis may differ this much */
/* How long a signed task may be run after it was signed (signed_max_age_ms, default 1 day). */
int64_t queue_signed_max_age(const queue_conn_t *c);
/* Life of a finished signed task's tombstone this conn needs (hello.lua stores the longest asked):
 * as long as it accepts signed tasks, and no less than its results; 0 without a signing key. */
int64_t queue_tomb_ms(const queue_conn_t *c);

#endif
