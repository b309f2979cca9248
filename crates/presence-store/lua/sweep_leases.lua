-- sweep_leases.lua: REST heartbeat sessions whose lease ran out end, with no further grace;
-- a user left with no session goes offline. Stale lease entries are dropped.
-- ARGV[5] batch size
-- Returns {sessions ended, 1 when the batch was full (call again) else 0}.
local due = redis.call('ZRANGEBYSCORE', key('leases'), '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[5]))
local n = 0
for _, member in ipairs(due) do
  local user, sid = string.match(member, '^([^|]*)|(.*)$')
  local old = load(user)
  local lease = old and old.sessions[sid] and select(3, parse_session(old.sessions[sid]))
  if lease and lease <= NOW then
    local r = copy(old)
    remove_session(r, sid)
    after_sessions_ended(r)
    commit(user, old, r)
    n = n + 1
  else
    redis.call('ZREM', key('leases'), member)
  end
end
return {n, #due >= tonumber(ARGV[5]) and 1 or 0}
