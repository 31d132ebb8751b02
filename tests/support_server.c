/* tests/support_server.c - start sluice servers for tests (in-process or child). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support_server.h"

const char *support_model_dir(void) {
    const char *m = getenv("SLUICE_TEST_MODEL");
    return m && *m ? m : "models/all-minilm-l6-v2";
}

void support_server_config(api_config_t *c) {
    api_config_defaults(c);
    c->port = 0;
    snprintf(c->models, sizeof c->models, "%s", support_model_dir());
    snprintf(c->device, sizeof c->device, "cpu");
    snprintf(c->redis, sizeof c->redis, "none");
    snprintf(c->log_level, sizeof c->log_level, "warn");
    c->cpu_threads = 1;
    c->http_threads = 2;
    c->workspace_tokens = 4096;
    c->workspace_seqs = 256;
    c->host_memory_budget = (size_t)512 << 20;
}

int support_server_start(support_server_t *s, const api_config_t *c) {
    memset(s, 0, sizeof *s);
    signal(SIGPIPE, SIG_IGN);
    if (api_serve_start(c, &s->srv, s->err, sizeof s->err)) return -1;
    s->port = api_serve_port(s->srv);
    return 0;
}

void support_server_stop(support_server_t *s) {
    if (!s->srv) return;
    api_serve_shutdown(s->srv, 10000);
    api_serve_destroy(s->srv);
    s->srv = NULL;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int support_proc_start(support_proc_t *p, const char *const *extra) {
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/sluice-serve-XXXXXX");
    if (!mkdtemp(p->dir)) {
        snprintf(p->err, sizeof p->err, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    char portfile[300];
    snprintf(portfile, sizeof portfile, "%s/port", p->dir);
    snprintf(p->log, sizeof p->log, "%s/stderr.log", p->dir);
    const char *bin = getenv("SLUICE_BIN");
    if (!bin || !*bin) bin = "bin/sluice";
    const char *argv[64];
    int n = 0;
    const char *base[] = {bin, "serve", "--port", "0", "--port-file", portfile, "--device", "cpu",
                          "--models", support_model_dir(), "--redis", "none", "--log-level", "warn",
                          "--cpu-threads", "1", "--workspace-tokens", "4096", "--workspace-seqs", "256",
                          "--host-memory-budget", "512M"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) argv[n++] = base[i];
    for (const char *const *e = extra; e && *e && n < 62; e++) argv[n++] = *e;
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(p->err, sizeof p->err, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int port = 0;
            if (fscanf(f, "%d", &port) == 1 && port > 0) p->port = port;
            fclose(f);
            if (p->port) return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            p->pid = 0;
            snprintf(p->err, sizeof p->err, "%s serve exited early (status %d); see %s", bin, st, p->log);
            return -1;
        }
        sleep_ms(10);
    }
    snprintf(p->err, sizeof p->err, "%s serve did not write its port in 30 s", bin);
    support_proc_stop(p, SIGKILL, 1000);
    return -1;
}

int support_proc_stop(support_proc_t *p, int sig, int timeout_ms) {
    int rc = -1;
    if (p->pid > 0) {
        kill(p->pid, sig);
        int st = 0;
        for (int waited = 0;; waited += 10) {
            pid_t w = waitpid(p->pid, &st, WNOHANG);
            if (w == p->pid) {
                rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                break;
            }
            if (waited >= timeout_ms) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &st, 0);
                rc = -1;
                break;
            }
            sleep_ms(10);
        }
        p->pid = 0;
    }
    if (p->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
        if (system(cmd)) { /* best effort */
        }
        p->dir[0] = '\0';
    }
    return rc;
}
