-- wrk script for bench/run: one machine-readable RESULT line per run.
--   BENCH_BODY_FILE  POST this file as the body of every request
--   BENCH_DELAY_MS   wait this long before each request on a connection (paced load)
--   BENCH_DELAY_JITTER=1  wait a random whole number of ms from 0 to twice that instead
--                         (the same mean; connections do not fall into step)

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/octet-stream"
end

-- Each thread has its own Lua state with the same default seed: seeded apart, so threads
-- neither start at the same cookie nor draw the same waits.
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
  if start_cookie then start_cookie() end
end

-- BENCH_COOKIES_FILE: one session cookie value a line; each request takes the next one
-- (as many users at once would), under the cookie name BENCH_COOKIE_NAME.
local cookies_file = os.getenv("BENCH_COOKIES_FILE")
if cookies_file and cookies_file ~= "" then
  local cookie_name = os.getenv("BENCH_COOKIE_NAME")
  local cookies = {}
  for line in io.lines(cookies_file) do
    if line ~= "" then cookies[#cookies + 1] = line end
  end
  local next_cookie = 1
  function start_cookie()
    next_cookie = math.random(#cookies)
  end
  function request()
    next_cookie = next_cookie % #cookies + 1
    wrk.headers["Cookie"] = cookie_name .. "=" .. cookies[next_cookie]
    return wrk.format()
  end
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  if os.getenv("BENCH_DELAY_JITTER") == "1" then
    function delay()
      return math.random(0, 2 * delay_ms)
    end
  else
    function delay()
      return delay_ms
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p95_us=%d p98_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(98),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
