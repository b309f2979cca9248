-- nearby.lua: users sharing a location within a radius, nearest first, with their records.
-- ARGV[5] set: 'global' or 'org:{o}' (geo:{set})   ARGV[6] lon   ARGV[7] lat
-- ARGV[8] radius in metres   ARGV[9] limit
-- Returns {user1, distance_m1, record1, ...}; an entry whose record is gone is skipped (the
-- caller also drops one that is no longer listed: reindex() keeps the sets exact, so only a
-- hand-made change leaves such an entry).
local found = redis.call('GEOSEARCH', key('geo:' .. ARGV[5]), 'FROMLONLAT', ARGV[6], ARGV[7],
  'BYRADIUS', ARGV[8], 'm', 'ASC', 'COUNT', tonumber(ARGV[9]), 'WITHDIST')
local out = {}
for _, e in ipairs(found) do
  local rec = redis.call('HGETALL', ukey(e[1]))
  if #rec > 0 then
    out[#out + 1] = e[1]; out[#out + 1] = e[2]; out[#out + 1] = rec
  end
end
return out
