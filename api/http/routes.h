/* api/http/routes.h - the route table of `sluice serve` and its handlers.
 *
 * One row per route (api/http/route.h says what a row holds); dispatch,
 * auth, probes and the metric labels all read this table. A new route is a
 * row here and a handler in the file of its kind:
 *   probes.c            /healthz /readyz /metrics
 *   routes_embeddings.c /v1/embeddings /v1/expand (the job layer, api/jobs.h)
 *   routes_gen.c        /v1/chat/completions /v1/completions (api/gen_job.h, batcher/sched.h)
 *   routes_tasks.c      /v1/tasks... (the Redis side in api/redis/tasks.h), and the
 *                       admin routes of the queues: /v1/admin/queue/stats, /v1/admin/dlq...
 *   admin.c             /v1/models... /v1/admin/...
 *   page.c              / /ui.js /ui.css (the operator's page, api/http/ui/)
 *   openapi.c           /openapi.json (this table as OpenAPI 3.1)
 * and a doc row in api_route_docs (routes.c) for the OpenAPI document.
 * Each handler returns API_DONE or API_ASYNC (api/http/http.h).
 */
#ifndef SLUICE_API_HTTP_ROUTES_H
#define SLUICE_API_HTTP_ROUTES_H

#include "api/http/http.h"

extern const api_route_t api_routes[];
extern const int api_routes_count;
/* One doc row per route row with a method (api/http/openapi.h reads them). */
extern const api_route_doc_t api_route_docs[];
extern const int api_route_docs_count;

int api_route_healthz(api_req_t *r);
int api_route_readyz(api_req_t *r);
int api_route_metrics(api_req_t *r);
int api_route_embeddings(api_req_t *r);
int api_route_expand(api_req_t *r);
int api_route_chat_completions(api_req_t *r); /* routes_gen.c */
int api_route_completions(api_req_t *r);
int api_route_tasks_post(api_req_t *r);
int api_route_tasks_get(api_req_t *r);
int api_route_tasks_delete(api_req_t *r);
int api_route_tasks_batch(api_req_t *r);
int api_route_queue_stats(api_req_t *r);       /* admin: one queue's depths and counters */
int api_route_dlq_list(api_req_t *r);          /* admin: the dead-letter queue, oldest first */
int api_route_dlq_requeue(api_req_t *r);       /* admin: one entry or all back to ready */
int api_route_dlq_purge(api_req_t *r);         /* admin: drop entries by count or age */
int api_route_models_list(api_req_t *r);
int api_route_model_get(api_req_t *r);
int api_route_model_load(api_req_t *r);
int api_route_model_unload(api_req_t *r);
int api_route_admin_pause(api_req_t *r);
int api_route_admin_resume(api_req_t *r);
int api_route_admin_drain(api_req_t *r);
int api_route_admin_config_get(api_req_t *r);
int api_route_admin_config_patch(api_req_t *r);
int api_route_not_found(api_req_t *r); /* catch-all rows: 404 not_found */
int api_route_page(api_req_t *r);      /* page.c: GET / and its script and style sheet */
int api_route_page_js(api_req_t *r);
int api_route_page_css(api_req_t *r);
int api_route_openapi(api_req_t *r);   /* openapi.c: GET /openapi.json */
/* The Content-Security-Policy of the page's answers (page.c). */
extern const char api_page_csp[];

/* Shutdown: wake every suspended control request (503) and wait for the
 * watcher threads to end (before the batcher goes). */
void api_admin_stop_watchers(api_ctx_t *ctx);

#endif
