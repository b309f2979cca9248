-- read_feed.lua: events after a feed id, and whether some may have aged out. Once the stream
-- has been trimmed (entries-added > length), an id older than the first kept entry may have
-- missed events: the reader gets reset = 1 and must take a snapshot.
-- ARGV[5] after (stream id)   ARGV[6] count
-- Returns {reset (0|1), entries}
local feed = key('feed')
if redis.call('EXISTS', feed) == 0 then return {0, {}} end
local info = redis.call('XINFO', 'STREAM', feed)
local length, added, first = 0, 0, nil
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1]
  elseif info[i] == 'entries-added' then added = info[i + 1]
  elseif info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if added > length and first and older(ARGV[5], first) then return {1, {}} end
return {0, redis.call('XRANGE', feed, '(' .. ARGV[5], '+', 'COUNT', tonumber(ARGV[6]))}
