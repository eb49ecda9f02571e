//! Every model endpoint goes through the lanes: limits hold across a mix of chat, Responses and
//! Messages requests, and each API's own details (id pinning, Anthropic's key header and error
//! shape) survive the trip.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::util::*;

fn bodies() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push((
            "/v1/chat/completions",
            json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("c{i}")}]}),
        ));
        out.push((
            "/v1/responses",
            json!({"model": "mock-1", "input": format!("r{i}"), "max_output_tokens": 8}),
        ));
        out.push((
            "/v1/messages",
            json!({"model": "claude-1", "max_tokens": 8, "messages": [{"role": "user", "content": format!("m{i}")}]}),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_limits_hold_for_a_mix_of_chat_responses_and_messages() {
    let m = held_mock().await;
    let toml = "[[lane]]\nname = \"m\"\nurl = \"{mock}\"\n\
                concurrency_limit = { max_concurrent_requests = 2 }\n\
                [[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
                [[route]]\nmodel = \"claude-*\"\nlanes = [\"m\"]\n";
    let g = gateway(toml, &m.url()).await;
    let c = client();
    let sent: Vec<_> = bodies()
        .into_iter()
        .map(|(path, body)| {
            let (c, addr) = (c.clone(), g.addr);
            tokio::spawn(async move {
                let r = c.post(url(addr, path)).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                (path, status, r.json::<Value>().await.unwrap_or_default())
            })
        })
        .collect();
    stats_until(&m, |s| s.held == 2).await;
    let lane = || g.app.topo.load().lanes[0].lane.snapshot();
    assert!(
        until(std::time::Duration::from_secs(10), || async {
            lane().queued == 7
        })
        .await,
        "seven wait behind the two running"
    );
    m.set_hold(false);
    m.release(None);
    // Bounded so that a request that never ends fails the test instead of hanging it.
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), join_all(sent))
        .await
        .expect("every request finished");
    for (path, status, body) in done.into_iter().map(Result::unwrap) {
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(
        m.stats().max_in_flight,
        2,
        "the lane's limit held across the endpoints"
    );
    let metrics = metrics_text(&c, g.addr).await;
    // 3 chats × 16 + 3 responses × 8 + 3 messages × 8 completion tokens, each API's usage read.
    assert!(
        metrics.contains("laneway_tokens_total{lane=\"m\",kind=\"completion\"} 96"),
        "{metrics}"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_counts_every_endpoint_and_refuses_messages_in_anthropic_s_shape() {
    let m = mock(mock_cfg()).await;
    let g = simple(
        &m.url(),
        "",
        "[[key]]\nname = \"k\"\nkey = \"sk-k\"\nrpm = 2\n[[route]]\nmodel = \"claude-*\"\nlanes = [\"m\"]\n\
         [[key]]\nname = \"t\"\nkey = \"sk-t\"\ntpm = 100\n",
    )
    .await;
    let c = client();
    let send = |path: &'static str, body: Value| {
        let c = c.clone();
        let addr = g.addr;
        async move {
            c.post(url(addr, path))
                .header("x-api-key", "sk-k")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let all = bodies();
    assert_eq!(send(all[0].0, all[0].1.clone()).await.status(), 200);
    assert_eq!(send(all[1].0, all[1].1.clone()).await.status(), 200);
    let refused = send(all[2].0, all[2].1.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("retry in"));
    assert_eq!(m.stats().requests, 2);

    // A token limit counts what each API asks for: a Responses request's max_output_tokens
    // as a chat request's max_tokens.
    let tpm = |path: &'static str, body: Value| {
        let c = c.clone();
        let addr = g.addr;
        async move {
            c.post(url(addr, path))
                .bearer_auth("sk-t")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let big = json!({"model": "mock-1", "input": "x", "max_output_tokens": 150});
    assert_eq!(
        tpm("/v1/responses", big).await,
        429,
        "150 output tokens never fit 100 a minute"
    );
    let small = json!({"model": "mock-1", "input": "x", "max_output_tokens": 40});
    assert_eq!(tpm("/v1/responses", small.clone()).await, 200);
    let chat = json!({"model": "mock-1", "max_tokens": 40, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(tpm("/v1/chat/completions", chat).await, 200);
    // The two answers used about 41 tokens (settled from their usage); 70 more do not fit.
    let messages = json!({"model": "claude-1", "max_tokens": 70, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        tpm("/v1/messages", messages).await,
        429,
        "the minute's tokens are spent"
    );
    assert_eq!(m.stats().requests, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_lane_sends_its_key_as_x_api_key_with_the_client_s_version() {
    // The raw upstream answers once and keeps what it was sent.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = seen.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\"messages\"") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        *keep.lock().unwrap() = String::from_utf8_lossy(&got).to_lowercase();
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":1,"output_tokens":1}}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(answer.as_bytes()).await.unwrap();
    });
    let toml = format!(
        "[[lane]]\nname = \"claude\"\nurl = \"http://{addr}/v1\"\napi = \"anthropic\"\napi_key = \"sk-ant-upstream\"\n\
         [[route]]\nmodel = \"claude-*\"\nlanes = [\"claude\"]\n"
    );
    let g = gateway(&toml, "").await;
    let r = client()
        .post(url(g.addr, "/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-04-04")
        .json(&json!({"model": "claude-1", "max_tokens": 8, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = seen.lock().unwrap().clone();
    assert!(head.starts_with("post /v1/messages "), "{head}");
    assert!(head.contains("x-api-key: sk-ant-upstream"), "{head}");
    assert!(!head.contains("authorization:"), "{head}");
    assert!(head.contains("anthropic-version: 2023-06-01"), "{head}");
    assert!(head.contains("anthropic-beta: tools-2024-04-04"), "{head}");
}
