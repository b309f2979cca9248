-- read_feed.lua: events after a feed id, and whether the reader must reset instead.
-- An id other than 0-0 ("from the beginning") must belong to the current feed:
-- - no feed at all: Redis lost its data (nothing else deletes the stream) → reset;
-- - newer than the stream's last-generated-id: made by another (lost) feed → reset;
-- - older than the first entry kept: the events after it were trimmed, or the id comes from a
--   feed lost before this one started (its new, time-based ids are all later) → reset.
-- 0-0 resets only once the stream was trimmed (entries-added > length).
-- (Redis 7.0's XINFO STREAM gives length, entries-added, first-entry, last-generated-id.
-- What it cannot tell: an id from a lost feed that falls between the new feed's first and
-- last ids, possible only if the server clock went back across the loss.)
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] after (stream id)   ARGV[6] count
-- Returns {reset (0|1), entries}
local feed, after = key('feed'), ARGV[5]
local from_start = after == '0-0'
if redis.call('EXISTS', feed) == 0 then
  if from_start then return {0, {}} end
  return {1, {}}
end
local info = redis.call('XINFO', 'STREAM', feed)
local length, added, first, last = 0, 0, nil, '0-0'
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1]
  elseif info[i] == 'entries-added' then added = info[i + 1]
  elseif info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local trimmed = added > length
if from_start then
  if trimmed then return {1, {}} end
elseif older(last, after) then
  return {1, {}}
elseif first then
  if older(after, first) then return {1, {}} end
elseif older(after, last) then
  -- An empty stream that made entries after this id: they are gone.
  return {1, {}}
end
return {0, redis.call('XRANGE', feed, '(' .. after, '+', 'COUNT', tonumber(ARGV[6]))}
