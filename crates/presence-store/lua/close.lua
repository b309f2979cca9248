-- close.lua: a session closes cleanly; the last one starts the offline grace (or goes
-- offline at once when the grace is 0). Closing an unknown session changes nothing.
-- ARGV[5] user   ARGV[6] session id   ARGV[7] offline grace ms
-- Returns {'ok', feed_id, event, record} | {'not_found'}
local user, sid, grace = ARGV[5], ARGV[6], tonumber(ARGV[7])
local old = load(user)
if not old then return {'not_found'} end
local r = copy(old)
if remove_session(r, sid) then
  if r.n > 0 then
    recompute_devices(r)
  elseif grace <= 0 then
    go_offline(r, NOW)
  else
    r.gr = int(NOW + grace)
    r.last_seen = secs(NOW)
  end
end
return answer(user, old, r)
