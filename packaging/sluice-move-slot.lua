-- Move every key of a Redis Cluster hash slot to another master in one atomic step, the safe way to
-- move a live sluice queue's slot (docs/operations.md, "Moving a queue's slot"). Run it on the slot's
-- current owner, after `CLUSTER SETSLOT <slot> IMPORTING <owner-id>` on the target:
--   redis-cli -h OWNER -p PORT --eval sluice-move-slot.lua , SLOT TARGET_ID TARGET_HOST TARGET_PORT TIMEOUT_MS
-- It sets the slot MIGRATING and MIGRATEs its keys (1000 per MIGRATE) until none is left, and returns
-- how many it moved. Why one script: a script is atomic, so no client command runs between listing
-- the keys and moving them. A queue script reaches keys it does not declare (a task hash named by an
-- id it popped), so the queue must never be split: a key created after a listing (a new task's hash
-- whose id already went with {q}:ready) would be left behind, and the scripts running on the target
-- meanwhile would not see it (a task lost, or a later MIGRATE refused with BUSYKEY). Once this
-- returns, the owner holds none of the slot's keys and answers ASK for all of them, so nothing new is
-- created there; then `CLUSTER SETSLOT <slot> NODE <target-id>` on every master.
-- Cost: the owner serves nothing else while the keys travel (about the time to copy them; clients
-- see BUSY after busy-reply-threshold, 5 s, and retry). A MIGRATE error (target down, a key already
-- there) aborts the script, and keys it had moved stay moved: the slot is then split, and queue
-- scripts on it can fail half-way until it is whole. Fix the cause and run it again at once (it moves
-- the rest), or stop the queue's workers and producers first when that cannot be quick.
local slot, target_id, host, port, timeout = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not timeout then return redis.error_reply('usage: --eval sluice-move-slot.lua , SLOT TARGET_ID HOST PORT TIMEOUT_MS') end
redis.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', target_id)
local moved = 0
while true do
  local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, 1000)
  if #keys == 0 then return moved end
  local before = redis.call('CLUSTER', 'COUNTKEYSINSLOT', slot)
  redis.call('MIGRATE', host, port, '', 0, timeout, 'KEYS', unpack(keys))
  if redis.call('CLUSTER', 'COUNTKEYSINSLOT', slot) >= before then
    return redis.error_reply('MIGRATE moved none of ' .. #keys .. ' keys of slot ' .. slot)
  end
  moved = moved + #keys
end
