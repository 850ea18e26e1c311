-- wrk script for bench/run: POSTs one SQL statement to the gateway's query route with a fresh
-- integer parameter per request, and prints the run's figures as one JSON line at the end
-- (latency percentiles from wrk's own histogram, in microseconds).
--
-- Environment (set by bench/run.py):
--   BENCH_PATH       /v1/apps/<id>/query
--   BENCH_TOKEN      bearer token
--   BENCH_SQL_JSON   the statement as a JSON string literal (quotes included)
--   BENCH_PARAM_MIN, BENCH_PARAM_MAX   the parameter is drawn from this range
--   BENCH_METHOD     GET sends no body (default POST)

local path = os.getenv("BENCH_PATH")
local sql_json = os.getenv("BENCH_SQL_JSON")
local lo = tonumber(os.getenv("BENCH_PARAM_MIN"))
local hi = tonumber(os.getenv("BENCH_PARAM_MAX"))
local headers = {
  ["authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
  ["content-type"] = "application/json",
}

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  -- Each wrk thread has its own Lua state; seed it so threads do not repeat each other.
  math.randomseed(os.time() * 1000 + (seed or 0))
end

local method = os.getenv("BENCH_METHOD") or "POST"

function request()
  if method == "GET" then
    return wrk.format("GET", path, headers)
  end
  local body = '{"sql":' .. sql_json .. ',"params":[' .. math.random(lo, hi) .. ']}'
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  -- errors.status counts answers with a status of 400 and above; no response() hook, so wrk
  -- spends no Lua time per answer on the cores it shares with the gateway.
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
