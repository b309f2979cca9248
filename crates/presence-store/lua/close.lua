-- close.lua: a session closes cleanly; the last one starts the offline grace (or goes
-- offline at once when the grace is 0). Closing an unknown session changes nothing.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] user   ARGV[6] session id   ARGV[7] offline grace ms
-- ARGV[8] '1': close only a REST heartbeat (leased) session: `DELETE /heartbeat` must not end
-- a WebSocket; a session that is not open or not leased answers {'no_session'}
-- Returns {'ok', feed_id, event} | {'ok', '', {}, record} | {'not_found'} | {'no_session'}
local user, sid, grace, leased_only = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local old = load(user)
if leased_only then
  local v = old and old.sessions[sid]
  if not v or not select(3, parse_session(v)) then return {'no_session'} end
end
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
