-- sweep_scopes.lua: repairs the scope sets (`online:*`) and their away counts, a few sets per
-- sweep, so counts converge after damage the transitions cannot see: a record deleted by hand
-- (`DEL presence:123`) leaves its zone and org entries and its away counts behind (the
-- stale-entry walk, sweep_stale.lua, sees only online:global and cannot know the zone of a
-- record that is gone); a crash between AOF writes can leave an away count off.
-- Walks the keyspace with SCAN (cursor kept in `sweep:scope_pos`, so every node continues
-- where the last sweep stopped). A set of at most the remaining budget is checked whole, in
-- this one atomic call: entries whose record is gone, offline or elsewhere are removed and
-- its away count is set to the exact number of away members. A larger set only gets its away
-- count clamped to [0, members] (its stale entries leave through sweep_stale.lua for
-- online:global, and through list.lua when the scope is listed).
-- O(batch) per sweep: at most 10 SCAN steps of `batch` keys and `batch` members checked.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] batch size
-- Returns the number of stale entries removed.
local batch = tonumber(ARGV[5])
local pos_key, counts = key('sweep:scope_pos'), key('away_count')
local pos = redis.call('GET', pos_key) or '0'
local pattern = glob_literal(P) .. 'online:*'
local skip = #P + #'online:'
local budget, removed = batch, 0

local function set_away(scope, n)
  if n > 0 then redis.call('HSET', counts, scope, n) else redis.call('HDEL', counts, scope) end
end

local function check(k)
  local scope = string.sub(k, skip + 1)
  local kind, id = string.match(scope, '^(%a+):(.*)$')
  if scope ~= 'global' and kind ~= 'zone' and kind ~= 'org' then return end
  local n = redis.call('ZCARD', k)
  if n <= budget then
    budget = budget - n
    local away = 0
    for _, user in ipairs(redis.call('ZRANGE', k, 0, -1)) do
      -- Judged by scope_sets(), the rule reindex() and the repair follow: a user hiding
      -- from onlookers (iv) belongs to no scope set either.
      local f = redis.call('HMGET', ukey(user), 'status', 'zone_id', 'org_id', 'iv')
      local here = scope_sets({status = f[1] or nil, zone_id = f[2] or nil,
        org_id = f[3] or nil, iv = f[4] or nil})[scope]
      if here then
        if f[1] == 'away' then away = away + 1 end
      else
        redis.call('ZREM', k, user)
        removed = removed + 1
      end
    end
    set_away(scope, away)
  else
    local away = tonumber(redis.call('HGET', counts, scope) or '0')
    if away < 0 or away > n then set_away(scope, math.max(0, math.min(away, n))) end
  end
end

for _ = 1, 10 do
  local r = redis.call('SCAN', pos, 'MATCH', pattern, 'COUNT', batch)
  pos = r[1]
  for _, k in ipairs(r[2]) do
    if redis.call('TYPE', k)['ok'] == 'zset' then check(k) end
  end
  if pos == '0' or budget <= 0 then break end
end
redis.call('SET', pos_key, pos)
return removed
