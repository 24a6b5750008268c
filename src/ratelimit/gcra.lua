local function muldiv(a, b, c)
  local q, r, bit = 0, 0, 2147483648
  while bit >= 1 do
    q = q * 2
    r = r * 2
    if r >= c then q = q + 1; r = r - c end
    if b >= bit then
      b = b - bit
      r = r + a
      if r >= c then q = q + 1; r = r - c end
    end
    bit = bit / 2
  end
  return q, r
end
local now = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local requests = tonumber(ARGV[3])
local tat, frac = now, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local ms, f, d = string.match(raw, '^(%-?%d+)%+(%d+)/(%d+)$')
  if ms then
    tat, frac = tonumber(ms), tonumber(f)
    if tonumber(d) ~= requests then
      if frac > 0 then tat = tat + 1 end
      frac = 0
    end
  else
    tat = tonumber(raw) or now
  end
end
if tat < now then tat, frac = now, 0 end
local ahead = now + per - tat
local available = 0
if ahead > 0 then
  local q, r = muldiv(ahead, requests, per)
  if r >= frac then
    available = q
  else
    available = q - math.floor((frac - r + per - 1) / per)
  end
end
local reset = tat - now
if frac > 0 then reset = reset + 1 end
if available < 1 then
  local retry = tat - per - now + math.floor((frac + per + requests - 1) / requests)
  return {0, 0, retry, reset}
end
local granted = math.min(math.max(tonumber(ARGV[4]), 1), available)
local whole = math.floor(per / requests)
local q, r = muldiv(per - whole * requests, granted, requests)
local new_tat = tat + granted * whole + q
local new_frac = frac + r
if new_frac >= requests then
  new_tat = new_tat + 1
  new_frac = new_frac - requests
end
local stored = string.format('%d', new_tat)
reset = new_tat - now
if new_frac > 0 then
  stored = string.format('%d+%d/%d', new_tat, new_frac, requests)
  reset = reset + 1
end
redis.call('SET', KEYS[1], stored, 'PX', reset)
return {granted, available - granted, 0, reset}
