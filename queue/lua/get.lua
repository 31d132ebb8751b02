-- get. ARGV: id. The task's fields (order as in queue.c), its lease
-- deadline and its result.
local f = redis.call('HMGET', P .. 't:' .. ARGV[1], 'state', 'attempts', 'maxatt', 'prio', 'enq',
                     'finished', 'deadline', 'error', 'cancel', 'payload', 'dead_at', 'due',
                     'token', 'worker')
f[#f + 1] = redis.call('ZSCORE', P .. 'leased', ARGV[1])
f[#f + 1] = redis.call('GET', P .. 'r:' .. ARGV[1])
return f
