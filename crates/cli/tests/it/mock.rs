//! The mock upstream tells the truth: tests and benchmarks rely on its counters.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_have_one_vector_per_input() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    for (input, n) in [
        (json!("one"), 1),
        (json!(["a", "b", "c"]), 3),
        (json!([[1, 2], [3]]), 2),
        (json!([1, 2, 3]), 1),
    ] {
        let v: Value = c
            .post(url(g.addr, "/v1/embeddings"))
            .json(&json!({"model": "mock-embed", "input": input}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), n, "{input}");
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_counts_only_admitted_requests() {
    let mut cfg = mock_cfg();
    cfg.max_concurrent = Some(2);
    cfg.hold = true;
    let m = mock(cfg).await;
    let c = client();
    let calls = (0..6).map(|_| {
        let (c, u) = (c.clone(), format!("{}/chat/completions", m.url()));
        tokio::spawn(async move {
            let r = c.post(u).json(&chat_body("mock-1")).send().await.unwrap();
            r.status().as_u16()
        })
    });
    let calls: Vec<_> = calls.collect();
    let s = stats_until(&m, |s| s.held == 2 && s.rejected_429 == 4).await;
    assert_eq!(
        (s.held, s.rejected_429, s.max_in_flight),
        (2, 4, 2),
        "{s:?}"
    );
    assert_eq!(m.release(None), 2);
    let mut statuses: Vec<u16> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    let s = m.stats();
    assert_eq!((s.completed, s.in_flight, s.max_in_flight), (2, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_releases_exactly_what_the_test_asks_over_http() {
    let m = mock(mock_cfg()).await;
    let c = client();
    let base = format!("http://{}", m.addr);
    let post = |path: &str, body: Value| {
        let (c, u) = (c.clone(), format!("{base}{path}"));
        async move {
            let r = c.post(u).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(post("/mock/config", json!({"hold": true})).await.0, 200);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (c, u) = (c.clone(), format!("{}/chat/completions", m.url()));
            tokio::spawn(async move {
                c.post(u)
                    .json(&chat_body("mock-1"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    stats_until(&m, |s| s.held == 3).await;
    let (status, v) = post("/mock/release?n=1", Value::Null).await;
    assert_eq!(
        (status, v["released"].as_u64(), v["held"].as_u64()),
        (200, Some(1), Some(2))
    );
    let (_, stats) = {
        let r = c.get(format!("{base}/mock/stats")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let mut fields: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "cancelled",
            "completed",
            "errors_injected",
            "in_flight",
            "max_in_flight",
            "rejected_429",
            "requests"
        ],
        "the documented fields, no more"
    );
    let s = stats_until(&m, |s| s.completed == 1).await;
    assert_eq!((s.completed, s.held), (1, 2));
    let (status, v) = post("/mock/config", json!({"max_concurrent": "two"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(post("/mock/config", json!({"hold": false})).await.0, 200);
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(m.stats().completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_enforces_tokens_per_minute_and_slows_down_under_load() {
    let mut cfg = mock_cfg();
    cfg.tpm = Some(80);
    let m = mock(cfg).await;
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c
            .post(format!("{}/chat/completions", m.url()))
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("x-ratelimit-remaining-tokens"));
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(
                r.headers()["retry-after-ms"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    > 0
            );
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "each request costs 25 tokens (9 of prompt: `hello` and one message's framing; 16 of output) of 80"
    );

    let mut cfg = mock_cfg();
    cfg.latency_ms = 100;
    cfg.slowdown_above = Some(1);
    cfg.hold = true;
    let m = mock(cfg).await;
    let body = chat_body("mock-1");
    let all = tokio::spawn({
        let (c, u) = (c.clone(), format!("{}/chat/completions", m.url()));
        async move { join_all((0..11).map(|_| c.post(&u).json(&body).send())).await }
    });
    // All eleven are in flight at once, held at the gate; then they go.
    stats_until(&m, |s| s.held == 11).await;
    let started = tokio::time::Instant::now();
    m.release(None);
    all.await.unwrap();
    // Ten requests above the threshold: the last one waits 100 ms + 10 × 10 ms.
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(m.stats().max_in_flight, 11);
}

/// A pace of one token an aeon is clamped to a wait the mock can compute, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_pace_is_answered_not_panicked_on() {
    let mut cfg = mock_cfg();
    cfg.tokens_per_second = 1e-300;
    let m = mock(cfg).await;
    let c = client();
    let body = json!({"model": "mock-1", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut r = c
        .post(format!("{}/chat/completions", m.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(
        first.starts_with(b"data: "),
        "the role chunk goes out at once"
    );
}
