-- open.lua: sessions open (SPEC §3: first session → online; later ones count as activity;
-- cancels a pending grace). One call opens one session (open_session) or many
-- (reopen_sessions: a node re-asserting its sockets), each exactly as alone, each with its
-- own event; a session the store still has is left alone ({'exists'}), and one the service
-- ended lately (close.lua's 'end', which leaves `ended:{user}|{session}`) may not open again
-- ({'ended'}): its node closes the socket instead.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] sessions per user   ARGV[6] node lease ms (registers a node never seen)
-- ARGV[7] '1': a node re-asserting sessions the store lost: the presence goes on, so an
--   invisible user stays invisible (record.rs reopen)
-- ARGV[8..] eight per session: user, session id, device, node id ('' for a REST lease),
--   zone ('' keeps), org ('' keeps), lease expiry ms ('' for none), '1' to open invisible
-- Returns one reply per session, in order:
--   {'ok', feed_id, event} | {'ok', '', {}, record} | {'ended'} | {'exists'} |
--   {'too_many', limit}
local limit, node_lease, reassert = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'

local function open_one(user, sid, device, node, zone, org, lease, invisible)
  local ended = redis.call('GET', key('ended:' .. user .. '|' .. sid))
  if ended and tonumber(ended) > NOW then return {'ended'} end
  local old = load(user)
  local r = old and copy(old) or new_record()
  -- A new user is written in full: compare against an empty record.
  old = old or {sessions = {}, n = 0}
  if r.sessions[sid] then return {'exists'} end
  if r.n >= limit then return {'too_many', limit} end
  -- A new presence starts visible, or invisible when asked; a reload within the grace keeps
  -- invisible as it is.
  local new_presence = r.status == 'offline'
  if new_presence and not reassert then r.inv = nil end
  if invisible == '1' and new_presence then r.inv = '1' end
  r.sessions[sid] = session_value(node, device, tonumber(lease), math.floor(NOW / 1000))
  r.n = r.n + 1
  r.gr = nil
  r.last_seen = nil
  touch(r, NOW)
  present_status(r, false)
  if zone ~= '' then r.zone_id = zone end
  if org ~= '' then r.org_id = org end
  recompute_devices(r)
  if node ~= '' then
    if redis.call('ZADD', key('nodes'), 'NX', int(NOW + node_lease), node) == 1 then
      redis.call('HSETNX', key('node:' .. node .. ':info'), 'started_at', int(NOW))
    end
  end
  return answer(user, old, r)
end

local replies = {}
for i = 8, #ARGV, 8 do
  replies[#replies + 1] = open_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
end
return replies
