//! The request path end to end: endpoints, streaming, rewriting, disconnects.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openai_endpoint_answers_through_a_lane() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let r = chat(&c, g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 16);

    let r = c
        .post(url(g.addr, "/v1/completions"))
        .json(&json!({"model": "mock-1", "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["object"],
        "text_completion"
    );

    let r = c
        .post(url(g.addr, "/v1/embeddings"))
        .json(&json!({"model": "mock-embed", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["data"][0]["object"],
        "embedding"
    );

    let v: Value = c
        .get(url(g.addr, "/v1/models"))
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
    assert_eq!(
        ids,
        ["mock-1", "mock-embed", "mock-large"],
        "the upstream's ids, not the pattern"
    );
    assert_eq!(m.stats().completed, 3);
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_request_id_is_kept_and_one_is_made_otherwise() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let r = c
        .post(url(g.addr, "/v1/chat/completions"))
        .header("x-request-id", "trace-42")
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let r = c.get(url(g.addr, "/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_relayed_chunk_by_chunk() {
    let mut cfg = mock_cfg();
    cfg.tokens_per_second = 50.0;
    cfg.output_tokens = 10;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let body = stream_body("mock-1");
    let r = chat(&c, g.addr, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // The first chunk reached the client while the upstream was still producing the rest.
    assert_eq!(m.stats().completed, 0, "the gateway buffered the stream");
    let mut all = first.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        text.matches("data: ").count(),
        13,
        "role + 10 tokens + finish + DONE"
    );
    assert!(!text.contains("usage"), "no usage chunk unless asked");
    assert!(lanes_idle(&g).await);
    // Laneway asked the upstream for usage all the same: the tokens are counted.
    let metrics = metrics_text(&c, g.addr).await;
    assert!(
        metrics.contains("laneway_tokens_total{lane=\"m\",kind=\"completion\"} 10"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_relayed_when_the_client_asks_for_it() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "tpm = 100000", "").await;
    let c = client();
    let mut body = stream_body("mock-1");
    let text = chat(&c, g.addr, &body).await.text().await.unwrap();
    assert!(
        !text.contains("\"usage\""),
        "the chunk Laneway asked for is removed: {text}"
    );
    body["stream_options"] = json!({"include_usage": true});
    let text = chat(&c, g.addr, &body).await.text().await.unwrap();
    assert!(text.contains("\"usage\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_model_replaces_the_client_model() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "model = \"provider-model\"", "").await;
    let v: Value = chat(&client(), g.addr, &chat_body("mock-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "provider-model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_drops_the_upstream_at_once() {
    let mut cfg = mock_cfg();
    cfg.tokens_per_second = 20.0;
    cfg.output_tokens = 1000;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let body = stream_body("mock-1");
    let r = chat(&c, g.addr, &body).await;
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let s = stats_until(&m, |s| s.cancelled == 1).await;
    assert_eq!((s.cancelled, s.completed, s.in_flight), (1, 0, 0));
    assert!(lanes_idle(&g).await, "the permit was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_answer_drops_the_upstream() {
    let m = slow_mock(30_000).await;
    let g = simple(&m.url(), "", "").await;
    let c = client();
    let addr = g.addr;
    let req = tokio::spawn(async move { chat(&c, addr, &chat_body("mock-1")).await });
    assert!(
        until(Duration::from_secs(5), || async {
            m.stats().in_flight == 1
        })
        .await
    );
    req.abort();
    let s = stats_until(&m, |s| s.cancelled == 1).await;
    assert_eq!(s.cancelled, 1);
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_with_status_and_body() {
    let mut cfg = mock_cfg();
    cfg.error_rate = 1.0;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "[retry]\nmax_attempts = 1").await;
    let r = chat(&client(), g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "injected failure");
    assert_eq!(m.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_mid_stream_ends_it_with_an_error_event_and_no_retry() {
    // A token a second for a hundred seconds: the deadline ends it, whatever the machine's
    // speed; three seconds only bound how long the test takes, the first byte comes at once.
    let mut cfg = mock_cfg();
    cfg.tokens_per_second = 1.0;
    cfg.output_tokens = 100;
    let m = mock(cfg).await;
    let g = simple(&m.url(), "", "").await;
    let body = stream_body("mock-1");
    let r = client()
        .post(url(g.addr, "/v1/chat/completions"))
        .header("x-laneway-timeout", "3s")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the stream had started");
    let text = r.text().await.unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.contains("\"code\":\"deadline_exceeded\""), "{last}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(
        stats_until(&m, |s| s.cancelled == 1).await.requests,
        1,
        "nothing is retried after the first byte"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_ids_a_client_can_send_and_only_its_own() {
    let m = mock(mock_cfg()).await;
    let refusing = refusing_port();
    let toml = format!(
        "[[lane]]\nname = \"up\"\nurl = \"{{mock}}\"\n\
         [[lane]]\nname = \"declared\"\nurl = \"{{mock}}\"\nmodels = [\"glm-4\", \"glm-4-air\", \"other\"]\n\
         [[lane]]\nname = \"down\"\nurl = \"http://127.0.0.1:{}/v1\"\n\
         [[route]]\nmodel = \"mock-*\"\nlanes = [\"up\", \"down\"]\n\
         [[route]]\nmodel = \"glm-*\"\nlanes = [\"declared\"]\n\
         [[route]]\nmodel = \"exact-model\"\nlanes = [\"up\"]\n\
         [[key]]\nname = \"all\"\nkey = \"sk-all\"\n\
         [[key]]\nname = \"glm\"\nkey = \"sk-glm\"\nmodels = [\"glm-*\"]\n",
        refusing.port
    );
    let g = gateway(&toml, &m.url()).await;
    let c = client();
    let ids = |key: &'static str| {
        let c = c.clone();
        async move {
            let v: Value = c
                .get(url(g.addr, "/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // An unreachable upstream in a pool is tolerated: its pool mate's list still counts.
    assert_eq!(
        ids("sk-all").await,
        [
            "exact-model",
            "glm-4",
            "glm-4-air",
            "mock-1",
            "mock-embed",
            "mock-large"
        ]
    );
    assert_eq!(ids("sk-glm").await, ["glm-4", "glm-4-air"]);
    let listed = m.stats().requests;
    ids("sk-all").await;
    assert_eq!(m.stats().requests, listed, "lists are cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_answer_names_its_lane_and_queue_time() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let r = chat(&client(), g.addr, &chat_body("mock-1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-laneway-lane"], "m");
    let queued: u64 = r.headers()["x-laneway-queue-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(queued < 60_000);
    assert!(r.headers()["x-laneway-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
}
