/* api/cli/cli_serve.c - `sluice serve`: settings in, server up, wait for a signal, drain, exit 0.
 *
 * Signals are taken synchronously (sigwait on a blocked set) by the main
 * thread, so no handler runs inside a library call and every thread the
 * server starts inherits the blocked mask.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/cli/cli.h"
#include "api/config.h"
#include "api/log.h"
#include "api/server.h"

int cli_serve(int argc, char **argv) {
    api_config_t cfg;
    api_config_defaults(&cfg);
    char err[1024];
    int rc = api_config_load(&cfg, argc, argv, stdout, err, sizeof err);
    if (rc == 1) return 0;
    if (rc < 0) {
        fprintf(stderr, "sluice serve: %s\n", err);
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    api_serve_t *srv = NULL;
    if (api_serve_start(&cfg, &srv, err, sizeof err)) {
        api_log(API_LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        return 1;
    }
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig)) continue;
        if (sig == SIGHUP) { /* the key file is read again; other settings need a restart */
            if (api_serve_reload(srv, err, sizeof err))
                api_log(API_LOG_WARN, "SIGHUP: keys not reloaded", json_pack("{s:s}", "error", err));
            continue;
        }
        break;
    }
    api_log(API_LOG_INFO, "signal received", json_pack("{s:s}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    api_serve_shutdown(srv, cfg.drain_timeout_ms);
    api_serve_destroy(srv);
    return 0;
}
