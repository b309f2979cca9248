-- inactive.lua: one page of offline users last seen before a time, oldest first (ties in byte
-- order of the user id, as the sorted set keeps them), from `last_seen`.
-- ARGV[5] before (ms, exclusive)   ARGV[6] limit
-- ARGV[7] cursor last seen ms ('' for the first page)   ARGV[8] cursor user
-- Returns {next_cursor_ms or '', next_cursor_user or '', user1, last_seen_ms1, ...}
local set = key('last_seen')
local before, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local cur_ms, cur_user = ARGV[7], ARGV[8]
local out, n, more = {}, 0, false

-- Takes entries (member, score, ...) in order; false once the page is full or past `before`.
local function take(entries, skip)
  for i = 1, #entries, 2 do
    local user, seen = entries[i], ms_of(entries[i + 1])
    if seen >= before then return false end
    if not skip(user, seen) then
      if n == limit then more = true; return false end
      out[#out + 1] = user; out[#out + 1] = int(seen)
      n = n + 1
    end
  end
  return true
end

local function never() return false end
local chunk = limit + 1
if cur_ms == '' then
  take(redis.call('ZRANGE', set, 0, chunk - 1, 'WITHSCORES'), never)
else
  local at = tonumber(cur_ms)
  local score = redis.call('ZSCORE', set, cur_user)
  if score and ms_of(score) == at then
    -- The cursor's entry is still there: the page starts right after it, by rank.
    local rank = redis.call('ZRANK', set, cur_user)
    take(redis.call('ZRANGE', set, rank + 1, rank + chunk, 'WITHSCORES'), never)
  else
    -- It left (the user came back): from its last seen on, skipping ties up to its id.
    local function before_cursor(user, seen)
      return seen == at and not bytes_less(cur_user, user)
    end
    local offset = 0
    while true do
      local page = redis.call('ZRANGEBYSCORE', set, secs(at), '+inf', 'WITHSCORES', 'LIMIT', offset, chunk)
      if #page == 0 or not take(page, before_cursor) or #page / 2 < chunk then break end
      offset = offset + chunk
    end
  end
end
local reply = {'', ''}
if more then reply = {out[#out], out[#out - 1]} end
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
