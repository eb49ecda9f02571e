// The laneway Node package against the usual Node way, side by side in one run: N requests at
// concurrency C to a zero-latency `laneway mock`, requests per second and CPU milliseconds per
// request (process.cpuUsage: this process, its Rust threads included; the mock runs apart).
//
//   node bench/node_parallel.mjs [N] [C] [ROUNDS]
//
// `openai + semaphore` is the official `openai` SDK (from tests/compat/node/node_modules) with
// a hand-written semaphore bounding the requests in flight, as p-limit does. Build the release
// addon first: `cd crates/node && npm run build`; LANEWAY_BIN picks the mock's binary
// (default target/release/laneway).
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests", "compat", "node", "package.json"));
const OpenAI = require("openai").default ?? require("openai");
const laneway = require(path.join(root, "crates", "node"));

const N = Number(process.argv[2] ?? 20000);
const C = Number(process.argv[3] ?? 256);
const ROUNDS = Number(process.argv[4] ?? 3);
const BIN = process.env.LANEWAY_BIN ?? path.join(root, "target", "release", "laneway");

async function startMock() {
  const proc = spawn(BIN, ["mock", "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "ignore"] });
  const lines = createInterface({ input: proc.stdout });
  const addr = await new Promise((resolve) =>
    lines.on("line", (l) => l.startsWith("listening on http://") && resolve(l.slice(20).trim())));
  return { proc, url: `http://${addr}/v1` };
}

const requests = Array.from({ length: N }, (_, i) => ({
  model: "mock-1", messages: [{ role: "user", content: `item ${i}` }],
}));

async function withLaneway(url) {
  const rs = await laneway.parallelCompletions(requests, { baseURL: url, concurrency: C });
  return rs.filter((r) => !r.error).length;
}

async function withOpenAI(url) {
  const client = new OpenAI({ baseURL: url, apiKey: "none", maxRetries: 0 });
  let free = C;
  const waiting = [];
  const acquire = () => (free > 0 ? (free--, Promise.resolve()) : new Promise((r) => waiting.push(r)));
  const release = () => (waiting.length ? waiting.shift()() : free++);
  let ok = 0;
  await Promise.all(requests.map(async (r) => {
    await acquire();
    try {
      await client.chat.completions.create(r);
      ok++;
    } catch {
      // counted as not ok
    } finally {
      release();
    }
  }));
  return ok;
}

async function measure(name, run, url) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const ok = await run(url);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return { name, ok, rps: N / secs, cpuMsPerRequest: cpuMs / N };
}

const mock = await startMock();
const rows = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, so a slow moment of the machine falls on both.
    rows.push(await measure("laneway", withLaneway, mock.url));
    rows.push(await measure("openai + semaphore", withOpenAI, mock.url));
  }
} finally {
  mock.proc.kill();
}
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const summary = {};
for (const name of ["laneway", "openai + semaphore"]) {
  const mine = rows.filter((r) => r.name === name);
  summary[name] = {
    rps: Math.round(median(mine.map((r) => r.rps))),
    cpuMsPerRequest: Number(median(mine.map((r) => r.cpuMsPerRequest)).toFixed(4)),
    failed: mine.reduce((a, r) => a + (N - r.ok), 0),
  };
}
console.log(`N=${N} C=${C} rounds=${ROUNDS}`);
console.table(summary);
const ratio = summary["laneway"].rps / summary["openai + semaphore"].rps;
console.log(`laneway / openai+semaphore: ${ratio.toFixed(1)}x requests per second, ` +
  `${(summary["openai + semaphore"].cpuMsPerRequest / summary["laneway"].cpuMsPerRequest).toFixed(1)}x less CPU per request`);
