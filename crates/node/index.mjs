// The ESM entry: the same module as the CommonJS one.
import laneway from "./index.js";

export const {
  parallelCompletions, iterCompletions, Lanes,
  LanewayError, RateLimitError, TimeoutError, ConnectionError,
} = laneway;
export default laneway;
