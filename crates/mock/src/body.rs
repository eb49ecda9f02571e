//! Response bodies: whole JSON documents, or SSE streams paced token by token.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::stats::InFlight;
use crate::wire::{
    Answer, Choice, Delta, Embedding, FunctionCall, Message, ToolCall, Vector, WireUsage,
};

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

pub(crate) fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

pub(crate) fn content(tokens: u32) -> String {
    (0..tokens).map(word).collect()
}

fn to_vec(v: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Plain structs of strings and numbers always serialise.
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out
}

/// What a whole answer says, decided from the request.
pub struct Shape {
    pub kind: Kind,
    /// Unique per answer: the source of the answer's id.
    pub id: u64,
    pub model: String,
    pub output: u32,
    pub usage: Usage,
    /// `finish_reason` of every choice: `stop`, `length` (max_tokens cut it) or `tool_calls`.
    pub finish: &'static str,
    /// Choices to return (`n`).
    pub choices: u32,
    /// The content is a JSON object (`response_format` asked for JSON).
    pub json_mode: bool,
    /// The answer calls this tool instead of speaking (`tool_choice` required or named).
    pub tool: Option<String>,
    /// Embeddings: one per input.
    pub vectors: Vec<crate::wire::Vector>,
}

/// A whole JSON answer.
pub fn json(shape: &Shape) -> Response {
    let body = json_bytes(shape);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from(body),
    )
        .into_response()
}

fn json_bytes(shape: &Shape) -> Vec<u8> {
    let words = content(shape.output);
    let text = if shape.json_mode {
        serde_json::json!({ "answer": words.trim() }).to_string()
    } else {
        words
    };
    let model = shape.model.as_str();
    match shape.kind {
        Kind::Chat => {
            let id = format!("chatcmpl-{:024x}", shape.id);
            let call_id = format!("call_{:024x}", shape.id);
            let choices: Vec<Choice<'_>> = (0..shape.choices.max(1))
                .map(|index| {
                    let message = Message {
                        role: "assistant",
                        content: shape.tool.is_none().then_some(text.as_str()),
                        tool_calls: shape.tool.as_deref().map(|name| {
                            [ToolCall {
                                id: &call_id,
                                kind: "function",
                                function: FunctionCall {
                                    name,
                                    arguments: "{}",
                                },
                            }]
                        }),
                    };
                    let mut c = Choice::chat(Some(message), None, Some(shape.finish));
                    c.index = index;
                    c
                })
                .collect();
            let mut a = Answer::new("chat.completion", &id, model, choices);
            a.usage = Some(shape.usage.wire());
            to_vec(&a, 320 + text.len() * shape.choices.max(1) as usize)
        }
        Kind::Text => {
            let id = format!("cmpl-{:024x}", shape.id);
            let choices: Vec<Choice<'_>> = (0..shape.choices.max(1))
                .map(|index| {
                    let mut c = Choice::text(&text, Some(shape.finish));
                    c.index = index;
                    c
                })
                .collect();
            let mut a = Answer::new("text_completion", &id, model, choices);
            a.usage = Some(shape.usage.wire());
            to_vec(&a, 320 + text.len() * shape.choices.max(1) as usize)
        }
        Kind::Embedding => embeddings_bytes(shape, model),
    }
}

fn embeddings_bytes(shape: &Shape, model: &str) -> Vec<u8> {
    let data: Vec<Embedding> = shape
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding",
            index,
            embedding: match v {
                Vector::Floats(f) => Vector::Floats(f.clone()),
                Vector::Base64(b) => Vector::Base64(b.clone()),
            },
        })
        .collect();
    let n = data.len();
    let a: Answer<'_, ()> = Answer {
        id: None,
        object: "list",
        created: None,
        model,
        system_fingerprint: None,
        choices: None,
        data: Some(data),
        usage: Some(WireUsage {
            prompt_tokens: shape.usage.prompt,
            completion_tokens: None,
            total_tokens: shape.usage.prompt,
        }),
    };
    to_vec(&a, 128 + 160 * n.max(1))
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
    finish_reason: &'static str,
) -> Option<Bytes> {
    let (id, object) = match kind {
        Kind::Chat => (format!("chatcmpl-{n:024x}"), "chat.completion.chunk"),
        _ => (format!("cmpl-{n:024x}"), "text_completion"),
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
        i if i == finish => Some(frame(Some(choice(None, Some(finish_reason))), None)),
        i if i == finish + 1 && usage.is_some() => Some(frame(None, usage)),
        i if i == finish + 1 || (i == finish + 2 && usage.is_some()) => {
            Some(Bytes::from_static(b"data: [DONE]\n\n"))
        }
        _ => None,
    }
}

struct StreamState {
    finish: &'static str,
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
    shape: Shape,
    tokens_per_second: f64,
    include_usage: bool,
    guard: InFlight,
) -> Response {
    let pace = (tokens_per_second > 0.0).then(|| crate::secs(1.0 / tokens_per_second));
    let Shape {
        kind,
        id: n,
        model,
        output,
        usage,
        finish,
        ..
    } = shape;
    let usage = include_usage.then_some(usage);
    let state = StreamState {
        finish,
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
        let Some(bytes) = chunk(
            st.kind, st.n, &st.model, st.output, st.usage, st.i, st.finish,
        ) else {
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

    fn shape(kind: Kind) -> Shape {
        Shape {
            kind,
            id: 7,
            model: "m".into(),
            output: 2,
            usage: Usage {
                prompt: 3,
                completion: 2,
            },
            finish: "stop",
            choices: 1,
            json_mode: false,
            tool: None,
            vectors: Vec::new(),
        }
    }

    fn parsed(s: &Shape) -> serde_json::Value {
        serde_json::from_slice(&json_bytes(s)).unwrap()
    }

    #[test]
    fn whole_answers_have_openai_shapes() {
        let chat = parsed(&shape(Kind::Chat));
        assert_eq!(chat["id"], format!("chatcmpl-{:024x}", 7));
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["model"], "m");
        assert_eq!(chat["system_fingerprint"], "fp_laneway_mock");
        assert!(chat["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
        assert_eq!(chat["choices"][0]["message"]["content"], " Laneway keeps");
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        assert!(chat["choices"][0].get("logprobs").is_none());
        assert_eq!(chat["usage"]["total_tokens"], 5);

        let text = parsed(&shape(Kind::Text));
        assert_eq!(text["object"], "text_completion");
        assert_eq!(text["choices"][0]["text"], " Laneway keeps");
        assert!(text["choices"][0]["logprobs"].is_null());
        assert!(text["choices"][0].get("message").is_none());
        assert_eq!(text["usage"]["completion_tokens"], 2);

        let mut e = shape(Kind::Embedding);
        e.vectors = vec![
            Vector::Floats(crate::wire::vector_for(b"a", 8)),
            Vector::Floats(crate::wire::vector_for(b"b", 8)),
            Vector::Base64(crate::wire::base64_f32(&[1.0])),
        ];
        let emb = parsed(&e);
        assert_eq!(emb["object"], "list");
        assert_eq!(emb["data"].as_array().unwrap().len(), 3);
        assert_eq!(emb["data"][2]["index"], 2);
        assert_ne!(emb["data"][0]["embedding"], emb["data"][1]["embedding"]);
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(emb["data"][2]["embedding"], "AACAPw==");
        assert_eq!(
            emb["usage"],
            serde_json::json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert!(emb.get("choices").is_none() && emb.get("id").is_none());
    }

    #[test]
    fn choices_tools_and_json_mode_follow_the_request() {
        let mut s = shape(Kind::Chat);
        s.choices = 2;
        s.finish = "length";
        let two = parsed(&s);
        assert_eq!(two["choices"].as_array().unwrap().len(), 2);
        assert_eq!(two["choices"][1]["index"], 1);
        assert_eq!(two["choices"][1]["finish_reason"], "length");
        s.choices = 1;
        s.json_mode = true;
        let content = parsed(&s)["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let v: serde_json::Value = serde_json::from_str(&content).unwrap();
        assert_eq!(v["answer"], "Laneway keeps");
        s.tool = Some("get_weather".into());
        s.finish = "tool_calls";
        let call = parsed(&s);
        let m = &call["choices"][0]["message"];
        assert!(m["content"].is_null());
        assert_eq!(m["tool_calls"][0]["type"], "function");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(call["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn stream_ends_with_usage_then_done() {
        let u = Some(Usage {
            prompt: 3,
            completion: 2,
        });
        let all: Vec<String> = (0..10)
            .map_while(|i| chunk(Kind::Chat, 1, "m", 2, u, i, "length"))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(all.len(), 6, "{all:?}");
        assert!(all[0].contains("\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"));
        assert!(all[1].contains("\"delta\":{\"content\":\" Laneway\"}"));
        assert!(all[3].contains("\"delta\":{}"));
        assert!(all[3].contains("\"finish_reason\":\"length\""));
        assert!(all[4].contains("\"total_tokens\":5") && all[4].contains("\"choices\":[]"));
        assert_eq!(all[5], "data: [DONE]\n\n");
        let without: Vec<_> = (0..10)
            .map_while(|i| chunk(Kind::Chat, 1, "m", 2, None, i, "stop"))
            .collect();
        assert_eq!(without.len(), 5);
    }
}
