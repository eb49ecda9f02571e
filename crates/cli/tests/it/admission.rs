//! Lane and key limits, queues, fairness and permits, against real mock upstreams.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::util::*;

async fn flood(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
    n: usize,
    key: Option<&str>,
) -> Vec<reqwest::Response> {
    join_all((0..n).map(|_| {
        let mut r = c
            .post(url(addr, "/v1/chat/completions"))
            .json(&chat_body("mock-1"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move { r.send().await.unwrap() }
    }))
    .await
}

fn retry_after(r: &reqwest::Response) -> (u64, u64) {
    let secs = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ms = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (secs, ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_limit_keeps_the_upstream_within_its_capacity() {
    let mut cfg = mock_cfg();
    cfg.max_concurrent = Some(8);
    cfg.latency_ms = 10;
    let m = mock(cfg).await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 8 }",
        "",
    )
    .await;
    let rs = flood(&client(), g.addr, 400, None).await;
    assert!(
        rs.iter().all(|r| r.status() == 200),
        "every client is served"
    );
    let s = m.stats();
    assert!(s.max_in_flight <= 8, "{s:?}");
    assert_eq!((s.rejected_429, s.completed), (0, 400), "{s:?}");
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_answers_429_with_an_honest_hint() {
    // The mock holds every answer until released: the eight admitted ones stay in flight while
    // the other 32 are refused, whatever the machine's speed.
    let mut cfg = mock_cfg();
    cfg.hold = true;
    let m = mock(cfg).await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 8 }\non_limit = \"reject\"",
        "",
    )
    .await;
    let c = client();
    let all = tokio::spawn({
        let (c, addr) = (c.clone(), g.addr);
        async move { flood(&c, addr, 40, None).await }
    });
    stats_until(&m, |s| s.held == 8).await;
    let metrics_refused = until(Duration::from_secs(10), || async {
        let text = metrics_text(&c, g.addr).await;
        text.contains("laneway_rejected_total{reason=\"concurrency_limit_exceeded\"} 32")
    })
    .await;
    assert!(metrics_refused, "32 refused while 8 are held");
    m.release(None);
    let rs = all.await.unwrap();
    let ok = rs.iter().filter(|r| r.status() == 200).count();
    let refused: Vec<_> = rs.into_iter().filter(|r| r.status() == 429).collect();
    assert_eq!((ok, refused.len()), (8, 32));
    assert_eq!(m.stats().max_in_flight, 8);
    for r in refused {
        let (secs, ms) = retry_after(&r);
        assert!(
            secs >= 1 && ms >= 1 && ms <= 1000 * secs,
            "{secs} s / {ms} ms"
        );
        assert_eq!(error_code(r).await, "concurrency_limit_exceeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_and_a_queue_timeout_are_429s() {
    let mut cfg = mock_cfg();
    cfg.hold = true;
    let m = mock(cfg).await;
    let lane = "concurrency_limit = { max_concurrent_requests = 1 }\nqueue = { max_len = 2, timeout = \"2s\" }";
    let g = simple(&m.url(), lane, "").await;
    let c = client();
    let first = tokio::spawn({
        let (c, addr) = (c.clone(), g.addr);
        async move { flood(&c, addr, 1, None).await }
    });
    stats_until(&m, |s| s.held == 1).await;
    // The slot is held until released: two wait in the queue and time out; once they are in
    // it, two more find it full.
    let waiting = tokio::spawn({
        let (c, addr) = (c.clone(), g.addr);
        async move { flood(&c, addr, 2, None).await }
    });
    let queued = until(Duration::from_secs(10), || async {
        g.app.topo.load().lanes[0].lane.queued() == 2
    })
    .await;
    assert!(queued, "two requests wait in the queue");
    let mut rs = flood(&c, g.addr, 2, None).await;
    rs.extend(waiting.await.unwrap());
    m.release(None);
    rs.extend(first.await.unwrap());
    let mut codes: Vec<String> = Vec::new();
    for r in rs {
        if r.status() == 200 {
            codes.push("ok".into());
        } else {
            assert_eq!(r.status(), 429);
            assert!(retry_after(&r).1 >= 1);
            codes.push(error_code(r).await);
        }
    }
    codes.sort();
    assert_eq!(
        codes,
        [
            "ok",
            "queue_full",
            "queue_full",
            "queue_timeout",
            "queue_timeout"
        ]
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_can_never_fit_the_token_limit_is_refused_at_once() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "tpm = 1000", "").await;
    let mut body = chat_body("mock-1");
    body["max_tokens"] = json!(50_000);
    let r = chat(&client(), g.addr, &body).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never fit"),
        "{v}"
    );
    assert_eq!(m.stats().requests, 0);
}

const TEAM: &str = r#"
[[key]]
name = "team"
key = "sk-team"
concurrency_limit = { max_concurrent_requests = 1 }
rpm = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits_refuse_and_report_remaining_requests() {
    let m = held_mock().await;
    let g = simple(&m.url(), "", TEAM).await;
    let c = client();
    // The first request is held at the mock, so the second finds the key's one slot taken.
    let both = tokio::spawn({
        let (c, addr) = (c.clone(), g.addr);
        async move { flood(&c, addr, 2, Some("sk-team")).await }
    });
    stats_until(&m, |s| s.held == 1).await;
    let refused = until(Duration::from_secs(10), || async {
        metrics_text(&c, g.addr)
            .await
            .contains("laneway_rejected_total{reason=\"concurrency_limit_exceeded\"} 1")
    })
    .await;
    assert!(
        refused,
        "the second request is refused while the first is held"
    );
    m.set_hold(false);
    let rs = both.await.unwrap();
    let mut statuses: Vec<u16> = rs.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 429]);
    let refused = rs.into_iter().find(|r| r.status() == 429).unwrap();
    assert!(refused.headers().contains_key("x-ratelimit-limit-requests"));
    assert_eq!(error_code(refused).await, "concurrency_limit_exceeded");
    let ok = flood(&c, g.addr, 1, Some("sk-team")).await.pop().unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "3");
    assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "1");
    let ok = flood(&c, g.addr, 1, Some("sk-team")).await.pop().unwrap();
    assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "0");
    let limited = flood(&c, g.addr, 1, Some("sk-team")).await.pop().unwrap();
    assert_eq!(limited.status(), 429);
    let (secs, ms) = retry_after(&limited);
    // 3 rpm refills one request every 20 s; some of it has passed during the test.
    assert!(
        (15..=20).contains(&secs) && ms > 14_000,
        "{secs} s, {ms} ms"
    );
    assert_eq!(error_code(limited).await, "rate_limit");
}

/// Sends a chat request with a key and an `x-request-id`, in the background.
fn send_tagged(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
    key: Option<&'static str>,
    id: String,
    extra: Option<(&'static str, &'static str)>,
) -> tokio::task::JoinHandle<u16> {
    let mut r = c
        .post(url(addr, "/v1/chat/completions"))
        .header("x-request-id", id)
        .json(&chat_body("mock-1"));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some((name, value)) = extra {
        r = r.header(name, value);
    }
    tokio::spawn(async move { r.send().await.unwrap().status().as_u16() })
}

/// Waits until the gateway's only lane has `n` requests queued.
async fn queued(g: &laneway_server::Gateway, n: usize) {
    let met = until(Duration::from_secs(10), || async {
        g.app.topo.load().lanes[0].lane.queued() == n
    })
    .await;
    assert!(met, "the lane never had {n} requests queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_keys_share_a_contended_lane() {
    // The lane runs one request at a time and the mock holds each answer, so the order in which
    // the lane starts requests is read exactly, whatever the machine's speed. The fair queue's
    // arithmetic is tested on paused time in the admission crate; this checks the wiring.
    let m = held_mock().await;
    let keys = r#"
[[key]]
name = "heavy"
key = "sk-heavy"
weight = 3
[[key]]
name = "light"
key = "sk-light"
weight = 1
"#;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        keys,
    )
    .await;
    let c = client();
    let mut tasks = vec![send_tagged(
        &c,
        g.addr,
        Some("sk-light"),
        "first".into(),
        None,
    )];
    stats_until(&m, |s| s.held == 1).await;
    for i in 0..12 {
        tasks.push(send_tagged(
            &c,
            g.addr,
            Some("sk-heavy"),
            format!("heavy-{i}"),
            None,
        ));
        tasks.push(send_tagged(
            &c,
            g.addr,
            Some("sk-light"),
            format!("light-{i}"),
            None,
        ));
    }
    queued(&g, 24).await;
    let order = serial_order(&g, &m, 25).await;
    assert_eq!(order[0], "first");
    // While both keys have a backlog, heavy gets about 3 of every 4 (equal shares would be 6).
    let heavy = order[1..13]
        .iter()
        .filter(|id| id.starts_with("heavy"))
        .count();
    assert!(
        (8..=10).contains(&heavy),
        "heavy served {heavy} of 12: {order:?}"
    );
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_spreads_load_and_local_lanes_run_one_at_a_time() {
    let mut cfg = mock_cfg();
    cfg.latency_ms = 20;
    let a = mock(cfg.clone()).await;
    let b = mock(cfg.clone()).await;
    let local = mock(cfg).await;
    let toml = format!(
        r#"
[[lane]]
name = "a"
url = "{}"
concurrency_limit = {{ max_concurrent_requests = 2 }}
[[lane]]
name = "b"
url = "{}"
concurrency_limit = {{ max_concurrent_requests = 2 }}
[[lane]]
name = "llama"
url = "{}"
kind = "local"
[[route]]
model = "pool-*"
lanes = ["a", "b"]
[[route]]
model = "local-*"
lanes = ["llama"]
"#,
        a.url(),
        b.url(),
        local.url()
    );
    let g = gateway(&toml, "").await;
    let c = client();
    let reqs = (0..40).map(|i| {
        let model = if i % 2 == 0 { "pool-x" } else { "local-x" };
        c.post(url(g.addr, "/v1/chat/completions"))
            .json(&chat_body(model))
            .send()
    });
    for r in join_all(reqs).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let (sa, sb, sl) = (a.stats(), b.stats(), local.stats());
    assert_eq!(sa.completed + sb.completed, 20);
    assert!(
        sa.completed >= 4 && sb.completed >= 4,
        "both pool lanes served: {sa:?} {sb:?}"
    );
    assert!(sa.max_in_flight <= 2 && sb.max_in_flight <= 2);
    assert_eq!(
        (sl.completed, sl.max_in_flight),
        (20, 1),
        "a local lane runs one at a time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_permit_or_queue_slot_behind() {
    let mut cfg = mock_cfg();
    cfg.latency_ms = 5;
    cfg.jitter_ms = 5;
    cfg.error_rate = 0.1;
    cfg.tokens_per_second = 400.0;
    cfg.output_tokens = 8;
    cfg.seed = Some(7);
    let m = mock(cfg).await;
    let lane = "concurrency_limit = { max_concurrent_requests = 4 }\nqueue = { max_len = 5000, timeout = \"30s\" }";
    let g = simple(
        &m.url(),
        lane,
        "[retry]\nmax_attempts = 2\nbackoff = { base = \"1ms\", max = \"10ms\" }",
    )
    .await;
    let c = client();
    // The mix of requests is seeded; where each abort and deadline lands in a request's life
    // depends on the machine, and that is the point: every assertion below must hold for any
    // interleaving (nothing left held or queued), none depends on when things happen.
    let mut rng = fastrand::Rng::with_seed(42);
    let tasks = (0..1500).map(|i| {
        let c = c.clone();
        let stream = rng.bool();
        let abort_after = (rng.u8(0..3) == 0).then(|| Duration::from_millis(rng.u64(0..40)));
        let timeout = (rng.u8(0..5) == 0).then(|| format!("{}ms", rng.u64(5..35)));
        async move {
            let mut body = chat_body("mock-1");
            body["stream"] = json!(stream);
            let mut req = c.post(url(g.addr, "/v1/chat/completions")).json(&body);
            if let Some(t) = timeout {
                req = req.header("x-laneway-timeout", t);
            }
            let run = async move {
                if let Ok(r) = req.send().await {
                    let _ = r.bytes().await;
                }
            };
            match abort_after {
                Some(d) => {
                    let _ = tokio::time::timeout(d, run).await;
                }
                None => run.await,
            }
            i
        }
    });
    join_all(tasks).await;
    assert!(
        lanes_idle(&g).await,
        "lanes: {:?}",
        g.app
            .topo
            .load()
            .lanes
            .iter()
            .map(|l| l.lane.snapshot())
            .collect::<Vec<_>>()
    );
    // Every upstream request the gateway gave up on was dropped, not left running.
    stats_until(&m, |s| s.in_flight == 0).await;
    // A request abandoned mid-flight frees its slot at once, while the upstream notices the
    // closed connection a moment later, so it may briefly count both: bounded, not exact.
    let max = m.stats().max_in_flight;
    assert!(
        max <= 8,
        "the upstream saw {max} at once behind a limit of 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_lower_its_priority_but_not_raise_it() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "",
    )
    .await;
    let c = client();
    let first = send_tagged(&c, g.addr, None, "occupant".into(), None);
    stats_until(&m, |s| s.held == 1).await;
    let low = send_tagged(
        &c,
        g.addr,
        None,
        "lowered".into(),
        Some(("x-laneway-priority", "-5")),
    );
    queued(&g, 1).await;
    let raised = send_tagged(
        &c,
        g.addr,
        None,
        "asked-for-more".into(),
        Some(("x-laneway-priority", "100")),
    );
    queued(&g, 2).await;
    let order = serial_order(&g, &m, 3).await;
    // The second arrival asked for 100 but keeps its key's 0, which still beats -5.
    assert_eq!(order, ["occupant", "asked-for-more", "lowered"]);
    for t in [first, low, raised] {
        assert_eq!(t.await.unwrap(), 200);
    }
}

/// A full lane queue through the gateway: a second key's request waits, and the first key's
/// newest waiting request gives up its place with 429 `queue_full` and a Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_key_waits_in_a_queue_the_first_key_filled() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }\nqueue = { max_len = 4, timeout = \"60s\" }",
        "[[key]]\nname = \"a\"\nkey = \"sk-a\"\n[[key]]\nname = \"b\"\nkey = \"sk-b\"\n",
    )
    .await;
    let c = client();
    let send = |key: &'static str, id: String| {
        let (c, addr) = (c.clone(), g.addr);
        tokio::spawn(async move {
            let r = c
                .post(url(addr, "/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-request-id", id)
                .json(&chat_body("mock-1"))
                .send()
                .await
                .unwrap();
            let retry_after = r.headers().get("retry-after").is_some();
            let status = r.status().as_u16();
            let code = if status == 200 {
                String::new()
            } else {
                error_code(r).await
            };
            (status, code, retry_after)
        })
    };
    let lane = || g.app.topo.load().lanes[0].lane.snapshot();
    let mut of_a = vec![send("sk-a", "a-0".into())];
    stats_until(&m, |s| s.held == 1).await;
    for i in 1..=4 {
        of_a.push(send("sk-a", format!("a-{i}")));
        assert!(until(Duration::from_secs(10), || async { lane().queued == i }).await);
    }
    let (status, code, _) = send("sk-a", "a-5".into()).await.unwrap();
    assert_eq!(
        (status, code.as_str()),
        (429, "queue_full"),
        "key a holds every place"
    );
    let b = send("sk-b", "b-0".into());
    // Key a's newest place is given to key b.
    let newest = of_a.pop().unwrap().await.unwrap();
    assert_eq!(
        (newest.0, newest.1.as_str(), newest.2),
        (429, "queue_full", true)
    );
    assert_eq!(lane().queued, 4);
    assert!(!b.is_finished(), "key b waits");
    m.set_hold(false);
    m.release(None);
    assert_eq!(b.await.unwrap().0, 200);
    for h in of_a {
        assert_eq!(h.await.unwrap().0, 200);
    }
    assert!(lanes_idle(&g).await);
}
