-- open.lua: a session opens (SPEC §3: first session → online; later ones count as activity;
-- cancels a pending grace).
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] user   ARGV[6] session id   ARGV[7] device   ARGV[8] node id ('' for a REST lease)
-- ARGV[9] zone ('' keeps)   ARGV[10] org ('' keeps)   ARGV[11] lease expiry ms ('' for none)
-- ARGV[12] sessions per user   ARGV[13] node lease ms (registers a node never seen)
-- Returns {'ok', feed_id, event, record} | {'exists'} | {'too_many', limit}
local user, sid, device, node = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local zone, org, lease, limit = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local old = load(user)
local r = old and copy(old) or new_record()
-- A new user is written in full: compare against an empty record.
old = old or {sessions = {}, n = 0}
if r.sessions[sid] then return {'exists'} end
if r.n >= limit then return {'too_many', limit} end
r.sessions[sid] = session_value(node, device, tonumber(lease))
r.n = r.n + 1
r.gr = nil
r.last_seen = nil
touch(r, NOW)
present_status(r, false)
if zone ~= '' then r.zone_id = zone end
if org ~= '' then r.org_id = org end
recompute_devices(r)
if node ~= '' then
    if redis.call('ZADD', key('nodes'), 'NX', int(NOW + tonumber(ARGV[13])), node) == 1 then
    redis.call('HSETNX', key('node:' .. node .. ':info'), 'started_at', int(NOW))
  end
end
return answer(user, old, r)
