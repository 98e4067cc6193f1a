-- wrk script: POST one body, read whole from a file (binary allowed), with extra headers; then print a
-- JSON summary as wrk_bodies.lua does.
--   wrk -s benchmarks/wrk_raw.lua URL -- BODY_FILE ["Name: value" ...]
-- For bodies that are not one JSON line, such as the v2 protocol's binary tensor data.
local request_bytes

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = {}
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
