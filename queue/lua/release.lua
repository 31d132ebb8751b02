-- release. ARGV: result_ttl_ms, then id token pairs. Hands a lease back to
-- ready (graceful shutdown): the attempt is not counted, nothing is failed.
-- Per pair: 0 released, 1 cancelled (cancellation was asked), -1 stale.
local ttl = num(ARGV[1])
local now = now_ms()
local out, released, cancelled = {}, 0, 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  local f = redis.call('HMGET', tk, 'state', 'token', 'attempts', 'cancel', 'score', 'deadline')
  if f[1] == 'leased' and f[2] == ARGV[i + 1] then
    redis.call('ZREM', P .. 'leased', id)
    if f[4] == '1' then
      finish(id, 'cancelled', 'cancelled while running', now, ttl)
      cancelled = cancelled + 1; out[#out + 1] = 1
    else
      redis.call('HSET', tk, 'attempts', math.max(0, num(f[3]) - 1))
      to_ready(id, f[5], num(f[6]))
      released = released + 1; out[#out + 1] = 0
    end
  else
    out[#out + 1] = -1
  end
end
count('released', released); count('cancelled', cancelled)
publish()
return out
