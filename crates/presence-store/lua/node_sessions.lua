-- node_sessions.lua: every session (not leased) the store records for one node, for a node
-- whose own count disagrees with node:{id}:info's `sc` (node_session_count). Reads the node's
-- index list (each user with a session on the node is in it, see common.lua) and each listed
-- user's hash: O(entries in the list), one call.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] node id
-- Returns {user, session id, user, session id, ...}
local node = ARGV[5]
local out, seen = {}, {}
for _, user in ipairs(redis.call('LRANGE', key('node:' .. node .. ':users'), 0, -1)) do
  if not seen[user] then
    seen[user] = true
    local flat = redis.call('HGETALL', ukey(user))
    for i = 1, #flat, 2 do
      local f = flat[i]
      if string.sub(f, 1, 2) == 's:' and parse_session(flat[i + 1]) == node then
        out[#out + 1] = user
        out[#out + 1] = string.sub(f, 3)
      end
    end
  end
end
return out
