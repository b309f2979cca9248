-- repair_node_count.lua: one node's own keys, in one atomic call.
--   - A node in `nodes` (live, or waiting to be reaped): entries its list holds twice are
--     dropped (each user is listed once, see common.lua), and its count of sessions
--     (`node:{id}:info` `sc`, node_session_count) is set to the sessions its listed users'
--     records hold on it, and those of the users given (the records that name the node, so
--     a check counts what a fix adds to the list). Exact when the list holds every user with
--     a session on the node, which repair_node.lua makes sure of first and every transition
--     keeps. O(list + users given): about the cost of node_sessions.lua (README, "Repair").
--   - A node not in `nodes` (reaped, or never registered): its list and info keys are left
--     over from damage or an orphan's end, and go.
-- Nothing is changed with ARGV[7] = '1' (check only).
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] node id   ARGV[6] most list entries (0: no limit; a longer list is skipped)
-- ARGV[7] '1': check only   ARGV[8..] users whose records name the node
-- Returns {entries checked, duplicate entries, 1 when `sc` was wrong, dead node keys,
--   1 when skipped (too long)}.
local node, most, check = ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1'
local list, info = key('node:' .. node .. ':users'), key('node:' .. node .. ':info')
if not redis.call('ZSCORE', key('nodes'), node) then
  local n = redis.call('EXISTS', list, info)
  if n > 0 and not check then redis.call('DEL', list, info) end
  return {0, 0, 0, n, 0}
end
local len = redis.call('LLEN', list)
if most > 0 and len > most then return {0, 0, 0, 0, 1} end
local entries = redis.call('LRANGE', list, 0, -1)
local seen, unique, sessions = {}, {}, 0
-- Without load(): the sessions' fields straight from HGETALL (as node_sessions.lua).
local function count(user)
  local flat = redis.call('HGETALL', ukey(user))
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 's:' and parse_session(flat[i + 1]) == node then
      sessions = sessions + 1
    end
  end
end
for _, user in ipairs(entries) do
  if not seen[user] then
    seen[user] = true
    unique[#unique + 1] = user
    count(user)
  end
end
for i = 8, #ARGV do
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    count(ARGV[i])
  end
end
local dups = #entries - #unique
if dups > 0 and not check then
  redis.call('DEL', list)
  for i = 1, #unique, 1000 do
    redis.call('RPUSH', list, unpack(unique, i, math.min(i + 999, #unique)))
  end
end
local stored = tonumber(redis.call('HGET', info, 'sc') or '0')
local wrong = stored ~= sessions and 1 or 0
if wrong == 1 and not check then redis.call('HSET', info, 'sc', sessions) end
return {#entries, dups, wrong, 0, 0}
