-- renew_session.lua: renews a REST heartbeat session's lease.
-- ARGV[5] user   ARGV[6] session id   ARGV[7] online ttl ms
-- Returns {'ok', new expiry ms} | {'no_session'}
local user, sid, ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])
local old = load(user)
if not old or not old.sessions[sid] then return {'no_session'} end
local node, device, lease, opened = parse_session(old.sessions[sid])
if not lease then return {'no_session'} end
local r = copy(old)
local until_ms = NOW + ttl
r.sessions[sid] = session_value(node, device, until_ms, opened)
commit(user, old, r)
return {'ok', int(until_ms)}
