/* api/http/ctl.h - the control plane of `sluice serve`: API keys and scopes,
 * rate limits, request shape limits, the result cache and the per-route
 * metrics, as decisions the HTTP server acts on.
 *
 * The server calls, per request: api_ctl_gate once the headers are in (the
 * row of the route table says which scope is needed and whether a rate limit
 * applies; a refusal comes back as status, code and message to answer),
 * api_ctl_body_too_deep before any parser sees the body, and
 * api_ctl_note_response for every answer (metrics). The inference routes
 * call api_ctl_charge_tokens once they know the input size and use the cache
 * (api_ctl_cache) around the work. Nothing here knows a connection, so every
 * decision can be tested without a server.
 *
 * Start-up rules (api_ctl_create): a key file, when given, must load; without
 * one the server refuses a host that is not loopback (anyone who can reach
 * the port could use it) and logs that it runs without authentication.
 *
 * Thread-safety: every call is thread-safe; create/destroy belong to the
 * server's owner thread.
 */
#ifndef SLUICE_API_HTTP_CTL_H
#define SLUICE_API_HTTP_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "api/config.h"
#include "api/http/route.h"

typedef struct api_ctl api_ctl_t;
typedef struct api_metrics api_metrics_t;
typedef struct api_cache api_cache_t;
typedef struct batcher batcher_t;

/* routes: the table whose labels the metrics count by. */
int api_ctl_create(const api_config_t *cfg, int n_models, const api_route_t *routes, int n_routes, api_ctl_t **out,
                   char *err, size_t errlen);
/* Hook the batcher's per-batch report (compute histogram, batch log lines). */
void api_ctl_attach(api_ctl_t *c, batcher_t *b);
void api_ctl_destroy(api_ctl_t *c); /* NULL: no-op */
/* Read the key file again (SIGHUP): 0, or -1 with a message and the old keys
 * kept. Rate-limit buckets start full again. */
int api_ctl_reload_keys(api_ctl_t *c, char *err, size_t errlen);

api_metrics_t *api_ctl_metrics(api_ctl_t *c);
api_cache_t *api_ctl_cache(api_ctl_t *c);      /* NULL when the cache is off */

/* Is host a loopback address (127.0.0.0/8, ::1, localhost)? */
int api_host_is_loopback(const char *host);
/* Deepest nesting of arrays and objects in a JSON text (strings skipped). */
int api_json_depth(const char *text, size_t len);

/* A refusal at the door, or the key that was let in. */
typedef struct {
    unsigned status;    /* 401, 403, 429 */
    const char *code;   /* missing_api_key, invalid_api_key, insufficient_scope, rate_limited */
    char message[256];
    int retry_after_s;  /* 429 */
    int key;            /* index of the key presented and found; -1: none */
    char key_name[64];
} api_gate_t;

/* Auth, scope and rate limit of a request to route m (method and path for
 * the message; authorization: the Authorization header or NULL; now_ns:
 * CLOCK_MONOTONIC). 0: let in (g->key, g->key_name set); 1: refused, g says
 * how to answer. */
int api_ctl_gate(api_ctl_t *c, const api_route_match_t *m, const char *method, const char *path,
                 const char *authorization, int64_t now_ns, api_gate_t *g);
/* 1 when the body nests deeper than --max-json-depth (*depth and *limit
 * set), before any parser sees it. */
int api_ctl_body_too_deep(api_ctl_t *c, const char *body, size_t len, int *depth, int *limit);
/* Does key (an index from api_ctl_gate; -1: none) hold the admin scope? */
int api_ctl_key_is_admin(api_ctl_t *c, int key);
/* Charge an admitted request's input tokens to its key's bucket (key -1: none). */
void api_ctl_charge_tokens(api_ctl_t *c, int key, int64_t now_ns, int tokens);
/* One answer, by route label index (api_route_label_index). */
void api_ctl_note_response(api_ctl_t *c, int label, unsigned status, double seconds);

#endif
