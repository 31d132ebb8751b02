-- stream_add. ARGV: maxlen ttl_ms, then id token field value quadruples:
-- appends {token, field: value} to the task's stream {q}:s:<id> (capped near
-- maxlen entries, expiring ttl_ms after the last append) while the task is
-- leased under token, so a worker that lost its lease adds nothing. Per
-- quadruple: 0 added, -1 stale.
local maxlen, ttl = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', P .. 't:' .. id, 'state', 'token')
  if f[1] == 'leased' and f[2] == token then
    local sk = P .. 's:' .. id
    redis.call('XADD', sk, 'MAXLEN', '~', maxlen, '*', 'token', token, ARGV[i + 2], ARGV[i + 3])
    redis.call('PEXPIRE', sk, ttl)
    out[#out + 1] = 0
  else
    out[#out + 1] = -1
  end
end
return out
