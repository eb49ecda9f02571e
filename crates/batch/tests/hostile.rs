//! The runner against upstreams that answer badly: a body that is not JSON, an answer that breaks
//! off, a stream with a broken or an error event, an error page of any size, and bytes that are
//! not HTTP at all. Each item gets a typed error naming the problem; the run ends.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use laneway_batch::{Error, Request, Runner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream on loopback that reads each request and answers it with `answer`, as raw bytes,
/// then closes the connection. Counts the requests it read.
async fn upstream(answer: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (count, answer) = (count.clone(), answer.clone());
            tokio::spawn(async move {
                if read_request(&mut sock).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.write_all(&answer).await;
                }
            });
        }
    });
    (url, requests)
}

/// Reads one request head and its Content-Length body; false if the client went away first.
async fn read_request(sock: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Runs one chat item (streamed or not) with two attempts and returns its error.
async fn one_error(url: &str, stream: bool) -> Error {
    let req = Request::chat(json!({
        "model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}],
    }));
    let report = Runner::new(url, None).attempts(2).run(vec![req]).await;
    assert_eq!(report.failed, 1);
    report.items[0].result.clone().unwrap_err()
}

#[tokio::test]
async fn a_success_that_is_not_json_is_an_invalid_response_and_not_retried() {
    let (url, requests) = upstream(response("200 OK", "application/json", b"<html>oops")).await;
    let e = one_error(&url, false).await;
    assert_eq!(e.code, "invalid_response");
    assert!(e.message.contains("not JSON"), "{e}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_that_breaks_off_is_a_connection_error_after_its_retries() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let mut answer = head.to_vec();
    answer.extend_from_slice(b"{\"id\": \"x\"");
    let (url, requests) = upstream(answer).await;
    let e = one_error(&url, false).await;
    assert_eq!((e.status, e.code.as_str()), (None, "connection_error"));
    assert!(e.message.contains("broke off"), "{e}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "retried once");
}

#[tokio::test]
async fn a_stream_event_that_is_not_json_is_an_invalid_response() {
    let body = b"data: {\"choices\": []}\n\ndata: {broken\n\n";
    let (url, _) = upstream(response("200 OK", "text/event-stream", body)).await;
    let e = one_error(&url, true).await;
    assert_eq!(e.code, "invalid_response");
    assert!(e.message.contains("stream event is not JSON"), "{e}");
}

#[tokio::test]
async fn an_error_event_in_a_stream_fails_the_item_with_its_code() {
    let body = b"data: {\"error\": {\"message\": \"the model fell over\", \"code\": \"server_error\"}}\n\n";
    let (url, _) = upstream(response("200 OK", "text/event-stream", body)).await;
    let e = one_error(&url, true).await;
    assert_eq!((e.status, e.code.as_str()), (Some(200), "server_error"));
    assert_eq!(e.message, "the model fell over");
}

#[tokio::test]
async fn an_error_page_that_is_not_json_is_named_by_its_status_and_cut_short() {
    let page = vec![b'x'; 100_000];
    let (url, requests) = upstream(response("503 Service Unavailable", "text/html", &page)).await;
    let e = one_error(&url, false).await;
    assert_eq!((e.status, e.code.as_str()), (Some(503), "http_503"));
    assert_eq!(e.message.len(), 512, "the page is cut to 512 bytes");
    assert!(e.body.is_none());
    assert_eq!(requests.load(Ordering::SeqCst), 2, "a 503 is retried");
}

#[tokio::test]
async fn bytes_that_are_not_http_are_a_connection_error() {
    let (url, _) = upstream(b"hello, this is not HTTP\r\n\r\n".to_vec()).await;
    let e = one_error(&url, false).await;
    assert_eq!((e.status, e.code.as_str()), (None, "connection_error"));
}

/// The same item through in-process lanes whose one lane is `url`.
async fn one_error_through_lanes(url: &str) -> Error {
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"l\"\nurl = \"{url}\"\n[[route]]\nmodel = \"*\"\nlanes = [\"l\"]\n"
    ))
    .unwrap();
    let req = Request::chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    let runner = Runner::with_lanes(config, None).await.unwrap().attempts(1);
    let report = runner.run(vec![req]).await;
    assert_eq!(report.failed, 1);
    report.items[0].result.clone().unwrap_err()
}

#[tokio::test]
async fn through_in_process_lanes_the_same_answers_give_the_same_kinds_of_error() {
    let (url, _) = upstream(response("200 OK", "application/json", b"<html>oops")).await;
    let e = one_error_through_lanes(&url).await;
    assert_eq!(e.code, "invalid_response", "{e}");

    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\"";
    let (url, _) = upstream(head.to_vec()).await;
    let e = one_error_through_lanes(&url).await;
    assert_eq!(e.code, "connection_error", "{e}");
    assert!(e.message.contains("broke off"), "{e}");

    // The lane's own error: the gateway names the upstream unreachable, with a 502.
    let (url, _) = upstream(b"hello, this is not HTTP\r\n\r\n".to_vec()).await;
    let e = one_error_through_lanes(&url).await;
    assert_eq!(
        (e.status, e.code.as_str()),
        (Some(502), "upstream_unreachable")
    );

    let page = vec![b'x'; 100_000];
    let (url, _) = upstream(response("503 Service Unavailable", "text/html", &page)).await;
    let e = one_error_through_lanes(&url).await;
    assert_eq!((e.status, e.code.as_str()), (Some(503), "http_503"));
    assert_eq!(e.message.len(), 512);
}

/// An upstream whose first answer stops after `part`, its connection held open, and whose later
/// answers are `whole`.
async fn stalls_once(part: Vec<u8>, whole: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (part, whole) = (Arc::new(part), Arc::new(whole));
    let served = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (part, whole, served) = (part.clone(), whole.clone(), served.clone());
            tokio::spawn(async move {
                while read_request(&mut sock).await {
                    if served.fetch_add(1, Ordering::SeqCst) == 0 {
                        let _ = sock.write_all(&part).await;
                        // Held open until the client goes: the answer never ends.
                        let _ = sock.read(&mut [0u8; 1]).await;
                        return;
                    }
                    let _ = sock.write_all(&whole).await;
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn through_lanes_an_answer_that_stalls_ends_at_the_deadline_and_frees_its_slot() {
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\"";
    let body =
        br#"{"id": "ok", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}"#;
    let url = stalls_once(head.to_vec(), response("200 OK", "application/json", body)).await;
    // One request in flight at most: a slot the stalled answer kept would hold the second item
    // in the lane's queue until its own deadline.
    let config = laneway_config::Config::parse(&format!(
        "[server]\nrequest_timeout = \"1s\"\n\
         [[lane]]\nname = \"l\"\nurl = \"{url}\"\n\
         concurrency_limit = {{ max_concurrent_requests = 1 }}\n\
         [[route]]\nmodel = \"*\"\nlanes = [\"l\"]\n"
    ))
    .unwrap();
    let runner = Runner::with_lanes(config, None).await.unwrap().attempts(1);
    let req =
        || Request::chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));

    let report = runner.run(vec![req()]).await;
    let e = report.items[0].result.clone().unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (Some(504), "deadline_exceeded"),
        "{e}"
    );
    assert!(e.message.contains("mid-response"), "{e}");
    assert!(
        e.request_id.is_some_and(|id| id.starts_with("req")),
        "the lanes' id"
    );

    let report = runner.run(vec![req()]).await;
    let r = report.items[0].result.clone().unwrap();
    assert_eq!(r.usage.map(|u| u.completion_tokens), Some(4));
}
