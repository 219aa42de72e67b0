r"""The Lua scripts of the Redis store: each write, and each read that must see one state.

Every script starts with :data:`PRELUDE`, its shared functions. Keys a script
computes from stored values (a checkpoint's hash from a trace's member, a trace's
keys from its id) follow the layout in :mod:`flowpoint.stores.redis`:

- a member of a trace's sorted set is ``"<step, 20 digits>:<checkpoint id, 32 hex>"``,
  and the checkpoint's hash is ``<prefix>cp:<id hex>``: the member from its 22nd byte on;
- a checkpoint's writes are the hash ``<prefix>w:<id hex>``, listed in its trace's
  set ``<prefix>writes:<quoted trace id>``.

Each script documents its ``KEYS``, ``ARGV`` and reply above it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DELETE",
    "DELETE_TRACE",
    "HISTORY",
    "IDS_WITH_PREFIX",
    "LATEST",
    "PRELUDE",
    "PRUNE",
    "REWRITE",
    "SAVE",
    "SAVE_WRITES",
    "TRACES",
]

PRELUDE: Final = r"""
local function cp_key(prefix, member)
  return prefix .. 'cp:' .. string.sub(member, 22)
end
-- The same quoting as trace_key_suffix() in Python: every byte but A-Za-z0-9_.~- as %XX.
local function quoted(trace)
  return (string.gsub(trace, '[^A-Za-z0-9_%.~%-]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end
local function trace_key(prefix, trace)
  return prefix .. 'trace:' .. quoted(trace)
end
local function writes_set_key(prefix, trace)
  return prefix .. 'writes:' .. quoted(trace)
end
-- The member of the highest step whose checkpoint is still there, or nil. With
-- tidy, members whose checkpoint expired are dropped on the way; a read-only store
-- (tidy false) steps over them.
local function top_live(zset, prefix, tidy)
  local skipped = 0
  while true do
    local top = redis.call('ZRANGE', zset, '+', '-', 'BYLEX', 'REV', 'LIMIT', skipped, 1)
    if #top == 0 then return nil end
    if redis.call('EXISTS', cp_key(prefix, top[1])) == 1 then return top[1] end
    if tidy then
      redis.call('ZREM', zset, top[1])
    else
      skipped = skipped + 1
    end
  end
end
-- A trace whose sorted set is gone (Redis drops an empty one) leaves the index.
local function forget_if_empty(zset, index, trace, tidy)
  if tidy and redis.call('EXISTS', zset) == 0 then
    redis.call('ZREM', index, trace)
  end
end
-- Make a key live at least ttl ms more (0: for ever). A key that exists without a
-- TTL stays so unless it is new (made by this script).
local function keep_alive(key, ttl, new)
  if ttl <= 0 then
    redis.call('PERSIST', key)
    return
  end
  local left = redis.call('PTTL', key)
  if new or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end
-- Keep the chain of bases below a delta (and their writes) alive at least as long
-- as the delta: ttl ms more, or for ever (0). A delta names its base in its metadata
-- under "flowpoint.delta_of". A base already alive that long ends the walk: every
-- save keeps each base at least as long-lived as the deltas on it, so its own bases
-- are too. The walk also ends at a base that is gone, or whose metadata is damaged.
local function keep_chain_alive(prefix, base_hex, ttl)
  local seen = {}
  while base_hex and string.match(base_hex, '^[0-9a-f]+$') and #base_hex == 32
      and not seen[base_hex] do
    seen[base_hex] = true
    local key = prefix .. 'cp:' .. base_hex
    local left = redis.call('PTTL', key)
    if left == -2 or left == -1 or (ttl > 0 and left >= ttl) then return end
    keep_alive(key, ttl, false)
    keep_alive(prefix .. 'w:' .. base_hex, ttl, false)
    local ok, metadata = pcall(cjson.decode, redis.call('HGET', key, 'metadata') or '')
    if not ok or type(metadata) ~= 'table' then return end
    local base = metadata['flowpoint.delta_of']
    if type(base) ~= 'string' then return end
    base_hex = string.gsub(base, '-', '')
  end
end
-- Delete the writes saved against a checkpoint, wherever its trace lists them.
local function drop_writes(prefix, id_hex)
  local w = prefix .. 'w:' .. id_hex
  local trace = redis.call('HGET', w, 'trace')
  redis.call('DEL', w)
  if trace then
    redis.call('SREM', writes_set_key(prefix, trace), id_hex)
  end
end
"""

# KEYS: checkpoint hash, trace sorted set, traces index, the checkpoint's writes hash,
#       the trace's writes set.
# ARGV: lowest and highest member of the step ("[<step>:", "(<step>;"), the member,
#       trace id, TTL in ms (0: none), save token, the id (hex) of the base the
#       checkpoint is a delta on ("": whole), the key prefix, then the hash's
#       field/value pairs.
# Returns 0 (saved), 1 (the step is taken), 2 (the checkpoint id is taken).
SAVE: Final = r"""
local cp, zset, index = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', cp) == 1 then
  -- The driver may resend a save whose reply was lost: that is not a conflict.
  if redis.call('HGET', cp, 'save_token') == ARGV[6] then return 0 end
  return 2
end
if #redis.call('ZRANGE', zset, ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, 1) > 0 then
  return 1
end
local new_trace = redis.call('EXISTS', zset) == 0
redis.call('HSET', cp, 'save_token', ARGV[6], unpack(ARGV, 9))
redis.call('ZADD', zset, 0, ARGV[3])
redis.call('ZADD', index, 0, ARGV[4])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', cp, ttl)
end
-- Its writes, if any came first, live as long as it does.
keep_alive(KEYS[4], ttl, false)
-- A checkpoint that never expires needs indexes that never expire; otherwise only
-- ever lengthen the trace's life.
keep_alive(zset, ttl, new_trace)
keep_alive(KEYS[5], ttl, false)
-- A base never expires before a delta on it.
keep_chain_alive(ARGV[8], ARGV[7], ttl)
return 0
"""

# KEYS: the checkpoint's writes hash, its trace's writes set, the checkpoint's hash.
# ARGV: trace id, checkpoint id hex, "1" to overwrite (else "0"), TTL in ms (0: none),
#       then "<index>:<task id>"/data pairs.
# Returns how many writes were stored or replaced, or -1 (and changes nothing) when
# the checkpoint's writes are stored under another trace.
SAVE_WRITES: Final = r"""
local w, set = KEYS[1], KEYS[2]
local stored = redis.call('HGET', w, 'trace')
if stored and stored ~= ARGV[1] then return -1 end
local saved = 0
for i = 5, #ARGV, 2 do
  if ARGV[3] == '1' then
    redis.call('HSET', w, ARGV[i], ARGV[i + 1])
    saved = saved + 1
  else
    saved = saved + redis.call('HSETNX', w, ARGV[i], ARGV[i + 1])
  end
end
if not stored then
  redis.call('HSET', w, 'trace', ARGV[1])
end
local new_set = redis.call('EXISTS', set) == 0
redis.call('SADD', set, ARGV[2])
-- The writes live as long as their checkpoint, and at least ttl ms more (its delta
-- chain may keep it alive longer); with no ttl, for ever.
local ttl = tonumber(ARGV[4])
local left = redis.call('PTTL', KEYS[3])
if ttl > 0 and left == -1 then ttl = 0 end
if ttl > 0 and left > ttl then ttl = left end
keep_alive(w, ttl, not stored)
keep_alive(set, ttl, new_set)
return saved
"""

# Reads take a "tidy" argument: "1" lets them drop index entries of checkpoints that
# expired, "0" (a read-only store) makes them change nothing.

# KEYS: trace sorted set, traces index. ARGV: prefix, trace id, tidy, fields to read.
# Returns {member, values} of the highest live step, or nil.
LATEST: Final = r"""
local tidy = ARGV[3] == '1'
local top = top_live(KEYS[1], ARGV[1], tidy)
if not top then
  forget_if_empty(KEYS[1], KEYS[2], ARGV[2], tidy)
  return false
end
return {top, redis.call('HMGET', cp_key(ARGV[1], top), unpack(ARGV, 4))}
"""

# KEYS: trace sorted set, traces index.
# ARGV: prefix, trace id, upper bound ("+" or "(<step>"), limit, tidy, fields to read.
# Returns up to limit {member, values, size of data}, highest step first.
HISTORY: Final = r"""
local found, bound, limit, tidy = {}, ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
while #found < limit do
  local page = redis.call(
    'ZRANGE', KEYS[1], bound, '-', 'BYLEX', 'REV', 'LIMIT', 0, limit - #found)
  if #page == 0 then break end
  for _, member in ipairs(page) do
    local key = cp_key(ARGV[1], member)
    if redis.call('EXISTS', key) == 1 then
      found[#found + 1] = {
        member, redis.call('HMGET', key, unpack(ARGV, 6)), redis.call('HSTRLEN', key, 'data')}
    elseif tidy then
      redis.call('ZREM', KEYS[1], member)  -- the checkpoint expired
    end
  end
  bound = '(' .. page[#page]
end
forget_if_empty(KEYS[1], KEYS[2], ARGV[2], tidy)
return found
"""

# KEYS: traces index. ARGV: prefix, lower bound ("-" or "(<trace>"), page size, tidy.
# Returns {entries read, trace ids with a live checkpoint, last entry read}.
TRACES: Final = r"""
local page = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local tidy = ARGV[4] == '1'
local live = {}
for _, trace in ipairs(page) do
  if top_live(trace_key(ARGV[1], trace), ARGV[1], tidy) then
    live[#live + 1] = trace
  elseif tidy then
    redis.call('ZREM', KEYS[1], trace)  -- every checkpoint of the trace expired
  end
end
return {#page, live, page[#page] or false}
"""

# KEYS: traces index. ARGV: prefix, lower bound ("-" or "(<trace>"), page size,
#       the start of the ids wanted (lowercase hex).
# Returns {entries read, ids (hex) of live checkpoints that start so, last entry read}.
# Reads the traces' sorted sets only (their members hold the ids), never a hash.
IDS_WITH_PREFIX: Final = r"""
local page = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local wanted = ARGV[4]
local found = {}
for _, trace in ipairs(page) do
  for _, member in ipairs(redis.call('ZRANGE', trace_key(ARGV[1], trace), 0, -1)) do
    if string.sub(member, 22, 21 + #wanted) == wanted
        and redis.call('EXISTS', cp_key(ARGV[1], member)) == 1 then
      found[#found + 1] = string.sub(member, 22)
    end
  end
end
return {#page, found, page[#page] or false}
"""

# KEYS: checkpoint hash, traces index. ARGV: prefix, checkpoint id hex.
# Returns 1 if the checkpoint was there, else 0. Its writes go either way.
DELETE: Final = r"""
drop_writes(ARGV[1], ARGV[2])
local fields = redis.call('HMGET', KEYS[1], 'trace', 'step')
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local trace, step = fields[1], fields[2]
-- A damaged trace or step field leaves its index entry behind; readers skip it.
if trace and step and string.match(step, '^[0-9]+$') and #step <= 20 then
  local zset = trace_key(ARGV[1], trace)
  redis.call('ZREM', zset, string.rep('0', 20 - #step) .. step .. ':' .. ARGV[2])
  forget_if_empty(zset, KEYS[2], trace, true)
end
return 1
"""

# KEYS: trace sorted set, traces index, trace's writes set. ARGV: prefix, trace id.
# Returns how many checkpoints were deleted.
DELETE_TRACE: Final = r"""
local function delete_all(keys)
  local deleted = 0
  for first = 1, #keys, 500 do
    deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 499, #keys)))
  end
  return deleted
end
local cps, ws = {}, {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  cps[#cps + 1] = cp_key(ARGV[1], member)
end
for _, id_hex in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  ws[#ws + 1] = ARGV[1] .. 'w:' .. id_hex
end
local deleted = delete_all(cps)
delete_all(ws)
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return deleted
"""

# KEYS: trace sorted set, traces index.
# ARGV: prefix, trace id, how many newest to keep (-1: no such rule), cutoff
#       ("": no such rule; else created_at as the hash stores it).
# Returns how many checkpoints were deleted.
PRUNE: Final = r"""
local keep, cutoff = tonumber(ARGV[3]), ARGV[4]
local pattern = '^' .. string.rep('[0-9]', 4) .. '%-[0-9][0-9]%-[0-9][0-9]T[0-9][0-9]:'
  .. '[0-9][0-9]:[0-9][0-9]%.' .. string.rep('[0-9]', 6) .. 'Z$'
-- Byte order, not strcoll(): the server's locale must not change what is old.
local function older(created)
  if not created or not string.match(created, pattern) then return false end
  for i = 1, #created do
    local a, b = string.byte(created, i), string.byte(cutoff, i)
    if a ~= b then return a < b end
  end
  return false
end
local kept, deleted = 0, 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], '+', '-', 'BYLEX', 'REV')) do
  local key = cp_key(ARGV[1], member)
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], member)  -- expired: neither kept nor counted
  elseif keep >= 0 and kept < keep then
    kept = kept + 1
  elseif cutoff == '' or older(redis.call('HGET', key, 'created_at')) then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], member)
    drop_writes(ARGV[1], string.sub(member, 22))
    deleted = deleted + 1
  end
end
forget_if_empty(KEYS[1], KEYS[2], ARGV[2], true)
return deleted
"""

# KEYS: checkpoint hash.
# ARGV: n header field names, the n values expected in them, then the new data.
# Returns 0 (rewritten), 1 (no such checkpoint), or {2, the stored values} when a
# stored value differs from the expected one (a missing field is false).
REWRITE: Final = r"""
local n = (#ARGV - 1) / 2
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local stored = redis.call('HMGET', KEYS[1], unpack(ARGV, 1, n))
for i = 1, n do
  if stored[i] ~= ARGV[n + i] then return {2, stored} end
end
redis.call('HSET', KEYS[1], 'data', ARGV[#ARGV])
return 0
"""
