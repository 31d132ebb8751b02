/* queue/scripts.c - the Lua of every queue script, embedded from
 * queue/lua/<name>.lua at build time (the same files a producer in another
 * language loads; docs/queue.md gives their contracts).
 *
 * Why Lua: each state change reads and writes several keys (the task hash,
 * two sorted sets, the stats hash); doing it in one script makes it atomic,
 * so a worker or Redis crash can never leave a task in two states or none.
 * Time comes from Redis TIME inside the scripts (Redis 7 replicates script
 * effects, so TIME is allowed in writing scripts): every worker agrees on
 * "now" whatever its own clock says.
 *
 * Keys of queue q (KEYS[1] is "{q}:seq"; the prefix "{q}:" is taken from it):
 *   {q}:ready      zset  id by (PRIO_MAX - priority) * 2^32 + seq: pop min = highest priority, FIFO
 *   {q}:delayed    zset  id by due time (ms): retries with backoff, delayed enqueues
 *   {q}:leased     zset  id by lease deadline (ms): the only record of it
 *   {q}:dlq        zset  id by the time it died (ms)
 *   {q}:deadlines  zset  waiting (ready/delayed) ids with a task deadline, by deadline (ms)
 *   {q}:t:<id>     hash  the task (fields below)
 *   {q}:r:<id>     string the result of a task finished before 2026-12 (now the hash's `result`), read by get
 *   {q}:tomb:<id>  string a finished signed task's tombstone; {q}:tomb_ms its life (hello)
 *   {q}:subs       string set (PX) while someone listens to {q}:events; no PUBLISH without it
 *   {q}:w:<id>     list  wake-ups for clients blocked in BLPOP on this task
 *   {q}:dd:<key>   string dedup key -> id, with a TTL
 *   {q}:stats      hash  counters
 *   {q}:seq, {q}:token   counters (FIFO order, fencing tokens)
 *   {q}:reaper     string guard: one reap sweep per interval
 *   {q}:b:<id>     string marker of an applied enqueue call of several tasks (its first id)
 *   {q}:events     pub/sub channel: "id state" lines when tasks end (while {q}:subs lives)
 * Task hash fields: payload sig prio score state attempts maxatt enq deadline
 *   dedup rttl token worker finished result error dead_at due cancel
 *   ftok (token of the holder whose fail was applied) waiters.
 * States: ready delayed leased | done dlq expired cancelled (terminal).
 */
#include "queue/scripts.h"
#include "kernels/util.h"
#include "queue/queue.h"

_Static_assert(QUEUE_PRIORITY_MAX == 255, "queue/lua/prelude.lua says PRIO_MAX = 255");

/* Each file becomes a NUL-terminated array in .rodata (UTIL_EMBED); the
 * Makefile makes scripts.o depend on every queue/lua file. */
#define LUA_EMBED(sym, file) UTIL_EMBED(sym, "queue/lua/" file)

LUA_EMBED(queue_script_prelude, "prelude.lua");
LUA_EMBED(queue_lua_enqueue, "enqueue.lua");
LUA_EMBED(queue_lua_lease, "lease.lua");
LUA_EMBED(queue_lua_renew, "renew.lua");
LUA_EMBED(queue_lua_ack, "ack.lua");
LUA_EMBED(queue_lua_fail, "fail.lua");
LUA_EMBED(queue_lua_release, "release.lua");
LUA_EMBED(queue_lua_reap, "reap.lua");
LUA_EMBED(queue_lua_cancel, "cancel.lua");
LUA_EMBED(queue_lua_get, "get.lua");
LUA_EMBED(queue_lua_wait_prepare, "wait_prepare.lua");
LUA_EMBED(queue_lua_stats, "stats.lua");
LUA_EMBED(queue_lua_dlq_list, "dlq_list.lua");
LUA_EMBED(queue_lua_dlq_requeue, "dlq_requeue.lua");
LUA_EMBED(queue_lua_dlq_purge, "dlq_purge.lua");
LUA_EMBED(queue_lua_hello, "hello.lua");
LUA_EMBED(queue_lua_stream_add, "stream_add.lua");
LUA_EMBED(queue_lua_subscribed, "subscribed.lua");

const char *const queue_script_body[QS_COUNT] = {
    [QS_ENQUEUE] = queue_lua_enqueue,
    [QS_LEASE] = queue_lua_lease,
    [QS_RENEW] = queue_lua_renew,
    [QS_ACK] = queue_lua_ack,
    [QS_FAIL] = queue_lua_fail,
    [QS_RELEASE] = queue_lua_release,
    [QS_REAP] = queue_lua_reap,
    [QS_CANCEL] = queue_lua_cancel,
    [QS_GET] = queue_lua_get,
    [QS_WAIT_PREPARE] = queue_lua_wait_prepare,
    [QS_STATS] = queue_lua_stats,
    [QS_DLQ_LIST] = queue_lua_dlq_list,
    [QS_DLQ_REQUEUE] = queue_lua_dlq_requeue,
    [QS_DLQ_PURGE] = queue_lua_dlq_purge,
    [QS_HELLO] = queue_lua_hello,
    [QS_STREAM_ADD] = queue_lua_stream_add,
    [QS_SUBSCRIBED] = queue_lua_subscribed,
};

const char *const queue_script_name[QS_COUNT] = {
    [QS_ENQUEUE] = "enqueue",
    [QS_LEASE] = "lease",
    [QS_RENEW] = "renew",
    [QS_ACK] = "ack",
    [QS_FAIL] = "fail",
    [QS_RELEASE] = "release",
    [QS_REAP] = "reap",
    [QS_CANCEL] = "cancel",
    [QS_GET] = "get",
    [QS_WAIT_PREPARE] = "wait_prepare",
    [QS_STATS] = "stats",
    [QS_DLQ_LIST] = "dlq_list",
    [QS_DLQ_REQUEUE] = "dlq_requeue",
    [QS_DLQ_PURGE] = "dlq_purge",
    [QS_HELLO] = "hello",
    [QS_STREAM_ADD] = "stream_add",
    [QS_SUBSCRIBED] = "subscribed",
};
