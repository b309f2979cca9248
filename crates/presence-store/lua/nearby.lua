-- nearby.lua: users sharing a location within a radius, nearest first, with their records.
-- ARGV[5] set: 'global' or 'org:{o}' (geo:{set})   ARGV[6] lon   ARGV[7] lat
-- ARGV[8] radius in metres   ARGV[9] limit
-- Returns {user1, {lon, lat}, record1, ...}; the caller measures the distance from the
-- member's position as Redis keeps it (geo.rs, the same for both stores). An entry whose
-- record is gone is skipped (the caller also drops one that is no longer listed: reindex()
-- keeps the sets exact, so only a hand-made change leaves such an entry).
--
-- GEOSEARCH … ASC COUNT n still gathers and sorts every member inside the radius, so one
-- search of a wide radius over a dense area costs O(members inside). The search starts at
-- 250 m and doubles up to the radius asked, stopping at the first that finds `limit` users:
-- those are the nearest within the radius asked too (every one is closer than anyone
-- outside the smaller circle). The cost is then about what the last circle holds.
local set, lon, lat = key('geo:' .. ARGV[5]), ARGV[6], ARGV[7]
local radius, limit = tonumber(ARGV[8]), tonumber(ARGV[9])
local r = math.min(radius, 250)
local found
while true do
  found = redis.call('GEOSEARCH', set, 'FROMLONLAT', lon, lat, 'BYRADIUS', r, 'm', 'ASC',
    'COUNT', limit, 'WITHCOORD')
  if #found >= limit or r >= radius then break end
  r = math.min(radius, r * 2)
end
local out = {}
for _, e in ipairs(found) do
  local rec = redis.call('HGETALL', ukey(e[1]))
  if #rec > 0 then
    out[#out + 1] = e[1]; out[#out + 1] = e[2]; out[#out + 1] = rec
  end
end
return out
