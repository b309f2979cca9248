-- apply.lua: a change the user asked for.
-- ARGV[5] user   ARGV[6] op: away | online | zone | org | metadata | custom | clear_custom | privacy |
--   location
-- ARGV[7] the new zone, org or metadata JSON ('' clears); for custom, the kind; for away and
--   online, invisible: '1' go invisible, '0' visible again, '' unchanged; for privacy, who
--   sees the presence (everyone | org | nobody; '' unchanged); for location, 'lat,lon' ('' stops
--   sharing)
-- ARGV[8] for privacy only: how last seen shows (exact | approximate | hidden; '' unchanged)
-- ARGV[8..10] for custom only: text, emoji, expires_at ms ('' = none)
-- Returns {'ok', feed_id, event, record} | {'not_found'}
local user, op, value = ARGV[5], ARGV[6], ARGV[7]
local old = load(user)
if not old then return {'not_found'} end
local r = copy(old)
if value == '' then value = nil end
if op == 'away' or op == 'online' then
  local present = r.status ~= 'offline'
  if op == 'away' then r.ma = '1' else r.ma = nil end
  if present then
    if op == 'online' then touch(r, NOW) end
    present_status(r, false)
  end
  -- Invisible (record.rs SetStatus); what others see follows in commit().
  if value == '1' and present then r.inv = '1'
  elseif value == '0' then r.inv = nil end
elseif op == 'zone' then r.zone_id = value
elseif op == 'org' then r.org_id = value
elseif op == 'metadata' then r.metadata = value
elseif op == 'custom' then set_custom(r, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
elseif op == 'clear_custom' then clear_custom(r)
elseif op == 'privacy' then
  if ARGV[7] == 'everyone' then r.pp = nil elseif ARGV[7] ~= '' then r.pp = ARGV[7] end
  if ARGV[8] == 'exact' then r.pl = nil elseif ARGV[8] ~= '' then r.pl = ARGV[8] end
elseif op == 'location' then
  -- Kept only while present (record.rs SetLocation): 'lat,lon', or '' to stop sharing.
  if r.status ~= 'offline' then r.geo = value end
else return redis.error_reply('unknown op ' .. op) end
return answer(user, old, r)
