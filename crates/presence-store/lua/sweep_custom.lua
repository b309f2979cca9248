-- sweep_custom.lua: custom statuses whose expires_at has come are cleared, one event each.
-- Each candidate from `expiring:custom` is re-checked against the record: an entry left by a
-- status replaced or cleared since (or a record gone) only fixes the index, never clears the
-- status the record holds now. Safe on every node at once.
-- ARGV[5] batch size
-- Returns {statuses cleared, 1 when the batch was full (call again) else 0}.
local batch = tonumber(ARGV[5])
local due = redis.call('ZRANGEBYSCORE', key('expiring:custom'), '-inf', int(NOW), 'LIMIT', 0, batch)
local n = 0
for _, user in ipairs(due) do
  local old = load(user)
  if old and old.cx and tonumber(old.cx) <= NOW then
    local r = copy(old)
    clear_custom(r)
    commit(user, old, r)
    n = n + 1
  elseif old and old.cx then
    redis.call('ZADD', key('expiring:custom'), old.cx, user)
  else
    redis.call('ZREM', key('expiring:custom'), user)
  end
end
return {n, #due >= batch and 1 or 0}
