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
use laneway_admission::Permit;
use laneway_upstream::sse::UsageTap;
use laneway_upstream::UpstreamBody;

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

/// How the relayed body is framed.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Server-Sent Events end early with an error event; other bodies are cut off.
    pub sse: bool,
    /// Whether the upstream's length holds for what the client gets; not when the usage tap
    /// strips a chunk the client did not ask for.
    pub keep_length: bool,
    /// The API of the answer: a stream cut short ends with that API's own error event.
    pub api: laneway_core::wire::Endpoint,
}

pub struct ProxyBody {
    inner: UpstreamBody,
    /// A response id being recorded beyond this process, and the answer's last bytes, held
    /// until it is: the client's next turn may go to another replica.
    recording: Option<(crate::responses::Pending<'static, ()>, Option<Bytes>)>,
    tap: UsageTap,
    permit: Option<Permit>,
    _registration: Registration,
    ledger: Ledger,
    watch: Watch,
    shape: Shape,
    done: bool,
}

impl ProxyBody {
    pub fn new(inner: UpstreamBody, tap: UsageTap, held: Held, shape: Shape) -> Self {
        Self {
            inner,
            recording: None,
            tap,
            permit: Some(held.permit),
            _registration: held.registration,
            ledger: held.ledger,
            watch: held.watch,
            shape,
            done: false,
        }
    }

    fn finish(&mut self, end: End) {
        self.done = true;
        let usage = self.tap.usage();
        if let (Some(p), Some(u)) = (&mut self.permit, usage) {
            p.settle_tokens(u.total());
        }
        if let (Some(id), Some(lane)) = (self.tap.take_response_id(), &self.ledger.lane) {
            let responses = &self.ledger.engine().responses;
            let (lane, key) = (lane.label.clone(), self.ledger.entry.key());
            if end == End::Answered {
                self.recording = responses.record_durably(id, lane, key).map(|f| (f, None));
            } else {
                responses.record(id, lane, key);
            }
        }
        self.ledger.close(end, usage);
        self.permit = None;
    }

    /// The answer's last bytes, once a response id it carries is recorded.
    fn last(
        &mut self,
        bytes: Option<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.recording {
            Some((recording, held)) => {
                *held = bytes;
                if recording.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let held = held.take();
                self.recording = None;
                Poll::Ready(held.map(|b| Ok(Frame::data(b))))
            }
            None => Poll::Ready(bytes.map(|b| Ok(Frame::data(b)))),
        }
    }

    /// Ends the body before the upstream did. A stream gets a final error event (whole events
    /// only were sent before it, and no `[DONE]` follows it); any other body is cut off.
    fn early_end(
        &mut self,
        end: End,
        detail: Option<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(end);
        let mut err = end.error();
        if let Some(detail) = detail {
            err.message = detail;
        }
        if self.shape.sse {
            let event = Bytes::from(crate::render::stream_event(self.shape.api, &err));
            Poll::Ready(Some(Ok(Frame::data(event))))
        } else {
            Poll::Ready(Some(Err(err.message.into())))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MID_EVENT: &str = "the upstream closed the stream in the middle of an event";

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some((recording, held)) = &mut this.recording {
            if recording.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let held = held.take();
            this.recording = None;
            return Poll::Ready(held.map(|b| Ok(Frame::data(b))));
        }
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
                            if this.tap.ends_mid_event() {
                                return this.early_end(End::UpstreamBroke, Some(MID_EVENT.into()));
                            }
                            let rest = this.tap.finish();
                            this.finish(End::Answered);
                            let all = match (out, rest) {
                                (Some(a), Some(b)) => Some([a, b].concat().into()),
                                (a, b) => a.or(b),
                            };
                            return this.last(all, cx);
                        }
                        if let Some(out) = out {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(id = %this.ledger.entry.id, error = %e, "upstream body failed");
                    return this.early_end(End::UpstreamBroke, None);
                }
                Poll::Ready(None) => {
                    // A close-delimited stream ends when the upstream closes: mid-event, that
                    // is a broken stream, not an answer.
                    if this.tap.ends_mid_event() {
                        return this.early_end(End::UpstreamBroke, Some(MID_EVENT.into()));
                    }
                    let rest = this.tap.finish();
                    this.finish(End::Answered);
                    return this.last(rest, cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.recording.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.shape.keep_length {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}
