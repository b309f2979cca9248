-- inactive.lua: one page of offline users last seen before a time, oldest first (ties in byte
-- order of the user id, as the sorted set keeps them), from `last_seen`.
-- ARGV[5] before (ms, exclusive)   ARGV[6] limit
-- ARGV[7] cursor last seen ms ('' for the first page)   ARGV[8] cursor user
-- Returns {next_cursor_ms or '', next_cursor_user or '', user1, last_seen_ms1, ...}
local set = key('last_seen')
local before, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local cur_ms, cur_user = ARGV[7], ARGV[8]
local out, n, more = {}, 0, false

-- Takes entries (member, score, ...) in order, up to the limit and while last seen before
-- `before`; one more entry than the limit means there is a next page.
local function take(entries)
  for i = 1, #entries, 2 do
    local user, seen = entries[i], ms_of(entries[i + 1])
    if seen >= before then return end
    if n == limit then more = true; return end
    out[#out + 1] = user; out[#out + 1] = int(seen)
    n = n + 1
  end
end
local chunk = limit + 1
if cur_ms == '' then
  take(redis.call('ZRANGE', set, 0, chunk - 1, 'WITHSCORES'))
else
  local at = tonumber(cur_ms)
  local score = redis.call('ZSCORE', set, cur_user)
  if score and ms_of(score) == at then
    -- The cursor's entry is still there: the page starts right after it, by rank.
    local rank = redis.call('ZRANK', set, cur_user)
    take(redis.call('ZRANGE', set, rank + 1, rank + chunk, 'WITHSCORES'))
  else
    -- It left (the user came back): the page starts at the first entry after (at, cur_user).
    -- Entries last seen at `at` (a node's reap ends thousands at one moment) sit together,
    -- by id; a binary search over their ranks finds the first id after the cursor's in
    -- O(log² n), however many they are.
    local lo = redis.call('ZCOUNT', set, '-inf', '(' .. secs(at))
    local hi = lo + redis.call('ZCOUNT', set, secs(at), secs(at))
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local member = redis.call('ZRANGE', set, mid, mid)[1]
      if bytes_less(cur_user, member) then hi = mid else lo = mid + 1 end
    end
    take(redis.call('ZRANGE', set, lo, lo + chunk - 1, 'WITHSCORES'))
  end
end
local reply = {'', ''}
if more then reply = {out[#out], out[#out - 1]} end
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
