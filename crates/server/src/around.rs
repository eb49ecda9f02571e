//! What every request passes through around its handler: its id, a panic turned into a 500,
//! and every error answer made OpenAI-shaped.
//!
//! Written as a future of its own rather than an `async fn` wrapping the handler: an `async
//! fn` that awaits a future it was given keeps that future's space twice (once as its argument,
//! once as the awaited state), and a request waiting in a queue is exactly such a suspended
//! future. Here the handler's future is stored once, in place; the rare answer that must be
//! reshaped (a framework rejection whose body is read) gets a box of its own.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use http_body_util::BodyExt;
use laneway_core::{ApiError, ErrorCode};

use crate::auth::RequestCtx;
use crate::respond::{error_response, UpstreamAnswer};
use crate::{names, App};

/// Bytes of a framework error body kept as the message of the OpenAI-shaped replacement.
const MAX_REJECTION_TEXT: usize = 1024;

/// Gives `req` its id and runs `handler` on it inside [`Around`].
pub(crate) fn around<F, Fut>(app: Arc<App>, mut req: Request, handler: F) -> Around<Fut>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let client_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let ctx = RequestCtx::new(client_id);
    req.extensions_mut().insert(ctx.clone());
    Around {
        app,
        ctx,
        state: State::Handler { fut: handler(req) },
    }
}

pin_project_lite::pin_project! {
    /// The handler's future with the request's id, answering a panic with a 500 and a
    /// non-OpenAI error body with an OpenAI-shaped one.
    pub(crate) struct Around<Fut> {
        app: Arc<App>,
        ctx: RequestCtx,
        #[pin]
        state: State<Fut>,
    }
}

type Reshaping = Pin<Box<dyn Future<Output = (Response, ErrorCode)> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Handler { #[pin] fut: Fut },
        Reshaping { fut: Reshaping },
        Done,
    }
}

impl<Fut: Future<Output = Response>> Future for Around<Fut> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let mut this = self.project();
        loop {
            let (resp, code) = match this.state.as_mut().project() {
                StateProj::Handler { fut } => {
                    // A panic unwinds through the handler's own state first, dropping what it
                    // owned (the request's ledger) while `std::thread::panicking()` is true,
                    // so it can tell a panic from a disconnect.
                    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(resp)) if needs_shape(&resp) => {
                            this.state.set(State::Reshaping {
                                fut: Box::pin(shape_error(resp)),
                            });
                            continue;
                        }
                        Ok(Poll::Ready(resp)) => (resp, None),
                        Err(_) => {
                            tracing::error!(id = %this.ctx.id, "request handler panicked");
                            let resp = error_response(&ApiError::new(
                                ErrorCode::Internal,
                                "the gateway failed while handling this request; the failure was logged",
                            ));
                            (resp, Some(ErrorCode::Internal))
                        }
                    }
                }
                StateProj::Reshaping { fut } => {
                    let (resp, code) = std::task::ready!(fut.as_mut().poll(cx));
                    (resp, Some(code))
                }
                // Polled after it answered: a caller bug, answered rather than panicking.
                StateProj::Done => return Poll::Pending,
            };
            this.state.set(State::Done);
            if let Some(code) = code {
                count(this.app, code);
            }
            return Poll::Ready(with_ids(resp, this.ctx));
        }
    }
}

fn count(app: &App, code: ErrorCode) {
    app.metrics
        .rejected
        .get_or_create(&crate::metrics::Reason {
            reason: std::borrow::Cow::Borrowed(code.as_str()),
        })
        .inc();
}

fn with_ids(mut resp: Response, ctx: &RequestCtx) -> Response {
    let h = resp.headers_mut();
    // Ids are checked printable ASCII or generated hex, both valid header values.
    if let Ok(own) = HeaderValue::from_str(&ctx.id) {
        let echoed = match ctx.client_id.as_deref() {
            Some(client) => HeaderValue::from_str(client).ok(),
            None => Some(own.clone()),
        };
        if let Some(v) = echoed {
            h.insert(names::X_REQUEST_ID.clone(), v);
        }
        h.insert(names::X_LANEWAY_REQUEST_ID.clone(), own);
    }
    resp
}

/// Error answers that did not come from Laneway's own error type (the web framework's
/// rejections of a bad path or query) are rewritten into the OpenAI envelope. An upstream's own
/// error body is passed on untouched.
fn needs_shape(resp: &Response) -> bool {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    resp.status().as_u16() >= 400 && !is_json && resp.extensions().get::<UpstreamAnswer>().is_none()
}

/// The OpenAI-shaped replacement of an answer [`needs_shape`] picked, with its code.
async fn shape_error(resp: Response) -> (Response, ErrorCode) {
    let status = resp.status();
    let (_, body) = resp.into_parts();
    let text = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&text).trim().to_string();
    if text.len() > MAX_REJECTION_TEXT {
        let cut = (0..=MAX_REJECTION_TEXT)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
    let code = ErrorCode::for_status(status.as_u16());
    if text.is_empty() {
        text = status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string();
    }
    let mut out = error_response(&ApiError::new(code, text));
    *out.status_mut() = status;
    (out, code)
}

#[cfg(test)]
#[path = "around_tests.rs"]
mod tests;
