//! Anthropic's Messages API as the mock serves it: whole messages, the streamed event sequence
//! (`message_start`, `content_block_*`, `ping`, `message_delta`, `message_stop`), token counts,
//! and Anthropic's own error shape, which its SDKs turn into their error classes.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};

/// What one answer says.
pub struct Answer<'a> {
    pub id: u64,
    pub model: &'a str,
    pub text: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The output was cut by `max_tokens`.
    pub cut: bool,
}

impl Answer<'_> {
    fn stop_reason(&self) -> &'static str {
        if self.cut {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    fn message(&self, done: bool) -> Value {
        json!({
            "id": format!("msg_{:024x}", self.id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": if done { json!([{"type": "text", "text": self.text}]) } else { json!([]) },
            "stop_reason": done.then(|| self.stop_reason()),
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": if done { self.output_tokens } else { 1 },
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        })
    }

    pub fn whole(&self) -> Value {
        self.message(true)
    }

    /// The streamed events, each named; `pieces` are the text deltas.
    pub fn events(&self, pieces: &[&str]) -> Vec<Bytes> {
        let mut out: Vec<(&str, Value)> = vec![
            ("message_start", json!({"message": self.message(false)})),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({})),
        ];
        for p in pieces {
            out.push((
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        out.push(("content_block_stop", json!({"index": 0})));
        out.push((
            "message_delta",
            json!({"delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                   "usage": {"output_tokens": self.output_tokens}}),
        ));
        out.push(("message_stop", json!({})));
        out.into_iter()
            .map(|(name, mut data)| {
                data["type"] = json!(name);
                Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
            })
            .collect()
    }
}

/// Anthropic's error type for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An OpenAI-shaped error body rewritten in Anthropic's shape, the status kept.
pub fn reshape_error(status: StatusCode, openai: &[u8]) -> Bytes {
    let message = serde_json::from_slice::<Value>(openai)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "the mock refused the request".to_owned());
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    Bytes::from(body.to_string())
}
