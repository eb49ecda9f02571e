//! Who is asking and what they may do: the request's ids, its client key, the admin key, the
//! metrics key. Every secret is compared in constant time.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use laneway_core::id::{accept_client_id, new_request_id};
use laneway_core::{ApiError, ErrorCode, Secret};
use subtle::ConstantTimeEq;

use crate::topology::{KeyLive, Topology};
use crate::App;

/// Who a request is: the id the gateway assigned (the handle of the admin API, the panel and the
/// log) and the client's own `x-request-id`, kept beside it.
#[derive(Clone)]
pub struct RequestCtx {
    pub id: Arc<str>,
    pub client_id: Option<Arc<str>>,
}

impl RequestCtx {
    pub fn new(client_id: Option<&str>) -> Self {
        Self {
            id: Arc::from(new_request_id()),
            client_id: client_id.and_then(accept_client_id).map(Arc::from),
        }
    }
}

/// The presented secret: `Authorization: Bearer …`, else `api-key` / `x-api-key` (Azure-style
/// and Anthropic-style clients).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim(),
        );
    }
    headers
        .get("api-key")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
}

fn presents(headers: &HeaderMap, secret: &Secret<String>) -> bool {
    bearer(headers).is_some_and(|p| bool::from(p.as_bytes().ct_eq(secret.expose().as_bytes())))
}

/// The client key a request presents (the anonymous one on a gateway without keys).
pub fn client_key(topo: &Topology, headers: &HeaderMap) -> Result<Arc<KeyLive>, ApiError> {
    let presented = bearer(headers);
    topo.key(presented).cloned().ok_or_else(|| {
        let msg = if presented.is_some() {
            "the API key is not valid; check `Authorization: Bearer <key>`"
        } else {
            "this gateway needs an API key: send `Authorization: Bearer <key>`"
        };
        ApiError::new(ErrorCode::InvalidApiKey, msg)
    })
}

/// The admin key; every admin handler and the panel's event stream check it first.
pub fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let topo = app.topo.load();
    let Some(key) = topo.admin_key() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the admin API is off: set server.admin_key to turn it on",
        ));
    };
    if presents(headers, key) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "send the admin key as `Authorization: Bearer <server.admin_key>`",
        ))
    }
}

/// The metrics key, when `server.metrics_key` is set.
pub fn metrics(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match &app.topo.load().config.server.metrics_key {
        Some(key) if !presents(headers, key) => Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "/metrics needs server.metrics_key: send `Authorization: Bearer <metrics key>`",
        )),
        _ => Ok(()),
    }
}
