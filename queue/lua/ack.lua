-- ack. ARGV: result_ttl_ms, then id token result triples. Only the current
-- token's holder acks; repeating an applied ack is harmless. The result is
-- the task hash's `result` field (one key and one TTL per finished task); a
-- signed task leaves its tombstone in this same call. Per triple: 0 acked,
-- 1 already acked under this token, -1 stale (lease lost).
local ttl = ARGV[1]
local now_s = fmt(now_ms())
local out, acked, done = {}, 0, {}
for i = 2, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local tk = P .. 't:' .. id
  local f = call('HMGET', tk, 'state', 'token', 'waiters', 'dedup', 'rttl', 'sig')
  if f[2] ~= token then
    out[#out + 1] = -1
  elseif f[1] == 'done' then
    out[#out + 1] = 1
  elseif f[1] ~= 'leased' then
    out[#out + 1] = -1
  else
    local t = f[5] or ttl
    call('HSET', tk, 'state', 'done', 'finished', now_s, 'result', ARGV[i + 2])
    call('PEXPIRE', tk, t)
    done[#done + 1] = id
    end_dedup(id, f[4], t)
    tomb(id, f[6], t)
    wake(id, 'done', f[3])
    acked = acked + 1; out[#out + 1] = 0
  end
end
many('ZREM', P .. 'leased', done)
count('acked', acked)
publish()
return out
