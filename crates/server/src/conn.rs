//! Client connections, accepted and served here rather than by the web framework so that none
//! can be held hostage.
//!
//! Each connection knows whether it is serving a request (`active`), and since when it has
//! been idle or receiving a request head. A small watchdog in its task closes it when a head
//! takes longer than `server.header_timeout` (the first request's from the moment it connected)
//! or when it sits idle past `server.idle_timeout`. The request path only stores a few atomics
//! for it; the watchdog looks at them when its timer fires, at least every `header_timeout` (or
//! `idle_timeout` when shorter), so a head that starts arriving on a kept-alive connection is cut
//! within twice its timeout, and an idle one closed within twice its own. When `server.max_connections` (or the
//! process's descriptor limit) is reached, the oldest connection that serves no request is
//! closed to make room; only when every connection is busy is a new one answered 503. So idle
//! or slow sockets can never stop the gateway from accepting real work.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::App;
use registry::Conn;
pub use registry::Conns;
use service::Service;
use watched::Watched;

mod registry;
mod service;
mod watched;

/// Accepts until `shutdown`, handing each connection to its own task on `tasks`.
pub async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    router: axum::Router,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    let conns = app.conns.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => {
                // Every connection this loop registered hears of it on its own watchdog's bell,
                // so a connection's task never polls the shutdown token itself.
                conns.wake_all();
                return;
            }
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (or a transient error): free one, and do not spin.
                tracing::warn!(error = %e, "accept failed; closing the oldest idle connection");
                conns.evict_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let configured = app.topo.load().config.server.max_connections;
        if conns.len() >= conns.capacity(configured) && !conns.evict_one() {
            tasks.spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = conns.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn {
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(conns.ms()),
            head_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        conns.lock().insert(id, conn.clone());
        let (app, router, shutdown) = (app.clone(), router.clone(), shutdown.clone());
        tasks.spawn(async move {
            serve(stream, &conn, &app, router, &shutdown).await;
            app.conns.lock().remove(&id);
        });
    }
}

/// Every connection is serving a request: say so and close.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let refusal = laneway_engine::render::raw_http(&laneway_core::ApiError::new(
        laneway_core::ErrorCode::NoLaneAvailable,
        "the gateway is at server.max_connections, all of them busy; retry shortly",
    ));
    let write = async {
        stream.write_all(&refusal).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

async fn serve(
    stream: TcpStream,
    conn: &Arc<Conn>,
    app: &Arc<App>,
    router: axum::Router,
    shutdown: &CancellationToken,
) {
    let conns = &app.conns;
    let io = TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
        conns: conns.clone(),
    });
    let service = Service {
        app: app.clone(),
        router,
        conn: conn.clone(),
        conns: conns.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Header and idle timeouts are the watchdog's below, which tells an idle keep-alive
    // connection from one that is sending a request head.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    let mut draining = false;
    loop {
        let deadline = if draining {
            None
        } else {
            let server = &app.topo.load().config.server;
            // Look again at least this often: a head may have begun, or a request ended.
            let due = conn.deadline(conns, server.header_timeout, server.idle_timeout);
            let recheck = Instant::now() + server.header_timeout.min(server.idle_timeout);
            Some(due.map_or(recheck, |d| d.min(recheck)))
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Three branches, not four: shutdown rings `wake` too (`accept_loop`), and every branch
        // here is polled on every wake-up of the connection's task.
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended");
                }
                return;
            }
            () = conn.wake.notified() => {}
            () = expired => {}
        }
        if !draining && shutdown.is_cancelled() {
            // Idle and half-sent connections are not waited for; a request being served
            // finishes, then the connection closes.
            if conn.active.load(Relaxed) == 0 {
                return;
            }
            http.as_mut().graceful_shutdown();
            draining = true;
        }
        // Woken by an eviction, a timer or a change of state: close if nothing is served and
        // the connection was evicted or is past its deadline as it stands now.
        if draining || conn.active.load(Relaxed) > 0 {
            continue;
        }
        if conn.evicted.load(Relaxed) {
            return;
        }
        let server = &app.topo.load().config.server;
        let due = conn.deadline(conns, server.header_timeout, server.idle_timeout);
        if due.is_some_and(|d| d <= Instant::now()) {
            return;
        }
    }
}
