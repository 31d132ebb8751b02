-- cancel. ARGV: id result_ttl. A waiting task ends cancelled now; a leased
-- one is marked and reported by renew. Returns now | requested |
-- notfound | the terminal state it already has.
local id = ARGV[1]
local tk = P .. 't:' .. id
local state = redis.call('HGET', tk, 'state')
if not state then return 'notfound' end
if state == 'ready' or state == 'delayed' then
  redis.call('ZREM', P .. state, id)
  finish(id, 'cancelled', 'cancelled before it ran', now_ms(), num(ARGV[2]))
  count('cancelled', 1)
  publish()
  return 'now'
elseif state == 'leased' then
  redis.call('HSET', tk, 'cancel', 1)
  return 'requested'
end
return state
