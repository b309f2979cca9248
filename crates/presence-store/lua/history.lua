-- history.lua: one user's online history for some days, and their record, read together so
-- that a presence ending meanwhile is counted once (history.rs adds the open part).
-- ARGV[5] user   ARGV[6..] UTC day numbers
-- Returns {{record field, value, ...}, {ms present or nil per day}}
local user = ARGV[5]
local days = {}
for i = 6, #ARGV do days[#days + 1] = ARGV[i] end
local stored = {}
if #days > 0 then stored = redis.call('HMGET', key('history:' .. user), unpack(days)) end
return {redis.call('HGETALL', ukey(user)), stored}
