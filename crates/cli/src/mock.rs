//! `laneway mock`: the OpenAI-compatible fake upstream.

use std::net::SocketAddr;
use std::process::ExitCode;

use laneway_mock::{MockConfig, MockServer};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:8401")]
    listen: SocketAddr,
    /// Time to first byte, in milliseconds
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Uniform jitter around the latency, in milliseconds
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Streaming pace of output tokens; 0 sends them all at once
    #[arg(long, default_value_t = 0.0)]
    tokens_per_second: f64,
    /// Completion length in tokens
    #[arg(long, default_value_t = 16)]
    output_tokens: u32,
    /// Above this many requests in flight, answer 429 with Retry-After
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Requests per minute; beyond it 429 with Retry-After and x-ratelimit-* headers
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute; beyond it 429 with Retry-After and x-ratelimit-* headers
    #[arg(long)]
    tpm: Option<u64>,
    /// Fraction of requests answered 500 (0 to 1)
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Above this many in flight, each extra request adds 10% of the latency
    #[arg(long)]
    slowdown_above: Option<u32>,
    /// Seed for jitter and injected errors
    #[arg(long)]
    seed: Option<u64>,
    /// Answer the first N requests with --fail-status (scripted failures)
    #[arg(long, default_value_t = 0)]
    fail_first: u64,
    /// Status of the scripted failures
    #[arg(long, default_value_t = 429)]
    fail_status: u16,
    /// Error code in the scripted failures' body (e.g. insufficient_quota)
    #[arg(long)]
    fail_code: Option<String>,
    /// Retry-After of the scripted failures, in milliseconds (0: none)
    #[arg(long, default_value_t = 1000)]
    fail_retry_after_ms: u64,
    /// Hold every admitted request until released with POST /mock/release?n=N
    #[arg(long)]
    hold: bool,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(false);
    let cfg = MockConfig {
        latency_ms: a.latency_ms,
        jitter_ms: a.jitter_ms,
        tokens_per_second: a.tokens_per_second,
        output_tokens: a.output_tokens,
        max_concurrent: a.max_concurrent,
        rpm: a.rpm,
        tpm: a.tpm,
        error_rate: a.error_rate,
        slowdown_above: a.slowdown_above,
        seed: a.seed,
        fail_first: a.fail_first,
        fail_status: a.fail_status,
        fail_code: a.fail_code,
        fail_retry_after_ms: a.fail_retry_after_ms,
        hold: a.hold,
    };
    // Named as the flag that was typed, not as the config's field.
    cfg.check()
        .map_err(|e| anyhow::anyhow!("--{} {}", e.field.replace('_', "-"), e.problem))?;
    let server = MockServer::start(a.listen, cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    println!("listening on http://{}", server.addr);
    println!("  try: curl -s http://{}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"mock-1\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'", server.addr);
    println!("  stats: http://{}/mock/stats", server.addr);
    crate::signals::terminated().await;
    Ok(ExitCode::SUCCESS)
}

/// The upstreams of `kind = "mock"` lanes, started in this process on a free loopback port
/// and kept across reloads by lane name.
#[derive(Default)]
pub struct MockLanes(
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<laneway_mock::MockServer>>>,
);

impl laneway_engine::MockLanes for MockLanes {
    fn url_for<'a>(
        &'a self,
        lane: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<String>> + Send + 'a>>
    {
        Box::pin(async move {
            let known = |m: &Self| {
                m.0.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(lane)
                    .map(|s| s.url())
            };
            if let Some(url) = known(self) {
                return Ok(url);
            }
            let config = laneway_mock::MockConfig::new();
            let mock = laneway_mock::MockServer::start(([127, 0, 0, 1], 0).into(), config).await?;
            let url = mock.url();
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(lane.to_owned(), std::sync::Arc::new(mock));
            Ok(url)
        })
    }
}
