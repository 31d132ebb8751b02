-- Shared by every script: key prefix, clock, counters, the terminal moves.
-- KEYS[1] is "{q}:seq", a key that lives as long as the queue: while a cluster slot is being
-- migrated, Redis runs the script where that key is (ASK sends the call on only once it has moved), so
-- a script never runs on a node that holds only part of the queue.
local P = string.sub(KEYS[1], 1, -4)
local PRIO_MAX = 255
local TERMINAL = {done = true, dlq = true, expired = true, cancelled = true}
local events = {}
-- redis.call from a local: a global and a field lookup fewer on every call (~100 per task batch).
local call = redis.call
local function now_ms()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(s) return tonumber(s) or 0 end
-- Numbers handed to redis.call are printed by Redis with %.17g, a slow float path that showed as
-- ~10% of the server's CPU per task; the hot paths pass integers as strings made with %d instead.
local function fmt(x) return string.format('%d', x) end
-- One variadic call for a whole batch (ZADD/ZREM of many members): each redis.call costs more than
-- the work it does, so per-task calls are gathered where the command allows it.
local function many(cmd, key, args)
  if #args > 0 then call(cmd, key, unpack(args)) end
end
local function count(field, n)
  if n ~= 0 then call('HINCRBY', P .. 'stats', field, n) end
end
-- One message per script call keeps PUBLISH off the per-task cost, and none at all while nobody
-- listens: a subscriber keeps {q}:subs alive (SET PX) from before its first look at a task's state
-- until it stops listening, so an end it could miss is either before that look or published.
-- Asked once per call, at the first task that ends.
local listened
local function publish()
  if #events > 0 then call('PUBLISH', P .. 'events', table.concat(events, '\n')) end
end
-- A signed task that ended (sig: its signature, or nil/false for none) leaves {q}:tomb:<id>, so a
-- copy re-inserted later is refused at lease (`replayed`). It is written by the same script that
-- ends the task: a worker that dies after the ack cannot leave a finished task without one. It
-- lives as long as a signed task may be run ({q}:tomb_ms, set by workers with a signing key at
-- connect; 1 day + 5 min when none has), and never less than the result (ttl ms).
local tomb_ms
local function tomb(id, sig, ttl)
  if not sig or sig == '' then return end
  if not tomb_ms then tomb_ms = tonumber(call('GET', P .. 'tomb_ms')) or 86700000 end
  call('SET', P .. 'tomb:' .. id, '1', 'PX', fmt(math.max(tomb_ms, num(ttl))))
end
-- Waiters registered through wait_prepare each get one list entry.
local function wake(id, state, waiters)
  local w = math.min(num(waiters), 1000)
  if w > 0 then
    local wk = P .. 'w:' .. id
    for _ = 1, w do call('RPUSH', wk, state) end
    call('PEXPIRE', wk, 60000)
    call('HSET', P .. 't:' .. id, 'waiters', 0)
  end
  if listened == nil then listened = call('EXISTS', P .. 'subs') == 1 end
  if listened then events[#events + 1] = id .. ' ' .. state end
end
-- A dedup key lives no longer than its task: when the task ends, its key (if it still names this
-- task) gets the result's lifetime, or keeps a shorter one (LT: Redis 7). Enqueue also checks that
-- the task a key names still exists, so a key never answers an id that is gone.
local function end_dedup(id, dkey, ttl)
  if dkey and dkey ~= '' then
    local dk = P .. 'dd:' .. dkey
    if call('GET', dk) == id then call('PEXPIRE', dk, ttl, 'LT') end
  end
end
-- End a task that produced no result (expired, cancelled): state and a result saying why (the hash's
-- `result` field), kept ttl ms; waiters woken; a signed task leaves its tombstone.
local function finish(id, state, why, now, ttl)
  local tk = P .. 't:' .. id
  local f = call('HMGET', tk, 'waiters', 'dedup', 'rttl', 'sig')
  local waiters = f[1]
  if f[3] then ttl = f[3] end
  end_dedup(id, f[2], ttl)
  call('HSET', tk, 'state', state, 'finished', fmt(now), 'error', why,
             'result', cjson.encode({state = state, error = why}))
  call('PEXPIRE', tk, ttl)
  call('ZREM', P .. 'deadlines', id)
  tomb(id, f[4], ttl)
  wake(id, state, waiters)
end
-- The DLQ is ordered by death time; deaths in the same millisecond would tie and Redis would then
-- order them by id (random), so the score carries the queue's sequence number in 1/4096 ms steps
-- (exact in a double while now < 2^41 ms). dlq_list reports floor(score) as dead_ms.
-- sig: the task's signature when it leaves a tombstone (not for a task refused for its signature).
local function to_dlq(id, why, now, waiters, sig)
  call('HSET', P .. 't:' .. id, 'state', 'dlq', 'error', why, 'dead_at', now, 'finished', now)
  local seq = call('INCR', P .. 'seq')
  call('ZADD', P .. 'dlq', string.format('%.17g', now + (seq % 4096) / 4096), id)
  call('ZREM', P .. 'deadlines', id)
  count('failed', 1)
  tomb(id, sig, 0)
  wake(id, 'dlq', waiters)
end
-- Cap the DLQ: drop entries older than maxage ms (0: no age cap) and the oldest beyond maxlen
-- (negative: no count cap), with their hashes and results; at most 1000 per call. Returns how many
-- went.
local function trim_dlq(now, maxlen, maxage)
  local dk, gone, n = P .. 'dlq', {}, 0
  if maxage > 0 then
    for _, id in ipairs(call('ZRANGEBYSCORE', dk, '-inf', fmt(now - maxage), 'LIMIT', 0, 1000)) do
      gone[id] = true
    end
  end
  if maxlen >= 0 then
    local extra = math.min(call('ZCARD', dk) - maxlen, 1000)
    if extra > 0 then
      for _, id in ipairs(call('ZRANGE', dk, 0, extra - 1)) do gone[id] = true end
    end
  end
  for id in pairs(gone) do
    call('ZREM', dk, id)
    -- A dead task has its hash only (a result never: not in the hash, nor in an old {q}:r:<id> key):
    -- one key per DEL, since while the slot is being imported Redis refuses (TRYAGAIN) a command
    -- naming several keys when one is missing.
    call('DEL', P .. 't:' .. id)
    n = n + 1
  end
  count('purged', n)
  return n
end
-- Delayed tasks that are due go to ready with their original score.
local function promote(now, limit)
  local due = call('ZRANGEBYSCORE', P .. 'delayed', '-inf', fmt(now), 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local tk = P .. 't:' .. id
    local score = call('HGET', tk, 'score')
    call('ZREM', P .. 'delayed', id)
    if score then
      call('ZADD', P .. 'ready', score, id)
      call('HSET', tk, 'state', 'ready')
    end
  end
  return #due
end
-- Back to ready with its original priority and place (release, reap).
local function to_ready(id, score, deadline)
  call('HSET', P .. 't:' .. id, 'state', 'ready')
  call('ZADD', P .. 'ready', score, id)
  if deadline > 0 then call('ZADD', P .. 'deadlines', deadline, id) end
end
