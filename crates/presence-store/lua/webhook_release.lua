-- webhook_release.lua: a node gives up its lease on a webhook endpoint (graceful shutdown), so
-- another node may claim it at once. A lease another node holds is left alone.
-- ARGV[5] endpoint id   ARGV[6] node id
-- Key `webhook:{endpoint}` (hash, see webhook_claim.lua). Returns 1 when released, else 0.
-- KEYS: none (built from the prefix, see common.lua)
local k = key('webhook:' .. ARGV[5])
if redis.call('HGET', k, 'holder') ~= ARGV[6] then return 0 end
redis.call('HSET', k, 'holder', '', 'until', '0')
return 1
