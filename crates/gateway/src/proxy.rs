//! The OpenAI endpoints: read, authenticate, route, admit, forward, relay.
//!
//! ```text
//! body ─► key ─► peek(model, stream, max_tokens) ─► route ─► admission ─► attempts ─► relay
//!  413     401        400                          404/403   429/503/504   502/504/up   (permit
//!                                                                                        lives in
//!                                                                                        the body)
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use laneway_admission::{acquire, Ask};
use laneway_core::wire::{self, Endpoint, RequestMeta};
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::classify::{classify, is_quota_error, Outcome};
use laneway_upstream::sse::UsageTap;
use laneway_upstream::{Hints, UpstreamRequest};
use tokio::time::Instant;

use crate::body::{Held, ProxyBody, Watch};
use crate::ledger::{End, Ledger};
use crate::metrics::{LaneLabel, LaneReason, Reason};
use crate::respond::{self, GatewayError};
use crate::runtime::{KeyRt, LaneRt, Runtime};
use crate::server::RequestId;
use crate::table::Entry;
use crate::{retry, App};

/// Largest upstream error body read to classify it (a quota error versus a rate limit).
const MAX_ERROR_BODY: usize = 1 << 20;

pub async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::ChatCompletions, req).await
}

pub async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::Completions, req).await
}

pub async fn embeddings(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(app, Endpoint::Embeddings, req).await
}

async fn handle(app: Arc<App>, endpoint: Endpoint, req: Request) -> Response {
    let rt = app.rt.load_full();
    let id = req.extensions().get::<RequestId>().map_or_else(
        || Arc::from(laneway_core::id::new_request_id()),
        |r| r.0.clone(),
    );
    let mut ledger = Some(Ledger::new(app.clone(), id));
    let mut key = None;
    let result = run(&app, &rt, endpoint, req, &mut ledger, &mut key).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(mut l) = ledger.take() {
                l.code = e.code();
                if let GatewayError::Api(api) = &e {
                    l.status = api.status();
                    app.metrics
                        .rejected
                        .get_or_create(&Reason {
                            reason: api.code.as_str().to_owned(),
                        })
                        .inc();
                }
                let end = match &e {
                    GatewayError::Api(a) if a.code == ErrorCode::RequestCancelled => End::Operator,
                    GatewayError::Api(a) if a.code == ErrorCode::DeadlineExceeded => End::Deadline,
                    _ => End::Complete,
                };
                l.close(end, None);
            }
            e.into_response()
        }
    };
    if let Some(k) = key {
        put_key_headers(response.headers_mut(), &k);
    }
    response
}

fn put_key_headers(h: &mut HeaderMap, key: &KeyRt) {
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
            format!("{:.3}s", reset.as_secs_f64()),
        ];
        for (n, v) in names.iter().zip(values) {
            if let (Ok(n), Ok(v)) = (n.parse::<header::HeaderName>(), HeaderValue::from_str(&v)) {
                h.insert(n, v);
            }
        }
    }
}

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

async fn read_body(body: Body, max: usize, declared: Option<u64>) -> Result<Bytes, GatewayError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the gateway's limit of {max} bytes (server.max_body)"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large().into());
    }
    match http_body_util::Limited::new(body, max).collect().await {
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
    rt: &Runtime,
    key: &KeyRt,
) -> Result<(Duration, i32), GatewayError> {
    let mut timeout = rt.request_timeout();
    if let Some(v) = header_str(headers, "x-laneway-timeout") {
        let d = humantime_duration(v).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("x-laneway-timeout `{v}` is not a duration like \"30s\""),
            )
            .with_param("x-laneway-timeout")
        })?;
        timeout = timeout.min(d);
    }
    let mut priority = key.key.spec.priority;
    if let Some(v) = header_str(headers, "x-laneway-priority") {
        let p: i32 = v.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("x-laneway-priority `{v}` is not an integer"),
            )
            .with_param("x-laneway-priority")
        })?;
        // A request may lower its priority, never raise it above its key's.
        priority = priority.min(p);
    }
    Ok((timeout, priority))
}

fn humantime_duration(v: &str) -> Option<Duration> {
    let d = parse_duration(v)?;
    (!d.is_zero()).then_some(d)
}

/// `250ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    laneway_upstream::classify::parse_reset(v)
}

async fn run(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    endpoint: Endpoint,
    req: Request,
    ledger: &mut Option<Ledger>,
    key_out: &mut Option<Arc<KeyRt>>,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let key = rt.key(bearer(&parts.headers)).cloned().ok_or_else(|| {
        let msg = if bearer(&parts.headers).is_some() {
            "the API key is not valid; check `Authorization: Bearer <key>`"
        } else {
            "this gateway needs an API key: send `Authorization: Bearer <key>`"
        };
        ApiError::new(ErrorCode::InvalidApiKey, msg)
    })?;
    *key_out = Some(key.clone());
    let declared = header_str(&parts.headers, "content-length").and_then(|v| v.parse().ok());
    let body = read_body(body, rt.config.server.max_body, declared).await?;
    let meta = wire::peek(endpoint, &body)?;
    let route = rt.route_for(&meta.model).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!(
                "no route serves the model `{}`; GET /v1/models lists the models you may use",
                meta.model
            ),
        )
        .with_param("model")
    })?;
    if let Some(l) = ledger.as_mut() {
        l.key = Arc::from(key.name());
        l.model = if route.literal {
            meta.model.clone()
        } else {
            route.pattern.clone()
        };
    }
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
    let (timeout, priority) = request_options(&parts.headers, rt, &key)?;
    let deadline = Instant::now() + timeout;
    let default_max = route
        .pool
        .first()
        .and_then(|l| rt.lane(l.name()))
        .map_or(1024, |l| l.config.default_max_tokens);
    let tokens = meta.prompt_token_estimate() + meta.max_tokens.unwrap_or(default_max);

    let id = ledger
        .as_ref()
        .map_or_else(|| Arc::from("-"), |l| l.id.clone());
    let registration = app.table.register(
        id.clone(),
        Arc::from(key.name()),
        meta.model.clone(),
        meta.stream,
    );
    let entry = registration.entry.clone();
    let ask = Ask {
        key: &key.key,
        priority,
        tokens,
        deadline,
        cancel: &entry.cancel,
        tag: entry.tag,
    };
    let permit = acquire(&route.pool, ask).await?;
    let lane_name: Arc<str> = Arc::from(permit.lane().name());
    let _ = entry.started.set((Instant::now(), lane_name.clone()));
    let lane = rt.lane(&lane_name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "the granted lane vanished from the configuration",
        )
    })?;
    app.metrics
        .queue_wait
        .get_or_create(&LaneLabel {
            lane: lane_name.to_string(),
        })
        .observe(permit.queued_for.as_secs_f64());
    if let Some(l) = ledger.as_mut() {
        l.lane = Some(lane_name.clone());
        l.queue_wait = Some(permit.queued_for);
        l.upstream_start = Some(Instant::now());
    }

    // Ask for usage on streams when a token limit needs settling and the client did not.
    let settle_stream = meta.stream
        && !meta.include_usage
        && (lane.has_tpm || key.config.as_ref().is_some_and(|k| k.limits.tpm.is_some()));
    let mut upstream_body = match &lane.config.model {
        Some(m) => meta.rewrite_model(&body, m),
        None => body.clone(),
    };
    if settle_stream {
        upstream_body = RequestMeta::with_stream_usage(&upstream_body);
    }
    drop(body);

    let resp = attempts(
        app,
        rt,
        lane,
        &entry,
        endpoint,
        upstream_body,
        deadline,
        ledger,
    )
    .await?;
    let (parts, incoming) = resp.into_parts();
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let tap = if sse {
        UsageTap::sse(settle_stream)
    } else {
        UsageTap::json()
    };
    let mut out = Response::builder().status(parts.status);
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let mut ledger = ledger
        .take()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "request ledger missing"))?;
    ledger.status = parts.status.as_u16();
    ledger.code = "ok".into();
    let watch = watch(entry.clone(), deadline);
    let held = Held {
        permit,
        registration,
        ledger,
        watch,
    };
    let body = ProxyBody::new(incoming, tap, held, sse, !settle_stream);
    out.body(Body::new(body))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()).into())
}

/// Ends the body early on an operator stop or at the deadline.
fn watch(entry: Arc<Entry>, deadline: Instant) -> Watch {
    Box::pin(async move {
        tokio::select! {
            () = entry.cancel.cancelled() => End::Operator,
            () = tokio::time::sleep_until(deadline) => End::Deadline,
        }
    })
}

fn cancelled() -> GatewayError {
    ApiError::new(
        ErrorCode::RequestCancelled,
        "an operator stopped this request; send it again if it is still needed",
    )
    .into()
}

fn deadline_exceeded() -> GatewayError {
    ApiError::new(
        ErrorCode::DeadlineExceeded,
        "the request's deadline passed before the upstream answered; raise x-laneway-timeout or server.request_timeout if it needs longer",
    )
    .into()
}

/// Sends the request upstream, retrying what is worth retrying while the budget and the
/// deadline allow. Only called before anything was sent to the client.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    app: &Arc<App>,
    rt: &Runtime,
    lane: &LaneRt,
    entry: &Entry,
    endpoint: Endpoint,
    body: Bytes,
    deadline: Instant,
    ledger: &mut Option<Ledger>,
) -> Result<http::Response<hyper::body::Incoming>, GatewayError> {
    let retry = &rt.config.retry;
    let budget = &lane.budget;
    budget.deposit(retry);
    let mut attempt = 0;
    loop {
        attempt += 1;
        entry
            .attempt
            .store(attempt, std::sync::atomic::Ordering::Relaxed);
        if let Some(l) = ledger.as_mut() {
            l.attempts = attempt;
        }
        let now = Instant::now();
        let request = UpstreamRequest {
            url: lane.url(endpoint),
            api_key: lane.config.api_key.as_ref().map(|k| k.expose().as_str()),
            body: body.clone(),
            request_id: ledger.as_ref().map_or("-", |l| &l.id),
            first_byte_timeout: lane
                .config
                .first_byte_timeout
                .min(deadline.saturating_duration_since(now)),
        };
        let client = app.client();
        let sent = tokio::select! {
            r = client.send(request) => r,
            () = entry.cancel.cancelled() => return Err(cancelled()),
            () = tokio::time::sleep_until(deadline) => return Err(deadline_exceeded()),
        };
        let (failure, hint, reason) = match sent {
            Ok(resp)
                if resp.status().is_success()
                    || resp.status().is_informational()
                    || resp.status().is_redirection() =>
            {
                return Ok(resp)
            }
            Ok(resp) => {
                let status = resp.status();
                let hints = Hints::from_headers(resp.headers());
                let (parts, incoming) = resp.into_parts();
                let bytes = tokio::select! {
                    b = http_body_util::Limited::new(incoming, MAX_ERROR_BODY).collect() => b.map(|c| c.to_bytes()).unwrap_or_default(),
                    () = entry.cancel.cancelled() => return Err(cancelled()),
                    () = tokio::time::sleep_until(deadline) => return Err(deadline_exceeded()),
                };
                if status == StatusCode::TOO_MANY_REQUESTS {
                    app.metrics
                        .upstream_429
                        .get_or_create(&LaneLabel {
                            lane: lane.lane.name().to_owned(),
                        })
                        .inc();
                }
                let passthrough = respond::upstream_error(parts, bytes.clone(), hints.retry_after);
                match classify(status, is_quota_error(&bytes)) {
                    Outcome::Retryable { .. } => (
                        passthrough,
                        hints.retry_after,
                        format!("status_{}", status.as_u16()),
                    ),
                    _ => return Err(passthrough),
                }
            }
            Err(e) if e.retryable() => {
                tracing::debug!(lane = lane.lane.name(), error = %e, "upstream attempt failed");
                (GatewayError::from(e), None, "connect".to_owned())
            }
            Err(e) => return Err(e.into()),
        };
        if attempt >= retry.max_attempts.get() || !budget.withdraw(retry) {
            return Err(failure);
        }
        let delay = retry::backoff(retry, attempt).max(hint.unwrap_or_default());
        if Instant::now() + delay >= deadline {
            return Err(failure);
        }
        app.metrics
            .retries
            .get_or_create(&LaneReason {
                lane: lane.lane.name().to_owned(),
                reason,
            })
            .inc();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = entry.cancel.cancelled() => return Err(cancelled()),
        }
    }
}
