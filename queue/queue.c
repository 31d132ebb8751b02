/* queue/queue.c - the queue operations: each one builds the ARGV of its Lua
 * script (queue/scripts.c), makes one round trip through queue_conn_eval, and
 * turns the answer into C values. Batches larger than CHUNK go as several
 * script calls so one call never holds Redis for long. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <openssl/crypto.h>
#include "queue/conn.h"

enum { CHUNK = 512, LEASE_FIELDS = 11, GET_FIELDS = 16, DLQ_FIELDS = 5 };

static const char *const state_names[] = {
    [QUEUE_S_UNKNOWN] = "unknown", [QUEUE_S_READY] = "ready",   [QUEUE_S_DELAYED] = "delayed",
    [QUEUE_S_LEASED] = "leased",   [QUEUE_S_DONE] = "done",     [QUEUE_S_DLQ] = "dlq",
    [QUEUE_S_EXPIRED] = "expired", [QUEUE_S_CANCELLED] = "cancelled",
};

const char *queue_state_name(queue_state_t s) {
    return (unsigned)s < sizeof state_names / sizeof *state_names ? state_names[s] : "unknown";
}

queue_state_t queue_state_parse(const char *name) {
    for (size_t i = 1; name && i < sizeof state_names / sizeof *state_names; i++)
        if (!strcmp(name, state_names[i])) return (queue_state_t)i;
    return QUEUE_S_UNKNOWN;
}

int queue_state_is_terminal(queue_state_t s) { return s >= QUEUE_S_DONE; }

const char *queue_strerror(int code) {
    switch (code) {
    case QUEUE_OK: return "ok";
    case QUEUE_EINVAL: return "invalid argument";
    case QUEUE_EREDIS: return "redis unavailable or failed";
    case QUEUE_EBUSY: return "queue full";
    case QUEUE_ENOTFOUND: return "no such task";
    case QUEUE_ESTALE: return "lease lost (stale token)";
    case QUEUE_ESTATE: return "task state refuses the call";
    case QUEUE_ENOMEM: return "out of memory";
    case QUEUE_EPROTO: return "unexpected reply from redis";
    default: return "unknown error";
    }
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int reply_array(queue_conn_t *c, redisReply *r, size_t multiple, const char *what) {
    if (r->type != REDIS_REPLY_ARRAY || (multiple && r->elements % multiple))
        return queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to %s", what);
    return 0;
}

static int64_t ttl_or_default(const queue_conn_t *c, int64_t ttl) { return ttl > 0 ? ttl : c->cfg.result_ttl_ms; }

static void new_id(char id[QUEUE_ID_MAX]) {
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != sizeof b) { /* never in practice; fall back to a weaker source */
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)random();
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        id[2 * i] = hex[b[i] >> 4];
        id[2 * i + 1] = hex[b[i] & 15];
    }
    id[32] = 0;
}

static int id_ok(queue_conn_t *c, const char *id) {
    if (!id || !*id || strlen(id) >= QUEUE_ID_MAX)
        return queue_set_err(c, QUEUE_EINVAL, "bad task id '%s'", id ? id : "(null)");
    return 0;
}

/* ---- enqueue ---- */

static int task_ok(queue_conn_t *c, const queue_task_t *t) {
    if (!t->payload && t->payload_len) return queue_set_err(c, QUEUE_EINVAL, "enqueue: payload is NULL");
    if (t->priority < 0 || t->priority > QUEUE_PRIORITY_MAX)
        return queue_set_err(c, QUEUE_EINVAL, "enqueue: priority %d outside 0..%d", t->priority, QUEUE_PRIORITY_MAX);
    if (t->delay_ms < 0 || t->ttl_ms < 0 || t->result_ttl_ms < 0 || t->max_attempts < 0 || t->max_attempts > 1000)
        return queue_set_err(c, QUEUE_EINVAL, "enqueue: negative delay/ttl/result_ttl or max_attempts outside 0..1000");
    if (t->dedup_key && (!*t->dedup_key || strlen(t->dedup_key) > 256))
        return queue_set_err(c, QUEUE_EINVAL, "enqueue: dedup key must be 1..256 bytes");
    return 0;
}

static int enqueue_chunk(queue_conn_t *c, const queue_task_t *tasks, size_t n, char (*ids)[QUEUE_ID_MAX],
                         int *status) {
    char (*sigs)[QUEUE_SIG_MAX] = c->cfg.signing_key ? malloc(n * sizeof *sigs) : NULL;
    int64_t signed_ms = wall_ms();
    if (c->cfg.signing_key && !sigs) return queue_set_err(c, QUEUE_ENOMEM, "enqueue: out of memory");
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, c->cfg.max_length);
    queue_args_int(&a, c->cfg.dedup_ttl_ms);
    /* the marker must outlive every resend of this call: they all happen
     * within one reconnect window */
    queue_args_int(&a, 2 * ((int64_t)c->cfg.reconnect_ms + c->cfg.command_timeout_ms) + 60000);
    for (size_t i = 0; i < n; i++) {
        const queue_task_t *t = &tasks[i];
        new_id(ids[i]);
        queue_args_str(&a, ids[i]);
        queue_args_add(&a, t->payload, t->payload_len);
        queue_args_int(&a, t->priority);
        queue_args_int(&a, t->delay_ms);
        queue_args_int(&a, t->ttl_ms);
        queue_args_int(&a, t->max_attempts ? t->max_attempts : c->cfg.max_attempts);
        queue_args_str(&a, t->dedup_key ? t->dedup_key : "");
        if (sigs) {
            queue_sign_fields_t f = {queue_name(c), ids[i], t->priority,
                                     t->max_attempts ? t->max_attempts : c->cfg.max_attempts, t->ttl_ms, t->delay_ms,
                                     signed_ms};
            queue_sign_task(c->cfg.signing_key, c->cfg.signing_key_len, &f, t->payload, t->payload_len, sigs[i]);
            queue_args_add(&a, sigs[i], strlen(sigs[i]));
        } else {
            queue_args_str(&a, "");
        }
        queue_args_int(&a, t->result_ttl_ms);
    }
    redisReply *r;
    int rc = queue_conn_eval(c, QS_ENQUEUE, &a, &r);
    queue_args_free(&a);
    free(sigs);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 2, "enqueue")) == 0 && r->elements != 2 * n)
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: enqueue answered %zu entries for %zu tasks", r->elements / 2, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t code = queue_reply_int(r->element[2 * i]);
        const redisReply *id = r->element[2 * i + 1];
        status[i] = code == 1 ? QUEUE_ENQ_DEDUPED : code == 2 ? QUEUE_EBUSY : QUEUE_ENQ_NEW;
        if (id->type == REDIS_REPLY_STRING && id->len < QUEUE_ID_MAX) memcpy(ids[i], id->str, id->len + 1);
    }
    freeReplyObject(r);
    return rc;
}

int queue_enqueue_many(queue_conn_t *c, const queue_task_t *tasks, size_t n, char (*ids)[QUEUE_ID_MAX],
                       int *status) {
    for (size_t i = 0; i < n; i++)
        if (task_ok(c, &tasks[i])) return QUEUE_EINVAL;
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t m = n - off < CHUNK ? n - off : CHUNK;
        int rc = enqueue_chunk(c, tasks + off, m, ids + off, status + off);
        if (rc) return rc;
    }
    return 0;
}

int queue_enqueue(queue_conn_t *c, const queue_task_t *task, char id[QUEUE_ID_MAX], int *outcome) {
    char ids[1][QUEUE_ID_MAX];
    int status = 0;
    int rc = queue_enqueue_many(c, task, 1, ids, &status);
    if (rc) return rc;
    memcpy(id, ids[0], QUEUE_ID_MAX);
    if (status == QUEUE_EBUSY)
        return queue_set_err(c, QUEUE_EBUSY, "queue %s is full (max_length %lld waiting tasks)", c->cfg.name,
                             (long long)c->cfg.max_length);
    if (outcome) *outcome = status;
    return 0;
}

/* ---- lease ---- */

void queue_lease_clear(queue_lease_t *l, size_t n) {
    for (size_t i = 0; l && i < n; i++) {
        free(l[i].payload);
        l[i].payload = NULL;
        l[i].payload_len = 0;
    }
}

static int fail_call(queue_conn_t *c, const char *id, int64_t token, const char *error, int dead, int *outcome,
                     int64_t *delay_ms);

int64_t queue_signed_max_age(const queue_conn_t *c) {
    return c->cfg.signed_max_age_ms > 0 ? c->cfg.signed_max_age_ms : 86400000;
}

int64_t queue_tomb_ms(const queue_conn_t *c) {
    if (!c->cfg.signing_key) return 0;
    int64_t ms = queue_signed_max_age(c) + QUEUE_SIGN_SKEW_MS;
    return ms > c->cfg.result_ttl_ms ? ms : c->cfg.result_ttl_ms;
}

/* With a signing key, a leased task must carry our signature over the queue,
 * its id, payload, priority, attempts, deadline, delay and signing time, and
 * must not be older than signed_max_age_ms. NULL when it may run, else why
 * not. (One that already ended, whose tombstone {q}:tomb:<id> the ending
 * script wrote, is refused as `replayed` by lease.lua itself: no round trip
 * per task.) */
static const char *signature_refusal(queue_conn_t *c, const queue_lease_t *l, const char *payload, size_t len,
                                     const redisReply *sig) {
    if (!c->cfg.signing_key) return NULL;
    if (sig->type != REDIS_REPLY_STRING || sig->len >= QUEUE_SIG_MAX) return "bad_signature";
    long long t_ms, delay, ttl;
    int maxatt, used = 0;
    if (sscanf(sig->str, "v2.%lld.%lld.%lld.%d.%n", &t_ms, &delay, &ttl, &maxatt, &used) != 4 || !used ||
        sig->len - (size_t)used != 64)
        return "bad_signature";
    queue_sign_fields_t f = {queue_name(c), l->id, l->priority, l->max_attempts, ttl, delay, t_ms};
    char want[QUEUE_SIG_MAX];
    queue_sign_task(c->cfg.signing_key, c->cfg.signing_key_len, &f, payload, len, want);
    if (strlen(want) != sig->len || CRYPTO_memcmp(want, sig->str, sig->len)) return "bad_signature";
    /* the fields Redis derived from the signed ones: the deadline from the ttl, the enqueue time */
    if ((ttl > 0 ? l->deadline_ms - l->enqueued_ms != ttl : l->deadline_ms != 0) ||
        llabs(l->enqueued_ms - t_ms) > QUEUE_SIGN_SKEW_MS)
        return "bad_signature";
    int64_t now = wall_ms();
    if (now + QUEUE_SIGN_SKEW_MS < t_ms + delay) return "bad_signature"; /* its delay cut short */
    if (now - t_ms > queue_signed_max_age(c)) return "signature_too_old";
    return NULL;
}

int queue_lease(queue_conn_t *c, int n, const char *worker, int64_t lease_ms, queue_lease_t *out, int *got) {
    *got = 0;
    if (n < 1 || n > 10000 || lease_ms < 1)
        return queue_set_err(c, QUEUE_EINVAL, "lease: n must be 1..10000 and lease_ms positive");
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, n);
    queue_args_str(&a, worker ? worker : "");
    queue_args_int(&a, lease_ms);
    queue_args_int(&a, c->cfg.result_ttl_ms);
    queue_args_int(&a, (int64_t)c->cfg.max_payload_bytes);
    queue_args_int(&a, c->cfg.signing_key != NULL); /* lease.lua refuses replayed signed tasks itself */
    redisReply *r;
    int rc = queue_conn_eval(c, QS_LEASE, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, LEASE_FIELDS, "lease"))) goto done;
    for (size_t i = 0; i < r->elements / LEASE_FIELDS && *got < n; i++) {
        redisReply **e = r->element + i * LEASE_FIELDS;
        queue_lease_t *l = &out[*got];
        memset(l, 0, sizeof *l);
        if (e[0]->type != REDIS_REPLY_STRING || e[0]->len >= QUEUE_ID_MAX) continue;
        memcpy(l->id, e[0]->str, e[0]->len + 1);
        l->token = queue_reply_int(e[1]);
        l->attempt = (int)queue_reply_int(e[2]);
        l->max_attempts = (int)queue_reply_int(e[3]);
        l->priority = (int)queue_reply_int(e[4]);
        l->deadline_ms = queue_reply_int(e[5]);
        l->lease_until_ms = queue_reply_int(e[6]);
        l->enqueued_ms = queue_reply_int(e[7]);
        const char *payload = e[8]->type == REDIS_REPLY_STRING ? e[8]->str : "";
        size_t plen = e[8]->type == REDIS_REPLY_STRING ? e[8]->len : 0;
        int64_t size = queue_reply_int(e[10]);
        if (size > 0 && (size_t)size > plen) { /* withheld (over max_payload_bytes): the caller refuses it */
            l->payload_withheld = (size_t)size;
            l->payload = calloc(1, 1);
            if (!l->payload) continue; /* the lease runs out and it is handed out again */
            (*got)++;
            continue;
        }
        const char *refused = signature_refusal(c, l, payload, plen, e[9]);
        if (refused) {
            /* Never run: straight to the DLQ. A failure here leaves the lease
             * to expire, and the next lease tries the verdict again. */
            fail_call(c, l->id, l->token, refused, 1, NULL, NULL);
            continue;
        }
        l->payload = malloc(plen + 1);
        if (!l->payload) {
            /* Hand it back rather than lose track of it. */
            queue_ref_t ref = {l->id, l->token};
            int st;
            queue_release(c, &ref, 1, &st);
            continue;
        }
        memcpy(l->payload, payload, plen);
        l->payload[plen] = 0;
        l->payload_len = plen;
        (*got)++;
    }
done:
    freeReplyObject(r);
    return rc;
}

/* ---- renew, ack, release: batches of (id, token[, result]) ---- */

/* One script call per CHUNK items: ARGV is `head` then id token [result]
 * per item; the script answers one integer code per item, mapped by `map`. */
typedef struct {
    const char *id;
    int64_t token;
    const char *result; /* NULL: the script takes no result */
    size_t result_len;
} batch_item_t;

static int batch_call(queue_conn_t *c, queue_script_id_t s, int64_t head, size_t n,
                      void (*get)(const void *items, size_t i, batch_item_t *out), const void *items,
                      int (*map)(int64_t code), int *status) {
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t m = n - off < CHUNK ? n - off : CHUNK;
        queue_args_t a;
        queue_args_init(&a);
        queue_args_int(&a, head);
        for (size_t i = off; i < off + m; i++) {
            batch_item_t it;
            get(items, i, &it);
            if (id_ok(c, it.id)) return queue_args_free(&a), QUEUE_EINVAL;
            queue_args_str(&a, it.id);
            queue_args_int(&a, it.token);
            if (s == QS_ACK) queue_args_add(&a, it.result, it.result ? it.result_len : 0);
        }
        redisReply *r;
        int rc = queue_conn_eval(c, s, &a, &r);
        queue_args_free(&a);
        if (rc) return rc;
        if ((rc = reply_array(c, r, 0, queue_script_name[s])) == 0 && r->elements != m)
            rc = queue_set_err(c, QUEUE_EPROTO, "redis: %s answered %zu of %zu", queue_script_name[s], r->elements, m);
        for (size_t i = 0; rc == 0 && i < m; i++) status[off + i] = map(queue_reply_int(r->element[i]));
        freeReplyObject(r);
        if (rc) return rc;
    }
    return 0;
}

static void get_ref(const void *items, size_t i, batch_item_t *out) {
    const queue_ref_t *r = (const queue_ref_t *)items + i;
    *out = (batch_item_t){r->id, r->token, NULL, 0};
}

static void get_ack(const void *items, size_t i, batch_item_t *out) {
    const queue_ack_t *a = (const queue_ack_t *)items + i;
    *out = (batch_item_t){a->id, a->token, a->result, a->result_len};
}

static int map_renew(int64_t code) {
    return code == 0 ? QUEUE_RENEWED : code == 2 ? QUEUE_CANCEL_REQUESTED : QUEUE_LOST;
}
static int map_ack(int64_t code) { return code >= 0 ? QUEUE_OK : QUEUE_ESTALE; }
static int map_release(int64_t code) { return code < 0 ? QUEUE_ESTALE : (int)code; }

int queue_renew(queue_conn_t *c, const queue_ref_t *refs, size_t n, int64_t lease_ms, int *status) {
    if (lease_ms < 1) return queue_set_err(c, QUEUE_EINVAL, "renew: lease_ms must be positive");
    return batch_call(c, QS_RENEW, lease_ms, n, get_ref, refs, map_renew, status);
}

int queue_ack_many(queue_conn_t *c, const queue_ack_t *acks, size_t n, int64_t result_ttl_ms, int *status) {
    return batch_call(c, QS_ACK, ttl_or_default(c, result_ttl_ms), n, get_ack, acks, map_ack, status);
}

int queue_ack(queue_conn_t *c, const char *id, int64_t token, const char *result, size_t result_len,
              int64_t result_ttl_ms) {
    queue_ack_t ack = {id, token, result, result_len};
    int status = 0;
    int rc = queue_ack_many(c, &ack, 1, result_ttl_ms, &status);
    if (rc) return rc;
    if (status) return queue_set_err(c, QUEUE_ESTALE, "ack %s: token %lld no longer holds the lease", id, (long long)token);
    return 0;
}

int queue_release(queue_conn_t *c, const queue_ref_t *refs, size_t n, int *status) {
    return batch_call(c, QS_RELEASE, c->cfg.result_ttl_ms, n, get_ref, refs, map_release, status);
}

/* ---- fail ---- */

static int fail_call(queue_conn_t *c, const char *id, int64_t token, const char *error, int dead, int *outcome,
                     int64_t *delay_ms) {
    if (id_ok(c, id)) return QUEUE_EINVAL;
    queue_args_t a;
    queue_args_init(&a);
    queue_args_str(&a, id);
    queue_args_int(&a, token);
    queue_args_str(&a, error && *error ? error : "failed");
    queue_args_int(&a, c->cfg.backoff_base_ms);
    queue_args_int(&a, c->cfg.backoff_cap_ms);
    queue_args_double(&a, c->cfg.backoff_jitter);
    queue_args_double(&a, queue_rand01(c));
    queue_args_int(&a, c->cfg.result_ttl_ms);
    queue_args_int(&a, c->cfg.dlq_max_length > 0 ? c->cfg.dlq_max_length : -1);
    queue_args_int(&a, c->cfg.dlq_max_age_ms);
    queue_args_str(&a, dead ? "dead" : "retry");
    redisReply *r;
    int rc = queue_conn_eval(c, QS_FAIL, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 0, "fail")) == 0 && (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING))
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to fail");
    if (rc == 0) {
        const char *what = r->element[0]->str;
        if (delay_ms) *delay_ms = queue_reply_int(r->element[1]);
        int o = !strcmp(what, "delayed") ? QUEUE_FAIL_RETRY : !strcmp(what, "dlq") ? QUEUE_FAIL_DEAD
              : !strcmp(what, "cancelled") ? QUEUE_FAIL_CANCELLED : -1;
        if (o < 0) rc = queue_set_err(c, QUEUE_ESTALE, "fail %s: token %lld no longer holds the lease", id, (long long)token);
        else if (outcome) *outcome = o;
    }
    freeReplyObject(r);
    return rc;
}

int queue_fail(queue_conn_t *c, const char *id, int64_t token, const char *error, int *outcome, int64_t *delay_ms) {
    return fail_call(c, id, token, error, 0, outcome, delay_ms);
}

/* ---- reap, cancel ---- */

int queue_reap(queue_conn_t *c, int force, int limit, queue_reap_t *out) {
    queue_args_t a;
    queue_args_init(&a);
    queue_args_str(&a, force ? "1" : "0");
    queue_args_int(&a, c->cfg.reap_interval_ms);
    queue_args_int(&a, limit > 0 ? limit : 1000);
    queue_args_int(&a, c->cfg.result_ttl_ms);
    queue_args_int(&a, c->cfg.dlq_max_length > 0 ? c->cfg.dlq_max_length : -1);
    queue_args_int(&a, c->cfg.dlq_max_age_ms);
    redisReply *r;
    int rc = queue_conn_eval(c, QS_REAP, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 6, "reap")) == 0 && r->elements != 6)
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to reap");
    if (rc == 0 && out) {
        out->swept = (int)queue_reply_int(r->element[0]);
        out->reaped = queue_reply_int(r->element[1]);
        out->dead = queue_reply_int(r->element[2]);
        out->expired = queue_reply_int(r->element[3]);
        out->promoted = queue_reply_int(r->element[4]);
        out->cancelled = queue_reply_int(r->element[5]);
    }
    freeReplyObject(r);
    return rc;
}

/* One-id scripts that answer a word (cancel, wait_prepare): a copy of it. */
static int word_call(queue_conn_t *c, queue_script_id_t s, const char *id, char *word, size_t wlen) {
    if (id_ok(c, id)) return QUEUE_EINVAL;
    queue_args_t a;
    queue_args_init(&a);
    queue_args_str(&a, id);
    queue_args_int(&a, c->cfg.result_ttl_ms);
    redisReply *r;
    int rc = queue_conn_eval(c, s, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to %s", queue_script_name[s]);
    else
        snprintf(word, wlen, "%s", r->str);
    freeReplyObject(r);
    return rc;
}

int queue_cancel(queue_conn_t *c, const char *id, int *outcome) {
    char word[32];
    int rc = word_call(c, QS_CANCEL, id, word, sizeof word);
    if (rc) return rc;
    if (!strcmp(word, "notfound")) return queue_set_err(c, QUEUE_ENOTFOUND, "cancel %s: no such task", id);
    int o = !strcmp(word, "now") ? QUEUE_CANCELLED_NOW : !strcmp(word, "requested") ? QUEUE_CANCEL_PENDING : -1;
    if (o < 0) return queue_set_err(c, QUEUE_ESTATE, "cancel %s: the task has already ended (%s)", id, word);
    if (outcome) *outcome = o;
    return 0;
}

/* ---- get, wait ---- */

void queue_info_clear(queue_info_t *info) {
    if (!info) return;
    free(info->payload);
    free(info->result);
    free(info->error);
    free(info->worker);
    memset(info, 0, sizeof *info);
}

int queue_get(queue_conn_t *c, const char *id, queue_info_t *out) {
    memset(out, 0, sizeof *out);
    if (id_ok(c, id)) return QUEUE_EINVAL;
    queue_args_t a;
    queue_args_init(&a);
    queue_args_str(&a, id);
    redisReply *r;
    int rc = queue_conn_eval(c, QS_GET, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 0, "get")) == 0 && r->elements != GET_FIELDS)
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to get");
    if (rc) goto done;
    redisReply **e = r->element;
    if (e[0]->type != REDIS_REPLY_STRING && e[15]->type != REDIS_REPLY_STRING) {
        rc = queue_set_err(c, QUEUE_ENOTFOUND, "task %s: not found (never enqueued, or its result expired)", id);
        goto done;
    }
    out->state = e[0]->type == REDIS_REPLY_STRING ? queue_state_parse(e[0]->str) : QUEUE_S_UNKNOWN;
    out->attempts = (int)queue_reply_int(e[1]);
    out->max_attempts = (int)queue_reply_int(e[2]);
    out->priority = (int)queue_reply_int(e[3]);
    out->enqueued_ms = queue_reply_int(e[4]);
    out->finished_ms = queue_reply_int(e[5]);
    out->deadline_ms = queue_reply_int(e[6]);
    out->error = queue_reply_dup(e[7], NULL);
    out->cancel_requested = queue_reply_int(e[8]) == 1;
    out->payload = queue_reply_dup(e[9], &out->payload_len);
    out->dead_ms = queue_reply_int(e[10]);
    out->due_ms = queue_reply_int(e[11]);
    out->token = queue_reply_int(e[12]);
    out->worker = queue_reply_dup(e[13], NULL);
    out->lease_until_ms = out->state == QUEUE_S_LEASED ? queue_reply_int(e[14]) : 0;
    out->result = queue_reply_dup(e[15], &out->result_len);
    if ((e[7]->type == REDIS_REPLY_STRING && !out->error) || (e[9]->type == REDIS_REPLY_STRING && !out->payload) ||
        (e[15]->type == REDIS_REPLY_STRING && !out->result) || (e[13]->type == REDIS_REPLY_STRING && !out->worker)) {
        queue_info_clear(out);
        rc = queue_set_err(c, QUEUE_ENOMEM, "get %s: out of memory", id);
    }
done:
    freeReplyObject(r);
    return rc;
}

static int64_t now_ms_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int queue_wait(queue_conn_t *c, const char *id, int64_t timeout_ms, queue_info_t *out) {
    memset(out, 0, sizeof *out);
    if (id_ok(c, id)) return QUEUE_EINVAL;
    int64_t end = now_ms_mono() + (timeout_ms > 0 ? timeout_ms : 0);
    char key[QUEUE_NAME_MAX + QUEUE_ID_MAX + 8];
    snprintf(key, sizeof key, "%sw:%s", c->prefix, id);
    for (;;) {
        int64_t left = end - now_ms_mono();
        if (left <= 0) break;
        char word[32];
        int rc = word_call(c, QS_WAIT_PREPARE, id, word, sizeof word);
        if (rc) return rc;
        if (!strcmp(word, "notfound")) return queue_set_err(c, QUEUE_ENOTFOUND, "task %s: not found", id);
        if (strcmp(word, "waiting")) break; /* already ended */
        left = end - now_ms_mono();
        if (left <= 0) break;
        rc = queue_conn_blpop(c, key, left);
        if (rc < 0) return rc;
        if (rc == 0) break; /* timed out */
        /* Woken: normally the task ended; a stale wake-up (the task was
         * requeued from the DLQ since) loops to wait again. */
        rc = queue_get(c, id, out);
        if (rc || queue_state_is_terminal(out->state)) return rc;
        queue_info_clear(out);
    }
    return queue_get(c, id, out);
}

int queue_mark_listening(queue_conn_t *c, int64_t ttl_ms) {
    if (ttl_ms < 1) return queue_set_err(c, QUEUE_EINVAL, "mark listening: ttl_ms must be positive");
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, ttl_ms);
    redisReply *r;
    int rc = queue_conn_eval(c, QS_SUBSCRIBED, &a, &r);
    queue_args_free(&a);
    if (rc == 0) freeReplyObject(r);
    return rc;
}

/* ---- stats ---- */

int queue_stats(queue_conn_t *c, queue_stats_t *out) {
    memset(out, 0, sizeof *out);
    queue_args_t a;
    queue_args_init(&a);
    redisReply *r;
    int rc = queue_conn_eval(c, QS_STATS, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 0, "stats")) == 0 && (r->elements < 4 || r->elements % 2))
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to stats");
    if (rc == 0) {
        out->ready = queue_reply_int(r->element[0]);
        out->delayed = queue_reply_int(r->element[1]);
        out->leased = queue_reply_int(r->element[2]);
        out->dlq = queue_reply_int(r->element[3]);
        static const struct {
            const char *name;
            size_t off;
        } counters[] = {
#define COUNTER(f) {#f, offsetof(queue_stats_t, f)}
            COUNTER(enqueued), COUNTER(acked),    COUNTER(retried),  COUNTER(failed),   COUNTER(expired),
            COUNTER(cancelled), COUNTER(deduped), COUNTER(rejected), COUNTER(reaped),   COUNTER(released),
            COUNTER(requeued), COUNTER(purged),   COUNTER(bad_signature),
#undef COUNTER
        };
        for (size_t i = 4; i + 1 < r->elements; i += 2) {
            const redisReply *k = r->element[i];
            if (k->type != REDIS_REPLY_STRING) continue;
            for (size_t j = 0; j < sizeof counters / sizeof *counters; j++)
                if (!strcmp(k->str, counters[j].name))
                    *(int64_t *)((char *)out + counters[j].off) = queue_reply_int(r->element[i + 1]);
        }
    }
    freeReplyObject(r);
    return rc;
}

/* ---- dead-letter queue ---- */

void queue_dlq_entries_clear(queue_dlq_entry_t *e, size_t n) {
    for (size_t i = 0; e && i < n; i++) {
        free(e[i].error);
        e[i].error = NULL;
    }
}

int queue_dlq_list(queue_conn_t *c, size_t offset, size_t max, queue_dlq_entry_t *out, size_t *got) {
    *got = 0;
    if (max == 0) return 0;
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, (int64_t)offset);
    queue_args_int(&a, (int64_t)max);
    redisReply *r;
    int rc = queue_conn_eval(c, QS_DLQ_LIST, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, DLQ_FIELDS, "dlq list")) == 0) {
        for (size_t i = 0; i < r->elements / DLQ_FIELDS && *got < max; i++) {
            redisReply **e = r->element + i * DLQ_FIELDS;
            queue_dlq_entry_t *d = &out[*got];
            memset(d, 0, sizeof *d);
            if (e[0]->type != REDIS_REPLY_STRING || e[0]->len >= QUEUE_ID_MAX) continue;
            memcpy(d->id, e[0]->str, e[0]->len + 1);
            d->dead_ms = queue_reply_int(e[1]);
            d->attempts = (int)queue_reply_int(e[2]);
            d->max_attempts = (int)queue_reply_int(e[3]);
            d->error = queue_reply_dup(e[4], NULL);
            (*got)++;
        }
    }
    freeReplyObject(r);
    return rc;
}

int queue_dlq_requeue(queue_conn_t *c, const char *id, int64_t *moved) {
    int64_t total = 0;
    if (id && id_ok(c, id)) return QUEUE_EINVAL;
    for (;;) {
        queue_args_t a;
        queue_args_init(&a);
        queue_args_str(&a, id ? id : "");
        queue_args_int(&a, 500);
        redisReply *r;
        int rc = queue_conn_eval(c, QS_DLQ_REQUEUE, &a, &r);
        queue_args_free(&a);
        if (rc) return rc;
        if ((rc = reply_array(c, r, 2, "dlq requeue")) == 0 && r->elements != 2)
            rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to dlq requeue");
        int64_t n = rc ? 0 : queue_reply_int(r->element[0]);
        int64_t left = rc ? 0 : queue_reply_int(r->element[1]);
        freeReplyObject(r);
        if (rc) return rc;
        total += n;
        if (id || n == 0 || left == 0) break;
    }
    if (moved) *moved = total;
    if (id && total == 0) return queue_set_err(c, QUEUE_ENOTFOUND, "dlq requeue %s: not in the dead-letter queue", id);
    return 0;
}

int queue_dlq_purge(queue_conn_t *c, int64_t keep, int64_t older_than_ms, int64_t *removed) {
    int64_t total = 0;
    if (keep < 0 && older_than_ms <= 0)
        return queue_set_err(c, QUEUE_EINVAL, "dlq purge: give a count to keep or an age");
    for (;;) {
        queue_args_t a;
        queue_args_init(&a);
        queue_args_int(&a, keep);
        queue_args_int(&a, older_than_ms > 0 ? older_than_ms : 0);
        redisReply *r;
        int rc = queue_conn_eval(c, QS_DLQ_PURGE, &a, &r);
        queue_args_free(&a);
        if (rc) return rc;
        int64_t n = queue_reply_int(r);
        freeReplyObject(r);
        total += n;
        if (n == 0) break;
    }
    if (removed) *removed = total;
    return 0;
}

/* ---- token streams ---- */

int queue_stream_add(queue_conn_t *c, const queue_stream_entry_t *e, size_t n, int64_t maxlen, int64_t ttl_ms,
                     int *status) {
    if (n == 0) return 0;
    if (maxlen < 1 || ttl_ms < 1) return queue_set_err(c, QUEUE_EINVAL, "stream add: maxlen and ttl must be positive");
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, maxlen);
    queue_args_int(&a, ttl_ms);
    for (size_t i = 0; i < n; i++) {
        if (id_ok(c, e[i].id) || !e[i].field || !*e[i].field) {
            queue_args_free(&a);
            return QUEUE_EINVAL;
        }
        queue_args_str(&a, e[i].id);
        queue_args_int(&a, e[i].token);
        queue_args_str(&a, e[i].field);
        queue_args_add(&a, e[i].value ? e[i].value : "", e[i].value ? e[i].value_len : 0);
    }
    redisReply *r;
    int rc = queue_conn_eval(c, QS_STREAM_ADD, &a, &r);
    queue_args_free(&a);
    if (rc) return rc;
    if ((rc = reply_array(c, r, 0, "stream_add")) == 0 && r->elements != n)
        rc = queue_set_err(c, QUEUE_EPROTO, "redis: unexpected answer to stream_add");
    for (size_t i = 0; !rc && status && i < n; i++) status[i] = (int)queue_reply_int(r->element[i]);
    freeReplyObject(r);
    return rc;
}
