/* tests/support_cluster.h - a real Redis Cluster for a test: six
 * redis-server processes on free loopback ports (support_redis.h each: own
 * dir, AOF always, PDEATHSIG), joined by `redis-cli --cluster create` into
 * three masters with one replica each, a 1 s cluster-node-timeout so a
 * failover takes about two seconds.
 *
 * Start it from the test's main thread. Not thread-safe. redis-cli is
 * $SLUICE_REDIS_CLI or redis-cli on PATH.
 */
#ifndef SLUICE_SUPPORT_CLUSTER_H
#define SLUICE_SUPPORT_CLUSTER_H

#include "tests/support_redis.h"

#define SUPPORT_CLUSTER_NODES 6

typedef struct {
    support_redis_t node[SUPPORT_CLUSTER_NODES];
    char url[512];   /* redis+cluster://127.0.0.1:p1,...,127.0.0.1:p6 (every node a seed) */
    char err[1024];
} support_cluster_t;

/* Start six nodes, create the cluster, wait until every node says
 * cluster_state:ok and every master has a replica in sync. 0, or -1 with
 * c->err (nothing left running). */
int support_cluster_start(support_cluster_t *c);
void support_cluster_stop(support_cluster_t *c);

/* Index of the node that is master of slot now (asked of a live node), -1 if none. */
int support_cluster_owner(support_cluster_t *c, unsigned slot);
/* Index of a live replica whose master is node m, -1 if none. */
int support_cluster_replica_of(support_cluster_t *c, int m);
/* 1 when node i answers ROLE with "master". */
int support_cluster_is_master(support_cluster_t *c, int i);
/* Wait up to ms until every live node reports cluster_state:ok and agrees on
 * the owner of slot. 0 or -1. */
int support_cluster_wait_ok(support_cluster_t *c, unsigned slot, int ms);
/* Move slot from its owner to node `to`: SETSLOT IMPORTING on `to`, then on
 * the owner one script that sets MIGRATING and MIGRATEs every key of the
 * slot (atomic: no client command runs in between), then SETSLOT NODE
 * everywhere. hold_ms: pause before SETSLOT NODE, while clients meet ASK;
 * MOVED after. 0 or -1 + err (also when the old owner still holds a key of
 * the slot after the pause). */
int support_cluster_migrate(support_cluster_t *c, unsigned slot, int to, int hold_ms);
/* The two halves of support_cluster_migrate, for a test that acts while the
 * clients meet ASK: begin returns the old owner's index (or -1 + err); end
 * checks that it holds no key of the slot and hands the slot over. */
int support_cluster_migrate_begin(support_cluster_t *c, unsigned slot, int to);
int support_cluster_migrate_end(support_cluster_t *c, unsigned slot, int from, int to);
/* The node id (CLUSTER MYID) of node i into id[41]; 0 or -1. */
int support_cluster_id(support_cluster_t *c, int i, char id[41]);

#endif
