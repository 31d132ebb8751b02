-- renew. ARGV: lease_ms, then id token pairs. Per pair: 0 renewed, 1 lost
-- (not leased under this token any more), 2 renewed but cancellation asked.
local lease_ms = num(ARGV[1])
local until_s = fmt(now_ms() + lease_ms)
local out, leased = {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  local f = redis.call('HMGET', tk, 'state', 'token', 'cancel')
  if f[1] == 'leased' and f[2] == ARGV[i + 1] then
    leased[#leased + 1] = until_s; leased[#leased + 1] = id
    if f[3] == '1' then out[#out + 1] = 2 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 1
  end
end
many('ZADD', P .. 'leased', leased)
return out
