-- compact_node.lua: rotates a slice of a live node's index list (`node:{id}:users`): entries of
-- users who still have a session on the node go back to the tail, the others are dropped along
-- with the user's `ni` mark. Closes leave entries behind; this keeps the list near the node's
-- live user count at O(batch) per sweep.
-- ARGV[5] node id   ARGV[6] batch size
-- Returns the number of entries dropped.
local node, batch = ARGV[5], tonumber(ARGV[6])
local list = key('node:' .. node .. ':users')
local n = math.min(batch, redis.call('LLEN', list))
if n == 0 then return 0 end
local dropped = 0
for _, user in ipairs(redis.call('LPOP', list, n)) do
  local old = load(user)
  if old and node_set(old)[node] then
    redis.call('RPUSH', list, user)
  else
    dropped = dropped + 1
    if old and has_node(old, node) then
      local r = copy(old)
      drop_node(r, node)
      save(user, old, r)
    end
  end
end
return dropped
