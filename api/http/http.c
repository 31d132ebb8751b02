/* api/http/http.c - the HTTP server (libmicrohttpd): requests in, route table, responses out.
 *
 * MHD runs an internal epoll thread pool with suspend/resume: a route handler
 * parses, validates and tokenizes on the HTTP thread, submits work and
 * suspends the connection; the batcher's completion callback only marks the
 * request done and resumes it, and the response is built back on an HTTP
 * thread. So a few HTTP threads hold thousands of open requests and never
 * wait for compute.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/http/ctl.h"
#include "api/http/http.h"
#include "api/job.h"
#include "api/log.h"
#include "kernels/util.h"

/* One open connection, for the deadlines libmicrohttpd does not keep: the
 * header block within header_timeout_ms, the body at min_body_rate. The
 * watchdog thread shuts down (never closes) the socket of one that is late,
 * so MHD sees the peer gone and closes it on its own thread; an entry leaves
 * the list when MHD reports the connection closed, before its fd is closed. */
enum { CONN_HEADERS, CONN_BODY, CONN_ANSWER, CONN_DROPPED };
typedef struct api_conn {
    struct api_conn *prev, *next;
    int fd;
    int phase;          /* CONN_* */
    int64_t t_phase_ns; /* when the phase began */
    size_t body_got;    /* bytes of body received in CONN_BODY */
    api_req_t *req;     /* its request while the work is pending (suspended); NULL otherwise */
    int gone;           /* on_gone was called */
} api_conn_t;

struct api_http {
    api_ctx_t *ctx;
    struct MHD_Daemon *mhd;
    int port;
    atomic_int stopping;
    pthread_mutex_t mu; /* guards st, signals quiet */
    pthread_cond_t quiet;
    api_http_stats_t st;
    atomic_ullong rid_counter;
    uint64_t rid_seed;
    /* process-wide budgets (bytes) */
    atomic_size_t body_bytes;     /* request bodies reserved while received */
    atomic_size_t backlog_bytes;  /* answers queued, not yet sent */
    /* connection deadlines */
    pthread_mutex_t conn_mu;      /* guards conns and every entry's fields */
    api_conn_t conns;             /* list head */
    pthread_t watchdog;
    int watchdog_on;
    atomic_int watchdog_stop;
    atomic_ullong dropped_slow;   /* connections dropped for a late header block or slow body */
    /* streamed answers, for keep-alives */
    pthread_mutex_t stream_mu;    /* guards streams; taken before a stream's own locks */
    struct api_stream *streams;
};

/* A streamed answer while MHD holds it: the route's reader and state, and
 * when it last wrote, so the watchdog can keep a silent stream alive. */
typedef struct api_stream {
    struct api_stream *prev, *next;
    api_http_t *s;
    MHD_ContentReaderCallback reader;
    void (*keepalive)(void *cls);
    void *cls;
    MHD_ContentReaderFreeCallback free_cls;
    _Atomic int64_t last_ns;      /* CLOCK_MONOTONIC: bytes handed to MHD, or the last keep-alive asked */
} api_stream_t;

/* ---------------------------------------------------------------- helpers */

void api_http_note_embed(api_http_t *s, double request_s, double compute_s) {
    pthread_mutex_lock(&s->mu);
    s->st.embed_requests++;
    s->st.embed_request_s += request_s;
    s->st.embed_compute_s += compute_s;
    pthread_mutex_unlock(&s->mu);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Accept a caller's X-Request-ID when it is short, printable ASCII without
 * quotes or backslashes (it goes into logs and JSON); else make one. */
static void set_request_id(api_http_t *s, api_req_t *r) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-ID");
    if (h) {
        size_t n = strlen(h);
        int ok = n > 0 && n < sizeof r->request_id;
        for (size_t i = 0; ok && i < n; i++)
            if (h[i] <= 0x20 || h[i] >= 0x7f || h[i] == '"' || h[i] == '\\') ok = 0;
        if (ok) {
            memcpy(r->request_id, h, n + 1);
            return;
        }
    }
    uint64_t c = atomic_fetch_add(&s->rid_counter, 1);
    uint64_t a = splitmix64(s->rid_seed ^ c), b = splitmix64(a ^ c);
    snprintf(r->request_id, sizeof r->request_id, "%016llx%016llx", (unsigned long long)a,
             (unsigned long long)b);
}

uint32_t api_req_tenant(api_req_t *r) {
    if (r->key >= 0) return (uint32_t)r->key + 1;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    uint32_t a = 0;
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        a = ntohl(((const struct sockaddr_in *)ci->client_addr)->sin_addr.s_addr);
    return (uint32_t)(splitmix64(a) | 0x80000000u); /* apart from key numbers */
}

const char *api_query(api_req_t *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *api_req_param(const api_req_t *r, int i) {
    return i >= 0 && i < r->route.n_params ? r->route.params[i] : "";
}

/* ---------------------------------------------------------------- responses */

/* Count and log an answered request once: at its response, or, for a
 * stream, when the stream ends (so the line carries what was generated). */
void api_req_note(api_req_t *r) {
    if (r->noted) return;
    r->noted = 1;
    api_http_t *s = r->ctx->http;
    unsigned status = (unsigned)r->status;
    double dur = (batcher_now_ns() - r->t_start_ns) * 1e-9;
    pthread_mutex_lock(&s->mu);
    s->st.requests++;
    if (status / 100 < 6) s->st.by_class[status / 100]++;
    if (status == 429) s->st.rejected_busy++;
    s->st.request_s += dur;
    pthread_mutex_unlock(&s->mu);
    api_ctl_note_response(r->ctx->ctl, api_route_label_index(r->ctx->routes, r->ctx->n_routes, &r->route), status,
                          dur);
    /* probes are polled often: their lines only at debug */
    int probe = api_route_is_probe(&r->route);
    api_log_level_t lvl = probe ? API_LOG_DEBUG : status >= 500 ? API_LOG_WARN : API_LOG_INFO;
    if (lvl >= api_log_level()) {
        json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:f,s:s}", "request_id", r->request_id, "method", r->method,
                              "path", r->path, "status", (int)status, "duration_s", dur, "model", r->model_name);
        if (r->traceparent[0]) json_object_set_new(f, "traceparent", json_string(r->traceparent));
        if (r->key_name[0]) json_object_set_new(f, "key", json_string(r->key_name));
        if (r->batch_id) json_object_set_new(f, "batch_id", json_integer((json_int_t)r->batch_id));
        if (r->cache_hit) json_object_set_new(f, "cache", json_string("hit"));
        if (r->log_extra) json_object_update(f, r->log_extra);
        api_log(lvl, "request", f);
    }
}

/* An answer's bytes count against the backlog budget, and against its
 * model's pending-bytes budget, until MHD lets go of it: sent, its connection
 * gone, or the response never made. MHD calls the free callback exactly once
 * in each case, and the server stops before the batcher goes. */
typedef struct {
    api_http_t *s;
    char *body;
    size_t len;
    int model; /* held against this model's budget; -1: none */
} backlog_t;

static void backlog_release(void *cls) {
    backlog_t *b = cls;
    atomic_fetch_sub(&b->s->backlog_bytes, b->len);
    if (b->model >= 0) batcher_release_answer(b->s->ctx->bat, b->model, b->len);
    free(b->body);
    free(b);
}

int api_respond_raw(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type) {
    return api_respond_raw_headers(r, status, body, len, content_type, NULL);
}

int api_respond_raw_headers(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type,
                            const char *const *headers) {
    api_http_t *s = r->ctx->http;
    backlog_t *b = malloc(sizeof *b);
    struct MHD_Response *resp = NULL;
    if (b) {
        *b = (backlog_t){s, body, len, r->model >= 0 && s->ctx->bat ? r->model : -1};
        atomic_fetch_add(&s->backlog_bytes, len);
        if (b->model >= 0) batcher_hold_answer(s->ctx->bat, b->model, len);
        resp = MHD_create_response_from_buffer_with_free_callback_cls(len, body, backlog_release, b);
        if (!resp) {
            backlog_release(b);
            return API_DONE;
        }
    }
    if (!resp) {
        free(body);
        return API_DONE;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    for (int i = 0; headers && headers[i] && headers[i + 1]; i += 2) MHD_add_response_header(resp, headers[i], headers[i + 1]);
    if (status == 429 || status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after_s > 0 ? r->retry_after_s : 1);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (r->cache_hit) MHD_add_response_header(resp, "X-Cache", "hit");
    if (atomic_load(&s->stopping) || r->close) MHD_add_response_header(resp, "Connection", "close");
    MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    r->status = (int)status;
    api_req_note(r);
    return API_DONE;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    api_stream_t *st = cls;
    ssize_t n = st->reader(st->cls, pos, buf, max);
    if (n > 0) atomic_store(&st->last_ns, batcher_now_ns());
    return n;
}

/* MHD lets go of the stream: off the list first, so no keep-alive reaches
 * the route's state once it is being freed. */
static void stream_release(void *cls) {
    api_stream_t *st = cls;
    api_http_t *s = st->s;
    pthread_mutex_lock(&s->stream_mu);
    if (st->prev) st->prev->next = st->next;
    else s->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    pthread_mutex_unlock(&s->stream_mu);
    if (st->free_cls) st->free_cls(st->cls);
    free(st);
}

/* How long a stream may be silent before it gets a keep-alive: under the
 * idle timeout (half of it), at most 15 s (under the 30-60 s read timeouts
 * of common proxies). */
static int64_t keepalive_ns(const api_config_t *cfg) {
    int64_t ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms / 2 : 15000;
    if (ms > 15000) ms = 15000;
    if (ms < 50) ms = 50;
    return ms * 1000000LL;
}

/* Watchdog thread: ask every stream silent for the keep-alive interval to write one. */
static void streams_keepalive(api_http_t *s, int64_t now) {
    int64_t every = keepalive_ns(s->ctx->cfg);
    pthread_mutex_lock(&s->stream_mu);
    for (api_stream_t *st = s->streams; st; st = st->next)
        if (st->keepalive && now - atomic_load(&st->last_ns) >= every) {
            atomic_store(&st->last_ns, now);
            st->keepalive(st->cls);
        }
    pthread_mutex_unlock(&s->stream_mu);
}

int api_respond_stream(api_req_t *r, unsigned status, const char *content_type, MHD_ContentReaderCallback reader,
                       void (*keepalive)(void *cls), void *cls, MHD_ContentReaderFreeCallback free_cls) {
    api_http_t *s = r->ctx->http;
    api_stream_t *st = calloc(1, sizeof *st);
    if (!st) {
        if (free_cls) free_cls(cls);
        return -1;
    }
    *st = (api_stream_t){.s = s, .reader = reader, .keepalive = keepalive, .cls = cls, .free_cls = free_cls};
    atomic_store(&st->last_ns, batcher_now_ns());
    pthread_mutex_lock(&s->stream_mu);
    st->next = s->streams;
    if (st->next) st->next->prev = st;
    s->streams = st;
    pthread_mutex_unlock(&s->stream_mu);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st,
                                                                  stream_release);
    if (!resp) {
        stream_release(st);
        return -1;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    if (atomic_load(&s->stopping)) MHD_add_response_header(resp, "Connection", "close");
    MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    r->status = (int)status;
    return 0;
}

int api_respond_json(api_req_t *r, unsigned status, json_t *body) {
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)); /* float32 round-trips */
    json_decref(body);
    if (!text) text = strdup("{}");
    return api_respond_raw(r, status, text, strlen(text), "application/json");
}

int api_respond_error(api_req_t *r, unsigned status, const char *code, const char *param,
                      const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status >= 500 && api_log_level() <= API_LOG_WARN)
        api_log(API_LOG_WARN, msg, json_pack("{s:s,s:s,s:i}", "request_id", r->request_id, "code",
                                             code ? code : "error", "status", (int)status));
    return api_respond_json(r, status, api_error_object(status, code, param, msg, 0));
}

void api_req_wake(api_req_t *r) {
    pthread_mutex_lock(&r->mu);
    r->woken = 1;
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- MHD callbacks */

/* One request, body in: the row's handler, or the answer for no row. */
static int dispatch(api_req_t *r) {
    api_ctx_t *c = r->ctx;
    int depth = 0, limit = 0;
    if (api_ctl_body_too_deep(c->ctl, r->body, r->body_len, &depth, &limit))
        return api_respond_error(r, 400, "nesting_too_deep", NULL, "request body nests %d levels deep; the limit is %d",
                                 depth, limit);
    const api_route_match_t *m = &r->route;
    if (!api_route_is_probe(m) && atomic_load(&c->http->stopping))
        return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down");
    if (!m->first) return api_respond_error(r, 404, "not_found", NULL, "no route %s %s", r->method, r->path);
    if (m->first->flags & API_ROUTE_NEEDS_MODEL) { /* the model first: a wrong name is 404 whatever the method */
        const char *name = api_req_param(r, 0);
        size_t n = strlen(name);
        if (n >= sizeof r->model_name)
            return api_respond_error(r, 404, "model_not_found", "model", "no such model");
        if (registry_find(c->reg, name) < 0)
            return api_respond_error(r, 404, "model_not_found", "model", "model '%s' not found", name);
        memcpy(r->model_name, name, n + 1);
    }
    if (!m->row) {
        char allowed[64];
        api_route_allowed(m, allowed, sizeof allowed);
        return api_respond_error(r, 405, "method_not_allowed", NULL, "%s", allowed);
    }
    return m->row->handler(r);
}

/* Auth, scope and rate limit, as soon as the headers are in (a refused
 * request's body is never kept): 1 when it answered the request. */
static int gate(api_req_t *r) {
    api_gate_t g;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    int refused = api_ctl_gate(r->ctx->ctl, &r->route, r->method, r->path, auth, batcher_now_ns(), &g);
    r->key = g.key;
    snprintf(r->key_name, sizeof r->key_name, "%s", g.key_name);
    if (!refused) return 0;
    r->retry_after_s = g.retry_after_s;
    api_respond_error(r, g.status, g.code, NULL, "%s", g.message);
    return 1;
}

/* ---------------------------------------------------------------- connection deadlines */

static api_conn_t *conn_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The connection enters a phase (CONN_*); body bytes are counted in CONN_BODY. */
static void conn_phase(api_http_t *s, struct MHD_Connection *conn, int phase) {
    api_conn_t *c = conn_of(conn);
    if (!c) return;
    pthread_mutex_lock(&s->conn_mu);
    if (c->phase != CONN_DROPPED) {
        c->phase = phase;
        c->t_phase_ns = batcher_now_ns();
        c->body_got = 0;
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* The request whose work is pending on this connection (NULL: none now). */
static void conn_pending(api_http_t *s, struct MHD_Connection *conn, api_req_t *r) {
    api_conn_t *c = conn_of(conn);
    if (!c) return;
    pthread_mutex_lock(&s->conn_mu);
    c->req = r;
    c->gone = 0;
    pthread_mutex_unlock(&s->conn_mu);
}

/* Has the peer of a suspended connection closed it? (MHD does not watch
 * suspended sockets, so nothing else would notice before the answer.) */
static int peer_gone(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) != 1) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static void conn_body(api_http_t *s, struct MHD_Connection *conn, size_t n) {
    api_conn_t *c = conn_of(conn);
    if (!c) return;
    pthread_mutex_lock(&s->conn_mu);
    c->body_got += n;
    pthread_mutex_unlock(&s->conn_mu);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    api_http_t *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        api_conn_t *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) {
            free(c);
            return;
        }
        c->fd = ci->connect_fd;
        c->phase = CONN_HEADERS;
        c->t_phase_ns = batcher_now_ns();
        pthread_mutex_lock(&s->conn_mu);
        c->next = s->conns.next;
        c->prev = &s->conns;
        s->conns.next->prev = c;
        s->conns.next = c;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        api_conn_t *c = *socket_context;
        if (!c) return;
        pthread_mutex_lock(&s->conn_mu);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&s->conn_mu);
        free(c);
        *socket_context = NULL;
    }
}

/* Is connection c past its deadline at time now? */
static int conn_late(const api_config_t *cfg, const api_conn_t *c, int64_t now) {
    int64_t age_ms = (now - c->t_phase_ns) / 1000000LL;
    if (c->phase == CONN_HEADERS) return cfg->header_timeout_ms > 0 && age_ms > cfg->header_timeout_ms;
    if (c->phase == CONN_BODY && cfg->body_timeout_ms > 0) {
        /* the body earns time at min_body_rate: late when it is behind by more than body_timeout_ms */
        double earned_ms = cfg->min_body_rate ? (double)c->body_got * 1000.0 / (double)cfg->min_body_rate : 1e18;
        return (double)age_ms > cfg->body_timeout_ms + earned_ms;
    }
    return 0;
}

static void *watchdog_main(void *arg) {
    api_http_t *s = arg;
    const api_config_t *cfg = s->ctx->cfg;
    while (!atomic_load(&s->watchdog_stop)) {
        util_sleep_ms(100);
        int64_t now = batcher_now_ns();
        pthread_mutex_lock(&s->conn_mu);
        for (api_conn_t *c = s->conns.next; c != &s->conns; c = c->next) {
            if (c->phase != CONN_DROPPED && conn_late(cfg, c, now)) {
                shutdown(c->fd, SHUT_RDWR); /* MHD sees the peer gone and closes it */
                c->phase = CONN_DROPPED;
                atomic_fetch_add(&s->dropped_slow, 1);
            }
            /* the request is freed only after on_completed clears c->req under conn_mu */
            if (c->req && !c->gone && c->req->on_gone && peer_gone(c->fd)) {
                c->gone = 1;
                c->req->on_gone(c->req);
            }
        }
        pthread_mutex_unlock(&s->conn_mu);
        streams_keepalive(s, now);
    }
    return NULL;
}

/* ---------------------------------------------------------------- framing (RFC 9112) */

typedef struct {
    int n_cl, cl_differ, n_te, host;
    char cl[32];
    char te[64];
    int te_long;
} framing_t;

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    framing_t *f = cls;
    if (!value) value = "";
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (f->n_cl++ && strcmp(f->cl, value)) f->cl_differ = 1;
        snprintf(f->cl, sizeof f->cl, "%s", value);
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->n_te++;
        if (strlen(value) >= sizeof f->te) f->te_long = 1;
        snprintf(f->te, sizeof f->te, "%s", value);
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) {
        f->host = 1;
    }
    return MHD_YES;
}

/* A message whose framing two parties could read two ways is refused before
 * its body is read (request smuggling): NULL when fine, else why. */
static const char *framing_refusal(struct MHD_Connection *conn, const char *version) {
    framing_t f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_header, &f);
    if (f.n_cl && f.n_te) return "both Content-Length and Transfer-Encoding";
    if (f.cl_differ) return "two different Content-Length values";
    if (f.n_te > 1 || f.te_long || (f.n_te && strcasecmp(f.te, "chunked")))
        return "a Transfer-Encoding other than 'chunked'";
    if (!f.host && version && !strcmp(version, MHD_HTTP_VERSION_1_1)) return "HTTP/1.1 without a Host header";
    return NULL;
}

static void req_free(api_req_t *r) {
    if (r->body_reserved) atomic_fetch_sub(&r->ctx->http->body_bytes, r->body_reserved);
    if (r->cleanup) r->cleanup(r);
    if (r->responded) api_req_note(r); /* a stream cut short */
    json_decref(r->log_extra);
    pthread_mutex_destroy(&r->mu);
    free(r->body);
    free(r);
}

/* Take the request's body up to `total` bytes from the process-wide budget;
 * past it the request is answered 503 and the connection closed: 1 then. */
static int body_reserve(api_http_t *s, api_req_t *r, size_t total) {
    const api_config_t *cfg = s->ctx->cfg;
    size_t more = total - r->body_reserved;
    size_t held = atomic_fetch_add(&s->body_bytes, more) + more;
    r->body_reserved = total;
    if (!cfg->max_inflight_body_bytes || held <= cfg->max_inflight_body_bytes) return 0;
    atomic_fetch_sub(&s->body_bytes, r->body_reserved);
    r->body_reserved = 0;
    r->close = 1;
    r->retry_after_s = 1;
    api_respond_error(r, 503, "server_busy", NULL,
                      "request bodies in flight would take %zu bytes; the limit is %zu bytes "
                      "(--max-inflight-body-bytes)", held, cfg->max_inflight_body_bytes);
    return 1;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls) {
    api_http_t *s = cls;
    const api_config_t *cfg = s->ctx->cfg;
    api_req_t *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->ctx = s->ctx;
        r->conn = conn;
        r->t_start_ns = batcher_now_ns();
        pthread_mutex_init(&r->mu, NULL);
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        set_request_id(s, r);
        r->key = -1;
        r->model = -1;
        api_route_match(s->ctx->routes, s->ctx->n_routes, r->method, r->path, &r->route);
        /* an invalid traceparent is dropped, as the W3C spec says: the trace restarts here */
        const char *tp = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent");
        if (tp && api_traceparent_valid(tp)) snprintf(r->traceparent, sizeof r->traceparent, "%s", tp);
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        s->st.open_requests++;
        pthread_mutex_unlock(&s->mu);
        conn_phase(s, conn, CONN_BODY);
        const char *bad = framing_refusal(conn, version);
        if (bad) {
            r->close = 1;
            api_respond_error(r, 400, "bad_framing", NULL, "request refused: %s", bad);
            return MHD_YES;
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (gate(r)) return MHD_YES; /* 401, 403, 429 before the body is read */
        unsigned long long cl_n = cl ? strtoull(cl, NULL, 10) : 0;
        if (cl && cl_n > cfg->max_body_bytes) {
            api_respond_error(r, 413, "body_too_large", NULL, "request body of %s bytes is over the limit of %zu bytes",
                              cl, cfg->max_body_bytes);
            return MHD_YES;
        }
        if (api_route_is_probe(&r->route)) return MHD_YES; /* probes answer whatever the load */
        if (cl_n && body_reserve(s, r, (size_t)cl_n)) return MHD_YES;
        size_t backlog = atomic_load(&s->backlog_bytes);
        if (cfg->max_response_backlog_bytes && backlog > cfg->max_response_backlog_bytes) {
            r->close = 1;
            r->retry_after_s = 1;
            api_respond_error(r, 503, "server_busy", NULL,
                              "%zu bytes of answers wait for their clients to read them; the limit is %zu bytes "
                              "(--max-response-backlog-bytes)", backlog, cfg->max_response_backlog_bytes);
        }
        return MHD_YES;
    }
    if (r->responded) { /* answered early (413): swallow the rest of the body */
        conn_body(s, conn, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->async) { /* resumed: the work is done */
        pthread_mutex_lock(&r->mu);
        int woken = r->woken;
        pthread_mutex_unlock(&r->mu);
        if (woken) r->finish(r);
        return MHD_YES;
    }
    if (*upload_size) {
        conn_body(s, conn, *upload_size);
        /* a body without Content-Length reserves as it grows */
        if (!r->body_too_large && r->body_len + *upload_size > r->body_reserved &&
            body_reserve(s, r, r->body_len + *upload_size)) {
            *upload_size = 0;
            return MHD_YES;
        }
        if (!r->body_too_large) {
            if (r->body_len + *upload_size > s->ctx->cfg->max_body_bytes) {
                r->body_too_large = 1;
                free(r->body);
                r->body = NULL;
                r->body_len = r->body_cap = 0;
            } else {
                if (r->body_len + *upload_size + 1 > r->body_cap) {
                    size_t cap = r->body_cap ? r->body_cap : 4096;
                    while (cap < r->body_len + *upload_size + 1) cap *= 2;
                    char *nb = realloc(r->body, cap);
                    if (!nb) return MHD_NO;
                    r->body = nb;
                    r->body_cap = cap;
                }
                memcpy(r->body + r->body_len, upload_data, *upload_size);
                r->body_len += *upload_size;
                r->body[r->body_len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    conn_phase(s, conn, CONN_ANSWER);
    if (r->body_too_large) {
        api_respond_error(r, 413, "body_too_large", NULL, "request body is over the limit of %zu bytes",
                          s->ctx->cfg->max_body_bytes);
        return MHD_YES;
    }
    if (!r->body) {
        r->body = strdup("");
        if (!r->body) return MHD_NO;
    }
    if (dispatch(r) == API_ASYNC) {
        r->async = 1;
        if (r->on_gone) conn_pending(s, conn, r);
        pthread_mutex_lock(&r->mu);
        if (!r->woken) {
            MHD_suspend_connection(conn);
            r->suspended = 1;
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&r->mu);
        r->finish(r);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    api_http_t *s = cls;
    api_req_t *r = *con_cls;
    conn_phase(s, conn, CONN_HEADERS); /* a kept-alive connection owes the next header block */
    conn_pending(s, conn, NULL);       /* before r is freed: the watchdog lets go of it */
    if (!r) return;
    *con_cls = NULL;
    req_free(r);
    pthread_mutex_lock(&s->mu);
    s->st.open_requests--;
    if (s->st.open_requests == 0) pthread_cond_broadcast(&s->quiet);
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- lifecycle */

int api_http_start(api_ctx_t *ctx, api_http_t **out, char *err, size_t errlen) {
    *out = NULL;
    const api_config_t *cfg = ctx->cfg;
    api_http_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->ctx = ctx;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->quiet, NULL);
    s->rid_seed = splitmix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)s);
    pthread_mutex_init(&s->conn_mu, NULL);
    pthread_mutex_init(&s->stream_mu, NULL);
    s->conns.next = s->conns.prev = &s->conns;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "host must be an IPv4 address (got '%s')", cfg->host);
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO;
    s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_access, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads > 0 ? cfg->http_threads : 1),
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(cfg->max_connections_per_client > 0
                                                                                  ? cfg->max_connections_per_client : 0),
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((cfg->idle_timeout_ms + 999) / 1000),
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%d (%s)", cfg->host, cfg->port, strerror(errno));
        goto fail;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s)) {
        snprintf(err, errlen, "cannot start the connection watchdog thread");
        goto fail;
    }
    s->watchdog_on = 1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (cfg->port_file[0]) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", cfg->port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", s->port) < 0 || fclose(f) || rename(tmp, cfg->port_file)) {
            snprintf(err, errlen, "cannot write the port file %s", cfg->port_file);
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    api_http_destroy(s);
    return -1;
}

void api_http_quiesce(api_http_t *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1);
    if (s->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(s->mhd); /* no new connections */
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
}

void api_http_wait_quiet(api_http_t *s, int timeout_ms) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    int64_t until = batcher_now_ns() + (int64_t)timeout_ms * 1000000LL;
    while (s->st.open_requests > 0 && batcher_now_ns() < until) {
        struct timespec ts;
        util_deadline(&ts, CLOCK_REALTIME, 20000000LL);
        pthread_cond_timedwait(&s->quiet, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
}

void api_http_destroy(api_http_t *s) {
    if (!s) return;
    if (s->watchdog_on) {
        atomic_store(&s->watchdog_stop, 1);
        pthread_join(s->watchdog, NULL);
    }
    if (s->mhd) MHD_stop_daemon(s->mhd);
    pthread_mutex_destroy(&s->conn_mu);
    pthread_mutex_destroy(&s->stream_mu);
    pthread_cond_destroy(&s->quiet);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int api_http_port(const api_http_t *s) { return s ? s->port : 0; }
int api_http_stopping(const api_http_t *s) { return s && atomic_load(&s->stopping); }

void api_http_stats(api_http_t *s, api_http_stats_t *out) {
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}
