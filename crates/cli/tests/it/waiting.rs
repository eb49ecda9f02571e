//! Streams waiting in a queue hear where they stand, then get their answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::util::*;

/// Starts a streaming request whose body is collected, as it arrives, into the returned text.
fn stream(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<u16>) {
    let text = Arc::new(Mutex::new(String::new()));
    let (c, out) = (c.clone(), text.clone());
    let task = tokio::spawn(async move {
        let r = c
            .post(url(addr, "/v1/chat/completions"))
            .json(&stream_body("mock-1"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        status
    });
    (text, task)
}

async fn heard(text: &Arc<Mutex<String>>, needle: &str) {
    let ok = until(Duration::from_secs(10), || async {
        text.lock().unwrap().contains(needle)
    })
    .await;
    assert!(ok, "never heard `{needle}`: {:?}", text.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_stream_hears_its_position_count_down_then_its_chunks() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "",
    )
    .await;
    let c = client();
    let occupant = chat_in_background(&c, g.addr);
    stats_until(&m, |s| s.held == 1).await;
    let mut streams = Vec::new();
    for n in 1..=3 {
        streams.push(stream(&c, g.addr));
        let met = until(Duration::from_secs(10), || async {
            g.app.topo.load().lanes[0].lane.queued() == n
        })
        .await;
        assert!(met);
    }
    let last = streams[2].0.clone();
    heard(&last, ": queued position=3 eta_ms=").await;
    heard(&streams[0].0, ": queued position=1 eta_ms=").await;
    // The slot frees: the first stream runs (held at the mock), the others move up.
    m.release(Some(1));
    stats_until(&m, |s| s.completed == 1 && s.held == 1).await;
    heard(&last, ": queued position=2").await;
    m.release(Some(1));
    stats_until(&m, |s| s.completed == 2 && s.held == 1).await;
    heard(&last, ": queued position=1").await;
    m.set_hold(false);
    assert_eq!(occupant.await.unwrap(), 200);
    for (text, task) in streams {
        assert_eq!(task.await.unwrap(), 200);
        let text = text.lock().unwrap().clone();
        assert!(text.contains(": lane=m queue_ms="), "{text}");
        assert!(
            text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
    }
    let text = last.lock().unwrap().clone();
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no `{s}` in {text}"));
    assert!(at("position=3") < at("position=2") && at("position=2") < at("position=1"));
    assert!(
        at("position=1") < at(": lane=m") && at(": lane=m") < at("data: "),
        "{text}"
    );
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_waits_out_its_deadline_ends_with_an_error_event() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "",
    )
    .await;
    let c = client();
    let occupant = chat_in_background(&c, g.addr);
    stats_until(&m, |s| s.held == 1).await;
    let r = c
        .post(url(g.addr, "/v1/chat/completions"))
        .header("x-laneway-timeout", "3s")
        .json(&stream_body("mock-1"))
        .send()
        .await
        .unwrap();
    // The occupant holds the only slot at the mock's gate until after the deadline: the stream
    // can only have started early, while it waited (how it hears its position is the test
    // above; here only how it ends).
    assert_eq!(r.status(), 200, "the stream started while it waited");
    let text = r.text().await.unwrap();
    assert!(!text.contains("data: {\"id\""), "no answer came: {text}");
    let last = text.trim_end().lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "deadline_exceeded", "{text}");
    assert!(!text.contains("[DONE]"));
    m.set_hold(false);
    assert_eq!(occupant.await.unwrap(), 200);
    assert!(lanes_idle(&g).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_served_at_once_keeps_the_plain_path() {
    let m = mock(mock_cfg()).await;
    let g = simple(&m.url(), "", "").await;
    let r = client()
        .post(url(g.addr, "/v1/chat/completions"))
        .json(&stream_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-laneway-lane"], "m");
    assert!(r.headers().contains_key("x-laneway-queue-ms"));
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("data: ") && !text.contains(": queued"),
        "{text}"
    );
}

/// Responses API and Anthropic streams that wait hear the same position comments, then their
/// own named events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_messages_streams_hear_their_queue_position() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "[[route]]\nmodel = \"claude-*\"\nlanes = [\"m\"]\n",
    )
    .await;
    let c = client();
    let occupant = chat_in_background(&c, g.addr);
    stats_until(&m, |s| s.held == 1).await;
    let mut streams = Vec::new();
    for (path, body) in [
        (
            "/v1/responses",
            serde_json::json!({"model": "mock-1", "input": "hi", "stream": true}),
        ),
        (
            "/v1/messages",
            serde_json::json!({"model": "claude-1", "max_tokens": 4, "stream": true, "messages": []}),
        ),
    ] {
        let text = Arc::new(Mutex::new(String::new()));
        let (c, out, addr) = (c.clone(), text.clone(), g.addr);
        let task = tokio::spawn(async move {
            let r = c.post(url(addr, path)).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let mut chunks = r.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            status
        });
        streams.push((text, task));
        // One at a time, so that their places in the queue are known.
        let n = streams.len();
        let queued = until(Duration::from_secs(10), || async {
            g.app.topo.load().lanes[0].lane.queued() == n
        })
        .await;
        assert!(queued, "stream {n} never queued");
    }
    heard(&streams[0].0, ": queued position=1").await;
    heard(&streams[1].0, ": queued position=2").await;
    m.set_hold(false);
    m.release(None);
    assert_eq!(occupant.await.unwrap(), 200);
    for (text, task) in streams {
        assert_eq!(task.await.unwrap(), 200);
        let text = text.lock().unwrap().clone();
        assert!(
            text.contains("event: response.completed") || text.contains("event: message_stop"),
            "{text}"
        );
    }
    assert!(lanes_idle(&g).await);
}

/// A queued Responses stream that an operator cancels ends with the Responses API's `error`
/// event (its refusal, in the API's own shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_responses_stream_ends_with_its_api_s_error_event() {
    let m = held_mock().await;
    let g = simple(
        &m.url(),
        "concurrency_limit = { max_concurrent_requests = 1 }",
        "[server]\nadmin_key = \"adm\"\n",
    )
    .await;
    let c = client();
    let occupant = chat_in_background(&c, g.addr);
    stats_until(&m, |s| s.held == 1).await;
    let text = Arc::new(Mutex::new(String::new()));
    let (c2, out, addr) = (c.clone(), text.clone(), g.addr);
    let task = tokio::spawn(async move {
        let body = serde_json::json!({"model": "mock-1", "input": "hi", "stream": true});
        let r = c2
            .post(url(addr, "/v1/responses"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut chunks = r.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    });
    heard(&text, ": queued position=1").await;
    let r = c
        .post(url(g.addr, "/admin/clear-queue"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    task.await.unwrap();
    let text = text.lock().unwrap().clone();
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(last.starts_with("event: error\ndata: {"), "{text}");
    assert!(
        last.contains("\"code\":\"request_cancelled\"") && last.contains("\"type\":\"error\""),
        "{last}"
    );
    m.set_hold(false);
    m.release(None);
    assert_eq!(occupant.await.unwrap(), 200);
}
