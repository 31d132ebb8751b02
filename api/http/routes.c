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
    /* unknown actions under a model or /v1/admin: admin scope, 404 */
    {NULL,     "/v1/models/{name}/{action}",   ADMIN,         "other",                     MODEL, api_route_not_found},
    {NULL,     "/v1/admin/{action}",           ADMIN,         "other",                     0,     api_route_not_found},
};

const int api_routes_count = (int)(sizeof api_routes / sizeof api_routes[0]);
