-- fail. ARGV: id token error base_ms cap_ms jitter r result_ttl dlq_max
-- dlq_age mode. Retry after min(cap, base*2^(attempt-1)) less up to
-- jitter*100% (r is the client's random draw in [0,1)), or to the DLQ past
-- max attempts or when mode is 'dead' (bad signature: never retried, and
-- no tombstone: the copy that was refused is not the signed task).
-- Returns {outcome, delay_ms}: delayed | dlq | cancelled | stale.
local id, token, why = ARGV[1], ARGV[2], ARGV[3]
local tk = P .. 't:' .. id
local f = redis.call('HMGET', tk, 'state', 'token', 'attempts', 'maxatt', 'cancel', 'deadline', 'waiters', 'ftok',
                        'sig')
if f[2] ~= token then return {'stale', 0} end
if f[1] ~= 'leased' then
  if f[8] == token then return {f[1], 0} end -- this holder's fail, repeated after a lost reply
  return {'stale', 0}
end
local now, ttl = now_ms(), num(ARGV[8])
redis.call('ZREM', P .. 'leased', id)
redis.call('HSET', tk, 'ftok', token)
local out
if f[5] == '1' then
  finish(id, 'cancelled', 'cancelled while running', now, ttl); count('cancelled', 1)
  out = {'cancelled', 0}
elseif ARGV[11] == 'dead' or num(f[3]) >= num(f[4]) then
  if ARGV[11] == 'dead' then count('bad_signature', 1) end
  to_dlq(id, why, now, f[7], ARGV[11] ~= 'dead' and f[9])
  trim_dlq(now, num(ARGV[9]), num(ARGV[10]))
  out = {'dlq', 0}
else
  local delay = math.min(num(ARGV[5]), num(ARGV[4]) * 2 ^ (num(f[3]) - 1))
  delay = math.floor(delay - delay * num(ARGV[6]) * num(ARGV[7]))
  redis.call('HSET', tk, 'state', 'delayed', 'error', why, 'due', now + delay)
  redis.call('ZADD', P .. 'delayed', now + delay, id)
  if num(f[6]) > 0 then redis.call('ZADD', P .. 'deadlines', f[6], id) end
  count('retried', 1)
  out = {'delayed', delay}
end
publish()
return out
