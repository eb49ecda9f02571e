//! Limits shared by replicas through a real `redis-server` (Debian's), started on a free port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use laneway_server::Gateway;

use crate::util::*;

/// A `redis-server` of this test's own, without persistence, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Sends the server process a signal: `STOP` freezes it (connections stay open, nothing is
    /// answered), `CONT` lets it go on.
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig}");
    }

    async fn start() -> Self {
        Self::on(free_port()).await
    }

    async fn on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server; .ci/run installs it)");
        let r = Self { child, port };
        let up = until(Duration::from_secs(10), || async {
            r.cli(&["PING"]) == "PONG"
        })
        .await;
        assert!(up, "redis-server on port {port} never answered");
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(store: &str, lane: &str, rest: &str) -> String {
    format!(
        "[limits]\nstore = \"{store}\"\ntimeout = \"100ms\"\nlease = \"2s\"\n{rest}\n\
         [[lane]]\nname = \"m\"\nurl = \"{{mock}}\"\n{lane}\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n"
    )
}

async fn ready(g: &Gateway) -> bool {
    until(Duration::from_secs(10), || async {
        g.app.store.as_ref().is_some_and(|s| s.is_up())
    })
    .await
}

/// The answer to a request that must not hang: a store that fails is an error within its own
/// timeout, and the bound here is only there to fail a hang instead of waiting for it.
async fn answered<F: std::future::Future<Output = reqwest::Response>>(f: F) -> reqwest::Response {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the request hung")
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let r = client().get(url(addr, "/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_key_rate_limit() {
    // Ten a minute, all of it available at once: thirty requests sent together through both
    // replicas find ten in the fleet's bucket, not ten in each. The next one would refill only
    // six seconds later, far beyond the burst; counting, not timing, decides.
    let redis = Redis::start().await;
    let m = mock(mock_cfg()).await;
    let toml = config(
        &redis.url(),
        "",
        "[[key]]\nname = \"team\"\nkey = \"sk-team\"\nrpm = 10",
    );
    let (a, b) = (
        gateway(&toml, &m.url()).await,
        gateway(&toml, &m.url()).await,
    );
    assert!(ready(&a).await && ready(&b).await);
    let c = client();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let c = c.clone();
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move {
                let r = c
                    .post(url(addr, "/v1/chat/completions"))
                    .bearer_auth("sk-team")
                    .json(&chat_body("mock-1"))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => true,
                    429 => {
                        assert_eq!(error_code(r).await, "rate_limit");
                        false
                    }
                    s => panic!("unexpected status {s}"),
                }
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.unwrap());
    }
    assert_eq!(
        accepted, 10,
        "the fleet's ten a minute, not ten per replica"
    );
    assert_eq!(m.stats().requests, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_lane_limit_holds_across_replicas_and_a_freed_slot_serves_the_other() {
    let redis = Redis::start().await;
    let m = held_mock().await;
    let toml = config(
        &redis.url(),
        "concurrency_limit = { max_concurrent_requests = 8 }",
        "[server]\nauth = \"none\"",
    );
    let (a, b) = (
        gateway(&toml, &m.url()).await,
        gateway(&toml, &m.url()).await,
    );
    assert!(ready(&a).await && ready(&b).await);
    let c = client();
    let mut tasks: Vec<_> = (0..12).map(|_| chat_in_background(&c, a.addr)).collect();
    tasks.extend((0..12).map(|_| chat_in_background(&c, b.addr)));
    stats_until(&m, |s| s.held == 8).await;
    // Each replica would admit 8 on its own; the fleet holds 8 in all.
    let on = |g: &Gateway| g.app.store.as_ref().map_or(0, |s| s.held());
    assert_eq!(on(&a) + on(&b), 8);
    // Slots freed one at a time go to whichever replica has a waiter.
    for done in 1..=16u64 {
        m.release(Some(1));
        stats_until(&m, |s| s.completed == done && s.held == 8.min(24 - done)).await;
    }
    m.set_hold(false);
    m.release(None);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let s = m.stats();
    assert_eq!((s.completed, s.max_in_flight), (24, 8), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_frees_its_slots_within_the_lease() {
    let redis = Redis::start().await;
    let m = held_mock().await;
    let toml = config(
        &redis.url(),
        "concurrency_limit = { max_concurrent_requests = 4 }",
        "[server]\nauth = \"none\"",
    )
    .replace("{mock}", &m.url());
    let dir = std::env::temp_dir().join(format!("laneway-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("replica.toml");
    std::fs::write(&path, &toml).unwrap();
    let (mut child, addr) = crate::binary::spawn(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir,
        &[],
        Stdio::null(),
    );
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let c = client();
    let up = until(Duration::from_secs(10), || async {
        readyz(addr).await.1["store"]["up"] == true
    })
    .await;
    assert!(up, "the replica's store never came up");
    // Their replica dies under them: each ends with a broken connection, not an answer.
    let doomed: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.post(url(addr, "/v1/chat/completions"))
                    .json(&chat_body("mock-1"))
                    .send()
                    .await
            })
        })
        .collect();
    stats_until(&m, |s| s.held == 4).await;
    let b = gateway(&toml, &m.url()).await;
    assert!(ready(&b).await);
    let waiting = chat_in_background(&c, b.addr);
    // The fleet is full: the other replica's request waits for a shared slot.
    let reached = until(Duration::from_millis(500), || async {
        m.stats().requests > 4
    })
    .await;
    assert!(
        !reached,
        "a fifth request reached the upstream of a fleet limited to 4"
    );
    child.kill().unwrap(); // SIGKILL: no release, only the leases' expiry
    let _ = child.wait();
    m.set_hold(false);
    m.release(None);
    // Only the leases' expiry can let it in: nothing else frees the dead replica's slots.
    let served = tokio::time::timeout(Duration::from_secs(60), waiting).await;
    assert_eq!(
        served
            .expect("the dead replica's slots never came back")
            .unwrap(),
        200
    );
    for d in doomed {
        assert!(d.await.unwrap().is_err(), "a killed replica answered");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_fails_open_or_closed_and_both_recover() {
    let redis = Redis::start().await;
    let port = redis.port;
    let m = mock(mock_cfg()).await;
    let auth = "[server]\nauth = \"none\"";
    let open = gateway(&config(&redis.url(), "", auth), &m.url()).await;
    let closed = gateway(
        &config(&redis.url(), "", auth).replace(
            "lease = \"2s\"",
            "lease = \"2s\"\non_store_error = \"closed\"",
        ),
        &m.url(),
    )
    .await;
    assert!(ready(&open).await && ready(&closed).await);
    let c = client();
    assert_eq!(
        chat(&c, closed.addr, &chat_body("mock-1")).await.status(),
        200
    );
    drop(redis);
    // Until the probe notices, a request finds out by itself: an answer, never a hang.
    for _ in 0..20 {
        assert_eq!(
            answered(chat(&c, open.addr, &chat_body("mock-1")))
                .await
                .status(),
            200
        );
        let r = answered(chat(&c, closed.addr, &chat_body("mock-1"))).await;
        let status = r.status().as_u16();
        if status == 503 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(error_code(r).await, "store_unavailable");
        } else {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(readyz(open.addr).await.1["status"], "degraded");
    let (code, body) = readyz(closed.addr).await;
    assert_eq!(
        (code, body["store"]["up"].as_bool()),
        (503, Some(false)),
        "{body}"
    );
    assert!(metrics_text(&c, open.addr)
        .await
        .contains("laneway_store_up 0"));
    let redis = Redis::on(port).await;
    assert!(ready(&open).await && ready(&closed).await);
    assert_eq!(
        chat(&c, closed.addr, &chat_body("mock-1")).await.status(),
        200
    );
    assert_eq!(readyz(closed.addr).await.0, 200);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_slow_or_foreign_stores_are_errors_not_hangs() {
    let m = mock(mock_cfg()).await;
    let auth = "[server]\nauth = \"none\"";
    let c = client();
    let refusing = refusing_port();
    for store in [
        format!("redis://127.0.0.1:{}", refusing.port),
        "redis://no-such-host.invalid:6379".to_owned(),
    ] {
        let g = gateway(
            &config(&store, "", auth).replace(
                "lease = \"2s\"",
                "lease = \"2s\"\non_store_error = \"closed\"",
            ),
            &m.url(),
        )
        .await;
        let r = answered(chat(&c, g.addr, &chat_body("mock-1"))).await;
        assert_eq!(error_code(r).await, "store_unavailable", "{store}");
        let (code, body) = readyz(g.addr).await;
        assert_eq!(code, 503);
        assert!(
            body["store"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }

    // A Redis that stops answering (its process stopped, held until the test lets it go):
    // requests are served on local limits, not held with it.
    let redis = Redis::start().await;
    let g = gateway(
        &config(
            &redis.url(),
            "concurrency_limit = { max_concurrent_requests = 4 }",
            auth,
        ),
        &m.url(),
    )
    .await;
    assert!(ready(&g).await);
    redis.signal("STOP");
    let went_down = until(Duration::from_secs(5), || async {
        !g.app.store.as_ref().unwrap().is_up()
    })
    .await;
    assert!(went_down, "a store that stopped answering was not noticed");
    assert_eq!(
        answered(chat(&c, g.addr, &chat_body("mock-1")))
            .await
            .status(),
        200
    );
    redis.signal("CONT");
    assert!(ready(&g).await);

    // Keys of another layout under the prefix: refused with a message that says what to do.
    redis.cli(&["SET", "other:schema", "0"]);
    let foreign = gateway(
        &config(&redis.url(), "", auth)
            .replace("lease = \"2s\"", "lease = \"2s\"\nprefix = \"other\""),
        &m.url(),
    )
    .await;
    let said = until(Duration::from_secs(5), || async {
        readyz(foreign.addr).await.1["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("layout 0"))
    })
    .await;
    assert!(said, "{}", readyz(foreign.addr).await.1);
    // A key of the wrong type where a lease set belongs: the request is served (fail-open) and
    // the error names the problem.
    redis.cli(&["SET", "laneway:v1:lane:m:held", "junk"]);
    let before = g.app.store.as_ref().unwrap().errors();
    assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    assert!(g.app.store.as_ref().unwrap().errors() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_longer_than_its_lease_time_is_renewed() {
    let redis = Redis::start().await;
    let m = held_mock().await;
    let toml = config(
        &redis.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "[server]\nauth = \"none\"",
    );
    let (a, b) = (
        gateway(&toml, &m.url()).await,
        gateway(&toml, &m.url()).await,
    );
    assert!(ready(&a).await && ready(&b).await);
    let c = client();
    let long = chat_in_background(&c, a.addr);
    stats_until(&m, |s| s.held == 1).await;
    let other = chat_in_background(&c, b.addr);
    // Twice the lease time: without renewal the slot would expire and the second would start.
    let reached = until(Duration::from_secs(4), || async { m.stats().requests > 1 }).await;
    assert!(
        !reached,
        "the lease of a running request expired while it ran"
    );
    m.set_hold(false);
    m.release(None);
    assert_eq!(long.await.unwrap(), 200);
    assert_eq!(other.await.unwrap(), 200);
    assert_eq!(m.stats().max_in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_pause_learned_by_one_replica_holds_the_others() {
    let redis = Redis::start().await;
    let mut cfg = mock_cfg();
    cfg.fail_first = 1;
    cfg.fail_retry_after_ms = 3000;
    let m = mock(cfg).await;
    let toml = config(&redis.url(), "", "[server]\nauth = \"none\"");
    let (a, b) = (
        gateway(&toml, &m.url()).await,
        gateway(&toml, &m.url()).await,
    );
    assert!(ready(&a).await && ready(&b).await);
    let c = client();
    let first = chat_in_background(&c, a.addr);
    stats_until(&m, |s| s.rejected_429 == 1).await;
    // The pause reaches the store just after the 429 does.
    let shared = until(Duration::from_secs(5), || async {
        redis.cli(&["EXISTS", "laneway:v1:lane:m:cool"]) == "1"
    })
    .await;
    assert!(shared, "the lane's pause never reached the store");
    let second = chat_in_background(&c, b.addr);
    let reached = until(Duration::from_secs(1), || async { m.stats().requests > 1 }).await;
    assert!(!reached, "the other replica sent upstream during the pause");
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(m.stats().rejected_429, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_made_through_one_replica_continues_on_its_lane_through_the_other() {
    // Two accounts (two mocks) behind two replicas that share a store: a response lives in the
    // account that made it, and each mock answers 404 for an id it did not make.
    let redis = Redis::start().await;
    let (m1, m2) = (mock(mock_cfg()).await, mock(mock_cfg()).await);
    let toml = format!(
        "[limits]\nstore = \"{}\"\ntimeout = \"100ms\"\nlease = \"2s\"\n[server]\nauth = \"none\"\n\
         [[lane]]\nname = \"one\"\nurl = \"{}\"\n[[lane]]\nname = \"two\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"mock-*\"\nlanes = [\"one\", \"two\"]\n",
        redis.url(),
        m1.url(),
        m2.url()
    );
    let (a, b) = (gateway(&toml, "").await, gateway(&toml, "").await);
    assert!(ready(&a).await && ready(&b).await);
    let c = client();
    let lane_of =
        |r: &reqwest::Response| r.headers()["x-laneway-lane"].to_str().unwrap().to_owned();
    let mut made = Vec::new();
    for i in 0..8 {
        let r = c
            .post(url(a.addr, "/v1/responses"))
            .json(&serde_json::json!({"model": "mock-1", "input": format!("turn one of {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let lane = lane_of(&r);
        let v: serde_json::Value = r.json().await.unwrap();
        made.push((v["id"].as_str().unwrap().to_owned(), lane));
    }
    let lanes: std::collections::HashSet<_> = made.iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(lanes.len(), 2, "both accounts made responses: {made:?}");
    for (id, lane) in &made {
        let r = c
            .post(url(b.addr, "/v1/responses"))
            .json(&serde_json::json!({"model": "mock-1", "input": "turn two", "previous_response_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&lane_of(&r), lane, "{id} continued on another lane");
        let got = c
            .get(url(b.addr, &format!("/v1/responses/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.status(),
            200,
            "{id} was not found through the other replica"
        );
        assert_eq!(&lane_of(&got), lane);
    }
}

/// `/admin/requests` of a replica, with the admin key.
async fn fleet_requests(c: &reqwest::Client, g: &Gateway) -> Vec<serde_json::Value> {
    c.get(url(g.addr, "/admin/requests"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_shows_and_acts_on_the_requests_of_the_other() {
    let redis = Redis::start().await;
    let m = held_mock().await;
    let toml = config(
        &redis.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "[server]\nauth = \"none\"\nadmin_key = \"adm\"",
    );
    let (a, b) = (
        gateway(&toml, &m.url()).await,
        gateway(&toml, &m.url()).await,
    );
    assert!(ready(&a).await && ready(&b).await);
    let on_a = a.app.fleet.as_ref().unwrap().replica().to_owned();
    let c = client();
    let occupant = tokio::spawn({
        let c = c.clone();
        async move { chat(&c, a.addr, &chat_body("mock-1")).await }
    });
    stats_until(&m, |s| s.held == 1).await;
    let queued = tokio::spawn({
        let c = c.clone();
        async move { chat(&c, a.addr, &chat_body("mock-1")).await }
    });
    // B lists both of A's requests, each with A as its replica.
    let seen = until(Duration::from_secs(10), || async {
        fleet_requests(&c, &b).await.len() == 2
    })
    .await;
    let listed = fleet_requests(&c, &b).await;
    assert!(seen, "B never listed A's two requests: {listed:?}");
    assert!(
        listed.iter().all(|r| r["replica"] == on_a.as_str()),
        "{listed:?}"
    );
    let waiting = listed.iter().find(|r| r["state"] == "queued").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Cancelled through B: its client, on A, is told so.
    let r = c
        .post(url(b.addr, &format!("/admin/requests/{waiting}/cancel")))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let cancelled = queued.await.unwrap();
    assert_eq!(cancelled.status(), 503);
    assert_eq!(error_code(cancelled).await, "request_cancelled");
    // Stop all through B stops what runs on A.
    let r: serde_json::Value = c
        .post(url(b.addr, "/admin/stop-all"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["stopped"], 1, "{r}");
    let stopped = occupant.await.unwrap();
    assert_eq!(stopped.status(), 503);
    // Pausing a lane through B pauses it on A too.
    let r = c
        .post(url(b.addr, "/admin/lanes/m/pause"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let paused = until(Duration::from_secs(10), || async {
        a.app.topo.load().lanes[0].lane.snapshot().paused
    })
    .await;
    assert!(paused, "A's lane was not paused");
    m.set_hold(false);
    m.release(None);
}
