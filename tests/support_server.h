/* tests/support_server.h - a real sluice server for a test, on an ephemeral port.
 *
 * In-process: support_server_start runs api_serve_start with a test config
 * (CPU backend, the model under $SLUICE_TEST_MODEL, no Redis unless set,
 * warnings-only logs), so a test can also read the server's counters.
 * As a child process: support_proc_start runs `$SLUICE_BIN serve` (default
 * bin/sluice) with extra flags, for signals and the CLI itself.
 * Not thread-safe: driven by the test's main thread.
 */
#ifndef SLUICE_SUPPORT_SERVER_H
#define SLUICE_SUPPORT_SERVER_H

#include <sys/types.h>

#include "api/config.h"
#include "api/server.h"

/* The model folder tests use ($SLUICE_TEST_MODEL or models/all-minilm-l6-v2). */
const char *support_model_dir(void);
/* Defaults for a test server: port 0, cpu, 1 compute thread, redis none, log warn. */
void support_server_config(api_config_t *c);

typedef struct {
    api_serve_t *srv;
    int port;
    char err[1024];
} support_server_t;

int support_server_start(support_server_t *s, const api_config_t *c); /* 0 or -1 with s->err */
void support_server_stop(support_server_t *s);                        /* graceful, then free */

typedef struct {
    pid_t pid;
    int port;
    char dir[256];   /* temp dir: port file, stderr log */
    char log[300];   /* the child's stderr */
    char err[512];
} support_proc_t;

/* Start `$SLUICE_BIN serve --port 0 --port-file ... --device cpu --models MODEL
 * --redis none --log-level warn` plus extra (NULL-terminated, may override).
 * Waits up to 30 s for the port. 0 or -1 with p->err. */
int support_proc_start(support_proc_t *p, const char *const *extra);
/* Send sig, wait up to timeout_ms; returns the exit status (or 128+signal,
 * or -1 when it had to be killed). Removes the temp dir. */
int support_proc_stop(support_proc_t *p, int sig, int timeout_ms);

#endif
