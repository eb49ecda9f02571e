//! Calls on a Responses API id (`GET`/`DELETE /v1/responses/{id}`, `…/cancel`,
//! `…/input_items`), sent to the lane that made the id (recorded by the engine's
//! `responses` as answers pass).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use laneway_core::{ApiError, ErrorCode};
use laneway_engine::auth::{client_key, RequestCtx};
use laneway_engine::names;

use crate::respond::Refusal;
use crate::App;

/// The largest answer of an id call relayed (input items can be long).
const MAX_ANSWER: usize = 64 << 20;

fn not_found(id: &str) -> Refusal {
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
) -> Result<Response, Refusal> {
    let topo = app.topo.load_full();
    let key = client_key(&topo, req.headers())?;
    let id = params.get("id").cloned().unwrap_or_default();
    let Some(lane_name) = app.responses.lane_of(&id, key.name()).await else {
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
        .map_err(|e| Refusal::from(e.clone()))?;
    let target = targets
        .at(&format!("{tail}{query}"))
        .map_err(Refusal::from)?;
    let method = req.method().clone();
    let ctx_id = req
        .extensions()
        .get::<RequestCtx>()
        .map(|c| c.id.to_string())
        .unwrap_or_default();
    let timeout = topo.config.server.request_timeout;
    let sent = app
        .client()
        .send_as(method.clone(), &target, &ctx_id, timeout)
        .await
        .map_err(Refusal::from)?;
    let (parts, body) = sent.into_parts();
    let bytes = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(body, MAX_ANSWER).collect(),
    )
    .await
    .map_err(|_| {
        Refusal::from(ApiError::new(
            ErrorCode::DeadlineExceeded,
            "the upstream did not finish its answer in time",
        ))
    })?
    .map_err(|e| {
        Refusal::from(ApiError::new(
            ErrorCode::UpstreamUnreachable,
            format!("reading the upstream's answer: {e}"),
        ))
    })?
    .to_bytes();
    if method == Method::DELETE && parts.status.is_success() {
        app.responses.forget(&id);
    }
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Ok(v) = lane.label.parse() {
        r.headers_mut().insert(names::X_LANEWAY_LANE.clone(), v);
    }
    r.extensions_mut().insert(crate::respond::UpstreamAnswer);
    Ok(r.into_response())
}
