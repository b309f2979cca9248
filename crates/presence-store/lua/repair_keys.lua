-- repair_keys.lua: one SCAN step for the repair: keys matching a pattern after the prefix
-- (the prefix itself taken literally), of one type. Also answers the index sets the repair
-- walks (INDEX_SETS, common.lua), so that list lives in one place.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] pattern after the prefix ('' to ask for INDEX_SETS)   ARGV[6] cursor
-- ARGV[7] COUNT   ARGV[8] type ('zset', 'hash', 'list', ...)
-- Returns {next cursor, {key after the prefix, ...}}, or {INDEX_SETS} when ARGV[5] is ''.
if ARGV[5] == '' then return {INDEX_SETS} end
local scan = redis.call('SCAN', ARGV[6], 'MATCH', glob_literal(P) .. ARGV[5], 'COUNT',
  tonumber(ARGV[7]))
local out = {}
for _, k in ipairs(scan[2]) do
  if redis.call('TYPE', k)['ok'] == ARGV[8] then out[#out + 1] = string.sub(k, #P + 1) end
end
return {scan[1], out}
