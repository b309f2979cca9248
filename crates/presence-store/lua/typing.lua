-- typing.lua: starts, renews or stops a user's typing in a conversation, and tells every node
-- (PUBLISH on the bus channel) in the same step. Typing is ephemeral: the presence record, its
-- version and the feed are left alone; the record is only read for the user's org.
--
-- Key `typing:{conversation}`: a hash, field = user id, value = "until ms|org id" ("" for no
-- org). Readers skip entries whose until has passed. Each start sets the key's TTL to the
-- entry's lifetime, so the key disappears once its newest entry is over: an abandoned
-- conversation leaves nothing behind, with no sweep.
--
-- ARGV[5] conversation id   ARGV[6] user   ARGV[7] until ms ("" to stop)
-- ARGV[8] most users typing in one conversation   ARGV[9] bus channel (after the prefix)
-- Returns {'ok'} | {'full', limit}
local conv, user, until_txt, max, channel =
  ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local k = key('typing:' .. conv)
local org = redis.call('HGET', ukey(user), 'org_id')
if org == '' then org = false end

local function until_of(v)
  return tonumber(string.match(v, '^(%d+)|')) or 0
end

local message = {kind = 'typing', conversation_id = conv, user_id = user,
  org_id = org or cjson.null}

if until_txt ~= '' then
  local until_ms = tonumber(until_txt)
  if redis.call('HEXISTS', k, user) == 0 and redis.call('HLEN', k) >= max then
    -- Full: make room by dropping entries that are over, then look again.
    local all = redis.call('HGETALL', k)
    for i = 1, #all, 2 do
      if until_of(all[i + 1]) <= NOW then redis.call('HDEL', k, all[i]) end
    end
    if redis.call('HLEN', k) >= max then return {'full', max} end
  end
  redis.call('HSET', k, user, until_txt .. '|' .. (org or ''))
  redis.call('PEXPIRE', k, math.max(until_ms - NOW, 1))
  message['until'] = until_ms
else
  redis.call('HDEL', k, user)
  message['until'] = cjson.null
end
redis.call('PUBLISH', P .. channel, cjson.encode(message))
return {'ok'}
