/* queue/cluster.h - Redis Cluster routing for the queue (internal to queue/):
 * the key -> hash slot function (CRC16/XMODEM mod 16384 with hash tags, as
 * Redis computes it), the slot map parsed from CLUSTER SLOTS, the seed list
 * of a cluster URL and the MOVED/ASK redirection replies.
 *
 * Why it is small: every key of queue q carries the hash tag {q}, so one
 * queue lives in exactly one slot and one connection only ever needs the
 * master of that slot. The map is kept whole anyway: its nodes (masters and
 * replicas) are where a refresh asks when the owner is gone.
 *
 * Ownership: a queue_slot_map_t owns its arrays until queue_slot_map_clear;
 * queue_seeds_t owns its array until queue_seeds_clear. Pure functions, no
 * I/O, thread-safe.
 */
#ifndef SLUICE_QUEUE_CLUSTER_H
#define SLUICE_QUEUE_CLUSTER_H

#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include "queue/queue.h"

#define QUEUE_CLUSTER_SLOTS 16384

/* CRC16/XMODEM (poly 0x1021, init 0, no reflection): Redis's crc16(). */
uint16_t queue_crc16(const void *buf, size_t len);
/* The hash slot of a key: CRC16 of the part between the first '{' and the
 * next '}' when that part is non-empty, else of the whole key; mod 16384. */
unsigned queue_key_slot(const char *key, size_t len);

typedef struct {
    char host[256];
    int port;
} queue_node_t;

typedef struct {
    unsigned start, end; /* inclusive slot range */
    int master;          /* index into nodes */
} queue_slot_range_t;

typedef struct {
    queue_slot_range_t *ranges;
    size_t nranges;
    queue_node_t *nodes; /* masters and replicas, each once */
    size_t nnodes;
} queue_slot_map_t;

/* Parse a CLUSTER SLOTS reply. An empty host (a node that does not know its
 * own address) becomes `asked_host`, the address the reply came from.
 * 0, or -1 with err filled (the map is then empty). */
int queue_slot_map_parse(const redisReply *r, const char *asked_host, queue_slot_map_t *m, char *err,
                         size_t errlen);
/* The master owning slot, or NULL when no range covers it. */
const queue_node_t *queue_slot_map_owner(const queue_slot_map_t *m, unsigned slot);
void queue_slot_map_clear(queue_slot_map_t *m);

/* A redirection error reply: "MOVED <slot> <host>:<port>" or "ASK ...".
 * Returns 1 for MOVED, 2 for ASK (node filled), 0 for anything else. */
enum { QUEUE_REDIR_NONE = 0, QUEUE_REDIR_MOVED = 1, QUEUE_REDIR_ASK = 2 };
int queue_redirect_parse(const char *err, queue_node_t *node);

/* The seeds of a Redis URL: "redis://[auth@]h1:p1,h2:p2,..." or the same
 * with "redis+cluster://". cluster is 1 when the scheme says so or more than
 * one host is given (then the database must be 0: a cluster has only one).
 * The auth part applies to every seed. 0 or QUEUE_EINVAL with err filled. */
typedef struct {
    queue_node_t *nodes;
    size_t n;
    int cluster;
} queue_seeds_t;

int queue_seeds_parse(const char *url, queue_seeds_t *s, char *err, size_t errlen);
/* The plain "redis://[auth@]host:port[/db]" URL of seed i (0-based) of url
 * into buf. 0, or -1 when there is no such seed or buf is too small. */
int queue_seed_url(const char *url, size_t i, char *buf, size_t buflen);
void queue_seeds_clear(queue_seeds_t *s);

#endif
