//! From a request's body to a request ready for admission: its fields read, a route found, the
//! key's permission checked, its deadline and token reservation set, and its entry in the
//! request table registered. Every way in (a client's request, a Batch API item, a library
//! call) passes here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use laneway_core::wire::{self, Endpoint};
use laneway_core::{ApiError, ErrorCode};
use tokio::time::Instant;

use crate::ledger::{End, Ledger};
use crate::topology::{KeyLive, Topology};
use crate::{Engine, Error};

/// The priority of Batch API items: below every interactive request, so a batch never takes a
/// lane slot an interactive request is waiting for.
pub const BATCH_PRIORITY: i32 = i32::MIN;

/// A request read, routed and registered, ready for admission.
pub struct Prepared {
    pub meta: wire::RequestMeta,
    pub body: Bytes,
    pub endpoint: Endpoint,
    /// Index into [`Topology::routes`].
    pub route: usize,
    pub registration: crate::table::Registration,
    pub priority: i32,
    pub tokens: u64,
    pub deadline: Instant,
    /// The pool position the request must run on: the lane that made its
    /// `previous_response_id`.
    pub pin: Option<usize>,
    /// Headers of the client's passed upstream (`anthropic-version`, `anthropic-beta`).
    pub pass: Option<Box<HeaderMap>>,
}

/// Where a request continuing a response must run: the position in the route's pool of the
/// lane that made `previous_response_id`. An id not made here (or by another key) runs as any
/// request, and the upstream answers for it.
pub async fn pin_for(
    engine: &Engine,
    topo: &Topology,
    route: usize,
    meta: &wire::RequestMeta,
    previous: &str,
    key: &KeyLive,
) -> Result<Option<usize>, Error> {
    let Some(lane) = engine.responses.lane_of(previous, key.name()).await else {
        return Ok(None);
    };
    let route = &topo.routes[route];
    let position = route
        .lanes
        .iter()
        .position(|&i| topo.lanes[i].config.name == lane);
    match position {
        Some(p) => Ok(Some(p)),
        None => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "previous_response_id `{previous}` was made by lane `{lane}`, which does not serve the model `{}`; ask for a model that lane serves",
                meta.model
            ),
        )
        .with_param("previous_response_id")
        .into()),
    }
}

/// Counts and logs a request that ends without an upstream answer to relay.
pub fn record_refusal(engine: &Engine, mut ledger: Ledger, e: &Error) {
    ledger.code = e.code();
    if let Error::Api(api) = &e {
        ledger.status = api.status();
        engine.observer().rejected(api.code.as_str());
    }
    ledger.close(End::of(e), None);
}

/// A body routed and checked against the key, registered where operators see it.
pub fn routed(
    engine: &Arc<Engine>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    key: &KeyLive,
    ledger: &mut Ledger,
    options: (Duration, i32),
) -> Result<Prepared, Error> {
    let meta = wire::peek(endpoint, &body)?;
    routed_meta(engine, topo, endpoint, body, meta, key, ledger, options)
}

/// [`routed`] with the body's fields already read.
#[allow(clippy::too_many_arguments)]
pub fn routed_meta(
    engine: &Arc<Engine>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    meta: wire::RequestMeta,
    key: &KeyLive,
    ledger: &mut Ledger,
    (timeout, priority): (Duration, i32),
) -> Result<Prepared, Error> {
    let route_index = topo.config.route_for(&meta.model).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!(
                "no route serves the model `{}`; GET /v1/models lists the models you may use",
                meta.model
            ),
        )
        .with_param("model")
    })?;
    let route = &topo.routes[route_index];
    ledger
        .entry
        .set_model(&meta.model, route.models.label(&meta.model), meta.stream);
    if !key.allows(&meta.model) {
        return Err(ApiError::new(
            ErrorCode::ModelNotAllowed,
            format!(
                "the key `{}` may not use the model `{}`",
                key.name(),
                meta.model
            ),
        )
        .with_param("model")
        .into());
    }
    let deadline = Instant::now() + timeout;
    // The reservation is made before a lane is chosen, so the pool's first lane sets it.
    let default_max = route
        .lanes
        .first()
        .map_or(1024, |&i| topo.lanes[i].config.default_max_tokens);
    let tokens = meta
        .prompt_token_estimate()
        .saturating_add(meta.max_tokens.unwrap_or(default_max));

    ledger.entry.set_key(&key.label);
    let registration = engine.table.register(&ledger.entry);
    Ok(Prepared {
        meta,
        body,
        endpoint,
        route: route_index,
        registration,
        priority,
        tokens,
        deadline,
        pin: None,
        pass: None,
    })
}
