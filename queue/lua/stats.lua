-- stats. Depth by state, then the counters as field value pairs.
local out = {redis.call('ZCARD', P .. 'ready'), redis.call('ZCARD', P .. 'delayed'),
             redis.call('ZCARD', P .. 'leased'), redis.call('ZCARD', P .. 'dlq')}
for _, v in ipairs(redis.call('HGETALL', P .. 'stats')) do out[#out + 1] = v end
return out
