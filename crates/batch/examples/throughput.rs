//! Requests per second of the runner against a zero-latency mock in this process, through a base
//! URL and through in-process lanes, after a baseline of hyper's own client against the same mock:
//! `cargo run --release -p laneway-batch --example throughput [requests] [concurrency]
//! [url|lanes|baseline]`. Numbers are in docs/BENCHMARKS.md. With `MOCK_URL` set (for
//! example to a `laneway mock` in its own process) that upstream is used instead, so the CPU of
//! the runner and of the upstream can be measured apart.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use laneway_batch::{Concurrency, Request, Runner};
use laneway_mock::{MockConfig, MockServer};
use serde_json::json;

async fn measure(name: &str, runner: &Runner, n: usize) {
    let requests: Vec<Request> = (0..n)
        .map(|i| Request::chat(json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("item {i}")}]})))
        .collect();
    let (cpu0, own0) = (cpu_ms("/proc/self/stat"), cpu_ms("/proc/thread-self/stat"));
    let t0 = tokio::time::Instant::now();
    let r = runner.run(requests).await;
    report(name, n, r.failed, t0, cpu0, own0);
}

/// The reference the two targets are read against, measured in the same process a moment
/// before them: hyper's own pooled client sending the same requests at the same concurrency
/// and reading each answer whole, with nothing else done. This machine's speed swings from one
/// minute to the next; the ratio of a target to this baseline does not.
async fn baseline(url: &str, n: usize, c: usize) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(c)
        .build_http();
    let uri: http::Uri = match format!("{url}/chat/completions").parse() {
        Ok(u) => u,
        Err(e) => return println!("baseline: the URL does not parse: {e}"),
    };
    let (cpu0, own0) = (cpu_ms("/proc/self/stat"), cpu_ms("/proc/thread-self/stat"));
    let t0 = tokio::time::Instant::now();
    let failed = futures_util::stream::iter(0..n)
        .map(|i| {
            let body = format!(
                r#"{{"model":"mock-1","messages":[{{"role":"user","content":"item {i}"}}]}}"#
            );
            let req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)));
            let client = &client;
            async move {
                let Ok(req) = req else { return false };
                match client.request(req).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(c)
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    report("baseline (hyper's client)", n, failed, t0, cpu0, own0);
}

fn report(name: &str, n: usize, failed: usize, t0: tokio::time::Instant, cpu0: f64, own0: f64) {
    let secs = t0.elapsed().as_secs_f64();
    let (cpu, own) = (
        cpu_ms("/proc/self/stat") - cpu0,
        cpu_ms("/proc/thread-self/stat") - own0,
    );
    println!(
        "{name}: {n} requests, {failed} failed, {:.0} requests/s, CPU {:.1} µs per request ({:.1} on the run's own thread)",
        n as f64 / secs,
        cpu * 1000.0 / n as f64,
        own * 1000.0 / n as f64,
    );
}

/// User plus system CPU time in milliseconds from a `/proc/.../stat` file (0 where there is
/// none), in clock ticks of 10 ms: runs of a few seconds are needed for a close figure.
fn cpu_ms(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: indices 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 10.0
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    // `url`, `lanes` or `baseline` runs that one only.
    let only = args.next().unwrap_or_default();
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), MockConfig::new()).await?;
    let url = std::env::var("MOCK_URL").unwrap_or_else(|_| mock.url());
    let direct = Runner::new(&url, None).concurrency(Concurrency::Fixed(c));
    if only.is_empty() || only == "baseline" {
        baseline(&url, n, c).await;
    }
    if only == "baseline" {
        return Ok(());
    }
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
