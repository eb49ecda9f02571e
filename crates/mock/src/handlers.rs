//! The mock's endpoints. Each completion request is admitted like a provider would: concurrency,
//! then requests per minute, then tokens per minute, then injected errors, then the latency.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Json;
use bytes::Bytes;
use serde::Deserialize;

use crate::body::{self, Kind, Shape};
use crate::bucket::{openai_duration, Taken};
use crate::state::MockState;
use crate::stats::InFlight;
use crate::wire::{base64_f32, vector_for, Vector, DEFAULT_DIMS, MAX_DIMS};
use crate::MockConfig;

pub(crate) async fn chat(State(s): State<Arc<MockState>>, body: Bytes) -> Response {
    handle(s, Kind::Chat, body).await
}

pub(crate) async fn completions(State(s): State<Arc<MockState>>, body: Bytes) -> Response {
    handle(s, Kind::Text, body).await
}

pub(crate) async fn embeddings(State(s): State<Arc<MockState>>, body: Bytes) -> Response {
    handle(s, Kind::Embedding, body).await
}

pub(crate) async fn models() -> Response {
    let data: Vec<_> = ["mock-1", "mock-large", "mock-embed"]
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "laneway-mock"}))
        .collect();
    Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub(crate) async fn stats(State(s): State<Arc<MockState>>) -> Response {
    Json(s.stats.snapshot()).into_response()
}

pub(crate) async fn reset(State(s): State<Arc<MockState>>) -> Response {
    s.stats.reset();
    for b in [&s.rpm, &s.tpm].into_iter().flatten() {
        b.reset();
    }
    Json(s.stats.snapshot()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ReleaseQuery {
    n: Option<u64>,
}

/// `POST /mock/release?n=N`: lets N held requests (all without `n`) go on.
pub(crate) async fn release(
    State(s): State<Arc<MockState>>,
    Query(q): Query<ReleaseQuery>,
) -> Response {
    let released = s.release(q.n);
    let held = s.stats.held.load(Relaxed).saturating_sub(released);
    Json(serde_json::json!({"released": released, "held": held})).into_response()
}

/// `POST /mock/config {"max_concurrent": N|null, "hold": bool}`: changes a running mock.
pub(crate) async fn configure(State(s): State<Arc<MockState>>, body: Bytes) -> Response {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "send a JSON object like {\"max_concurrent\": 2, \"hold\": true}",
        );
    };
    if let Some(m) = v.get("max_concurrent") {
        match m {
            serde_json::Value::Null => s.set_max_concurrent(None),
            m => match m.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => s.set_max_concurrent(Some(n)),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "max_concurrent must be a whole number or null",
                    )
                }
            },
        }
    }
    if let Some(h) = v.get("hold") {
        let Some(on) = h.as_bool() else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "hold must be true or false",
            );
        };
        s.set_hold(on);
    }
    Json(s.stats.snapshot()).into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct Req {
    model: Option<String>,
    pub(crate) previous_response_id: Option<String>,
    pub(crate) max_output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) stream: bool,
    // Any count the API's form allows; the answer is never longer than the mock's own length.
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream_options: Option<StreamOptions>,
    pub(crate) input: Option<serde_json::Value>,
    messages: Option<Vec<MessageIn>>,
    prompt: Option<serde_json::Value>,
    pub(crate) n: Option<u64>,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<serde_json::Value>,
    response_format: Option<FormatIn>,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
}

#[derive(Deserialize)]
struct MessageIn {
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ToolIn {
    function: Option<FunctionIn>,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: String,
}

#[derive(Deserialize)]
struct FormatIn {
    #[serde(rename = "type")]
    kind: String,
}

/// Most choices one answer carries (`n`).
const MAX_CHOICES: u64 = 128;

/// Characters of text in a content value: a string, or a list of parts with `text`.
fn text_len(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.chars().count(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::Object(o) => o.get("text").map_or(0, text_len),
                other => text_len(other),
            })
            .sum(),
        _ => 0,
    }
}

impl Req {
    /// Embedding inputs, each as the bytes its vector is derived from: a string or token list
    /// is one input, a list of them is one each.
    pub(crate) fn inputs(&self) -> Vec<Vec<u8>> {
        match &self.input {
            Some(serde_json::Value::Array(items))
                if !items.is_empty() && items.iter().all(|i| i.is_string() || i.is_array()) =>
            {
                items.iter().map(|i| i.to_string().into_bytes()).collect()
            }
            Some(v) => vec![v.to_string().into_bytes()],
            None => vec![Vec::new()],
        }
    }

    /// Prompt tokens as a tokenizer would roughly count them: about four characters of text
    /// a token, plus a few per chat message for its role and framing.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .flatten()
            .map(|m| m.content.as_ref().map_or(0, text_len))
            .chain(self.prompt.iter().map(text_len))
            .chain(self.input.iter().map(text_len))
            .sum();
        let framing = self.messages.as_ref().map_or(0, |m| 4 * m.len() as u64 + 3);
        (chars as u64).div_ceil(4) + framing
    }

    /// The tool the answer must call: the one `tool_choice` names, or the first tool when it
    /// says `"required"`.
    fn forced_tool(&self) -> Option<String> {
        let tools = self.tools.as_ref()?;
        match self.tool_choice.as_ref()? {
            serde_json::Value::String(s) if s == "required" => tools
                .iter()
                .find_map(|t| t.function.as_ref())
                .map(|f| f.name.clone()),
            serde_json::Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_owned),
            _ => None,
        }
    }

    fn vectors(&self) -> Vec<Vector> {
        let dims = self.dimensions.map_or(DEFAULT_DIMS, |d| {
            usize::try_from(d).unwrap_or(MAX_DIMS).clamp(1, MAX_DIMS)
        });
        let base64 = self.encoding_format.as_deref() == Some("base64");
        self.inputs()
            .iter()
            .map(|input| {
                let v = vector_for(input, dims);
                if base64 {
                    Vector::Base64(base64_f32(&v))
                } else {
                    Vector::Floats(v)
                }
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": code, "code": code, "param": null}});
    (status, Json(body)).into_response()
}

fn too_many(retry_after: Duration, code: &str, message: &str) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, code, message);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let h = r.headers_mut();
    h.insert("retry-after", HeaderValue::from(secs.max(1)));
    h.insert(
        "retry-after-ms",
        HeaderValue::from(retry_after.as_millis().max(1) as u64),
    );
    r
}

fn put_limit_headers(h: &mut HeaderMap, which: &str, t: &Taken) {
    let name = |part: &str| format!("x-ratelimit-{part}-{which}");
    if let (Ok(a), Ok(b), Ok(c)) = (
        name("limit").parse::<http::HeaderName>(),
        name("remaining").parse::<http::HeaderName>(),
        name("reset").parse::<http::HeaderName>(),
    ) {
        h.insert(a, HeaderValue::from(t.limit));
        h.insert(b, HeaderValue::from(t.remaining));
        if let Ok(v) = HeaderValue::from_str(&openai_duration(t.reset)) {
            h.insert(c, v);
        }
    }
}

/// One of the first `fail_first` answers: the scripted status, code and retry hint.
fn scripted_failure(s: &MockState) -> Response {
    let cfg = &s.cfg;
    let status = StatusCode::from_u16(cfg.fail_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    if status == StatusCode::TOO_MANY_REQUESTS {
        s.stats.rejected_429.fetch_add(1, Relaxed);
    } else {
        s.stats.errors_injected.fetch_add(1, Relaxed);
    }
    let code = cfg
        .fail_code
        .as_deref()
        .unwrap_or(if status.as_u16() == 429 {
            "rate_limit_exceeded"
        } else {
            "server_error"
        });
    let mut r = error(status, code, "scripted failure");
    if cfg.fail_retry_after_ms > 0 {
        let ms = cfg.fail_retry_after_ms;
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
        r.headers_mut()
            .insert("retry-after-ms", HeaderValue::from(ms));
    }
    r
}

/// How long an answer takes: the configured latency, jitter, and the slowdown per request in
/// flight above `slowdown_above` (an upstream queueing internally).
fn answer_latency(cfg: &MockConfig, rng: &mut fastrand::Rng, in_flight: u64) -> Duration {
    let mut latency = cfg.latency_ms as f64;
    if cfg.jitter_ms > 0 {
        latency += (rng.f64() * 2.0 - 1.0) * cfg.jitter_ms as f64;
    }
    if let Some(above) = cfg.slowdown_above {
        let extra = in_flight.saturating_sub(u64::from(above));
        latency += cfg.latency_ms as f64 * 0.1 * extra as f64;
    }
    if latency >= 1.0 {
        crate::secs(latency / 1000.0)
    } else {
        Duration::ZERO
    }
}

/// A request the mock took on: what it asked, its number and id, its in-flight guard, the
/// output it gets, and the rate-limit headers its answer carries.
pub(crate) struct Admitted {
    pub(crate) req: Req,
    pub(crate) id: u64,
    pub(crate) guard: InFlight,
    pub(crate) output: u32,
    /// The output was cut short of the mock's length by the request's own limit.
    pub(crate) cut: bool,
    pub(crate) prompt: u64,
    pub(crate) model: String,
    pub(crate) limit_headers: HeaderMap,
}

/// Admits a request as a provider would: concurrency, then requests per minute, then tokens
/// per minute, then injected errors, then the gate and the latency. `Err` is the refusal.
pub(crate) async fn admit(s: &MockState, raw: &[u8]) -> Result<Admitted, Response> {
    let req = match serde_json::from_slice::<Req>(raw) {
        Ok(req) => req,
        Err(e) => {
            s.stats.requests.fetch_add(1, Relaxed);
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the body is not a valid request: {e}"),
            ));
        }
    };
    admit_req(s, req).await
}

/// [`admit`] for a request already read (a multipart form's, which is not JSON).
pub(crate) async fn admit_req(s: &MockState, req: Req) -> Result<Admitted, Response> {
    s.stats.requests.fetch_add(1, Relaxed);
    let n = s.seq.fetch_add(1, Relaxed);
    let mut rng = fastrand::Rng::with_seed(
        s.cfg.seed.unwrap_or(0x5eed) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let cfg = &s.cfg;

    if n < cfg.fail_first {
        // Held like every other answer, so a test decides when the failure arrives.
        s.pass_gate().await;
        return Err(scripted_failure(s));
    }
    let max = Some(s.max_concurrent.load(Relaxed)).filter(|&m| m != u64::MAX);
    let Some((guard, in_flight)) = InFlight::enter(&s.stats, max) else {
        s.stats.rejected_429.fetch_add(1, Relaxed);
        let hint = Duration::from_millis(cfg.latency_ms.max(1));
        return Err(too_many(
            hint,
            "rate_limit_exceeded",
            "too many requests in flight",
        ));
    };
    let asked = req
        .max_completion_tokens
        .or(req.max_output_tokens)
        .or(req.max_tokens);
    let output = asked.map_or(cfg.output_tokens, |m| {
        u32::try_from(m).map_or(cfg.output_tokens, |m| m.min(cfg.output_tokens))
    });
    let prompt = req.prompt_tokens();
    let mut limit_headers = HeaderMap::new();
    for (bucket, which, cost) in [
        (&s.rpm, "requests", 1.0),
        (&s.tpm, "tokens", (prompt + u64::from(output)) as f64),
    ] {
        let Some(b) = bucket else { continue };
        let t = b.take(cost);
        put_limit_headers(&mut limit_headers, which, &t);
        if !t.ok {
            s.stats.rejected_429.fetch_add(1, Relaxed);
            guard.complete(false);
            let mut r = too_many(
                t.retry_after,
                "rate_limit_exceeded",
                &format!("rate limit reached for {which} per minute"),
            );
            r.headers_mut().extend(limit_headers);
            return Err(r);
        }
    }
    if cfg.error_rate > 0.0 && rng.f64() < cfg.error_rate {
        s.stats.errors_injected.fetch_add(1, Relaxed);
        guard.complete(false);
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "injected failure",
        ));
    }

    s.pass_gate().await;
    let latency = answer_latency(cfg, &mut rng, in_flight);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let model = req.model.clone().unwrap_or_else(|| "mock-1".into());
    Ok(Admitted {
        id: s.salt ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        guard,
        output,
        cut: output < cfg.output_tokens,
        prompt,
        model,
        limit_headers,
        req,
    })
}

async fn handle(s: Arc<MockState>, kind: Kind, raw: Bytes) -> Response {
    let a = match admit(&s, &raw).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let cfg = &s.cfg;
    let Admitted {
        req,
        id,
        guard,
        output,
        prompt,
        model,
        limit_headers,
        ..
    } = a;
    let tool = (kind == Kind::Chat).then(|| req.forced_tool()).flatten();
    let finish = if tool.is_some() {
        "tool_calls"
    } else if output < cfg.output_tokens {
        "length"
    } else {
        "stop"
    };
    let choices = req.n.unwrap_or(1).clamp(1, MAX_CHOICES) as u32;
    let shape = Shape {
        kind,
        id,
        model,
        output,
        usage: body::Usage {
            prompt,
            completion: u64::from(output).saturating_mul(u64::from(choices)),
        },
        finish,
        choices,
        json_mode: req
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind == "json_object" || f.kind == "json_schema"),
        tool,
        vectors: if kind == Kind::Embedding {
            req.vectors()
        } else {
            Vec::new()
        },
    };
    let mut response = if req.stream && kind != Kind::Embedding {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        body::stream(shape, cfg.tokens_per_second, include_usage, guard)
    } else {
        let r = body::json(&shape);
        guard.complete(true);
        r
    };
    response.headers_mut().extend(limit_headers);
    response
}
