//! The HTTP surface: one router, one middleware (request ids), graceful drain.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use laneway_core::id::{accept_client_id, new_request_id};

use crate::{admin, ops, proxy, ui, App};

/// The request's id: the client's `x-request-id` when acceptable, otherwise a new one.
#[derive(Clone)]
pub struct RequestId(pub Arc<str>);

async fn request_id(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(accept_client_id)
        .map_or_else(|| Arc::from(new_request_id()), Arc::from);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    // Ids are checked printable ASCII or generated hex, both valid header values.
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/models", get(ops::models))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/ui", get(ui::page))
        .nest("/admin", admin::router())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}
