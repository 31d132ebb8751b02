/* queue/scripts.c - the Lua text of every queue script, one string each.
 *
 * Why Lua: each state change reads and writes several keys (the task hash,
 * two sorted sets, the stats hash); doing it in one script makes it atomic,
 * so a worker or Redis crash can never leave a task in two states or none.
 * Time comes from Redis TIME inside the scripts (Redis 7 replicates script
 * effects, so TIME is allowed in writing scripts): every worker agrees on
 * "now" whatever its own clock says.
 *
 * Keys of queue q ("{q}:" is KEYS[1]):
 *   {q}:ready      zset  id by (PRIO_MAX - priority) * 2^32 + seq: pop min = highest priority, FIFO
 *   {q}:delayed    zset  id by due time (ms): retries with backoff, delayed enqueues
 *   {q}:leased     zset  id by lease deadline (ms): the only record of it
 *   {q}:dlq        zset  id by the time it died (ms)
 *   {q}:deadlines  zset  waiting (ready/delayed) ids with a task deadline, by deadline (ms)
 *   {q}:t:<id>     hash  the task (fields below)
 *   {q}:r:<id>     string the result, with a TTL
 *   {q}:w:<id>     list  wake-ups for clients blocked in BLPOP on this task
 *   {q}:dd:<key>   string dedup key -> id, with a TTL
 *   {q}:stats      hash  counters
 *   {q}:seq, {q}:token   counters (FIFO order, fencing tokens)
 *   {q}:reaper     string guard: one reap sweep per interval
 *   {q}:b:<id>     string marker of an applied enqueue call of several tasks (its first id)
 *   {q}:events     pub/sub channel: "id state" lines when tasks end
 * Task hash fields: payload sig prio score state attempts maxatt enq deadline
 *   dedup token worker finished error dead_at due cancel
 *   ftok (token of the holder whose fail was applied) waiters.
 * States: ready delayed leased | done dlq expired cancelled (terminal).
 */
#include "queue/scripts.h"
#include "queue/queue.h"

#define STR2(x) #x
#define STR(x) STR2(x)

/* Shared by every script: key prefix, clock, counters, the terminal moves. */
const char queue_script_prelude[] =
    "local P = KEYS[1]\n"
    "local PRIO_MAX = " STR(QUEUE_PRIORITY_MAX) "\n"
    "local TERMINAL = {done = true, dlq = true, expired = true, cancelled = true}\n"
    "local events = {}\n"
    "local function now_ms()\n"
    "  local t = redis.call('TIME')\n"
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "end\n"
    "local function num(s) return tonumber(s) or 0 end\n"
    /* Numbers handed to redis.call are printed by Redis with %.17g, a slow
     * float path that showed as ~10% of the server's CPU per task; the hot
     * paths pass integers as strings made with %d instead. */
    "local function fmt(x) return string.format('%d', x) end\n"
    /* One variadic call for a whole batch (ZADD/ZREM of many members): each
     * redis.call costs more than the work it does, so per-task calls are
     * gathered where the command allows it. */
    "local function many(cmd, key, args)\n"
    "  if #args > 0 then redis.call(cmd, key, unpack(args)) end\n"
    "end\n"
    "local function count(field, n)\n"
    "  if n ~= 0 then redis.call('HINCRBY', P .. 'stats', field, n) end\n"
    "end\n"
    /* One message per script call keeps PUBLISH off the per-task cost. */
    "local function publish()\n"
    "  if #events > 0 then redis.call('PUBLISH', P .. 'events', table.concat(events, '\\n')) end\n"
    "end\n"
    /* Waiters registered through wait_prepare each get one list entry. */
    "local function wake(id, state, waiters)\n"
    "  local w = math.min(num(waiters), 1000)\n"
    "  if w > 0 then\n"
    "    local wk = P .. 'w:' .. id\n"
    "    for _ = 1, w do redis.call('RPUSH', wk, state) end\n"
    "    redis.call('PEXPIRE', wk, 60000)\n"
    "    redis.call('HSET', P .. 't:' .. id, 'waiters', 0)\n"
    "  end\n"
    "  events[#events + 1] = id .. ' ' .. state\n"
    "end\n"
    /* End a task that produced no result (expired, cancelled): state and a
     * result saying why, both kept ttl ms; waiters woken. */
    "local function finish(id, state, why, now, ttl)\n"
    "  local tk = P .. 't:' .. id\n"
    "  local waiters = redis.call('HGET', tk, 'waiters')\n"
    "  redis.call('HSET', tk, 'state', state, 'finished', now, 'error', why)\n"
    "  redis.call('PEXPIRE', tk, ttl)\n"
    "  redis.call('SET', P .. 'r:' .. id, cjson.encode({state = state, error = why}), 'PX', ttl)\n"
    "  redis.call('ZREM', P .. 'deadlines', id)\n"
    "  wake(id, state, waiters)\n"
    "end\n"
    "local function to_dlq(id, why, now, waiters)\n"
    "  redis.call('HSET', P .. 't:' .. id, 'state', 'dlq', 'error', why, 'dead_at', now, 'finished', now)\n"
    "  redis.call('ZADD', P .. 'dlq', now, id)\n"
    "  redis.call('ZREM', P .. 'deadlines', id)\n"
    "  count('failed', 1)\n"
    "  wake(id, 'dlq', waiters)\n"
    "end\n"
    /* Cap the DLQ: drop entries older than maxage ms (0: no age cap) and the
     * oldest beyond maxlen (negative: no count cap), with their hashes and
     * results; at most 1000 per call. Returns how many went. */
    "local function trim_dlq(now, maxlen, maxage)\n"
    "  local dk, gone, n = P .. 'dlq', {}, 0\n"
    "  if maxage > 0 then\n"
    "    for _, id in ipairs(redis.call('ZRANGEBYSCORE', dk, '-inf', fmt(now - maxage), 'LIMIT', 0, 1000)) do\n"
    "      gone[id] = true\n"
    "    end\n"
    "  end\n"
    "  if maxlen >= 0 then\n"
    "    local extra = math.min(redis.call('ZCARD', dk) - maxlen, 1000)\n"
    "    if extra > 0 then\n"
    "      for _, id in ipairs(redis.call('ZRANGE', dk, 0, extra - 1)) do gone[id] = true end\n"
    "    end\n"
    "  end\n"
    "  for id in pairs(gone) do\n"
    "    redis.call('ZREM', dk, id)\n"
    "    redis.call('DEL', P .. 't:' .. id, P .. 'r:' .. id)\n"
    "    n = n + 1\n"
    "  end\n"
    "  count('purged', n)\n"
    "  return n\n"
    "end\n"
    /* Delayed tasks that are due go to ready with their original score. */
    "local function promote(now, limit)\n"
    "  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', fmt(now), 'LIMIT', 0, limit)\n"
    "  for _, id in ipairs(due) do\n"
    "    local tk = P .. 't:' .. id\n"
    "    local score = redis.call('HGET', tk, 'score')\n"
    "    redis.call('ZREM', P .. 'delayed', id)\n"
    "    if score then\n"
    "      redis.call('ZADD', P .. 'ready', score, id)\n"
    "      redis.call('HSET', tk, 'state', 'ready')\n"
    "    end\n"
    "  end\n"
    "  return #due\n"
    "end\n"
    /* Back to ready with its original priority and place (release, reap). */
    "local function to_ready(id, score, deadline)\n"
    "  redis.call('HSET', P .. 't:' .. id, 'state', 'ready')\n"
    "  redis.call('ZADD', P .. 'ready', score, id)\n"
    "  if deadline > 0 then redis.call('ZADD', P .. 'deadlines', deadline, id) end\n"
    "end\n";

/* enqueue. ARGV: maxlen (waiting tasks; 0 unbounded), dedup_ttl_ms,
 * marker_ttl_ms, then 8 per task: id payload priority delay_ms ttl_ms
 * max_attempts dedup_key sig. Returns per task: code, id (0 new; 1
 * deduplicated, id is the existing task; 2 BUSY, refused).
 * A call resent after a lost reply must not store its tasks twice. The
 * script is atomic, so the call was applied whole or not at all. A call of
 * several tasks leaves a marker {q}:b:<first id> for marker_ttl_ms (longer
 * than the client ever resends), and a call that finds it only reports what
 * the first one did: one check per call, not one per task. A one-task call
 * needs no marker: its task's own key tells. */
static const char script_enqueue[] =
    "local maxlen = num(ARGV[1])\n"
    "local out, replay = {}, false\n"
    "if #ARGV == 3 + 8 then\n"
    "  replay = redis.call('EXISTS', P .. 't:' .. ARGV[4]) == 1\n"
    "else\n"
    "  replay = redis.call('SET', P .. 'b:' .. ARGV[4], '1', 'NX', 'PX', ARGV[3]) == false\n"
    "end\n"
    "if replay then\n"
    "  for i = 4, #ARGV, 8 do\n"
    "    local existing = ARGV[i + 6] ~= '' and redis.call('GET', P .. 'dd:' .. ARGV[i + 6])\n"
    "    if redis.call('EXISTS', P .. 't:' .. ARGV[i]) == 1 then\n"
    "      out[#out + 1] = 0; out[#out + 1] = ARGV[i]\n"
    "    elseif existing then\n"
    "      out[#out + 1] = 1; out[#out + 1] = existing\n"
    "    else\n"
    "      out[#out + 1] = 2; out[#out + 1] = ARGV[i]\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local now = now_ms()\n"
    "local now_s = fmt(now)\n"
    "local waiting = -1\n"
    "local added, deduped, rejected = 0, 0, 0\n"
    "local ready, delayed = {}, {}\n"
    "local ntasks = (#ARGV - 3) / 8\n"
    "local seq = redis.call('INCRBY', P .. 'seq', ntasks) - ntasks\n"
    "for i = 4, #ARGV, 8 do\n"
    "  local id, prio, delay, ttl, dkey = ARGV[i], num(ARGV[i + 2]), num(ARGV[i + 3]), num(ARGV[i + 4]), ARGV[i + 6]\n"
    "  local tk = P .. 't:' .. id\n"
    "  local existing = false\n"
    "  if dkey ~= '' then existing = redis.call('GET', P .. 'dd:' .. dkey) end\n"
    "  if existing then\n"
    "    deduped = deduped + 1; out[#out + 1] = 1; out[#out + 1] = existing\n"
    "  else\n"
    "    if maxlen > 0 and waiting < 0 then\n"
    "      waiting = redis.call('ZCARD', P .. 'ready') + redis.call('ZCARD', P .. 'delayed')\n"
    "    end\n"
    "    if maxlen > 0 and waiting >= maxlen then\n"
    "      rejected = rejected + 1; out[#out + 1] = 2; out[#out + 1] = id\n"
    "    else\n"
    "      seq = seq + 1\n"
    "      local score = fmt((PRIO_MAX - prio) * 4294967296 + (seq % 4294967296))\n"
    "      local deadline, state = 0, 'ready'\n"
    "      if ttl > 0 then deadline = now + ttl end\n"
    "      if delay > 0 then state = 'delayed' end\n"
    /* Fields that are empty or 0 are left out: the fewer arguments, the
     * less Redis work per task (a missing field reads as 0 or ''). */
    "      local h = {'payload', ARGV[i + 1], 'prio', ARGV[i + 2], 'score', score, 'state', state,\n"
    "                 'maxatt', ARGV[i + 5], 'enq', now_s}\n"
    "      if ARGV[i + 7] ~= '' then h[#h + 1] = 'sig'; h[#h + 1] = ARGV[i + 7] end\n"
    "      if dkey ~= '' then h[#h + 1] = 'dedup'; h[#h + 1] = dkey end\n"
    "      if deadline > 0 then h[#h + 1] = 'deadline'; h[#h + 1] = fmt(deadline) end\n"
    "      redis.call('HSET', tk, unpack(h))\n"
    "      if delay > 0 then\n"
    "        delayed[#delayed + 1] = fmt(now + delay); delayed[#delayed + 1] = id\n"
    "      else\n"
    "        ready[#ready + 1] = score; ready[#ready + 1] = id\n"
    "      end\n"
    "      if deadline > 0 then redis.call('ZADD', P .. 'deadlines', fmt(deadline), id) end\n"
    "      if dkey ~= '' then redis.call('SET', P .. 'dd:' .. dkey, id, 'PX', ARGV[2]) end\n"
    "      if waiting >= 0 then waiting = waiting + 1 end\n"
    "      added = added + 1; out[#out + 1] = 0; out[#out + 1] = id\n"
    "    end\n"
    "  end\n"
    "end\n"
    "many('ZADD', P .. 'ready', ready); many('ZADD', P .. 'delayed', delayed)\n"
    "count('enqueued', added); count('deduped', deduped); count('rejected', rejected)\n"
    "return out\n";

/* lease. ARGV: n worker lease_ms result_ttl_ms max_payload. Promotes due
 * delayed tasks, pops up to n by priority, finishes cancelled/expired ones on
 * the way, and leases the rest with a fresh fencing token. Returns 11 fields
 * per task: id token attempt max_attempts priority deadline lease_until enq
 * payload sig size; a payload over max_payload (> 0) is sent as "" with its
 * size, so a worker never reads a batch of huge payloads. */
static const char script_lease[] =
    "local n, worker, lease_ms, ttl = num(ARGV[1]), ARGV[2], num(ARGV[3]), num(ARGV[4])\n"
    "local maxp = num(ARGV[5])\n"
    "local now = now_ms()\n"
    "promote(now, 1000)\n"
    "local out, got, expired, cancelled = {}, 0, 0, 0\n"
    "local leased = {}\n"
    "local until_ms = now + lease_ms\n"
    "local until_s = fmt(until_ms)\n"
    "while got < n do\n"
    "  local popped = redis.call('ZPOPMIN', P .. 'ready', n - got)\n"
    "  if #popped == 0 then break end\n"
    "  local token = redis.call('INCRBY', P .. 'token', #popped / 2) - #popped / 2\n"
    "  for j = 1, #popped, 2 do\n"
    "    local id = popped[j]\n"
    "    local tk = P .. 't:' .. id\n"
    "    local f = redis.call('HMGET', tk, 'payload', 'attempts', 'maxatt', 'prio', 'deadline', 'cancel', 'sig', 'enq')\n"
    "    local deadline = num(f[5])\n"
    "    if not f[1] then\n"
    "      -- the hash is gone (purged by hand): nothing to run\n"
    "    elseif f[6] == '1' then\n"
    "      finish(id, 'cancelled', 'cancelled before it ran', now, ttl); cancelled = cancelled + 1\n"
    "    elseif deadline > 0 and deadline <= now then\n"
    "      finish(id, 'expired', 'deadline passed before it ran', now, ttl); expired = expired + 1\n"
    "    else\n"
    "      token = token + 1\n"
    "      local attempt = num(f[2]) + 1\n"
    "      redis.call('HSET', tk, 'state', 'leased', 'attempts', fmt(attempt), 'token', fmt(token), 'worker', worker)\n"
    "      leased[#leased + 1] = until_s; leased[#leased + 1] = id\n"
    "      if deadline > 0 then redis.call('ZREM', P .. 'deadlines', id) end\n"
    "      local k = #out\n"
    "      out[k + 1] = id; out[k + 2] = token; out[k + 3] = attempt; out[k + 4] = num(f[3])\n"
    "      out[k + 5] = num(f[4]); out[k + 6] = deadline; out[k + 7] = until_ms; out[k + 8] = num(f[8])\n"
    "      local size = #f[1]\n"
    "      if maxp > 0 and size > maxp then out[k + 9] = '' else out[k + 9] = f[1] end\n"
    "      out[k + 10] = f[7] or ''; out[k + 11] = size\n"
    "      got = got + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "many('ZADD', P .. 'leased', leased)\n"
    "count('expired', expired); count('cancelled', cancelled)\n"
    "publish()\n"
    "return out\n";

/* renew. ARGV: lease_ms, then id token pairs. Per pair: 0 renewed, 1 lost
 * (not leased under this token any more), 2 renewed but cancellation asked. */
static const char script_renew[] =
    "local lease_ms = num(ARGV[1])\n"
    "local until_s = fmt(now_ms() + lease_ms)\n"
    "local out, leased = {}, {}\n"
    "for i = 2, #ARGV, 2 do\n"
    "  local id = ARGV[i]\n"
    "  local tk = P .. 't:' .. id\n"
    "  local f = redis.call('HMGET', tk, 'state', 'token', 'cancel')\n"
    "  if f[1] == 'leased' and f[2] == ARGV[i + 1] then\n"
    "    leased[#leased + 1] = until_s; leased[#leased + 1] = id\n"
    "    if f[3] == '1' then out[#out + 1] = 2 else out[#out + 1] = 0 end\n"
    "  else\n"
    "    out[#out + 1] = 1\n"
    "  end\n"
    "end\n"
    "many('ZADD', P .. 'leased', leased)\n"
    "return out\n";

/* ack. ARGV: result_ttl_ms, then id token result triples. Only the current
 * token's holder acks; repeating an applied ack is harmless. Per triple:
 * 0 acked, 1 already acked under this token, -1 stale (lease lost). */
static const char script_ack[] =
    "local ttl = ARGV[1]\n"
    "local now_s = fmt(now_ms())\n"
    "local out, acked, done = {}, 0, {}\n"
    "for i = 2, #ARGV, 3 do\n"
    "  local id, token = ARGV[i], ARGV[i + 1]\n"
    "  local tk = P .. 't:' .. id\n"
    "  local f = redis.call('HMGET', tk, 'state', 'token', 'waiters')\n"
    "  if f[2] ~= token then\n"
    "    out[#out + 1] = -1\n"
    "  elseif f[1] == 'done' then\n"
    "    out[#out + 1] = 1\n"
    "  elseif f[1] ~= 'leased' then\n"
    "    out[#out + 1] = -1\n"
    "  else\n"
    "    redis.call('HSET', tk, 'state', 'done', 'finished', now_s)\n"
    "    redis.call('PEXPIRE', tk, ttl)\n"
    "    done[#done + 1] = id\n"
    "    redis.call('SET', P .. 'r:' .. id, ARGV[i + 2], 'PX', ttl)\n"
    "    wake(id, 'done', f[3])\n"
    "    acked = acked + 1; out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "many('ZREM', P .. 'leased', done)\n"
    "count('acked', acked)\n"
    "publish()\n"
    "return out\n";

/* fail. ARGV: id token error base_ms cap_ms jitter r result_ttl dlq_max
 * dlq_age mode. Retry after min(cap, base*2^(attempt-1)) less up to
 * jitter*100% (r is the client's random draw in [0,1)), or to the DLQ past
 * max attempts or when mode is 'dead' (bad signature: never retried).
 * Returns {outcome, delay_ms}: delayed | dlq | cancelled | stale. */
static const char script_fail[] =
    "local id, token, why = ARGV[1], ARGV[2], ARGV[3]\n"
    "local tk = P .. 't:' .. id\n"
    "local f = redis.call('HMGET', tk, 'state', 'token', 'attempts', 'maxatt', 'cancel', 'deadline', 'waiters', 'ftok')\n"
    "if f[2] ~= token then return {'stale', 0} end\n"
    "if f[1] ~= 'leased' then\n"
    "  if f[8] == token then return {f[1], 0} end -- this holder's fail, repeated after a lost reply\n"
    "  return {'stale', 0}\n"
    "end\n"
    "local now, ttl = now_ms(), num(ARGV[8])\n"
    "redis.call('ZREM', P .. 'leased', id)\n"
    "redis.call('HSET', tk, 'ftok', token)\n"
    "local out\n"
    "if f[5] == '1' then\n"
    "  finish(id, 'cancelled', 'cancelled while running', now, ttl); count('cancelled', 1)\n"
    "  out = {'cancelled', 0}\n"
    "elseif ARGV[11] == 'dead' or num(f[3]) >= num(f[4]) then\n"
    "  if ARGV[11] == 'dead' then count('bad_signature', 1) end\n"
    "  to_dlq(id, why, now, f[7])\n"
    "  trim_dlq(now, num(ARGV[9]), num(ARGV[10]))\n"
    "  out = {'dlq', 0}\n"
    "else\n"
    "  local delay = math.min(num(ARGV[5]), num(ARGV[4]) * 2 ^ (num(f[3]) - 1))\n"
    "  delay = math.floor(delay - delay * num(ARGV[6]) * num(ARGV[7]))\n"
    "  redis.call('HSET', tk, 'state', 'delayed', 'error', why, 'due', now + delay)\n"
    "  redis.call('ZADD', P .. 'delayed', now + delay, id)\n"
    "  if num(f[6]) > 0 then redis.call('ZADD', P .. 'deadlines', f[6], id) end\n"
    "  count('retried', 1)\n"
    "  out = {'delayed', delay}\n"
    "end\n"
    "publish()\n"
    "return out\n";

/* release. ARGV: result_ttl_ms, then id token pairs. Hands a lease back to
 * ready (graceful shutdown): the attempt is not counted, nothing is failed.
 * Per pair: 0 released, 1 cancelled (cancellation was asked), -1 stale. */
static const char script_release[] =
    "local ttl = num(ARGV[1])\n"
    "local now = now_ms()\n"
    "local out, released, cancelled = {}, 0, 0\n"
    "for i = 2, #ARGV, 2 do\n"
    "  local id = ARGV[i]\n"
    "  local tk = P .. 't:' .. id\n"
    "  local f = redis.call('HMGET', tk, 'state', 'token', 'attempts', 'cancel', 'score', 'deadline')\n"
    "  if f[1] == 'leased' and f[2] == ARGV[i + 1] then\n"
    "    redis.call('ZREM', P .. 'leased', id)\n"
    "    if f[4] == '1' then\n"
    "      finish(id, 'cancelled', 'cancelled while running', now, ttl)\n"
    "      cancelled = cancelled + 1; out[#out + 1] = 1\n"
    "    else\n"
    "      redis.call('HSET', tk, 'attempts', math.max(0, num(f[3]) - 1))\n"
    "      to_ready(id, f[5], num(f[6]))\n"
    "      released = released + 1; out[#out + 1] = 0\n"
    "    end\n"
    "  else\n"
    "    out[#out + 1] = -1\n"
    "  end\n"
    "end\n"
    "count('released', released); count('cancelled', cancelled)\n"
    "publish()\n"
    "return out\n";

/* reap. ARGV: force guard_ms limit result_ttl dlq_max dlq_age. Unless forced,
 * sweeps only if no worker swept in the last guard_ms. Expired leases go back
 * to ready (or to the DLQ past max attempts, or end cancelled/expired); waiting
 * tasks past their deadline end expired. Returns {swept, reaped, dead,
 * expired, promoted, cancelled}. */
static const char script_reap[] =
    "if ARGV[1] ~= '1' then\n"
    "  if not redis.call('SET', P .. 'reaper', '1', 'NX', 'PX', ARGV[2]) then return {0, 0, 0, 0, 0, 0} end\n"
    "end\n"
    "local now, limit, ttl = now_ms(), num(ARGV[3]), num(ARGV[4])\n"
    "local promoted = promote(now, limit)\n"
    "local reaped, dead, expired, cancelled = 0, 0, 0, 0\n"
    "for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leased', '-inf', fmt(now), 'LIMIT', 0, limit)) do\n"
    "  local tk = P .. 't:' .. id\n"
    "  local f = redis.call('HMGET', tk, 'state', 'attempts', 'maxatt', 'cancel', 'score', 'deadline', 'waiters')\n"
    "  local deadline = num(f[6])\n"
    "  redis.call('ZREM', P .. 'leased', id)\n"
    "  if f[1] ~= 'leased' then\n"
    "    -- stale entry: nothing to do\n"
    "  elseif f[4] == '1' then\n"
    "    finish(id, 'cancelled', 'cancelled while running', now, ttl); cancelled = cancelled + 1\n"
    "  elseif deadline > 0 and deadline <= now then\n"
    "    finish(id, 'expired', 'deadline passed while leased', now, ttl); expired = expired + 1\n"
    "  elseif num(f[2]) >= num(f[3]) then\n"
    "    to_dlq(id, 'lease expired on attempt ' .. f[2] .. ' of ' .. f[3], now, f[7]); dead = dead + 1\n"
    "  else\n"
    "    redis.call('HSET', tk, 'error', 'lease expired')\n"
    "    to_ready(id, f[5], deadline)\n"
    "    reaped = reaped + 1\n"
    "  end\n"
    "end\n"
    "for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', fmt(now), 'LIMIT', 0, limit)) do\n"
    "  local state = redis.call('HGET', P .. 't:' .. id, 'state')\n"
    "  redis.call('ZREM', P .. 'deadlines', id)\n"
    "  if state == 'ready' or state == 'delayed' then\n"
    "    redis.call('ZREM', P .. state, id)\n"
    "    finish(id, 'expired', 'deadline passed before it ran', now, ttl); expired = expired + 1\n"
    "  end\n"
    "end\n"
    "if dead > 0 then trim_dlq(now, num(ARGV[5]), num(ARGV[6])) end\n"
    "count('reaped', reaped); count('expired', expired); count('cancelled', cancelled)\n"
    "publish()\n"
    "return {1, reaped, dead, expired, promoted, cancelled}\n";

/* cancel. ARGV: id result_ttl. A waiting task ends cancelled now; a leased
 * one is marked and reported by renew. Returns now | requested |
 * notfound | the terminal state it already has. */
static const char script_cancel[] =
    "local id = ARGV[1]\n"
    "local tk = P .. 't:' .. id\n"
    "local state = redis.call('HGET', tk, 'state')\n"
    "if not state then return 'notfound' end\n"
    "if state == 'ready' or state == 'delayed' then\n"
    "  redis.call('ZREM', P .. state, id)\n"
    "  finish(id, 'cancelled', 'cancelled before it ran', now_ms(), num(ARGV[2]))\n"
    "  count('cancelled', 1)\n"
    "  publish()\n"
    "  return 'now'\n"
    "elseif state == 'leased' then\n"
    "  redis.call('HSET', tk, 'cancel', 1)\n"
    "  return 'requested'\n"
    "end\n"
    "return state\n";

/* get. ARGV: id. The task's fields (order as in queue.c), its lease
 * deadline and its result. */
static const char script_get[] =
    "local f = redis.call('HMGET', P .. 't:' .. ARGV[1], 'state', 'attempts', 'maxatt', 'prio', 'enq',\n"
    "                     'finished', 'deadline', 'error', 'cancel', 'payload', 'dead_at', 'due',\n"
    "                     'token', 'worker')\n"
    "f[#f + 1] = redis.call('ZSCORE', P .. 'leased', ARGV[1])\n"
    "f[#f + 1] = redis.call('GET', P .. 'r:' .. ARGV[1])\n"
    "return f\n";

/* wait_prepare. ARGV: id. Registers one waiter (woken through {q}:w:<id>)
 * unless the task is already terminal. Returns the state, waiting or notfound. */
static const char script_wait_prepare[] =
    "local tk = P .. 't:' .. ARGV[1]\n"
    "local state = redis.call('HGET', tk, 'state')\n"
    "if not state then return 'notfound' end\n"
    "if TERMINAL[state] then return state end\n"
    "redis.call('HINCRBY', tk, 'waiters', 1)\n"
    "return 'waiting'\n";

/* stats. Depth by state, then the counters as field value pairs. */
static const char script_stats[] =
    "local out = {redis.call('ZCARD', P .. 'ready'), redis.call('ZCARD', P .. 'delayed'),\n"
    "             redis.call('ZCARD', P .. 'leased'), redis.call('ZCARD', P .. 'dlq')}\n"
    "for _, v in ipairs(redis.call('HGETALL', P .. 'stats')) do out[#out + 1] = v end\n"
    "return out\n";

/* dlq_list. ARGV: offset count. Oldest first; 5 fields per entry:
 * id dead_at attempts max_attempts error. */
static const char script_dlq_list[] =
    "local out = {}\n"
    "local ids = redis.call('ZRANGE', P .. 'dlq', num(ARGV[1]), num(ARGV[1]) + num(ARGV[2]) - 1, 'WITHSCORES')\n"
    "for i = 1, #ids, 2 do\n"
    "  local f = redis.call('HMGET', P .. 't:' .. ids[i], 'attempts', 'maxatt', 'error')\n"
    "  local k = #out\n"
    "  out[k + 1] = ids[i]; out[k + 2] = num(ids[i + 1]); out[k + 3] = num(f[1]); out[k + 4] = num(f[2])\n"
    "  out[k + 5] = f[3] or ''\n"
    "end\n"
    "return out\n";

/* dlq_requeue. ARGV: id ('' for the oldest `limit` entries) limit. Back to
 * ready with attempts reset and no deadline. Returns {moved, left in dlq}. */
static const char script_dlq_requeue[] =
    "local dk = P .. 'dlq'\n"
    "local ids\n"
    "if ARGV[1] ~= '' then ids = {ARGV[1]} else ids = redis.call('ZRANGE', dk, 0, num(ARGV[2]) - 1) end\n"
    "local moved = 0\n"
    "for _, id in ipairs(ids) do\n"
    "  local tk = P .. 't:' .. id\n"
    "  local f = redis.call('HMGET', tk, 'state', 'score')\n"
    "  if redis.call('ZREM', dk, id) == 1 and f[1] == 'dlq' then\n"
    "    redis.call('HSET', tk, 'attempts', 0, 'deadline', 0, 'cancel', 0)\n"
    "    redis.call('HDEL', tk, 'ftok', 'dead_at', 'finished')\n"
    "    to_ready(id, f[2], 0)\n"
    "    moved = moved + 1\n"
    "  end\n"
    "end\n"
    "count('requeued', moved)\n"
    "return {moved, redis.call('ZCARD', dk)}\n";

/* dlq_purge. ARGV: keep (negative: no count cap) older_than_ms (0: none).
 * Removes up to 1000 entries per call; returns how many. */
static const char script_dlq_purge[] =
    "return trim_dlq(now_ms(), num(ARGV[1]), num(ARGV[2]))\n";

const char *const queue_script_body[QS_COUNT] = {
    [QS_ENQUEUE] = script_enqueue,
    [QS_LEASE] = script_lease,
    [QS_RENEW] = script_renew,
    [QS_ACK] = script_ack,
    [QS_FAIL] = script_fail,
    [QS_RELEASE] = script_release,
    [QS_REAP] = script_reap,
    [QS_CANCEL] = script_cancel,
    [QS_GET] = script_get,
    [QS_WAIT_PREPARE] = script_wait_prepare,
    [QS_STATS] = script_stats,
    [QS_DLQ_LIST] = script_dlq_list,
    [QS_DLQ_REQUEUE] = script_dlq_requeue,
    [QS_DLQ_PURGE] = script_dlq_purge,
};

const char *const queue_script_name[QS_COUNT] = {
    [QS_ENQUEUE] = "enqueue",   [QS_LEASE] = "lease",     [QS_RENEW] = "renew",
    [QS_ACK] = "ack",           [QS_FAIL] = "fail",       [QS_RELEASE] = "release",
    [QS_REAP] = "reap",         [QS_CANCEL] = "cancel",   [QS_GET] = "get",
    [QS_WAIT_PREPARE] = "wait_prepare", [QS_STATS] = "stats", [QS_DLQ_LIST] = "dlq_list",
    [QS_DLQ_REQUEUE] = "dlq_requeue",   [QS_DLQ_PURGE] = "dlq_purge",
};
