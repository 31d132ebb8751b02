-- wait_prepare. ARGV: id. Registers one waiter (woken through {q}:w:<id>)
-- unless the task is already terminal. Returns the state, waiting or notfound.
local tk = P .. 't:' .. ARGV[1]
local state = redis.call('HGET', tk, 'state')
if not state then return 'notfound' end
if TERMINAL[state] then return state end
redis.call('HINCRBY', tk, 'waiters', 1)
return 'waiting'
