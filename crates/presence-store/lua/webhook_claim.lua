-- webhook_claim.lua: claims or renews a node's delivery lease on one webhook endpoint.
-- ARGV[5] endpoint id   ARGV[6] node id   ARGV[7] lease until (ms)
-- ARGV[8] the holder's report ('' keeps the stored one)
-- Key `webhook:{endpoint}` (hash): `holder` (node id, '' once released), `until` (ms),
-- `acked` (feed id: every event up to it was delivered or given up on), `report`.
-- The node gets the lease when nobody holds it, when the holder's lease lapsed (until < now),
-- or when it holds it already (a renewal). An endpoint claimed for the first time starts at
-- the feed's head (its newest entry), in this same step, so no event after the first claim is
-- missed. The rule is presence_core::WebhookLeaseTable::claim.
-- Returns {1, acked, until} when this node holds it, {0, holder, until} when another does.
-- KEYS: none (built from the prefix, see common.lua)
local k = key('webhook:' .. ARGV[5])
local cur = redis.call('HMGET', k, 'holder', 'until', 'acked')
local holder, acked = cur[1], cur[3]
local lease_until = cur[2] and tonumber(cur[2]) or 0
if not acked then
  local last = redis.call('XREVRANGE', key('feed'), '+', '-', 'COUNT', 1)
  if #last > 0 then acked = last[1][1] else acked = '0-0' end
  redis.call('HSET', k, 'acked', acked)
end
if holder and holder ~= '' and holder ~= ARGV[6] and lease_until >= NOW then
  return {0, holder, int(lease_until)}
end
redis.call('HSET', k, 'holder', ARGV[6], 'until', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', k, 'report', ARGV[8]) end
return {1, acked, ARGV[7]}
