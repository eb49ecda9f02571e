//! Response bodies: whole JSON documents, or SSE streams paced token by token.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::stats::InFlight;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
    Embedding,
}

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    fn json(self) -> serde_json::Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        })
    }
}

const WORDS: [&str; 8] = [
    " Laneway", " keeps", " every", " lane", " moving", " at", " its", " pace.",
];

fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

fn content(tokens: u32) -> String {
    (0..tokens).map(word).collect()
}

/// A whole JSON answer; `inputs` is the number of embedding inputs (one vector each).
pub fn json(kind: Kind, n: u64, model: &str, output: u32, usage: Usage, inputs: usize) -> Response {
    let v = match kind {
        Kind::Chat => json!({
            "id": format!("chatcmpl-mock-{n}"),
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content(output)},
                "finish_reason": "stop",
            }],
            "usage": usage.json(),
        }),
        Kind::Text => json!({
            "id": format!("cmpl-mock-{n}"),
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": content(output), "finish_reason": "stop", "logprobs": null}],
            "usage": usage.json(),
        }),
        Kind::Embedding => json!({
            "object": "list",
            "model": model,
            "data": (0..inputs.max(1))
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.125, -0.25, 0.5, 0.0, 1.0, -1.0, 0.75, 0.0625]}))
                .collect::<Vec<_>>(),
            "usage": {"prompt_tokens": usage.prompt, "total_tokens": usage.prompt},
        }),
    };
    axum::Json(v).into_response()
}

fn event(v: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // A `Value` always serialises.
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One SSE chunk of the response, by position: 0 is the role chunk, then one per token, then the
/// finish chunk, then the optional usage chunk, then `[DONE]`.
fn chunk(
    kind: Kind,
    n: u64,
    model: &str,
    output: u32,
    usage: Option<Usage>,
    i: u32,
) -> Option<Bytes> {
    let (id, object) = match kind {
        Kind::Chat => (format!("chatcmpl-mock-{n}"), "chat.completion.chunk"),
        _ => (format!("cmpl-mock-{n}"), "text_completion"),
    };
    let choice = |delta: Option<&str>, finish: Option<&str>| match kind {
        Kind::Chat => {
            let delta = match (i, delta) {
                (0, _) => json!({"role": "assistant", "content": ""}),
                (_, Some(d)) => json!({"content": d}),
                (_, None) => json!({}),
            };
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        }
        _ => {
            json!({"index": 0, "text": delta.unwrap_or(""), "finish_reason": finish, "logprobs": null})
        }
    };
    let frame = |choices: serde_json::Value, usage: Option<Usage>| {
        let mut v =
            json!({"id": id, "object": object, "created": 0, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u.json();
        }
        event(&v)
    };
    let finish = output + 1;
    match i {
        0 => Some(frame(json!([choice(None, None)]), None)),
        i if i < finish => Some(frame(json!([choice(Some(word(i - 1)), None)]), None)),
        i if i == finish => Some(frame(json!([choice(None, Some("stop"))]), None)),
        i if i == finish + 1 && usage.is_some() => Some(frame(json!([]), usage)),
        i if i == finish + 1 || (i == finish + 2 && usage.is_some()) => {
            Some(Bytes::from_static(b"data: [DONE]\n\n"))
        }
        _ => None,
    }
}

struct StreamState {
    kind: Kind,
    n: u64,
    model: String,
    output: u32,
    usage: Option<Usage>,
    pace: Option<Duration>,
    i: u32,
    guard: Option<InFlight>,
}

pub fn stream(
    kind: Kind,
    n: u64,
    model: String,
    output: u32,
    tokens_per_second: f64,
    usage: Option<Usage>,
    guard: InFlight,
) -> Response {
    let pace = (tokens_per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / tokens_per_second));
    let state = StreamState {
        kind,
        n,
        model,
        output,
        usage,
        pace,
        i: 0,
        guard: Some(guard),
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        let Some(bytes) = chunk(st.kind, st.n, &st.model, st.output, st.usage, st.i) else {
            if let Some(g) = st.guard.take() {
                g.complete(true);
            }
            return None;
        };
        // Tokens are paced; the role chunk goes out at once, like a real provider's first byte.
        if let Some(p) = st.pace {
            if st.i > 0 && st.i <= st.output {
                tokio::time::sleep(p).await;
            }
        }
        st.i += 1;
        Some((Ok::<_, Infallible>(bytes), st))
    });
    let mut r = Body::from_stream(s).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ends_with_usage_then_done() {
        let u = Some(Usage {
            prompt: 3,
            completion: 2,
        });
        let all: Vec<String> = (0..10)
            .map_while(|i| chunk(Kind::Chat, 1, "m", 2, u, i))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(all.len(), 6, "{all:?}");
        assert!(all[0].contains("\"role\":\"assistant\""));
        assert!(all[3].contains("\"finish_reason\":\"stop\""));
        assert!(all[4].contains("\"total_tokens\":5") && all[4].contains("\"choices\":[]"));
        assert_eq!(all[5], "data: [DONE]\n\n");
        let without: Vec<_> = (0..10)
            .map_while(|i| chunk(Kind::Chat, 1, "m", 2, None, i))
            .collect();
        assert_eq!(without.len(), 5);
    }
}
