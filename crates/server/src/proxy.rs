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
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};

use laneway_engine::auth::{client_key, RequestCtx};
use laneway_engine::ledger::Ledger;
use laneway_engine::relay::{relay, Relay};
use laneway_engine::route::{
    pin_for, record_refusal, routed, routed_meta, Prepared, BATCH_PRIORITY,
};
use laneway_engine::topology::{KeyLive, Topology};
use laneway_engine::Error;

use crate::respond::{respond_for, StreamOf};
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
    let mut ledger = Ledger::new(app.engine().clone(), &ctx, false);
    let key = match client_key(&topo, req.headers()) {
        Ok(k) => k,
        Err(e) => return refused(&app, ledger, e.into(), endpoint),
    };
    ledger.entry.set_key(&key.label);
    let mut response = match prepare(app.engine(), &topo, endpoint, req, &key, &mut ledger).await {
        Err(e) => refused(&app, ledger, e, endpoint),
        Ok(p) if !p.meta.stream => {
            let relayed = relay(app.engine(), &topo, &key, p, &mut ledger).await;
            answer(&app, relayed, ledger, endpoint)
        }
        Ok(p) => {
            // A stream may start before its answer, to tell a waiting client where it stands;
            // the work then moves into the response body, so it is owned and boxed.
            let entry = p.registration.entry.clone();
            let work = {
                let (app, key) = (app.clone(), key.clone());
                Box::pin(async move {
                    let relayed = relay(app.engine(), &topo, &key, p, &mut ledger).await;
                    let mut r = answer(&app, relayed, ledger, endpoint);
                    r.extensions_mut().insert(StreamOf(endpoint));
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
    relayed: Result<Relay, Error>,
    ledger: Ledger,
    endpoint: Endpoint,
) -> Response {
    match relayed {
        Ok(relay) => relay.respond(ledger).map(Body::new),
        Err(e) => refused(app, ledger, e, endpoint),
    }
}

/// The request ends without an upstream answer to relay: record it and answer the error in
/// the shape the endpoint's clients read.
fn refused(app: &App, ledger: Ledger, e: Error, endpoint: Endpoint) -> Response {
    record_refusal(app, ledger, &e);
    respond_for(endpoint, e)
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
) -> Result<Bytes, Error> {
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
                laneway_core::duration::openai_format(timeout)
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

/// The request's own deadline and priority, from the `x-laneway-*` headers.
fn request_options(
    headers: &HeaderMap,
    topo: &Topology,
    key: &KeyLive,
) -> Result<(Duration, i32), Error> {
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

/// Reads, checks and routes the request, and registers it where operators see it.
async fn prepare(
    engine: &Arc<laneway_engine::Engine>,
    topo: &Arc<Topology>,
    endpoint: Endpoint,
    req: Request,
    key: &KeyLive,
    ledger: &mut Ledger,
) -> Result<Prepared, Error> {
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
        let meta = laneway_core::form::peek_form(
            &body,
            content_type.and_then(|v| v.to_str().ok()).unwrap_or(""),
        )?;
        if let Some(ct) = content_type {
            pass.get_or_insert_with(Box::default)
                .insert(header::CONTENT_TYPE, ct.clone());
        }
        routed_meta(engine, topo, endpoint, body, meta, key, ledger, options)?
    } else {
        routed(engine, topo, endpoint, body, key, ledger, options)?
    };
    p.pass = pass;
    if let Some(prev) = &p.meta.previous_response_id {
        p.pin = pin_for(engine, topo, p.route, &p.meta, prev, key).await?;
    }
    Ok(p)
}
