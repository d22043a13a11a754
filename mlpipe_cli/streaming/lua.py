"""The server-side state update: read (or claim) a batch of events, apply, acknowledge.

One ``EVALSHA`` runs the whole batch inside Redis, atomically: no event is ever applied
without its ``XACK``, nor acknowledged without being applied, whatever happens to the client
(kill -9 between calls leaves nothing half done). Idempotency comes from the ack itself: an
entry is applied only when ``XACK`` returns 1, i.e. it was still pending; a redelivered or
twice-claimed entry is acknowledged already and counts as a ``duplicate``.

ARGV: mode (read | own | claim), stream, group, consumer, dead-letter stream, state prefix,
count, claim min-idle (ms), the longest string key value in bytes (``online.keylimits``:
an entry whose key holds a longer value is dead-lettered as malformed, since `serve` could
never read that entity; `push` refuses such events already, this covers other producers). The batch as-of, the horizon lag (longest window + max
lateness), the lateness, the columns and the distinct flags are read from ``<prefix>:meta``,
written once by the bootstrap, so every consumer applies the same rules; until the
bootstrap has finished (``state`` = ready) the script reads nothing and returns -1.

Value encodings shared with Python: in the fold hash (``streaming.state.encode_value``)
``z`` null, ``n<%.17g>`` number, ``s<text>`` string, ``b1``/``b0`` boolean; in raw members
(``streaming.state.pack_values``) the plan's columns only, in a compact tagged binary form.
A state of another ``format`` (older member layout) makes the script return -2 without
touching anything (``mlpipe stream --reset`` rebuilds it).

Cost (measured with INFO cpu, benchmarks/bench_stream.py): the old script stored each
event's whole JSON (~130 bytes: Redis' sets left their compact encoding) and rebuilt every
column's running aggregates whenever an entity's horizon moved, even with nothing to fold;
events are now packed to their plan columns, each entity gets one ZADD and one HSET per
batch, and the aggregates are read only when something is folded. Event times and horizons are
passed to Redis as the original decimal strings (a Lua number would be printed with 14
significant digits and lose microseconds).
"""

APPLY_SCRIPT = r"""
local mode, stream, group, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dead, prefix = ARGV[5], ARGV[6]
local count, min_idle = ARGV[7], ARGV[8]
local max_key = tonumber(ARGV[9])
local meta = redis.call('HMGET', prefix .. ':meta', 'state', 'batch_as_of_us', 'hlag_us',
                        'lateness_us', 'columns', 'distinct', 'format')
if meta[1] ~= 'ready' then return {-1} end
-- a state written in another member layout: never mix layouts in one set
if meta[7] ~= '2' then return {-2} end
local tb, hlag, late = tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4])
local cols = cjson.decode(meta[5])
local distinct = meta[6]
local ncols = #cols

local entries
if mode == 'read' then
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  entries = res and res[1][2] or {}
elseif mode == 'own' then
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '0')
  entries = res and res[1][2] or {}
else
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, '0-0', 'COUNT', count)
  entries = res[2] or {}
end

local function fmt(x) return string.format('%.17g', x) end
local ZEROS = {[0] = ''}
for j = 1, 15 do ZEROS[j] = string.rep('0', j) end

local function enc(v)
  local t = type(v)
  if v == nil or v == cjson.null then return 'z'
  elseif t == 'number' then return 'n' .. fmt(v)
  elseif t == 'boolean' then if v then return 'b1' else return 'b0' end
  else return 's' .. tostring(v) end
end

local function num(v)
  local t = type(v)
  if t == 'number' then return v elseif t == 'boolean' then return v and 1 or 0 end
  return nil
end

-- byte-wise order for strings (Polars' order; Lua's '<' follows the server's locale)
local function less(a, b)
  local ta = type(a)
  if ta == 'number' then return a < b end
  if ta == 'boolean' then return (not a) and b end
  local la, lb = #a, #b
  for j = 1, math.min(la, lb) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x < y end
  end
  return la < lb
end

-- a raw member's values: the plan's columns in order, each tagged (see streaming.state
-- pack_values): 'z' null, 'n' + 8-byte big-endian double, 't' / 'f', 's' + 4-byte length +
-- bytes. Numbers as the doubles Lua holds (exact, -0.0 and non-finite values included);
-- about 30 bytes for 3 columns, so small sets stay in Redis' compact listpack encoding.
-- One struct.pack call per event (measured 0.2 us, against 1.2 us for a call per value):
-- the format depends only on each column's value type, so it is built once per type
-- signature (a base-4 number: exact up to 26 columns; wider plans build it every time).
local formats = {}
local CODES = {[0] = 'c', [1] = 'cd', [2] = 'cI4c0', [3] = 'c'}
local function pack_values(rec)
  local args, n, sig, types = {}, 0, 0, nil
  if ncols > 26 then types = {} end
  for i = 1, ncols do
    local v = rec[cols[i]]
    local t = type(v)
    local code
    if t == 'number' then args[n + 1] = 'n'; args[n + 2] = v; n = n + 2; code = 1
    elseif t == 'string' then
      args[n + 1] = 's'; args[n + 2] = #v; args[n + 3] = v; n = n + 3; code = 2
    elseif t == 'boolean' then args[n + 1] = v and 't' or 'f'; n = n + 1; code = 3
    elseif v == nil or v == cjson.null then args[n + 1] = 'z'; n = n + 1; code = 0
    else return nil end  -- an object or array where a column value belongs
    if types then types[i] = CODES[code] else sig = sig * 4 + code end
  end
  local f
  if types then f = '>' .. table.concat(types)
  else
    f = formats[sig]
    if not f then
      local parts, rest = {}, sig
      for i = ncols, 1, -1 do parts[i] = CODES[rest % 4]; rest = math.floor(rest / 4) end
      f = '>' .. table.concat(parts)
      formats[sig] = f
    end
  end
  return struct.pack(f, unpack(args, 1, n))
end

local function unpack_values(s, pos)
  local vals = {}
  for i = 1, ncols do
    local tag = string.byte(s, pos)
    if tag == 110 then vals[i] = struct.unpack('>d', s, pos + 1); pos = pos + 9
    elseif tag == 115 then
      local n = struct.unpack('>I4', s, pos + 1)
      vals[i] = string.sub(s, pos + 5, pos + 4 + n); pos = pos + 5 + n
    elseif tag == 116 then vals[i] = true; pos = pos + 1
    elseif tag == 102 then vals[i] = false; pos = pos + 1
    else pos = pos + 1 end
  end
  return vals
end

local function dec(s)
  if s == nil or s == 'z' then return nil end
  local tag, body = string.sub(s, 1, 1), string.sub(s, 2)
  if tag == 'n' then return tonumber(body) end
  if tag == 'b' then return body == '1' end
  return body
end

-- does the store key (a JSON array) hold a string value longer than max_key bytes? '["' ..
-- v .. '"]' is the shortest key holding v, so a key of at most max_key + 4 bytes cannot
local function key_too_long(k)
  if #k <= max_key + 4 then return false end
  local ok, values = pcall(cjson.decode, k)
  if not ok or type(values) ~= 'table' then return false end
  for _, v in ipairs(values) do
    if type(v) == 'string' and #v > max_key then return true end
  end
  return false
end

local stats = {applied = 0, late = 0, before_batch = 0, malformed = 0, duplicate = 0}
local newest_seen = nil
local states, order = {}, {}

local function state(k)
  local st = states[k]
  if st then return st end
  -- only the newest time and the horizon: the fold fields are read when a fold happens
  local nh = redis.call('HMGET', prefix .. ':a:' .. k, 'nw', 'H')
  st = {adds = {}}
  st.nw = nh[1] and tonumber(nh[1]) or nil
  st.H = nh[2] and tonumber(nh[2]) or (tb - hlag)
  states[k] = st
  order[#order + 1] = k
  return st
end

local function reject(reason, id, k, e, d, detail)
  stats[reason] = stats[reason] + 1
  redis.call('XADD', dead, '*', 'reason', reason, 'id', id, 'k', k or '', 'e', e or '',
             'd', d or '', 'detail', detail or '')
end

-- Entries read with '>' were delivered by this very script: pending and never applied, so
-- one XACK for all of them is exact. Entries of 'own' / 'claim' may have been applied by
-- another consumer already: each is applied only if its own XACK returns 1.
local fresh = mode == 'read'
if fresh and #entries > 0 then
  local ids = {}
  for j, entry in ipairs(entries) do ids[j] = entry[1] end
  for j = 1, #ids, 1000 do
    redis.call('XACK', stream, group, unpack(ids, j, math.min(j + 999, #ids)))
  end
end

for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  if fresh or redis.call('XACK', stream, group, id) == 1 then
    local k, es, d
    if type(fields) == 'table' then
      for j = 1, #fields, 2 do
        local name = fields[j]
        if name == 'k' then k = fields[j + 1]
        elseif name == 'e' then es = fields[j + 1]
        elseif name == 'd' then d = fields[j + 1] end
      end
    end
    local e = es and tonumber(es)
    local ok, rec = false, nil
    if d then ok, rec = pcall(cjson.decode, d) end
    local packed = ok and type(rec) == 'table' and pack_values(rec) or nil
    if not k or not e or e ~= math.floor(e) or not packed then
      reject('malformed', id, k, es, d, type(fields) == 'table' and 'fields k, e (integer us), d (JSON object of scalars) expected' or 'entry deleted from the stream')
    elseif key_too_long(k) then
      reject('malformed', id, k, es, d, 'an entity key value is longer than ' .. max_key .. ' UTF-8 bytes (serve refuses such keys)')
    elseif e < tb then
      reject('before_batch', id, k, es, d, 'event time before the batch as-of ' .. fmt(tb))
    else
      local st = state(k)
      if st.nw and e < st.nw - late then
        reject('late', id, k, es, d, 'older than the entity newest event ' .. fmt(st.nw) .. ' minus max_lateness')
      else
        -- the tie key 's' + 15-digit ms + 10-digit seq, by padding the id's own digits
        -- (string.format per event measured ~1 us)
        local dash = string.find(id, '-', 1, true)
        local seqlen = #id - dash
        local tie
        if dash <= 16 and seqlen <= 10 then
          tie = 's' .. ZEROS[16 - dash] .. string.sub(id, 1, dash - 1) .. ZEROS[10 - seqlen]
                .. string.sub(id, dash + 1)
        else
          tie = 's' .. string.format('%015d%010d', tonumber(string.sub(id, 1, dash - 1)),
                                     tonumber(string.sub(id, dash + 1)))
        end
        -- one ZADD per entity per batch (below), members gathered here
        local adds = st.adds
        adds[#adds + 1] = es
        adds[#adds + 1] = tie .. packed
        if not st.nw or e > st.nw then st.nw = e; st.nws = es end
        if not newest_seen or e > newest_seen then newest_seen = e end
        stats.applied = stats.applied + 1
      end
    end
  else
    stats.duplicate = stats.duplicate + 1
  end
end

-- fold every event older than the entity's new horizon into its running aggregates, in
-- (event time, tie) order, then drop them from the raw set: memory stays bounded
-- The horizon moves in steps of at least an eighth of (window + lateness): most batches
-- fold nothing and touch one field; memory stays within 1.125 x the window's events.
local slack = math.max(math.floor(hlag / 8), 1)
for _, k in ipairs(order) do
  local st = states[k]
  local ch = {}
  local adds = st.adds
  for j = 1, #adds, 1000 do  -- (unpack has a stack limit: 1000 score/member pairs a call)
    redis.call('ZADD', prefix .. ':r:' .. k, unpack(adds, j, math.min(j + 999, #adds)))
  end
  if st.nws then ch[#ch + 1] = 'nw'; ch[#ch + 1] = st.nws end
  if st.nw and st.nw - hlag - st.H >= slack then
    local newH = st.nw - hlag
    local rawkey = prefix .. ':r:' .. k
    local upto = '(' .. fmt(newH)
    local old = redis.call('ZRANGEBYSCORE', rawkey, '-inf', upto, 'WITHSCORES')
    if #old > 0 then
      local f = {}
      local flat = redis.call('HGETALL', prefix .. ':a:' .. k)
      for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
      local n = tonumber(f.n or '0')
      local e0 = f.e0
      local e1 = f.e1
      local acc = {}
      for i = 1, ncols do
        acc[i] = {nn = tonumber(f['N' .. i] or '0'), s = tonumber(f['S' .. i] or '0'),
                  c = f['C' .. i] and tonumber(f['C' .. i]) or nil,
                  p = tonumber(f['P' .. i] or '0'), q = tonumber(f['Q' .. i] or '0'),
                  mn = dec(f['m' .. i]), mx = dec(f['M' .. i]), l = f['L' .. i], g = f['G' .. i]}
      end
      for j = 1, #old, 2 do
        local vals = unpack_values(old[j], 27)
        n = n + 1
        if not e0 then e0 = old[j + 1] end
        e1 = old[j + 1]
        for i = 1, ncols do
          local a = acc[i]
          local v = vals[i]
          a.g = enc(v)
          if v ~= nil then
            a.nn = a.nn + 1
            local x = num(v)
            if x then
              a.s = a.s + x
              if a.c == nil then a.c = x end
              local dx = x - a.c
              a.p = a.p + dx
              a.q = a.q + dx * dx
            end
            if a.mn == nil or less(v, a.mn) then a.mn = v end
            if a.mx == nil or less(a.mx, v) then a.mx = v end
            a.l = a.g
            if string.sub(distinct, i, i) == '1' then
              redis.call('SADD', prefix .. ':u:' .. k .. ':' .. i, a.g)
            end
          end
        end
      end
      redis.call('ZREMRANGEBYSCORE', rawkey, '-inf', upto)
      local function put(name, value) ch[#ch + 1] = name; ch[#ch + 1] = value end
      put('n', tostring(n)); put('e0', e0); put('e1', e1)
      for i = 1, ncols do
        local a = acc[i]
        put('N' .. i, tostring(a.nn)); put('S' .. i, fmt(a.s))
        if a.c ~= nil then put('C' .. i, fmt(a.c)) end
        put('P' .. i, fmt(a.p)); put('Q' .. i, fmt(a.q))
        if a.mn ~= nil then put('m' .. i, enc(a.mn)); put('M' .. i, enc(a.mx)) end
        if a.l then put('L' .. i, a.l) end
        if a.g then put('G' .. i, a.g) end
      end
    end
    ch[#ch + 1] = 'H'; ch[#ch + 1] = fmt(newH)
  end
  if #ch > 0 then redis.call('HSET', prefix .. ':a:' .. k, unpack(ch)) end
end

local statskey = prefix .. ':stats'
for name, value in pairs(stats) do
  if value > 0 then redis.call('HINCRBY', statskey, name, value) end
end
if newest_seen then
  local cur = redis.call('HGET', statskey, 'newest_us')
  if not cur or tonumber(cur) < newest_seen then
    redis.call('HSET', statskey, 'newest_us', fmt(newest_seen))
  end
end
local last_id = ''
if #entries > 0 then last_id = entries[#entries][1] end
-- drained: the stream's newest id, after which the consumer blocks (XREAD) for new entries
local head = ''
if mode == 'read' and #entries == 0 then
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  head = top[1] and top[1][1] or '0-0'
end
return {#entries, stats.applied, stats.late, stats.before_batch, stats.malformed,
        stats.duplicate, last_id, head}
"""
