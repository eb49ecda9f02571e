//! Operational endpoints: health, readiness, metrics, the model list, and the 404/405 answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use laneway_core::{ApiError, ErrorCode};
use serde_json::json;

use crate::respond::Refusal;
use crate::App;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready when a configuration is loaded, the gateway is not draining and, with a shared limit
/// store that refuses when down (`on_store_error = "closed"`), the store answers. A store that
/// is down under "open" leaves the gateway ready but `degraded`: it serves on local limits.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::Acquire) {
        let e = ApiError::new(ErrorCode::NoLaneAvailable, "the gateway is shutting down");
        return Refusal::from(e).into_response();
    }
    let topo = app.topo.load();
    let (status, store) = match &app.store {
        None => ("ready", json!({"kind": "memory", "up": true})),
        Some(s) => {
            let up = s.is_up();
            let store = json!({
                "kind": "redis",
                "up": up,
                "on_store_error": if app.fail_open() { "open" } else { "closed" },
                "error": s.last_error(),
            });
            if !up && !app.fail_open() {
                let why = s.last_error().unwrap_or_default();
                let e = ApiError::new(
                    ErrorCode::StoreUnavailable,
                    format!("the shared limit store is unavailable ({why}) and on_store_error is \"closed\""),
                )
                .with_retry_after(std::time::Duration::from_secs(1));
                let mut r = Refusal::from(e).into_response();
                // The OpenAI-shaped error, with the store's state beside it.
                *r.body_mut() = axum::body::Body::from(
                    json!({
                        "error": {"message": format!("the shared limit store is unavailable: {why}"), "type": ErrorCode::StoreUnavailable.kind(), "code": "store_unavailable", "param": null},
                        "status": "unavailable",
                        "store": store,
                    })
                    .to_string(),
                );
                return r;
            }
            (if up { "ready" } else { "degraded" }, store)
        }
    };
    Json(json!({"status": status, "lanes": topo.lanes.len(), "routes": topo.routes.len(), "store": store}))
        .into_response()
}

pub async fn metrics(State(app): State<Arc<App>>, req: Request) -> Response {
    if let Err(e) = crate::auth::metrics(&app, req.headers()) {
        return Refusal::from(e).into_response();
    }
    let format = crate::metrics::Exposition::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let text = app.metrics.render(
        &app.topo.load(),
        app.conns.len(),
        app.store.as_ref(),
        format,
    );
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

/// `GET /v1/models/{id}`: one model of those [`models`] lists, or 404 `model_not_found`.
pub async fn model(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let topo = app.topo.load_full();
    let key = match crate::auth::client_key(&topo, req.headers()) {
        Ok(k) => k,
        Err(e) => return Refusal::from(e).into_response(),
    };
    let ids = crate::catalog::Catalog::ids(&app, &topo, &key).await;
    if ids.contains(&id) {
        Json(json!({"id": id, "object": "model", "created": 0, "owned_by": "laneway"}))
            .into_response()
    } else {
        Refusal::from(
            ApiError::new(
                ErrorCode::ModelNotFound,
                format!("the model `{id}` is not one this key may use; GET /v1/models lists them"),
            )
            .with_param("model"),
        )
        .into_response()
    }
}

/// The model ids the caller's key may use (see [`crate::catalog`]).
pub async fn models(State(app): State<Arc<App>>, req: Request) -> Response {
    let topo = app.topo.load_full();
    let key = match crate::auth::client_key(&topo, req.headers()) {
        Ok(k) => k,
        Err(e) => return Refusal::from(e).into_response(),
    };
    let data: Vec<_> = crate::catalog::Catalog::ids(&app, &topo, &key)
        .await
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "laneway"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn not_found(req: Request) -> Response {
    let e = ApiError::new(
        ErrorCode::NotFound,
        format!("no endpoint at {} {}", req.method(), req.uri().path()),
    );
    Refusal::from(e).into_response()
}

pub async fn method_not_allowed(req: Request) -> Response {
    let e = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    );
    Refusal::from(e).into_response()
}
