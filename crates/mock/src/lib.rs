//! An OpenAI-compatible fake upstream for demos, tests and benchmarks.
//!
//! It depends on nothing else in Laneway, so tests never confirm the gateway with its own logic.
//! It must stay much faster than the gateway, because benchmarks use it as the baseline: the
//! request path is a handful of atomics, one small JSON parse and one pre-sized write.
//!
//! # Layout
//! - [`MockConfig`]: latency, pacing, limits and failure injection (the `laneway mock` flags).
//! - `stats`: the counters behind `GET /mock/stats`.
//! - `bucket`: continuously refilling request and token buckets for `--rpm` / `--tpm`.
//! - `handlers`: the OpenAI endpoints and admission into the mock.
//! - `body`: JSON and SSE response bodies.

mod body;
mod bucket;
mod handlers;
mod state;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use stats::StatsSnapshot;

/// What the mock does; every field maps to a `laneway mock` flag.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Time to first byte, in milliseconds.
    pub latency_ms: u64,
    /// Uniform jitter added to or taken from the latency, in milliseconds.
    pub jitter_ms: u64,
    /// Streaming pace of output tokens; 0 sends them all at once.
    pub tokens_per_second: f64,
    /// Completion length in tokens (a request's smaller `max_tokens` wins).
    pub output_tokens: u32,
    /// Above this many in flight, answer 429 with `Retry-After`.
    pub max_concurrent: Option<u32>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// Fraction of requests answered 500.
    pub error_rate: f64,
    /// Above this many in flight, each extra in-flight request adds 10% of the latency.
    pub slowdown_above: Option<u32>,
    pub seed: Option<u64>,
    /// The first N requests are answered with `fail_status` (scripted failures for tests).
    pub fail_first: u64,
    /// Status of the scripted failures (429 by default).
    pub fail_status: u16,
    /// Error code in their body, e.g. `insufficient_quota`.
    pub fail_code: Option<String>,
    /// `Retry-After` of the scripted failures, in milliseconds (0 sends none).
    pub fail_retry_after_ms: u64,
    /// Hold every admitted request at a gate until released (`POST /mock/release`), so tests
    /// decide when answers come instead of racing a latency.
    pub hold: bool,
}

impl MockConfig {
    pub fn new() -> Self {
        Self {
            output_tokens: 16,
            fail_status: 429,
            fail_retry_after_ms: 1000,
            ..Self::default()
        }
    }
}

/// A running mock: its address and counters; it stops when dropped.
pub struct MockServer {
    pub addr: SocketAddr,
    state: Arc<state::MockState>,
    stop: CancellationToken,
}

impl MockServer {
    /// Binds `listen` (port 0 for a free one) and serves in the background.
    pub async fn start(listen: SocketAddr, config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state::MockState::new(config));
        let stop = CancellationToken::new();
        let app = handlers::router(state.clone());
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Self { addr, state, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    pub fn reset(&self) {
        self.state.stats.reset();
    }

    /// Lets `n` held requests (all when `None`) go on; returns how many were released.
    pub fn release(&self, n: Option<u64>) -> u64 {
        self.state.release(n)
    }

    /// Turns the gate on or off; off releases everyone held.
    pub fn set_hold(&self, on: bool) {
        self.state.set_hold(on);
    }

    pub fn set_max_concurrent(&self, max: Option<u32>) {
        self.state.set_max_concurrent(max);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
