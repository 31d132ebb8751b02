/* tests/support_cluster.c - a six-node Redis Cluster for a test (see
 * support_cluster.h). */
#include <errno.h>
#include <stdarg.h>
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests/support_cluster.h"

static const char *const node_args[] = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                        "--cluster-node-timeout", "1000", "--repl-ping-replica-period", "1",
                                        /* Redis 7 waits 5 s before a diskless full sync by default:
                                         * each cluster start paid it, and a loaded box added enough
                                         * on top to miss the readiness window. */
                                        "--repl-diskless-sync-delay", "0", NULL};

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static redisContext *node_ctx(support_cluster_t *c, int i) {
    if (c->node[i].pid <= 0) return NULL;
    struct timeval tv = {2, 0};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", c->node[i].port, tv);
    if (ctx && ctx->err) {
        redisFree(ctx);
        return NULL;
    }
    if (ctx) redisSetTimeout(ctx, tv);
    return ctx;
}

/* One command on node i: the reply (free it) or NULL. */
static redisReply *node_cmd(support_cluster_t *c, int i, const char *fmt, ...) {
    redisContext *ctx = node_ctx(c, i);
    if (!ctx) return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    redisFree(ctx);
    return r;
}

int support_cluster_id(support_cluster_t *c, int i, char id[41]) {
    redisReply *r = node_cmd(c, i, "CLUSTER MYID");
    int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok) memcpy(id, r->str, 41);
    if (r) freeReplyObject(r);
    return ok ? 0 : -1;
}

int support_cluster_is_master(support_cluster_t *c, int i) {
    redisReply *r = node_cmd(c, i, "ROLE");
    int m = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
            !strcmp(r->element[0]->str, "master");
    if (r) freeReplyObject(r);
    return m;
}

static int index_of_port(support_cluster_t *c, long long port) {
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++)
        if (c->node[i].port == port) return i;
    return -1;
}

int support_cluster_replica_of(support_cluster_t *c, int m) {
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++) {
        if (i == m) continue;
        redisReply *r = node_cmd(c, i, "ROLE");
        int yes = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[0]->type == REDIS_REPLY_STRING &&
                  !strcmp(r->element[0]->str, "slave") && r->element[2]->type == REDIS_REPLY_INTEGER &&
                  r->element[2]->integer == c->node[m].port;
        if (r) freeReplyObject(r);
        if (yes) return i;
    }
    return -1;
}

int support_cluster_owner(support_cluster_t *c, unsigned slot) {
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++) {
        redisReply *r = node_cmd(c, i, "CLUSTER SLOTS");
        if (!r) continue;
        int owner = -1;
        for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            redisReply *e = r->element[k];
            if (e->elements >= 3 && (unsigned)e->element[0]->integer <= slot && slot <= (unsigned)e->element[1]->integer)
                owner = index_of_port(c, e->element[2]->element[1]->integer);
        }
        freeReplyObject(r);
        return owner;
    }
    return -1;
}

static int state_ok(support_cluster_t *c, int i) {
    redisReply *r = node_cmd(c, i, "CLUSTER INFO");
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
    if (r) freeReplyObject(r);
    return ok;
}

int support_cluster_wait_ok(support_cluster_t *c, unsigned slot, int ms) {
    for (int waited = 0; waited < ms; waited += 50) {
        int ok = 1, owner = -2;
        for (int i = 0; i < SUPPORT_CLUSTER_NODES && ok; i++) {
            if (c->node[i].pid <= 0) continue;
            ok = state_ok(c, i);
            redisReply *r = ok ? node_cmd(c, i, "CLUSTER SLOTS") : NULL;
            int o = -1;
            for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
                redisReply *e = r->element[k];
                if ((unsigned)e->element[0]->integer <= slot && slot <= (unsigned)e->element[1]->integer)
                    o = index_of_port(c, e->element[2]->element[1]->integer);
            }
            if (r) freeReplyObject(r);
            if (o < 0 || c->node[o].pid <= 0 || (owner != -2 && o != owner)) ok = 0;
            owner = o;
        }
        if (ok) return 0;
        nap_ms(50);
    }
    return -1;
}

void support_cluster_stop(support_cluster_t *c) {
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++) support_redis_stop(&c->node[i]);
}

int support_cluster_start(support_cluster_t *c) {
    memset(c, 0, sizeof *c);
    char cmd[1024];
    const char *cli = getenv("SLUICE_REDIS_CLI");
    int n = snprintf(cmd, sizeof cmd, "%s --cluster create", cli && *cli ? cli : "redis-cli");
    int un = snprintf(c->url, sizeof c->url, "redis+cluster://");
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++) {
        if (support_redis_start(&c->node[i], node_args)) {
            snprintf(c->err, sizeof c->err, "node %d: %s", i, c->node[i].err);
            goto fail;
        }
        n += snprintf(cmd + n, sizeof cmd - n, " 127.0.0.1:%d", c->node[i].port);
        un += snprintf(c->url + un, sizeof c->url - un, "%s127.0.0.1:%d", i ? "," : "", c->node[i].port);
    }
    snprintf(cmd + n, sizeof cmd - n, " --cluster-replicas 1 --cluster-yes >%s/create.log 2>&1", c->node[0].dir);
    if (system(cmd) != 0) {
        snprintf(c->err, sizeof c->err, "redis-cli --cluster create failed (see %s/create.log)", c->node[0].dir);
        goto fail;
    }
    /* Up when every node agrees and every replica has synced. */
    for (int waited = 0;; waited += 100) {
        int ok = support_cluster_wait_ok(c, 0, 100) == 0;
        int masters = 0, synced = 0;
        for (int i = 0; ok && i < SUPPORT_CLUSTER_NODES; i++) {
            redisReply *r = node_cmd(c, i, "ROLE");
            if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[0]->type == REDIS_REPLY_STRING) {
                if (!strcmp(r->element[0]->str, "master")) masters++;
                else if (r->elements >= 4 && r->element[3]->type == REDIS_REPLY_STRING && !strcmp(r->element[3]->str, "connected")) synced++;
            }
            if (r) freeReplyObject(r);
        }
        if (ok && masters == 3 && synced == 3) return 0;
        if (waited > 30000) {
            snprintf(c->err, sizeof c->err, "cluster not ready within 30 s (%d masters, %d replicas synced)", masters, synced);
            goto fail;
        }
        nap_ms(100);
    }
fail:
    support_cluster_stop(c);
    return -1;
}

/* The move of a slot's keys, exactly as docs/operations.md tells operators:
 * packaging/sluice-move-slot.lua through `redis-cli --eval` on the owner,
 * one atomic script that sets MIGRATING and MIGRATEs every key of the slot
 * (why atomic: see the script). 0, or -1 with c->err holding its answer. */
static int migrate_keys(support_cluster_t *c, int from, int to, unsigned slot, const char *to_id) {
    const char *cli = getenv("SLUICE_REDIS_CLI");
    char cmd[600], out[256] = "";
    snprintf(cmd, sizeof cmd, "%s -p %d --eval packaging/sluice-move-slot.lua , %u %s 127.0.0.1 %d 10000 2>&1",
             cli && *cli ? cli : "redis-cli", c->node[from].port, slot, to_id, c->node[to].port);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(c->err, sizeof c->err, "migrate: cannot run %.500s", cmd);
        return -1;
    }
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int status = pclose(p);
    char *end;
    long long moved = strtoll(out, &end, 10);
    if (status != 0 || end == out || (*end && *end != '\n') || moved < 0) {
        snprintf(c->err, sizeof c->err, "migrate slot %u: %.500s: %s", slot, cmd, out);
        return -1;
    }
    return 0;
}

/* Keys of slot still on node i: -1 when it does not answer. */
static long long keys_in_slot(support_cluster_t *c, int i, unsigned slot) {
    redisReply *r = node_cmd(c, i, "CLUSTER COUNTKEYSINSLOT %u", slot);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    return n;
}

int support_cluster_migrate_begin(support_cluster_t *c, unsigned slot, int to) {
    int from = support_cluster_owner(c, slot);
    char fid[41], tid[41];
    if (from < 0 || from == to || support_cluster_id(c, from, fid) || support_cluster_id(c, to, tid)) {
        snprintf(c->err, sizeof c->err, "migrate: no owner of slot %u, or it is already node %d", slot, to);
        return -1;
    }
    redisReply *r = node_cmd(c, to, "CLUSTER SETSLOT %u IMPORTING %s", slot, fid);
    if (r) freeReplyObject(r);
    return migrate_keys(c, from, to, slot, tid) ? -1 : from;
}

int support_cluster_migrate_end(support_cluster_t *c, unsigned slot, int from, int to) {
    char tid[41];
    if (support_cluster_id(c, to, tid)) {
        snprintf(c->err, sizeof c->err, "migrate: node %d does not answer", to);
        return -1;
    }
    /* A MIGRATING node answers ASK for every key it lacks, so nothing can
     * have been created there meanwhile: a key now is a bug, not a race. */
    long long left = keys_in_slot(c, from, slot);
    if (left != 0) {
        snprintf(c->err, sizeof c->err, "migrate: node %d holds %lld keys of slot %u after the move", from, left, slot);
        return -1;
    }
    redisReply *r = node_cmd(c, to, "CLUSTER SETSLOT %u NODE %s", slot, tid);
    if (r) freeReplyObject(r);
    r = node_cmd(c, from, "CLUSTER SETSLOT %u NODE %s", slot, tid);
    if (r) freeReplyObject(r);
    for (int i = 0; i < SUPPORT_CLUSTER_NODES; i++) {
        if (i == from || i == to || c->node[i].pid <= 0 || !support_cluster_is_master(c, i)) continue;
        r = node_cmd(c, i, "CLUSTER SETSLOT %u NODE %s", slot, tid);
        if (r) freeReplyObject(r);
    }
    return support_cluster_wait_ok(c, slot, 10000);
}

int support_cluster_migrate(support_cluster_t *c, unsigned slot, int to, int hold_ms) {
    int from = support_cluster_migrate_begin(c, slot, to);
    if (from < 0) return -1;
    nap_ms(hold_ms);
    return support_cluster_migrate_end(c, slot, from, to);
}
