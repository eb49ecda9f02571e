//! Requests per second of the runner against a zero-latency mock in this process, through a base
//! URL and through in-process lanes: `cargo run --release -p laneway-batch --example throughput
//! [requests] [concurrency] [url|lanes]`. Numbers are in docs/BENCHMARKS.md. With `MOCK_URL` set (for
//! example to a `laneway mock` in its own process) that upstream is used instead, so the CPU of
//! the runner and of the upstream can be measured apart.

use laneway_batch::{Concurrency, Request, Runner};
use laneway_mock::{MockConfig, MockServer};
use serde_json::json;

async fn measure(name: &str, runner: &Runner, n: usize) {
    let requests: Vec<Request> = (0..n)
        .map(|i| Request::chat(json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("item {i}")}]})))
        .collect();
    let t0 = tokio::time::Instant::now();
    let report = runner.run(requests).await;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{name}: {n} requests, {} failed, {:.0} requests/s",
        report.failed,
        n as f64 / secs
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    // `url` or `lanes` runs one of the two only.
    let only = args.next().unwrap_or_default();
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), MockConfig::new()).await?;
    let url = std::env::var("MOCK_URL").unwrap_or_else(|_| mock.url());
    let direct = Runner::new(&url, None).concurrency(Concurrency::Fixed(c));
    if only != "lanes" {
        measure("base URL (the mock)", &direct, n).await;
    }
    if only == "url" {
        return Ok(());
    }
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n",
        url
    ))
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let lanes = Runner::with_lanes(config, None)
        .await?
        .concurrency(Concurrency::Fixed(c));
    measure("in-process lanes", &lanes, n).await;
    Ok(())
}
