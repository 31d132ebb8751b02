/* tests/support_redis.h - a real redis-server for a test: its own free port,
 * its own temp dir, AOF on (appendfsync always, so a SIGKILL loses nothing
 * acknowledged), killed on stop.
 *
 * Start it from the test's main thread: the server is tied to the starting
 * thread with PR_SET_PDEATHSIG, so it dies with a crashed test instead of
 * lingering. The binary is $SLUICE_REDIS_SERVER or redis-server on PATH.
 * Not thread-safe: one support_redis_t is driven by one thread.
 */
#ifndef SLUICE_SUPPORT_REDIS_H
#define SLUICE_SUPPORT_REDIS_H

#include <stddef.h>
#include <sys/types.h>

#include "queue/queue.h"

typedef struct {
    int port;
    pid_t pid;        /* 0 while stopped */
    char dir[256];    /* temp dir: AOF, log */
    char url[64];     /* redis://127.0.0.1:<port>/0 */
    char err[512];    /* why start/restart failed */
    const char *const *extra; /* the extra_args of start, used again by restart (the caller keeps them) */
} support_redis_t;

/* Start on a free port in a fresh temp dir and wait until PING answers.
 * extra_args: NULL-terminated list of more "--option value" words, or NULL;
 * they must outlive r (restart passes them again).
 * 0 ok, -1 with r->err (nothing left running). */
int support_redis_start(support_redis_t *r, const char *const *extra_args);
/* Stop the server (hard: SIGKILL, else SIGTERM which flushes) and start it
 * again on the same port and dir, replaying its AOF. 0 ok, -1 with r->err. */
int support_redis_restart(support_redis_t *r, int hard);
/* Kill the server only (the dir stays, for a later restart). */
void support_redis_kill(support_redis_t *r, int hard);
/* Kill the server and remove its dir. Safe to call twice. */
void support_redis_stop(support_redis_t *r);
/* Run one command (words, NULL-terminated) and return its integer or status
 * as an int64 (strings are parsed as numbers); -1 on error. For checks. */
long long support_redis_cmd(support_redis_t *r, const char *const *words);
/* A queue client on this server for queue `name`, default settings otherwise.
 * NULL with the reason in err. Close with queue_close. */
queue_conn_t *support_redis_queue(const support_redis_t *r, const char *name, char *err, size_t errlen);

#endif
