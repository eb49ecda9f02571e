//! Requests that start inside the process rather than on a socket: Batch API items and the
//! library's in-process lanes ([`Engine::call_whole`]). From routing on they take the path a client's
//! request takes (key checks, admission, attempts, relay, the request table and log), without
//! HTTP in between.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::ids::RequestCtx;
use crate::label::Label;
use crate::ledger::{End, Ledger};
use crate::relay::{relay, Relay};
use crate::render;
use crate::route::{record_refusal, routed, BATCH_PRIORITY};
use crate::table::Entry;
use crate::topology::{KeyLive, Topology};
use crate::Engine;
use crate::Error;

/// How a request from inside ended.
// Returned once per request and taken apart at once: boxing the answer would cost an allocation
// per request to save a move of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Inside {
    /// An answer, its body still to be read: relayed as a client's response, or read whole. The
    /// request ends with it.
    Answer {
        relay: Relay,
        ledger: Ledger,
        lane: Option<Label>,
        id: Arc<str>,
    },
    /// The gateway refused it or an upstream error is passed through; already counted.
    Refused { error: Error, id: Arc<str> },
    /// `withdraw` was cancelled while it still waited for a slot; it never ran.
    Withdrawn,
}

/// What a request from inside is: who sends it, its deadline and priority, and whether it is a
/// batch item (counted apart).
pub struct Caller<'a> {
    pub key: &'a Arc<KeyLive>,
    pub timeout: Duration,
    pub priority: i32,
    pub batch: bool,
    /// Cancelling takes the request out of its lane's queue if it has not started.
    pub withdraw: Option<&'a CancellationToken>,
}

pub async fn send(
    engine: &Arc<Engine>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    who: Caller<'_>,
) -> Inside {
    let ctx = RequestCtx::new(None);
    let mut ledger = Ledger::new(engine.clone(), &ctx, who.batch);
    ledger.entry.set_key(&who.key.label);
    let options = (who.timeout, who.priority);
    let relayed = match routed(engine, topo, endpoint, body, who.key, &mut ledger, options) {
        Ok(p) => {
            let entry = p.registration.entry.clone();
            let relayed = tokio::select! {
                r = relay(engine, topo, who.key, p, &mut ledger) => Some(r),
                () = withdrawn(&entry, who.withdraw) => None,
            };
            let Some(relayed) = relayed else {
                ledger.code = std::borrow::Cow::Borrowed("withdrawn");
                ledger.close(End::Answered, None);
                return Inside::Withdrawn;
            };
            relayed
        }
        Err(e) => Err(e),
    };
    let lane = ledger.lane.as_ref().map(|l| l.label.clone());
    match relayed {
        Ok(relay) => Inside::Answer {
            relay,
            ledger,
            lane,
            id: ctx.id,
        },
        Err(error) => {
            record_refusal(engine, ledger, &error);
            Inside::Refused { error, id: ctx.id }
        }
    }
}

/// Resolves once `withdraw` is cancelled while the request still waits for a slot; one that is
/// already running upstream is left to finish.
async fn withdrawn(entry: &Entry, withdraw: Option<&CancellationToken>) {
    match withdraw {
        Some(w) => w.cancelled().await,
        None => std::future::pending().await,
    }
    if entry.is_running() {
        std::future::pending::<()>().await;
    }
}

/// A whole answer from the lanes in this process ([`Engine::call_whole`]).
#[derive(Debug)]
pub struct Whole {
    pub status: http::StatusCode,
    /// A refusal's or a passed-through upstream error's headers (`retry-after` among them);
    /// empty on a success, whose upstream headers the lanes have acted on already.
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The request's id in the request table and the log; none when the key was refused.
    pub id: Option<Arc<str>>,
    /// Laneway's own refusal, when it is one (not an upstream's answer): a caller tells
    /// "not yet" (`queue_full`, `rate_limit`, …) from "never" by it.
    pub refused: Option<ErrorCode>,
}

impl Whole {
    /// A refusal or an upstream's error answer, as a client would get it.
    fn refusal(e: Error, id: Option<Arc<str>>) -> Self {
        let refused = match &e {
            Error::Api(a) => Some(a.code),
            Error::PassThrough(_) => None,
        };
        let (parts, body) = render::error_for(Endpoint::ChatCompletions, e).into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
            id,
            refused,
        }
    }
}

impl Engine {
    /// Sends one request through the lanes in this process, as the key whose secret is
    /// `api_key` (none on a gateway without keys), and returns the whole answer: the body is
    /// read within the request, up to `limit` bytes, without building a client's response
    /// around it. Dropping the future ends the request, as a client going away does. A
    /// refusal or an upstream error is a `Whole` with its status, and so are the request's
    /// deadline and an operator's stop when they come mid-answer, as they would before it. `Err`
    /// means the upstream's answer broke off or outgrew `limit`.
    pub async fn call_whole(
        self: &Arc<Self>,
        endpoint: Endpoint,
        api_key: Option<&str>,
        body: Bytes,
        limit: usize,
    ) -> Result<Whole, ApiError> {
        let (topo, key) = match self.caller(api_key) {
            Ok(k) => k,
            Err(e) => return Ok(Whole::refusal(e.into(), None)),
        };
        match send(self, &topo, endpoint, body, as_caller(&topo, &key)).await {
            Inside::Answer {
                relay, ledger, id, ..
            } => match relay.whole(ledger, limit).await {
                Ok((status, body)) => Ok(Whole {
                    status,
                    headers: http::HeaderMap::new(),
                    body,
                    id: Some(id),
                    refused: None,
                }),
                Err(e) if e.code == ErrorCode::UpstreamUnreachable => Err(e),
                Err(e) => Ok(Whole::refusal(e.into(), Some(id))),
            },
            Inside::Refused { error, id } => Ok(Whole::refusal(error, Some(id))),
            Inside::Withdrawn => Ok(Whole::refusal(withdrawn_call().into(), None)),
        }
    }

    /// The config and the key a call is made as: the key whose secret is `api_key`.
    fn caller(&self, api_key: Option<&str>) -> Result<(Arc<Topology>, Arc<KeyLive>), ApiError> {
        let topo = self.topo.load_full();
        let key = topo.key(api_key).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidApiKey,
                "the API key is not one of the config's [[key]]s",
            )
        })?;
        Ok((topo, key))
    }
}

/// A call as `key`: above the Batch API's items, with the config's request timeout.
fn as_caller<'a>(topo: &Topology, key: &'a Arc<KeyLive>) -> Caller<'a> {
    Caller {
        key,
        timeout: topo.request_timeout(),
        priority: key
            .key
            .spec()
            .priority
            .max(BATCH_PRIORITY.saturating_add(1)),
        batch: false,
        withdraw: None,
    }
}

/// Nothing withdraws a call; should it come to that, it is told so.
fn withdrawn_call() -> ApiError {
    ApiError::new(ErrorCode::RequestCancelled, "withdrawn")
}
