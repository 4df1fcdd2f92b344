-- wrk script: POST a realistic 1 KiB Hover-like JSON event, each with a new job id so
-- that no delivery is a duplicate of another.
local counter = 0
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local pad = string.rep("x", 760)

request = function()
  counter = counter + 1
  local body = string.format(
    '{"event":"job-state-changed-v2","webhook_id":230293,"job_external_identifier":"order%d",' ..
    '"job_id":%d,"state":"processing","content-available":1,"job_estimated_hours_to_completion":1.39,' ..
    '"thread":"%s","note":"%s"}', counter, counter, tostring(tid), pad)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
