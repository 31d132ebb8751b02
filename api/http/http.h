/* api/http/http.h - the HTTP room: the server (libmicrohttpd), one request's
 * state, the response helpers and the context every handler receives.
 *
 * Life of a request (api/http/http.c): libmicrohttpd calls the access
 * handler until the body is in; the request is matched against the route
 * table once, when its headers arrive (auth and rate limits read the row
 * then, api/http/ctl.h); the row's handler then either answers at once
 * (api_respond_*) or starts asynchronous work and returns API_ASYNC after
 * setting req->finish. Asynchronous work ends with api_req_wake (from any
 * thread); the server then calls req->finish on an HTTP thread to build and
 * queue the response. The request is freed by the server once MHD is done
 * with the connection; req->cleanup (if set) runs then.
 *
 * Handlers reach the server's parts through r->ctx (config, registry,
 * batcher, Redis tasks, control plane, route table), never by calling back
 * into the server. api/server.c fills the context and owns everything in it.
 */
#ifndef SLUICE_API_HTTP_H
#define SLUICE_API_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/config.h"
#include "api/http/route.h"
#include "batcher/batcher.h"
#include "api/job.h"
#include "engine/registry.h"

typedef struct api_http api_http_t;
typedef struct api_ctl api_ctl_t;
typedef struct api_tasks api_tasks_t;
typedef struct api_jobs api_jobs_t;

/* What a handler may use; filled by the server's owner before the first request. */
typedef struct api_ctx {
    const api_config_t *cfg;
    registry_t *reg;
    batcher_t *bat;
    struct sched *sched;       /* generation scheduler (batcher/sched.h); NULL: none */
    const api_sched_ops_t *sched_ops; /* its calls, set with sched */
    api_jobs_t *jobs;          /* the operations (api/jobs.h) */
    api_tasks_t *tasks;        /* Redis intake (api/redis/tasks.h); NULL when Redis is off */
    api_ctl_t *ctl;            /* keys, rate limits, cache, route metrics (api/http/ctl.h) */
    api_http_t *http;          /* the server: stats, stopping */
    const api_route_t *routes; /* the route table (api/http/routes.h) */
    int n_routes;
    atomic_int watch_stop;     /* control watchers (api/http/admin.c): shut down now */
    atomic_int watch_running;  /* and how many are running */
} api_ctx_t;

typedef struct {
    uint64_t requests;          /* HTTP requests answered */
    uint64_t by_class[6];       /* by status class: [2] 2xx, [4] 4xx, [5] 5xx */
    uint64_t rejected_busy;     /* 429 from a full pending queue */
    double request_s;           /* sum of request durations (receipt -> response queued) */
    double embed_request_s;     /* same, /v1/embeddings that computed */
    double embed_compute_s;     /* their compute seconds (from their items) */
    uint64_t embed_requests;    /* /v1/embeddings answered 200 */
    int open_requests;          /* received, not yet answered (incl. suspended) */
} api_http_stats_t;

typedef struct api_req api_req_t;

enum { API_DONE = 0, API_ASYNC = 1 };

struct api_req {
    api_ctx_t *ctx;
    struct MHD_Connection *conn;
    char method[8];
    char path[512];          /* without the query */
    api_route_match_t route; /* the row (or none) and its {param} values */
    char request_id[BATCHER_RID_MAX];
    int64_t t_start_ns;
    char *body;              /* NUL-terminated */
    size_t body_len, body_cap;
    int body_too_large;
    size_t body_reserved;    /* bytes held of the in-flight body budget */
    int close;               /* answer with Connection: close (bad framing, budgets) */
    int responded;           /* a response was queued */
    int status;              /* the status answered */
    char model_name[REGISTRY_NAME_MAX]; /* for the log line */
    int model;               /* registry index whose pending-bytes budget the answer counts against until it
                              * is sent (batcher_hold_answer); -1: none */
    /* control plane (api/http/ctl.h) */
    char traceparent[BATCHER_TRACE_MAX]; /* W3C traceparent received (valid), or "" */
    int key;                 /* index of the API key used; -1: none */
    char key_name[64];       /* its name, for the log line (never the key) */
    int retry_after_s;       /* Retry-After of a 429/503; 0: 1 s */
    uint64_t batch_id;       /* the last batch that computed it; 0: none */
    unsigned char cache_key[32];
    int cache_on, cache_hit;
    /* asynchronous work */
    pthread_mutex_t mu;
    int async, woken, suspended;
    int (*finish)(api_req_t *r);  /* build and queue the response (HTTP thread) */
    void (*cleanup)(api_req_t *r);
    /* The client closed its connection while the work was pending: drop the
     * work if it has not started (the server's watchdog thread; must not
     * block). NULL: the work runs to its end. */
    void (*on_gone)(api_req_t *r);
    void *work;              /* the route's state */
    json_t *log_extra;       /* fields the route adds to the request's log line (owned) */
    int noted;               /* counted and logged (api_req_note) */
};

/* Start listening (cfg->host, cfg->port; the port file written): 0, or -1
 * with a message. ctx must outlive the server. */
int api_http_start(api_ctx_t *ctx, api_http_t **out, char *err, size_t errlen);
/* Shutdown step 1: no new connections; every later request answers 503
 * (probes still answer). */
void api_http_quiesce(api_http_t *h);
/* Wait up to timeout_ms for the requests still open to be answered. */
void api_http_wait_quiet(api_http_t *h, int timeout_ms);
void api_http_destroy(api_http_t *h); /* stops the daemon; NULL is a no-op */
int api_http_port(const api_http_t *h);
int api_http_stopping(const api_http_t *h);
void api_http_stats(api_http_t *h, api_http_stats_t *out);
/* One /v1/embeddings request answered 200 (for the sluice_embed_* series). */
void api_http_note_embed(api_http_t *h, double request_s, double compute_s);

/* Queue a JSON response (body stolen) with the request id header. */
int api_respond_json(api_req_t *r, unsigned status, json_t *body);
/* Queue a prebuilt body (malloc'd, stolen). */
int api_respond_raw(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type);
/* The same with more headers: name, value, name, value, ..., NULL. */
int api_respond_raw_headers(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type,
                            const char *const *headers);
/* OpenAI-shaped error {"error":{"message","type","param","code"}} (api/job.h
 * api_error_object); param may be NULL. 429 and 503 carry Retry-After. */
int api_respond_error(api_req_t *r, unsigned status, const char *code, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Queue a streamed response: reader (MHD's content reader, which may
 * suspend the connection and return 0) produces the body; free_cls(cls)
 * runs when MHD is done with it (also when this fails). keepalive(cls) (may
 * be NULL) is called on the server's watchdog thread when the stream has
 * written nothing for the keep-alive interval (half of --idle-timeout-ms, at
 * most 15 s), so a slow stream is not taken for a dead one by a proxy or a
 * client: it must not block (queue a comment, resume the connection), and it
 * is never called once free_cls has begun. The request is counted and
 * logged by api_req_note when the stream ends (or when the connection
 * closes). 0, or -1 when the response could not be made. */
int api_respond_stream(api_req_t *r, unsigned status, const char *content_type, MHD_ContentReaderCallback reader,
                       void (*keepalive)(void *cls), void *cls, MHD_ContentReaderFreeCallback free_cls);
/* Count the answered request in the metrics and write its log line, once. */
void api_req_note(api_req_t *r);

/* Mark asynchronous work done and get the request answered (any thread). */
void api_req_wake(api_req_t *r);

/* Who asked, for fair sharing in the batcher (batcher_item_t.tenant): the
 * API key, else the client's address. Never 0. */
uint32_t api_req_tenant(api_req_t *r);

/* Query parameter of the request, or NULL. */
const char *api_query(api_req_t *r, const char *key);
/* The i-th {param} of the matched pattern ("" when absent). */
const char *api_req_param(const api_req_t *r, int i);

#endif
