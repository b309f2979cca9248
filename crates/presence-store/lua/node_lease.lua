-- node_lease.lua: registers or renews a node's lease, and records what /admin/nodes shows.
-- ARGV[5] node id   ARGV[6] lease expiry ms   ARGV[7] sessions the node holds
-- Returns 1 when the node had been reaped since its last renewal (its sessions are gone),
-- else 0.
local node = ARGV[5]
local lost = redis.call('DEL', key('node:' .. node .. ':reaped'))
redis.call('ZADD', key('nodes'), ARGV[6], node)
local info = key('node:' .. node .. ':info')
redis.call('HSETNX', info, 'started_at', int(NOW))
redis.call('HSET', info, 'last_renewal', int(NOW), 'sessions', ARGV[7])
return lost
