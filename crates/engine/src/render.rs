//! The one module that turns an error into what a client reads, in every form a refusal takes:
//! a JSON response (OpenAI's envelope, or Anthropic's for its clients), the event that ends a
//! stream, a Batch API output line (the status and body a client would have read), and a whole HTTP/1.1 response written before a request was
//! read (the connection limit; hyper's own 400, 414 and 431 are written byte for byte the same,
//! as a test in the server checks). Every 429 and 503 says when to come back.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use laneway_core::error::{retry_after_millis, retry_after_secs};
use laneway_core::wire::Endpoint;
use laneway_core::ApiError;

use crate::Error;

/// When a client should come back: the error's own estimate, else a second for every 429 and
/// 503 (even when only an estimate exists).
fn retry_after(e: &ApiError) -> Option<Duration> {
    match (e.retry_after, e.status()) {
        (Some(a), _) => Some(a),
        (None, 429 | 503) => Some(Duration::from_secs(1)),
        _ => None,
    }
}

/// The body of `e` for a client of `api`: Anthropic's shape on its endpoints, OpenAI's
/// envelope everywhere else.
pub fn body_for(api: Endpoint, e: &ApiError) -> Vec<u8> {
    if api.anthropic() {
        anthropic_value(e).to_string().into_bytes()
    } else {
        e.to_body()
    }
}

/// Laneway's error as a JSON response for a client of `api`, with its status and retry headers.
pub fn response_for(api: Endpoint, e: &ApiError) -> http::Response<Bytes> {
    with_body(e, Bytes::from(body_for(api, e)))
}

/// Laneway's error as an OpenAI-shaped JSON response.
pub fn response(e: &ApiError) -> http::Response<Bytes> {
    with_body(e, Bytes::from(e.to_body()))
}

fn with_body(e: &ApiError, body: Bytes) -> http::Response<Bytes> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = retry_after(e) {
        set_retry_after(h, after);
    }
    // 413 and 408 answer before the request body was read to its end: the connection cannot
    // carry another request, and saying so keeps a client from reusing it and failing.
    if matches!(status.as_u16(), 408 | 413) {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// A whole HTTP/1.1 response for `e`, written on a connection before any request was read
/// from it (and then closed): the form of a refusal at accept.
pub fn raw_http(e: &ApiError) -> Vec<u8> {
    let body = e.to_body();
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(after) = retry_after(e) {
        out.push_str(&format!(
            "retry-after: {}\r\nretry-after-ms: {}\r\n",
            retry_after_secs(after).max(1),
            retry_after_millis(after).max(1)
        ));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
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
fn anthropic_value(e: &ApiError) -> serde_json::Value {
    serde_json::json!({
        "type": "error",
        "error": {"type": anthropic_type(e.status()), "message": e.message},
    })
}

/// The event that ends a stream of `api` with an error body (OpenAI's `{"error":…}` or
/// Anthropic's), in the form that API's SDKs read: Anthropic's named `error` event, the
/// Responses API's `error` event, a `data:` event for chat and completions.
pub fn stream_event_value(api: Endpoint, body: &serde_json::Value) -> Vec<u8> {
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

/// [`stream_event_value`] for Laneway's own error.
pub fn stream_event(api: Endpoint, e: &ApiError) -> Vec<u8> {
    if api.anthropic() {
        return stream_event_value(api, &anthropic_value(e));
    }
    if api == Endpoint::Responses {
        let body = serde_json::from_slice(&e.to_body()).unwrap_or_default();
        return stream_event_value(api, &body);
    }
    e.to_sse_event()
}

/// `Retry-After` (whole seconds, at least 1) and `retry-after-ms`, the only place they are
/// written.
pub fn set_retry_after(h: &mut HeaderMap, after: Duration) {
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(after).max(1)),
    );
    h.insert(
        "retry-after-ms",
        HeaderValue::from(retry_after_millis(after).max(1) as u64),
    );
}

/// An upstream error answer, passed through with its status and body. It keeps the upstream's
/// content type and retry hints, and gains a `Retry-After` if a 429/503 came without one.
pub fn upstream_error(parts: http::response::Parts, body: Bytes, hint: Option<Duration>) -> Error {
    let mut r = http::Response::new(body);
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
    Error::PassThrough(Box::new(r))
}

/// `e` as the response a client of `api` reads: Laneway's refusal in that API's shape, an
/// upstream's answer as it came.
pub fn error_for(api: Endpoint, e: Error) -> http::Response<Bytes> {
    match e {
        Error::Api(e) => response_for(api, &e),
        Error::PassThrough(r) => *r,
    }
}
