//! Who is asking and what they may do: the request's ids, its client key, the admin key. Every
//! secret is compared in constant time.

use std::sync::Arc;

pub use crate::ids::RequestCtx;

use http::{header, HeaderMap};
use laneway_core::{ApiError, ErrorCode, Secret};
use subtle::ConstantTimeEq;

use crate::topology::{KeyLive, Topology};

/// The presented secret: `Authorization: Bearer …` (the scheme in any case, as RFC 9110 has
/// it), else `api-key` / `x-api-key` (Azure-style and Anthropic-style clients). An
/// `Authorization` header with another scheme, or with no scheme at all, presents nothing.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get("api-key")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn matches(presented: &str, secret: &Secret<String>) -> bool {
    bool::from(presented.as_bytes().ct_eq(secret.expose().as_bytes()))
}

pub fn presents(headers: &HeaderMap, secret: &Secret<String>) -> bool {
    bearer(headers).is_some_and(|p| matches(p, secret))
}

/// Whether `presented` is still the admin key: long-lived admin sessions (the panel's event
/// stream) ask again after every reload could have rotated it.
pub fn is_admin_key(topo: &Topology, presented: &str) -> bool {
    topo.admin_key().is_some_and(|key| matches(presented, key))
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
pub fn admin(topo: &Topology, headers: &HeaderMap) -> Result<(), ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_nothing_else_presents_a_key() {
        for v in [
            "Bearer sk-1",
            "bearer sk-1",
            "BEARER sk-1",
            "  Bearer   sk-1 ",
        ] {
            assert_eq!(bearer(&with("authorization", v)), Some("sk-1"), "{v}");
        }
        for v in ["sk-1", "Basic sk-1", "Bearer ", "Bearer"] {
            assert_eq!(bearer(&with("authorization", v)), None, "{v}");
        }
        assert_eq!(bearer(&with("x-api-key", "sk-2")), Some("sk-2"));
        assert_eq!(bearer(&with("api-key", "sk-3")), Some("sk-3"));
    }
}
