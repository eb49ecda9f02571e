//! Upstream HTTP/1.1 connections driven by the request that uses them.
//!
//! A pooled client usually runs every connection as a task of its own: each request then
//! crosses tasks twice (handing the request to the connection task, and the connection task
//! handing back the response and every body chunk). Here the connection has no task: the
//! request's own future polls it until the response head arrives, and the response body
//! ([`UpstreamBody`]) polls it while the body is read. When the body ends the connection goes
//! back to the pool, idle and unpolled; taking it out again first checks that it is still open.
//! Dropping the body early drops the connection with it, which closes the socket: that is how a
//! client disconnect, an operator stop or a deadline reaches the provider.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Conn = http1::Connection<Io, Full<Bytes>>;

/// Where a connection goes: connections are shared only between requests to the same origin.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub https: bool,
    pub authority: Authority,
}

impl Origin {
    pub fn uri(&self) -> http::Uri {
        let scheme = if self.https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        http::Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default()
    }
}

/// One open connection: the handle requests are sent through and the connection itself,
/// which does the socket work whenever it is polled.
struct Link {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    /// Where it goes, so that it is parked with its kind.
    origin: Origin,
}

struct Idle {
    link: Box<Link>,
    since: Instant,
}

struct Host {
    origin: Origin,
    idle: VecDeque<Idle>,
}

pub(crate) struct Pool {
    hosts: Mutex<Vec<Host>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// Why a request did not get a response head.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connector failed (refused, unreachable, TLS) or gave up.
    ConnectError(Box<dyn std::error::Error + Send + Sync>),
    ConnectTimeout,
    /// The connection broke before the response head.
    Http(hyper::Error),
}

/// What sending on one connection came to.
enum Sent {
    Answered(Response<UpstreamBody>),
    /// The connection was closed before the request went out; it can go on another one.
    Back(Request<Full<Bytes>>),
    Failed(hyper::Error),
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            hosts: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        })
    }

    /// Sends `req` to `origin` on an idle connection if one is still open, else on a new one.
    pub async fn send(
        self: &Arc<Self>,
        connector: &HttpsConnector<HttpConnector>,
        connect_timeout: Duration,
        origin: &Origin,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        while let Some(mut link) = self.checkout(origin) {
            if !link.open().await {
                continue;
            }
            match link.send(req, self).await {
                Sent::Answered(resp) => return Ok(resp),
                Sent::Back(r) => req = r,
                Sent::Failed(e) => return Err(Failure::Http(e)),
            }
        }
        // Boxed: connecting (the name lookup, the TCP and TLS handshakes) is most of this
        // future's size, and it is needed only when no parked connection takes the request. Kept
        // inline, every request would carry that space, allocated whole.
        Box::pin(self.send_new(connector, connect_timeout, origin, req)).await
    }

    /// Sends `req` on a new connection to `origin`.
    async fn send_new(
        self: &Arc<Self>,
        connector: &HttpsConnector<HttpConnector>,
        connect_timeout: Duration,
        origin: &Origin,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let link = connect(connector, connect_timeout, origin).await?;
        match link.send(req, self).await {
            Sent::Answered(resp) => Ok(resp),
            Sent::Back(_) => Err(Failure::ConnectError(
                "the new connection closed before the request was sent".into(),
            )),
            Sent::Failed(e) => Err(Failure::Http(e)),
        }
    }

    /// The most recently parked connection to `origin` (the one most likely still open),
    /// dropping any that idled past the timeout.
    fn checkout(&self, origin: &Origin) -> Option<Box<Link>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let host = hosts.iter_mut().find(|h| h.origin == *origin)?;
        self.evict(host);
        host.idle.pop_back().map(|i| i.link)
    }

    fn park(&self, link: Box<Link>) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let host = match hosts.iter().position(|h| h.origin == link.origin) {
            Some(i) => &mut hosts[i],
            None => {
                hosts.push(Host {
                    origin: link.origin.clone(),
                    idle: VecDeque::new(),
                });
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        self.evict(host);
        if host.idle.len() < self.max_idle {
            host.idle.push_back(Idle {
                link,
                since: Instant::now(),
            });
        }
    }

    fn evict(&self, host: &mut Host) {
        while host
            .idle
            .front()
            .is_some_and(|i| i.since.elapsed() >= self.idle_timeout)
        {
            host.idle.pop_front();
        }
    }

    /// Closes connections that idled past the timeout: called now and then, so an idle
    /// gateway does not keep sockets its upstreams have given up on.
    pub fn sweep(&self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        for host in hosts.iter_mut() {
            self.evict(host);
        }
        hosts.retain(|h| !h.idle.is_empty());
    }
}

async fn connect(
    connector: &HttpsConnector<HttpConnector>,
    timeout: Duration,
    origin: &Origin,
) -> Result<Box<Link>, Failure> {
    let mut connector = connector.clone();
    let io = match tokio::time::timeout(timeout, connector.call(origin.uri())).await {
        Err(_) => return Err(Failure::ConnectTimeout),
        Ok(Err(e)) => return Err(Failure::ConnectError(e)),
        Ok(Ok(io)) => io,
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(Failure::Http)?;
    // Boxed: the connection's state is large, and the link moves from the pool to the request
    // to the response body and back.
    Ok(Box::new(Link {
        sender,
        conn,
        origin: origin.clone(),
    }))
}

impl Link {
    /// Whether a parked connection can take a request: polling it reads a close the upstream
    /// sent while it idled.
    async fn open(&mut self) -> bool {
        poll_fn(|cx| {
            if Pin::new(&mut self.conn).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Ready(matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await
    }

    /// Sends the request and drives the connection until the response head arrives.
    async fn send(mut self: Box<Self>, req: Request<Full<Bytes>>, pool: &Arc<Pool>) -> Sent {
        let mut answer = pin!(self.sender.try_send_request(req));
        let mut link = Some(self);
        let answer = poll_fn(|cx| {
            if let Some(l) = link.as_mut() {
                if Pin::new(&mut l.conn).poll(cx).is_ready() {
                    // Closed or broken: dropping it fails the answer if it is still owed.
                    link = None;
                }
            }
            answer.as_mut().poll(cx)
        })
        .await;
        match answer {
            Ok(resp) => {
                let parked = link.map(|link| Parked {
                    link,
                    pool: pool.clone(),
                });
                Sent::Answered(resp.map(|incoming| UpstreamBody { incoming, parked }))
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Sent::Back(req),
                None => Sent::Failed(e.into_error()),
            },
        }
    }
}

/// A connection lent to a response body, to go back to the pool when the body ends.
struct Parked {
    link: Box<Link>,
    pool: Arc<Pool>,
}

/// An upstream response body. Reading it drives its connection.
pub struct UpstreamBody {
    incoming: Incoming,
    parked: Option<Parked>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("incoming", &self.incoming)
            .field("pooled", &self.parked.is_some())
            .finish()
    }
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(p) = self.parked.take() {
            p.pool.park(p.link);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The body asks the connection for more only when it is read; a second turn lets the
        // connection answer that ask now instead of on the next wake-up of the task.
        let mut frame = Poll::Pending;
        for _ in 0..2 {
            if let Some(p) = this.parked.as_mut() {
                if Pin::new(&mut p.link.conn).poll(cx).is_ready() {
                    // The connection is done; what it read is already in the body.
                    this.parked = None;
                }
            }
            frame = Pin::new(&mut this.incoming).poll_frame(cx);
            if frame.is_ready() || this.parked.is_none() {
                break;
            }
        }
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.parked = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
