package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches the keys of one channel only (one hash
// tag, so one cluster slot) and runs atomically on the server, which is
// what makes offsets contiguous and keeps pub/sub order equal to offset
// order. Times come from the Redis clock (TIME), so that nodes with
// skewed clocks agree on expiry.

// luaHelpers is prepended to the scripts that need it.
const luaHelpers = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%d', n)
end

-- field returns a field of a stream entry {id, {f1, v1, f2, v2, ...}}.
local function field(e, name)
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return nil
end

local function entry_offset(e)
  return tonumber(string.match(e[1], '^(%d+)'))
end

-- first_live returns the offset of the oldest entry appended at or after
-- cutoff, or nil if there is none, then a time no later than that
-- entry's, and whether entries before it expired. Entries carry
-- contiguous offsets and non-decreasing times. Usually the oldest entry
-- is live, or only it expired since the last publish; otherwise a binary
-- search finds the boundary in O(log^2 n) without reading every expired
-- entry.
local function first_live(stream, cutoff)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 then return nil end
  local t = tonumber(field(head[1], 't'))
  if t >= cutoff then return entry_offset(head[1]), t, false end
  local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if tonumber(field(tail[1], 't')) < cutoff then return nil end
  local lo, hi = entry_offset(head[1]) + 1, entry_offset(tail[1])
  local probe = lo
  while lo < hi do
    local e = redis.call('XRANGE', stream, fmt(probe), fmt(probe))
    if #e == 0 or tonumber(field(e[1], 't')) < cutoff then lo = probe + 1 else hi = probe end
    probe = math.floor((lo + hi) / 2)
  end
  return lo, cutoff, true
end

-- expire_at makes key live at least ttl ms after clock (Redis's own
-- clock, ms), and at most ttl plus a slack of an eighth of it, up to a
-- second: given the deadline set last (kept in the meta hash), a key
-- whose deadline is within those bounds is left alone. Returns the new
-- deadline, or nil if it did not change.
local function expire_at(key, clock, ttl, deadline)
  local slack = math.min(1000, math.floor(ttl / 8))
  if deadline and clock + ttl <= deadline and deadline <= clock + ttl + slack then return nil end
  deadline = clock + ttl + slack
  redis.call('PEXPIREAT', key, deadline)
  return deadline
end
`

// publishScript appends a batch of publications of one channel, in
// order: it assigns each the next offset, appends it to history, records
// its idempotency key, and publishes the ones appended to pub/sub in one
// message. A publication whose key is recorded (before the batch, or by an
// earlier one in it) is a duplicate: it gets the recorded position and is
// neither appended nor published. History is trimmed by size and age once,
// after the appends.
//
// KEYS[1] meta, KEYS[2] stream, KEYS[3...] idempotency records.
// ARGV[1] history size (0: no history), ARGV[2] history TTL ms, ARGV[3]
// meta TTL ms, ARGV[4] publish command (PUBLISH or SPUBLISH), ARGV[5]
// pub/sub name, ARGV[6] the epoch to start a stream with if the channel
// has none, ARGV[7] the number of publications n; then for each, three
// values: body, index in KEYS of its idempotency record (0: none),
// idempotency window ms.
// Returns {duplicate 0/1, epoch, offset} for each publication, flattened.
var publishScript = goredis.NewScript(luaHelpers + `
local size = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local meta_ttl = math.max(tonumber(ARGV[3]), ttl)
local n = tonumber(ARGV[7])
local res, live = {}, {}
local epoch, top, now, clock, first, last_id, last_body, ht, xs, xm
local made = false
-- xadd appends an entry. The batch's first append says whether the
-- stream was there: a stream made anew (its key expired or was evicted,
-- the meta hash not) has no expiry yet.
local function xadd(...)
  if made then return redis.call('XADD', KEYS[2], ...) end
  made = true
  if redis.call('XADD', KEYS[2], 'NOMKSTREAM', ...) then return end
  xs = nil
  redis.call('XADD', KEYS[2], ...)
end
for i = 1, n do
  local a = 7 + (i - 1) * 3
  local body, ki, window = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local idem = nil
  if ki > 0 then idem = KEYS[ki] end
  local prev = false
  if idem then prev = redis.call('GET', idem) end
  if prev then
    local j = string.find(prev, ':', 1, true)
    res[#res + 1] = 1
    res[#res + 1] = string.sub(prev, 1, j - 1)
    res[#res + 1] = string.sub(prev, j + 1)
  elseif size == 0 then
    if idem then redis.call('SET', idem, ':0', 'PX', window) end
    live[#live + 1] = body
    res[#res + 1] = 0
    res[#res + 1] = ''
    res[#res + 1] = '0'
  else
    if not epoch then
      clock = now_ms()
      now = clock
      local m = redis.call('HMGET', KEYS[1], 'e', 'lt', 's', 'ht', 'xs', 'xm')
      epoch = m[1]
      local last = tonumber(m[2] or '0')
      top = tonumber(m[3] or '0')
      ht, xs, xm = tonumber(m[4]), tonumber(m[5]), tonumber(m[6])
      if not epoch then
        -- New stream: whatever history is left belongs to a lost epoch.
        epoch = ARGV[6]
        last, top = 0, 0
        redis.call('DEL', KEYS[1], KEYS[2])
        redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
        ht, xs, xm = nil, nil, nil
      end
      -- Keep entry times monotonic even if the Redis clock steps back.
      if now < last then now = last end
    end
    -- The entry before is added without trimming: the last one trims.
    if last_id then xadd(last_id .. '-0', 't', fmt(now), 'd', last_body) end
    top = top + 1
    last_id, last_body = fmt(top), body
    if not first then first = last_id end
    if idem then redis.call('SET', idem, epoch .. ':' .. last_id, 'PX', window) end
    live[#live + 1] = body
    res[#res + 1] = 0
    res[#res + 1] = epoch
    res[#res + 1] = last_id
  end
end
if #live == 0 then return res end
local head = '0::'
if size > 0 then
  xadd('MAXLEN', ARGV[1], last_id .. '-0', 't', fmt(now), 'd', last_body)
  local set = {'s', last_id, 'lt', fmt(now), 'ttl', fmt(ttl)}
  local stream_ttl = meta_ttl
  if ttl > 0 then
    -- Field ht: no entry is older than it (entries only ever leave from
    -- the oldest end, and come with times not before it). While it is
    -- within the TTL, nothing expired: no entry is read.
    local cutoff = now - ttl
    if not ht or ht < cutoff then
      local f, t, expired = first_live(KEYS[2], cutoff)
      if expired then redis.call('XTRIM', KEYS[2], 'MINID', fmt(f)) end
      if t then
        set[#set + 1] = 'ht'
        set[#set + 1] = fmt(t)
      end
    end
    stream_ttl = ttl
  end
  xs = expire_at(KEYS[2], clock, stream_ttl, xs)
  if xs then
    set[#set + 1] = 'xs'
    set[#set + 1] = fmt(xs)
  end
  xm = expire_at(KEYS[1], clock, meta_ttl, xm)
  if xm then
    set[#set + 1] = 'xm'
    set[#set + 1] = fmt(xm)
  end
  redis.call('HSET', KEYS[1], unpack(set))
  head = first .. ':' .. epoch .. ':'
end
if #live == 1 then
  redis.call(ARGV[4], ARGV[5], 'p' .. head .. live[1])
else
  redis.call(ARGV[4], ARGV[5], 'b' .. head .. table.concat(live))
end
return res
`)

// historyScript reads the position and the selected publications in one
// step, so that they are consistent.
//
// KEYS[1] meta, KEYS[2] stream.
// ARGV[1] the epoch to start a stream with if the channel has none ("":
// start none and return epoch ""), ARGV[2] meta TTL ms, ARGV[3] "1" if a
// since position is given, ARGV[4] its epoch, ARGV[5] its offset,
// ARGV[6] limit (negative: all), ARGV[7] "1" for newest first.
// Returns {epoch, top, offset1, body1, offset2, body2, ...}.
var historyScript = goredis.NewScript(luaHelpers + `
local m = redis.call('HMGET', KEYS[1], 'e', 's', 'ttl')
local epoch = m[1]
if not epoch then
  if ARGV[1] == '' then return {'', '0'} end
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {epoch, '0'}
end
local top = m[2] or '0'
local res = {epoch, top}
local limit = tonumber(ARGV[6])
if limit == 0 then return res end
local since = nil
if ARGV[3] == '1' then
  if ARGV[4] ~= epoch then return res end
  since = tonumber(ARGV[5])
end
local ttl = tonumber(m[3] or '0')
local first = nil
if ttl > 0 then
  first = first_live(KEYS[2], now_ms() - ttl)
else
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #head > 0 then first = entry_offset(head[1]) end
end
if not first then return res end
local entries
if ARGV[7] == '1' then
  local hi = tonumber(top)
  if since then hi = math.min(hi, since - 1) end
  if hi < first then return res end
  if limit > 0 then
    entries = redis.call('XREVRANGE', KEYS[2], fmt(hi), fmt(first), 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', KEYS[2], fmt(hi), fmt(first))
  end
else
  local lo = first
  if since then lo = math.max(lo, since + 1) end
  if lo > tonumber(top) then return res end
  if limit > 0 then
    entries = redis.call('XRANGE', KEYS[2], fmt(lo), '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', KEYS[2], fmt(lo), '+')
  end
end
for _, e in ipairs(entries) do
  res[#res + 1] = string.match(e[1], '^(%d+)')
  res[#res + 1] = field(e, 'd')
end
return res
`)

// routedPublishScript publishes ARGV[2] on ARGV[1] from the master of
// KEYS[1]'s slot (classic pub/sub in a cluster). KEYS[1] is only used for
// routing: the pub/sub name itself.
var routedPublishScript = goredis.NewScript(`
return redis.call('PUBLISH', ARGV[1], ARGV[2])
`)

// presenceHelpers: KEYS[1] info hash, KEYS[2] user hash, KEYS[3] expiry
// sorted set.
const presenceHelpers = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- sweep drops up to max expired members and returns how many it dropped.
local function sweep(now, max)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, max)
  if #dead > 0 then
    redis.call('ZREM', KEYS[3], unpack(dead))
    redis.call('HDEL', KEYS[1], unpack(dead))
    redis.call('HDEL', KEYS[2], unpack(dead))
  end
  return #dead
end

local function sweep_all(now)
  while sweep(now, 1000) == 1000 do end
end
`

// addPresenceScript: ARGV[1] client, ARGV[2] info, ARGV[3] user, ARGV[4]
// ttl ms. The keys live as long as their longest-lived member.
var addPresenceScript = goredis.NewScript(presenceHelpers + `
local now = now_ms()
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
sweep(now, 100)
for i = 1, 3 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
`)

// removePresenceScript: ARGV[1] client.
var removePresenceScript = goredis.NewScript(`
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`)

// presenceScript returns the live members as {client1, info1, ...}.
var presenceScript = goredis.NewScript(presenceHelpers + `
sweep_all(now_ms())
return redis.call('HGETALL', KEYS[1])
`)

// presenceStatsScript returns {clients, distinct users}.
var presenceStatsScript = goredis.NewScript(presenceHelpers + `
sweep_all(now_ms())
local seen, users = {}, 0
for _, u in ipairs(redis.call('HVALS', KEYS[2])) do
  if not seen[u] then
    seen[u] = true
    users = users + 1
  end
end
return {redis.call('ZCARD', KEYS[3]), users}
`)
