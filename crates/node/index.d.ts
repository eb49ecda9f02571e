// Types of the laneway Node package: parallel completions with Laneway's lanes, limits,
// queues and retries, run in Rust off the JS thread.

/** An OpenAI (or Anthropic) request body, with an optional `url` naming its endpoint:
 * `/v1/chat/completions` (the default), `/v1/completions`, `/v1/embeddings`, `/v1/responses`,
 * `/v1/messages`, `/v1/moderations`, … */
export interface CompletionRequest {
  model: string;
  url?: string;
  [field: string]: unknown;
}

/** Where a run stands, after every item. */
export interface Progress {
  done: number;
  failed: number;
  inFlight: number;
  queued: number;
  total: number;
  promptTokens: number;
  completionTokens: number;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** A request that failed. */
export class LanewayError extends Error {
  constructor(
    message: string,
    fields?: { status?: number | null; code?: string | null; retryAfter?: number | null; requestId?: string | null },
  );
  /** HTTP status; null when no answer came. */
  readonly status: number | null;
  /** The OpenAI error code (`rate_limit`, `model_not_found`, …) or `timeout`, `connection_error`, `cancelled`. */
  readonly code: string | null;
  /** Seconds until capacity is expected, when the answer said. */
  readonly retryAfter: number | null;
  readonly requestId: string | null;
}
/** HTTP 429. */
export class RateLimitError extends LanewayError {}
/** The item did not finish within its timeout. */
export class TimeoutError extends LanewayError {}
/** No answer: the upstream could not be reached, the connection broke, or the run was aborted. */
export class ConnectionError extends LanewayError {}

/** One request's outcome: `response` (the upstream's JSON) or `error`. */
export interface CompletionResult<R extends CompletionRequest = CompletionRequest> {
  index: number;
  request: R;
  response?: Record<string, any>;
  /** A streamed request's chunks, as they came. */
  chunks?: Record<string, any>[];
  /** A streamed request's usage. */
  usage?: Usage;
  error?: LanewayError;
}

/** Lanes from a Laneway config, run in this process: its lane and key limits apply, no server. */
export class Lanes {
  constructor(options: { config: string; apiKey?: string } | { configText: string; apiKey?: string });
}

export interface CompletionOptions {
  /** Most requests in flight at once (default 8), or `"auto"` to learn the upstream's capacity. */
  concurrency?: number | "auto";
  /** Keep failures in `error` (default true), or reject on the first one and abort the rest. */
  returnExceptions?: boolean;
  /** Milliseconds each item may take, retries included (default ten minutes). */
  timeout?: number;
  /** Called on the JS thread after every item. */
  onProgress?: (progress: Progress) => void;
  /** Aborting it cancels every request still queued or running. */
  signal?: AbortSignal;
  /** A gateway's or provider's base URL (`http://127.0.0.1:8400/v1`; a root URL means its `/v1`). */
  baseURL?: string;
  apiKey?: string;
  /** Run a config's lanes in this process instead of sending to `baseURL`. */
  lanes?: Lanes;
}

/** The results in input order, with the tokens of the whole run. */
export type CompletionResults<R extends CompletionRequest = CompletionRequest> = CompletionResult<R>[] & {
  usage: Usage;
};

export function parallelCompletions<R extends CompletionRequest>(
  requests: R[],
  options: CompletionOptions,
): Promise<CompletionResults<R>>;

export function iterCompletions<R extends CompletionRequest>(
  requests: R[],
  options: CompletionOptions,
): AsyncGenerator<CompletionResult<R>, void, undefined>;

declare const laneway: {
  parallelCompletions: typeof parallelCompletions;
  iterCompletions: typeof iterCompletions;
  Lanes: typeof Lanes;
  LanewayError: typeof LanewayError;
  RateLimitError: typeof RateLimitError;
  TimeoutError: typeof TimeoutError;
  ConnectionError: typeof ConnectionError;
};
export default laneway;
