-- hello. ARGV: the protocol version this client speaks, then (optional) the
-- life in ms of a signed task's tombstone this client needs (0: none). The
-- queue's version lives in {q}:protocol: the first client of a new queue sets
-- it; every client compares it with its own at connect and refuses a queue it
-- does not speak. {q}:tomb_ms keeps the longest tombstone life asked for, so
-- every script that ends a signed task (whoever runs it) keeps the tombstone
-- as long as the most patient worker accepts signed tasks. Returns the stored
-- version.
local v = redis.call('GET', P .. 'protocol')
if not v then
  redis.call('SET', P .. 'protocol', ARGV[1])
  v = ARGV[1]
end
local want = num(ARGV[2])
if want > 0 and want > num(redis.call('GET', P .. 'tomb_ms')) then redis.call('SET', P .. 'tomb_ms', fmt(want)) end
return v
