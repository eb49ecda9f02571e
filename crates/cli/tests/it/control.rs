//! Lane controls at run time: serial and parallel, pause and resume, drain, limits by hand.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const ADMIN: &str = "[server]\nadmin_key = \"adm\"\n";

async fn call(
    c: &reqwest::Client,
    g: &laneway_server::Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, url(g.addr, path)).bearer_auth("adm");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn patch(c: &reqwest::Client, g: &laneway_server::Gateway, v: Value) -> (u16, Value) {
    call(c, g, reqwest::Method::PATCH, "/admin/lanes/m", Some(v)).await
}

async fn post(c: &reqwest::Client, g: &laneway_server::Gateway, path: &str) -> (u16, Value) {
    call(c, g, reqwest::Method::POST, path, None).await
}

fn send(
    c: &reqwest::Client,
    g: &laneway_server::Gateway,
    n: usize,
) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n).map(|_| chat_in_background(c, g.addr)).collect()
}

fn lane(g: &laneway_server::Gateway) -> laneway_admission::LaneSnapshot {
    g.app.topo.load().lanes[0].lane.snapshot()
}

async fn lane_until(
    g: &laneway_server::Gateway,
    what: &str,
    cond: impl Fn(&laneway_admission::LaneSnapshot) -> bool,
) {
    let met = until(Duration::from_secs(10), || async { cond(&lane(g)) }).await;
    assert!(met, "{what}: {:?}", lane(g));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_and_back_under_load() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 4 }",
        ADMIN,
    )
    .await;
    let c = client();
    let load = send(&c, &g, 9);
    stats_until(&m, |s| s.held == 4).await;
    let (status, v) = patch(&c, &g, json!({"concurrency": "serial"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["mode"].as_str(),
            v["limit"].as_u64(),
            v["limit_source"].as_str()
        ),
        (Some("serial"), Some(1), Some("operator"))
    );
    assert_eq!(v["changed"], true);
    // The four already running finish; from then on one at a time.
    m.release(Some(4));
    stats_until(&m, |s| s.completed == 4 && s.held == 1).await;
    lane_until(&g, "one runs, four wait", |s| {
        s.in_flight == 1 && s.queued == 4
    })
    .await;
    m.release(Some(1));
    stats_until(&m, |s| s.completed == 5 && s.held == 1).await;
    assert_eq!(lane(&g).in_flight, 1);
    let (status, v) = patch(&c, &g, json!({"concurrency": "parallel"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["mode"].as_str(),
            v["limit"].as_u64(),
            v["limit_source"].as_str()
        ),
        (Some("parallel"), Some(4), Some("config"))
    );
    stats_until(&m, |s| s.held == 4).await;
    m.set_hold(false);
    for t in load {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(m.stats().max_in_flight, 4);
    let metrics = metrics_text(&c, g.addr).await;
    assert!(
        metrics.contains(r#"laneway_lane_controls_total{lane="m",action="concurrency"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lane_starts_nothing_until_resumed_and_drain_reports_empty() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 4 }",
        ADMIN,
    )
    .await;
    let c = client();
    let first = send(&c, &g, 1);
    stats_until(&m, |s| s.held == 1).await;
    let (status, v) = post(&c, &g, "/admin/lanes/m/pause").await;
    assert_eq!(
        (status, &v["paused"], &v["changed"]),
        (200, &json!(true), &json!(true)),
        "{v}"
    );
    let (status, v) = post(&c, &g, "/admin/lanes/m/pause").await;
    assert_eq!(
        (status, &v["changed"]),
        (200, &json!(false)),
        "pausing a paused lane: {v}"
    );
    let waiting = send(&c, &g, 3);
    lane_until(&g, "three wait", |s| s.queued == 3).await;
    // The running one finishes; its free slot stays free while the lane is paused.
    m.release(None);
    stats_until(&m, |s| s.completed == 1).await;
    lane_until(&g, "nothing runs", |s| s.in_flight == 0).await;
    assert_eq!(
        (lane(&g).queued, m.stats().requests),
        (3, 1),
        "none started while paused"
    );
    let (status, v) = post(&c, &g, "/admin/lanes/m/resume").await;
    assert_eq!((status, &v["paused"]), (200, &json!(false)), "{v}");
    stats_until(&m, |s| s.held == 3).await;
    // Drain waits for the three to finish: it answers once they are released.
    let drain = {
        let (c, addr) = (c.clone(), g.addr);
        tokio::spawn(async move {
            let r = c
                .post(url(addr, "/admin/lanes/m/drain?timeout=60s"))
                .bearer_auth("adm")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    lane_until(&g, "drain pauses", |s| s.paused).await;
    assert!(!drain.is_finished());
    m.release(None);
    let (status, v) = drain.await.unwrap();
    assert_eq!(
        (status, &v["drained"], &v["in_flight"]),
        (200, &json!(true), &json!(0)),
        "{v}"
    );
    for t in first.into_iter().chain(waiting) {
        assert_eq!(t.await.unwrap(), 200);
    }
    post(&c, &g, "/admin/lanes/m/resume").await;
    assert!(!lane(&g).paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_controls_refuse_bad_input_with_openai_errors() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", ADMIN).await;
    let c = client();
    let (status, v) = call(&c, &g, reqwest::Method::GET, "/admin/lanes/nope", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = post(&c, &g, "/admin/lanes/nope/pause").await;
    assert_eq!(status, 404, "{v}");
    for bad in [
        json!({"concurrency": 0}),
        json!({"concurrency": 100_000}),
        json!({"concurrency": "fast"}),
        json!({}),
    ] {
        let (status, v) = patch(&c, &g, bad.clone()).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {v}"
        );
        assert_eq!(v["error"]["param"], "concurrency");
    }
    let (status, v) = post(&c, &g, "/admin/lanes/m/drain?timeout=soon").await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("timeout")),
        "{v}"
    );
    let r = c
        .patch(url(g.addr, "/admin/lanes/m"))
        .json(&json!({"concurrency": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin key is needed");
    assert_eq!(
        lane(&g).limit_source,
        laneway_admission::LimitSource::Config,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_limit_set_by_hand_unless_the_file_changes_it() {
    let m = mock(mock_cfg()).await;
    let dir = std::env::temp_dir().join(format!("laneway-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laneway.toml");
    let write = |limit: u32, timeout: &str| {
        let text = format!("{ADMIN}[[lane]]\nname = \"m\"\nurl = \"{}\"\nconcurrency_limit = {{ max_concurrent_requests = {limit} }}\nqueue = {{ timeout = \"{timeout}\" }}\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n", m.url());
        std::fs::write(&path, text).unwrap();
    };
    write(4, "30s");
    let g = file_gateway(&path).await;
    let c = client();
    assert_eq!(patch(&c, &g, json!({"concurrency": 2})).await.0, 200);
    write(4, "45s");
    assert_eq!(post(&c, &g, "/admin/reload").await.0, 200);
    let (_, v) = call(&c, &g, reqwest::Method::GET, "/admin/lanes/m", None).await;
    assert_eq!(
        (v["limit"].as_u64(), v["limit_source"].as_str()),
        (Some(2), Some("operator")),
        "{v}"
    );
    write(6, "45s");
    assert_eq!(post(&c, &g, "/admin/reload").await.0, 200);
    let (_, v) = call(&c, &g, reqwest::Method::GET, "/admin/lanes/m", None).await;
    assert_eq!(
        (v["limit"].as_u64(), v["limit_source"].as_str()),
        (Some(6), Some("config")),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
