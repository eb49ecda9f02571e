// Real servers for the tests: `laneway mock` on a free loopback port.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.LANEWAY_BIN ?? path.join(here, "..", "..", "..", "target", "debug", "laneway");

/** Starts `laneway mock ARGS`; resolves to { url, addr, stats(), stop() }. */
export async function mock(...args) {
  const proc = spawn(BIN, ["mock", "--listen", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "ignore"] });
  const lines = createInterface({ input: proc.stdout });
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the mock did not start")), 30_000);
    lines.on("line", (l) => {
      if (l.startsWith("listening on http://")) {
        clearTimeout(timer);
        resolve(l.slice("listening on http://".length).trim());
      }
    });
    proc.on("exit", () => reject(new Error("the mock exited")));
  });
  return {
    addr,
    url: `http://${addr}/v1`,
    async stats() {
      const r = await fetch(`http://${addr}/mock/stats`);
      return r.json();
    },
    stop() {
      proc.kill();
    },
  };
}

/** Waits, a bounded number of times, until `cond()` holds. */
export async function until(cond, what, tries = 1000) {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

export const chats = (n, extra = {}) =>
  Array.from({ length: n }, (_, i) => ({ model: "mock-1", messages: [{ role: "user", content: `item ${i}` }], ...extra }));
