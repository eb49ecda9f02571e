//! Which endpoint answers which path.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::api;
use crate::handlers::*;
use crate::state::MockState;

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/responses", post(api::create_response))
        .route(
            "/v1/responses/{id}",
            get(api::get_response).delete(api::delete_response),
        )
        .route("/v1/responses/{id}/cancel", post(api::cancel_response))
        .route("/v1/responses/{id}/input_items", get(api::input_items))
        .route("/v1/messages", post(api::create_message))
        .route("/v1/messages/count_tokens", post(api::count_tokens))
        .route("/v1/moderations", post(api::moderations))
        .route("/v1/images/generations", post(api::images))
        .route("/v1/audio/speech", post(api::speech))
        .route("/v1/audio/transcriptions", post(api::transcription))
        .route("/v1/audio/translations", post(api::transcription))
        .route("/v1/images/edits", post(api::image_edit))
        .route("/mock/stats", get(stats))
        .route("/mock/reset", post(reset))
        .route("/mock/release", post(release))
        .route("/mock/config", post(configure))
        .with_state(state)
}
