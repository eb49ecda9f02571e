//! Retries, budgets, cooldowns, circuits, fallbacks and adaptive limits against real mocks.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::Value;

use crate::util::*;

fn two_lanes(a: &str, b: &str, extra: &str) -> String {
    format!(
        "{extra}\n[[lane]]\nname = \"a\"\nurl = \"{a}\"\n[[lane]]\nname = \"b\"\nurl = \"{b}\"\n\
         [[route]]\nmodel = \"mock-*\"\nlanes = [\"a\", \"b\"]\n"
    )
}

async fn lane_state(g: &laneway_server::Gateway, name: &str) -> laneway_admission::LaneSnapshot {
    g.app.topo.load().lane(name).unwrap().lane.snapshot()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after() {
    let mut cfg = mock_cfg();
    cfg.fail_first = 1;
    cfg.fail_retry_after_ms = 700;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let t0 = tokio::time::Instant::now();
    let r = chat(&client(), g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "the upstream's Retry-After was not honoured"
    );
    assert_eq!((m.stats().requests, m.stats().rejected_429), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_errors_and_bad_requests_are_not_retried() {
    let mut cfg = mock_cfg();
    cfg.fail_first = 1;
    cfg.fail_code = Some("insufficient_quota".into());
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let r = chat(&client(), g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 429, "an upstream 429 stays a 429");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "insufficient_quota");
    assert_eq!(m.stats().requests, 1);

    let mut cfg = mock_cfg();
    cfg.fail_first = 1;
    cfg.fail_status = 400;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    assert_eq!(
        chat(&client(), g.addr, &chat_body("mock-1")).await.status(),
        400
    );
    assert_eq!(m.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_the_other_lane_of_the_pool() {
    let mut bad = mock_cfg();
    bad.error_rate = 1.0;
    let a = mock(bad).await;
    let b = mock(mock_cfg()).await;
    let g = gateway(
        &two_lanes(&a.url(), &b.url(), "[retry]\nmax_attempts = 2"),
        "",
    )
    .await;
    let c = client();
    for _ in 0..6 {
        assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    }
    assert!(a.stats().requests >= 1, "the failing lane was tried");
    assert_eq!(
        b.stats().completed,
        6,
        "every retry went to the healthy lane"
    );
    assert!(a.stats().requests <= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_keeps_a_failing_upstream_from_a_storm() {
    let mut cfg = mock_cfg();
    cfg.error_rate = 1.0;
    let m = mock(cfg).await;
    let extra = "[retry]\nmax_attempts = 3\nbudget = { ratio = 0.2, min_per_second = 0 }\nbackoff = { base = \"1ms\", max = \"2ms\" }";
    let g = simple(&m.url(), "", extra).await;
    let c = client();
    let mut answered = 0;
    for _ in 0..10 {
        let body = chat_body("mock-1");
        let rs = join_all((0..20).map(|_| chat(&c, g.addr, &body))).await;
        for r in rs {
            // The upstream's own error, or 503 once the lane's circuit has opened.
            match r.status().as_u16() {
                500 => answered += 1,
                503 => assert_eq!(error_code(r).await, "no_lane_available"),
                other => panic!("unexpected {other}"),
            }
        }
    }
    let seen = m.stats().requests;
    assert!(answered > 0);
    assert!(
        seen as f64 <= 1.2 * answered as f64 + 1.0,
        "{answered} requests reached the upstream in {seen} attempts (budget 20%)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_lane_cools_down_while_its_pool_mate_serves() {
    let mut limited = mock_cfg();
    limited.fail_first = 1;
    limited.fail_retry_after_ms = 2000;
    let a = mock(limited).await;
    let b = mock(mock_cfg()).await;
    let toml = format!(
        "[server]\nadmin_key = \"adm\"\n{}",
        two_lanes(&a.url(), &b.url(), "")
    );
    let g = gateway(&toml, "").await;
    let c = client();
    // Whichever lane the first request tries, lane a answers its first request with 429.
    while a.stats().requests == 0 {
        assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    }
    let lanes: Value = c
        .get(url(g.addr, "/admin/lanes"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_view = lanes
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a_view["state"], "cooling_down", "{lanes}");
    assert!(a_view["cooldown_until"].is_string());
    for _ in 0..10 {
        assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    }
    assert_eq!(
        a.stats().requests,
        1,
        "nothing was sent to the cooling lane"
    );
    assert_eq!(
        lane_state(&g, "a").await.health,
        laneway_admission::Health::CoolingDown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_serve_when_the_route_fails_and_503_when_all_are_open() {
    let mut bad = mock_cfg();
    bad.error_rate = 1.0;
    let primary = mock(bad.clone()).await;
    let backup = mock(mock_cfg()).await;
    let toml = format!(
        r#"
[retry]
max_attempts = 2
backoff = {{ base = "1ms", max = "2ms" }}
[[lane]]
name = "primary"
url = "{}"
[[lane]]
name = "backup"
url = "{}"
model = "backup-model"
[[route]]
model = "mock-*"
lanes = ["primary"]
fallbacks = ["backup-*"]
[[route]]
model = "backup-*"
lanes = ["backup"]
"#,
        primary.url(),
        backup.url()
    );
    let g = gateway(&toml, "").await;
    let v: Value = chat(&client(), g.addr, &chat_body("mock-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "backup-model", "answered by the fallback");
    assert_eq!(primary.stats().requests, 2);

    // Both routes failing: the upstream's error first, then, once the circuits open, 503.
    let dead = mock(bad).await;
    let toml = toml.replace(&backup.url(), &dead.url());
    let g = gateway(&toml, "").await;
    let c = client();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = chat(&c, g.addr, &chat_body("mock-1")).await;
        let status = r.status().as_u16();
        if status == 503 {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            codes.push(error_code(r).await);
            break;
        }
        assert_eq!(status, 500);
        codes.push("500".into());
    }
    assert_eq!(
        codes.last().map(String::as_str),
        Some("no_lane_available"),
        "{codes:?}"
    );
    assert_eq!(
        lane_state(&g, "primary").await.health,
        laneway_admission::Health::Open
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_lane_learns_a_hidden_capacity() {
    let mut cfg = mock_cfg();
    cfg.max_concurrent = Some(6);
    cfg.latency_ms = 50;
    cfg.fail_retry_after_ms = 0;
    let m = mock(cfg).await;
    let g = simple(
        &m.url(),
        "adaptive = true\nqueue = { max_len = 1000, timeout = \"60s\" }",
        "[retry]\nmax_attempts = 5\nbudget = { ratio = 0.5, min_per_second = 10 }",
    )
    .await;
    let c = client();
    let body = chat_body("mock-1");
    // 600 requests from 150 clients at once: what a busy caller sends. (A stampede of hundreds
    // of new connections on this 2-core machine delays the upstream's refusals enough for slow
    // start to run past the edge before the first one is back; the paused-time matrix in
    // admission covers the algorithm itself.) The upstream takes 50 ms, as a fast model does:
    // slow start is paced by the round trip, and with a shorter one the moments a loaded
    // machine leaves this process unscheduled count as rounds in which no refusal is heard.
    // With 20 ms, a machine kept busy by other work saw up to 41 refusals; with 50 ms, 12.
    let rs: Vec<_> = futures_util::stream::iter((0..600).map(|_| chat(&c, g.addr, &body)))
        .buffer_unordered(150)
        .collect()
        .await;
    let statuses: Vec<u16> = rs
        .iter()
        .map(|r| r.status().as_u16())
        .filter(|&s| s != 200)
        .collect();
    assert!(statuses.is_empty(), "{statuses:?}");
    let s = m.stats();
    assert!(
        s.rejected_429 <= 30,
        "{} upstream 429s for 600 requests",
        s.rejected_429
    );
    // Never above what the upstream takes. How close from below it settles depends on latency
    // noise on a busy machine; convergence itself is tested on simulated time in admission.
    let limit = lane_state(&g, "m").await.limit.unwrap();
    assert!((1..=8).contains(&limit), "learned limit {limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_upstream_budget_pauses_the_lane_for_one_refill_step() {
    let mut cfg = mock_cfg();
    cfg.rpm = Some(30);
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    for _ in 0..30 {
        let r = chat(&c, g.addr, &chat_body("mock-1")).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // The last answer said: 0 remaining, full again in 60 s, limit 30. The next request fits
    // after one refill step (2 s), so that is the pause, not the minute.
    let s = lane_state(&g, "m").await;
    assert_eq!(s.health, laneway_admission::Health::CoolingDown);
    let pause = s.cooldown_until.unwrap();
    // Read some time after it was set, so only the upper bound is exact.
    assert!(pause <= Duration::from_secs(2), "{pause:?}");
    assert_eq!(m.stats().rejected_429, 0, "nothing was sent to be refused");
}
