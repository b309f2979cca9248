-- sweep_stale.lua: walks online:global a slice per sweep (position kept in
-- `sweep:stale_pos`) and removes entries whose record is gone, offline or hiding (iv): what an
-- operator's DEL, or a crash of Redis between AOF writes, can leave behind. Walks `hidden`
-- (users hiding from onlookers) the same way, removing entries of users who are gone, offline or no
-- longer hiding. O(batch) per sweep.
-- ARGV[5] batch size
-- Returns the number of stale entries removed.
local batch = tonumber(ARGV[5])

-- One slice of `set` from the position kept in `pos_key`; `stale(fields)` judges an entry
-- by the user's status, zone, org and iv.
local function walk(set, pos_key, stale)
  local zset = key(set)
  local pos = tonumber(redis.call('GET', key(pos_key)) or '0')
  local users = redis.call('ZRANGE', zset, pos, pos + batch - 1)
  local n = 0
  for _, user in ipairs(users) do
    local f = redis.call('HMGET', ukey(user), 'status', 'zone_id', 'org_id', 'iv')
    if stale(f) then
      redis.call('ZREM', zset, user)
      if set == 'online:global' then
        if f[2] then redis.call('ZREM', key('online:zone:' .. f[2]), user) end
        if f[3] then redis.call('ZREM', key('online:org:' .. f[3]), user) end
      end
      n = n + 1
    end
  end
  if #users < batch then pos = 0 else pos = pos + #users - n end
  redis.call('SET', key(pos_key), pos)
  return n
end

local function absent(f) return not f[1] or f[1] == 'offline' end
return walk('online:global', 'sweep:stale_pos', function(f) return absent(f) or f[4] end)
  + walk('hidden', 'sweep:stale_hidden_pos', function(f) return absent(f) or not f[4] end)
