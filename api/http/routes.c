/* api/http/routes.c - the route table. The order of rows is the order of the
 * route labels in /metrics; catch-alls come after the rows they back up. */
#include "api/http/routes.h"

#define INFER API_SCOPE_INFER
#define ADMIN API_SCOPE_ADMIN
#define PROBE API_ROUTE_PROBE
#define MODEL API_ROUTE_NEEDS_MODEL

const api_route_t api_routes[] = {
    /* method   pattern                        scope          label                        flags  handler */
    {"GET",    "/healthz",                     0,             "/healthz",                  PROBE, api_route_healthz},
    {"GET",    "/readyz",                      0,             "/readyz",                   PROBE, api_route_readyz},
    {"GET",    "/metrics",                     0,             "/metrics",                  PROBE, api_route_metrics},
    {"POST",   "/v1/embeddings",               INFER,         "/v1/embeddings",            0,     api_route_embeddings},
    {"POST",   "/v1/expand",                   INFER,         "/v1/expand",                0,     api_route_expand},
    {"POST",   "/v1/chat/completions",         INFER,         "/v1/chat/completions",      0,     api_route_chat_completions},
    {"POST",   "/v1/completions",              INFER,         "/v1/completions",           0,     api_route_completions},
    {"POST",   "/v1/tasks",                    INFER,         "/v1/tasks",                 0,     api_route_tasks_post},
    /* before /v1/tasks/{id}: the first pattern that fits a path decides */
    {"POST",   "/v1/tasks/batch",              INFER,         "/v1/tasks/batch",           0,     api_route_tasks_batch},
    {"GET",    "/v1/tasks/{id}",               INFER,         "/v1/tasks/{id}",            0,     api_route_tasks_get},
    {"DELETE", "/v1/tasks/{id}",               INFER,         "/v1/tasks/{id}",            0,     api_route_tasks_delete},
    {"GET",    "/v1/models",                   INFER | ADMIN, "/v1/models",                0,     api_route_models_list},
    {"GET",    "/v1/models/{name}",            INFER | ADMIN, "/v1/models/{name}",         MODEL, api_route_model_get},
    {"POST",   "/v1/models/{name}/load",       ADMIN,         "/v1/models/{name}/load",    MODEL, api_route_model_load},
    {"POST",   "/v1/models/{name}/unload",     ADMIN,         "/v1/models/{name}/unload",  MODEL, api_route_model_unload},
    {"POST",   "/v1/admin/pause",              ADMIN,         "/v1/admin/pause",           0,     api_route_admin_pause},
    {"POST",   "/v1/admin/resume",             ADMIN,         "/v1/admin/resume",          0,     api_route_admin_resume},
    {"POST",   "/v1/admin/drain",              ADMIN,         "/v1/admin/drain",           0,     api_route_admin_drain},
    {"GET",    "/v1/admin/config",             ADMIN,         "/v1/admin/config",          0,     api_route_admin_config_get},
    {"PATCH",  "/v1/admin/config",             ADMIN,         "/v1/admin/config",          0,     api_route_admin_config_patch},
    {"GET",    "/v1/admin/queue/stats",        ADMIN,         "/v1/admin/queue/stats",     0,     api_route_queue_stats},
    {"GET",    "/v1/admin/dlq",                ADMIN,         "/v1/admin/dlq",             0,     api_route_dlq_list},
    {"POST",   "/v1/admin/dlq/requeue",        ADMIN,         "/v1/admin/dlq/requeue",     0,     api_route_dlq_requeue},
    {"POST",   "/v1/admin/dlq/purge",          ADMIN,         "/v1/admin/dlq/purge",       0,     api_route_dlq_purge},
    /* the operator's page (api/http/page.c): static, no server data, open; its data calls carry the key */
    {"GET",    "/",                            0,             "/",                         0,     api_route_page},
    {"GET",    "/ui.js",                       0,             "/ui.js",                    0,     api_route_page_js},
    {"GET",    "/ui.css",                      0,             "/ui.css",                   0,     api_route_page_css},
    /* this table as OpenAPI 3.1 (api/http/openapi.c): any valid key, like /v1/models */
    {"GET",    "/openapi.json",                INFER | ADMIN, "/openapi.json",             0,     api_route_openapi},
    /* unknown actions under a model or /v1/admin: admin scope, 404 */
    {NULL,     "/v1/models/{name}/{action}",   ADMIN,         "other",                     MODEL, api_route_not_found},
    {NULL,     "/v1/admin/{action}",           ADMIN,         "other",                     0,     api_route_not_found},
};

const int api_routes_count = (int)(sizeof api_routes / sizeof api_routes[0]);

/* What each row takes and answers, for /openapi.json (api/http/route.h says
 * what a doc row holds; the schemas are api/http/openapi_schemas.json). */
#define J NULL /* application/json */
const api_route_doc_t api_route_docs[] = {
    /* method   pattern                   summary                                  request            response             media  stream         success    errors                              query */
    {"GET",    "/healthz",                "Liveness",                              NULL,              "Health",            J,     NULL,          "200",     "",                                 NULL},
    {"GET",    "/readyz",                 "Readiness and what is not ready",       NULL,              "Ready",             J,     NULL,          "200 503", "",                                 NULL},
    {"GET",    "/metrics",                "Prometheus metrics",                    NULL,              "Metrics",           "text/plain; version=0.0.4", NULL, "200", "500",                    NULL},
    {"POST",   "/v1/embeddings",          "Embeddings (OpenAI)",                   "EmbeddingsRequest", "EmbeddingsResponse", J,  NULL,          "200",     "404 408 422 500 507",              NULL},
    {"POST",   "/v1/expand",              "Nearest vocabulary terms of each term", "ExpandRequest",   "ExpandResponse",    J,     NULL,          "200",     "404 408 422 500 507",              NULL},
    {"POST",   "/v1/chat/completions",    "Chat completions (OpenAI)",             "ChatCompletionRequest", "ChatCompletion", J,   "EventStream", "200",     "404 408 500 507",                  NULL},
    {"POST",   "/v1/completions",         "Text completions (OpenAI)",             "CompletionRequest", "Completion",      J,     "EventStream", "200",     "404 408 500 507",                  NULL},
    {"POST",   "/v1/tasks",               "Enqueue a task into a Redis queue",     "TaskFields",      "TaskEnqueued",      J,     NULL,          "202",     "404 422",                          NULL},
    {"POST",   "/v1/tasks/batch",         "Enqueue many tasks at once",            "TaskBatchRequest", "TaskBatchResponse", J,    NULL,          "202 429", "404 422",                          NULL},
    {"GET",    "/v1/tasks/{id}",          "A task's state and result",             NULL,              "Task",              J,     NULL,          "200",     "404",                              "wait:number queue:string"},
    {"DELETE", "/v1/tasks/{id}",          "Cancel a task",                         NULL,              "Task",              J,     NULL,          "200 202", "404 409",                          "queue:string"},
    {"GET",    "/v1/models",              "Models and the memory budget",          NULL,              "ModelList",         J,     NULL,          "200",     "",                                 NULL},
    {"GET",    "/v1/models/{name}",       "One model",                             NULL,              "ModelAnswer",       J,     NULL,          "200",     "",                                 NULL},
    {"POST",   "/v1/models/{name}/load",  "Load a model",                          NULL,              "ModelAnswer",       J,     NULL,          "200 202", "507",                              "timeout_ms:integer"},
    {"POST",   "/v1/models/{name}/unload", "Unload a model",                       NULL,              "ModelAnswer",       J,     NULL,          "200 202", "507",                              "timeout_ms:integer"},
    {"POST",   "/v1/admin/pause",         "Stop taking work",                      NULL,              "AdminState",        J,     NULL,          "200",     "",                                 NULL},
    {"POST",   "/v1/admin/resume",        "Take work again",                       NULL,              "AdminState",        J,     NULL,          "200",     "",                                 NULL},
    {"POST",   "/v1/admin/drain",         "Finish what is pending, take nothing",  NULL,              "AdminState",        J,     NULL,          "200",     "",                                 "timeout_ms:integer"},
    {"GET",    "/v1/admin/config",        "The live batching limits",              NULL,              "Limits",            J,     NULL,          "200",     "",                                 NULL},
    {"PATCH",  "/v1/admin/config",        "Change live batching limits",           "LimitsPatch",     "Limits",            J,     NULL,          "200",     "422",                              NULL},
    {"GET",    "/v1/admin/queue/stats",   "A queue's depths and counters",         NULL,              "QueueStats",        J,     NULL,          "200",     "404",                              "queue:string"},
    {"GET",    "/v1/admin/dlq",           "The dead-letter queue, oldest first",   NULL,              "DlqList",           J,     NULL,          "200",     "404",                              "queue:string offset:integer limit:integer"},
    {"POST",   "/v1/admin/dlq/requeue",   "Dead-letter entries back to ready",     "DlqRequeue",      "DlqCount",          J,     NULL,          "200",     "404",                              "queue:string"},
    {"POST",   "/v1/admin/dlq/purge",     "Drop dead-letter entries",              "DlqPurge",        "DlqCount",          J,     NULL,          "200",     "404",                              "queue:string"},
    {"GET",    "/",                       "The operator's page (HTML)",            NULL,              "Page",              "text/html; charset=utf-8", NULL, "200", "",                         NULL},
    {"GET",    "/ui.js",                  "The page's script",                     NULL,              "Page",              "text/javascript; charset=utf-8", NULL, "200", "",                   NULL},
    {"GET",    "/ui.css",                 "The page's style sheet",                NULL,              "Page",              "text/css; charset=utf-8", NULL, "200", "",                          NULL},
    {"GET",    "/openapi.json",           "This API as OpenAPI 3.1",               NULL,              "OpenAPI",           J,     NULL,          "200",     "500",                              NULL},
};
#undef J

const int api_route_docs_count = (int)(sizeof api_route_docs / sizeof api_route_docs[0]);
