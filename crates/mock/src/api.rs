//! The mock's Responses API, Anthropic Messages and the other model endpoints. Each request is
//! admitted as a completion is (concurrency, per-minute limits, injected errors, the gate, the
//! latency: [`crate::handlers::admit`]); only the answer's shape differs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::body::word;
use crate::handlers::{admit, admit_req, error, Admitted, Req};
use crate::state::MockState;
use crate::{messages, responses};

fn json_response(v: &Value) -> Response {
    let mut r = Bytes::from(v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Named SSE events, paced like completion tokens.
fn events(s: &MockState, a: Admitted, events: Vec<Bytes>) -> Response {
    let pace = (s.cfg.tokens_per_second > 0.0).then(|| crate::secs(1.0 / s.cfg.tokens_per_second));
    let guard = a.guard;
    let stream = futures_util::stream::unfold(
        (events.into_iter(), Some(guard), 0usize),
        move |(mut it, mut guard, i)| async move {
            let Some(ev) = it.next() else {
                if let Some(g) = guard.take() {
                    g.complete(true);
                }
                return None;
            };
            if let Some(p) = pace {
                if i > 0 {
                    tokio::time::sleep(p).await;
                }
            }
            Some((Ok::<_, std::convert::Infallible>(ev), (it, guard, i + 1)))
        },
    );
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.extend(a.limit_headers);
    r
}

/// The text an answer of `tokens` tokens says, and its pieces for a stream.
fn said(tokens: u32) -> (String, Vec<String>) {
    let pieces: Vec<String> = (0..tokens).map(|i| word(i).to_owned()).collect();
    (pieces.concat(), pieces)
}

pub async fn create_response(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let previous = a.req.previous_response_id.clone();
    if let Some(p) = &previous {
        if !s.responses.knows(p) {
            a.guard.complete(false);
            let mut r = error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                &format!("Previous response with id '{p}' not found."),
            );
            *r.body_mut() = Body::from(
                json!({"error": {"message": format!("Previous response with id '{p}' not found."),
                       "type": "invalid_request_error", "param": "previous_response_id",
                       "code": "previous_response_not_found"}})
                .to_string(),
            );
            return r;
        }
    }
    let (text, pieces) = said(a.output);
    let model = a.model.clone();
    let answer = responses::Answer {
        id: a.id,
        model: &model,
        text: &text,
        input_tokens: a.prompt,
        output_tokens: u64::from(a.output),
        max_output_tokens: a.req.max_output_tokens,
        previous: previous.as_deref(),
        cut: a.cut,
    };
    let whole = answer.response(true);
    s.responses
        .keep(&whole, responses::input_items(a.req.input.as_ref(), a.id));
    if a.req.stream {
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let evs = answer.events(&pieces);
        return events(&s, a, evs);
    }
    a.guard.complete(true);
    let mut r = json_response(&whole);
    r.headers_mut().extend(a.limit_headers);
    r
}

fn no_response(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No response found with id '{id}'."),
    )
}

pub async fn get_response(State(s): State<Arc<MockState>>, Path(id): Path<String>) -> Response {
    s.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match s.responses.get(&id) {
        Some(r) => json_response(&r),
        None => no_response(&id),
    }
}

pub async fn delete_response(State(s): State<Arc<MockState>>, Path(id): Path<String>) -> Response {
    s.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if s.responses.delete(&id) {
        json_response(&json!({"id": id, "object": "response", "deleted": true}))
    } else {
        no_response(&id)
    }
}

pub async fn cancel_response(State(s): State<Arc<MockState>>, Path(id): Path<String>) -> Response {
    s.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match s.responses.get(&id) {
        // Answers are complete when they are stored: only background responses can be
        // cancelled, and the mock makes none.
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Only responses created with background=true can be cancelled.",
        ),
        None => no_response(&id),
    }
}

pub async fn input_items(State(s): State<Arc<MockState>>, Path(id): Path<String>) -> Response {
    s.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match s.responses.input_items(&id) {
        Some(items) => json_response(&items),
        None => no_response(&id),
    }
}

/// An OpenAI-shaped refusal of the shared admission, in Anthropic's shape.
fn anthropic(r: Response) -> Response {
    let (mut parts, body) = r.into_parts();
    let status = parts.status;
    let stream = async move {
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        messages::reshape_error(status, &bytes)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Body::from_stream(futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(stream.await)
    }));
    Response::from_parts(parts, body)
}

pub async fn create_message(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return anthropic(r),
    };
    let (text, pieces) = said(a.output);
    let model = a.model.clone();
    let answer = messages::Answer {
        id: a.id,
        model: &model,
        text: &text,
        input_tokens: a.prompt,
        output_tokens: u64::from(a.output),
        cut: a.cut,
    };
    if a.req.stream {
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let evs = answer.events(&pieces);
        return events(&s, a, evs);
    }
    a.guard.complete(true);
    let mut r = json_response(&answer.whole());
    r.headers_mut().extend(a.limit_headers);
    r
}

pub async fn count_tokens(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    s.stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match serde_json::from_slice::<crate::handlers::Req>(&raw) {
        Ok(req) => Json(json!({"input_tokens": req.prompt_tokens()})).into_response(),
        Err(e) => anthropic(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("the body is not a valid request: {e}"),
        )),
    }
}

/// `/v1/moderations`: one result per input, never flagged.
pub async fn moderations(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let n = a.req.inputs().len();
    a.guard.complete(true);
    let result = json!({"flagged": false, "categories": {"harassment": false, "hate": false,
        "self-harm": false, "sexual": false, "violence": false},
        "category_scores": {"harassment": 0.0001, "hate": 0.0001, "self-harm": 0.0001,
        "sexual": 0.0001, "violence": 0.0001}});
    json_response(
        &json!({"id": format!("modr-{:024x}", a.id), "model": a.model,
                          "results": vec![result; n]}),
    )
}

/// A 1×1 transparent PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// `/v1/images/generations`: `n` tiny images as base64 PNG.
pub async fn images(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    a.guard.complete(true);
    let n = a.req.n.unwrap_or(1).clamp(1, 10) as usize;
    json_response(&json!({"created": crate::wire::now(),
                          "data": vec![json!({"b64_json": PNG, "revised_prompt": null}); n]}))
}

/// `/v1/audio/speech`: a short silent WAV file.
pub async fn speech(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    a.guard.complete(true);
    let samples: u32 = 800;
    let mut wav = Vec::with_capacity(44 + samples as usize * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples * 2).to_le_bytes());
    wav.resize(44 + samples as usize * 2, 0);
    let mut r = Bytes::from(wav).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    r
}

/// Admits a multipart form request: it must name a model (its file parts are not read).
async fn admit_form(s: &MockState, raw: &[u8]) -> Result<Admitted, Response> {
    if !raw.windows(12).any(|w| w == b"name=\"model\"") {
        s.stats
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model is required",
        ));
    }
    admit_req(s, Req::default()).await
}

/// `/v1/audio/transcriptions` and `/translations`: the text of the audio, as OpenAI's `json`
/// response format gives it.
pub async fn transcription(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit_form(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    a.guard.complete(true);
    let (text, _) = said(a.output);
    json_response(&json!({"text": text.trim(), "usage": {"type": "duration", "seconds": 1}}))
}

/// `/v1/images/edits`: one tiny image, as base64 PNG.
pub async fn image_edit(State(s): State<Arc<MockState>>, raw: Bytes) -> Response {
    let a = match admit_form(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    a.guard.complete(true);
    json_response(&json!({"created": crate::wire::now(), "data": [{"b64_json": PNG}]}))
}
