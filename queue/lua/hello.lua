-- hello. ARGV: the protocol version this client speaks. The queue's version
-- lives in {q}:protocol: the first client of a new queue sets it; every client
-- compares it with its own at connect and refuses a queue it does not speak.
-- Returns the stored version.
local v = redis.call('GET', P .. 'protocol')
if not v then
  redis.call('SET', P .. 'protocol', ARGV[1])
  v = ARGV[1]
end
return v
