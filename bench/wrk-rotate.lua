-- Rotates over the requests of a file written by bench/lib/payloads.mjs (one per instance), so each
-- request is a different instance with its own token and body. Stamped bodies get a timestamp that
-- increases per instance (the server ignores a beat that is not newer than the last); the stamp is
-- computed for every request, stamped or not, so every target costs the load generator the same.

local entries = {}
local count = 0
local position = 0
local last = {}

local function unescape(s)
  return (s:gsub("\1", "\n"))
end

function init(args)
  local pattern = "^" .. string.rep("([^\t]*)\t", 6) .. "([^\t]*)$"
  for line in io.lines(args[1]) do
    local method, path, auth, ctype, prefix, suffix, stamp = line:match(pattern)
    if method then
      local headers = { ["Content-Type"] = ctype }
      if auth ~= "" then headers["Authorization"] = auth end
      count = count + 1
      entries[count] = {
        method = method, path = path, headers = headers,
        prefix = unescape(prefix), suffix = unescape(suffix), stamp = stamp == "1",
      }
      last[count] = 0
    end
  end
  if count == 0 then error("no requests in " .. tostring(args[1])) end
end

local function iso(ms)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) .. string.format(".%03dZ", ms % 1000)
end

function request()
  position = position % count + 1
  local e = entries[position]
  local ms = os.time() * 1000
  if ms <= last[position] then ms = last[position] + 1 end
  last[position] = ms
  local stamp = iso(ms)
  local body = e.prefix
  if e.stamp then body = e.prefix .. stamp .. e.suffix end
  return wrk.format(e.method, e.path, e.headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
