/* api/http/openapi.h - the OpenAPI 3.1 document of a route table, made at
 * run time from the table itself, so it cannot drift from the routes.
 *
 * Paths, methods, path parameters and security (bearer keys; a row's scopes
 * as the requirement's scopes, either one will do) come from the route rows;
 * request and response schemas, query parameters and each route's own
 * statuses from the doc rows beside the table (api_route_doc_t, keyed by
 * method and pattern); the statuses any row can answer from the row's
 * scope and flags (401/403 when it needs a key, 429 and 503 unless it is a
 * probe, 400 and 413 for framing and body size, 404 for an unknown model).
 * Catch-all rows (method NULL) answer 404 only and are not in the document.
 * Every row with a method needs exactly one doc row and every doc row a route
 * row, and every schema named must exist: otherwise no document, an error.
 *
 * Thread-safety: pure; the result belongs to the caller.
 */
#ifndef SLUICE_API_HTTP_OPENAPI_H
#define SLUICE_API_HTTP_OPENAPI_H

#include <jansson.h>
#include <stddef.h>

#include "api/http/route.h"

/* probes_need_key: --auth-probes (probes then need a key of either scope).
 * Returns a new object, or NULL with a message in err. */
json_t *api_openapi_document(const api_route_t *routes, int n_routes, const api_route_doc_t *docs, int n_docs,
                             int probes_need_key, char *err, size_t errlen);

#endif
