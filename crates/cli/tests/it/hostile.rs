//! Hostile numbers and answers: what a client or an upstream sends may be absurd, and the gateway
//! answers it without a panic, a hang or an empty reply.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const ADMIN: &str = "adm";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_client_deadlines_are_clamped_not_fatal() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    for v in [
        "1e20",
        "1e308",
        "99999999999999999999h",
        "inf",
        "18446744073709551615",
    ] {
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .header("x-laneway-timeout", v)
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "x-laneway-timeout: {v}");
    }
    for v in ["-1", "NaN", "soon", "0"] {
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .header("x-laneway-timeout", v)
            .json(&chat_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "x-laneway-timeout: {v}");
        assert_eq!(error_code(r).await, "invalid_request");
    }
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_max_tokens_never_fits_like_any_too_large_one() {
    let m = mock(mock_cfg()).await;
    let keys = "[[key]]\nname = \"k\"\nkey = \"sk-k\"\ntpm = 1000\n";
    let g = simple(&m.url(), "", keys).await;
    let c = client();
    let mut messages = Vec::new();
    for max in [json!(5000), json!(u64::MAX)] {
        let mut body = chat_body("mock-1");
        body["max_tokens"] = max.clone();
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .bearer_auth("sk-k")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "max_tokens {max}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit");
        messages.push(v["error"]["message"].as_str().unwrap().to_owned());
    }
    assert!(
        messages.iter().all(|m| m.contains("never fit")),
        "{messages:?}"
    );
    assert_eq!(m.stats().requests, 0, "nothing reached the upstream");
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_max_tokens_without_a_token_limit_is_passed_on_and_answered() {
    // No token limit anywhere: the gateway has nothing to weigh it against and passes it on;
    // the mock, like a provider, answers no longer than it would anyway.
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    for max in [json!(u64::from(u32::MAX) + 1), json!(u64::MAX)] {
        let mut body = chat_body("mock-1");
        body["max_tokens"] = max.clone();
        let r = c
            .post(url(g.addr, "/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "max_tokens {max}");
        let v: Value = r.json().await.unwrap();
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    }
    assert!(lanes_idle(&g).await);
}

/// A gateway with one lane in front of `upstream`, one attempt per request, and a short bound
/// on how long an upstream's hint may pause the lane.
async fn in_front_of(upstream: std::net::SocketAddr) -> laneway_server::Gateway {
    let toml = format!(
        "[server]\nadmin_key = \"{ADMIN}\"\n[retry]\nmax_attempts = 1\nmax_pause = \"1s\"\n\
         [[lane]]\nname = \"h\"\nurl = \"http://{upstream}\"\n\
         [[route]]\nmodel = \"*\"\nlanes = [\"h\"]\n"
    );
    gateway(&toml, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_upstream_pacing_hints_pause_a_lane_only_briefly() {
    let limited =
        br#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit"}}"#;
    let answers = [
        raw_response("429 Too Many Requests", &[("retry-after", "1e30")], limited),
        raw_response(
            "429 Too Many Requests",
            &[("retry-after", "1000000000000000000")],
            limited,
        ),
        raw_response(
            "429 Too Many Requests",
            &[("retry-after-ms", "1e300")],
            limited,
        ),
        raw_response(
            "429 Too Many Requests",
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            limited,
        ),
        raw_response(
            "429 Too Many Requests",
            &[("retry-after", "Sat, 01 Jan 99999999999999 00:00:00 GMT")],
            limited,
        ),
        raw_response(
            "200 OK",
            &[
                ("content-type", "application/json"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1e30"),
                ("x-ratelimit-limit-requests", "1"),
            ],
            br#"{"id":"x","object":"chat.completion","choices":[]}"#,
        ),
    ];
    let c = client();
    for answer in answers {
        let shown = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        let g = in_front_of(raw_upstream(answer).await).await;
        let r = chat(&c, g.addr, &chat_body("any-model")).await;
        let status = r.status().as_u16();
        assert!(status == 429 || status == 200, "{status} for {shown}");
        assert!(!r.bytes().await.unwrap().is_empty(), "a reply for {shown}");
        // Admin views format the pause without failing, and it is bounded by retry.max_pause.
        let (status, lanes) = admin_json(&c, g.addr, "/admin/lanes").await;
        assert_eq!(status, 200, "{shown}");
        assert!(lanes[0]["state"].is_string(), "{lanes}");
        let recovered = until(Duration::from_secs(10), || async {
            admin_json(&c, g.addr, "/admin/lanes").await.1[0]["state"] == "ok"
        })
        .await;
        assert!(recovered, "the lane reopens after retry.max_pause: {shown}");
        assert!(lanes_idle(&g).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_error_is_a_clear_502() {
    let big = vec![b'x'; 2 << 20];
    let g = in_front_of(raw_upstream(raw_response("400 Bad Request", &[], &big)).await).await;
    let r = chat(&client(), g.addr, &chat_body("any-model")).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{v}"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_framework_rejects_is_openai_shaped_too() {
    let m = mock(mock_cfg()).await;
    let g = simple(
        &m.url(),
        "",
        &format!("[server]\nadmin_key = \"{ADMIN}\"\n"),
    )
    .await;
    let c = client();
    for (method, path) in [
        ("POST", "/admin/requests/%ff/cancel"),
        ("POST", "/admin/stop-all?lane=a&lane=b"),
        ("POST", "/admin/clear-queue?lane=%zz"),
        ("GET", "/admin/requests?limit=x&limit=y"),
        ("POST", "/v1/chat/completions?x=%ff"),
        ("DELETE", "/v1/models"),
        ("GET", "/nope"),
    ] {
        let r = c
            .request(method.parse().unwrap(), url(g.addr, path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
            assert!(v["error"]["code"].is_string(), "{method} {path}: {v}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    }
    let metrics = metrics_text(&c, g.addr).await;
    assert!(
        metrics.contains("laneway_rejected_total{reason=\"invalid_request\"}"),
        "rejections are counted"
    );
}

/// Sends a stream through a gateway in front of an upstream answering `answer`, and checks the
/// client gets the first whole event, then a readable error event saying `says`, and no more.
async fn cut_stream_ends_readably(answer: Vec<u8>, says: &str) {
    let g = in_front_of(raw_upstream(answer).await).await;
    let r = chat(&client(), g.addr, &stream_body("any-model")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.len(), 2, "{text:?}");
    for f in &frames {
        let data = f.strip_prefix("data: ").unwrap();
        serde_json::from_str::<Value>(data).unwrap_or_else(|e| panic!("{e}: {f:?}"));
    }
    assert!(frames[1].contains(says), "{text:?}");
    assert!(!text.contains("[DONE]"));
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_event_ends_with_a_readable_error_event() {
    let events = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n\
                  data: {\"id\":\"c1\",\"object\":\"chat.comp";
    // Chunked, and the connection closes before the last chunk: a broken body, not an end.
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                       transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        .to_vec();
    answer.extend_from_slice(format!("{:x}\r\n{events}\r\n", events.len()).as_bytes());
    cut_stream_ends_readably(answer, "upstream_unreachable").await;

    // Close-delimited (no length, not chunked): the close itself ends the body, and mid-event
    // it is a broken stream all the same.
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                       connection: close\r\n\r\n"
        .to_vec();
    answer.extend_from_slice(events.as_bytes());
    cut_stream_ends_readably(answer, "in the middle of an event").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_is_locked_down_and_metrics_can_need_a_key() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "[server]\nmetrics_key = \"mk\"\n").await;
    let c = client();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/panel.js", "text/javascript"),
        ("/ui/panel.css", "text/css"),
    ] {
        let r = c.get(url(g.addr, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY");
    }
    let page = c
        .get(url(g.addr, "/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("<style>") && !page.contains("style=\""),
        "no inline styles"
    );
    assert!(!page.contains("<script>"), "no inline script");

    let r = c.get(url(g.addr, "/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "invalid_api_key");
    let r = c
        .get(url(g.addr, "/metrics"))
        .bearer_auth("mk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("# TYPE laneway_requests_total counter"));
}

/// A Responses or Messages stream cut by its upstream ends with that API's own error event,
/// named `error`, so each API's SDK reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_in_its_own_api_s_error_event() {
    let cases = [
        (
            "/v1/responses",
            json!({"model": "m", "input": "hi", "stream": true}),
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"resp",
            "\"code\":\"upstream_unreachable\"",
        ),
        (
            "/v1/messages",
            json!({"model": "m", "max_tokens": 4, "stream": true, "messages": []}),
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: content_block_delta\ndata: {\"type\":\"cont",
            "\"type\":\"api_error\"",
        ),
    ];
    for (path, body, events, says) in cases {
        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                           connection: close\r\n\r\n"
            .to_vec();
        answer.extend_from_slice(events.as_bytes());
        let g = in_front_of(raw_upstream(answer).await).await;
        let r = client()
            .post(url(g.addr, path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap_or_default();
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(
            last.starts_with("event: error\ndata: {"),
            "{path}: {text:?}"
        );
        let data: Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["type"], "error", "{path}: {data}");
        assert!(last.contains(says), "{path}: {last}");
        assert!(lanes_idle(&g).await);
    }
}
