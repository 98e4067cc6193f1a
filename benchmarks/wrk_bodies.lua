-- wrk script: POST the bodies of a file (one JSON document per line) in turn, then print a JSON summary.
--   wrk -s benchmarks/wrk_bodies.lua URL -- BODIES_FILE
--   wrk -s benchmarks/wrk_bodies.lua URL -- BODY_FILE --raw ["Name: value" ...]
-- With --raw, the file is one body, read whole (binary allowed: the v2 protocol's binary tensor data),
-- sent with the headers that follow.
-- Each wrk thread starts at a random line so that concurrent connections send different items.
-- The requests are formatted once, in init: wrk shares the cores with the server under test, and
-- formatting each request anew cost it 2.4 of its 10.5 microseconds of CPU per request (digits).
local requests = {}
local index = 0

function init(args)
  if args[2] == "--raw" then
    local file = assert(io.open(args[1], "rb"))
    local body = file:read("*a")
    file:close()
    local headers = {}
    for i = 3, #args do
      local name, value = args[i]:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    requests[1] = wrk.format("POST", nil, headers, body)
  else
    for line in io.lines(args[1]) do
      requests[#requests + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
    end
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  index = math.random(#requests)
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
