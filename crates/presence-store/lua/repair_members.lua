-- repair_members.lua: one step of the repair's walk over one index sorted set (ZSCAN, COUNT
-- batch): a member whose record does not imply it (index_entries: the record is gone,
-- offline, elsewhere, hiding or not, the session or expiry gone) is removed, each judged
-- against the record at this moment. Nothing is changed with ARGV[8] = '1' (check only).
-- Scores are not judged here: repair_records.lua does that from the records' side.
-- KEYS: none (built from the prefix, see common.lua)
-- ARGV[5] set (after the prefix)   ARGV[6] ZSCAN cursor ('0' to start)   ARGV[7] batch
-- ARGV[8] '1': check only
-- Returns {next cursor, members checked, stale members}.
local set, check = ARGV[5], ARGV[8] == '1'
local zset = key(set)
local scan = redis.call('ZSCAN', zset, ARGV[6], 'COUNT', tonumber(ARGV[7]))
local checked, stale = 0, 0
for i = 1, #scan[2], 2 do
  local member = scan[2][i]
  checked = checked + 1
  local user = index_member_user(set, member)
  local implied = user and index_entries(user, load(user))[set]
  if not (implied and implied[member] ~= nil) then
    stale = stale + 1
    if not check then redis.call('ZREM', zset, member) end
  end
end
return {scan[1], checked, stale}
