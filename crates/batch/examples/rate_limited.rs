//! N requests through a lane limited to `rpm` in front of a mock that enforces the same `rpm`:
//! how close the run gets to the limit, how many 429s the upstream gave, and memory as it goes.
//! `cargo run --release -p laneway-batch --example rate_limited [requests] [rpm]`.

use std::time::Duration;

use laneway_batch::{Concurrency, Request, Runner};
use laneway_mock::{MockConfig, MockServer};
use serde_json::json;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rpm: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(6000);
    let mut cfg = MockConfig::new();
    cfg.rpm = Some(rpm);
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), cfg).await?;
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\nrpm = {rpm}\nqueue = {{ max_len = 100000, timeout = \"30m\" }}\n\
         [[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n[server]\nrequest_timeout = \"30m\"\n",
        mock.url()
    ))
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let runner = Runner::with_lanes(config, None)
        .await?
        .concurrency(Concurrency::Fixed(256))
        .timeout(Duration::from_secs(1800));
    let requests: Vec<Request> = (0..n)
        .map(|i| Request::chat(json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("item {i}")}]})))
        .collect();
    let rss_start = rss_mib();
    let t0 = tokio::time::Instant::now();
    // Items are handed over as they finish and not kept, so memory stays flat in `n`.
    let (mut failed, mut rss_peak) = (0usize, rss_start);
    let mut refusals = Vec::new();
    {
        use futures_util::StreamExt;
        let mut items = Box::pin(runner.stream(requests));
        let mut seen = 0usize;
        let mut refused = 0;
        while let Some(item) = items.next().await {
            failed += usize::from(item.result.is_err());
            seen += 1;
            // When the upstream refused, so a 429 can be told apart by where in the run it came.
            let now = mock.stats().rejected_429;
            if now > refused {
                refused = now;
                refusals.push((t0.elapsed().as_secs_f64(), seen));
            }
            if seen % 500 == 0 {
                rss_peak = rss_peak.max(rss_mib());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = mock.stats();
    // The lane starts with a full minute's allowance (as the upstream's bucket does); after that
    // the limit allows rpm / 60 per second.
    let steady = n.saturating_sub(rpm as usize) as f64;
    let ideal = steady / (f64::from(rpm) / 60.0);
    println!(
        "{n} requests at rpm {rpm}: {:.1} s (ideal {:.1} s: {:.0}% of the limit), {} failed, upstream 429s {}, RSS {:.0} MiB with the requests built, peak {:.0} MiB while running",
        secs,
        ideal,
        100.0 * ideal / secs,
        failed,
        s.rejected_429,
        rss_start,
        rss_peak
    );
    for (at, done) in refusals {
        println!("  an upstream 429 noticed at {at:.2} s, after {done} items had finished");
    }
    Ok(())
}
