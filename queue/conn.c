/* queue/conn.c - the Redis connection of a queue_conn_t: URL parsing,
 * connect (AUTH, SELECT, SCRIPT LOAD), and script calls that survive Redis
 * restarts and SCRIPT FLUSH.
 *
 * Every round trip has a socket timeout (command_timeout_ms), so a dead
 * Redis cannot hang a thread. A broken or timed-out connection is dropped
 * (its stream may be out of step) and the call reconnects with backoff for up
 * to reconnect_ms, then repeats the script once connected: each script is
 * safe to repeat (see queue.h). LOADING (Redis replaying its AOF) and
 * NOSCRIPT (scripts flushed, or a fresh server) are retried the same way.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "queue/cluster.h"
#include "queue/conn.h"

/* ---- script texts: prelude + body, and their SHA1s, built once ---- */

static char *script_text[QS_COUNT];
static char script_sha[QS_COUNT][41];
static int scripts_ok;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_build(void) {
    size_t plen = strlen(queue_script_prelude);
    for (int i = 0; i < QS_COUNT; i++) {
        size_t blen = strlen(queue_script_body[i]);
        script_text[i] = malloc(plen + blen + 1);
        if (!script_text[i]) return;
        memcpy(script_text[i], queue_script_prelude, plen);
        memcpy(script_text[i] + plen, queue_script_body[i], blen + 1);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (!EVP_Digest(script_text[i], plen + blen, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) return;
        for (unsigned j = 0; j < 20; j++) snprintf(script_sha[i] + 2 * j, 3, "%02x", md[j]);
    }
    scripts_ok = 1;
}

/* ---- small helpers ---- */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static struct timeval tv_ms(int64_t ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

int queue_set_err(queue_conn_t *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

double queue_rand01(queue_conn_t *c) {
    uint64_t x = c->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->rng = x;
    return (double)(x >> 11) / 9007199254740992.0;
}

int64_t queue_reply_int(const redisReply *r) {
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return strtoll(r->str, NULL, 10);
    return 0;
}

char *queue_reply_dup(const redisReply *r, size_t *len) {
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) {
        if (len) *len = 0;
        return NULL;
    }
    char *s = malloc(r->len + 1);
    if (!s) return NULL;
    memcpy(s, r->str, r->len);
    s[r->len] = 0;
    if (len) *len = r->len;
    return s;
}

/* ---- arguments ---- */

void queue_args_init(queue_args_t *a) { memset(a, 0, sizeof *a); }

void queue_args_free(queue_args_t *a) {
    for (int i = 0; i < a->nowned; i++) free(a->owned[i]);
    free(a->owned);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof *a);
}

static int args_grow(queue_args_t *a) {
    if (a->n < a->cap) return 0;
    int cap = a->cap ? a->cap * 2 : 32;
    const char **v = realloc(a->v, cap * sizeof *v);
    if (v) a->v = v;
    size_t *len = realloc(a->len, cap * sizeof *len);
    if (len) a->len = len;
    char **owned = realloc(a->owned, cap * sizeof *owned);
    if (owned) a->owned = owned;
    if (!v || !len || !owned) return a->failed = 1, -1;
    a->cap = cap;
    return 0;
}

void queue_args_add(queue_args_t *a, const char *s, size_t len) {
    if (a->failed || args_grow(a)) return;
    a->v[a->n] = s ? s : "";
    a->len[a->n] = s ? len : 0;
    a->n++;
}

void queue_args_str(queue_args_t *a, const char *s) { queue_args_add(a, s, s ? strlen(s) : 0); }

static void args_own(queue_args_t *a, const char *text) {
    if (a->failed || args_grow(a)) return;
    char *s = strdup(text);
    if (!s) {
        a->failed = 1;
        return;
    }
    a->owned[a->nowned++] = s;
    queue_args_add(a, s, strlen(s));
}

void queue_args_int(queue_args_t *a, int64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    args_own(a, buf);
}

void queue_args_double(queue_args_t *a, double v) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    args_own(a, buf);
}

/* ---- URL ---- */

/* "?wait_replicas=N&wait_timeout_ms=T" after the path. */
static int url_query(const char *url, const char *q, queue_url_t *out, char *err, size_t errlen) {
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        char *e;
        long v = eq ? strtol(eq + 1, &e, 10) : -1;
        int *field = !eq ? NULL
                   : (size_t)(eq - q) == 13 && !strncmp(q, "wait_replicas", 13) ? &out->wait_replicas
                   : (size_t)(eq - q) == 15 && !strncmp(q, "wait_timeout_ms", 15) ? &out->wait_timeout_ms
                   : NULL;
        if (!field || e == eq + 1 || e != q + n || v < 0 || v > 1000000) {
            snprintf(err, errlen, "redis URL '%s': unknown or bad option '%.*s' (wait_replicas=N, wait_timeout_ms=T)",
                     url, (int)n, q);
            return QUEUE_EINVAL;
        }
        *field = (int)v;
        q += n + (q[n] == '&');
    }
    return 0;
}

int queue_url_parse(const char *url, queue_url_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    snprintf(out->host, sizeof out->host, "127.0.0.1");
    out->port = 6379;
    if (!url || !*url) return 0;
    /* A cluster URL (redis+cluster:// or a seed list h1:p1,h2:p2): the first
     * seed with the shared auth and options. */
    const char *scheme = strstr(url, "://");
    const char *authority = scheme ? scheme + 3 : url;
    if (!strncmp(url, "redis+cluster://", 16) || memchr(authority, ',', strcspn(authority, "/?"))) {
        char one[1024];
        if (queue_seed_url(url, 0, one, sizeof one)) {
            snprintf(err, errlen, "redis URL '%s': too long", url);
            return QUEUE_EINVAL;
        }
        return queue_url_parse(one, out, err, errlen);
    }
    char plain[1024];
    const char *query = strchr(url, '?');
    if (query) {
        if ((size_t)(query - url) >= sizeof plain) {
            snprintf(err, errlen, "redis URL '%s': too long", url);
            return QUEUE_EINVAL;
        }
        memcpy(plain, url, query - url);
        plain[query - url] = 0;
        if (url_query(url, query + 1, out, err, errlen)) return QUEUE_EINVAL;
        url = plain;
    }
    const char *p = url;
    if (!strncmp(p, "redis://", 8)) p += 8;
    else if (strstr(p, "://")) {
        snprintf(err, errlen, "redis URL '%s': only redis:// is supported", url);
        return QUEUE_EINVAL;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@') at = q; /* the last '@': passwords may hold one */
    if (at) {
        const char *colon = memchr(p, ':', at - p);
        size_t ulen = colon ? (size_t)(colon - p) : (size_t)(at - p);
        const char *pw = colon ? colon + 1 : NULL;
        if (!colon) { /* redis://password@host is accepted as a password */
            pw = p;
            ulen = 0;
        }
        size_t plen = at - pw;
        if (ulen >= sizeof out->user || plen >= sizeof out->password) {
            snprintf(err, errlen, "redis URL '%s': user or password too long", url);
            return QUEUE_EINVAL;
        }
        memcpy(out->user, p, ulen);
        memcpy(out->password, pw, plen);
        p = at + 1;
    }
    const char *hend = end;
    const char *colon = NULL;
    if (*p == '[') { /* [ipv6]:port */
        const char *rb = memchr(p, ']', end - p);
        if (!rb) {
            snprintf(err, errlen, "redis URL '%s': unclosed '['", url);
            return QUEUE_EINVAL;
        }
        if ((size_t)(rb - p - 1) >= sizeof out->host) goto bad_host;
        memcpy(out->host, p + 1, rb - p - 1);
        out->host[rb - p - 1] = 0;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', end - p);
        if (colon) hend = colon;
        if (hend > p) {
            if ((size_t)(hend - p) >= sizeof out->host) goto bad_host;
            memcpy(out->host, p, hend - p);
            out->host[hend - p] = 0;
        }
    }
    if (colon) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != end || port < 1 || port > 65535) {
            snprintf(err, errlen, "redis URL '%s': bad port", url);
            return QUEUE_EINVAL;
        }
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > INT_MAX) {
            snprintf(err, errlen, "redis URL '%s': bad database number", url);
            return QUEUE_EINVAL;
        }
        out->db = (int)db;
    }
    return 0;
bad_host:
    snprintf(err, errlen, "redis URL '%s': host too long", url);
    return QUEUE_EINVAL;
}

/* ---- connection ---- */

/* hiredis reports a socket timeout as EAGAIN's text; say what happened. */
static const char *ctx_error(const queue_conn_t *c, const redisContext *ctx) {
    static __thread char buf[96];
    if (!ctx) return "not connected";
    if (ctx->err == REDIS_ERR_IO && (strstr(ctx->errstr, "temporarily unavailable") ||
                                     strstr(ctx->errstr, "timed out"))) {
        snprintf(buf, sizeof buf, "no answer within the timeout (%d ms)", c->cfg.command_timeout_ms);
        return buf;
    }
    if (ctx->err == REDIS_ERR_EOF || !ctx->errstr[0]) return "connection closed by the server";
    return ctx->errstr;
}

/* A lost connection in a cluster may mean a moved slot or a failed node:
 * the next connect asks the cluster where the slot lives. */
static void drop_ctx(queue_conn_t *c) {
    if (c->ctx) {
        redisFree(c->ctx);
        if (c->cluster) c->stale = 1;
    }
    c->ctx = NULL;
}

/* A command outside the retry loop (connect-time set-up): 0 or -1 + c->err. */
static int simple_command(queue_conn_t *c, redisContext *ctx, const queue_node_t *n, int argc, const char **argv,
                          const size_t *lens) {
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    if (!r) return queue_set_err(c, -1, "redis %s:%d: %s", n->host, n->port, ctx_error(c, ctx));
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) rc = queue_set_err(c, -1, "redis %s:%d: %s: %s", n->host, n->port, argv[0], r->str);
    freeReplyObject(r);
    return rc;
}

static int load_scripts(queue_conn_t *c, redisContext *ctx, const queue_node_t *n) {
    for (int i = 0; i < QS_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", script_text[i]};
        size_t lens[3] = {6, 4, strlen(script_text[i])};
        if (redisAppendCommandArgv(ctx, 3, argv, lens) != REDIS_OK)
            return queue_set_err(c, -1, "redis %s:%d: %s", n->host, n->port, ctx_error(c, ctx));
    }
    int rc = 0;
    for (int i = 0; i < QS_COUNT; i++) {
        redisReply *r = NULL;
        if (redisGetReply(ctx, (void **)&r) != REDIS_OK || !r)
            return queue_set_err(c, -1, "redis %s:%d: %s", n->host, n->port, ctx_error(c, ctx));
        if (r->type == REDIS_REPLY_ERROR)
            rc = queue_set_err(c, -1, "redis: loading script %s: %s", queue_script_name[i], r->str);
        else if (r->type != REDIS_REPLY_STRING || strcmp(r->str, script_sha[i]))
            rc = queue_set_err(c, -1, "redis: script %s loaded under an unexpected SHA", queue_script_name[i]);
        freeReplyObject(r);
    }
    return rc;
}

/* Process-wide, for metrics: reconnects after a lost connection, and failed
 * attempts (connects, lost replies, transient errors) on any connection. */
static atomic_ullong io_reconnects, io_errors;

void queue_io_counters(uint64_t *reconnects, uint64_t *errors) {
    *reconnects = atomic_load(&io_reconnects);
    *errors = atomic_load(&io_errors);
}

/* The socket must outlast a WAIT's own limit. */
static int64_t round_trip_ms(const queue_conn_t *c) {
    return (int64_t)c->cfg.command_timeout_ms + (c->cfg.wait_replicas ? c->cfg.wait_timeout_ms : 0);
}

/* Connect to one node: AUTH, SELECT and, with scripts, SCRIPT LOAD of every
 * script. NULL with c->err. */
static redisContext *node_open(queue_conn_t *c, const queue_node_t *n, int scripts) {
    redisContext *ctx = redisConnectWithTimeout(n->host, n->port, tv_ms(c->cfg.connect_timeout_ms));
    if (!ctx) {
        queue_set_err(c, -1, "redis %s:%d: out of memory", n->host, n->port);
        return NULL;
    }
    if (ctx->err) {
        queue_set_err(c, -1, "redis %s:%d: %s", n->host, n->port, ctx->errstr);
        goto fail;
    }
    redisSetTimeout(ctx, tv_ms(round_trip_ms(c)));
    redisEnableKeepAlive(ctx);
    if (c->url.password[0]) {
        const char *argv[3] = {"AUTH", c->url.user, c->url.password};
        size_t lens[3] = {4, strlen(c->url.user), strlen(c->url.password)};
        int rc = c->url.user[0] ? simple_command(c, ctx, n, 3, argv, lens)
                                : simple_command(c, ctx, n, 2, (const char *[]){"AUTH", c->url.password},
                                                 (size_t[]){4, lens[2]});
        if (rc) goto fail;
    }
    if (c->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->url.db);
        if (simple_command(c, ctx, n, 2, (const char *[]){"SELECT", db}, (size_t[]){6, strlen(db)})) goto fail;
    }
    if (scripts && load_scripts(c, ctx, n)) goto fail;
    return ctx;
fail:
    redisFree(ctx);
    return NULL;
}

/* Ask the cluster which master owns the queue's slot: CLUSTER SLOTS from the
 * node at hand (a MOVED target, or the owner that just failed), else from
 * any node of the last map, else from the seeds. 0 with c->node and c->map
 * set, or -1 with c->err. */
static int refresh_map(queue_conn_t *c) {
    size_t ncand = 1 + c->map.nnodes + c->seeds.n;
    queue_node_t *cand = malloc(ncand * sizeof *cand);
    if (!cand) return queue_set_err(c, -1, "queue: out of memory");
    cand[0] = c->node;
    if (c->map.nnodes) memcpy(cand + 1, c->map.nodes, c->map.nnodes * sizeof *cand);
    memcpy(cand + 1 + c->map.nnodes, c->seeds.nodes, c->seeds.n * sizeof *cand);
    int rc = -1;
    for (size_t i = 0; i < ncand && rc; i++) {
        redisContext *ctx = node_open(c, &cand[i], 0);
        if (!ctx) continue;
        redisReply *r = redisCommand(ctx, "CLUSTER SLOTS");
        if (!r) {
            queue_set_err(c, -1, "redis %s:%d: CLUSTER SLOTS: %s", cand[i].host, cand[i].port, ctx_error(c, ctx));
            redisFree(ctx);
            continue;
        }
        redisFree(ctx);
        queue_slot_map_t m;
        char err[256];
        if (queue_slot_map_parse(r, cand[i].host, &m, err, sizeof err)) {
            queue_set_err(c, -1, "redis %s:%d: %s", cand[i].host, cand[i].port, err);
        } else if (!queue_slot_map_owner(&m, c->slot)) {
            queue_set_err(c, -1, "redis %s:%d: no node serves slot %u (queue %s)", cand[i].host, cand[i].port,
                          c->slot, c->cfg.name);
            queue_slot_map_clear(&m);
        } else {
            c->node = *queue_slot_map_owner(&m, c->slot);
            queue_slot_map_clear(&c->map);
            c->map = m;
            c->stale = 0;
            rc = 0;
        }
        freeReplyObject(r);
    }
    free(cand);
    return rc;
}

static int open_ctx_once(queue_conn_t *c) {
    drop_ctx(c);
    if (c->cluster && c->stale && refresh_map(c)) return -1;
    c->ctx = node_open(c, &c->node, 1);
    if (!c->ctx && c->cluster) c->stale = 1;
    return c->ctx ? 0 : -1;
}

static int open_ctx(queue_conn_t *c) {
    if (open_ctx_once(c)) {
        atomic_fetch_add(&io_errors, 1);
        return -1;
    }
    if (c->opened) atomic_fetch_add(&io_reconnects, 1);
    c->opened = 1;
    return 0;
}

/* Transient answers: Redis is starting, replaying, or busy with a script;
 * a cluster is electing a new master or moving keys. */
static int transient_error(const char *s) {
    return !strncmp(s, "LOADING", 7) || !strncmp(s, "BUSY", 4) || !strncmp(s, "MASTERDOWN", 10) ||
           !strncmp(s, "TRYAGAIN", 8) || !strncmp(s, "CLUSTERDOWN", 11) || !strncmp(s, "READONLY", 8);
}

/* One command on ctx (node n), after ASKING when asking, followed by WAIT
 * when durable, all in one round trip. Returns the command's reply, or NULL
 * when the connection failed (c->err set). *acked: the replicas WAIT
 * counted, -1 when not asked. */
static redisReply *pipeline(queue_conn_t *c, redisContext *ctx, const queue_node_t *n, int asking, const char *what,
                            int argc, const char **argv, const size_t *lens, int durable, int *acked) {
    char nrep[16], tmo[16];
    snprintf(nrep, sizeof nrep, "%d", c->cfg.wait_replicas);
    snprintf(tmo, sizeof tmo, "%d", c->cfg.wait_timeout_ms);
    *acked = -1;
    redisReply *r = NULL, *x = NULL;
    if ((asking && redisAppendCommand(ctx, "ASKING") != REDIS_OK) ||
        redisAppendCommandArgv(ctx, argc, argv, lens) != REDIS_OK ||
        (durable && redisAppendCommandArgv(ctx, 3, (const char *[]){"WAIT", nrep, tmo},
                                           (size_t[]){4, strlen(nrep), strlen(tmo)}) != REDIS_OK))
        goto lost;
    if (asking) {
        if (redisGetReply(ctx, (void **)&x) != REDIS_OK || !x) goto lost;
        freeReplyObject(x);
    }
    if (redisGetReply(ctx, (void **)&r) != REDIS_OK || !r) goto lost;
    if (durable) {
        if (redisGetReply(ctx, (void **)&x) != REDIS_OK || !x) goto lost;
        if (x->type == REDIS_REPLY_INTEGER) *acked = (int)x->integer;
        freeReplyObject(x);
    }
    return r;
lost:
    queue_set_err(c, QUEUE_EREDIS, "redis %s:%d: %s: %s", n->host, n->port, what, ctx_error(c, ctx));
    if (r) freeReplyObject(r);
    return NULL;
}

/* Scripts whose writes WAIT covers: all but the read-only ones, the waiter
 * registration and the listener mark (a lost one only costs a poll). */
static int script_writes(queue_script_id_t s) {
    return s != QS_GET && s != QS_STATS && s != QS_DLQ_LIST && s != QS_WAIT_PREPARE && s != QS_SUBSCRIBED;
}

int queue_conn_eval(queue_conn_t *c, queue_script_id_t s, const queue_args_t *a, redisReply **reply) {
    *reply = NULL;
    if (a->failed) return queue_set_err(c, QUEUE_ENOMEM, "out of memory building a %s call", queue_script_name[s]);
    int argc = a->n + 4;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        return queue_set_err(c, QUEUE_ENOMEM, "out of memory building a %s call", queue_script_name[s]);
    }
    argv[0] = "EVALSHA", lens[0] = 7;
    argv[1] = script_sha[s], lens[1] = 40;
    argv[2] = "1", lens[2] = 1;
    argv[3] = c->key1, lens[3] = strlen(c->key1);
    memcpy(argv + 4, a->v, a->n * sizeof *argv);
    memcpy(lens + 4, a->len, a->n * sizeof *lens);

    const char *what = queue_script_name[s];
    int durable = c->cfg.wait_replicas > 0 && script_writes(s);
    int64_t deadline = mono_ms() + c->cfg.reconnect_ms;
    int64_t backoff = 20;
    int rc = QUEUE_EREDIS, noscript = 0, redirects = 0;
    for (;;) {
        if (c->ctx || open_ctx(c) == 0) {
            int acked = -1, asked = 0;
            queue_node_t node;
            redisReply *r = pipeline(c, c->ctx, &c->node, 0, what, argc, argv, lens, durable, &acked);
            if (!r) {
                drop_ctx(c);
            } else if (r->type == REDIS_REPLY_ERROR && queue_redirect_parse(r->str, &node) == QUEUE_REDIR_ASK &&
                       redirects < 16) {
                /* The slot is being moved and this queue's keys are already
                 * on the importing node: one call there, after ASKING. */
                freeReplyObject(r);
                redirects++, asked = 1;
                redisContext *actx = node_open(c, &node, 0);
                r = actx ? pipeline(c, actx, &node, 1, what, argc, argv, lens, durable, &acked) : NULL;
                /* The importing master usually has the scripts already (its
                 * own queues' clients loaded them): load only when missing. */
                if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8) &&
                    load_scripts(c, actx, &node) == 0) {
                    freeReplyObject(r);
                    r = pipeline(c, actx, &node, 1, what, argc, argv, lens, durable, &acked);
                }
                if (actx) redisFree(actx);
            }
            if (!r) {
                atomic_fetch_add(&io_errors, 1);
            } else if (r->type != REDIS_REPLY_ERROR) {
                /* Applied. With WAIT, keep asking until enough replicas
                 * have it; only the WAIT is repeated, never the script. */
                while (durable && acked < c->cfg.wait_replicas && !asked && c->ctx && mono_ms() < deadline) {
                    sleep_ms(backoff);
                    backoff = backoff * 2 < 500 ? backoff * 2 : 500;
                    redisReply *w = redisCommand(c->ctx, "WAIT %d %d", c->cfg.wait_replicas, c->cfg.wait_timeout_ms);
                    if (!w) drop_ctx(c);
                    else if (w->type == REDIS_REPLY_INTEGER) acked = (int)w->integer;
                    if (w) freeReplyObject(w);
                }
                if (durable && acked < c->cfg.wait_replicas) {
                    freeReplyObject(r);
                    rc = queue_set_err(c, QUEUE_EREDIS,
                                       "redis %s:%d: %s: applied on the master but %d of %d replicas acknowledged "
                                       "it (WAIT %d ms, retried for %d ms)",
                                       c->node.host, c->node.port, what, acked < 0 ? 0 : acked,
                                       c->cfg.wait_replicas, c->cfg.wait_timeout_ms, c->cfg.reconnect_ms);
                    break;
                }
                *reply = r;
                rc = QUEUE_OK;
                break;
            } else if (!strncmp(r->str, "NOSCRIPT", 8) && noscript++ < 3) {
                freeReplyObject(r);
                if (load_scripts(c, c->ctx, &c->node) == 0) continue; /* at once: nothing is wrong with Redis */
                drop_ctx(c);
            } else if (queue_redirect_parse(r->str, &node) == QUEUE_REDIR_MOVED && redirects < 16) {
                /* The slot lives elsewhere (resharded, failed over, or a
                 * plain URL that named a cluster node): follow at once and
                 * refresh the map from there. */
                freeReplyObject(r);
                redirects++;
                drop_ctx(c);
                c->cluster = 1;
                c->stale = 1;
                c->node = node;
                continue;
            } else if (transient_error(r->str)) {
                atomic_fetch_add(&io_errors, 1);
                queue_set_err(c, QUEUE_EREDIS, "redis %s:%d: %s: %s", c->node.host, c->node.port, what, r->str);
                if (c->cluster && strncmp(r->str, "LOADING", 7) && strncmp(r->str, "BUSY", 4)) drop_ctx(c);
                freeReplyObject(r);
            } else {
                queue_set_err(c, QUEUE_EREDIS, "redis %s:%d: %s: %s", c->node.host, c->node.port, what, r->str);
                freeReplyObject(r);
                break;
            }
        }
        int64_t now = mono_ms();
        if (now >= deadline) break;
        int64_t wait = backoff / 2 + (int64_t)(queue_rand01(c) * backoff / 2);
        sleep_ms(wait < deadline - now ? wait : deadline - now);
        backoff = backoff * 2 < 1000 ? backoff * 2 : 1000;
    }
    free(argv);
    free(lens);
    return rc;
}

int queue_conn_blpop(queue_conn_t *c, const char *key, int64_t timeout_ms) {
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", (timeout_ms < 10 ? 10 : timeout_ms) / 1000.0);
    for (int redirects = 0;; redirects++) {
        if (!c->ctx && open_ctx(c) != 0) return QUEUE_EREDIS;
        /* The socket must outlast the server-side wait. */
        redisSetTimeout(c->ctx, tv_ms(timeout_ms + round_trip_ms(c)));
        redisReply *r = redisCommandArgv(c->ctx, 3, (const char *[]){"BLPOP", key, secs},
                                         (size_t[]){5, strlen(key), strlen(secs)});
        if (!r) {
            atomic_fetch_add(&io_errors, 1);
            queue_set_err(c, QUEUE_EREDIS, "redis %s:%d: BLPOP: %s", c->node.host, c->node.port, ctx_error(c, c->ctx));
            drop_ctx(c);
            return QUEUE_EREDIS;
        }
        redisSetTimeout(c->ctx, tv_ms(round_trip_ms(c)));
        queue_node_t node;
        int redir = r->type == REDIS_REPLY_ERROR ? queue_redirect_parse(r->str, &node) : QUEUE_REDIR_NONE;
        if (redir == QUEUE_REDIR_MOVED && redirects < 4) {
            freeReplyObject(r);
            drop_ctx(c);
            c->cluster = 1;
            c->stale = 1;
            c->node = node;
            continue;
        }
        int rc = r->type == REDIS_REPLY_ARRAY ? 1 : 0;
        if (redir == QUEUE_REDIR_ASK) {
            /* Mid-migration: answer "woken" after a pause, so the caller
             * looks at the task (its scripts follow ASK) and waits again
             * once the slot has settled. */
            sleep_ms(20);
            rc = 1;
        } else if (r->type == REDIS_REPLY_ERROR) {
            rc = queue_set_err(c, QUEUE_EREDIS, "redis: BLPOP: %s", r->str);
        }
        freeReplyObject(r);
        return rc;
    }
}

/* ---- public: config, connect, close ---- */

void queue_config_defaults(queue_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_timeout_ms = 1000;
    cfg->command_timeout_ms = 2000;
    cfg->reconnect_ms = 3000;
    cfg->max_attempts = 3;
    cfg->result_ttl_ms = 3600000;
    cfg->dedup_ttl_ms = 3600000;
    cfg->backoff_base_ms = 1000;
    cfg->backoff_cap_ms = 60000;
    cfg->backoff_jitter = 0.2;
    cfg->dlq_max_length = 100000;
    cfg->dlq_max_age_ms = 7LL * 24 * 3600 * 1000;
    cfg->reap_interval_ms = 1000;
}

int queue_name_valid(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n >= QUEUE_NAME_MAX) return 0; /* it fits a QUEUE_NAME_MAX buffer */
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              strchr("_.:-", *s)))
            return 0;
    return 1;
}

/* The queue's protocol version ({q}:protocol, set by its first client) must
 * be ours: a worker must not run tasks laid out by a version it does not speak. */
static int protocol_check(queue_conn_t *c, char *err, size_t errlen) {
    queue_args_t a;
    queue_args_init(&a);
    queue_args_int(&a, QUEUE_PROTOCOL_VERSION);
    queue_args_int(&a, queue_tomb_ms(c));
    redisReply *r = NULL;
    int rc = queue_conn_eval(c, QS_HELLO, &a, &r);
    queue_args_free(&a);
    if (rc) {
        snprintf(err, errlen, "%s", c->err);
        return rc;
    }
    char want[16];
    snprintf(want, sizeof want, "%d", QUEUE_PROTOCOL_VERSION);
    int ours = r->type == REDIS_REPLY_STRING && !strcmp(r->str, want);
    if (!ours)
        snprintf(err, errlen,
                 "queue %s speaks protocol version %s (Redis key %sprotocol); this sluice speaks version %d: "
                 "use a sluice of that version, or a new queue name", c->cfg.name,
                 r->type == REDIS_REPLY_STRING ? r->str : "?", c->prefix, QUEUE_PROTOCOL_VERSION);
    freeReplyObject(r);
    return ours ? 0 : QUEUE_EPROTO;
}

queue_conn_t *queue_connect(const queue_config_t *cfg, char *err, size_t errlen) {
    queue_conn_t *c = NULL;
    queue_config_t def;
    if (!cfg) {
        queue_config_defaults(&def);
        cfg = &def;
    }
    pthread_once(&scripts_once, scripts_build);
    if (!scripts_ok) {
        snprintf(err, errlen, "queue: could not prepare the Lua scripts (out of memory)");
        return NULL;
    }
    const char *name = cfg->name ? cfg->name : "sluice";
    if (!queue_name_valid(name)) {
        snprintf(err, errlen, "queue name '%s': use 1..%d of [A-Za-z0-9_.:-]", name, QUEUE_NAME_MAX - 1);
        return NULL;
    }
    if (cfg->connect_timeout_ms <= 0 || cfg->command_timeout_ms <= 0 || cfg->reconnect_ms < 0 ||
        cfg->max_attempts < 1 || cfg->result_ttl_ms <= 0 || cfg->dedup_ttl_ms <= 0 ||
        cfg->backoff_base_ms < 0 || cfg->backoff_cap_ms < 0 || cfg->backoff_jitter < 0 ||
        cfg->backoff_jitter > 1 || cfg->max_length < 0 || cfg->dlq_max_length < 0 ||
        cfg->dlq_max_age_ms < 0 || cfg->reap_interval_ms <= 0 || cfg->wait_replicas < 0 ||
        cfg->wait_timeout_ms < 0) {
        snprintf(err, errlen, "queue config: a timeout, TTL, attempt count or limit is out of range");
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->cfg = *cfg;
    c->url_copy = strdup(cfg->url ? cfg->url : "redis://127.0.0.1:6379/0");
    c->name_copy = strdup(name);
    if (!c->url_copy || !c->name_copy) goto nomem;
    c->cfg.url = c->url_copy;
    c->cfg.name = c->name_copy;
    if (cfg->signing_key) {
        if (!cfg->signing_key_len) {
            snprintf(err, errlen, "queue config: empty task signing key");
            goto fail;
        }
        c->key_copy = malloc(cfg->signing_key_len);
        if (!c->key_copy) goto nomem;
        memcpy(c->key_copy, cfg->signing_key, cfg->signing_key_len);
        c->cfg.signing_key = c->key_copy;
    }
    if (queue_url_parse(c->url_copy, &c->url, err, errlen)) goto fail;
    if (queue_seeds_parse(c->url_copy, &c->seeds, err, errlen)) goto fail;
    c->node = c->seeds.nodes[0];
    c->cluster = c->stale = c->seeds.cluster;
    if (!c->cfg.wait_replicas) c->cfg.wait_replicas = c->url.wait_replicas;
    if (!c->cfg.wait_timeout_ms) c->cfg.wait_timeout_ms = c->url.wait_timeout_ms ? c->url.wait_timeout_ms : 1000;
    snprintf(c->prefix, sizeof c->prefix, "{%s}:", name);
    c->slot = queue_key_slot(c->prefix, strlen(c->prefix));
    snprintf(c->key1, sizeof c->key1, "%sseq", c->prefix);
    if (getrandom(&c->rng, sizeof c->rng, 0) != sizeof c->rng) c->rng = (uint64_t)mono_ms();
    c->rng |= 1;
    /* A write to a socket Redis closed must be an error, not a SIGPIPE death. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);

    int64_t deadline = mono_ms() + c->cfg.reconnect_ms;
    int64_t backoff = 50;
    while (open_ctx(c) != 0) {
        int64_t now = mono_ms();
        if (now + backoff > deadline) {
            snprintf(err, errlen, "%s", c->err);
            goto fail;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 < 1000 ? backoff * 2 : 1000;
    }
    if (protocol_check(c, err, errlen)) goto fail;
    return c;
nomem:
    snprintf(err, errlen, "queue: out of memory");
fail:
    queue_close(c);
    return NULL;
}

void queue_close(queue_conn_t *c) {
    if (!c) return;
    drop_ctx(c);
    queue_slot_map_clear(&c->map);
    queue_seeds_clear(&c->seeds);
    free(c->url_copy);
    free(c->name_copy);
    if (c->key_copy) {
        OPENSSL_cleanse(c->key_copy, c->cfg.signing_key_len);
        free(c->key_copy);
    }
    free(c);
}

const char *queue_last_error(const queue_conn_t *c) { return c ? c->err : "no connection"; }
const char *queue_name(const queue_conn_t *c) { return c->cfg.name; }
