//! Response bodies: whole JSON documents, or SSE streams paced token by token.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::stats::InFlight;
use crate::wire::{Answer, Choice, Delta, Embedding, Message, WireUsage, VECTOR};

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
    fn wire(self) -> WireUsage {
        WireUsage {
            prompt_tokens: self.prompt,
            completion_tokens: Some(self.completion),
            total_tokens: self.prompt.saturating_add(self.completion),
        }
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

fn to_vec(v: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Plain structs of strings and numbers always serialise.
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out
}

/// A whole JSON answer; `inputs` is the number of embedding inputs (one vector each).
pub fn json(kind: Kind, n: u64, model: &str, output: u32, usage: Usage, inputs: usize) -> Response {
    let body = json_bytes(kind, n, model, output, usage, inputs);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from(body),
    )
        .into_response()
}

fn json_bytes(
    kind: Kind,
    n: u64,
    model: &str,
    output: u32,
    usage: Usage,
    inputs: usize,
) -> Vec<u8> {
    let text = content(output);
    match kind {
        Kind::Chat => {
            let id = format!("chatcmpl-mock-{n}");
            let message = Message {
                role: "assistant",
                content: &text,
            };
            let choice = Choice::chat(Some(message), None, Some("stop"));
            let mut a = Answer::new("chat.completion", &id, model, [choice]);
            a.usage = Some(usage.wire());
            to_vec(&a, 320 + text.len())
        }
        Kind::Text => {
            let id = format!("cmpl-mock-{n}");
            let choice = Choice::text(&text, Some("stop"));
            let mut a = Answer::new("text_completion", &id, model, [choice]);
            a.usage = Some(usage.wire());
            to_vec(&a, 320 + text.len())
        }
        Kind::Embedding => {
            let data = (0..inputs.max(1))
                .map(|index| Embedding {
                    object: "embedding",
                    index,
                    embedding: VECTOR,
                })
                .collect();
            let a: Answer<'_, ()> = Answer {
                id: None,
                object: "list",
                created: None,
                model,
                choices: None,
                data: Some(data),
                usage: Some(WireUsage {
                    prompt_tokens: usage.prompt,
                    completion_tokens: None,
                    total_tokens: usage.prompt,
                }),
            };
            to_vec(&a, 128 + 96 * inputs.max(1))
        }
    }
}

fn event(v: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"data: ");
    // Plain structs of strings and numbers always serialise.
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
    let choice = |delta: Option<&'static str>, finish: Option<&'static str>| match kind {
        Kind::Chat => {
            let delta = match (i, delta) {
                (0, _) => Delta {
                    role: Some("assistant"),
                    content: Some(""),
                },
                (_, d) => Delta {
                    role: None,
                    content: d,
                },
            };
            Choice::chat(None, Some(delta), finish)
        }
        _ => Choice::text(delta.unwrap_or(""), finish),
    };
    let frame = |choices: Option<Choice<'static>>, usage: Option<Usage>| {
        let mut a = Answer::new(object, &id, model, choices.as_slice());
        a.usage = usage.map(Usage::wire);
        event(&a)
    };
    let finish = output + 1;
    match i {
        0 => Some(frame(Some(choice(None, None)), None)),
        i if i < finish => Some(frame(Some(choice(Some(word(i - 1)), None)), None)),
        i if i == finish => Some(frame(Some(choice(None, Some("stop"))), None)),
        i if i == finish + 1 && usage.is_some() => Some(frame(None, usage)),
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
    let pace = (tokens_per_second > 0.0).then(|| crate::secs(1.0 / tokens_per_second));
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

    fn parsed(kind: Kind, inputs: usize) -> serde_json::Value {
        let usage = Usage {
            prompt: 3,
            completion: 2,
        };
        serde_json::from_slice(&json_bytes(kind, 7, "m", 2, usage, inputs)).unwrap()
    }

    #[test]
    fn whole_answers_have_openai_shapes() {
        let chat = parsed(Kind::Chat, 0);
        assert_eq!(chat["id"], "chatcmpl-mock-7");
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["model"], "m");
        assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
        assert_eq!(chat["choices"][0]["message"]["content"], " Laneway keeps");
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        assert!(chat["choices"][0].get("logprobs").is_none());
        assert_eq!(chat["usage"]["total_tokens"], 5);

        let text = parsed(Kind::Text, 0);
        assert_eq!(text["object"], "text_completion");
        assert_eq!(text["choices"][0]["text"], " Laneway keeps");
        assert!(text["choices"][0]["logprobs"].is_null());
        assert!(text["choices"][0].get("message").is_none());
        assert_eq!(text["usage"]["completion_tokens"], 2);

        let emb = parsed(Kind::Embedding, 3);
        assert_eq!(emb["object"], "list");
        assert_eq!(emb["data"].as_array().unwrap().len(), 3);
        assert_eq!(emb["data"][2]["index"], 2);
        assert_eq!(emb["data"][0]["embedding"][0], 0.125);
        assert_eq!(
            emb["usage"],
            serde_json::json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert!(emb.get("choices").is_none() && emb.get("id").is_none());
    }

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
        assert!(all[0].contains("\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"));
        assert!(all[1].contains("\"delta\":{\"content\":\" Laneway\"}"));
        assert!(all[3].contains("\"delta\":{}"));
        assert!(all[3].contains("\"finish_reason\":\"stop\""));
        assert!(all[4].contains("\"total_tokens\":5") && all[4].contains("\"choices\":[]"));
        assert_eq!(all[5], "data: [DONE]\n\n");
        let without: Vec<_> = (0..10)
            .map_while(|i| chunk(Kind::Chat, 1, "m", 2, None, i))
            .collect();
        assert_eq!(without.len(), 5);
    }
}
