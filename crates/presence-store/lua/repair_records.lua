-- repair_records.lua: one step of the repair's walk over the records (SCAN over
-- `presence:*`, COUNT batch). For each user, in this one atomic call, at this moment:
--   - sessions of a node that is neither live nor waiting to be reaped (not in `nodes`) are
--     orphans nobody will close: they end as a reap would end them (commit: one event when
--     the view changes), and the dead node's info key the end touched is dropped;
--   - every entry index_entries() says the record implies is looked up: a missing one is
--     added, a wrong score set right;
--   - with ARGV[8] = '1' (the periodic pass, which does not walk every set), the sets the
--     record names (index_sets_of) are checked for a member the record does not imply.
-- Nothing is changed with ARGV[7] = '1' (check only): the same counts are returned.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] SCAN cursor ('0' to start)   ARGV[6] batch (SCAN COUNT)   ARGV[7] '1': check only
-- ARGV[8] '1': also look for stale members of the user's sets
-- Returns {next cursor, records checked, online members missing, other index members
--   missing, wrong scores, stale members, orphan sessions, {node, user, node, user, ...},
--   {scope, scope, ...}, {node, sessions, ...}}: the nodes each user's record says index it
--   (sessions and `ni`), for the node lists' check (repair_node.lua); the scopes of each away
--   user, and the sessions each node holds, to compare with the stored counts.
local check, own_sets = ARGV[7] == '1', ARGV[8] == '1'
local scan = redis.call('SCAN', ARGV[5], 'MATCH', glob_literal(P) .. 'presence:*', 'COUNT',
  tonumber(ARGV[6]))
local skip = #P + #'presence:'
local checked, online_missing, index_missing, wrong, stale, orphans = 0, 0, 0, 0, 0, 0
local pairs_out, away_scopes, node_sessions = {}, {}, {}

local function live(node)
  return redis.call('ZSCORE', key('nodes'), node) ~= false
end

local function end_orphans(user, old)
  local gone, dead = {}, {}
  for id, v in pairs(old.sessions) do
    local node = parse_session(v)
    if node ~= '' and (dead[node] or not live(node)) then
      gone[#gone + 1] = id
      dead[node] = true
    end
  end
  if #gone == 0 or check then return old, #gone end
  local r = copy(old)
  r.ni = old.ni
  for _, id in ipairs(gone) do remove_session(r, id) end
  for node in pairs(dead) do drop_node(r, node) end
  after_sessions_ended(r)
  commit(user, old, r)
  -- commit() counted the ended sessions off the dead node's `sc`, which recreated its info
  -- key; a node gone from `nodes` has no info.
  for node in pairs(dead) do redis.call('DEL', key('node:' .. node .. ':info')) end
  return load(user), #gone
end

for _, k in ipairs(scan[2]) do
  if redis.call('TYPE', k)['ok'] == 'hash' then
    local user = string.sub(k, skip + 1)
    local rec = load(user)
    if rec then
      checked = checked + 1
      local n
      rec, n = end_orphans(user, rec)
      orphans = orphans + n
      local implied = index_entries(user, rec)
      for set, members in pairs(implied) do
        for m, score in pairs(members) do
          local s = redis.call('ZSCORE', key(set), m)
          if not s then
            if string.sub(set, 1, 7) == 'online:' then
              online_missing = online_missing + 1
            else
              index_missing = index_missing + 1
            end
            if not check then index_add(set, m, score) end
          elseif not index_score_matches(set, m, s, score) then
            wrong = wrong + 1
            if not check then index_add(set, m, score) end
          end
        end
      end
      if own_sets then
        for _, set in ipairs(index_sets_of(rec)) do
          if not (implied[set] and implied[set][user] ~= nil)
              and redis.call('ZSCORE', key(set), user) then
            stale = stale + 1
            if not check then redis.call('ZREM', key(set), user) end
          end
        end
      end
      if rec.status == 'away' then
        for scope in pairs(scope_sets(rec)) do away_scopes[#away_scopes + 1] = scope end
      end
      for node, c in pairs(node_counts(rec)) do
        node_sessions[node] = (node_sessions[node] or 0) + c
      end
      for node in string.gmatch(rec.ni or '', '[^,]+') do
        pairs_out[#pairs_out + 1] = node
        pairs_out[#pairs_out + 1] = user
      end
    end
  end
end
local per_node = {}
for node, c in pairs(node_sessions) do
  per_node[#per_node + 1] = node
  per_node[#per_node + 1] = tostring(c)
end
return {scan[1], checked, online_missing, index_missing, wrong, stale, orphans, pairs_out,
  away_scopes, per_node}
