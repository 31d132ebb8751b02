-- get. ARGV: id. The task's fields (order as in queue.c), its lease
-- deadline and its result: the hash's `result` field, or for a task
-- finished by a sluice before 2026-12 its own key {q}:r:<id> (read for
-- one release, until those have expired).
local f = redis.call('HMGET', P .. 't:' .. ARGV[1], 'state', 'attempts', 'maxatt', 'prio', 'enq',
                     'finished', 'deadline', 'error', 'cancel', 'payload', 'dead_at', 'due',
                     'token', 'worker', 'result')
local result = f[15]
f[15] = redis.call('ZSCORE', P .. 'leased', ARGV[1])
f[16] = result or redis.call('GET', P .. 'r:' .. ARGV[1])
return f
