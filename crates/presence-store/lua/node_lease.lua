-- node_lease.lua: registers or renews a node's lease.
-- ARGV[5] node id   ARGV[6] lease expiry ms
-- Returns 1 when the node had been reaped since its last renewal (its sessions are gone),
-- else 0.
local node = ARGV[5]
local lost = redis.call('DEL', key('node:' .. node .. ':reaped'))
redis.call('ZADD', key('nodes'), ARGV[6], node)
return lost
