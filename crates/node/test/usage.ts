// Type-checked with `tsc --strict` by the test command: the declarations describe the API a
// TypeScript program uses, and a wrong call does not compile.
import { parallelCompletions, iterCompletions, Lanes, LanewayError, RateLimitError } from "laneway";
import type { CompletionResult, Progress } from "laneway";

async function main(): Promise<number> {
  const requests = [{ model: "mock-1", messages: [{ role: "user", content: "hi" }] }];
  const lanes = new Lanes({ configText: "[[lane]]\nname = \"m\"\nkind = \"mock\"\n", apiKey: "sk" });
  const ac = new AbortController();
  const results = await parallelCompletions(requests, {
    concurrency: "auto",
    lanes,
    timeout: 30_000,
    signal: ac.signal,
    onProgress: (p: Progress) => console.log(p.done, p.total),
  });
  let tokens: number = results.usage.completionTokens;
  for (const r of results) {
    if (r.error instanceof RateLimitError) tokens += r.error.retryAfter ?? 0;
    else if (r.error instanceof LanewayError) console.log(r.error.status, r.error.code, r.error.requestId);
    else if (r.response) console.log(r.response["choices"], r.request.model);
  }
  for await (const r of iterCompletions(requests, { baseURL: "http://127.0.0.1:8400/v1", apiKey: "sk" })) {
    const one: CompletionResult = r;
    tokens += one.index;
  }
  // @ts-expect-error: concurrency is a number or "auto"
  await parallelCompletions(requests, { baseURL: "x", concurrency: "eight" });
  // @ts-expect-error: Lanes needs a config or its text
  new Lanes({});
  return tokens;
}

void main;
