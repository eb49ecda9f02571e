//! Bad input and failing upstreams: every error is OpenAI-shaped, names the problem, and leaves
//! nothing behind.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const KEYS: &str = r#"
[[key]]
name = "team-a"
key = "sk-team-a"
models = ["mock-1"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_naming_the_problem() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let post = |body: &'static str| {
        c.post(url(g.addr, "/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, needle, param) in [
        ("{not json", "not valid JSON", Value::Null),
        ("[1,2]", "JSON object", Value::Null),
        (r#"{"messages":[]}"#, "`model`", json!("model")),
        (r#"{"model":"mock-1"}"#, "`messages`", json!("messages")),
        (
            r#"{"model":7,"messages":[]}"#,
            "`model` must be a string",
            json!("model"),
        ),
        (
            r#"{"model":"mock-1","messages":[],"stream":"yes"}"#,
            "`stream` must be true or false",
            json!("stream"),
        ),
        (
            r#"{"model":"mock-1","messages":[],"max_tokens":-5}"#,
            "`max_tokens` must be a non-negative integer",
            json!("max_tokens"),
        ),
    ] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{body}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    assert_eq!(m.stats().requests, 0, "nothing bad reached the upstream");
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_keys_and_forbidden_models() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", KEYS).await;
    let c = client();
    let send = |key: Option<&'static str>, model: &'static str| {
        let mut r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .json(&chat_body(model));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = send(None, "mock-1").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "invalid_api_key");
    let r = send(Some("sk-wrong"), "mock-1").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = send(Some("sk-team-a"), "gpt-nothing").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "model_not_found");
    let r = send(Some("sk-team-a"), "mock-2").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "model_not_allowed");
    let r = send(Some("sk-team-a"), "mock-1").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = c
        .get(url(g.addr, "/v1/models"))
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock-1"], "of mock-*, only what the key may use");
    assert_eq!(
        c.get(url(g.addr, "/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(m.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "[server]\nmax_body = \"1KiB\"").await;
    let c = client();
    let mut body = chat_body("mock-1");
    body["messages"][0]["content"] = json!("x".repeat(2000));
    let r = chat(&c, g.addr, &body).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "payload_too_large");
    // Without a Content-Length the limit still holds while streaming the body in.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 400]))),
    );
    let r = c
        .post(url(g.addr, "/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the unread body ends the connection"
    );
    // The client opens a new connection instead of failing on the closed one.
    for _ in 0..20 {
        assert_eq!(chat(&c, g.addr, &chat_body("mock-1")).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_connections_gives_502_after_retries() {
    let refusing = refusing_port();
    let dead = format!("http://127.0.0.1:{}/v1", refusing.port);
    let g = simple(
        &dead,
        "",
        "[retry]\nmax_attempts = 2\nbackoff = { base = \"1ms\", max = \"5ms\" }",
    )
    .await;
    let r = chat(&client(), g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("connect"),
        "{v}"
    );
    let metrics = client()
        .get(url(g.addr, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("laneway_retries_total{lane=\"m\",reason=\"connect\"} 1"),
        "{metrics}"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_hits_the_deadline_and_is_dropped() {
    let m = slow_mock(60_000).await;
    let g = simple(&m.url(), "", "").await;
    let r = client()
        .post(url(g.addr, "/v1/chat/completions"))
        .header("x-laneway-timeout", "300ms")
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(error_code(r).await, "deadline_exceeded");
    let s = stats_until(&m, |s| s.cancelled == 1).await;
    assert_eq!(s.cancelled, 1, "the upstream request was dropped");
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_headers_are_named() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    for (h, v) in [
        ("x-laneway-timeout", "soon"),
        ("x-laneway-priority", "high"),
        ("x-laneway-priority", "99999999999999999999"),
    ] {
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .header(h, v)
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], h);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(v), "{h}: {v}: {message}");
    }
    let r = c
        .get(url(g.addr, "/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs, so a
/// connect to it hangs until the connector gives up. Kept alive as long as the value lives.
struct Unanswering {
    addr: std::net::SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: Vec<std::net::TcpStream>,
}

async fn unanswering() -> Unanswering {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // A backlog of 0 holds one or two pending connections; these fill it.
    let mut queued = Vec::new();
    for _ in 0..4 {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        if let Ok(s) = s {
            queued.push(s);
        }
    }
    Unanswering {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

/// Each lane connects within its own `connect_timeout`, and a reload's new value applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_s_connect_timeout_is_its_own_and_follows_a_reload() {
    let up = unanswering().await;
    let dir = std::env::temp_dir().join(format!("laneway-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laneway.toml");
    let config = |slow: &str| {
        format!(
            "[retry]\nmax_attempts = 1\n\
             [[lane]]\nname = \"slow\"\nurl = \"http://{}/v1\"\nconnect_timeout = \"{slow}\"\n\
             [[lane]]\nname = \"other\"\nurl = \"http://{}/v1\"\nconnect_timeout = \"30s\"\n\
             [[route]]\nmodel = \"mock-*\"\nlanes = [\"slow\"]\n\
             [[route]]\nmodel = \"other-*\"\nlanes = [\"other\"]\n",
            up.addr, up.addr
        )
    };
    std::fs::write(&path, config("150ms")).unwrap();
    let g = file_gateway(&path).await;
    let says = |timeout: &'static str| {
        let addr = g.addr;
        async move {
            let r = chat(&client(), addr, &chat_body("mock-1")).await;
            assert_eq!(r.status(), 502);
            let v: Value = r.json().await.unwrap();
            let msg = v["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                msg.contains(&format!("did not connect within {timeout}")),
                "{msg}"
            );
        }
    };
    // The lane's own 150 ms, not the 30 s of the other lane (once the largest of all lanes).
    says("150ms").await;
    std::fs::write(&path, config("250ms")).unwrap();
    g.app.reload().await.unwrap();
    says("250ms").await;
    let _ = std::fs::remove_dir_all(&dir);
}
