-- wrk script: one small chat completion per request, sent with the benchmark's client key.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"mock-1","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
