/* queue/scripts.h - the Lua scripts of the Redis queue (internal to queue/).
 *
 * Every state change of a task is one of these scripts, so a crash between
 * two Redis commands can never leave a task half-moved. Each script is the
 * shared prelude (queue_script_prelude) followed by its body; the client
 * loads the full text with SCRIPT LOAD and calls it with EVALSHA.
 *
 * The text lives in queue/lua/<name>.lua (prelude.lua first), embedded at
 * build time by scripts.c.
 *
 * Calling convention: KEYS[1] is "{q}:seq" (a key that exists as long as the
 * queue does); the prefix "{q}:" is KEYS[1] less "seq" and every key is built
 * from it, so all keys of one queue carry the hash tag {q} and live
 * in one Redis Cluster slot. ARGV is described above each body in scripts.c.
 */
#ifndef SLUICE_QUEUE_SCRIPTS_H
#define SLUICE_QUEUE_SCRIPTS_H

typedef enum {
    QS_ENQUEUE = 0,
    QS_LEASE,
    QS_RENEW,
    QS_ACK,
    QS_FAIL,
    QS_RELEASE,
    QS_REAP,
    QS_CANCEL,
    QS_GET,
    QS_WAIT_PREPARE,
    QS_STATS,
    QS_DLQ_LIST,
    QS_DLQ_REQUEUE,
    QS_DLQ_PURGE,
    QS_HELLO,
    QS_STREAM_ADD,
    QS_SUBSCRIBED,
    QS_COUNT
} queue_script_id_t;

extern const char queue_script_prelude[];
extern const char *const queue_script_body[QS_COUNT];
extern const char *const queue_script_name[QS_COUNT];

#endif
