-- sweep_retention.lua: deletes offline records last seen before the cutoff
-- (last_seen_retention). Stale last_seen entries are dropped.
-- ARGV[5] cutoff ms   ARGV[6] batch size
-- Returns {records deleted, 1 when the batch was full (call again) else 0}.
local cutoff = tonumber(ARGV[5])
local old = redis.call('ZRANGEBYSCORE', key('last_seen'), '-inf', secs(cutoff), 'LIMIT', 0, tonumber(ARGV[6]))
local n = 0
for _, user in ipairs(old) do
  local r = load(user)
  if r and r.status == 'offline' and r.last_seen and ms_of(r.last_seen) <= cutoff then
    delete_record(user, r)
    n = n + 1
  elseif not r or r.status ~= 'offline' then
    redis.call('ZREM', key('last_seen'), user)
  end
end
return {n, #old >= tonumber(ARGV[6]) and 1 or 0}
