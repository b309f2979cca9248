-- list.lua: one page of a scope in one round trip: the sorted-set range and every record on
-- the page. Order: last activity descending, then user id descending (ZREVRANGE order). An
-- entry whose record is gone, offline or in another zone or org is never returned; it is
-- removed once the page is read (not while paging the set by offset: each removal would shift
-- the next chunk and skip a live user), and the counts are taken after the removal.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] scope ("global", "zone:10", "org:100")   ARGV[6] limit
-- ARGV[7] cursor activity ms ('' for the first page)   ARGV[8] cursor user
-- ARGV[9] status filter ('' | 'online' | 'away')   ARGV[10] most entries to examine (0: no limit)
-- Returns {total, away, next_cursor_ms or '', next_cursor_user or '', user1, record1, ...}
local scope, limit = ARGV[5], tonumber(ARGV[6])
local cur_ms, cur_user, want, budget = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
local set = key('online:' .. scope)
local kind, id = string.match(scope, '^(%a+):(.*)$')
local max = '+inf'
if cur_ms ~= '' then max = secs(tonumber(cur_ms)) end
local out, found, examined, stale = {}, 0, 0, {}
local last_ms, last_user, more = '', '', false
local offset, chunk = 0, math.max(limit + 1, 64)
local done = false
while not done do
  local page = redis.call('ZREVRANGEBYSCORE', set, max, '-inf', 'WITHSCORES', 'LIMIT', offset, chunk)
  if #page == 0 then break end
  offset = offset + #page / 2
  for i = 1, #page, 2 do
    local user, score_ms = page[i], ms_of(page[i + 1])
    -- Ties with the cursor's activity continue below the cursor's user id.
    local after_cursor = cur_ms == '' or score_ms < tonumber(cur_ms) or (score_ms == tonumber(cur_ms) and bytes_less(user, cur_user))
    if after_cursor then
      if found == limit or (budget > 0 and examined == budget) then more = true; done = true; break end
      examined = examined + 1
      last_ms, last_user = int(score_ms), user
      local rec = redis.call('HGETALL', ukey(user))
      local status, zone_id, org_id
      for j = 1, #rec, 2 do
        local f = rec[j]
        if f == 'status' then status = rec[j + 1]
        elseif f == 'zone_id' then zone_id = rec[j + 1]
        elseif f == 'org_id' then org_id = rec[j + 1] end
      end
      local elsewhere = (kind == 'zone' and zone_id ~= id) or (kind == 'org' and org_id ~= id)
      if status == nil or status == 'offline' or elsewhere then
        stale[#stale + 1] = user
      elseif want == '' or want == status then
        out[#out + 1] = user
        out[#out + 1] = rec
        found = found + 1
      end
    end
  end
  if #page / 2 < chunk then break end
end
if not more then last_ms, last_user = '', '' end
for i = 1, #stale, 1000 do
  redis.call('ZREM', set, unpack(stale, i, math.min(i + 999, #stale)))
end
local total = redis.call('ZCARD', set)
local away = tonumber(redis.call('HGET', key('away_count'), scope) or '0')
away = math.max(0, math.min(away, total))
local reply = {total, away, last_ms, last_user}
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
