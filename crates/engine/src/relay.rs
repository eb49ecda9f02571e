//! From a routed request to the client's response: admission, attempts and fallbacks (in
//! [`crate::forward`]), then the upstream's answer relayed with the lane, the queue wait and
//! the usage tap, its body owning the permit, the table entry and the ledger until it ends.
//! Callers in this process that want the answer whole take it with [`Relay::whole`] instead.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::sse::UsageTap;
use tokio::time::Instant;

use crate::body::{Held, ProxyBody, Shape, Watch};
use crate::forward::{forward, Forwarded};
use crate::ledger::{End, Ledger};
use crate::names;
use crate::plan::Plan;
use crate::route::Prepared;
use crate::table::Entry;
use crate::topology::{KeyLive, Topology};
use crate::Engine;
use crate::Error;

/// Admission, attempts and fallbacks; an answer ready to relay.
pub async fn relay(
    engine: &Arc<Engine>,
    topo: &Topology,
    key: &KeyLive,
    p: Prepared,
    ledger: &mut Ledger,
) -> Result<Relay, Error> {
    let entry = p.registration.entry.clone();
    let plan = Plan {
        engine,
        topo,
        entry: &entry,
        key,
        meta: &p.meta,
        body: &p.body,
        endpoint: p.endpoint,
        priority: p.priority,
        tokens: p.tokens,
        deadline: p.deadline,
        pin: p.pin,
        pass: p.pass.as_deref(),
    };
    let Forwarded {
        response,
        permit,
        strip_usage,
    } = forward(&plan, &topo.routes[p.route], ledger).await?;
    Ok(Relay {
        response,
        permit,
        strip_usage,
        registration: p.registration,
        deadline: p.deadline,
        endpoint: p.endpoint,
    })
}

/// An upstream answer ready to relay, with everything the request holds until its body ends.
pub struct Relay {
    response: http::Response<laneway_upstream::UpstreamBody>,
    permit: laneway_admission::Permit,
    strip_usage: bool,
    registration: crate::table::Registration,
    deadline: Instant,
    /// A Responses API answer has its id recorded against the lane that made it; an
    /// Anthropic stream ends in Anthropic's error event.
    endpoint: laneway_core::wire::Endpoint,
}

impl Relay {
    /// The client's response: the upstream's status, content type and body, with the lane and
    /// the queue wait; the body owns the permit, the table entry and the ledger until it ends.
    pub fn respond(self, mut ledger: Ledger) -> http::Response<ProxyBody> {
        let (parts, incoming) = self.response.into_parts();
        let mut upstream = parts.headers;
        let kept = [header::CONTENT_TYPE, header::CACHE_CONTROL].map(|n| {
            let v = upstream.remove(&n);
            (n, v)
        });
        // The upstream's header map, emptied, holds the client's headers: its room is reused.
        upstream.clear();
        let mut out = http::Response::new(());
        *out.status_mut() = parts.status;
        let h = out.headers_mut();
        *h = upstream;
        for (name, v) in kept {
            if let Some(v) = v {
                h.insert(name, v);
            }
        }
        let (sse, mut tap) = tap(h, self.strip_usage);
        if self.endpoint == laneway_core::wire::Endpoint::Responses {
            tap = tap.capture_response_id();
        }
        // Which lane served it and how long it waited for a slot, for clients tuning themselves.
        if let Some(v) = ledger.lane.as_ref().and_then(|l| l.header.clone()) {
            h.insert(names::X_LANEWAY_LANE.clone(), v);
        }
        let queued_ms = ledger.queue_wait.unwrap_or_default().as_millis();
        // Most requests do not wait: their zero needs no formatting.
        let queued = match u64::try_from(queued_ms).unwrap_or(u64::MAX) {
            0 => HeaderValue::from_static("0"),
            ms => HeaderValue::from(ms),
        };
        h.insert(names::X_LANEWAY_QUEUE_MS.clone(), queued);
        ledger.status = parts.status.as_u16();
        ledger.code = std::borrow::Cow::Borrowed("ok");
        let watch = watch(self.registration.entry.clone(), self.deadline);
        let held = Held {
            permit: self.permit,
            registration: self.registration,
            ledger,
            watch,
        };
        let shape = Shape {
            sse,
            keep_length: !self.strip_usage,
            api: self.endpoint,
        };
        out.map(|()| ProxyBody::new(incoming, tap, held, shape))
    }

    /// The upstream's status and whole body, read here rather than relayed: for callers in this
    /// process that want the answer at once (the library's runner, Batch API items). The
    /// accounting is a relayed body's (usage settled, the ledger closed, the slot and the table
    /// entry freed on return), without a client response to build or a watch to box: the
    /// deadline and an operator's stop are watched while the body is read. An answer that
    /// breaks off, outgrows `limit`, or is cut short by the deadline or an operator is an error
    /// saying so, and the ledger records how it ended.
    pub async fn whole(
        self,
        mut ledger: Ledger,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let Relay {
            response,
            mut permit,
            strip_usage,
            registration,
            deadline,
            // Answers taken whole (the library, Batch API items) do not record their ids.
            endpoint: _,
        } = self;
        let (parts, incoming) = response.into_parts();
        let (_, mut tap) = tap(&parts.headers, strip_usage);
        ledger.status = parts.status.as_u16();
        ledger.code = std::borrow::Cow::Borrowed("ok");
        let entry = &registration.entry;
        let read = match entry.within(deadline, read_whole(incoming, limit)).await {
            Ok(r) => r.map_err(|e| (End::UpstreamBroke, Some(e.message))),
            Err(stop) => Err((End::from(stop), None)),
        };
        let body = read.and_then(|bytes| {
            let out = tap
                .feed(bytes)
                .map_err(|e| (End::UpstreamBroke, Some(e.to_string())))?;
            Ok(match (out, tap.finish()) {
                (Some(a), Some(b)) => Bytes::from([a, b].concat()),
                (a, b) => a.or(b).unwrap_or_default(),
            })
        });
        let usage = tap.usage();
        if let Some(u) = usage {
            permit.settle_tokens(u.total());
        }
        match body {
            Ok(body) => {
                ledger.close(End::Answered, usage);
                Ok((parts.status, body))
            }
            Err((end, detail)) => {
                ledger.close(end, usage);
                let mut e = end.error();
                if let Some(d) = detail {
                    e.message = d;
                }
                Err(e)
            }
        }
    }
}

/// A body read to its end, within `limit` bytes; an `upstream_unreachable` error saying which
/// way it failed otherwise.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collected = http_body_util::Limited::new(body, limit).collect().await;
    collected.map(|c| c.to_bytes()).map_err(|e| {
        let message = if e.is::<http_body_util::LengthLimitError>() {
            format!("the upstream's answer is larger than {limit} bytes")
        } else {
            format!("the upstream's answer broke off: {e}")
        };
        ApiError::new(ErrorCode::UpstreamUnreachable, message)
    })
}

/// Whether an answer is a stream of events, and the tap that learns its usage.
fn tap(headers: &HeaderMap, strip_usage: bool) -> (bool, UsageTap) {
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let tap = if sse {
        UsageTap::sse(strip_usage)
    } else {
        UsageTap::json()
    };
    (sse, tap)
}

/// Ends the body early on an operator stop or at the deadline.
fn watch(entry: Arc<Entry>, deadline: Instant) -> Watch {
    Box::pin(async move { End::from(entry.stopped(deadline).await) })
}
