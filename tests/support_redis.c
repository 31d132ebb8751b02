/* tests/support_redis.c - start, restart and stop a private redis-server for
 * a test (see support_redis.h). Linked into every test binary. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "tests/support_redis.h"

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int pinged(int port) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
}

static void log_tail(support_redis_t *r, const char *why) {
    char path[300], buf[4096] = "";
    snprintf(path, sizeof path, "%s/redis.log", r->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, size > 300 ? size - 300 : 0, SEEK_SET);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        for (char *p = buf; *p; p++)
            if (*p == '\n') *p = ' ';
    }
    snprintf(r->err, sizeof r->err, "redis-server on port %d: %.150s; log: %.300s", r->port, why, buf);
}

/* Fork and exec redis-server on r->port in r->dir; wait for PING. */
static int launch(support_redis_t *r, const char *const *extra) {
    const char *bin = getenv("SLUICE_REDIS_SERVER");
    if (!bin || !*bin) bin = "redis-server";
    char port[16], logfile[300];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(logfile, sizeof logfile, "%s/redis.log", r->dir);
    const char *argv[64] = {bin,          "--port",       port,      "--bind",        "127.0.0.1",
                            "--dir",      r->dir,         "--logfile", logfile,       "--appendonly",
                            "yes",        "--appendfsync", "always", "--save",        "",
                            "--daemonize", "no",          "--protected-mode", "no"};
    int argc = 19;
    for (int i = 0; extra && extra[i] && argc < 62; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(r->err, sizeof r->err, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(bin, (char *const *)argv);
        _exit(127);
    }
    r->pid = pid;
    for (int i = 0; i < 200; i++) { /* up to 10 s: an AOF replay takes a moment */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            r->pid = 0;
            log_tail(r, WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "could not run redis-server" : "exited at start");
            return -1;
        }
        if (pinged(r->port)) return 0;
        nap_ms(50);
    }
    log_tail(r, "no PONG within 10 s");
    support_redis_kill(r, 1);
    return -1;
}

int support_redis_start(support_redis_t *r, const char *const *extra_args) {
    memset(r, 0, sizeof *r);
    r->extra = extra_args;
    for (int attempt = 0; attempt < 5; attempt++) {
        snprintf(r->dir, sizeof r->dir, "%s/sluice-redis-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(r->dir)) {
            snprintf(r->err, sizeof r->err, "mkdtemp %s: %s", r->dir, strerror(errno));
            return -1;
        }
        r->port = free_port();
        if (r->port > 0) {
            snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0", r->port);
            if (launch(r, extra_args) == 0) return 0;
        }
        /* Most likely the port was taken between our probe and the bind. */
        char err[sizeof r->err];
        memcpy(err, r->err, sizeof err);
        support_redis_stop(r);
        memcpy(r->err, err, sizeof err);
        r->extra = extra_args;
    }
    return -1;
}

void support_redis_kill(support_redis_t *r, int hard) {
    if (r->pid <= 0) return;
    kill(r->pid, hard ? SIGKILL : SIGTERM);
    for (int i = 0; i < 100; i++) { /* SIGTERM: up to 5 s to flush, then SIGKILL */
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            r->pid = 0;
            return;
        }
        nap_ms(50);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

int support_redis_restart(support_redis_t *r, int hard) {
    support_redis_kill(r, hard);
    for (int attempt = 0; attempt < 20; attempt++) { /* the port may linger a moment */
        if (launch(r, r->extra) == 0) return 0;
        nap_ms(100);
    }
    return -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void support_redis_stop(support_redis_t *r) {
    support_redis_kill(r, 1);
    if (r->dir[0]) nftw(r->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    r->dir[0] = 0;
}

long long support_redis_cmd(support_redis_t *r, const char *const *words) {
    int argc = 0;
    while (words[argc]) argc++;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    long long v = -1;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *rep = redisCommandArgv(c, argc, (const char **)words, NULL);
        if (rep) {
            if (rep->type == REDIS_REPLY_INTEGER) v = rep->integer;
            else if (rep->type == REDIS_REPLY_STATUS) v = 0;
            else if (rep->type == REDIS_REPLY_STRING) v = strtoll(rep->str, NULL, 10);
            freeReplyObject(rep);
        }
    }
    if (c) redisFree(c);
    return v;
}

queue_conn_t *support_redis_queue(const support_redis_t *r, const char *name, char *err, size_t errlen) {
    queue_config_t qc;
    queue_config_defaults(&qc);
    qc.url = r->url;
    qc.name = name;
    return queue_connect(&qc, err, errlen);
}
