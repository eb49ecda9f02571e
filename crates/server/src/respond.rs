//! An engine error as the server's response. What a refusal says, its status and its retry
//! headers are rendered by `laneway_engine::render`, the one place errors become answers; this
//! module only puts the rendered answer into axum's response type.
//!
//! Handlers return `Result<Response, Refusal>` and use `?`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use laneway_core::wire::Endpoint;
use laneway_core::ApiError;
use laneway_engine::{render, Error};

/// An error a handler answers with.
#[derive(Debug)]
pub struct Refusal(pub Error);

impl<E: Into<Error>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// Marks a response that carries an upstream's own error body, which the gateway passes on
/// as it is instead of reshaping it.
#[derive(Clone, Copy)]
pub struct UpstreamAnswer;

/// Marks the answer of a stream with its endpoint, so that a refusal reaching a stream that
/// started early (it waited in a queue) becomes that API's own error event.
#[derive(Clone, Copy)]
pub struct StreamOf(pub Endpoint);

/// Laneway's own error as an OpenAI-shaped response.
pub fn error_response(e: &ApiError) -> Response {
    render::response(e).map(Body::from)
}

/// `e` as the response a client of `endpoint` reads: Laneway's refusals in that API's shape
/// (Anthropic's clients read Anthropic's), an upstream's answer as it came.
pub fn respond_for(endpoint: Endpoint, e: Error) -> Response {
    let passed = matches!(e, Error::PassThrough(_));
    let mut r = render::error_for(endpoint, e).map(Body::from);
    if passed {
        r.extensions_mut().insert(UpstreamAnswer);
    }
    r
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        respond_for(Endpoint::ChatCompletions, self.0)
    }
}
