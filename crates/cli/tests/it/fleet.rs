//! The Batch API of a fleet: replicas (real `laneway serve` processes) sharing one real
//! PostgreSQL through `[storage] url`, behind no balancer: each call goes to the replica the
//! test names.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::batches::{config, content, create, custom_ids, get, input, upload_ok, Dir};
use crate::binary::Proc;
use crate::util::*;

#[path = "../../../storage/tests/pg/mod.rs"]
mod pg;

/// Items in flight per replica.
const CONCURRENCY: u64 = 8;

/// A replica: its own directory (uploads are spooled there), the shared database.
fn replica(name: &str, mock_url: &str, db: &pg::Pg) -> (Proc, SocketAddr, Dir) {
    let dir = Dir::new(name);
    let path = dir.0.join("gw.toml");
    let storage = format!(
        "url = \"{}\"\nlease = \"2s\"\nbatch_concurrency = {CONCURRENCY}",
        db.url
    );
    std::fs::write(&path, config(mock_url, &dir, "", &storage)).unwrap();
    let (child, addr) = crate::binary::spawn(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &std::env::temp_dir(),
        &[],
        std::process::Stdio::null(),
    );
    (Proc(child), addr.parse().unwrap(), dir)
}

/// Polls the batch through each replica in turn until it reaches `end` (at most 60 s); every
/// poll, whichever replica answers, must know the batch.
async fn poll_alternately(c: &reqwest::Client, replicas: &[SocketAddr], id: &str) -> Value {
    let path = format!("/v1/batches/{id}");
    for i in 0..600 {
        let addr = replicas[i % replicas.len()];
        let (status, b) = get(c, addr, "sk-alice", &path).await;
        assert_eq!(status, 200, "replica {addr} does not know the batch: {b}");
        if ["completed", "failed", "expired", "cancelled"].contains(&b["status"].as_str().unwrap())
        {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the batch never ended");
}

fn every_custom_id_once(out: &str, n: usize) {
    let ids = custom_ids(out);
    assert_eq!(ids.len(), n, "one line per item");
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), n, "no custom_id twice");
    assert!((0..n).all(|i| unique.contains(&format!("req-{i}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_on_one_replica_is_batched_on_the_other() {
    let db = pg::Pg::start();
    let m = mock(mock_cfg()).await;
    let (_a, a, _da) = replica("fleet-a", &m.url(), &db);
    let (_b, b, _db) = replica("fleet-b", &m.url(), &db);
    let c = client();
    let file = upload_ok(&c, a, "sk-alice", input(50)).await;
    let (status, f) = get(&c, b, "sk-alice", &format!("/v1/files/{file}")).await;
    assert_eq!((status, &f["bytes"]), (200, &json!(input(50).len())), "{f}");
    let created: Value = create(&c, b, "sk-alice", &file).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let done = poll_alternately(&c, &[a, b], id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 50, "completed": 50, "failed": 0})
    );
    let out = content(&c, a, "sk-alice", done["output_file_id"].as_str().unwrap()).await;
    every_custom_id_once(&out, 50);
    assert_eq!(m.stats().requests, 50, "each item sent once");
    // Both see the same lists, and another key sees none of it.
    let (_, on_a) = get(&c, a, "sk-alice", "/v1/batches").await;
    let (_, on_b) = get(&c, b, "sk-alice", "/v1/batches").await;
    assert_eq!(on_a["data"][0]["id"], on_b["data"][0]["id"]);
    let (status, _) = get(&c, b, "sk-bob", &format!("/v1/batches/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_batch_leaves_its_items_to_the_other() {
    let db = pg::Pg::start();
    let mut cfg = mock_cfg();
    cfg.latency_ms = 5;
    let m = mock(cfg).await;
    let (a_proc, a, _da) = replica("kill-a", &m.url(), &db);
    let c = client();
    let file = upload_ok(&c, a, "sk-alice", input(2000)).await;
    let created: Value = create(&c, a, "sk-alice", &file).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let reached = until(Duration::from_secs(60), || async {
        m.stats().completed >= 400
    })
    .await;
    assert!(reached, "the batch stalled at {:?}", m.stats());
    // B joins, then A dies at once (SIGKILL): what it held waits out its lease and B takes it.
    let (_b, b, _db) = replica("kill-b", &m.url(), &db);
    drop(a_proc);
    let done = poll_alternately(&c, &[b], &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 2000, "completed": 2000, "failed": 0})
    );
    let out = content(&c, b, "sk-alice", done["output_file_id"].as_str().unwrap()).await;
    every_custom_id_once(&out, 2000);
    // Sent twice: at most what A had in flight when it died.
    let sent = m.stats().requests;
    eprintln!("{sent} upstream requests for 2000 items, A killed at 400 answers");
    assert!(
        (2000..=2000 + CONCURRENCY).contains(&sent),
        "{sent} requests reached the upstream for 2000 items"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_refuses_the_batch_api_and_loses_nothing() {
    let mut db = pg::Pg::start();
    let mut cfg = mock_cfg();
    cfg.latency_ms = 20;
    let m = mock(cfg).await;
    let (_a, a, _da) = replica("outage", &m.url(), &db);
    let c = client();
    let file = upload_ok(&c, a, "sk-alice", input(300)).await;
    let created: Value = create(&c, a, "sk-alice", &file).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let reached = until(Duration::from_secs(60), || async {
        m.stats().completed >= 50
    })
    .await;
    assert!(reached, "the batch stalled at {:?}", m.stats());
    db.kill();
    let r = c
        .get(url(a, &format!("/v1/batches/{id}")))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "store_unavailable", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{e}"
    );
    // Interactive requests do not need the database.
    for _ in 0..5 {
        let r = c
            .post(url(a, "/v1/chat/completions"))
            .bearer_auth("sk-bob")
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    db.resume();
    // Once back (after the store's short back-off), the batch API answers again.
    let back = until(Duration::from_secs(30), || async {
        get(&c, a, "sk-alice", &format!("/v1/batches/{id}")).await.0 == 200
    })
    .await;
    assert!(back, "the Batch API never came back");
    let done = poll_alternately(&c, &[a], &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = content(&c, a, "sk-alice", done["output_file_id"].as_str().unwrap()).await;
    every_custom_id_once(&out, 300);
    assert_eq!(
        m.stats().requests,
        300 + 5,
        "each item sent once (and the five interactive requests)"
    );
}

#[test]
fn check_says_whether_the_database_is_reachable_and_its_version() {
    let mut db = pg::Pg::start();
    let dir = Dir::new("check-pg");
    let path = dir.0.join("gw.toml");
    let storage = format!("url = \"{}\"", db.url);
    std::fs::write(&path, config("http://127.0.0.1:9", &dir, "", &storage)).unwrap();
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_laneway"))
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = check();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("reachable, no schema yet"), "{said}");
    drop(laneway_storage::Postgres::open(&db.url, 1 << 20, dir.0.join("spool")).unwrap());
    let (_, said) = check();
    assert!(
        said.contains(&format!(
            "reachable, schema version {}",
            laneway_storage::POSTGRES_SCHEMA_VERSION
        )),
        "{said}"
    );
    db.sql("INSERT INTO laneway_schema VALUES (99, 0)");
    let (code, said) = check();
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("schema version 99 is newer"), "{said}");
    db.kill();
    let (code, said) = check();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("unreachable"), "{said}");
}
