-- repair_node.lua: checks a node's list of users (`node:{id}:users`, for reaping) against
-- records that say it indexes them (repair_records.lua names them), in one atomic call. A
-- user with a session on the node missing from the list is added (else a reap would never
-- end that session); a record whose `ni` names the node while the list does not hold the
-- user has the mark dropped (else its next session on the node would never be listed).
-- Only for a node in `nodes` (live or waiting to be reaped): a dead node's sessions are
-- orphans (repair_records.lua) and its keys go (repair_node_count.lua).
-- O(list + users given). Nothing is changed with ARGV[6] = '1' (check only).
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] node id   ARGV[6] '1': check only   ARGV[7..] users
-- Returns {users checked, fixes}.
local node, check = ARGV[5], ARGV[6] == '1'
if not redis.call('ZSCORE', key('nodes'), node) then return {0, 0} end
local list = key('node:' .. node .. ':users')
local have = {}
for _, u in ipairs(redis.call('LRANGE', list, 0, -1)) do have[u] = true end
local checked, fixed = 0, 0
for i = 7, #ARGV do
  local user = ARGV[i]
  local old = load(user)
  checked = checked + 1
  if old and has_node(old, node) and not have[user] then
    fixed = fixed + 1
    if not check then
      if node_set(old)[node] then
        redis.call('RPUSH', list, user)
        have[user] = true
      else
        local r = copy(old)
        r.ni = old.ni
        drop_node(r, node)
        save(user, old, r)
      end
    end
  end
end
return {checked, fixed}
