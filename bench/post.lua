-- wrk script: one small chat completion per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"mock-1","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
