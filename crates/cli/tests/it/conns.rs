//! Connections cannot be held hostage: slow heads, lying bodies, idle keep-alives and a full
//! descriptor table all leave the gateway answering real work. Real sockets throughout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::spawn_limited;
use crate::util::*;

/// Waits for the server to close `s`; false if it is still open after `limit` (a hang).
async fn closed_by_server(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Reads one whole response (the server closes after it, `connection: close`).
async fn response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn gateway_with(server: &str) -> (laneway_server::Gateway, laneway_mock::MockServer) {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", &format!("[server]\n{server}\n")).await;
    (g, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_too_slowly_is_cut_off() {
    let (g, _m) = gateway_with("header_timeout = \"200ms\"").await;
    let mut first = TcpStream::connect(g.addr).await.unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(closed_by_server(&mut first, Duration::from_secs(10)).await);
    // Nothing sent at all counts the same for a new connection.
    let mut silent = TcpStream::connect(g.addr).await.unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(10)).await);
    assert!(g.app.conns.len() <= 1, "{}", g.app.conns.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_length_is_answered_408() {
    let (g, m) = gateway_with("body_timeout = \"200ms\"").await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\nconnection: close\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let text = response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert_eq!(m.stats().requests, 0);
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (g, _m) = gateway_with("idle_timeout = \"200ms\"\nheader_timeout = \"30s\"").await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut s, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_the_oldest_idle_connection_makes_room() {
    let (g, m) = gateway_with("max_connections = 20\nheader_timeout = \"60s\"").await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(g.addr).await.unwrap());
    }
    let c = client();
    let r = chat(&c, g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(m.stats().completed, 1);
    // The oldest ones were closed to make room; the gateway holds no more than its maximum.
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(10)).await);
    assert!(
        until(Duration::from_secs(5), || async { g.app.conns.len() <= 20 }).await,
        "{}",
        g.app.conns.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_a_new_one_gets_503() {
    let mut cfg = mock_cfg();
    cfg.hold = true;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "[server]\nmax_connections = 2\n").await;
    let c = client();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (c, addr) = (client(), g.addr);
            tokio::spawn(async move { chat(&c, addr, &chat_body("mock-1")).await.status() })
        })
        .collect();
    stats_until(&m, |s| s.held == 2).await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    let text = response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("max_connections"), "{text}");
    m.release(None);
    for b in busy {
        assert_eq!(b.await.unwrap(), 200);
    }
    drop(c);
}

/// Opens `idle` silent connections and `slow` ones that sent half a request head.
async fn attach(addr: SocketAddr, idle: usize, slow: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..idle + slow {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        if i >= idle {
            let _ = s
                .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: ")
                .await;
        }
        held.push(s);
    }
    held
}

/// Time for a healthz and a completion over fresh connections.
async fn normal_request(c: &reqwest::Client, addr: &str) -> Duration {
    let start = Instant::now();
    let r = c
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ulimit_256_held_connections_never_starve_real_work() {
    let (_proc, addr) = spawn_limited(256, &["serve", "--listen", "127.0.0.1:0"]);
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let usual = normal_request(&fresh(), &addr).await;
    let sock: SocketAddr = addr.parse().unwrap();
    let held = attach(sock, 300, 100).await;
    let under_attack = normal_request(&fresh(), &addr).await;
    eprintln!(
        "ulimit 256, {} sockets attached: usual {usual:?}, under attack {under_attack:?}",
        held.len()
    );
    // And again after more arrive: the gateway keeps accepting.
    let more = attach(sock, 200, 0).await;
    normal_request(&fresh(), &addr).await;
    drop((held, more));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_idle_or_half_sent_connections() {
    let dir = std::env::temp_dir().join(format!("laneway-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        "[server]\nshutdown_grace = \"120s\"\nheader_timeout = \"120s\"\nbody_timeout = \"120s\"\n\
         [[lane]]\nname = \"mock\"\nkind = \"mock\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"mock\"]\n",
    )
    .unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let (mut proc, addr) = spawn_limited(4096, &args);
    let sock: SocketAddr = addr.parse().unwrap();
    let mut held = attach(sock, 5, 5).await;
    // A body promised and never sent, and a keep-alive connection that served a request.
    let mut lying = TcpStream::connect(sock).await.unwrap();
    lying
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{")
        .await
        .unwrap();
    let mut kept = TcpStream::connect(sock).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf)).await;
    assert!(read.expect("an answer").unwrap() > 0);
    held.push(lying);
    held.push(kept);
    let pid = proc.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Exits well before the 120 s grace: nothing it holds is a request being served.
    let waited = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = proc.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
    .await
    .unwrap();
    let status = waited.expect("the gateway exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(held);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_cannot_be_read_gets_an_openai_shaped_error_and_a_close() {
    let (g, m) = gateway_with("").await;
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_uri = format!("/v1/models?{}", "a".repeat(70_000));
    for (head, status) in [
        (
            format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
            "431",
        ),
        (format!("GET {long_uri} HTTP/1.1\r\nhost: x\r\n\r\n"), "414"),
        (
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_owned(),
            "400",
        ),
    ] {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let text = response(&mut s).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(text.contains("content-type: application/json"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).expect(&text);
        assert_eq!(v["error"]["code"], "invalid_request", "{text}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("request's"), "{text}");
        // Byte for byte what Laneway's one renderer makes of the same refusal.
        let same = laneway_engine::render::response(&laneway_core::ApiError::new(
            laneway_core::ErrorCode::InvalidRequest,
            message,
        ));
        assert_eq!(body.as_bytes(), &same.body()[..], "{text}");
    }
    assert_eq!(m.stats().requests, 0, "nothing reached the upstream");
    assert!(lanes_idle(&g).await);
}
