-- wrk script: print one JSON line of latency percentiles (ms) and throughput when the run ends.
-- WRK_METHOD / WRK_BODY (environment) make it send a POST with a JSON body instead of a GET.
local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
if method then
  wrk.method = method
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "errors": %d, "p50_ms": %.3f, '
      .. '"p90_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, secs, summary.requests / secs, errors,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3, latency:percentile(99.9) / 1e3, latency.max / 1e3, latency.mean / 1e3))
end
