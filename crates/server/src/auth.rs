//! The operator's keys: the admin key (admin API, panel) and the metrics key. Client keys and
//! the request's ids are the engine's (`laneway_engine::auth`); every secret is compared in
//! constant time there.

use axum::http::HeaderMap;
use laneway_core::{ApiError, ErrorCode};
use laneway_engine::auth;

pub use laneway_engine::auth::{bearer, client_key, RequestCtx};

use crate::App;

/// Whether `presented` is still the admin key: long-lived admin sessions (the panel's event
/// stream) ask again after every reload could have rotated it.
pub fn is_admin_key(app: &App, presented: &str) -> bool {
    auth::is_admin_key(&app.topo.load(), presented)
}

/// The admin key; every admin handler and the panel's event stream check it first.
pub fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    auth::admin(&app.topo.load(), headers)
}

/// The metrics key, when `server.metrics_key` is set.
pub fn metrics(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match &app.topo.load().config.server.metrics_key {
        Some(key) if !auth::presents(headers, key) => Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "/metrics needs server.metrics_key: send `Authorization: Bearer <metrics key>`",
        )),
        _ => Ok(()),
    }
}
