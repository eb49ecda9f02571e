//! The service hyper calls for each request on a client connection: the three OpenAI
//! endpoints go straight to their handler, everything else through the router; both mark the
//! connection busy from the request's head to the end of its response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::registry::{Conn, Conns};
use crate::{server, App};

/// What hyper calls for each request of one client connection.
pub(super) struct Service {
    pub app: Arc<App>,
    pub router: axum::Router,
    pub conn: Arc<Conn>,
    pub conns: Arc<Conns>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Call;

    fn call(&self, req: Request<Incoming>) -> Call {
        let busy = Some(Busy::enter(&self.conn, &self.conns));
        let req = req.map(axum::body::Body::new);
        if let Some(endpoint) = server::direct(req.method(), req.uri().path()) {
            let inner = Inner::Direct(Box::pin(server::serve_direct(
                self.app.clone(),
                endpoint,
                req,
            )));
            return Call { inner, busy };
        }
        // The router is always ready (axum's contract), so no poll_ready is needed.
        let mut router = self.router.clone();
        let inner = Inner::Routed(Box::new(tower_service::Service::call(&mut router, req)));
        Call { inner, busy }
    }
}

/// The handler's future, its response body wrapped to keep the request's [`Busy`].
pub struct Call {
    inner: Inner,
    busy: Option<Busy>,
}

enum Inner {
    /// Boxed: the router's future is large and its routes are not the hot path.
    Routed(Box<axum::routing::future::RouteFuture<Infallible>>),
    /// One box, where the router would make several.
    Direct(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Future for Call {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = match &mut self.inner {
            Inner::Routed(f) => match std::task::ready!(Pin::new(&mut **f).poll(cx)) {
                Ok(r) => r,
                Err(never) => match never {},
            },
            Inner::Direct(f) => std::task::ready!(f.as_mut().poll(cx)),
        };
        let Some(mut busy) = self.busy.take() else {
            // Polled again after completing: a caller bug, answered rather than panicking.
            return Poll::Pending;
        };
        busy.responding();
        Poll::Ready(Ok(resp.map(|inner| Tracked { inner, _busy: busy })))
    }
}

/// Held from a request's head to the end of its response (or until it is dropped unanswered).
struct Busy {
    conn: Arc<Conn>,
    conns: Arc<Conns>,
    responding: bool,
}

impl Busy {
    fn enter(conn: &Arc<Conn>, conns: &Arc<Conns>) -> Self {
        conn.active.fetch_add(1, Relaxed);
        conn.head_since.store(0, Relaxed);
        Self {
            conn: conn.clone(),
            conns: conns.clone(),
            responding: false,
        }
    }

    fn responding(&mut self) {
        self.responding = true;
        self.conns.responding.fetch_add(1, Relaxed);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.responding {
            self.conns.responding.fetch_sub(1, Relaxed);
        }
        self.conn.idle_since.store(self.conns.ms(), Relaxed);
        self.conn.served.store(true, Relaxed);
        self.conn.active.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its request's [`Busy`] until it ends.
pub struct Tracked {
    inner: axum::body::Body,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
