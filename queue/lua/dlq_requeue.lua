-- dlq_requeue. ARGV: id ('' for the oldest `limit` entries) limit. Back to
-- ready with attempts reset and no deadline. Returns {moved, left in dlq}.
local dk = P .. 'dlq'
local ids
if ARGV[1] ~= '' then ids = {ARGV[1]} else ids = redis.call('ZRANGE', dk, 0, num(ARGV[2]) - 1) end
local moved = 0
for _, id in ipairs(ids) do
  local tk = P .. 't:' .. id
  local f = redis.call('HMGET', tk, 'state', 'score')
  if redis.call('ZREM', dk, id) == 1 and f[1] == 'dlq' then
    redis.call('HSET', tk, 'attempts', 0, 'deadline', 0, 'cancel', 0)
    redis.call('HDEL', tk, 'ftok', 'dead_at', 'finished')
    redis.call('DEL', P .. 'tomb:' .. id) -- an operator's requeue may run a signed task again
    to_ready(id, f[2], 0)
    moved = moved + 1
  end
end
count('requeued', moved)
return {moved, redis.call('ZCARD', dk)}
