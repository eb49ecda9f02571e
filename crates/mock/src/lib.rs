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

mod api;
mod body;
mod bucket;
mod handlers;
mod messages;
mod responses;
mod routes;
mod state;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
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

    /// Refuses values that cannot describe an upstream: a status that is not an error, a pace
    /// or rate that is not a number, a limit of 0, an answer too long to build. Waits too long
    /// for a `Duration` (a latency of years, a pace of a token an aeon) are clamped where they
    /// are computed, by `secs`.
    pub fn check(&self) -> Result<(), BadConfig> {
        let bad = |field, problem: String| Err(BadConfig { field, problem });
        if !(400..=599).contains(&self.fail_status) {
            let got = self.fail_status;
            return bad(
                "fail_status",
                format!("must be an error status from 400 to 599, got {got}"),
            );
        }
        let tps = self.tokens_per_second;
        if !(tps.is_finite() && tps >= 0.0) {
            return bad(
                "tokens_per_second",
                format!("must be 0 or a positive number, got {tps}"),
            );
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            let got = self.error_rate;
            return bad("error_rate", format!("must be between 0 and 1, got {got}"));
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            let field = if self.rpm == Some(0) { "rpm" } else { "tpm" };
            return bad(
                field,
                "must be at least 1; leave it out for no limit".into(),
            );
        }
        if self.output_tokens > MAX_OUTPUT_TOKENS {
            let got = self.output_tokens;
            return bad(
                "output_tokens",
                format!("must be at most {MAX_OUTPUT_TOKENS}, got {got}"),
            );
        }
        Ok(())
    }
}

/// A config value the mock refuses: which field, and why.
#[derive(Debug)]
pub struct BadConfig {
    pub field: &'static str,
    pub problem: String,
}

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for BadConfig {}

/// The longest completion the mock writes: about 6 MB of text, enough for any test.
pub const MAX_OUTPUT_TOKENS: u32 = 1_000_000;

/// The longest wait the mock computes (latency, pace, Retry-After): a day. Beyond it a value is a
/// mistake, and `Duration::from_secs_f64` would panic on infinity (a limit of 0 per minute).
const LONGEST: Duration = Duration::from_secs(86_400);

/// Seconds as a `Duration`, clamped to `[0, LONGEST]`; NaN reads as 0.
pub(crate) fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s).map_or(LONGEST, |d| d.min(LONGEST))
}

/// The mock's listening socket, with the gateway's accept backlog of 1024. `TcpListener::bind`
/// leaves 128: a client that opens 256 connections at once overflows it, the kernel drops the
/// SYNs that do not fit, and the client waits a full second for its retransmit, a stall that is
/// the listener's, not the mock's or the client's.
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
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
        config
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = listener(listen)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state::MockState::new(config));
        let stop = CancellationToken::new();
        let app = routes::router(state.clone());
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
