-- repair_away.lua: recounts one scope's away count exactly, in this one atomic call: the
-- members of `online:{scope}` whose record puts them in the scope (as scope_sets() would:
-- visible, in that zone or org) and says away.
-- A scope with no set has a count of none. Atomic, so exact whatever runs beside it, and
-- O(members of the set): about 3 s of Redis time per million members, half of them away
-- (README, "Repair"), during which every other command waits; the whole repair calls it only
-- for a scope whose count disagrees with the records. A set larger than ARGV[6] (when not 0)
-- is left alone, which is what the periodic pass asks.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] scope ('global', 'zone:10', 'org:100')   ARGV[6] most members (0: no limit)
-- ARGV[7] '1': check only
-- Returns {members counted, 1 when the count was wrong else 0, 1 when skipped (too large)}.
local scope, most, check = ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1'
local zset, counts = key('online:' .. scope), key('away_count')
local n = redis.call('ZCARD', zset)
if most > 0 and n > most then return {0, 0, 1} end
local away = 0
local chunk = 10000
local kind, id = string.match(scope, '^(%a+):(.*)$')
for from = 0, n - 1, chunk do
  for _, user in ipairs(redis.call('ZRANGE', zset, from, from + chunk - 1)) do
    -- Most members are online: one HGET each; an away one is then checked against
    -- scope_sets' rule (visible, and in this zone or org).
    local k = ukey(user)
    if redis.call('HGET', k, 'status') == 'away' then
      local f = redis.call('HMGET', k, 'zone_id', 'org_id', 'iv')
      if not f[3] and (scope == 'global' or (kind == 'zone' and f[1] == id)
          or (kind == 'org' and f[2] == id)) then
        away = away + 1
      end
    end
  end
end
local stored = tonumber(redis.call('HGET', counts, scope) or '0')
if stored == away then return {n, 0, 0} end
if not check then
  if away > 0 then redis.call('HSET', counts, scope, away) else redis.call('HDEL', counts, scope) end
end
return {n, 1, 0}
