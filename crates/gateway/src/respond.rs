//! The one place where every error becomes an HTTP response: the OpenAI envelope, the status,
//! the code, and `Retry-After` / `retry-after-ms` on every 429 and 503.
//!
//! Handlers return `Result<Response, GatewayError>` and use `?`; nothing else builds an error
//! response.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use laneway_admission::{AdmissionError, Scope};
use laneway_core::error::{retry_after_millis, retry_after_secs};
use laneway_core::wire::Endpoint;
use laneway_core::wire::PeekError;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::UpstreamError;

#[derive(Debug)]
pub enum GatewayError {
    Api(ApiError),
    /// An upstream answer that is passed to the client as it is.
    PassThrough(Box<Response>),
}

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<PeekError> for GatewayError {
    fn from(e: PeekError) -> Self {
        let param = e.param();
        let mut err = ApiError::new(ErrorCode::InvalidRequest, e.to_string());
        err.param = param;
        Self::Api(err)
    }
}

impl From<AdmissionError> for GatewayError {
    fn from(e: AdmissionError) -> Self {
        let msg = e.to_string();
        let (code, advice) = match &e {
            AdmissionError::RateLimited { .. } => (
                ErrorCode::RateLimit,
                "slow down or retry after the indicated time",
            ),
            AdmissionError::NeverFits { .. } => (
                ErrorCode::RateLimit,
                "it can never fit: lower `max_tokens` or shorten the prompt",
            ),
            AdmissionError::ConcurrencyLimited {
                scope: Scope::Key(_),
                ..
            } => (
                ErrorCode::ConcurrencyLimitExceeded,
                "wait for one of your running requests to finish",
            ),
            AdmissionError::ConcurrencyLimited { .. } => (
                ErrorCode::ConcurrencyLimitExceeded,
                "retry after the indicated time",
            ),
            AdmissionError::QueueFull { .. } => (
                ErrorCode::QueueFull,
                "the gateway is saturated; retry later",
            ),
            AdmissionError::QueueTimeout { .. } => (
                ErrorCode::QueueTimeout,
                "the lane is saturated; retry later",
            ),
            AdmissionError::DeadlineExceeded => (
                ErrorCode::DeadlineExceeded,
                "raise `x-laneway-timeout` or server.request_timeout if the request needs longer",
            ),
            AdmissionError::Cancelled => (
                ErrorCode::RequestCancelled,
                "an operator cancelled it; send it again if still needed",
            ),
            AdmissionError::NoLaneAvailable { .. } => {
                (ErrorCode::NoLaneAvailable, "retry after the indicated time")
            }
            AdmissionError::StoreUnavailable { .. } => (
                ErrorCode::StoreUnavailable,
                "the gateway refuses rather than overshoot limits it cannot share; retry after the indicated time",
            ),
        };
        let mut err = ApiError::new(code, format!("{msg}; {advice}"));
        if let Some(after) = e.retry_after() {
            err = err.with_retry_after(after);
        }
        Self::Api(err)
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        let code = match e {
            UpstreamError::FirstByteTimeout(_) => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::UpstreamUnreachable,
        };
        Self::Api(ApiError::new(
            code,
            format!("{e}; check that the lane's upstream is running"),
        ))
    }
}

/// Builds the response for a Laneway error.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = Response::new(Body::from(e.to_body()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let after = match (e.retry_after, status.as_u16()) {
        (Some(a), _) => Some(a),
        // Every 429 and 503 says when to come back, even when only an estimate exists.
        (None, 429 | 503) => Some(Duration::from_secs(1)),
        _ => None,
    };
    if let Some(after) = after {
        set_retry_after(h, after);
    }
    // 413 and 408 answer before the request body was read to its end: the connection cannot
    // carry another request, and saying so keeps a client from reusing it and failing.
    if matches!(status.as_u16(), 408 | 413) {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Anthropic's error type for a status, as its SDKs map them to their error classes.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 408 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error in Anthropic's shape: `{"type":"error","error":{"type":…,"message":…}}`.
fn anthropic_error_value(e: &ApiError) -> serde_json::Value {
    serde_json::json!({
        "type": "error",
        "error": {"type": anthropic_type(e.status()), "message": e.message},
    })
}

/// Marks the answer of a stream with its endpoint, so that a refusal reaching a stream that
/// started early (it waited in a queue) becomes that API's own error event.
#[derive(Clone, Copy)]
pub struct StreamOf(pub Endpoint);

/// The event that ends a stream of `api` with an error body (OpenAI's `{"error":…}` or
/// Anthropic's), in the form that API's SDKs read: Anthropic's named `error` event, the
/// Responses API's `error` event, a `data:` event for chat and completions.
pub fn stream_error_event(api: Endpoint, body: &serde_json::Value) -> Vec<u8> {
    if api.anthropic() {
        return format!("event: error\ndata: {body}\n\n").into_bytes();
    }
    if api == Endpoint::Responses {
        let e = &body["error"];
        let data = serde_json::json!({
            "type": "error",
            "code": e["code"],
            "message": e["message"],
            "param": e["param"],
        });
        return format!("event: error\ndata: {data}\n\n").into_bytes();
    }
    format!("data: {body}\n\n").into_bytes()
}

/// [`stream_error_event`] for Laneway's own error.
pub fn stream_error_event_for(api: Endpoint, e: &ApiError) -> Vec<u8> {
    if api.anthropic() {
        return stream_error_event(api, &anthropic_error_value(e));
    }
    if api == Endpoint::Responses {
        let body = serde_json::from_slice(&e.to_body()).unwrap_or_default();
        return stream_error_event(api, &body);
    }
    e.to_sse_event()
}

/// [`error_response`] in Anthropic's shape.
pub fn anthropic_error_response(e: &ApiError) -> Response {
    let mut r = error_response(e);
    *r.body_mut() = Body::from(anthropic_error_value(e).to_string());
    r
}

/// `Retry-After` (whole seconds, at least 1) and `retry-after-ms`, the only place they are written.
fn set_retry_after(h: &mut http::HeaderMap, after: Duration) {
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(after).max(1)),
    );
    h.insert(
        "retry-after-ms",
        HeaderValue::from(retry_after_millis(after).max(1) as u64),
    );
}

/// Marks a response that carries an upstream's own error body, which the gateway passes on
/// as it is instead of reshaping it.
#[derive(Clone, Copy)]
pub struct UpstreamAnswer;

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => error_response(&e),
            Self::PassThrough(r) => *r,
        }
    }
}

impl GatewayError {
    /// The response for a client of `endpoint`: Anthropic's clients read Laneway's own
    /// refusals in Anthropic's error shape (same status and retry headers); an upstream's
    /// answer passes as it came.
    pub fn respond_for(self, endpoint: Endpoint) -> Response {
        match self {
            Self::Api(e) if endpoint.anthropic() => anthropic_error_response(&e),
            other => other.into_response(),
        }
    }

    /// The error code for logs and metrics; `upstream_<status>` for pass-through answers.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Api(e) => e.code.as_str().into(),
            Self::PassThrough(r) => format!("upstream_{}", r.status().as_u16()).into(),
        }
    }
}

/// An upstream error answer, passed through with its status and body. It keeps the upstream's
/// content type and retry hints, and gains a `Retry-After` if a 429/503 came without one.
pub fn upstream_error(
    parts: http::response::Parts,
    body: bytes::Bytes,
    hint: Option<Duration>,
) -> GatewayError {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = parts.status;
    let h = r.headers_mut();
    for name in [
        header::CONTENT_TYPE.as_str(),
        "retry-after",
        "retry-after-ms",
    ] {
        if let Some(v) = parts.headers.get(name) {
            h.insert(header::HeaderName::from_static(name), v.clone());
        }
    }
    if matches!(parts.status.as_u16(), 429 | 503) && !h.contains_key(header::RETRY_AFTER) {
        set_retry_after(h, hint.unwrap_or(Duration::from_secs(1)));
    }
    r.extensions_mut().insert(UpstreamAnswer);
    GatewayError::PassThrough(Box::new(r))
}
