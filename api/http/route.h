/* api/http/route.h - what a route is: one row of the route table, and the
 * lookup every part of the HTTP room uses (dispatch, auth, probes, metrics).
 *
 * A row names a method, a path pattern, the scope a key needs, the metric
 * label, whether it is a probe, and the handler. Patterns are literal
 * segments and `{param}` segments (one non-empty segment, no '/'); rows with
 * the same pattern are adjacent in a table and differ by method. A row whose
 * method is NULL takes any method (a catch-all that answers 404 itself).
 * The table itself is api/http/routes.c; the server gets it through its
 * context, so the HTTP mechanism knows no handler by name.
 *
 * Thread-safety: tables are read-only; every call here is pure.
 */
#ifndef SLUICE_API_HTTP_ROUTE_H
#define SLUICE_API_HTTP_ROUTE_H

#include <stddef.h>

#include "api/http/auth.h"

typedef struct api_req api_req_t;

#define API_ROUTE_PARAMS 2    /* {param} segments per pattern at most */
#define API_ROUTE_PARAM_MAX 256

enum {
    API_ROUTE_PROBE = 1u,      /* /healthz-like: open unless --auth-probes, no rate limit, answered while stopping,
                                * logged at debug */
    API_ROUTE_NEEDS_MODEL = 2u /* {name} must name a model: 404 model_not_found before the method is checked */
};

typedef struct api_route {
    const char *method;  /* "GET", "POST", ...; NULL: any */
    const char *pattern; /* "/v1/tasks/{id}" */
    unsigned scope;      /* API_SCOPE_* bits: either will do; 0: open */
    const char *label;   /* metric label (the pattern, or "other" for catch-alls) */
    unsigned flags;      /* API_ROUTE_* */
    int (*handler)(api_req_t *r);
} api_route_t;

/* What a route takes and answers, for the OpenAPI document (api/http/openapi.h):
 * one per row that has a method, keyed by method and pattern. Schema names
 * are those of api/http/openapi_schemas.json. The statuses every row shares
 * (auth, rate limit, framing, body size, shutdown, an unknown model) come
 * from the row itself and are not repeated here. */
typedef struct api_route_doc {
    const char *method, *pattern; /* the row described */
    const char *summary;
    const char *request;  /* schema of the JSON body; NULL: no body */
    const char *response; /* schema of the success answers */
    const char *media;    /* their media type; NULL: application/json */
    const char *stream;   /* schema of the text/event-stream answer (stream: true); NULL: none */
    const char *success;  /* success statuses: "200", "200 202" */
    const char *errors;   /* Error statuses of the route's own: "400 404 503" */
    const char *query;    /* query parameters: "name:type ..." (type: string, integer, number) */
} api_route_doc_t;

typedef struct {
    const api_route_t *row;   /* the row to run; NULL: no pattern matched (404) */
    const api_route_t *first; /* first row of the matched pattern (also set on a method mismatch) */
    int n_rows;               /* rows sharing that pattern */
    int method_ok;            /* row is set */
    int n_params;
    char params[API_ROUTE_PARAMS][API_ROUTE_PARAM_MAX]; /* {param} values in order */
} api_route_match_t;

/* Match method and path (no query) against a table. Returns 1 when a pattern
 * matched (m->row set when the method did too), 0 otherwise. */
int api_route_match(const api_route_t *table, int n, const char *method, const char *path, api_route_match_t *m);

/* The scope a request needs: its row's; on a method mismatch, ADMIN when any
 * row of the pattern needs admin (writes to admin things need admin), else
 * the rows' scope; INFER for unknown paths. probes_need_key: probe rows need
 * INFER or ADMIN instead of nothing. */
unsigned api_route_scope(const api_route_match_t *m, int probes_need_key);
int api_route_is_probe(const api_route_match_t *m);

/* "use GET or DELETE": the methods of the matched pattern. */
void api_route_allowed(const api_route_match_t *m, char *buf, size_t len);

/* Metric labels: the distinct labels of a table in order, then "other".
 * api_route_label_index gives a match's index in that list. */
int api_route_label_count(const api_route_t *table, int n);
const char *api_route_label(const api_route_t *table, int n, int i);
int api_route_label_index(const api_route_t *table, int n, const api_route_match_t *m);

#endif
