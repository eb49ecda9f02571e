//! The response body relayed from the upstream, frame by frame as it arrives.
//!
//! It owns everything the request holds: the admission permit, the request-table registration
//! and the ledger. So capacity is released exactly when the body ends — fully sent, the client
//! gone (hyper drops the body), the deadline passed, or an operator stop — on every path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use laneway_admission::Permit;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::sse::UsageTap;

use crate::ledger::{End, Ledger};
use crate::table::Registration;

/// Resolves when the request must end early.
pub type Watch = Pin<Box<dyn Future<Output = End> + Send>>;

/// What a request holds until its body ends.
pub struct Held {
    pub permit: Permit,
    pub registration: Registration,
    pub ledger: Ledger,
    pub watch: Watch,
}

pub struct ProxyBody {
    inner: Incoming,
    tap: UsageTap,
    permit: Option<Permit>,
    _registration: Registration,
    ledger: Ledger,
    watch: Watch,
    /// Server-Sent Events end early with an error event; other bodies are cut off.
    sse: bool,
    /// The tap may change the length (stripping), so the upstream's length is not passed on.
    exact_size: bool,
    done: bool,
}

impl ProxyBody {
    pub fn new(inner: Incoming, tap: UsageTap, held: Held, sse: bool, exact_size: bool) -> Self {
        Self {
            inner,
            tap,
            permit: Some(held.permit),
            _registration: held.registration,
            ledger: held.ledger,
            watch: held.watch,
            sse,
            exact_size,
            done: false,
        }
    }

    fn finish(&mut self, end: End) {
        self.done = true;
        let usage = self.tap.usage();
        if let (Some(p), Some(u)) = (&mut self.permit, usage) {
            p.settle_tokens(u.total());
        }
        self.ledger.close(end, usage);
        self.permit = None;
    }

    /// Ends the body before the upstream did. A stream gets a final error event (whole events
    /// only were sent before it, and no `[DONE]` follows it); any other body is cut off.
    fn early_end(
        &mut self,
        end: End,
        detail: Option<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(end);
        let (code, message) = match end {
            End::Operator => (
                ErrorCode::RequestCancelled,
                "an operator stopped this request",
            ),
            End::Deadline => (
                ErrorCode::DeadlineExceeded,
                "the request's deadline passed mid-response",
            ),
            _ => (
                ErrorCode::UpstreamUnreachable,
                "the upstream connection broke mid-response",
            ),
        };
        let message = detail.unwrap_or_else(|| message.to_owned());
        if self.sse {
            let err = ApiError::new(code, message);
            let mut event = b"data: ".to_vec();
            event.extend_from_slice(&err.to_body());
            event.extend_from_slice(b"\n\n");
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
        } else {
            Poll::Ready(Some(Err(message.into())))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(end) = this.watch.as_mut().poll(cx) {
            return this.early_end(end, None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = match this.tap.feed(data) {
                            Ok(out) => out,
                            Err(e) => {
                                return this.early_end(End::UpstreamBroke, Some(e.to_string()))
                            }
                        };
                        // The last bytes of a body of known length: the request is complete now,
                        // whether or not the client lingers for the end-of-body poll.
                        if this.inner.is_end_stream() {
                            let rest = this.tap.finish();
                            this.finish(End::Complete);
                            let all = match (out, rest) {
                                (Some(a), Some(b)) => Some([a, b].concat().into()),
                                (a, b) => a.or(b),
                            };
                            return Poll::Ready(all.map(|b| Ok(Frame::data(b))));
                        }
                        if let Some(out) = out {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(id = %this.ledger.id, error = %e, "upstream body failed");
                    return this.early_end(End::UpstreamBroke, None);
                }
                Poll::Ready(None) => {
                    let rest = this.tap.finish();
                    this.finish(End::Complete);
                    return Poll::Ready(rest.map(|b| Ok(Frame::data(b))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_size {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}
