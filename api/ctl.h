/* api/ctl.h - the control plane of `sluice serve`: API keys and scopes, rate
 * limits, request shape limits, tracing headers, the result cache, and the
 * per-route metrics, wired into the server by a few calls.
 *
 * The server calls, per request: api_ctl_accept_trace when the request
 * arrives (W3C traceparent), api_ctl_gate before routing (401/403/429/400
 * answered there), api_ctl_note_response for every answer (metrics); the
 * inference routes call api_ctl_charge_tokens once they know the input size
 * and the cache hooks around the work. Control routes (/v1/models...,
 * /v1/admin/...) are in api/admin.c.
 *
 * Start-up rules (api_ctl_create): a key file, when given, must load; without
 * one the server refuses a host that is not loopback (anyone who can reach
 * the port could use it) and logs that it runs without authentication.
 *
 * Thread-safety: every call is thread-safe; create/destroy belong to the
 * server's owner thread.
 */
#ifndef SLUICE_API_CTL_H
#define SLUICE_API_CTL_H

#include <stddef.h>

#include "api/config.h"

typedef struct api_ctl api_ctl_t;
typedef struct api_serve api_serve_t;
typedef struct api_req api_req_t;
typedef struct api_metrics api_metrics_t;
typedef struct api_cache api_cache_t;
typedef struct api_keys api_keys_t;
typedef struct batcher batcher_t;

int api_ctl_create(const api_config_t *cfg, int n_models, api_ctl_t **out, char *err, size_t errlen);
/* Hook the batcher's per-batch report (compute histogram, batch log lines). */
void api_ctl_attach(api_ctl_t *c, batcher_t *b);
void api_ctl_destroy(api_ctl_t *c); /* NULL: no-op */
/* Read the key file again (SIGHUP): 0, or -1 with a message and the old keys
 * kept. Rate-limit buckets start full again. */
int api_ctl_reload_keys(api_ctl_t *c, char *err, size_t errlen);

/* The server's control plane (api/server.c owns it). */
api_ctl_t *api_srv_ctl(api_serve_t *s);
api_metrics_t *api_ctl_metrics(api_ctl_t *c);
api_cache_t *api_ctl_cache(api_ctl_t *c);      /* NULL when the cache is off */

/* Is host a loopback address (127.0.0.0/8, ::1, localhost)? */
int api_host_is_loopback(const char *host);
/* A W3C traceparent (version 00: 00-<32 hex>-<16 hex>-<2 hex>, ids not all
 * zero); 1 when valid. */
int api_traceparent_valid(const char *s);
/* Deepest nesting of arrays and objects in a JSON text (strings skipped). */
int api_json_depth(const char *text, size_t len);

void api_ctl_accept_trace(api_req_t *r);
/* Auth, scope and rate limit, as soon as the headers are in (a refused
 * request's body is never kept): 1 when it answered the request. */
int api_ctl_gate(api_req_t *r);
/* The body's shape before any parser sees it (nesting): 1 when it answered. */
int api_ctl_check_body(api_req_t *r);
/* Charge an admitted request's input tokens to its key's bucket. */
void api_ctl_charge_tokens(api_req_t *r, int tokens);
void api_ctl_note_response(api_req_t *r, unsigned status, double seconds);

/* Result cache around POST /v1/embeddings: compute the key from the parsed
 * body (model resolved), answer from the cache (1: answered), store an answer. */
void api_ctl_cache_key(api_req_t *r, const char *model, const void *json_body, int op);
int api_ctl_cache_answer(api_req_t *r);
void api_ctl_cache_store(api_req_t *r, const char *body, size_t len);

/* Control routes: GET /v1/models[/{name}], POST /v1/models/{name}/load|unload,
 * POST /v1/admin/pause|resume|drain, GET|PATCH /v1/admin/config (api/admin.c). */
int api_route_control(api_req_t *r);
/* Shutdown: wake every suspended control request (503) and wait for the
 * watcher threads to end (api/server.c, before the batcher goes). */
void api_ctl_stop_watchers(api_ctl_t *c);
/* The watchers' shared flags (api/admin.c). */
#include <stdatomic.h>
atomic_int *api_ctl_watch_stop(api_ctl_t *c);
atomic_int *api_ctl_watch_running(api_ctl_t *c);

#endif
