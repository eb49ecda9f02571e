//! Shared test helpers: real servers on 127.0.0.1:0, a client, and bounded waits for conditions.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use laneway_config::Config;
use laneway_mock::{MockConfig, MockServer, StatsSnapshot};
use laneway_server::Gateway;
use serde_json::{json, Value};

pub async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .expect("mock starts")
}

/// A mock that answers after `latency_ms`.
pub async fn slow_mock(latency_ms: u64) -> MockServer {
    let mut cfg = mock_cfg();
    cfg.latency_ms = latency_ms;
    mock(cfg).await
}

/// A mock that holds every answer at its gate until the test releases it.
pub async fn held_mock() -> MockServer {
    let mut cfg = mock_cfg();
    cfg.hold = true;
    mock(cfg).await
}

/// With a lane that runs one request at a time in front of a [`held_mock`]: lets the requests
/// through one by one and returns their `x-request-id`s in the order the lane started them.
pub async fn serial_order(g: &Gateway, m: &MockServer, n: usize) -> Vec<String> {
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let id = loop {
            let running: Vec<_> = laneway_server::views::views(&g.app)
                .into_iter()
                .filter(|r| r.state == "running")
                .collect();
            // The request held at the mock is the only one running once the one before it left.
            if m.stats().held == 1 && running.len() == 1 {
                break running[0].client_request_id.clone().unwrap_or_default();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no single request reached the mock; order so far {order:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        m.release(Some(1));
        let gone = until(Duration::from_secs(10), || async {
            !laneway_server::views::views(&g.app)
                .iter()
                .any(|r| r.client_request_id.as_deref() == Some(id.as_str()))
        })
        .await;
        assert!(gone, "request {id} never finished after its release");
        order.push(id);
    }
    order
}

pub fn mock_cfg() -> MockConfig {
    MockConfig::new()
}

/// A config that names no storage gets a private directory of its own, so that a test's
/// Batch API files or response ids never land in the source tree (the default path is
/// relative to the working directory).
fn own_storage(config: &mut Config) {
    if config.storage.path == std::path::Path::new("laneway-data") {
        config.storage.path = laneway_storage::private::fresh_temp_dir("laneway-it")
            .expect("a private storage directory");
    }
}

/// Starts a gateway from TOML text; `{mock}` is replaced by `mock_url`.
pub async fn gateway(toml: &str, mock_url: &str) -> Gateway {
    let text = toml.replace("{mock}", mock_url);
    let mut config =
        Config::parse(&text).unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    own_storage(&mut config);
    Gateway::start(config, None, Some(([127, 0, 0, 1], 0).into()))
        .await
        .expect("gateway starts")
}

/// Starts a gateway from a config file, which reloads read again.
pub async fn file_gateway(path: &std::path::Path) -> Gateway {
    // The storage path stays as the file says: a reload that changed it would be refused.
    let config = Config::load(path).unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    Gateway::start(
        config,
        Some(path.to_owned()),
        Some(([127, 0, 0, 1], 0).into()),
    )
    .await
    .expect("gateway starts")
}

/// Sends a chat request in the background; the task ends with its status.
pub fn chat_in_background(c: &reqwest::Client, addr: SocketAddr) -> tokio::task::JoinHandle<u16> {
    let c = c.clone();
    tokio::spawn(async move { chat(&c, addr, &chat_body("mock-1")).await.status().as_u16() })
}

/// A gateway with one lane `m` for `mock-*` in front of `mock_url`, plus extra TOML.
pub async fn simple(mock_url: &str, lane_extra: &str, extra: &str) -> Gateway {
    let toml = format!("{extra}\n[[lane]]\nname = \"m\"\nurl = \"{{mock}}\"\n{lane_extra}\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n");
    gateway(&toml, mock_url).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("client")
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// A streaming chat request body.
pub fn stream_body(model: &str) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    body
}

pub async fn chat(c: &reqwest::Client, addr: SocketAddr, body: &Value) -> reqwest::Response {
    c.post(url(addr, "/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// `GET path` with the admin key the tests configure (`adm`): status and JSON body.
pub async fn admin_json(c: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = c
        .get(url(addr, path))
        .bearer_auth("adm")
        .send()
        .await
        .expect("admin request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The gateway's `/metrics` page (no metrics key).
pub async fn metrics_text(c: &reqwest::Client, addr: SocketAddr) -> String {
    let r = c.get(url(addr, "/metrics")).send().await.expect("metrics");
    r.text().await.expect("metrics text")
}

/// The error code of an OpenAI-shaped error response.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("error body is JSON");
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OpenAI error: {v}"))
        .to_owned()
}

/// Waits until `cond` holds, checking every few milliseconds, for at most `limit`.
pub async fn until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most 10 s) for the mock's stats to satisfy `cond`, and fails the test otherwise.
pub async fn stats_until(m: &MockServer, cond: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    let met = until(Duration::from_secs(10), || async { cond(&m.stats()) }).await;
    let s = m.stats();
    assert!(met, "the mock never reached the expected state: {s:?}");
    s
}

/// Every lane of the gateway idle: nothing in flight, nothing queued.
pub async fn lanes_idle(g: &Gateway) -> bool {
    until(Duration::from_secs(5), || async {
        g.app.topo.load().lanes.iter().all(|l| {
            let s = l.lane.snapshot();
            s.in_flight == 0 && s.queued == 0
        }) && g.app.table.is_empty()
    })
    .await
}

/// A loopback port that refuses connections for as long as the value lives: bound, never
/// listening, so no other socket can take it meanwhile.
pub struct RefusingPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    RefusingPort {
        port,
        _socket: socket,
    }
}

/// A loopback port free when asked, for a server that must bind it itself (`redis-server` has
/// no port 0 that it reports back).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// An upstream that answers every request with `response` (raw HTTP/1.1 bytes, sent as they
/// are) and closes the connection: for answers the mock would never give.
pub async fn raw_upstream(response: Vec<u8>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                // Read the request head and its declared body before answering.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // A gateway that stops sending fails the test instead of hanging it.
                    let read = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk));
                    let Ok(Ok(n)) = read.await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// A raw HTTP/1.1 response with the given status line, extra headers and body.
pub fn raw_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}
