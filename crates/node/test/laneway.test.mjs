// The laneway Node package against the real mock upstream.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import laneway, {
  parallelCompletions, iterCompletions, Lanes, LanewayError, RateLimitError, TimeoutError, ConnectionError,
} from "../index.mjs";
import { mock, until, chats } from "./helpers.mjs";

const started = [];
async function upstream(...args) {
  const m = await mock(...args);
  started.push(m);
  return m;
}
after(() => started.forEach((m) => m.stop()));

test("ESM and CommonJS load the same module", () => {
  const cjs = createRequire(import.meta.url)("../index.js");
  assert.equal(cjs.parallelCompletions, parallelCompletions);
  assert.equal(laneway.Lanes, Lanes);
});

test("results come back in input order, with the bound seen at the mock and progress", async () => {
  const m = await upstream("--latency-ms", "5");
  const seen = [];
  const requests = [...chats(40), { url: "/v1/embeddings", model: "mock-embed", input: ["a", "b"] }];
  const rs = await parallelCompletions(requests, { baseURL: m.url, concurrency: 4, onProgress: (p) => seen.push(p) });
  assert.deepEqual(rs.map((r) => r.index), [...requests.keys()]);
  assert.equal(rs[0].request, requests[0]);
  assert.equal(rs[0].response.object, "chat.completion");
  assert.equal(rs[40].response.data.length, 2);
  assert.ok(rs.every((r) => !r.error));
  assert.equal(rs.usage.completionTokens, 40 * 16);
  const s = await m.stats();
  assert.ok(s.max_in_flight <= 4 && s.max_in_flight >= 2, JSON.stringify(s));
  assert.equal(seen.at(-1).done, 41);
  assert.ok(seen.every((p) => p.total === 41));
});

test("iterCompletions yields each result as it finishes, with its index", async () => {
  const m = await upstream();
  const got = [];
  for await (const r of iterCompletions(chats(10), { baseURL: m.url, concurrency: 3 })) got.push(r.index);
  assert.deepEqual([...got].sort((a, b) => a - b), [...Array(10).keys()]);
});

test('"auto" learns a hidden capacity', async () => {
  const m = await upstream("--max-concurrent", "3", "--latency-ms", "20");
  const rs = await parallelCompletions(chats(120), { baseURL: m.url, concurrency: "auto" });
  assert.ok(rs.every((r) => !r.error), rs.find((r) => r.error)?.error?.message);
  const s = await m.stats();
  assert.equal(s.completed, 120);
  assert.ok(s.rejected_429 <= 12, `too many refusals: ${s.rejected_429}`);
});

test("per-item errors carry status and code; returnExceptions: false rejects on the first", async () => {
  const m = await upstream();
  const bad = { model: "mock-1", messages: [], max_tokens: "many" };
  const rs = await parallelCompletions([chats(1)[0], bad], { baseURL: m.url });
  assert.ok(rs[0].response && !rs[0].error);
  assert.ok(rs[1].error instanceof LanewayError);
  assert.equal(rs[1].error.status, 400);
  assert.equal(rs[1].error.code, "invalid_request_error");
  await assert.rejects(parallelCompletions([bad, ...chats(5)], { baseURL: m.url, returnExceptions: false, concurrency: 1 }),
    (e) => e instanceof LanewayError && e.status === 400);
});

test("an item refused with 429 on every attempt is a RateLimitError with retryAfter", async () => {
  const m = await upstream("--fail-first", "100", "--fail-retry-after-ms", "20");
  const [r] = await parallelCompletions(chats(1), { baseURL: m.url });
  assert.ok(r.error instanceof RateLimitError, String(r.error));
  assert.equal(r.error.status, 429);
  assert.equal(r.error.retryAfter, 0.02);
  assert.ok((await m.stats()).requests >= 2, "the runner retried before giving up");
});

test("timeout bounds each item", async () => {
  const m = await upstream("--latency-ms", "5000");
  const [r] = await parallelCompletions(chats(1), { baseURL: m.url, timeout: 100 });
  assert.ok(r.error instanceof TimeoutError, String(r.error));
  assert.equal(r.error.code, "timeout");
});

test("aborting the signal cancels what runs, and the upstream sees it", async () => {
  const m = await upstream("--hold");
  const ac = new AbortController();
  const run = parallelCompletions(chats(5), { baseURL: m.url, concurrency: 5, signal: ac.signal });
  await until(async () => (await m.stats()).requests === 5, "five requests held at the mock");
  ac.abort();
  await assert.rejects(run);
  await until(async () => (await m.stats()).cancelled === 5, "the mock saw five cancellations");
});

test("in-process lanes apply the config's key limit", async () => {
  const m = await upstream("--latency-ms", "20");
  const lanes = new Lanes({
    configText: `[[lane]]\nname = "m"\nurl = "${m.url}"\n[[route]]\nmodel = "mock-*"\nlanes = ["m"]\n` +
      `[[key]]\nname = "team"\nkey = "sk-team"\nconcurrency_limit = { max_concurrent_requests = 2 }\non_limit = "queue"\n`,
    apiKey: "sk-team",
  });
  const rs = await parallelCompletions(chats(12), { lanes, concurrency: 12 });
  assert.ok(rs.every((r) => !r.error), rs.find((r) => r.error)?.error?.message);
  assert.equal((await m.stats()).max_in_flight, 2);
  const wrong = new Lanes({ configText: `[[lane]]\nname = "m"\nurl = "${m.url}"\n[[route]]\nmodel = "mock-*"\nlanes = ["m"]\n[[key]]\nname = "t"\nkey = "sk-t"\n`, apiKey: "sk-nope" });
  const [r] = await parallelCompletions(chats(1), { lanes: wrong });
  assert.equal(r.error.status, 401);
});

test("arguments of the wrong kind throw a TypeError naming them, before anything is sent", async () => {
  const m = await upstream();
  const base = { baseURL: m.url };
  for (const [args, says] of [
    [[{}, base], /requests must be an array/],
    [[[1], base], /requests\[0\] must be an object/],
    [[chats(1), { ...base, concurrency: "8" }], /concurrency must be a whole number/],
    [[chats(1), { ...base, timeout: -1 }], /timeout must be a positive number/],
    [[chats(1), { ...base, onProgress: 5 }], /onProgress must be a function/],
    [[chats(1), { ...base, signal: {} }], /signal must be an AbortSignal/],
    [[chats(1), {}], /baseURL must be a string/],
    [[chats(1), { ...base, lanes: {} }], /lanes must be a laneway.Lanes/],
  ]) {
    await assert.rejects(parallelCompletions(...args), (e) => e instanceof TypeError && says.test(e.message));
  }
  await assert.rejects(parallelCompletions(chats(1), { ...base, concurrency: 0 }), RangeError);
  assert.throws(() => new Lanes({ configText: 5 }), TypeError);
  assert.throws(() => new Lanes({ configText: "[[lane]]\nname = 1\n" }), /lane/);
  await assert.rejects(parallelCompletions(chats(1), { baseURL: "localhost:1/v1" }), /baseURL/);
  assert.equal((await m.stats()).requests, 0);
});

test("the event loop stays responsive during a run of 10,000 requests", async () => {
  const m = await upstream();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const rs = await parallelCompletions(chats(10_000), { baseURL: m.url, concurrency: 256 });
  clearInterval(timer);
  assert.equal(rs.length, 10_000);
  assert.ok(rs.every((r) => !r.error));
  // The requests run on Rust threads: the JS thread keeps serving its timers meanwhile.
  assert.ok(ticks >= 3, `the timer fired only ${ticks} times`);
});
