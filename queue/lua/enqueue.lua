-- enqueue. ARGV: maxlen (waiting tasks; 0 unbounded), dedup_ttl_ms,
-- marker_ttl_ms, then 9 per task: id payload priority delay_ms ttl_ms
-- max_attempts dedup_key sig result_ttl_ms (0: the acker's). Returns per task: code, id (0 new; 1
-- deduplicated, id is the existing task; 2 BUSY, refused).
-- A call resent after a lost reply must not store its tasks twice. The
-- script is atomic, so the call was applied whole or not at all. A call of
-- several tasks leaves a marker {q}:b:<first id> for marker_ttl_ms (longer
-- than the client ever resends), and a call that finds it only reports what
-- the first one did: one check per call, not one per task. A one-task call
-- needs no marker: its task's own key tells.
local maxlen = num(ARGV[1])
local out, replay = {}, false
-- the id a dedup key names, if that task still exists
local function dedup_of(dkey)
  if dkey == '' then return false end
  local existing = call('GET', P .. 'dd:' .. dkey)
  if existing and call('EXISTS', P .. 't:' .. existing) == 0 then existing = false end
  return existing
end
if #ARGV == 3 + 9 then
  replay = call('EXISTS', P .. 't:' .. ARGV[4]) == 1
else
  replay = call('SET', P .. 'b:' .. ARGV[4], '1', 'NX', 'PX', ARGV[3]) == false
end
if replay then
  for i = 4, #ARGV, 9 do
    local existing = dedup_of(ARGV[i + 6])
    if call('EXISTS', P .. 't:' .. ARGV[i]) == 1 then
      out[#out + 1] = 0; out[#out + 1] = ARGV[i]
    elseif existing then
      out[#out + 1] = 1; out[#out + 1] = existing
    else
      out[#out + 1] = 2; out[#out + 1] = ARGV[i]
    end
  end
  return out
end
local now = now_ms()
local now_s = fmt(now)
local waiting = -1
local added, deduped, rejected = 0, 0, 0
local ready, delayed = {}, {}
local ntasks = (#ARGV - 3) / 9
local seq = call('INCRBY', P .. 'seq', ntasks) - ntasks
for i = 4, #ARGV, 9 do
  local id, prio, delay, ttl, dkey = ARGV[i], num(ARGV[i + 2]), num(ARGV[i + 3]), num(ARGV[i + 4]), ARGV[i + 6]
  local tk = P .. 't:' .. id
  local existing = dedup_of(dkey)
  if existing then
    deduped = deduped + 1; out[#out + 1] = 1; out[#out + 1] = existing
  else
    if maxlen > 0 and waiting < 0 then
      waiting = call('ZCARD', P .. 'ready') + call('ZCARD', P .. 'delayed')
    end
    if maxlen > 0 and waiting >= maxlen then
      rejected = rejected + 1; out[#out + 1] = 2; out[#out + 1] = id
    else
      seq = seq + 1
      local score = fmt((PRIO_MAX - prio) * 4294967296 + (seq % 4294967296))
      local deadline, state = 0, 'ready'
      if ttl > 0 then deadline = now + ttl end
      if delay > 0 then state = 'delayed' end
      -- Fields that are empty or 0 are left out: the fewer arguments, the less Redis work per task
      -- (a missing field reads as 0 or '').
      local sig, rttl = ARGV[i + 7], num(ARGV[i + 8])
      if sig == '' and dkey == '' and deadline == 0 and rttl <= 0 then
        -- the usual task: one call with its fields, no table built and unpacked per task
        call('HSET', tk, 'payload', ARGV[i + 1], 'prio', ARGV[i + 2], 'score', score, 'state', state,
             'maxatt', ARGV[i + 5], 'enq', now_s)
      else
        local h = {'payload', ARGV[i + 1], 'prio', ARGV[i + 2], 'score', score, 'state', state,
                   'maxatt', ARGV[i + 5], 'enq', now_s}
        if sig ~= '' then h[#h + 1] = 'sig'; h[#h + 1] = sig end
        if dkey ~= '' then h[#h + 1] = 'dedup'; h[#h + 1] = dkey end
        if deadline > 0 then h[#h + 1] = 'deadline'; h[#h + 1] = fmt(deadline) end
        if rttl > 0 then h[#h + 1] = 'rttl'; h[#h + 1] = ARGV[i + 8] end
        call('HSET', tk, unpack(h))
      end
      if delay > 0 then
        delayed[#delayed + 1] = fmt(now + delay); delayed[#delayed + 1] = id
      else
        ready[#ready + 1] = score; ready[#ready + 1] = id
      end
      if deadline > 0 then call('ZADD', P .. 'deadlines', fmt(deadline), id) end
      if dkey ~= '' then call('SET', P .. 'dd:' .. dkey, id, 'PX', ARGV[2]) end
      if waiting >= 0 then waiting = waiting + 1 end
      added = added + 1; out[#out + 1] = 0; out[#out + 1] = id
    end
  end
end
many('ZADD', P .. 'ready', ready); many('ZADD', P .. 'delayed', delayed)
count('enqueued', added); count('deduped', deduped); count('rejected', rejected)
return out
