-- common.lua: shared by every presenced script; prepended to each one at build time.
--
-- Every script takes the same first four ARGV:
--   ARGV[1] key prefix ("" keeps the seed's key names)
--   ARGV[2] now, unix milliseconds (from the calling node's Clock)
--   ARGV[3] now as RFC 3339 (for the seed's `updated_at` field)
--   ARGV[4] feed max length (XADD MAXLEN ~)
-- and their own arguments from ARGV[5] on. Keys are built from the prefix inside the script:
-- presenced runs on one Redis (or a primary with replicas), not on Redis Cluster.
--
-- The rules below mirror presence-core's record.rs; the conformance suite and the property
-- test hold both to one reference model.

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local NOW_TXT = ARGV[3]
local FEED_MAX = ARGV[4]

local function key(name) return P .. name end
local function ukey(user) return P .. 'presence:' .. user end

-- Times: ms inside the scripts; unix seconds with three decimals in the seed's fields and in
-- sorted-set scores, so `redis-cli` shows what the seed showed.
local function secs(ms) return string.format('%.3f', ms / 1000) end
local function ms_of(s) return math.floor(tonumber(s) * 1000 + 0.5) end
local function int(n) return string.format('%.0f', n) end

-- Byte order, as sorted sets order ties (Lua's `<` on strings follows the locale).
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- Scalar fields of a record (absent = nil). Sessions are fields `s:{id}` = "node|device|opened"
-- for a WebSocket, "|device|lease|opened" for a REST heartbeat lease (lease in ms, opened in
-- unix seconds, rounded down); a value written before sessions kept their open time ends
-- before it ("node|device", "|device|lease"). Every byte counts: a typical online user's hash
-- is a listpack of 155 bytes in jemalloc's 160-byte class, and the next class is 192.
-- `ni` lists the nodes whose index list holds an entry for this user, beyond the nodes of its
-- sessions, which always do (see with_session_nodes and index_nodes).
-- The custom status, only for users who have one: `ck` kind, `ct` text, `ce` emoji, `cx`
-- expires_at (ms); an absent field is none (the Rust side never stores an empty string).
-- Hiding (record.rs): `inv` = '1' while the user is invisible; privacy `pp` = 'org' | 'nobody'
-- (absent: everyone) and `pl` = 'approximate' | 'hidden' (absent: exact); while the user hides
-- from onlookers outside the org, `iv` = 'since|version|updated' (ms: since when, and the
-- version and time of the last change they saw, see commit()), and `io` the same for the
-- org's members.
-- `os`: when the presence going on began (ms), kept only once its first session has closed;
-- until then it is that session's open time (see presence_start). `geo` = 'lat,lon': the
-- location shared for nearby, while present.
local FIELDS = {'status', 'ar', 'ma', 'last_activity', 'last_seen', 'zone_id', 'org_id', 'dev',
  'metadata', 'v', 'updated_at', 'gr', 'ni', 'ck', 'ct', 'ce', 'cx', 'inv', 'pp', 'pl', 'iv', 'io',
  'os', 'geo'}
-- Fields the user's own view shows, minus last_activity and the last-seen setting: a change
-- to any is one event.
local VISIBLE = {'status', 'ar', 'zone_id', 'org_id', 'dev', 'metadata', 'ck', 'ct', 'ce', 'cx',
  'inv', 'pp'}
-- What onlookers see of them besides status, away reason, last seen and devices.
local SEEN = {'zone_id', 'org_id', 'metadata', 'ck', 'ct', 'ce', 'cx'}
local DEVICE_ORDER = {'web', 'desktop', 'mobile', 'other'}

-- node, device, lease ms (REST only), opened (unix seconds; nil in an older value).
local function parse_session(v)
  local node, device, a, b = string.match(v, '^([^|]*)|([^|]*)|?([^|]*)|?([^|]*)$')
  if node == '' then return node, device, tonumber(a), tonumber(b) end
  return node, device, nil, tonumber(a)
end

local function session_value(node, device, lease, opened)
  local v = node .. '|' .. device
  if lease then v = v .. '|' .. int(lease) end
  if opened then v = v .. '|' .. int(opened) end
  return v
end

-- Devices in view order ('web,mobile'), from the sessions; nil when there is none.
local function devices_of(sessions)
  local have = {}
  for _, v in pairs(sessions) do
    local _, device = parse_session(v)
    have[device] = true
  end
  local list = {}
  for _, d in ipairs(DEVICE_ORDER) do
    if have[d] then list[#list + 1] = d end
  end
  if #list == 0 then return nil end
  return table.concat(list, ',')
end

-- `ni` names the nodes whose index list holds an entry for the user (see index_nodes). The
-- nodes of the user's sessions always do, so the hash stores only the others (entries a close
-- left behind, until the node's sweep drops them): a typical online user's hash has no `ni`.
-- In a loaded record `ni` is the whole set again: what is stored plus the sessions' nodes.
local function with_session_nodes(ni, sessions)
  local have, list = {}, {}
  for n in string.gmatch(ni or '', '[^,]+') do
    if not have[n] then have[n] = true; list[#list + 1] = n end
  end
  for _, v in pairs(sessions) do
    local node = parse_session(v)
    if node ~= '' and not have[node] then have[node] = true; list[#list + 1] = node end
  end
  if #list == 0 then return nil end
  return table.concat(list, ',')
end

local function without_session_nodes(ni, sessions)
  local mine, list = {}, {}
  for _, v in pairs(sessions) do mine[parse_session(v)] = true end
  for n in string.gmatch(ni or '', '[^,]+') do
    if not mine[n] then list[#list + 1] = n end
  end
  if #list == 0 then return nil end
  return table.concat(list, ',')
end

-- `dev` is stored only while the user has no session (the grace keeps the devices shown);
-- with sessions it is derived from them. `dev_stored` and `ni_stored` remember what the hash
-- holds.
local function load(user)
  local flat = redis.call('HGETALL', ukey(user))
  if #flat == 0 then return nil end
  local r = {sessions = {}, n = 0}
  for i = 1, #flat, 2 do
    local f = flat[i]
    if string.sub(f, 1, 2) == 's:' then
      r.sessions[string.sub(f, 3)] = flat[i + 1]
      r.n = r.n + 1
    else
      r[f] = flat[i + 1]
    end
  end
  r.dev_stored = r.dev
  if r.n > 0 then r.dev = devices_of(r.sessions) end
  r.ni_stored = r.ni
  r.ni = with_session_nodes(r.ni, r.sessions)
  return r
end

local function new_record()
  return {sessions = {}, n = 0, status = 'offline', last_activity = secs(NOW), v = '0',
    updated_at = NOW_TXT}
end

local function copy(r)
  local c = {sessions = {}, n = r.n}
  for _, f in ipairs(FIELDS) do c[f] = r[f] end
  for id, v in pairs(r.sessions) do c.sessions[id] = v end
  return c
end

-- The state machine (record.rs) ----------------------------------------------------------

local function present_status(r, auto_away)
  if r.ma == '1' then r.status = 'away'; r.ar = 'manual'
  elseif auto_away then r.status = 'away'; r.ar = 'auto'
  else r.status = 'online'; r.ar = nil end
end

local function recompute_devices(r)
  r.dev = devices_of(r.sessions)
end

local function touch(r, at)
  if at > ms_of(r.last_activity) then r.last_activity = secs(at) end
end

local function go_offline(r, seen)
  r.status = 'offline'; r.ar = nil; r.dev = nil; r.gr = nil
  r.last_seen = secs(seen)
  r.geo = nil
end

local function remove_session(r, id)
  if r.sessions[id] == nil then return false end
  r.sessions[id] = nil
  r.n = r.n - 1
  return true
end

-- The custom status (record.rs: SetCustomStatus, ClearCustomStatus, expire_custom_status).
-- '' is none for text, emoji and expiry.
local function set_custom(r, kind, text, emoji, expires)
  local function opt(v) if v == '' then return nil end return v end
  r.ck = kind; r.ct = opt(text); r.ce = opt(emoji); r.cx = opt(expires)
end

local function clear_custom(r)
  r.ck = nil; r.ct = nil; r.ce = nil; r.cx = nil
end

-- Sessions ended without grace (lease or node gone): offline at once when none is left.
local function after_sessions_ended(r)
  if r.n == 0 then go_offline(r, NOW) else recompute_devices(r) end
end

-- Writing -------------------------------------------------------------------------------

local function visible_changed(a, b)
  for _, f in ipairs(VISIBLE) do
    if a[f] ~= b[f] then return true end
  end
  -- last_seen shows only while offline
  local sa = a.status == 'offline' and a.last_seen or nil
  local sb = b.status == 'offline' and b.last_seen or nil
  return sa ~= sb
end

-- Hiding (record.rs settle_hidden, Visible::as_seen_with). Onlookers outside the org are kept
-- behind `iv` while the user is invisible or has privacy org or nobody; the org's members
-- behind `io` while invisible or nobody. Each anchor starts when its hiding starts.
-- Milliseconds of the RFC 3339 times the nodes write ('2024-11-26T10:25:00.000Z').
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- As time.rs parse_rfc3339: 'T' (or 't', ' '), 0-9 fraction digits (the first three count),
-- 'Z' or a '+hh:mm' / '-hh:mm' offset; 0 for anything else.
local function ms_of_txt(t)
  local y, mo, d, h, mi, s, rest = string.match(t or '',
    '^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return 0 end
  local frac, zone = string.match(rest, '^%.(%d+)(.*)$')
  if not frac then zone = rest; frac = '0' end
  local ms = tonumber(string.sub(frac .. '00', 1, 3))
  local offset = 0
  if zone ~= 'Z' and zone ~= 'z' then
    local sign, oh, om = string.match(zone, '^([+-])(%d%d):(%d%d)$')
    if not sign then return 0 end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == '-' and -1 or 1)
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(s) * 1000
    - offset * 1000 + ms
end

-- Hiding starts from now, or for a user who was offline before the change (`old`) from
-- their last seen then: onlookers go on seeing what they saw, with the version and time
-- they saw it (record.rs settle_hidden).
local function settle_hidden(old, r)
  local inv = r.inv == '1'
  local others, org = inv or r.pp ~= nil, inv or r.pp == 'nobody'
  if not others then r.iv = nil end
  if not org then r.io = nil end
  if (others and not r.iv) or (org and not r.io) then
    -- A hiding starts (rare): only then is its anchor worked out.
    local since = NOW
    if old.status == 'offline' and old.last_seen then since = ms_of(old.last_seen) end
    local start = int(since) .. '|' .. (r.v or '0') .. '|' .. int(ms_of_txt(r.updated_at))
    if others and not r.iv then r.iv = start end
    if org and not r.io then r.io = start end
  end
end

local function anchor_since(v)
  if v == nil then return nil end
  return string.match(v, '^([^|]*)')
end

-- What onlookers behind `field` (iv or io) see of a record: offline since the anchor, with no
-- devices, when the user hides from them.
local function seen_as(r, field)
  local since = anchor_since(r[field])
  if since == nil then
    local seen = r.status == 'offline' and r.last_seen and int(ms_of(r.last_seen)) or nil
    return {r.status, r.ar, seen, r.dev}
  end
  return {'offline', nil, since, nil}
end

-- Whether onlookers behind `field` see a change (visible_changed being true).
local function seen_change(a, b, field)
  local x, y = seen_as(a, field), seen_as(b, field)
  for i = 1, 4 do
    if x[i] ~= y[i] then return true end
  end
  for _, f in ipairs(SEEN) do
    if a[f] ~= b[f] then return true end
  end
  return false
end

local function save(user, old, r)
  local k = ukey(user)
  local set, del = {}, {}
  for _, f in ipairs(FIELDS) do
    if f ~= 'dev' and f ~= 'ni' and r[f] ~= old[f] then
      if r[f] == nil then del[#del + 1] = f else set[#set + 1] = f; set[#set + 1] = r[f] end
    end
  end
  local dev = r.n == 0 and r.dev or nil
  if dev ~= old.dev_stored then
    if dev == nil then del[#del + 1] = 'dev' else set[#set + 1] = 'dev'; set[#set + 1] = dev end
  end
  local ni = without_session_nodes(r.ni, r.sessions)
  if ni ~= old.ni_stored then
    if ni == nil then del[#del + 1] = 'ni' else set[#set + 1] = 'ni'; set[#set + 1] = ni end
  end
  for id, v in pairs(r.sessions) do
    if old.sessions[id] ~= v then set[#set + 1] = 's:' .. id; set[#set + 1] = v end
  end
  for id in pairs(old.sessions) do
    if r.sessions[id] == nil then del[#del + 1] = 's:' .. id end
  end
  if #set > 0 then redis.call('HSET', k, unpack(set)) end
  if #del > 0 then redis.call('HDEL', k, unpack(del)) end
end

-- Online history (presence-core history.rs) -------------------------------------------------

-- When a present user's presence began (ms): `os` once stored, else the open time of their
-- earliest session (whole seconds, as record.rs keeps it); nil while offline, or for a
-- presence whose sessions were written before they kept their open time.
local function presence_start(r)
  if r == nil or r.status == nil or r.status == 'offline' then return nil end
  if r.os then return tonumber(r.os) end
  local first
  for _, v in pairs(r.sessions) do
    local _, _, _, opened = parse_session(v)
    if opened and (not first or opened < first) then first = opened end
  end
  return first and first * 1000
end

local DAY_MS, MAX_SPAN_DAYS = 86400000, 400

-- Adds the presence [from, to) to `history:{user}` (UTC day number -> ms present), split at
-- midnights, only its last MAX_SPAN_DAYS days; `history:due` keeps each user by their oldest
-- day, for retention (sweep_history.lua).
local function add_history(user, from, to)
  from = math.max(from, to - MAX_SPAN_DAYS * DAY_MS)
  if to <= from then return end
  local k = key('history:' .. user)
  local at = from
  while at < to do
    local day = math.floor(at / DAY_MS)
    local stop = math.min(to, (day + 1) * DAY_MS)
    redis.call('HINCRBY', k, int(day), int(stop - at))
    at = stop
  end
  redis.call('ZADD', key('history:due'), 'LT', int(math.floor(from / DAY_MS)), user)
end

-- Keeps the presence start through a transition, and writes the presence to the history when
-- it ends (the same step as the transition that ends it).
local function track_presence(user, old, r)
  local start = presence_start(old)
  r.os = nil
  if r.status == 'offline' then
    if start then add_history(user, start, ms_of(r.last_seen or secs(NOW))) end
  elseif start and presence_start(r) ~= start then
    r.os = int(start)
  end
end

-- The public scope sets a record belongs to: none while offline or invisible (an invisible
-- user is in `hidden` instead, see reindex()).
local function scope_sets(r)
  if r == nil or r.status == nil or r.status == 'offline' or r.iv then return {} end
  local s = {['global'] = true}
  if r.zone_id then s['zone:' .. r.zone_id] = true end
  if r.org_id then s['org:' .. r.org_id] = true end
  return s
end

-- The nearby sets a record belongs to ('global', 'org:{o}'): a user in the public scope sets
-- (record.rs geo_entry) who shares a location.
local function geo_sets(r)
  local g = {}
  if r == nil or r.geo == nil or not scope_sets(r)['global'] then return g end
  g['global'] = true
  if r.org_id then g['org:' .. r.org_id] = true end
  return g
end

local function lease_members(user, r)
  local m = {}
  for id, v in pairs(r.sessions) do
    local _, _, lease = parse_session(v)
    if lease then m[user .. '|' .. id] = lease end
  end
  return m
end

local function node_set(r)
  local m = {}
  for _, v in pairs(r.sessions) do
    local node = parse_session(v)
    if node ~= '' then m[node] = true end
  end
  return m
end

-- Node index: `node:{id}:users` is a list of the users with a session on that node, for
-- reaping it should it die. A list entry costs a few bytes where a set member costs ~50; the
-- price is that closes leave entries behind. `ni` in the user's hash names the nodes whose
-- list holds an entry for the user, so each (user, node) pair has exactly one entry; the
-- node's sweep rotates its list and drops the entries of users who left (compact_node.lua).
local function has_node(r, node)
  return r.ni ~= nil and string.find(',' .. r.ni .. ',', ',' .. node .. ',', 1, true) ~= nil
end

local function drop_node(r, node)
  if not has_node(r, node) then return end
  local kept = {}
  for n in string.gmatch(r.ni, '[^,]+') do
    if n ~= node then kept[#kept + 1] = n end
  end
  if #kept == 0 then r.ni = nil else r.ni = table.concat(kept, ',') end
end

local function index_nodes(user, r)
  for n in pairs(node_set(r)) do
    if not has_node(r, n) then
      redis.call('RPUSH', key('node:' .. n .. ':users'), user)
      if r.ni then r.ni = r.ni .. ',' .. n else r.ni = n end
    end
  end
end

-- Sessions per node (not leased), counted in `node:{id}:info` field `sc` for
-- node_session_count: every transition that adds or ends a node's session goes through
-- commit() (or delete_record), which applies the difference here. O(sessions of the user).
local function node_counts(r)
  local m = {}
  for _, v in pairs(r.sessions) do
    local node = parse_session(v)
    if node ~= '' then m[node] = (m[node] or 0) + 1 end
  end
  return m
end

local function count_node_sessions(old, r)
  local before, after = node_counts(old), node_counts(r)
  for n, c in pairs(before) do
    if (after[n] or 0) ~= c then
      redis.call('HINCRBY', key('node:' .. n .. ':info'), 'sc', (after[n] or 0) - c)
    end
  end
  for n, c in pairs(after) do
    if not before[n] then redis.call('HINCRBY', key('node:' .. n .. ':info'), 'sc', c) end
  end
end

-- Every sorted-set entry a record implies, as {set name (after the prefix) → {member →
-- score}}: the one place that says which index holds what for a user. reindex() writes the
-- difference between a record's entries before and after a transition; the repair scripts
-- compare them with what the sets hold (repair_records.lua) and remove what no record implies
-- (repair_members.lua). A new index is a line here, plus its set (or pattern) in
-- INDEX_SETS, plus, when it is not a plain ZADD, a case in index_add and index_score_matches.
local function index_entries(user, r)
  local e = {}
  if r == nil then return e end
  local function put(set, member, score)
    local s = e[set]
    if s == nil then s = {}; e[set] = s end
    s[member] = score
  end
  -- The seed's online:* sets, by last activity (s).
  for scope in pairs(scope_sets(r)) do put('online:' .. scope, user, r.last_activity) end
  -- Users hiding from onlookers (iv) who are present, by last activity, so that auto-away
  -- finds them.
  if r.iv and r.status ~= 'offline' and r.status ~= nil then put('hidden', user, r.last_activity) end
  if r.gr then put('grace', user, r.gr) end
  if r.sessions then
    for m, t in pairs(lease_members(user, r)) do put('leases', m, t) end
  end
  if r.status == 'offline' and r.last_seen then put('last_seen', user, r.last_seen) end
  -- Custom statuses with an expiry, by expires_at (ms), for sweep_custom.lua.
  if r.cx then put('expiring:custom', user, r.cx) end
  -- Nearby: the GEO sets of geo_sets(), at the shared location ('lat,lon': see index_add).
  for s in pairs(geo_sets(r)) do put('geo:' .. s, user, r.geo) end
  return e
end

local function is_geo(set) return string.sub(set, 1, 4) == 'geo:' end

-- The sorted sets of index_entries, as SCAN patterns after the prefix (a name without `*`
-- is itself), for the repair's walk over their members; and the user a member stands for.
local INDEX_SETS = {'online:*', 'hidden', 'grace', 'leases', 'last_seen', 'expiring:custom',
  'geo:*'}
local function index_member_user(set, member)
  if set == 'leases' then return string.match(member, '^([^|]*)|') end
  return member
end

-- The sets of index_entries a user's member could sit in, as far as the record names them
-- (a stale zone or org set of a user who moved is found by the walk over the sets instead).
local function index_sets_of(r)
  local sets = {'online:global', 'hidden', 'grace', 'last_seen', 'expiring:custom'}
  if r.zone_id then sets[#sets + 1] = 'online:zone:' .. r.zone_id end
  if r.org_id then sets[#sets + 1] = 'online:org:' .. r.org_id end
  sets[#sets + 1] = 'geo:global'
  if r.org_id then sets[#sets + 1] = 'geo:org:' .. r.org_id end
  return sets
end

-- A GEO set's entry is a location ('lat,lon'), added with GEOADD; the rest are plain scores.
local function index_add(set, member, score)
  if is_geo(set) then
    local lat, lon = string.match(score, '^([^,]+),([^,]+)$')
    redis.call('GEOADD', key(set), lon, lat, member)
  else
    redis.call('ZADD', key(set), score, member)
  end
end

-- Whether what `set` holds for `member` (`stored`: ZSCORE's answer) is the entry
-- index_entries implies. A GEO member's score is a geohash: its position (GEOPOS, the centre
-- of its cell, within 1e-5 degrees of the point) is compared instead.
local function index_score_matches(set, member, stored, score)
  if is_geo(set) then
    local at = redis.call('GEOPOS', key(set), member)[1]
    local lat, lon = string.match(score, '^([^,]+),([^,]+)$')
    return at ~= nil and at ~= false and math.abs(tonumber(at[1]) - tonumber(lon)) < 1e-5
      and math.abs(tonumber(at[2]) - tonumber(lat)) < 1e-5
  end
  return tonumber(stored) == tonumber(score)
end

-- Brings every index in line with the record: the away counts of the scope sets, and every
-- sorted-set entry of index_entries (the seed's online:* sets by last activity, hidden,
-- grace, REST leases, last seen, custom status expiries).
local function reindex(user, old, r)
  local before, after = scope_sets(old), scope_sets(r)
  local was_away, is_away = old.status == 'away', r and r.status == 'away'
  for scope in pairs(before) do
    if not after[scope] and was_away then redis.call('HINCRBY', key('away_count'), scope, -1) end
  end
  for scope in pairs(after) do
    if not before[scope] then
      if is_away then redis.call('HINCRBY', key('away_count'), scope, 1) end
    elseif was_away ~= is_away then
      redis.call('HINCRBY', key('away_count'), scope, is_away and 1 or -1)
    end
  end
  local eb, ea = index_entries(user, old), index_entries(user, r)
  for set, members in pairs(eb) do
    local kept = ea[set] or {}
    for m in pairs(members) do
      if kept[m] == nil then redis.call('ZREM', key(set), m) end
    end
  end
  for set, members in pairs(ea) do
    local was = eb[set] or {}
    for m, score in pairs(members) do
      if was[m] ~= score then index_add(set, m, score) end
    end
  end
end

-- The feed entry of a change: the view after it (minus updated_at, which is ts), the previous
-- status, zone and org, and the time; the custom status last (kind, text, emoji, expiry ms). Every entry has the same fields in the same order ('' =
-- none) and times in integer ms: Redis then keeps the field names once per stream node and the
-- numbers as integers, about half the bytes. presence-store's codec decodes it.
local function event_fields(user, old, r, flags)
  -- Hiding in one field, '' for a user who hides nothing (most events: one byte, not six
  -- fields): 'flags;inv;pp;pl;iv;io'.
  local hiding = ''
  if flags ~= '' or r.inv or r.pp or r.pl or r.iv or r.io then
    hiding = table.concat({flags, r.inv or '', r.pp or '', r.pl or '', r.iv or '', r.io or ''}, ';')
  end
  local function s(v) return v or '' end
  local seen = ''
  if r.status == 'offline' and r.last_seen then seen = int(ms_of(r.last_seen)) end
  return {'u', user, 's', r.status, 'r', s(r.ar), 'la', int(ms_of(r.last_activity)), 'ls', seen,
    'z', s(r.zone_id), 'o', s(r.org_id), 'd', s(r.dev), 'm', s(r.metadata), 'v', r.v,
    'ps', s(old.status), 'pz', s(old.zone_id), 'po', s(old.org_id), 'ts', int(NOW),
    'ck', s(r.ck), 'ct', s(r.ct), 'ce', s(r.ce), 'cx', s(r.cx), 'h', hiding}
end

local function flatten(r)
  local flat = {}
  for _, f in ipairs(FIELDS) do
    if r[f] ~= nil then flat[#flat + 1] = f; flat[#flat + 1] = r[f] end
  end
  for id, v in pairs(r.sessions) do flat[#flat + 1] = 's:' .. id; flat[#flat + 1] = v end
  return flat
end

-- Ends a transition: when the view changed, bumps the version and appends the one event to
-- the feed; then writes the record and its indexes. Returns {feed_id, event_fields} or
-- {'', {}}.
local function commit(user, old, r)
  local id, ev = '', {}
  settle_hidden(old, r)
  if visible_changed(old, r) then
    -- Ending a hiding, or an org change while hiding (who is a member changes): the version
    -- jumps to the next multiple of VERSION_STRIDE (record.rs), so nobody can count the
    -- changes they did not see, and every onlooker starts again from it.
    local v = tonumber(r.v) or 0
    local reclassed = (old.iv or r.iv) and old.org_id ~= r.org_id
    if (old.iv and not r.iv) or (old.io and not r.io) or reclassed then
      r.v = int((math.floor(v / 1024) + 1) * 1024)
    else
      r.v = int(v + 1)
    end
    r.updated_at = NOW_TXT
    -- Flags for the feed, per kind of onlooker (outside the org: b n; the org: B N): hidden
    -- from them before, and nothing they see changed. Onlookers who see the change are shown,
    -- while the hiding goes on, one more than the version they saw; when it starts, this
    -- change's.
    local flags = ''
    for _, k in ipairs({{'iv', 'b', 'n'}, {'io', 'B', 'N'}}) do
      local field = k[1]
      if old[field] then flags = flags .. k[2] end
      if not seen_change(old, r, field) then flags = flags .. k[3]
      elseif r[field] then
        local seen_v = r.v
        if old[field] and not reclassed then
          seen_v = int(tonumber(string.match(r[field], '^[^|]*|([^|]*)')) + 1)
        end
        r[field] = anchor_since(r[field]) .. '|' .. seen_v .. '|' .. int(NOW)
      end
    end
    ev = event_fields(user, old, r, flags)
    id = redis.call('XADD', key('feed'), 'MAXLEN', '~', FEED_MAX, '*', unpack(ev))
  end
  track_presence(user, old, r)
  index_nodes(user, r)
  save(user, old, r)
  reindex(user, old, r)
  count_node_sessions(old, r)
  return {id, ev}
end

-- The usual answer of a transition on one user: {'ok', feed_id, event_fields} when it made an
-- event (the event holds the view), else {'ok', '', {}, record}.
local function answer(user, old, r)
  local c = commit(user, old, r)
  if c[1] ~= '' then return {'ok', c[1], c[2]} end
  return {'ok', '', {}, flatten(r)}
end

-- Deletes a record and every index entry it had, its node lists' entries too: `ni` goes with
-- the record, and an entry left behind would make a second one for the same user and node
-- when the user comes back (compaction keeps both while the user has a session there).
-- O(the lists named): retention deletes offline users, whose lists are the few they left.
local function delete_record(user, r)
  for node in string.gmatch(r.ni or '', '[^,]+') do
    redis.call('LREM', key('node:' .. node .. ':users'), 0, user)
  end
  redis.call('DEL', ukey(user))
  reindex(user, r, nil)
  count_node_sessions(r, {sessions = {}})
end

-- A glob pattern matching `s` literally (for SCAN MATCH on prefixed keys).
local function glob_literal(s)
  return (string.gsub(s, '[%*%?%[%]\\]', '\\%0'))
end
