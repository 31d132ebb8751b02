-- dlq_list. ARGV: offset count. Oldest first; 5 fields per entry:
-- id dead_at attempts max_attempts error.
local out = {}
local ids = redis.call('ZRANGE', P .. 'dlq', num(ARGV[1]), num(ARGV[1]) + num(ARGV[2]) - 1, 'WITHSCORES')
for i = 1, #ids, 2 do
  local f = redis.call('HMGET', P .. 't:' .. ids[i], 'attempts', 'maxatt', 'error')
  local k = #out
  out[k + 1] = ids[i]; out[k + 2] = math.floor(num(ids[i + 1])); out[k + 3] = num(f[1]); out[k + 4] = num(f[2])
  out[k + 5] = f[3] or ''
end
return out
