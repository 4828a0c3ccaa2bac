-- wrk script: POST the benchmark body (or the file BENCH_BODY_FILE), with X-Api-Key when
-- BENCH_API_KEY is set, and X-Trigger-Dry-Run: true when BENCH_DRY_RUN=1 (triggerd evaluates
-- everything and stores nothing).
wrk.method = "POST"
wrk.body = '{"ref":"refs/heads/main","repository":{"name":"api-server","full_name":"acme/api-server"},"pusher":{"name":"ci"},"size":4,"sample_key":"sample_value"}'
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file ~= nil and body_file ~= "" then
  local f = assert(io.open(body_file, "r"))
  wrk.body = f:read("*a")
  f:close()
end
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
if os.getenv("BENCH_DRY_RUN") == "1" then
  wrk.headers["X-Trigger-Dry-Run"] = "true"
end
local key = os.getenv("BENCH_API_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["X-Api-Key"] = key
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, errors))
end
