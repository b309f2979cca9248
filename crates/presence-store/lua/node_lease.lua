-- node_lease.lua: registers or renews a node's lease, and records what /admin/nodes shows.
-- ARGV[5] node id   ARGV[6] lease expiry ms   ARGV[7] sessions the node holds
-- ARGV[8] '1' when this node has renewed before
-- Returns 1 when the store no longer knew the node (another node reaped it, or Redis lost its
-- data): the node must re-assert its sessions. Else 0.
local node = ARGV[5]
local info = key('node:' .. node .. ':info')
local reaped = redis.call('DEL', key('node:' .. node .. ':reaped'))
local forgotten = ARGV[8] == '1' and redis.call('HEXISTS', info, 'last_renewal') == 0
redis.call('ZADD', key('nodes'), ARGV[6], node)
redis.call('HSETNX', info, 'started_at', int(NOW))
redis.call('HSET', info, 'last_renewal', int(NOW), 'sessions', ARGV[7])
if reaped == 1 or forgotten then return 1 end
return 0
