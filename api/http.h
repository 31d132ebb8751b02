/* api/http.h - internal to api/: one HTTP request's context, the response
 * helpers and the route handlers the server dispatches to.
 *
 * Life of a request (api/server.c): libmicrohttpd calls the access handler
 * until the body is in; the route handler then either answers at once
 * (api_respond_*) or starts asynchronous work and returns API_ASYNC after
 * setting req->finish. Asynchronous work ends with api_req_wake (from any
 * thread); the server then calls req->finish on an HTTP thread to build and
 * queue the response. The request is freed by the server once MHD is done
 * with the connection; req->cleanup (if set) runs then.
 */
#ifndef SLUICE_API_HTTP_H
#define SLUICE_API_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "api/config.h"
#include "batcher/batcher.h"
#include "engine/registry.h"

typedef struct api_serve api_serve_t;
typedef struct api_req api_req_t;

enum { API_DONE = 0, API_ASYNC = 1 };

struct api_req {
    api_serve_t *srv;
    struct MHD_Connection *conn;
    char method[8];
    char path[512];          /* without the query */
    char request_id[BATCHER_RID_MAX];
    int64_t t_start_ns;
    char *body;              /* NUL-terminated */
    size_t body_len, body_cap;
    int body_too_large;
    int responded;           /* a response was queued */
    int status;              /* the status answered */
    char model_name[REGISTRY_NAME_MAX]; /* for the log line */
    /* control plane (api/ctl.h) */
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
    void *work;              /* the route's state */
};

/* Queue a JSON response (body stolen) with the request id header. */
int api_respond_json(api_req_t *r, unsigned status, json_t *body);
/* Queue a prebuilt body (malloc'd, stolen). */
int api_respond_raw(api_req_t *r, unsigned status, char *body, size_t len, const char *content_type);
/* OpenAI-shaped error {"error":{"message","type","param","code"}}; param may be NULL.
 * 429 and 503 carry Retry-After. */
int api_respond_error(api_req_t *r, unsigned status, const char *code, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Map a batcher error/outcome to a status and an error code. */
unsigned api_status_for_batcher(int err_code, const char **code);

/* Mark asynchronous work done and get the request answered (any thread). */
void api_req_wake(api_req_t *r);

/* Query parameter of the request, or NULL. */
const char *api_query(api_req_t *r, const char *key);

/* The server's parts for route handlers. */
const api_config_t *api_srv_config(api_serve_t *s);
registry_t *api_srv_registry(api_serve_t *s);
batcher_t *api_srv_batcher(api_serve_t *s);
void api_srv_note_embed(api_serve_t *s, double request_s, double compute_s);

/* Routes (api/routes_*.c). Each returns API_DONE or API_ASYNC. */
int api_route_embeddings(api_req_t *r);
int api_route_expand(api_req_t *r);
int api_route_tasks_post(api_req_t *r);
int api_route_tasks_get(api_req_t *r, const char *id);
int api_route_tasks_delete(api_req_t *r, const char *id);

#endif
