//! The HTTP surface: one router, and one middleware (`around`) that gives every request its
//! id, turns a panicking handler into a 500 and makes every error body OpenAI-shaped.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use laneway_core::wire::Endpoint;

use crate::around::around;
use crate::{admin, ops, proxy, ui, App};

async fn request_ctx(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    around(app, req, |req| next.run(req)).await
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
pub(crate) fn serve_direct(
    app: Arc<App>,
    endpoint: Endpoint,
    req: Request,
) -> impl std::future::Future<Output = Response> + Send {
    let handler_app = app.clone();
    around(app, req, move |req| {
        proxy::handle(handler_app, endpoint, req)
    })
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
}
