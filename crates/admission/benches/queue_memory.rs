//! Memory held by admission for queued requests: 10,000 requests waiting on one lane, measured
//! as the growth of the process's resident memory. HTTP connections are not included (see
//! `bench/admission.py` for the whole gateway).
//!
//! Run: `cargo bench -p laneway-admission --bench queue_memory`

use std::time::Duration;

use laneway_admission::{acquire, Ask, Key, KeySpec, Lane, LaneSpec, Mode, RateSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let lane = Lane::new(LaneSpec {
            name: "bench".into(),
            max_concurrent: Some(1),
            rates: RateSpec::default(),
            queue_max_len: 20_000,
            queue_timeout: Duration::from_secs(600),
            on_limit: Mode::Queue,
            adaptive: false,
            max_pause: Duration::from_secs(300),
        });
        let key = Key::new(1, KeySpec::anonymous());
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        let ask = |tag| Ask { key: &key, priority: 0, tokens: 100, deadline, cancel: &cancel, tag };
        let _running = acquire(std::slice::from_ref(&lane), ask(0)).await.expect("first slot");
        let before = rss_kib();
        let mut tasks = Vec::with_capacity(10_000);
        for i in 0..10_000u64 {
            let (lane, key, cancel) = (lane.clone(), key.clone(), cancel.clone());
            tasks.push(tokio::spawn(async move {
                let a = Ask { key: &key, priority: 0, tokens: 100, deadline, cancel: &cancel, tag: i + 1 };
                let _ = acquire(&[lane], a).await;
            }));
        }
        while lane.queued() < 10_000 {
            tokio::task::yield_now().await;
        }
        let after = rss_kib();
        println!(
            "10000 queued requests (waiter, queue entry and the waiting task): RSS +{:.1} MiB, {} bytes each",
            (after - before) as f64 / 1024.0,
            (after - before) * 1024 / 10_000
        );
        cancel.cancel();
        for t in tasks {
            let _ = t.await;
        }
    });
}
