//! From a routed request to the client's response: admission, attempts and fallbacks (in
//! [`crate::forward`]), then the upstream's answer relayed with the lane, the queue wait and
//! the usage tap, its body owning the permit, the table entry and the ledger until it ends.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use laneway_upstream::sse::UsageTap;
use tokio::time::Instant;

use crate::attempt::Plan;
use crate::body::{Held, ProxyBody, Shape, Watch};
use crate::forward::{forward, Forwarded};
use crate::ledger::{End, Ledger};
use crate::names;
use crate::proxy::Prepared;
use crate::respond::GatewayError;
use crate::table::Entry;
use crate::topology::{KeyLive, Topology};
use crate::App;

/// Admission, attempts and fallbacks; an answer ready to relay.
pub(crate) async fn relay(
    app: &Arc<App>,
    topo: &Topology,
    key: &KeyLive,
    p: Prepared,
    ledger: &mut Ledger,
) -> Result<Relay, GatewayError> {
    let entry = p.registration.entry.clone();
    let plan = Plan {
        app,
        topo,
        entry: &entry,
        key,
        meta: &p.meta,
        body: &p.body,
        endpoint: p.endpoint,
        priority: p.priority,
        tokens: p.tokens,
        deadline: p.deadline,
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
        watch: watch(entry, p.deadline),
    })
}

/// An upstream answer ready to relay, with everything the request holds until its body ends.
pub(crate) struct Relay {
    response: http::Response<laneway_upstream::UpstreamBody>,
    permit: laneway_admission::Permit,
    strip_usage: bool,
    registration: crate::table::Registration,
    watch: Watch,
}

impl Relay {
    /// The client's response: the upstream's status, content type and body; the body owns the
    /// permit, the table entry and the ledger until it ends.
    pub(crate) fn respond(self, mut ledger: Ledger) -> Response {
        let (parts, incoming) = self.response.into_parts();
        let mut upstream = parts.headers;
        let kept = [header::CONTENT_TYPE, header::CACHE_CONTROL].map(|n| {
            let v = upstream.remove(&n);
            (n, v)
        });
        // The upstream's header map, emptied, holds the client's headers: its room is reused.
        upstream.clear();
        let mut out = Response::new(Body::empty());
        *out.status_mut() = parts.status;
        let h = out.headers_mut();
        *h = upstream;
        for (name, v) in kept {
            if let Some(v) = v {
                h.insert(name, v);
            }
        }
        let sse = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let tap = if sse {
            UsageTap::sse(self.strip_usage)
        } else {
            UsageTap::json()
        };
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
        let held = Held {
            permit: self.permit,
            registration: self.registration,
            ledger,
            watch: self.watch,
        };
        let shape = Shape {
            sse,
            keep_length: !self.strip_usage,
        };
        *out.body_mut() = Body::new(ProxyBody::new(incoming, tap, held, shape));
        out
    }
}

/// Ends the body early on an operator stop or at the deadline.
fn watch(entry: Arc<Entry>, deadline: Instant) -> Watch {
    Box::pin(async move {
        tokio::select! {
            () = entry.cancel.cancelled() => End::Operator,
            () = tokio::time::sleep_until(deadline) => End::Deadline,
        }
    })
}
