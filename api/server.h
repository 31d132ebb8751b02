/* api/server.h - `sluice serve` as a library: registry + batcher + HTTP + Redis intake.
 *
 * api_serve_start wires the parts together from an api_config_t: it opens the
 * device and its arena (registry), starts the batcher's threads, the HTTP
 * server (libmicrohttpd, internal epoll thread pool, suspend/resume: no HTTP
 * thread ever waits for compute) and, unless Redis is off, one intake and one
 * completion thread per Redis queue. Preloaded models load in the background;
 * /readyz says which are ready. The CLI (api/cli/cli_serve.c) and the tests
 * use the same calls. The HTTP room is api/http/, the Redis room api/redis/;
 * this is the one place that knows them both.
 *
 * api_serve_shutdown is the graceful stop: stop accepting, finish in-flight
 * and pending work within the drain timeout, answer what is left (HTTP 503;
 * Redis leases handed back to the queue, not failed), stop the threads and
 * unload every model. Then api_serve_destroy frees the rest.
 *
 * Thread-safety: the getters are safe from any thread; shutdown and destroy
 * are called once, from the thread that started the server.
 */
#ifndef SLUICE_API_SERVER_H
#define SLUICE_API_SERVER_H

#include "api/config.h"
#include "api/http/http.h"
#include "batcher/batcher.h"
#include "engine/registry.h"

typedef struct api_serve api_serve_t;

/* 0, or -1 with a message (bad setting, no device, port taken...). */
int api_serve_start(const api_config_t *cfg, api_serve_t **out, char *err, size_t errlen);
/* Graceful stop (see above); returns the number of items answered unfinished. */
int api_serve_shutdown(api_serve_t *s, int drain_timeout_ms);
void api_serve_destroy(api_serve_t *s); /* shuts down first if needed; NULL is a no-op */

int api_serve_port(const api_serve_t *s);
registry_t *api_serve_registry(api_serve_t *s);
batcher_t *api_serve_batcher(api_serve_t *s);
void api_serve_http_stats(api_serve_t *s, api_http_stats_t *out);
/* Redis intake: 1 when every queue's connections are up, 0 when some are
 * down (reconnecting), -1 when Redis is off. */
int api_serve_queue_up(api_serve_t *s);
/* SIGHUP: read the key file again (api/http/ctl.h); 0 or -1 with a message. */
int api_serve_reload(api_serve_t *s, char *err, size_t errlen);

#endif
