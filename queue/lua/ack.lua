-- ack. ARGV: result_ttl_ms, then id token result triples. Only the current
-- token's holder acks; repeating an applied ack is harmless. Per triple:
-- 0 acked, 1 already acked under this token, -1 stale (lease lost).
local ttl = ARGV[1]
local now_s = fmt(now_ms())
local out, acked, done = {}, 0, {}
for i = 2, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local tk = P .. 't:' .. id
  local f = redis.call('HMGET', tk, 'state', 'token', 'waiters', 'dedup', 'rttl')
  if f[2] ~= token then
    out[#out + 1] = -1
  elseif f[1] == 'done' then
    out[#out + 1] = 1
  elseif f[1] ~= 'leased' then
    out[#out + 1] = -1
  else
    local t = f[5] or ttl
    redis.call('HSET', tk, 'state', 'done', 'finished', now_s)
    redis.call('PEXPIRE', tk, t)
    done[#done + 1] = id
    redis.call('SET', P .. 'r:' .. id, ARGV[i + 2], 'PX', t)
    end_dedup(id, f[4], t)
    wake(id, 'done', f[3])
    acked = acked + 1; out[#out + 1] = 0
  end
end
many('ZREM', P .. 'leased', done)
count('acked', acked)
publish()
return out
