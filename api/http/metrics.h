/* api/http/metrics.h - the control plane's Prometheus series, and the extra ones
 * of /metrics (per route, per model, the Redis queues, auth, rate limits, cache).
 *
 * api/http/probes.c writes the batcher's series (batches, histograms of batch size,
 * batch tokens and queue wait, items by outcome, pending items, memory of the
 * device); api_metrics_append adds these after them in the same scrape:
 *   sluice_requests_total{route,status}          counter
 *   sluice_request_duration_seconds{route}       histogram
 *   sluice_compute_seconds{model}                histogram, per batch
 *   sluice_model_*{model}                        state, memory by kind, requests, errors
 *   sluice_queue_depth{queue,state}, sluice_queue_tasks_total{queue,event}
 *   sluice_redis_reconnects_total, sluice_redis_errors_total
 *   sluice_auth_rejections_total{reason}, sluice_rate_limited_total{limit}
 *   sluice_cache_{hits,misses}_total, sluice_cache_entries, sluice_cache_bytes
 *   sluice_paused, sluice_draining
 *   generation (batcher/sched.h), per model:
 *   sluice_gen_{ttft,itl,e2e,queue}_seconds{model}   histograms (time to first token, between tokens,
 *                                                    submit to done, submit to first admission)
 *   sluice_gen_{prompt,prefill,generated}_tokens_total{model}, sluice_gen_preemptions_total{model},
 *   sluice_gen_prefix_cache_{lookups,hits}_total{model}, sluice_gen_requests_total{model}  counters
 *   sluice_gen_sequences{model,state="running"|"waiting"}, sluice_gen_kv_blocks{model,state="used"|"cached"|"total"}
 * Routes are labelled by their row's label in the route table (the pattern,
 * /v1/tasks/{id}), never by the raw path, so the number of series stays fixed.
 *
 * Thread-safety: every call is thread-safe.
 */
#ifndef SLUICE_API_METRICS_H
#define SLUICE_API_METRICS_H

#include <stddef.h>

#include "api/http/route.h"
#include "batcher/batcher.h"
#include "batcher/sched.h"
#include "engine/registry.h"

typedef struct api_metrics api_metrics_t;
typedef struct api_tasks api_tasks_t;
typedef struct api_cache api_cache_t;

enum { API_AUTH_MISSING = 0, API_AUTH_INVALID = 1, API_AUTH_SCOPE = 2, API_AUTH_N };

/* routes: the table whose labels (api_route_label) the request series use. */
int api_metrics_create(int n_models, const api_route_t *routes, int n_routes, api_metrics_t **out); /* 0 or -1 */
void api_metrics_destroy(api_metrics_t *m);

/* label: api_route_label_index of the request's route. */
void api_metrics_request(api_metrics_t *m, int label, unsigned status, double seconds);
void api_metrics_batch(api_metrics_t *m, int model, double compute_s);
void api_metrics_auth_reject(api_metrics_t *m, int reason);   /* API_AUTH_* */
void api_metrics_rate_limited(api_metrics_t *m, int which);   /* API_RL_REQUESTS / API_RL_TOKENS */
/* A generation latency (a sched_observe_fn: user is the api_metrics_t; kind
 * "ttft", "itl", "e2e" or "queue"; other kinds are ignored). Never blocks long. */
void api_metrics_gen_observe(void *user, int model, const char *kind, double seconds);

/* Where the per-model, queue and cache series come from (any may be NULL). */
typedef struct {
    registry_t *reg;
    batcher_t *bat;
    api_tasks_t *tasks; /* the Redis intake (api/redis/tasks.h) */
    api_cache_t *cache;
    sched_t *sched;     /* the generation scheduler, and its stats call */
    void (*sched_stats)(sched_t *s, int model, sched_stats_t *out);
} api_metrics_sources_t;

/* Append the series above to a malloc'd text (*buf, *len, *cap; grown with
 * realloc). 0, or -1 when out of memory (the text is kept as it was). */
int api_metrics_append(api_metrics_t *m, const api_metrics_sources_t *src, char **buf, size_t *len, size_t *cap);

#endif
