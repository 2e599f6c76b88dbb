-- sendgate admission step: limiter.Admit and limiter.Refund on one key.
--
-- KEYS[1]  the key's hash
-- ARGV[1]  mode: "a" admit, "r" refund
-- ARGV[2]  count (>= 1)
-- ARGV[3]  dry run: "1" or "0"
-- ARGV[4]  now as Unix nanoseconds, or "" for the server's clock (TIME)
-- ARGV[5]  calendar day tier: "1" or "0"
-- ARGV[6]  start of the provider's calendar day at the caller's now (Unix ns)
-- ARGV[7]  start of the next calendar day (Unix ns)
-- ARGV[8..11]  configured limits of the second, minute, hour and day tiers
-- ARGV[12] ramp interval (ns)       ARGV[13] ramp step
-- ARGV[14] probe interval (ns)      ARGV[15] remediation probe interval (ns)
-- ARGV[16] ceiling rise interval    ARGV[17] ceiling rise step
-- ARGV[18] burst (limiter.Machine.Burst; 0: a plain token bucket)
-- ARGV[19] idle TTL in milliseconds ("0": keep forever); see touch()
--
-- Lua numbers are doubles, exact for integers below 2^53 (about 104 days in
-- nanoseconds), while Unix nanoseconds are about 1.8e18. So every instant is
-- held relative to B, the whole Unix second of now: rel(s) splits the stored
-- decimal string into seconds and nanoseconds and returns
-- (seconds - B) * 1e9 + nanoseconds, which is exact for instants within
-- 8e6 seconds (92 days) of now. Instants further away are clamped to -HUGE
-- or +HUGE: every comparison with them comes out as it would exactly, and the
-- arithmetic on them (intervals since a very old instant) saturates, as the
-- Go code's does. Stored instants are written back with abs(), exactly.
-- Floats (factors, window counts) use the same IEEE operations in the same
-- order as the Go code and are written with %.17g, which round-trips.

local HUGE = 4611686018427387904 -- 2^62
local MAXDUR = 9223372036854775807

local B, now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  B = tonumber(t[1])
  now = tonumber(t[2]) * 1000
end

local function split(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end

if B == nil then
  B, now = split(ARGV[4])
end

-- rel converts a stored Unix-nanosecond string to ns relative to B; nil for
-- the zero time ("" or absent).
local function rel(s)
  if not s or s == '' then return nil end
  local sec, ns = split(s)
  local d = sec - B
  if d < -8000000 then return -HUGE end
  if d > 8000000 then return HUGE end
  return d * 1000000000 + ns
end

local function abs(r)
  local s = math.floor(r / 1000000000)
  local ns = r - s * 1000000000
  return string.format('%d%09d', B + s, ns)
end

-- idiv is floor(a / b) for integers a >= 0, b > 0, exact below 2^53.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

-- intervals: whole intervals d between from and now (limiter.intervals).
local function intervals(from, d)
  if d <= 0 then return 0 end
  if from == nil then return math.floor(MAXDUR / d) end
  if not (now > from) then return 0 end
  if from == -HUGE then return math.floor(MAXDUR / d) end
  return idiv(now - from, d)
end

local function num(s)
  if not s or s == '' then return 0 end
  return tonumber(s)
end

local key = KEYS[1]
local mode = ARGV[1]
local count = tonumber(ARGV[2])
local dry = ARGV[3] == '1'
local calendar = ARGV[5] == '1'
local L = {tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local rampInterval, rampStep = tonumber(ARGV[12]), tonumber(ARGV[13])
local probeInterval, remProbeInterval = tonumber(ARGV[14]), tonumber(ARGV[15])
local riseInterval, riseStep = tonumber(ARGV[16]), tonumber(ARGV[17])
local BURST = tonumber(ARGV[18]) or 0
local TTL = tonumber(ARGV[19]) or 0
local WIN = {1000000000, 60000000000, 3600000000000, 86400000000000}
local WSEC = {1, 60, 3600, 86400}

local h = redis.call('HMGET', key, 'st', 'since', 'until', 'f', 'fat', 'c0', 'c1', 'c2', 'c3', 'cat', 'rem', 'pn',
  't0', 'u0', 't1', 'u1', 't2', 'u2', 't3', 'u3',
  'w0s', 'w0c', 'w0p', 'w1s', 'w1c', 'w1p', 'w2s', 'w2c', 'w2p', 'w3s', 'w3c', 'w3p')
local state = num(h[1])
local since, untl = rel(h[2]), rel(h[3])
local factor, factorAt = num(h[4]), rel(h[5])
local ceilings = {num(h[6]), num(h[7]), num(h[8]), num(h[9])}
local ceilingAt = rel(h[10])
local remediation = h[11] == '1'
local probeNext = rel(h[12])

-- touch restarts the key's idle TTL after a write. A HELD key (state 5)
-- and one that needs remediation wait for an operator: never expired.
local function touch()
  if TTL > 0 and state ~= 5 and not remediation then
    redis.call('PEXPIRE', key, TTL)
  else
    redis.call('PERSIST', key)
  end
end

-- derive (limiter.derive): states 1 HEALTHY 2 THROTTLED 3 BLOCKED 4 PROBING 5 HELD
local function factorOf()
  if factor <= 0 or factor > 1 then return 1 end
  return factor
end
local dstate, dsince, duntil, dfactor = 1, since, nil, 1
if state == 2 then
  local f = factorOf()
  local steps = intervals(factorAt, rampInterval)
  if f + steps * rampStep >= 1 - 1e-9 then
    dstate, dfactor = 1, 1
  else
    dstate, dfactor = 2, f + steps * rampStep
  end
elseif state == 3 then
  if untl ~= nil and now < untl then
    dstate, duntil, dfactor = 3, untl, factorOf()
  else
    dstate, dsince, dfactor = 4, untl, factorOf()
  end
elseif state == 4 then
  dstate, dfactor = 4, factorOf()
elseif state == 5 then
  if untl ~= nil and not (now < untl) then
    dstate, dfactor = 1, 1
  else
    dstate, duntil, dfactor = 5, untl, factorOf()
  end
end

local function ceilingOf(t)
  local c = ceilings[t]
  if c == 0 then return 0 end
  local limit = L[t]
  local steps = intervals(ceilingAt, riseInterval)
  local v = c + steps * riseStep * c
  if v >= limit then return 0 end
  return math.floor(v)
end

local function effective(t)
  local limit = L[t]
  local c = limit
  local ceil = ceilingOf(t)
  if ceil > 0 and ceil < c then c = ceil end
  local eff = math.floor(c * dfactor + 1e-9)
  if eff < 1 then eff = 1 end
  if eff > c then eff = c end
  return eff, ceil
end

-- calendar day of now
local day, nextDay
if calendar then
  day, nextDay = rel(ARGV[6]), rel(ARGV[7])
  -- The server's clock may sit in another day than the caller's.
  while now >= nextDay do day, nextDay = nextDay, nextDay + 86400000000000 end
  while now < day do day, nextDay = day - 86400000000000, day end
end

-- gauge (limiter.gauge): {cal, limit, interval, debt, used}
local function gauge(t, eff)
  local tat = rel(h[13 + 2 * (t - 1)])
  if t == 4 and calendar then
    local used = 0
    if tat ~= nil and tat >= day then used = num(h[14 + 2 * (t - 1)]) end
    return {cal = true, limit = eff, used = used, tat = tat}
  end
  -- burst and pacing as in limiter.gauge
  local burst, paced = BURST, eff
  if burst <= 0 or burst > eff then
    burst = eff
  else
    paced = eff - burst + 1
  end
  local interval = idiv(WIN[t] + paced - 1, paced)
  local debt = 0
  if tat ~= nil and tat > now then debt = tat - now end
  return {cal = false, limit = eff, burst = burst, interval = interval, debt = debt}
end

local function remaining(g)
  if g.cal then
    if g.used >= g.limit then return 0 end
    return g.limit - g.used
  end
  local r = g.burst * g.interval - g.debt
  if r <= 0 then return 0 end
  return idiv(r, g.interval)
end

local function wait(g, n)
  if g.cal then
    if g.used + n <= g.limit then return 0 end
    return nextDay - now
  end
  local c = g.burst * g.interval
  if n > g.burst and n <= g.limit then c = n * g.interval end
  local over = g.debt + n * g.interval - c
  if over <= 0 then return 0 end
  return over
end

-- windows (limiter.Window): start of the current window of tier t, rel.
local function windowStart(t)
  return -(B % WSEC[t]) * 1000000000
end

local function roll(t)
  local base = 20 + 3 * (t - 1)
  local ws, cur, prev = rel(h[base + 1]), num(h[base + 2]), num(h[base + 3])
  if ws == nil then ws = -HUGE end
  local start = windowStart(t)
  if start == ws then
  elseif start == ws + WIN[t] then
    prev, cur, ws = cur, 0, start
  elseif start > ws then
    prev, cur, ws = 0, 0, start
  end
  return ws, cur, prev
end

local function fmtf(x) return string.format('%.17g', x) end

local out = {}

if mode == 'r' then
  for t = 1, 4 do
    if L[t] > 0 then
      -- at the configured limit's interval, as limiter.Refund
      local g = gauge(t, L[t])
      if g.cal then
        local u = 0
        if g.used > count then u = g.used - count end
        out[#out + 1] = 'u3'
        out[#out + 1] = string.format('%d', u)
      else
        local d = g.debt - count * g.interval
        local tat = '0'
        if d > 0 then tat = abs(now + d) end
        out[#out + 1] = 't' .. (t - 1)
        out[#out + 1] = tat
      end
      local ws, cur, prev = roll(t)
      cur = math.max(0, cur - count)
      out[#out + 1] = 'w' .. (t - 1) .. 's'
      out[#out + 1] = abs(ws)
      out[#out + 1] = 'w' .. (t - 1) .. 'c'
      out[#out + 1] = fmtf(cur)
      out[#out + 1] = 'w' .. (t - 1) .. 'p'
      out[#out + 1] = fmtf(prev)
    end
  end
  if dstate == 4 and probeNext ~= nil and probeNext > now then
    out[#out + 1] = 'pn'
    out[#out + 1] = abs(now)
  end
  if #out > 0 then
    redis.call('HSET', key, unpack(out))
    touch()
  end
  return 1
end

local function positive(d)
  if d < 1000000 then return 1000000 end
  return d
end

-- admit (limiter.Admit)
local verdict, reason, retry, limiting, probe, untilv = 0, 0, 0, 0, 0, nil
local tiers = {}
local gauges = {}
local short = false
for t = 1, 4 do
  if L[t] > 0 then
    local eff, ceil = effective(t)
    local g = gauge(t, eff)
    gauges[t] = g
    local ts = {t - 1, eff, ceil, remaining(g), wait(g, 1)}
    local w = wait(g, count)
    if w > 0 then
      short = true
      if w > retry then retry, limiting = w, t - 1 end
    end
    tiers[#tiers + 1] = ts
  end
end

local function result()
  local r = {verdict, reason, retry, dstate, fmtf(dfactor), limiting, probe, '', #tiers}
  if untilv ~= nil then r[8] = abs(untilv) end
  for _, ts in ipairs(tiers) do
    for _, v in ipairs(ts) do r[#r + 1] = v end
  end
  return r
end

-- verdicts 1 ALLOW 2 DEFER; reasons 1 RATE_LIMITED 2 BLOCKED 3 PROBING 4 HELD
if dstate == 3 then
  verdict, reason, untilv = 2, 2, duntil
  retry = positive(duntil - now)
  return result()
elseif dstate == 5 then
  verdict, reason, untilv = 2, 4, duntil
  if duntil == nil then retry = 300000000000 else retry = positive(duntil - now) end
  return result()
elseif dstate == 4 then
  local slot = probeNext
  if slot == nil or (dsince ~= nil and slot < dsince) then slot = dsince end
  if slot ~= nil and now < slot then
    verdict, reason, untilv = 2, 3, slot
    retry = positive(slot - now)
    return result()
  end
  probe = 1
end
if short then
  verdict, reason, probe = 2, 1, 0
  return result()
end
verdict, retry = 1, 0
if dry then return result() end

for _, ts in ipairs(tiers) do
  local t = ts[1] + 1
  local g = gauges[t]
  if g.cal then
    local tat = day
    if g.tat ~= nil and g.tat > tat then tat = g.tat end
    g.used = g.used + count
    out[#out + 1] = 't3'
    out[#out + 1] = abs(tat)
    out[#out + 1] = 'u3'
    out[#out + 1] = string.format('%d', g.used)
  else
    g.debt = g.debt + count * g.interval
    out[#out + 1] = 't' .. (t - 1)
    out[#out + 1] = abs(now + g.debt)
  end
  ts[4] = remaining(g)
  ts[5] = wait(g, 1)
  local ws, cur, prev = roll(t)
  cur = cur + count
  out[#out + 1] = 'w' .. (t - 1) .. 's'
  out[#out + 1] = abs(ws)
  out[#out + 1] = 'w' .. (t - 1) .. 'c'
  out[#out + 1] = fmtf(cur)
  out[#out + 1] = 'w' .. (t - 1) .. 'p'
  out[#out + 1] = fmtf(prev)
end
if probe == 1 then
  local pi = probeInterval
  if remediation then pi = remProbeInterval end
  out[#out + 1] = 'pn'
  out[#out + 1] = abs(now + pi)
end
redis.call('HSET', key, unpack(out))
touch()
return result()
