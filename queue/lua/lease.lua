-- lease. ARGV: n worker lease_ms result_ttl_ms max_payload [verify]. Promotes
-- due delayed tasks, pops up to n by priority, finishes cancelled/expired ones
-- on the way, and leases the rest with a fresh fencing token. Returns 11
-- fields per task: id token attempt max_attempts priority deadline
-- lease_until enq payload sig size; a payload over max_payload (> 0) is sent
-- as "" with its size, so a worker never reads a batch of huge payloads.
-- verify '1' (the caller checks signatures): a signed task whose tombstone
-- lives (it has already ended; this is a copy put back) goes to the DLQ as
-- `replayed` here, never leased, counted in bad_signature.
local n, worker, lease_ms, ttl = num(ARGV[1]), ARGV[2], num(ARGV[3]), num(ARGV[4])
local maxp = num(ARGV[5])
local verify = ARGV[6] == '1'
local replayed = 0
local now = now_ms()
promote(now, 1000)
local out, got, expired, cancelled = {}, 0, 0, 0
local leased = {}
local until_ms = now + lease_ms
local until_s = fmt(until_ms)
-- ZRANGE + ZREMRANGEBYRANK rather than ZPOPMIN: the same members, without a score per task that
-- Redis would print as a double and Lua would read back (~2% of the server's time per task).
local rk = P .. 'ready'
while got < n do
  local popped = call('ZRANGE', rk, 0, n - got - 1)
  if #popped == 0 then break end
  call('ZREMRANGEBYRANK', rk, 0, #popped - 1)
  local token = call('INCRBY', P .. 'token', #popped) - #popped
  for j = 1, #popped do
    local id = popped[j]
    local tk = P .. 't:' .. id
    local f = call('HMGET', tk, 'payload', 'attempts', 'maxatt', 'prio', 'deadline', 'cancel', 'sig', 'enq')
    local deadline = num(f[5])
    if not f[1] then
      -- the hash is gone (purged by hand): nothing to run
    elseif verify and f[7] and f[7] ~= '' and call('EXISTS', P .. 'tomb:' .. id) == 1 then
      to_dlq(id, 'replayed', now, nil, false); replayed = replayed + 1
    elseif f[6] == '1' then
      finish(id, 'cancelled', 'cancelled before it ran', now, ttl); cancelled = cancelled + 1
    elseif deadline > 0 and deadline <= now then
      finish(id, 'expired', 'deadline passed before it ran', now, ttl); expired = expired + 1
    else
      token = token + 1
      local attempt = num(f[2]) + 1
      call('HSET', tk, 'state', 'leased', 'attempts', fmt(attempt), 'token', fmt(token), 'worker', worker)
      leased[#leased + 1] = until_s; leased[#leased + 1] = id
      if deadline > 0 then call('ZREM', P .. 'deadlines', id) end
      local k = #out
      out[k + 1] = id; out[k + 2] = token; out[k + 3] = attempt; out[k + 4] = num(f[3])
      out[k + 5] = num(f[4]); out[k + 6] = deadline; out[k + 7] = until_ms; out[k + 8] = num(f[8])
      local size = #f[1]
      if maxp > 0 and size > maxp then out[k + 9] = '' else out[k + 9] = f[1] end
      out[k + 10] = f[7] or ''; out[k + 11] = size
      got = got + 1
    end
  end
end
many('ZADD', P .. 'leased', leased)
count('expired', expired); count('cancelled', cancelled); count('bad_signature', replayed)
publish()
return out
