//! The OpenAI endpoints: authenticate, read, route, then hand over to [`crate::relay`] for
//! admission, attempts and the answer.
//!
//! ```text
//! key ─► body ─► peek(model, stream, max_tokens) ─► route ─► forward (admission, attempts) ─► relay
//! 401    413          400                          404/403   429/502/503/504/upstream's      (permit
//!                                                                                            lives in
//!                                                                                            the body)
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use laneway_core::wire::{self, Endpoint};
use laneway_core::{ApiError, ErrorCode};
use tokio::time::Instant;

use crate::auth::RequestCtx;
use crate::ledger::{End, Ledger};
use crate::metrics::Reason;
use crate::relay::{relay, Relay};
use crate::respond::GatewayError;
use crate::topology::{KeyLive, Topology};
use crate::App;

pub async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::ChatCompletions, req).await
}

pub async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::Completions, req).await
}

pub async fn embeddings(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::Embeddings, req).await
}

pub(crate) async fn handle(app: Arc<App>, endpoint: Endpoint, req: Request) -> Response {
    let topo = app.topo.load_full();
    let ctx = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .unwrap_or_else(|| RequestCtx::new(None));
    let mut ledger = Ledger::new(app.clone(), &ctx);
    let key = match crate::auth::client_key(&topo, req.headers()) {
        Ok(k) => k,
        Err(e) => return refused(&app, ledger, e.into(), endpoint),
    };
    ledger.key = key.label.clone();
    let mut response = match prepare(&app, &topo, endpoint, req, &key, &mut ledger).await {
        Err(e) => refused(&app, ledger, e, endpoint),
        Ok(p) if !p.meta.stream => {
            let relayed = relay(&app, &topo, &key, p, &mut ledger).await;
            answer(&app, relayed, ledger, endpoint)
        }
        Ok(p) => {
            // A stream may start before its answer, to tell a waiting client where it stands;
            // the work then moves into the response body, so it is owned and boxed.
            let entry = p.registration.entry.clone();
            let work = {
                let (app, key) = (app.clone(), key.clone());
                Box::pin(async move {
                    let relayed = relay(&app, &topo, &key, p, &mut ledger).await;
                    let mut r = answer(&app, relayed, ledger, endpoint);
                    r.extensions_mut()
                        .insert(crate::respond::StreamOf(endpoint));
                    r
                })
            };
            crate::waiting::serve(&app, entry, work).await
        }
    };
    put_key_headers(response.headers_mut(), &key);
    response
}

/// The client's response: the relayed answer, or the error that ended the request.
fn answer(
    app: &App,
    relayed: Result<Relay, GatewayError>,
    ledger: Ledger,
    endpoint: Endpoint,
) -> Response {
    match relayed {
        Ok(relay) => relay.respond(ledger),
        Err(e) => refused(app, ledger, e, endpoint),
    }
}

/// The request ends without an upstream answer to relay: record it and answer the error in
/// the shape the endpoint's clients read.
fn refused(app: &App, ledger: Ledger, e: GatewayError, endpoint: Endpoint) -> Response {
    record_refusal(app, ledger, &e);
    e.respond_for(endpoint)
}

/// Counts and logs a request that ends without an upstream answer to relay.
pub(crate) fn record_refusal(app: &App, mut ledger: Ledger, e: &GatewayError) {
    ledger.code = e.code();
    if let GatewayError::Api(api) = &e {
        ledger.status = api.status();
        app.metrics
            .rejected
            .get_or_create(&Reason {
                reason: std::borrow::Cow::Borrowed(api.code.as_str()),
            })
            .inc();
    }
    ledger.close(End::of(e), None);
}

fn put_key_headers(h: &mut HeaderMap, key: &KeyLive) {
    if !key.key.has_rate_limits() {
        return;
    }
    let usage = key.key.usage();
    for (which, v) in [("requests", usage.requests), ("tokens", usage.tokens)] {
        let Some((limit, remaining, reset)) = v else {
            continue;
        };
        let names = [
            format!("x-ratelimit-limit-{which}"),
            format!("x-ratelimit-remaining-{which}"),
            format!("x-ratelimit-reset-{which}"),
        ];
        let values = [
            limit.to_string(),
            remaining.to_string(),
            laneway_core::duration::openai_format(reset),
        ];
        for (n, v) in names.iter().zip(values) {
            if let (Ok(n), Ok(v)) = (n.parse::<header::HeaderName>(), HeaderValue::from_str(&v)) {
                h.insert(n, v);
            }
        }
    }
}

/// Reads the whole body, within `server.max_body` and `server.body_timeout`: a client that
/// declares more than it sends, or trickles it, is answered 408 instead of holding a handler.
async fn read_body(
    body: Body,
    max: usize,
    timeout: Duration,
    declared: Option<u64>,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the gateway's limit of {max} bytes (server.max_body)"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large().into());
    }
    let read = tokio::time::timeout(timeout, http_body_util::Limited::new(body, max).collect());
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} (server.body_timeout)",
                humantime::format_duration(timeout)
            ),
        )
        .into());
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large().into()),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("could not read the request body: {e}"),
        )
        .into()),
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The priority of Batch API items: below every interactive request, so a batch never takes a
/// lane slot an interactive request is waiting for.
pub(crate) const BATCH_PRIORITY: i32 = i32::MIN;

/// The request's own deadline and priority, from the `x-laneway-*` headers.
fn request_options(
    headers: &HeaderMap,
    topo: &Topology,
    key: &KeyLive,
) -> Result<(Duration, i32), GatewayError> {
    let mut timeout = topo.request_timeout();
    if let Some(v) = header_str(headers, "x-laneway-timeout") {
        let d = parse_client_timeout(v).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("x-laneway-timeout `{v}` is not a duration like \"30s\""),
            )
            .with_param("x-laneway-timeout")
        })?;
        timeout = timeout.min(d);
    }
    let mut priority = key.key.spec().priority;
    if let Some(v) = header_str(headers, "x-laneway-priority") {
        let p: i32 = v.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "x-laneway-priority `{v}` is not an integer from {} to {}",
                    i32::MIN,
                    i32::MAX
                ),
            )
            .with_param("x-laneway-priority")
        })?;
        // A request may lower its priority, never raise it above its key's.
        priority = priority.min(p);
    }
    // Batch items are below every interactive request.
    Ok((timeout, priority.max(BATCH_PRIORITY.saturating_add(1))))
}

fn parse_client_timeout(v: &str) -> Option<Duration> {
    laneway_core::duration::parse(v).filter(|d| !d.is_zero())
}

/// A request read, routed and registered, ready for admission.
pub(crate) struct Prepared {
    pub(crate) meta: wire::RequestMeta,
    pub(crate) body: Bytes,
    pub(crate) endpoint: Endpoint,
    /// Index into [`Topology::routes`].
    pub(crate) route: usize,
    pub(crate) registration: crate::table::Registration,
    pub(crate) priority: i32,
    pub(crate) tokens: u64,
    pub(crate) deadline: Instant,
    /// The pool position the request must run on: the lane that made its
    /// `previous_response_id`.
    pub(crate) pin: Option<usize>,
    /// Headers of the client's passed upstream (`anthropic-version`, `anthropic-beta`).
    pub(crate) pass: Option<Box<HeaderMap>>,
}

/// Client headers that say which version or beta of an API the request is written for; the
/// upstream must see them.
const PASSED: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

fn passed_headers(headers: &HeaderMap) -> Option<Box<HeaderMap>> {
    let mut out = HeaderMap::new();
    for name in PASSED {
        for v in headers.get_all(name) {
            out.append(header::HeaderName::from_static(name), v.clone());
        }
    }
    (!out.is_empty()).then(|| Box::new(out))
}

/// Where a request continuing a response must run: the position in the route's pool of the
/// lane that made `previous_response_id`. An id not made here (or by another key) runs as any
/// request, and the upstream answers for it.
async fn pin_for(
    app: &App,
    topo: &Topology,
    route: usize,
    meta: &wire::RequestMeta,
    previous: &str,
    key: &KeyLive,
) -> Result<Option<usize>, GatewayError> {
    let Some(lane) = app.responses.lane_of(app, previous, key.name()).await else {
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

/// Reads, checks and routes the request, and registers it where operators see it.
async fn prepare(
    app: &Arc<App>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    req: Request,
    key: &KeyLive,
    ledger: &mut Ledger,
) -> Result<Prepared, GatewayError> {
    let (parts, body) = req.into_parts();
    let declared = header_str(&parts.headers, "content-length").and_then(|v| v.parse().ok());
    let body = read_body(
        body,
        topo.config.server.max_body,
        topo.config.server.body_timeout,
        declared,
    )
    .await?;
    let options = request_options(&parts.headers, topo, key)?;
    let mut pass = passed_headers(&parts.headers);
    let mut p = if endpoint.form() {
        // A form goes upstream with its own content type: the boundary is in it.
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let meta = wire::peek_form(
            &body,
            content_type.and_then(|v| v.to_str().ok()).unwrap_or(""),
        )?;
        if let Some(ct) = content_type {
            pass.get_or_insert_with(Box::default)
                .insert(header::CONTENT_TYPE, ct.clone());
        }
        routed_meta(app, topo, endpoint, body, meta, key, ledger, options)?
    } else {
        routed(app, topo, endpoint, body, key, ledger, options)?
    };
    p.pass = pass;
    if let Some(prev) = &p.meta.previous_response_id {
        p.pin = pin_for(app, topo, p.route, &p.meta, prev, key).await?;
    }
    Ok(p)
}

/// A body routed and checked against the key, registered where operators see it.
pub(crate) fn routed(
    app: &Arc<App>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    key: &KeyLive,
    ledger: &mut Ledger,
    options: (Duration, i32),
) -> Result<Prepared, GatewayError> {
    let meta = wire::peek(endpoint, &body)?;
    routed_meta(app, topo, endpoint, body, meta, key, ledger, options)
}

/// [`routed`] with the body's fields already read.
#[allow(clippy::too_many_arguments)]
fn routed_meta(
    app: &Arc<App>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    body: Bytes,
    meta: wire::RequestMeta,
    key: &KeyLive,
    ledger: &mut Ledger,
    (timeout, priority): (Duration, i32),
) -> Result<Prepared, GatewayError> {
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
    ledger.model = route.models.label(&meta.model);
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

    let registration = app.table.register(
        ledger.id.clone(),
        ledger.client_id.clone(),
        key.label.clone(),
        meta.model.clone(),
        meta.stream,
    );
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
