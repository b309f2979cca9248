-- sweep_history.lua: drops history days before the first day kept (history_retention), and a
-- user's whole history once none is left. Users come from `history:due` by their oldest day,
-- so a sweep costs O(what expires).
-- ARGV[5] first UTC day kept   ARGV[6] batch size
-- Returns {users pruned, 1 when the batch was full (call again) else 0}.
local first, batch = tonumber(ARGV[5]), tonumber(ARGV[6])
local due_key = key('history:due')
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', '(' .. first, 'LIMIT', 0, batch)
for _, user in ipairs(due) do
  local k = key('history:' .. user)
  local expired, oldest = {}, nil
  for _, d in ipairs(redis.call('HKEYS', k)) do
    local n = tonumber(d)
    if n == nil or n < first then expired[#expired + 1] = d
    elseif oldest == nil or n < oldest then oldest = n end
  end
  for i = 1, #expired, 1000 do
    redis.call('HDEL', k, unpack(expired, i, math.min(i + 999, #expired)))
  end
  if oldest then
    redis.call('ZADD', due_key, oldest, user)
  else
    redis.call('ZREM', due_key, user)
    redis.call('DEL', k)
  end
end
return {#due, #due >= batch and 1 or 0}
