-- node_lease.lua: registers or renews a node's lease, and records what /admin/nodes shows.
-- ARGV[5] node id   ARGV[6] lease expiry ms   ARGV[7] sessions the node holds
-- ARGV[8] '1' when this node has renewed before
-- Returns 1 when the node's sessions in the store may differ from its sockets: its lease had
-- already lapsed (a reap may have ended part of its sessions: reap_node.lua works a batch at
-- a time and stops once the lease is renewed), another node reaped it, or Redis lost its data.
-- The node must re-assert its sessions. Else 0.
-- KEYS: none (built from the prefix, see common.lua)
local node = ARGV[5]
local info = key('node:' .. node .. ':info')
local lease = redis.call('ZSCORE', key('nodes'), node)
local lapsed = lease and tonumber(lease) < NOW
local reaped = redis.call('DEL', key('node:' .. node .. ':reaped'))
local forgotten = ARGV[8] == '1' and redis.call('HEXISTS', info, 'last_renewal') == 0
redis.call('ZADD', key('nodes'), ARGV[6], node)
redis.call('HSETNX', info, 'started_at', int(NOW))
redis.call('HSET', info, 'last_renewal', int(NOW), 'sessions', ARGV[7])
if reaped == 1 or forgotten or lapsed then return 1 end
return 0
