/* queue/queue.h - the Redis reliable queue: durable tasks with leases,
 * retries with backoff, a dead-letter queue, dedup, deadlines, backpressure
 * and cancellation. docs/queue.md has the Redis layout and each operation.
 *
 * Semantics
 *   At-least-once execution; exactly one terminal state per task: done,
 *   dlq (failed into the dead-letter queue), expired, cancelled. Every state
 *   change is one Lua script (queue/scripts.c), so a crash of a worker or of
 *   Redis between two commands cannot lose or duplicate a task. A leased task
 *   carries a fencing token: only the current holder can ack, fail, renew or
 *   release it, and a holder whose lease expired and was taken gets
 *   QUEUE_ESTALE / QUEUE_LOST. Time is Redis TIME, so all workers agree.
 *
 * Ownership
 *   A queue_conn_t owns one hiredis connection and copies of its config
 *   strings. Output structs that carry heap strings (queue_lease_t,
 *   queue_info_t, queue_dlq_entry_t) own them until the matching *_clear.
 *   Input pointers are only read during the call.
 *
 * Thread-safety
 *   One queue_conn_t per thread, never shared: calls on different conns run
 *   in parallel freely; calls on one conn must not overlap. queue_connect
 *   and the payload/signing helpers are thread-safe.
 *
 * Redis Cluster
 *   One queue lives in one hash slot (every key carries the tag {name}), so a
 *   conn talks to the master of that slot: found from CLUSTER SLOTS asked of
 *   the seeds (queue_config_t.url), followed on MOVED (map refreshed) and
 *   ASK (one ASKING call on the importing node), found again after the node
 *   fails (its replica is promoted) within reconnect_ms. queue/cluster.h.
 *
 * Failure
 *   Every call has a deadline: command_timeout_ms per round trip, and on a
 *   broken connection it reconnects with backoff for up to reconnect_ms
 *   before answering QUEUE_EREDIS. Each script is safe to repeat after a
 *   lost reply (enqueue by id, ack/fail/release by token), so a retried call
 *   never duplicates a task or an ack. A lease whose reply was lost leaves
 *   its tasks leased to nobody: the reaper hands them out again after the
 *   lease deadline. Errors are values: a negative QUEUE_E* code and a message
 *   from queue_last_error(conn).
 *
 * Process-wide side effect: queue_connect sets SIGPIPE to SIG_IGN if it was
 *   at its default, so a write to a socket Redis closed is an error value,
 *   not the death of the process.
 */
#ifndef SLUICE_QUEUE_H
#define SLUICE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#define QUEUE_PRIORITY_MAX 255 /* priorities are 0..255, higher runs first */
#define QUEUE_ID_MAX 40        /* bytes for an id and its NUL (ids are 32 hex chars) */
#define QUEUE_NAME_MAX 64      /* queue names: [A-Za-z0-9_.:-], 1..64 chars */
/* The Redis layout and script contracts this code speaks (docs/queue.md).
 * A queue records its version in {q}:protocol (set by its first client);
 * queue_connect refuses a queue of another version. Raise it with any change
 * a producer or worker written elsewhere would have to follow. */
#define QUEUE_PROTOCOL_VERSION 1

enum {
    QUEUE_OK = 0,
    QUEUE_EINVAL = -1,   /* bad argument or config */
    QUEUE_EREDIS = -2,   /* Redis unreachable, timed out, or answered an error */
    QUEUE_EBUSY = -3,    /* enqueue refused: the queue is at max_length (HTTP 429) */
    QUEUE_ENOTFOUND = -4,/* no such task (or it expired with its result TTL) */
    QUEUE_ESTALE = -5,   /* the token no longer holds the lease */
    QUEUE_ESTATE = -6,   /* the task is in a state that refuses the call */
    QUEUE_ENOMEM = -7,
    QUEUE_EPROTO = -8,   /* Redis answered something this client does not expect */
};

typedef enum {
    QUEUE_S_UNKNOWN = 0,
    QUEUE_S_READY,
    QUEUE_S_DELAYED,   /* waiting for its due time (delay or retry backoff) */
    QUEUE_S_LEASED,
    QUEUE_S_DONE,      /* terminal: acked, result stored */
    QUEUE_S_DLQ,       /* terminal: in the dead-letter queue */
    QUEUE_S_EXPIRED,   /* terminal: deadline passed before it ran */
    QUEUE_S_CANCELLED, /* terminal */
} queue_state_t;

const char *queue_state_name(queue_state_t s); /* "ready", "done", ... */
queue_state_t queue_state_parse(const char *name);
int queue_state_is_terminal(queue_state_t s);
const char *queue_strerror(int code);

typedef struct {
    const char *url;             /* redis://[user][:password@]host[:port][/db][?opts]; NULL: redis://127.0.0.1:6379/0.
                                  * Cluster: redis+cluster://[auth@]h1:p1[,h2:p2...] or redis:// with several
                                  * hosts (seeds); a plain redis:// URL also turns to cluster routing at the
                                  * first MOVED. opts: wait_replicas=N&wait_timeout_ms=T (fields below win) */
    const char *name;            /* queue name, the hash tag {name}; NULL: "sluice" */
    int connect_timeout_ms;      /* per connect attempt; default 1000 */
    int command_timeout_ms;      /* per round trip; default 2000 */
    int reconnect_ms;            /* how long one call keeps reconnecting; default 3000 */
    int64_t max_length;          /* waiting tasks (ready + delayed) before enqueue answers BUSY; 0 unbounded */
    int max_attempts;            /* default per task; default 3 */
    int64_t result_ttl_ms;       /* results and finished task hashes; default 3600000 */
    int64_t dedup_ttl_ms;        /* life of a dedup key; default 3600000 */
    int64_t backoff_base_ms;     /* retry delay base; default 1000 */
    int64_t backoff_cap_ms;      /* retry delay cap; default 60000 */
    double backoff_jitter;       /* 0..1: delay shortened by up to this fraction at random; default 0.2 */
    int64_t dlq_max_length;      /* oldest dropped beyond it; 0 unbounded; default 100000 */
    int64_t dlq_max_age_ms;      /* dropped when older; 0 never; default 7 days */
    int64_t reap_interval_ms;    /* guard: one sweep per interval across workers; default 1000 */
    const unsigned char *signing_key; /* NULL: no signing. With a key, enqueue signs and lease verifies */
    size_t signing_key_len;
    int wait_replicas;           /* 0: off. N: every writing call returns only once N replicas have its
                                  * writes (Redis WAIT), else QUEUE_EREDIS naming the counts; see docs/queue.md */
    int wait_timeout_ms;         /* one WAIT's limit; 0: the URL's, else 1000. Calls keep waiting (WAIT
                                  * again) up to reconnect_ms */
    int64_t signed_max_age_ms;   /* a signed task older than this is refused at lease; default 86400000 (1 day) */
    size_t max_payload_bytes;    /* lease sends no payload larger than this (payload_withheld); 0: no limit */
} queue_config_t;

void queue_config_defaults(queue_config_t *cfg);

typedef struct queue_conn queue_conn_t;

/* Is name a queue name (1..QUEUE_NAME_MAX-1 of [A-Za-z0-9_.:-])? The one
 * check queue_connect, `sluice queue` and `sluice serve` all apply. */
int queue_name_valid(const char *name);

/* Connect (AUTH, SELECT, SCRIPT LOAD, the protocol check). NULL with a
 * message in err when Redis cannot be reached within reconnect_ms, the config
 * is bad, or the queue's {q}:protocol is not QUEUE_PROTOCOL_VERSION. */
queue_conn_t *queue_connect(const queue_config_t *cfg, char *err, size_t errlen);
void queue_close(queue_conn_t *c); /* NULL is a no-op */
const char *queue_last_error(const queue_conn_t *c); /* message of the last failed call */
const char *queue_name(const queue_conn_t *c);

/* ---- producing ---- */

typedef struct {
    const char *payload;   /* opaque bytes (JSON by convention, see queue_payload_build) */
    size_t payload_len;
    int priority;          /* 0..QUEUE_PRIORITY_MAX, higher first; FIFO within one */
    int64_t delay_ms;      /* 0: ready now */
    int64_t ttl_ms;        /* deadline = enqueue time + ttl; 0: none. Past it, the task ends expired */
    int max_attempts;      /* 0: config default */
    const char *dedup_key; /* NULL: none. While {q}:dd:<key> lives, enqueue returns its task's id */
    int64_t result_ttl_ms; /* how long the result (and the finished task) is kept; 0: the acker's result TTL */
} queue_task_t;

enum { QUEUE_ENQ_NEW = 0, QUEUE_ENQ_DEDUPED = 1 };

/* Enqueue one task; id gets the new (or, deduplicated, the existing) id.
 * *outcome (may be NULL): QUEUE_ENQ_NEW or QUEUE_ENQ_DEDUPED.
 * QUEUE_EBUSY when the queue is full: nothing is stored. */
int queue_enqueue(queue_conn_t *c, const queue_task_t *task, char id[QUEUE_ID_MAX], int *outcome);

/* Enqueue n tasks in one round trip per 512. status[i]: QUEUE_ENQ_NEW,
 * QUEUE_ENQ_DEDUPED or QUEUE_EBUSY; ids[i] as for queue_enqueue. Returns 0
 * when every call went through (check status), negative when one did not:
 * then the 512-task chunks before it are stored (their status is filled)
 * and none after it. */
int queue_enqueue_many(queue_conn_t *c, const queue_task_t *tasks, size_t n,
                       char (*ids)[QUEUE_ID_MAX], int *status);

/* ---- consuming ---- */

typedef struct {
    char id[QUEUE_ID_MAX];
    int64_t token;          /* fencing token: pass to renew/ack/fail/release */
    int attempt;            /* 1 on the first delivery */
    int max_attempts;
    int priority;
    int64_t deadline_ms;    /* unix ms (Redis clock); 0: none */
    int64_t lease_until_ms; /* unix ms (Redis clock) */
    int64_t enqueued_ms;    /* unix ms */
    char *payload;          /* owned; NUL-terminated for convenience ("" when withheld) */
    size_t payload_len;
    size_t payload_withheld;/* > 0: the payload's size, over max_payload_bytes, so Redis did not send it */
} queue_lease_t;

/* Lease up to n tasks for lease_ms in one round trip (worker: a name for
 * operators). Fills out[0..*got). With a signing key, tasks with a bad or
 * missing signature go to the DLQ as "bad_signature" and are not returned.
 * *got = 0 when nothing is ready. Free payloads with queue_lease_clear. */
int queue_lease(queue_conn_t *c, int n, const char *worker, int64_t lease_ms,
                queue_lease_t *out, int *got);
void queue_lease_clear(queue_lease_t *leases, size_t n);

typedef struct {
    const char *id;
    int64_t token;
} queue_ref_t;

enum { QUEUE_RENEWED = 0, QUEUE_LOST = 1, QUEUE_CANCEL_REQUESTED = 2 };

/* Extend n leases to now + lease_ms in one round trip. status[i]:
 * QUEUE_RENEWED, QUEUE_LOST (drop the work: someone else may hold it) or
 * QUEUE_CANCEL_REQUESTED (renewed; drop the work and queue_fail it). */
int queue_renew(queue_conn_t *c, const queue_ref_t *refs, size_t n, int64_t lease_ms, int *status);

typedef struct {
    const char *id;
    int64_t token;
    const char *result;  /* stored as the task hash's `result` field */
    size_t result_len;
} queue_ack_t;

/* Complete a task: store the result for result_ttl_ms (0: config default),
 * mark it done, wake its waiters. Repeating an applied ack returns 0.
 * QUEUE_ESTALE when the token no longer holds the lease. */
int queue_ack(queue_conn_t *c, const char *id, int64_t token, const char *result,
              size_t result_len, int64_t result_ttl_ms);
/* n acks in one round trip; status[i]: 0 or QUEUE_ESTALE. */
int queue_ack_many(queue_conn_t *c, const queue_ack_t *acks, size_t n, int64_t result_ttl_ms,
                   int *status);

enum { QUEUE_FAIL_RETRY = 0, QUEUE_FAIL_DEAD = 1, QUEUE_FAIL_CANCELLED = 2 };

/* A failed attempt: retried after min(cap, base*2^(attempt-1)) less jitter,
 * through {q}:delayed; past max attempts it goes to the DLQ with the error.
 * A task whose cancellation was requested ends cancelled instead.
 * *outcome (may be NULL): QUEUE_FAIL_*; *delay_ms (may be NULL): the retry delay. */
int queue_fail(queue_conn_t *c, const char *id, int64_t token, const char *error,
               int *outcome, int64_t *delay_ms);

/* Hand n leases back unfinished (graceful shutdown): back to ready in their
 * original place, the attempt not counted. status[i]: 0, QUEUE_ESTALE, or 1
 * when the task ended cancelled because its cancellation was requested. */
int queue_release(queue_conn_t *c, const queue_ref_t *refs, size_t n, int *status);

typedef struct {
    int swept;          /* 0: another worker swept within reap_interval_ms */
    int64_t reaped;     /* expired leases back to ready */
    int64_t dead;       /* expired leases past max attempts, to the DLQ */
    int64_t expired;    /* tasks past their deadline */
    int64_t promoted;   /* delayed tasks now due */
    int64_t cancelled;
} queue_reap_t;

/* Sweep expired leases and deadlines (at most `limit`, 0: 1000, of each).
 * Safe from every worker: unless force, only one sweeps per reap interval. */
int queue_reap(queue_conn_t *c, int force, int limit, queue_reap_t *out);

enum { QUEUE_CANCELLED_NOW = 0, QUEUE_CANCEL_PENDING = 1 };

/* Cancel: a waiting task ends cancelled now (QUEUE_CANCELLED_NOW); a leased
 * one is marked and renew reports it (QUEUE_CANCEL_PENDING). QUEUE_ESTATE
 * when it has already ended, QUEUE_ENOTFOUND when unknown. */
int queue_cancel(queue_conn_t *c, const char *id, int *outcome);

/* ---- looking ---- */

typedef struct {
    queue_state_t state;
    int attempts, max_attempts, priority;
    int cancel_requested;
    int64_t token;           /* current or last lease */
    int64_t enqueued_ms, finished_ms, deadline_ms, due_ms, dead_ms, lease_until_ms; /* unix ms, 0: none */
    char *payload; size_t payload_len; /* owned */
    char *result; size_t result_len;   /* owned; NULL until it ends */
    char *error;                       /* owned; last error, NULL if none */
    char *worker;                      /* owned; last lease holder */
} queue_info_t;

/* State, result and details of a task. QUEUE_ENOTFOUND when unknown. */
int queue_get(queue_conn_t *c, const char *id, queue_info_t *out);
/* As queue_get, but first waits up to timeout_ms for the task to end
 * (BLPOP on {q}:w:<id>, for HTTP long-polls). Returns 0 with the state at
 * the end of the wait: check queue_state_is_terminal(out->state). */
int queue_wait(queue_conn_t *c, const char *id, int64_t timeout_ms, queue_info_t *out);
void queue_info_clear(queue_info_t *info);

/* Task ends are PUBLISHed on {q}:events (queue/events.h) only while someone
 * says they listen: this marks the queue listened to for the next ttl_ms
 * ({q}:subs). A listener marks it after SUBSCRIBE and before its first look
 * at a task it waits for (an end before that look is seen by the look, one
 * after it is published), and again well within ttl_ms while it listens. */
int queue_mark_listening(queue_conn_t *c, int64_t ttl_ms);

typedef struct {
    int64_t ready, delayed, leased, dlq; /* depth by state */
    int64_t enqueued, acked, retried, failed, expired, cancelled, deduped, rejected,
        reaped, released, requeued, purged, bad_signature; /* counters since the queue began */
} queue_stats_t;

int queue_stats(queue_conn_t *c, queue_stats_t *out);

/* Process-wide connection health, for metrics: connections made again after
 * one was lost, and failed attempts (connects, lost replies, transient errors
 * such as LOADING) on any connection of this process. Thread-safe. */
void queue_io_counters(uint64_t *reconnects, uint64_t *errors);

/* ---- dead-letter queue ---- */

typedef struct {
    char id[QUEUE_ID_MAX];
    int64_t dead_ms;       /* when it entered the DLQ */
    int attempts, max_attempts;
    char *error;           /* owned */
} queue_dlq_entry_t;

/* Oldest first, from offset; up to max entries. */
int queue_dlq_list(queue_conn_t *c, size_t offset, size_t max, queue_dlq_entry_t *out, size_t *got);
void queue_dlq_entries_clear(queue_dlq_entry_t *e, size_t n);
/* Back to ready with attempts reset and no deadline: one id, or all (id NULL). */
int queue_dlq_requeue(queue_conn_t *c, const char *id, int64_t *moved);
/* Delete DLQ entries beyond the newest `keep` (negative: no count cap) and
 * those older than older_than_ms (0: no age cap). keep 0: purge all. */
int queue_dlq_purge(queue_conn_t *c, int64_t keep, int64_t older_than_ms, int64_t *removed);

/* Token streams: what a running task has produced so far, for clients to
 * follow (XREAD) while it runs. Each entry appends {token: <lease token>,
 * field: value} to the Redis stream {q}:s:<id>, capped near maxlen entries
 * (XADD MAXLEN ~) and expiring ttl_ms after its last append, only while the
 * task is leased under that token (a worker that lost its lease adds
 * nothing; a task generated again after a lost worker writes under its new
 * token). status[i] (may be NULL): 0 added, -1 stale. One round trip. */
typedef struct {
    const char *id;
    int64_t token;
    const char *field;  /* "text", "done", ... */
    const char *value;
    size_t value_len;
} queue_stream_entry_t;
int queue_stream_add(queue_conn_t *c, const queue_stream_entry_t *e, size_t n, int64_t maxlen, int64_t ttl_ms,
                     int *status);

/* ---- task payload codec (JSON, jansson) ---- */

typedef struct {
    char *model, *op;        /* owned */
    char *inputs_json;       /* owned: the "inputs" value as compact JSON */
    char *request_id;        /* owned; NULL if absent */
    char *traceparent;       /* owned; NULL if absent */
} queue_payload_t;

/* {"model":..,"op":..,"inputs":<inputs_json>,"request_id":..,"traceparent":..}
 * (the last two only when given). malloc'd string, or NULL with err filled. */
char *queue_payload_build(const char *model, const char *op, const char *inputs_json,
                          const char *request_id, const char *traceparent, char *err, size_t errlen);
int queue_payload_parse(const char *json, size_t len, queue_payload_t *out, char *err, size_t errlen);
void queue_payload_clear(queue_payload_t *p);

/* ---- signing ---- */

/* Hex HMAC-SHA256 (64 chars + NUL) of id "\n" payload under key. */
void queue_sign(const unsigned char *key, size_t key_len, const char *id, const char *payload,
                size_t payload_len, char out[65]);

/* What a task signature covers besides the payload: everything that changes
 * what runs, where or when (docs/queue.md, "Signed tasks"). */
typedef struct {
    const char *queue, *id;
    int priority, max_attempts;
    int64_t ttl_ms, delay_ms;
    int64_t signed_ms; /* wall clock of the producer when it signed (the enqueue time) */
} queue_sign_fields_t;

/* The stored signature of a task: "v2.<signed_ms>.<delay_ms>.<ttl_ms>.<max_attempts>.<hex HMAC>"
 * into out (QUEUE_SIG_MAX bytes). */
#define QUEUE_SIG_MAX 160
void queue_sign_task(const unsigned char *key, size_t key_len, const queue_sign_fields_t *f, const char *payload,
                     size_t payload_len, char out[QUEUE_SIG_MAX]);

/* ---- URL ---- */

typedef struct {
    char host[256];
    int port;
    int db;
    char user[128];     /* empty: AUTH password only */
    char password[256]; /* empty: no AUTH */
    int wait_replicas;  /* ?wait_replicas=N; 0: not given */
    int wait_timeout_ms;/* ?wait_timeout_ms=T; 0: not given */
} queue_url_t;

/* A cluster URL (redis+cluster:// or several hosts) parses as its first seed. */

int queue_url_parse(const char *url, queue_url_t *out, char *err, size_t errlen);

#endif
