-- reap_node.lua: ends the sessions of a node whose lease lapsed, a batch at a time. Safe to
-- run twice or on many nodes at once: it re-checks the lease, and each user it pops is
-- handled once
-- (the node's index list holds each user once; see common.lua).
-- ARGV[5] node id   ARGV[6] batch size
-- Returns {sessions ended, state}: state 0 = users remain (call again), 1 = fully reaped now,
-- 2 = nothing to reap (the node renewed meanwhile, or another node reaped it).
local node, batch = ARGV[5], tonumber(ARGV[6])
local lease = redis.call('ZSCORE', key('nodes'), node)
if not lease or tonumber(lease) >= NOW then return {0, 2} end
local list = key('node:' .. node .. ':users')
local users = redis.call('LPOP', list, batch) or {}
local ended = 0
for _, user in ipairs(users) do
  local old = load(user)
  if old then
    local r = copy(old)
    drop_node(r, node)
    local gone = 0
    for id, v in pairs(old.sessions) do
      if parse_session(v) == node then remove_session(r, id); gone = gone + 1 end
    end
    if gone > 0 then after_sessions_ended(r) end
    commit(user, old, r)
    ended = ended + gone
  end
end
if redis.call('LLEN', list) == 0 then
  redis.call('ZREM', key('nodes'), node)
  redis.call('DEL', key('node:' .. node .. ':info'))
  -- Tells the node, should it come back, that its sessions are gone (node_lease.lua).
  redis.call('SET', key('node:' .. node .. ':reaped'), '1', 'PX', 86400000)
  return {ended, 1}
end
return {ended, 0}
