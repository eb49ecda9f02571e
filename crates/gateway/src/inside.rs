//! Requests that start inside the process rather than on a socket: Batch API items and the
//! library's in-process lanes ([`App::call`]). From routing on they take the path a client's
//! request takes (key checks, admission, attempts, relay, the request table and log), without
//! HTTP in between.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::auth::RequestCtx;
use crate::label::Label;
use crate::ledger::{End, Ledger};
use crate::proxy::{record_refusal, routed, BATCH_PRIORITY};
use crate::relay::relay;
use crate::respond::{error_response, GatewayError};
use crate::table::Entry;
use crate::topology::{KeyLive, Topology};
use crate::App;

/// How a request from inside ended.
pub(crate) enum Inside {
    /// An answer (its body still to be read; the request ends with it).
    Answer {
        response: Response,
        lane: Option<Label>,
        id: Arc<str>,
    },
    /// The gateway refused it or an upstream error is passed through; already counted.
    Refused { error: GatewayError, id: Arc<str> },
    /// `withdraw` was cancelled while it still waited for a slot; it never ran.
    Withdrawn,
}

/// What a request from inside is: who sends it, its deadline and priority, and whether it is a
/// batch item (counted apart).
pub(crate) struct Caller<'a> {
    pub key: &'a Arc<KeyLive>,
    pub timeout: Duration,
    pub priority: i32,
    pub batch: bool,
    /// Cancelling takes the request out of its lane's queue if it has not started.
    pub withdraw: Option<&'a CancellationToken>,
}

pub(crate) async fn send(
    app: &Arc<App>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    who: Caller<'_>,
) -> Inside {
    let ctx = RequestCtx::new(None);
    let mut ledger = Ledger::new(app.clone(), &ctx);
    ledger.key = who.key.label.clone();
    ledger.batch = who.batch;
    let options = (who.timeout, who.priority);
    let relayed = match routed(app, topo, endpoint, body, who.key, &mut ledger, options) {
        Ok(p) => {
            let entry = p.registration.entry.clone();
            let relayed = tokio::select! {
                r = relay(app, topo, who.key, p, &mut ledger) => Some(r),
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
        Ok(r) => Inside::Answer {
            response: r.respond(ledger),
            lane,
            id: ctx.id,
        },
        Err(error) => {
            record_refusal(app, ledger, &error);
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

impl App {
    /// Sends one request through the lanes in this process, as the key whose secret is
    /// `api_key` (none on a gateway without keys), and returns the response a client would
    /// get, body still streaming. Dropping the future or the body ends the request, as a client
    /// going away does.
    pub async fn call(
        self: &Arc<Self>,
        endpoint: Endpoint,
        api_key: Option<&str>,
        body: Bytes,
    ) -> Response {
        let topo = self.topo.load_full();
        let Some(key) = topo.key(api_key).cloned() else {
            return error_response(&ApiError::new(
                ErrorCode::InvalidApiKey,
                "the API key is not one of the config's [[key]]s",
            ));
        };
        let who = Caller {
            key: &key,
            timeout: topo.request_timeout(),
            priority: key
                .key
                .spec()
                .priority
                .max(BATCH_PRIORITY.saturating_add(1)),
            batch: false,
            withdraw: None,
        };
        let (mut response, id) = match send(self, &topo, endpoint, body, who).await {
            Inside::Answer { response, id, .. } => (response, id),
            Inside::Refused { error, id } => (error.into_response(), id),
            // Nothing withdraws a call.
            Inside::Withdrawn => {
                let e = ApiError::new(ErrorCode::RequestCancelled, "withdrawn");
                return error_response(&e);
            }
        };
        if let Ok(v) = http::HeaderValue::from_str(&id) {
            response
                .headers_mut()
                .insert(crate::names::X_LANEWAY_REQUEST_ID.clone(), v);
        }
        response
    }
}
