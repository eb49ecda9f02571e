// laneway: parallel completions for Node programs, with Laneway's lanes, limits, queues and
// retries. The requests run in Rust (the native addon, laneway.node), off the JS thread.
"use strict";

const path = require("node:path");

const native = require(process.env.LANEWAY_NODE_ADDON || path.join(__dirname, "laneway.node"));

/** A request that failed: HTTP `status` (null when no answer came), OpenAI error `code`,
 * `retryAfter` in seconds and the `requestId`. */
class LanewayError extends Error {
  constructor(message, { status = null, code = null, retryAfter = null, requestId = null } = {}) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}
/** HTTP 429. */
class RateLimitError extends LanewayError {}
/** The item did not finish within its timeout. */
class TimeoutError extends LanewayError {}
/** No answer: the upstream could not be reached, the connection broke, or the run was aborted. */
class ConnectionError extends LanewayError {}

function toError(e) {
  const Kind =
    e.status === 429 ? RateLimitError :
    e.code === "timeout" ? TimeoutError :
    e.status === null ? ConnectionError : LanewayError;
  return new Kind(e.message, {
    status: e.status, code: e.code, retryAfter: e.retry_after, requestId: e.request_id ?? null,
  });
}

/** Lanes from a Laneway config, run in this process: `new Lanes({ config: "laneway.toml" })`
 * or `new Lanes({ configText: "[[lane]]\n..." })`, with `apiKey` one of its `[[key]]`s. */
class Lanes {
  constructor(options) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("Lanes takes an object: { config: 'laneway.toml' } or { configText: '...' }");
    }
    const { config, configText, apiKey } = options;
    if ((config === undefined) === (configText === undefined)) {
      throw new TypeError("Lanes needs one of `config` (a file path) or `configText` (TOML)");
    }
    const source = config ?? configText;
    if (typeof source !== "string") {
      throw new TypeError(`Lanes: ${config !== undefined ? "config" : "configText"} must be a string`);
    }
    if (apiKey !== undefined && typeof apiKey !== "string") {
      throw new TypeError("Lanes: apiKey must be a string");
    }
    this._native = new native.NativeLanes(source, configText !== undefined, apiKey);
  }
}

const MOST = 1 << 20;

function nativeArgs(requests, options) {
  if (!Array.isArray(requests)) {
    throw new TypeError(`requests must be an array of request objects, not ${typeof requests}`);
  }
  requests.forEach((r, i) => {
    if (r === null || typeof r !== "object" || Array.isArray(r)) {
      throw new TypeError(`requests[${i}] must be an object (an OpenAI request body)`);
    }
  });
  const o = options ?? {};
  if (typeof o !== "object") throw new TypeError("options must be an object");
  const { concurrency = 8, returnExceptions = true, timeout, onProgress, signal, baseURL, apiKey, lanes } = o;
  let bound = concurrency;
  const adaptive = concurrency === "auto";
  if (adaptive) bound = 256;
  else if (!Number.isInteger(concurrency)) {
    throw new TypeError(`concurrency must be a whole number or "auto", not ${JSON.stringify(concurrency)}`);
  } else if (concurrency < 1 || concurrency > MOST) {
    throw new RangeError(`concurrency must be from 1 to ${MOST}, not ${concurrency}`);
  }
  if (typeof returnExceptions !== "boolean") throw new TypeError("returnExceptions must be a boolean");
  if (timeout !== undefined && (typeof timeout !== "number" || !(timeout > 0) || !Number.isFinite(timeout))) {
    throw new TypeError("timeout must be a positive number of milliseconds");
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError("onProgress must be a function");
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError("signal must be an AbortSignal");
  }
  if (lanes !== undefined && !(lanes instanceof Lanes)) throw new TypeError("lanes must be a laneway.Lanes");
  if (lanes !== undefined && baseURL !== undefined) throw new TypeError("give baseURL or lanes, not both");
  if (lanes === undefined && typeof baseURL !== "string") {
    throw new TypeError("baseURL must be a string (a gateway's or provider's URL), or give lanes");
  }
  if (apiKey !== undefined && typeof apiKey !== "string") throw new TypeError("apiKey must be a string");
  // Called on the JS thread with the counts the run keeps.
  const progress = onProgress && ((counts) => {
    const [done, failed, inFlight, queued, total, promptTokens, completionTokens] = counts;
    onProgress({ done, failed, inFlight, queued, total, promptTokens, completionTokens });
  });
  return {
    args: [
      JSON.stringify(requests),
      { concurrency: bound, adaptive, timeoutMs: timeout, failFast: !returnExceptions,
        baseUrl: baseURL, apiKey },
      lanes ? lanes._native : undefined,
      progress || undefined,
    ],
    returnExceptions,
    signal,
  };
}

function toResult(requests, item) {
  const r = { index: item.index, request: requests[item.index] };
  if (item.error) {
    r.error = toError(item.error);
  } else {
    r.response = item.response;
    if (item.chunks && item.chunks.length) r.chunks = item.chunks;
    if (item.usage) r.usage = { promptTokens: item.usage.prompt_tokens, completionTokens: item.usage.completion_tokens };
  }
  return r;
}

/** Yields each result as it finishes. Breaking out of the loop, aborting `signal` or (with
 * `returnExceptions: false`) the first failure stops the run: what is queued never starts and
 * what runs is cancelled upstream. */
async function* iterCompletions(requests, options) {
  const { args, returnExceptions, signal } = nativeArgs(requests, options);
  if (signal?.aborted) throw signal.reason ?? new ConnectionError("aborted", { code: "cancelled" });
  const stream = native.stream(...args);
  const onAbort = () => stream.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const raw = await stream.next();
      if (raw === null) {
        if (signal?.aborted) throw signal.reason ?? new ConnectionError("aborted", { code: "cancelled" });
        return;
      }
      // Every item finished since the last call, in one list.
      for (const item of JSON.parse(raw)) {
        if (item.fatal) throw new LanewayError(item.fatal);
        const result = toResult(requests, item);
        if (result.error && !returnExceptions) throw result.error;
        yield result;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    stream.close();
  }
}

/** Runs every request and resolves to the results in input order, each with `response` or
 * `error`, and `usage`: the tokens of the whole run. */
async function parallelCompletions(requests, options) {
  const out = new Array(Array.isArray(requests) ? requests.length : 0);
  const usage = { promptTokens: 0, completionTokens: 0 };
  for await (const r of iterCompletions(requests, options)) {
    out[r.index] = r;
    if (r.usage) {
      usage.promptTokens += r.usage.promptTokens;
      usage.completionTokens += r.usage.completionTokens;
    } else if (r.response && r.response.usage) {
      const u = r.response.usage;
      usage.promptTokens += u.prompt_tokens ?? u.input_tokens ?? 0;
      usage.completionTokens += u.completion_tokens ?? u.output_tokens ?? 0;
    }
  }
  out.usage = usage;
  return out;
}

module.exports = {
  parallelCompletions, iterCompletions, Lanes,
  LanewayError, RateLimitError, TimeoutError, ConnectionError,
};
