//! The operator surface: admin API, metrics that add up, hot reload under load.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::util::*;

const ADMIN: &str = "[server]\nadmin_key = \"adm\"\n";

async fn admin_get(c: &reqwest::Client, g: &laneway_server::Gateway, path: &str) -> Value {
    let (status, v) = admin_json(c, g.addr, path).await;
    assert_eq!(status, 200, "{path}");
    v
}

async fn admin_post(c: &reqwest::Client, g: &laneway_server::Gateway, path: &str) -> (u16, Value) {
    let r = c
        .post(url(g.addr, path))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Starts `n` slow requests in the background with ids `{prefix}-{i}`.
fn fire(
    c: &reqwest::Client,
    g: &laneway_server::Gateway,
    prefix: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(u16, Value)>> {
    (0..n)
        .map(|i| {
            let (c, addr, id) = (c.clone(), g.addr, format!("{prefix}-{i}"));
            tokio::spawn(async move {
                let r = c
                    .post(url(addr, "/v1/chat/completions"))
                    .header("x-request-id", id)
                    .json(&chat_body("mock-1"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            })
        })
        .collect()
}

async fn wait_for(c: &reqwest::Client, g: &laneway_server::Gateway, running: usize, queued: usize) {
    let ok = until(Duration::from_secs(5), || async {
        let v = admin_get(c, g, "/admin/requests").await;
        let count = |s: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .filter(|r| r["state"] == s)
                .count()
        };
        count("running") == running && count("queued") == queued
    })
    .await;
    assert!(ok, "{}", admin_get(c, g, "/admin/requests").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_key_and_is_off_without_one() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", ADMIN).await;
    let c = client();
    assert_eq!(
        c.get(url(g.addr, "/admin/requests"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(url(g.addr, "/admin/lanes"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "invalid_api_key");
    let off = simple(&m.url(), "", "").await;
    let r = c
        .get(url(off.addr, "/admin/lanes"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_cancel_act_on_the_right_state() {
    let m = slow_mock(30_000).await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 2 }",
        ADMIN,
    )
    .await;
    let c = client();
    let tasks = fire(&c, &g, "r", 4);
    wait_for(&c, &g, 2, 2).await;
    let list = admin_get(&c, &g, "/admin/requests").await;
    let queued: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "queued")
        .collect();
    let mut positions: Vec<u64> = queued
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    positions.sort();
    assert_eq!(positions, [1, 2], "{list}");
    let first_queued = (*queued.iter().find(|r| r["position"] == 1).unwrap()).clone();
    assert_eq!(first_queued["key"], "anonymous");
    let running = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "running")
        .unwrap()
        .clone();
    assert_eq!(running["lane"], "m");
    let (rid, qid) = (
        running["id"].as_str().unwrap(),
        first_queued["id"].as_str().unwrap(),
    );

    let (status, body) = admin_post(&c, &g, &format!("/admin/requests/{rid}/cancel")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "cancel is for queued requests"
    );
    let (status, _) = admin_post(&c, &g, &format!("/admin/requests/{qid}/stop")).await;
    assert_eq!(status, 409, "stop is for running requests");
    let (status, _) = admin_post(&c, &g, "/admin/requests/nope/stop").await;
    assert_eq!(status, 404);

    // Cancel first: stopping a running request frees a slot the queued one would take.
    assert_eq!(
        admin_post(&c, &g, &format!("/admin/requests/{qid}/cancel"))
            .await
            .0,
        200
    );
    assert_eq!(
        admin_post(&c, &g, &format!("/admin/requests/{rid}/stop"))
            .await
            .0,
        200
    );
    let s = stats_until(&m, |s| s.cancelled == 1).await;
    assert_eq!(
        s.cancelled, 1,
        "the stopped request's upstream connection was closed"
    );
    // The two freed places went to the last queued request; nothing else changed.
    wait_for(&c, &g, 2, 0).await;
    let (status, body) = admin_post(&c, &g, "/admin/stop-all?lane=other").await;
    assert_eq!((status, body["stopped"].as_u64()), (200, Some(0)));
    let (_, body) = admin_post(&c, &g, "/admin/stop-all?lane=m").await;
    assert_eq!(body["stopped"], 2);
    let mut outcomes = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        outcomes.push((status, body["error"]["code"].as_str().map(str::to_owned)));
    }
    assert!(
        outcomes
            .iter()
            .all(|o| *o == (503, Some("request_cancelled".into()))),
        "{outcomes:?}"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_queue_cancels_only_waiting_requests_of_the_lane() {
    let m = slow_mock(30_000).await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        ADMIN,
    )
    .await;
    let c = client();
    let tasks = fire(&c, &g, "q", 4);
    wait_for(&c, &g, 1, 3).await;
    let (_, body) = admin_post(&c, &g, "/admin/clear-queue?lane=m").await;
    assert_eq!(body["cancelled"], 3);
    wait_for(&c, &g, 1, 0).await;
    let lanes = admin_get(&c, &g, "/admin/lanes").await;
    assert_eq!(lanes[0]["in_flight"], 1);
    assert_eq!(lanes[0]["queued"], 0);
    assert_eq!(lanes[0]["limit"], 1);
    assert_eq!(lanes[0]["state"], "ok");
    assert_eq!(admin_post(&c, &g, "/admin/stop-all").await.1["stopped"], 1);
    let codes: Vec<u16> = join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.unwrap().0)
        .collect();
    assert_eq!(codes, [503, 503, 503, 503]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent() {
    let mut cfg = mock_cfg();
    cfg.fail_first = 2;
    cfg.fail_retry_after_ms = 1;
    let m = mock(cfg).await;
    let keys = "[[key]]\nname = \"team\"\nkey = \"sk-team-secret\"\nrpm = 5\n";
    let g = simple(&m.url(), "", keys).await;
    let c = client();
    for _ in 0..7 {
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .bearer_auth("sk-team-secret")
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    c.post(url(g.addr, "/v1/chat/completions"))
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = metrics_text(&c, g.addr).await;
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"laneway_requests_total{lane="m",key="team",model="mock-1",code="ok"}"#),
        5.0
    );
    assert_eq!(value(r#"laneway_rejected_total{reason="rate_limit"}"#), 2.0);
    assert_eq!(
        value(r#"laneway_rejected_total{reason="invalid_api_key"}"#),
        1.0
    );
    assert_eq!(value(r#"laneway_upstream_429_total{lane="m"}"#), 2.0);
    assert_eq!(
        value(r#"laneway_retries_total{lane="m",reason="status_429"}"#),
        2.0
    );
    assert_eq!(
        value(r#"laneway_tokens_total{lane="m",kind="completion"}"#),
        80.0
    );
    assert_eq!(value(r#"laneway_in_flight{lane="m"}"#), 0.0);
    // One upstream duration per answered request; one queue wait per attempt, retries included.
    assert_eq!(
        value(r#"laneway_upstream_duration_seconds_count{lane="m"}"#),
        5.0
    );
    assert_eq!(value(r#"laneway_queue_wait_seconds_count{lane="m"}"#), 7.0);
    assert!(text.contains("# TYPE laneway_queue_wait_seconds histogram"));
    assert!(text.contains("# HELP laneway_cancelled"));
    assert!(
        !text.contains("sk-team-secret"),
        "labels never carry secrets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_limits_under_load_without_losing_requests() {
    let m = held_mock().await;
    let dir = std::env::temp_dir().join(format!("laneway-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laneway.toml");
    let write = |limit: u32| {
        let text = format!("{ADMIN}[[lane]]\nname = \"m\"\nurl = \"{}\"\nconcurrency_limit = {{ max_concurrent_requests = {limit} }}\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n", m.url());
        std::fs::write(&path, text).unwrap();
    };
    write(4);
    let g = file_gateway(&path).await;
    let c = client();
    let load: Vec<_> = (0..20)
        .map(|_| {
            let (c, addr) = (c.clone(), g.addr);
            tokio::spawn(
                async move { chat(&c, addr, &chat_body("mock-1")).await.status().as_u16() },
            )
        })
        .collect();
    let lane = || g.app.topo.load().lanes[0].lane.snapshot();
    stats_until(&m, |s| s.held == 4).await;
    assert!(until(Duration::from_secs(10), || async { lane().queued == 16 }).await);
    write(2);
    let (status, body) = admin_post(&c, &g, "/admin/reload").await;
    assert_eq!(status, 200, "{body}");
    // A bad file is refused with check's messages and the old config stays.
    std::fs::write(&path, "[[lane]]\nname = \"m\"\nbogus = 1\n").unwrap();
    let (status, body) = admin_post(&c, &g, "/admin/reload").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("bogus"),
        "{body}"
    );
    // The four running under the old limit finish; then only two at a time start.
    m.release(Some(4));
    stats_until(&m, |s| s.completed == 4 && s.held == 2).await;
    let s = lane();
    assert_eq!((s.in_flight, s.queued, s.limit), (2, 14, Some(2)), "{s:?}");
    m.release(Some(2));
    stats_until(&m, |s| s.completed == 6 && s.held == 2).await;
    assert_eq!((lane().in_flight, lane().queued), (2, 12));
    m.set_hold(false);
    let statuses: Vec<u16> = join_all(load)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(statuses.iter().all(|&s| s == 200), "no request was lost");
    let lanes = admin_get(&c, &g, "/admin/lanes").await;
    assert_eq!(lanes[0]["limit"], 2);
    let metrics = metrics_text(&c, g.addr).await;
    assert!(
        metrics.contains(
            r#"laneway_requests_total{lane="m",key="anonymous",model="mock-1",code="ok"} 20"#
        ),
        "counters kept counting across the reload"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sharing_a_client_id_have_their_own_handles() {
    let m = slow_mock(30_000).await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        ADMIN,
    )
    .await;
    let c = client();
    let send = || {
        let (c, addr) = (c.clone(), g.addr);
        tokio::spawn(async move {
            let r = c
                .post(url(addr, "/v1/chat/completions"))
                .header("x-request-id", "same")
                .json(&chat_body("mock-1"))
                .send()
                .await
                .unwrap();
            let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            let own = r.headers()["x-laneway-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            (r.status().as_u16(), echoed, own)
        })
    };
    let first = send();
    wait_for(&c, &g, 1, 0).await;
    let second = send();
    wait_for(&c, &g, 1, 1).await;
    let list = admin_get(&c, &g, "/admin/requests").await;
    let rows = list.as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["client_request_id"] == "same"),
        "{list}"
    );
    assert_ne!(rows[0]["id"], rows[1]["id"]);
    let queued = rows.iter().find(|r| r["state"] == "queued").unwrap();
    let qid = queued["id"].as_str().unwrap();
    assert_eq!(
        admin_post(&c, &g, &format!("/admin/requests/{qid}/cancel"))
            .await
            .0,
        200,
        "the queued one is found by its own id"
    );
    let (status, echoed, own) = second.await.unwrap();
    assert_eq!((status, echoed.as_str(), own.as_str()), (503, "same", qid));
    assert_eq!(admin_post(&c, &g, "/admin/stop-all").await.1["stopped"], 1);
    assert_eq!(first.await.unwrap().0, 503);
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_silently_drops_every_key() {
    let m = mock(mock_cfg()).await;
    let dir = std::env::temp_dir().join(format!("laneway-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laneway.toml");
    let full = format!(
        "{ADMIN}[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
         [[key]]\nname = \"team\"\nkey = \"sk-team\"\n",
        m.url()
    );
    std::fs::write(&path, &full).unwrap();
    let g = file_gateway(&path).await;
    let c = client();
    // An editor was still writing the file: it stops before the keys.
    std::fs::write(&path, &full[..full.find("[[key]]").unwrap()]).unwrap();
    let (status, body) = admin_post(&c, &g, "/admin/reload").await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("team") && msg.contains("server.auth"), "{msg}");
    let r = chat(&c, g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 401, "the old keys still hold");
    // An empty file loses the admin key too, and is refused the same way.
    std::fs::write(&path, "").unwrap();
    let (status, body) = admin_post(&c, &g, "/admin/reload").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin_key"));
    // Said explicitly, an open gateway is accepted.
    let open =
        full[..full.find("[[key]]").unwrap()].replace("[server]\n", "[server]\nauth = \"none\"\n");
    std::fs::write(&path, open).unwrap();
    let (status, body) = admin_post(&c, &g, "/admin/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    std::fs::remove_dir_all(&dir).ok();
}

/// A panel's live feed opened with an admin key ends once a reload rotates that key: a request
/// that starts after the rotation never reaches the old key's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_key_loses_its_live_feed() {
    let m = held_mock().await;
    let dir = std::env::temp_dir().join(format!("laneway-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laneway.toml");
    let body = format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
         [[key]]\nname = \"team\"\nkey = \"sk-team\"\n",
        m.url()
    );
    std::fs::write(&path, format!("{ADMIN}{body}")).unwrap();
    let g = file_gateway(&path).await;
    let c = client();
    let mut feed = c
        .get(url(g.addr, "/admin/events"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let first = feed.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"lanes\""));

    std::fs::write(&path, format!("[server]\nadmin_key = \"adm-new\"\n{body}")).unwrap();
    g.app.reload().await.unwrap();
    let late = tokio::spawn({
        let c = c.clone();
        let addr = g.addr;
        async move {
            c.post(url(addr, "/v1/chat/completions"))
                .bearer_auth("sk-team")
                .header("x-request-id", "after-rotation")
                .json(&chat_body("mock-1"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    assert!(until(Duration::from_secs(10), || async { m.stats().held == 1 }).await);
    // The stream must end by itself; the bound only keeps a failing test from hanging.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(chunk) = feed.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await
    .expect("the old key's stream ended");
    assert!(!rest.contains("after-rotation"), "{rest}");
    let old = c
        .get(url(g.addr, "/admin/events"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    m.release(None);
    assert_eq!(late.await.unwrap().unwrap(), 200);
    std::fs::remove_dir_all(&dir).ok();
}

/// `/metrics` answers Prometheus text 0.0.4 (which `promtool check metrics` passes) unless the
/// scraper asks for OpenMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_text_unless_openmetrics_is_asked_for() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    assert_eq!(chat(&c, g.addr, &chat_body("gpt-nope")).await.status(), 404);
    let r = c.get(url(g.addr, "/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE laneway_requests_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP laneway_requests_total "), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    // The model the client asked for, not the route's pattern; an unrouted one is `-`.
    assert!(
        text.contains(
            "laneway_requests_total{lane=\"m\",key=\"anonymous\",model=\"mock-1\",code=\"ok\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("model=\"-\",code=\"model_not_found\"} 1"),
        "{text}"
    );
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; .ci/run installs it)");
    let mut promtool = promtool;
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let om = c
        .get(url(g.addr, "/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE laneway_requests counter"));
}
