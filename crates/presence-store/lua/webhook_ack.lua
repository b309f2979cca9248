-- webhook_ack.lua: the holder of a webhook endpoint's lease acknowledges what it delivered.
-- ARGV[5] endpoint id   ARGV[6] node id   ARGV[7] feed id ("ms-seq"): delivered up to here
-- Key `webhook:{endpoint}` (hash, see webhook_claim.lua). Only the holder may acknowledge;
-- the acknowledged id never moves back. The rule is presence_core::WebhookLeaseTable::ack.
-- Returns 1 when this node holds the lease (whether or not the id moved), 0 when it does not
-- (it lost the lease and must stop delivering).
-- KEYS: none (built from the prefix, see common.lua)
local k = key('webhook:' .. ARGV[5])
local cur = redis.call('HMGET', k, 'holder', 'acked')
if cur[1] ~= ARGV[6] then return 0 end
local function feed_id(id)
  local ms, seq = string.match(id or '0-0', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local new_ms, new_seq = feed_id(ARGV[7])
local old_ms, old_seq = feed_id(cur[2])
if new_ms > old_ms or (new_ms == old_ms and new_seq > old_seq) then
  redis.call('HSET', k, 'acked', ARGV[7])
end
return 1
