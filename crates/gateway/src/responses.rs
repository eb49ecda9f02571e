//! The Responses API's ids. A response lives in the provider account that made it, so a
//! request with `previous_response_id`, and every call on an id (`GET` and `DELETE
//! /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`), must reach the lane that made
//! it. Which lane that was is recorded when the answer ends: in memory at once (the client may
//! send its next turn as soon as it has read this one) and in the storage database, so that it
//! survives a restart. Ids are recorded for the key that made them and only that key may use
//! them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use laneway_core::{ApiError, ErrorCode};

use crate::label::Label;
use crate::respond::GatewayError;
use crate::App;

/// Ids kept in memory; older ones are read from the database.
const IN_MEMORY: usize = 100_000;

/// The largest answer of an id call relayed (input items can be long).
const MAX_ANSWER: usize = 64 << 20;

/// Which lane made each response id, and for which key.
#[derive(Default)]
pub struct ResponseLanes {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_id: HashMap<String, (Label, Label)>,
    order: VecDeque<String>,
}

impl ResponseLanes {
    /// Records that `lane` made `id` for `key`: in memory now, in the database shortly.
    pub fn record(&self, app: &Arc<App>, id: String, lane: Label, key: Label) {
        {
            let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if r.order.len() >= IN_MEMORY {
                if let Some(old) = r.order.pop_front() {
                    r.by_id.remove(&old);
                }
            }
            r.order.push_back(id.clone());
            r.by_id.insert(id.clone(), (lane.clone(), key.clone()));
        }
        let app = app.clone();
        // Outside a runtime (a test dropping a body by hand) the memory record stands alone.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let Ok(storage) = app.batches.storage().await else {
                    return;
                };
                let written =
                    tokio::task::spawn_blocking(move || storage.record_response(&id, &lane, &key))
                        .await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, "could not record a response id's lane");
                }
            });
        }
    }

    /// The lane that made `id`, if `key` made it.
    pub async fn lane_of(&self, app: &App, id: &str, key: &str) -> Option<String> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(id)
            .map(|(l, k)| (l.to_string(), k.to_string()));
        let (lane, owner) = match recent {
            Some(found) => found,
            None => {
                let storage = app.batches.storage().await.ok()?;
                let id = id.to_owned();
                tokio::task::spawn_blocking(move || storage.response_lane(&id))
                    .await
                    .ok()?
                    .ok()??
            }
        };
        (owner == key).then_some(lane)
    }
}

fn not_found(id: &str) -> GatewayError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no response `{id}` was made through this gateway for your key"),
    )
    .into()
}

/// `GET`/`DELETE /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`,
/// `GET /v1/responses/{id}/input_items`: sent to the lane that made the id.
pub async fn by_id(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Result<Response, GatewayError> {
    let topo = app.topo.load_full();
    let key = crate::auth::client_key(&topo, req.headers())?;
    let id = params.get("id").cloned().unwrap_or_default();
    let Some(lane_name) = app.responses.lane_of(&app, &id, key.name()).await else {
        return Err(not_found(&id));
    };
    let Some(lane) = topo.lanes.iter().find(|l| l.config.name == lane_name) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("response `{id}` was made by lane `{lane_name}`, which the configuration no longer has"),
        )
        .into());
    };
    let path = req.uri().path();
    let tail = path.strip_prefix("/v1").unwrap_or(path);
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let targets = lane
        .targets
        .as_ref()
        .map_err(|e| GatewayError::from(e.clone()))?;
    let target = targets
        .at(&format!("{tail}{query}"))
        .map_err(GatewayError::from)?;
    let method = req.method().clone();
    let ctx_id = req
        .extensions()
        .get::<crate::auth::RequestCtx>()
        .map(|c| c.id.to_string())
        .unwrap_or_default();
    let timeout = topo.config.server.request_timeout;
    let sent = app
        .client()
        .send_as(method.clone(), &target, &ctx_id, timeout)
        .await
        .map_err(GatewayError::from)?;
    let (parts, body) = sent.into_parts();
    let bytes = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(body, MAX_ANSWER).collect(),
    )
    .await
    .map_err(|_| {
        GatewayError::from(ApiError::new(
            ErrorCode::DeadlineExceeded,
            "the upstream did not finish its answer in time",
        ))
    })?
    .map_err(|e| {
        GatewayError::from(ApiError::new(
            ErrorCode::UpstreamUnreachable,
            format!("reading the upstream's answer: {e}"),
        ))
    })?
    .to_bytes();
    if method == Method::DELETE && parts.status.is_success() {
        app.responses.forget(&app, &id);
    }
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Ok(v) = lane.label.parse() {
        r.headers_mut()
            .insert(crate::names::X_LANEWAY_LANE.clone(), v);
    }
    r.extensions_mut().insert(crate::respond::UpstreamAnswer);
    Ok(r.into_response())
}

impl ResponseLanes {
    /// Forgets `id` after its upstream deleted it.
    fn forget(&self, app: &Arc<App>, id: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .remove(id);
        let (app, id) = (app.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Ok(storage) = app.batches.storage().await {
                let _ = tokio::task::spawn_blocking(move || storage.forget_response(&id)).await;
            }
        });
    }
}
