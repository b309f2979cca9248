-- activity.lua: activity of many users in one call (the node coalesces and batches).
-- Refreshes last_activity and the scores in every set the user is in (the seed forgot the
-- scores) and turns away (auto) back into online. Offline users and unknown users are skipped.
-- Activity older than away_after says nothing about now and is skipped: it could otherwise
-- bring a user back online below the auto-away window (sweep_away.lua), never to be scanned.
-- ARGV[5] away_after ms   ARGV[6..] pairs: user, activity time ms
-- Returns a list of {feed_id, event} for the users that came back from auto-away.
local events = {}
local too_old = NOW - tonumber(ARGV[5])
for i = 6, #ARGV, 2 do
  local user, at = ARGV[i], math.min(tonumber(ARGV[i + 1]), NOW)
  -- Fast path: six fields, no session parsing; the full transition only for auto-away.
  local f = redis.call('HMGET', ukey(user), 'status', 'ar', 'last_activity', 'zone_id', 'org_id',
    'iv')
  local status, ar, la = f[1], f[2], f[3]
  if status and status ~= 'offline' and at > too_old then
    if ar == 'auto' then
      local old = load(user)
      local r = copy(old)
      touch(r, at)
      present_status(r, false)
      local c = commit(user, old, r)
      if c[1] ~= '' then events[#events + 1] = c end
    elseif at > ms_of(la) then
      local score = secs(at)
      redis.call('HSET', ukey(user), 'last_activity', score)
      if f[6] then
        -- Hiding from onlookers (iv): in `hidden`, not in the public sets (common.lua reindex).
        redis.call('ZADD', key('hidden'), 'XX', score, user)
      else
        redis.call('ZADD', key('online:global'), 'XX', score, user)
        if f[4] then redis.call('ZADD', key('online:zone:' .. f[4]), 'XX', score, user) end
        if f[5] then redis.call('ZADD', key('online:org:' .. f[5]), 'XX', score, user) end
      end
    end
  end
end
return events
