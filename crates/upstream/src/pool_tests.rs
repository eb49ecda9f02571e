//! The pool against a real socket: a small HTTP/1.1 server on loopback that counts its
//! connections and can close them or stream slowly on purpose.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Failure, Origin, Pool, UpstreamBody};

#[derive(Clone, Copy)]
enum Mode {
    /// Answers every request on the connection.
    KeepAlive,
    /// Answers one request, then closes the connection.
    CloseAfterOne,
    /// Sends a chunked head and one chunk, then waits for the client to go.
    StreamThenWait,
}

struct Server {
    origin: Origin,
    accepted: Arc<AtomicUsize>,
    /// One message per connection when it ends, closed by the client or by the server.
    ended: mpsc::UnboundedReceiver<()>,
}

async fn server(mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, ended) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                serve(sock, mode).await;
                let _ = tx.send(());
            });
        }
    });
    Server {
        origin: Origin {
            https: false,
            authority: addr.to_string().parse().unwrap(),
        },
        accepted,
        ended,
    }
}

/// Reads one request (head and a Content-Length body); false at end of stream.
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return true;
        }
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut sock: TcpStream, mode: Mode) {
    while read_request(&mut sock).await {
        match mode {
            Mode::KeepAlive | Mode::CloseAfterOne => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if sock.write_all(ok).await.is_err() {
                    return;
                }
                if matches!(mode, Mode::CloseAfterOne) {
                    return;
                }
            }
            Mode::StreamThenWait => {
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                let _ = sock.write_all(head).await;
                // Waits for the client to close its end; a read of 0 bytes is the close.
                let mut rest = [0u8; 64];
                while sock.read(&mut rest).await.unwrap_or(0) > 0 {}
                return;
            }
        }
    }
}

fn request(origin: &Origin) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header(http::header::HOST, origin.authority.as_str())
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn connector() -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

async fn send(pool: &Arc<Pool>, origin: &Origin) -> Result<Response<UpstreamBody>, Failure> {
    pool.send(
        &connector(),
        Duration::from_secs(5),
        origin,
        request(origin),
    )
    .await
}

/// Sends one request and reads its whole body.
async fn call(pool: &Arc<Pool>, origin: &Origin) -> Result<Bytes, String> {
    let resp = send(pool, origin).await.map_err(|f| match f {
        Failure::Http(e) => e.to_string(),
        Failure::ConnectError(e) => e.to_string(),
        Failure::ConnectTimeout => "timeout".into(),
    })?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes())
}

#[tokio::test]
async fn a_finished_body_returns_its_connection_for_the_next_request() {
    let srv = server(Mode::KeepAlive).await;
    let pool = Pool::new(8, Duration::from_secs(90));
    for _ in 0..5 {
        assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    }
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let mut srv = server(Mode::CloseAfterOne).await;
    let pool = Pool::new(8, Duration::from_secs(90));
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    // The server has closed the first connection before the second request is sent.
    srv.ended.recv().await.unwrap();
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn dropping_a_body_part_read_closes_its_connection() {
    let mut srv = server(Mode::StreamThenWait).await;
    let pool = Pool::new(8, Duration::from_secs(90));
    let resp = send(&pool, &srv.origin).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "hello");
    drop(body);
    // The server sees its client go; the pool kept nothing of the connection.
    srv.ended.recv().await.unwrap();
    drop(send(&pool, &srv.origin).await.unwrap());
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_past_the_timeout_or_over_the_bound_are_closed() {
    let mut srv = server(Mode::KeepAlive).await;
    // A zero idle timeout: every parked connection is stale by the next request.
    let pool = Pool::new(8, Duration::ZERO);
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 2);
    srv.ended.recv().await.unwrap();
    // The sweep closes what idles, so the server sees the second connection go too.
    pool.sweep();
    srv.ended.recv().await.unwrap();

    // No idle connections kept at all: each request opens its own.
    let pool = Pool::new(0, Duration::from_secs(90));
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    assert_eq!(call(&pool, &srv.origin).await.unwrap(), "ok");
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let origin = Origin {
        https: false,
        authority: addr.to_string().parse().unwrap(),
    };
    let pool = Pool::new(8, Duration::from_secs(90));
    let err = send(&pool, &origin).await.unwrap_err();
    assert!(matches!(err, Failure::ConnectError(_)));
}
