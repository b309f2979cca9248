-- sweep_away.lua: auto-away at O(users that change).
-- The users who just crossed away_after are those whose score in online:global (or in
-- `hidden`, the users hiding from onlookers, who are in no public set) lies in (previous cutoff,
-- now - away_after]; each index's cutoff is kept (`sweep:away_cutoff`,
-- `sweep:away_cutoff_hidden`) so windows stay contiguous across nodes and restarts. Users
-- already away, or active, lie outside the window and are never scanned. Each candidate is
-- re-checked before it changes.
-- ARGV[5] away_after ms   ARGV[6] batch size (per index)
-- Returns {users turned away (auto), 1 when a batch was full (call again) else 0}.
local target = NOW - tonumber(ARGV[5])
local batch = tonumber(ARGV[6])

-- The candidates of one index, and whether its batch was full; moves its cutoff.
local function window(set, cutoff_key, users)
  local from = redis.call('GET', key(cutoff_key))
  local lower = '-inf'
  if from then
    if tonumber(from) >= target then return false end
    lower = '(' .. secs(tonumber(from))
  end
  local zset = key(set)
  local found = redis.call('ZRANGEBYSCORE', zset, lower, secs(target), 'WITHSCORES', 'LIMIT', 0, batch)
  local cutoff = target
  local seen = {}
  for i = 1, #found, 2 do users[#users + 1] = found[i]; seen[found[i]] = true end
  local full = #found / 2 >= batch
  if full then
    -- A full batch stops at its last score, taking every tie at that score, so the next
    -- window can start strictly after it.
    local last = found[#found]
    cutoff = ms_of(last)
    for _, u in ipairs(redis.call('ZRANGEBYSCORE', zset, last, last)) do
      if not seen[u] then users[#users + 1] = u end
    end
  end
  redis.call('SET', key(cutoff_key), int(cutoff))
  return full
end

local users = {}
local full = window('online:global', 'sweep:away_cutoff', users)
full = window('hidden', 'sweep:away_cutoff_hidden', users) or full
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
return {n, full and 1 or 0}
