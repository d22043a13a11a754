"""The server-side state update: read (or claim) a batch of events, apply, acknowledge.

One ``EVALSHA`` runs the whole batch inside Redis, atomically: no event is ever applied
without its ``XACK``, nor acknowledged without being applied, whatever happens to the client
(kill -9 between calls leaves nothing half done). Idempotency comes from the ack itself: an
entry is applied only when ``XACK`` returns 1, i.e. it was still pending; a redelivered or
twice-claimed entry is acknowledged already and counts as a ``duplicate``.

ARGV: mode (read | own | claim), stream, group, consumer, dead-letter stream, state prefix,
count, claim min-idle (ms). The batch as-of, the horizon lag (longest window + max
lateness), the lateness, the columns and the distinct flags are read from ``<prefix>:meta``,
written once by the bootstrap, so every consumer applies the same rules; until the
bootstrap has finished (``state`` = ready) the script reads nothing and returns -1.

Value encodings shared with Python (``streaming.state.encode_value``): ``z`` null,
``n<%.17g>`` number, ``s<text>`` string, ``b1``/``b0`` boolean. Event times and horizons are
passed to Redis as the original decimal strings (a Lua number would be printed with 14
significant digits and lose microseconds).
"""

APPLY_SCRIPT = r"""
local mode, stream, group, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dead, prefix = ARGV[5], ARGV[6]
local count, min_idle = ARGV[7], ARGV[8]
local meta = redis.call('HMGET', prefix .. ':meta', 'state', 'batch_as_of_us', 'hlag_us',
                        'lateness_us', 'columns', 'distinct')
if meta[1] ~= 'ready' then return {-1} end
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

local function dec(s)
  if s == nil or s == 'z' then return nil end
  local tag, body = string.sub(s, 1, 1), string.sub(s, 2)
  if tag == 'n' then return tonumber(body) end
  if tag == 'b' then return body == '1' end
  return body
end

local stats = {applied = 0, late = 0, before_batch = 0, malformed = 0, duplicate = 0}
local newest_seen = nil
local states, order = {}, {}

local function state(k)
  local st = states[k]
  if st then return st end
  -- only the newest time and the horizon: the fold fields are read when a fold happens
  local nh = redis.call('HMGET', prefix .. ':a:' .. k, 'nw', 'H')
  st = {changed = {}}
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
    if not k or not e or e ~= math.floor(e) or not ok or type(rec) ~= 'table' then
      reject('malformed', id, k, es, d, type(fields) == 'table' and 'fields k, e (integer us), d (JSON object) expected' or 'entry deleted from the stream')
    elseif e < tb then
      reject('before_batch', id, k, es, d, 'event time before the batch as-of ' .. fmt(tb))
    else
      local st = state(k)
      if st.nw and e < st.nw - late then
        reject('late', id, k, es, d, 'older than the entity newest event ' .. fmt(st.nw) .. ' minus max_lateness')
      else
        local ms, seq = string.match(id, '^(%d+)-(%d+)$')
        local tie = 's' .. string.format('%015d%010d', tonumber(ms), tonumber(seq))
        redis.call('ZADD', prefix .. ':r:' .. k, es, tie .. d)
        if not st.nw or e > st.nw then st.nw = e; st.changed.nw = es end
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
  local ch = st.changed
  if st.nw then
    local newH = st.nw - hlag
    if newH - st.H >= slack then
      local rawkey = prefix .. ':r:' .. k
      local upto = '(' .. fmt(newH)
      local old = redis.call('ZRANGEBYSCORE', rawkey, '-inf', upto, 'WITHSCORES')
      local f = {}
      if #old > 0 then
        local flat = redis.call('HGETALL', prefix .. ':a:' .. k)
        for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
      end
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
        local rec = cjson.decode(string.sub(old[j], 27))
        n = n + 1
        if not e0 then e0 = old[j + 1] end
        e1 = old[j + 1]
        for i = 1, ncols do
          local a = acc[i]
          local v = rec[cols[i]]
          if v == cjson.null then v = nil end
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
            a.l = enc(v)
            if string.sub(distinct, i, i) == '1' then
              redis.call('SADD', prefix .. ':u:' .. k .. ':' .. i, enc(v))
            end
          end
        end
      end
      if #old > 0 then
        redis.call('ZREMRANGEBYSCORE', rawkey, '-inf', upto)
        ch.n = tostring(n); ch.e0 = e0; ch.e1 = e1
        for i = 1, ncols do
          local a = acc[i]
          ch['N' .. i] = tostring(a.nn); ch['S' .. i] = fmt(a.s)
          if a.c ~= nil then ch['C' .. i] = fmt(a.c) end
          ch['P' .. i] = fmt(a.p); ch['Q' .. i] = fmt(a.q)
          if a.mn ~= nil then ch['m' .. i] = enc(a.mn); ch['M' .. i] = enc(a.mx) end
          if a.l then ch['L' .. i] = a.l end
          if a.g then ch['G' .. i] = a.g end
        end
      end
      ch.H = fmt(newH)
    end
    local args = {}
    for name, value in pairs(ch) do args[#args + 1] = name; args[#args + 1] = value end
    if #args > 0 then redis.call('HSET', prefix .. ':a:' .. k, unpack(args)) end
  end
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
return {#entries, stats.applied, stats.late, stats.before_batch, stats.malformed,
        stats.duplicate, last_id}
"""
