//! The HTTP surface: one router and one middleware that gives every request its id, turns a
//! panicking handler into a 500 and makes every error body OpenAI-shaped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};

use crate::auth::RequestCtx;
use crate::respond::{error_response, UpstreamAnswer};
use crate::{admin, names, ops, proxy, ui, App};

/// Bytes of a framework error body kept as the message of the OpenAI-shaped replacement.
const MAX_REJECTION_TEXT: usize = 1024;

async fn request_ctx(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    around(&app, req, |req| next.run(req)).await
}

/// The OpenAI endpoint a request is for when it may skip the router: a `POST` to one of the
/// three proxied paths, exactly as the router would match it. The request path is the one
/// every client uses; the router's per-request boxes and clones cost it measurably.
pub(crate) fn direct(method: &axum::http::Method, path: &str) -> Option<Endpoint> {
    if method != axum::http::Method::POST {
        return None;
    }
    Endpoint::ALL.into_iter().find(|e| e.path() == path)
}

/// Serves a request [`direct`] picked, through the same middleware as the router's.
pub(crate) async fn serve_direct(app: Arc<App>, endpoint: Endpoint, req: Request) -> Response {
    let handler_app = app.clone();
    around(&app, req, move |req| {
        proxy::handle(handler_app, endpoint, req)
    })
    .await
}

/// What every request passes through around its handler: its id, a panic turned into a 500,
/// and every error answer made OpenAI-shaped.
async fn around<F, Fut>(app: &App, mut req: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let client_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let ctx = RequestCtx::new(client_id);
    req.extensions_mut().insert(ctx.clone());
    let count = |code: ErrorCode| {
        app.metrics
            .rejected
            .get_or_create(&crate::metrics::Reason {
                reason: std::borrow::Cow::Borrowed(code.as_str()),
            })
            .inc();
    };
    let mut resp = match guarded(handler(req)).await {
        Ok(resp) => match shape_error(resp).await {
            Shaped::Kept(r) => r,
            Shaped::Reshaped(r, code) => {
                count(code);
                r
            }
        },
        Err(()) => {
            tracing::error!(id = %ctx.id, "request handler panicked");
            count(ErrorCode::Internal);
            error_response(&ApiError::new(
                ErrorCode::Internal,
                "the gateway failed while handling this request; the failure was logged",
            ))
        }
    };
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

/// Runs a handler, catching a panic. The handler's state is dropped while the panic unwinds, so
/// whatever it owned (the request's ledger) sees `std::thread::panicking()` and can tell a panic
/// from a disconnect.
async fn guarded<F>(fut: F) -> Result<Response, ()>
where
    F: std::future::Future<Output = Response>,
{
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await
}

/// Error answers that did not come from Laneway's own error type (the web framework's
/// rejections of a bad path or query) are rewritten into the OpenAI envelope. An upstream's own
/// error body is passed on untouched.
enum Shaped {
    Kept(Response),
    /// A framework rejection rewritten, with the code it was given.
    Reshaped(Response, ErrorCode),
}

async fn shape_error(resp: Response) -> Shaped {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json || resp.extensions().get::<UpstreamAnswer>().is_some() {
        return Shaped::Kept(resp);
    }
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
    Shaped::Reshaped(out, code)
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/models", get(ops::models))
        .route("/v1/models/{id}", get(ops::model))
        .route(
            "/v1/responses/{id}",
            get(crate::responses::by_id).delete(crate::responses::by_id),
        )
        .route("/v1/responses/{id}/cancel", post(crate::responses::by_id))
        .route(
            "/v1/responses/{id}/input_items",
            get(crate::responses::by_id),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/ui", get(ui::page))
        .route("/ui/panel.js", get(ui::script))
        .route("/ui/panel.css", get(ui::style))
        .route("/admin/events", get(ui::events))
        .nest("/admin", admin::router())
        .with_state(app.clone())
        .merge(laneway_batches::router(app.batches.clone()))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(app, request_ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn plain(status: u16, text: &'static str) -> Response {
        let mut r = Response::new(Body::from(text));
        *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
        r
    }

    #[tokio::test]
    async fn framework_rejections_become_openai_errors() {
        let Shaped::Reshaped(resp, _) =
            shape_error(plain(400, "Failed to deserialize query string")).await
        else {
            panic!("a plain-text 400 is reshaped");
        };
        assert_eq!(resp.status(), 400);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["message"], "Failed to deserialize query string");
    }

    #[tokio::test]
    async fn upstream_answers_pass_untouched() {
        let mut r = plain(400, "upstream says no");
        r.extensions_mut().insert(UpstreamAnswer);
        let Shaped::Kept(resp) = shape_error(r).await else {
            panic!("an upstream's answer is kept");
        };
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"upstream says no");
    }

    #[test]
    fn only_posts_to_the_three_endpoints_skip_the_router() {
        use axum::http::Method;
        assert_eq!(
            direct(&Method::POST, "/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            direct(&Method::POST, "/v1/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(
            direct(&Method::POST, "/v1/embeddings"),
            Some(Endpoint::Embeddings)
        );
        for (method, path) in [
            (Method::GET, "/v1/chat/completions"),
            (Method::PUT, "/v1/embeddings"),
            (Method::POST, "/v1/chat/completions/"),
            (Method::POST, "/v1/chat/Completions"),
            (Method::POST, "/v1/files"),
            (Method::POST, "/v1/batches"),
        ] {
            assert_eq!(direct(&method, path), None, "{method} {path}");
        }
    }

    struct SeesPanic(Arc<AtomicBool>);
    impl Drop for SeesPanic {
        fn drop(&mut self) {
            self.0.store(std::thread::panicking(), Ordering::Release);
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_drops_its_state_while_unwinding() {
        let seen = Arc::new(AtomicBool::new(false));
        let guard = SeesPanic(seen.clone());
        let handler = async move {
            let _guard = guard;
            tokio::task::yield_now().await;
            panic!("handler bug");
        };
        assert!(guarded(handler).await.is_err());
        assert!(
            seen.load(Ordering::Acquire),
            "the state knew it was a panic"
        );
        let ok = guarded(async { plain(200, "fine") }).await;
        assert!(ok.is_ok());
    }
}
