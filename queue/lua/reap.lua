-- reap. ARGV: force guard_ms limit result_ttl dlq_max dlq_age. Unless forced,
-- sweeps only if no worker swept in the last guard_ms. Expired leases go back
-- to ready (or to the DLQ past max attempts, or end cancelled/expired); waiting
-- tasks past their deadline end expired. Returns {swept, reaped, dead,
-- expired, promoted, cancelled}.
if ARGV[1] ~= '1' then
  if not redis.call('SET', P .. 'reaper', '1', 'NX', 'PX', ARGV[2]) then return {0, 0, 0, 0, 0, 0} end
end
local now, limit, ttl = now_ms(), num(ARGV[3]), num(ARGV[4])
local promoted = promote(now, limit)
local reaped, dead, expired, cancelled = 0, 0, 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leased', '-inf', fmt(now), 'LIMIT', 0, limit)) do
  local tk = P .. 't:' .. id
  local f = redis.call('HMGET', tk, 'state', 'attempts', 'maxatt', 'cancel', 'score', 'deadline', 'waiters',
                        'sig')
  local deadline = num(f[6])
  redis.call('ZREM', P .. 'leased', id)
  if f[1] ~= 'leased' then
    -- stale entry: nothing to do
  elseif f[4] == '1' then
    finish(id, 'cancelled', 'cancelled while running', now, ttl); cancelled = cancelled + 1
  elseif deadline > 0 and deadline <= now then
    finish(id, 'expired', 'deadline passed while leased', now, ttl); expired = expired + 1
  elseif num(f[2]) >= num(f[3]) then
    to_dlq(id, 'lease expired on attempt ' .. f[2] .. ' of ' .. f[3], now, f[7], f[8]); dead = dead + 1
  else
    redis.call('HSET', tk, 'error', 'lease expired')
    to_ready(id, f[5], deadline)
    reaped = reaped + 1
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', fmt(now), 'LIMIT', 0, limit)) do
  local state = redis.call('HGET', P .. 't:' .. id, 'state')
  redis.call('ZREM', P .. 'deadlines', id)
  if state == 'ready' or state == 'delayed' then
    redis.call('ZREM', P .. state, id)
    finish(id, 'expired', 'deadline passed before it ran', now, ttl); expired = expired + 1
  end
end
if dead > 0 then trim_dlq(now, num(ARGV[5]), num(ARGV[6])) end
count('reaped', reaped); count('expired', expired); count('cancelled', cancelled)
publish()
return {1, reaped, dead, expired, promoted, cancelled}
