//! The Batch API: files and batches end to end, ownership, bad input, priority below
//! interactive requests, cancelling.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use laneway_server::Gateway;
use serde_json::{json, Value};

use crate::util::*;

/// A directory of its own, removed when the test ends.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "laneway-it-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keys `alice` and `bob`, the admin key `adm`, one lane `m` for `mock-*` with `lane_extra`,
/// storage in `dir` with `storage_extra`.
pub fn config(mock_url: &str, dir: &Dir, lane_extra: &str, storage_extra: &str) -> String {
    format!(
        "[server]\nadmin_key = \"adm\"\n\
         [storage]\npath = \"{}\"\n{storage_extra}\n\
         [[lane]]\nname = \"m\"\nurl = \"{mock_url}\"\n{lane_extra}\n\
         [[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
         [[key]]\nname = \"alice\"\nkey = \"sk-alice\"\n\
         [[key]]\nname = \"bob\"\nkey = \"sk-bob\"\n",
        dir.0.join("data").display()
    )
}

async fn start(mock_url: &str, dir: &Dir, lane_extra: &str, storage_extra: &str) -> Gateway {
    gateway(&config(mock_url, dir, lane_extra, storage_extra), mock_url).await
}

/// `n` chat requests, `custom_id` `req-0`….
pub fn input(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": chat_body("mock-1")})
            .to_string()
                + "\n"
        })
        .collect()
}

pub async fn upload(
    c: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    text: String,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::text(text).file_name("in.jsonl"),
        );
    c.post(url(addr, "/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub async fn upload_ok(c: &reqwest::Client, addr: SocketAddr, key: &str, text: String) -> String {
    let r = upload(c, addr, key, text).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "file");
    v["id"].as_str().unwrap().to_owned()
}

pub async fn create(
    c: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    file: &str,
) -> reqwest::Response {
    c.post(url(addr, "/v1/batches"))
        .bearer_auth(key)
        .json(
            &json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
                      "completion_window": "24h", "metadata": {"job": "test"}}),
        )
        .send()
        .await
        .unwrap()
}

pub async fn get(c: &reqwest::Client, addr: SocketAddr, key: &str, path: &str) -> (u16, Value) {
    let r = c
        .get(url(addr, path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls the batch until it reaches one of `ends` (at most 30 s).
pub async fn until_status(
    c: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    id: &str,
    ends: &[&str],
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = get(c, addr, key, &format!("/v1/batches/{id}")).await.1;
        if ends.iter().any(|s| last["status"] == *s) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch never reached {ends:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn content(c: &reqwest::Client, addr: SocketAddr, key: &str, file: &str) -> String {
    let r = c
        .get(url(addr, &format!("/v1/files/{file}/content")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The `custom_id`s of an output file; every line must be whole JSON.
pub fn custom_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
            v["custom_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_batch_runs_end_to_end_and_keys_see_only_their_own() {
    let m = mock(mock_cfg()).await;
    let dir = Dir::new("e2e");
    let g = start(&m.url(), &dir, "", "").await;
    let c = client();
    let file = upload_ok(&c, g.addr, "sk-alice", input(25)).await;
    let r = create(&c, g.addr, "sk-alice", &file).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["object"], "batch");
    assert_eq!(b["metadata"]["job"], "test");
    let id = b["id"].as_str().unwrap().to_owned();
    let done = until_status(&c, g.addr, "sk-alice", &id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 25, "completed": 25, "failed": 0})
    );
    for t in [
        "created_at",
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "expires_at",
    ] {
        assert!(done[t].is_i64(), "{t}: {done}");
    }
    assert!(done["error_file_id"].is_null());
    let out = content(
        &c,
        g.addr,
        "sk-alice",
        done["output_file_id"].as_str().unwrap(),
    )
    .await;
    let ids = custom_ids(&out);
    assert_eq!(ids.len(), 25);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["response"]["status_code"], 200);
    assert_eq!(first["response"]["body"]["object"], "chat.completion");
    assert!(first["response"]["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(first["error"].is_null());

    // Bob sees none of it and cannot use Alice's file.
    let (s, _) = get(&c, g.addr, "sk-bob", &format!("/v1/batches/{id}")).await;
    assert_eq!(s, 404);
    let (s, _) = get(&c, g.addr, "sk-bob", &format!("/v1/files/{file}")).await;
    assert_eq!(s, 404);
    let r = c
        .get(url(g.addr, &format!("/v1/files/{file}/content")))
        .bearer_auth("sk-bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = create(&c, g.addr, "sk-bob", &file).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    let (_, list) = get(&c, g.addr, "sk-bob", "/v1/batches").await;
    assert_eq!(list["data"], json!([]));
    let (_, list) = get(&c, g.addr, "sk-alice", "/v1/batches?limit=1").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    for bad in ["0", "101", "-1", "x", "99999999999999999999999"] {
        let (s, v) = get(&c, g.addr, "sk-alice", &format!("/v1/batches?limit={bad}")).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(v["error"]["param"], "limit", "{bad}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("from 1 to 100") && msg.contains(bad), "{msg}");
    }
    // The admin sees every key's batches, with progress.
    let (s, all) = admin_json(&c, g.addr, "/admin/batches").await;
    assert_eq!(s, 200);
    assert_eq!(all["data"][0]["owner"], "alice");
    assert_eq!(all["data"][0]["progress"]["done"], 25);
    // A finished batch cannot be cancelled.
    let r = c
        .post(url(g.addr, &format!("/v1/batches/{id}/cancel")))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_code(r).await == "invalid_request");
    // Items are counted apart from interactive requests.
    let metrics = metrics_text(&c, g.addr).await;
    assert!(
        metrics.contains(
            "laneway_batch_items_total{lane=\"m\",key=\"alice\",model=\"mock-1\",code=\"ok\"} 25"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("laneway_requests_total{lane=\"m\",key=\"alice\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("laneway_batches_total{reason=\"completed\"} 1"),
        "{metrics}"
    );
    // Deleting a file removes it.
    let r = c
        .delete(url(g.addr, &format!("/v1/files/{file}")))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
    let (s, _) = get(&c, g.addr, "sk-alice", &format!("/v1/files/{file}")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_input_is_refused_with_its_line_and_nothing_is_kept() {
    let m = mock(mock_cfg()).await;
    let dir = Dir::new("bad");
    let g = start(&m.url(), &dir, "", "max_file_size = 4096").await;
    let c = client();
    let good = input(1);
    let text = format!(
        "{good}not json\n{good}{}\n{}\n",
        json!({"custom_id": "x", "url": "/v1/embeddings", "body": {"model": "mock-1"}}),
        json!({"custom_id": "y", "url": "/v1/chat/completions", "body": {"model": "gpt-4"}})
    );
    let file = upload_ok(&c, g.addr, "sk-alice", text).await;
    let b: Value = create(&c, g.addr, "sk-alice", &file)
        .await
        .json()
        .await
        .unwrap();
    let failed = until_status(
        &c,
        g.addr,
        "sk-alice",
        b["id"].as_str().unwrap(),
        &["failed", "completed"],
    )
    .await;
    assert_eq!(failed["status"], "failed");
    let lines: Vec<(i64, &str)> = failed["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_i64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            (2, "invalid_json"),
            (3, "duplicate_custom_id"),
            (4, "invalid_url"),
            (5, "model_not_found")
        ]
    );
    assert_eq!(m.stats().requests, 0, "no item of a failed batch runs");

    // Too large: 413, and no file is kept.
    let r = upload(&c, g.addr, "sk-alice", input(100)).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "payload_too_large");
    let (_, files) = get(&c, g.addr, "sk-alice", "/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 1, "{files}");
    let on_disk = std::fs::read_dir(dir.0.join("data/files")).unwrap().count();
    assert_eq!(on_disk, 1);

    // Unknown file, bad request shapes, a wrong purpose, no key.
    let r = create(&c, g.addr, "sk-alice", "file-nope").await;
    assert_eq!(
        (r.status().as_u16(), error_code(r).await.as_str()),
        (404, "not_found")
    );
    for (body, param) in [
        (
            json!({"input_file_id": file, "endpoint": "/v1/images", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": file, "endpoint": "/v1/embeddings", "completion_window": "forever"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": file, "endpoint": "/v1/embeddings", "completion_window": "24h", "metadata": [1]}),
            "metadata",
        ),
    ] {
        let r = c
            .post(url(g.addr, "/v1/batches"))
            .bearer_auth("sk-alice")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let r = c
        .post(url(g.addr, "/v1/batches"))
        .bearer_auth("sk-alice")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new()
        .text("purpose", "nonsense")
        .part("file", reqwest::multipart::Part::text("x\n").file_name("a"));
    let r = c
        .post(url(g.addr, "/v1/files"))
        .bearer_auth("sk-alice")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A form field is read within a bound, however long the client makes it.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "b".repeat(1 << 20))
        .part("file", reqwest::multipart::Part::text("x\n").file_name("a"));
    let r = c
        .post(url(g.addr, "/v1/files"))
        .bearer_auth("sk-alice")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("longer than 64 bytes"));
    let r = c
        .post(url(g.addr, "/v1/files"))
        .bearer_auth("sk-alice")
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "invalid_request");
    let r = upload(&c, g.addr, "sk-nobody", input(1)).await;
    assert_eq!(r.status(), 401);
    let r = c.get(url(g.addr, "/v1/batches")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Nothing is left half-written.
    let on_disk: Vec<_> = std::fs::read_dir(dir.0.join("data/files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, [file]);
}

/// A batch of `n` items from `alice` running on a lane of `slots` in front of a [`held_mock`].
struct HeldBatch {
    m: laneway_mock::MockServer,
    _dir: Dir,
    g: Gateway,
    c: reqwest::Client,
    id: String,
}

async fn held_batch(name: &str, slots: u32, n: usize) -> HeldBatch {
    let m = held_mock().await;
    let dir = Dir::new(name);
    let lane = format!("concurrency_limit = {{ max_concurrent_requests = {slots} }}");
    let g = start(&m.url(), &dir, &lane, "").await;
    let c = client();
    let file = upload_ok(&c, g.addr, "sk-alice", input(n)).await;
    let b: Value = create(&c, g.addr, "sk-alice", &file)
        .await
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap().to_owned();
    HeldBatch {
        m,
        _dir: dir,
        g,
        c,
        id,
    }
}

#[tokio::test]
async fn interactive_requests_take_the_next_slot_before_batch_items() {
    let HeldBatch { m, _dir, g, c, id } = held_batch("prio", 1, 30).await;
    // One item runs (held at the mock); the others wait in the lane's queue.
    stats_until(&m, |s| s.held == 1).await;
    let lane = |g: &Gateway| g.app.topo.load().lane("m").unwrap().lane.snapshot();
    assert!(until(Duration::from_secs(10), || async { lane(&g).queued >= 5 }).await);
    let interactive = {
        let c = c.clone();
        let addr = g.addr;
        tokio::spawn(async move {
            let r = c
                .post(url(addr, "/v1/chat/completions"))
                .bearer_auth("sk-bob")
                .header("x-request-id", "interactive-1")
                .json(&chat_body("mock-1"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    let queued = until(Duration::from_secs(10), || async {
        laneway_server::views::views(&g.app)
            .iter()
            .any(|r| r.client_request_id.as_deref() == Some("interactive-1") && r.state == "queued")
    })
    .await;
    assert!(queued);
    // The item running finishes; the slot goes to the interactive request, not the next item.
    m.release(Some(1));
    let running = until(Duration::from_secs(10), || async {
        m.stats().held == 1
            && laneway_server::views::views(&g.app).iter().any(|r| {
                r.client_request_id.as_deref() == Some("interactive-1") && r.state == "running"
            })
    })
    .await;
    assert!(
        running,
        "the interactive request did not get the freed slot"
    );
    m.release(Some(1));
    assert_eq!(interactive.await.unwrap(), 200);
    let (_, b) = get(&c, g.addr, "sk-alice", &format!("/v1/batches/{id}")).await;
    assert_eq!(
        b["request_counts"]["completed"], 1,
        "only one item ran before the interactive request"
    );
    m.set_hold(false);
    let done = until_status(&c, g.addr, "sk-alice", &id, &["completed"]).await;
    assert_eq!(done["request_counts"]["completed"], 30);
}

#[tokio::test]
async fn cancelling_stops_new_items_and_keeps_what_finished() {
    let HeldBatch { m, _dir, g, c, id } = held_batch("cancel", 2, 20).await;
    stats_until(&m, |s| s.held == 2).await;
    // Only its owner or the admin may cancel it.
    let cancel = |key: &'static str| {
        let c = c.clone();
        let u = url(g.addr, &format!("/v1/batches/{id}/cancel"));
        async move { c.post(u).bearer_auth(key).send().await.unwrap() }
    };
    assert_eq!(cancel("sk-bob").await.status(), 404);
    let r = cancel("adm").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelling");
    m.set_hold(false);
    let done = until_status(&c, g.addr, "sk-alice", &id, &["cancelled"]).await;
    assert!(done["cancelled_at"].is_i64() && done["cancelling_at"].is_i64());
    let finished = done["request_counts"]["completed"].as_u64().unwrap();
    assert!((2..20).contains(&finished), "{done}");
    let out = content(
        &c,
        g.addr,
        "sk-alice",
        done["output_file_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(custom_ids(&out).len() as u64, finished);
    assert!(lanes_idle(&g).await);
    assert_eq!(
        m.stats().requests,
        finished,
        "no item started after the cancel"
    );
}

/// `laneway serve` on `cfg`, killed (SIGKILL) when dropped.
fn serve(cfg: &std::path::Path) -> (crate::binary::Proc, SocketAddr) {
    let (child, addr) = crate::binary::spawn(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &std::env::temp_dir(),
        &[],
        std::process::Stdio::null(),
    );
    (crate::binary::Proc(child), addr.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_batch_resumes_and_writes_each_item_once() {
    let mut cfg = mock_cfg();
    cfg.latency_ms = 5;
    let m = mock(cfg).await;
    let dir = Dir::new("crash");
    let path = dir.0.join("gw.toml");
    std::fs::write(&path, config(&m.url(), &dir, "", "")).unwrap();
    let c = client();
    let (mut gw, mut addr) = serve(&path);
    let file = upload_ok(&c, addr, "sk-alice", input(2000)).await;
    let b: Value = create(&c, addr, "sk-alice", &file)
        .await
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap().to_owned();
    // Killed four times, each at a random point of the run (by answers the mock has given).
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..4u64 {
        let at = round * 400 + rng.u64(50..400);
        let reached = until(Duration::from_secs(30), || async {
            m.stats().completed >= at
        })
        .await;
        assert!(
            reached,
            "round {round}: the batch stalled at {:?}",
            m.stats()
        );
        drop(gw);
        (gw, addr) = serve(&path);
    }
    let done = until_status(&c, addr, "sk-alice", &id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 2000, "completed": 2000, "failed": 0})
    );
    let out = content(
        &c,
        addr,
        "sk-alice",
        done["output_file_id"].as_str().unwrap(),
    )
    .await;
    let ids = custom_ids(&out);
    assert_eq!(ids.len(), 2000, "one line per item");
    let unique: HashSet<&String> = ids.iter().collect();
    let want: Vec<String> = (0..2000).map(|i| format!("req-{i}")).collect();
    assert!(
        want.iter().all(|w| unique.contains(w)),
        "every custom_id is there once"
    );
    // The kills landed mid-run: items in flight at a kill were sent again.
    let s = m.stats();
    assert!(s.requests > 2000, "{s:?}");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_upload_and_keeps_nothing() {
    let m = mock(mock_cfg()).await;
    let dir = Dir::new("full");
    let path = dir.0.join("gw.toml");
    std::fs::write(&path, config(&m.url(), &dir, "", "")).unwrap();
    // No file of the gateway may grow past 512 KiB, as on a nearly full disk (the signal such
    // a write raises is ignored, so the write fails instead).
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 512 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_laneway"))
        .args([
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
    let (child, addr) = crate::binary::spawn_command(cmd, std::process::Stdio::null());
    let _gw = crate::binary::Proc(child);
    let addr: SocketAddr = addr.parse().unwrap();
    let c = client();
    let r = upload(&c, addr, "sk-alice", input(10_000)).await;
    assert_eq!(r.status(), 507);
    assert_eq!(error_code(r).await, "storage_full");
    let (_, files) = get(&c, addr, "sk-alice", "/v1/files").await;
    assert_eq!(files["data"], json!([]));
    assert_eq!(
        std::fs::read_dir(dir.0.join("data/files")).unwrap().count(),
        0,
        "no partial file"
    );
    // What fits is still kept and runs.
    let file = upload_ok(&c, addr, "sk-alice", input(3)).await;
    let b: Value = create(&c, addr, "sk-alice", &file)
        .await
        .json()
        .await
        .unwrap();
    let done = until_status(
        &c,
        addr,
        "sk-alice",
        b["id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["request_counts"]["completed"], 3, "{done}");
}

#[tokio::test]
async fn a_batch_past_its_window_expires_and_ends_its_running_items() {
    let m = held_mock().await;
    let dir = Dir::new("expire");
    let g = start(
        &m.url(),
        &dir,
        "concurrency_limit = { max_concurrent_requests = 2 }",
        "",
    )
    .await;
    let c = client();
    let file = upload_ok(&c, g.addr, "sk-alice", input(6)).await;
    let r = c
        .post(url(g.addr, "/v1/batches"))
        .bearer_auth("sk-alice")
        .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "1s"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stats_until(&m, |s| s.held == 2).await;
    m.release(Some(1));
    // Nothing else is released: the window closes with one item done, two running, three waiting.
    let done = until_status(&c, g.addr, "sk-alice", &id, &["expired"]).await;
    assert!(done["expired_at"].is_i64());
    assert_eq!(done["request_counts"]["completed"], 1, "{done}");
    assert_eq!(
        custom_ids(
            &content(
                &c,
                g.addr,
                "sk-alice",
                done["output_file_id"].as_str().unwrap()
            )
            .await
        )
        .len(),
        1
    );
    // The running items' upstream calls were closed, and nothing waits any more.
    stats_until(&m, |s| s.cancelled >= 1 && s.in_flight == 0).await;
    assert!(lanes_idle(&g).await);
    assert_eq!(m.stats().requests, 3);
}
