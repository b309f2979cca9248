-- sweep_stale.lua: walks online:global a slice per sweep (position kept in
-- `sweep:stale_pos`) and removes entries whose record is gone or offline: what an operator's
-- DEL, or a crash of Redis between AOF writes, can leave behind. O(batch) per sweep.
-- ARGV[5] batch size
-- Returns the number of stale entries removed.
local batch = tonumber(ARGV[5])
local gset = key('online:global')
local pos = tonumber(redis.call('GET', key('sweep:stale_pos')) or '0')
local users = redis.call('ZRANGE', gset, pos, pos + batch - 1)
local n = 0
for _, user in ipairs(users) do
  local f = redis.call('HMGET', ukey(user), 'status', 'zone_id', 'org_id')
  if not f[1] or f[1] == 'offline' then
    redis.call('ZREM', gset, user)
    if f[2] then redis.call('ZREM', key('online:zone:' .. f[2]), user) end
    if f[3] then redis.call('ZREM', key('online:org:' .. f[3]), user) end
    n = n + 1
  end
end
if #users < batch then pos = 0 else pos = pos + #users - n end
redis.call('SET', key('sweep:stale_pos'), pos)
return n
