-- subscribed. ARGV: ttl_ms. Says that someone listens to {q}:events for the
-- next ttl_ms: scripts publish task ends only while {q}:subs lives. A
-- listener sets it before its first look at the tasks it follows and again
-- well within ttl_ms while it listens.
redis.call('SET', P .. 'subs', '1', 'PX', ARGV[1])
return 1
