-- sweep_away.lua: auto-away at O(users that change).
-- The users who just crossed away_after are those whose score in online:global lies in
-- (previous cutoff, now - away_after]; the cutoff is kept in `sweep:away_cutoff` so windows
-- stay contiguous across nodes and restarts. Users already away, or active, lie outside the
-- window and are never scanned. Each candidate is re-checked before it changes.
-- ARGV[5] away_after ms   ARGV[6] batch size
-- Returns {users turned away (auto), 1 when the batch was full (call again) else 0}.
local target = NOW - tonumber(ARGV[5])
local batch = tonumber(ARGV[6])
local from = redis.call('GET', key('sweep:away_cutoff'))
local lower = '-inf'
if from then
  if tonumber(from) >= target then return {0, 0} end
  lower = '(' .. secs(tonumber(from))
end
local gset = key('online:global')
local found = redis.call('ZRANGEBYSCORE', gset, lower, secs(target), 'WITHSCORES', 'LIMIT', 0, batch)
local users, cutoff = {}, target
for i = 1, #found, 2 do users[#users + 1] = found[i] end
if #users == batch then
  -- A full batch stops at its last score, taking every tie at that score, so the next window
  -- can start strictly after it.
  local last = found[#found]
  cutoff = ms_of(last)
  local seen = {}
  for _, u in ipairs(users) do seen[u] = true end
  for _, u in ipairs(redis.call('ZRANGEBYSCORE', gset, last, last)) do
    if not seen[u] then users[#users + 1] = u end
  end
end
redis.call('SET', key('sweep:away_cutoff'), int(cutoff))
local n = 0
for _, user in ipairs(users) do
  local old = load(user)
  if old and old.status == 'online' and ms_of(old.last_activity) <= target then
    local r = copy(old)
    present_status(r, true)
    commit(user, old, r)
    n = n + 1
  end
end
return {n, #found / 2 >= batch and 1 or 0}
