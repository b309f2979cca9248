-- close.lua: a session closes cleanly; the last one starts the offline grace (or goes
-- offline at once when the grace is 0).
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] user   ARGV[6] session id   ARGV[7] offline grace ms
-- ARGV[8] mode: '' any session (a socket's own close: closing an unknown session changes
--   nothing); 'lease' only a REST heartbeat (leased) session (`DELETE /heartbeat` must not
--   end a WebSocket); 'end' any session, for the service (`DELETE /sessions`). 'lease' and
--   'end' answer {'no_session'} for a session that is not open (or, for 'lease', not leased)
--   and change nothing.
-- ARGV[9] ('end') how long a WebSocket's ended session stays marked, ms: the key
--   `ended:{user}|{session}` holds until when (ms, by the callers' clocks; open.lua refuses
--   the session until then) and expires with it, so marks never pile up.
-- Returns {'ok', feed_id, event} | {'ok', '', {}, record} | {'not_found'} | {'no_session'}
local user, sid, grace, mode = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local old = load(user)
local v = old and old.sessions[sid]
if mode == 'lease' and (not v or not select(3, parse_session(v))) then return {'no_session'} end
if mode == 'end' and not v then return {'no_session'} end
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
if mode == 'end' and parse_session(v) ~= '' then
  local mark = tonumber(ARGV[9])
  redis.call('SET', key('ended:' .. user .. '|' .. sid), int(NOW + mark), 'PX', int(mark))
end
return answer(user, old, r)
