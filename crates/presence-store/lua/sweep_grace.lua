-- sweep_grace.lua: users whose offline grace ran out go offline (last seen = when their last
-- session closed). Stale grace entries are dropped.
-- ARGV[5] batch size
-- Returns {users gone offline, 1 when the batch was full (call again) else 0}.
local due = redis.call('ZRANGEBYSCORE', key('grace'), '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[5]))
local n = 0
for _, user in ipairs(due) do
  local old = load(user)
  if old and old.n == 0 and old.gr and tonumber(old.gr) <= NOW then
    local r = copy(old)
    go_offline(r, ms_of(old.last_seen or secs(NOW)))
    commit(user, old, r)
    n = n + 1
  else
    redis.call('ZREM', key('grace'), user)
  end
end
return {n, #due >= tonumber(ARGV[5]) and 1 or 0}
