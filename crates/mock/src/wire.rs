//! The shapes of the mock's answers, written straight from borrowed fields: a zero-latency mock
//! should cost its callers as little CPU as it can, since benchmarks run it beside what they
//! measure (building a `serde_json::Value` tree took about half the instructions it spent on an
//! answer, its HTTP work included).

use serde::Serialize;

#[derive(Serialize)]
pub(crate) struct WireUsage {
    pub(crate) prompt_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) total_tokens: u64,
}

#[derive(Serialize)]
pub(crate) struct Answer<'a, C> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
    pub(crate) object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<u64>,
    pub(crate) model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) choices: Option<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Vec<Embedding>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<WireUsage>,
}

impl<'a, C> Answer<'a, C> {
    pub(crate) fn new(object: &'static str, id: &'a str, model: &'a str, choices: C) -> Self {
        Self {
            id: Some(id),
            object,
            created: Some(0),
            model,
            choices: Some(choices),
            data: None,
            usage: None,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Message<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

#[derive(Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
}

/// One choice; a chat choice has `message` or `delta`, a text one `text` and `logprobs`.
#[derive(Serialize)]
pub(crate) struct Choice<'a> {
    pub(crate) index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delta: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<&'a str>,
    pub(crate) finish_reason: Option<&'static str>,
    /// Always `null` on a text choice; absent on a chat one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logprobs: Option<Option<()>>,
}

impl<'a> Choice<'a> {
    pub(crate) fn chat(
        message: Option<Message<'a>>,
        delta: Option<Delta<'a>>,
        finish: Option<&'static str>,
    ) -> Self {
        Self {
            index: 0,
            message,
            delta,
            text: None,
            finish_reason: finish,
            logprobs: None,
        }
    }

    pub(crate) fn text(text: &'a str, finish: Option<&'static str>) -> Self {
        Self {
            index: 0,
            message: None,
            delta: None,
            text: Some(text),
            finish_reason: finish,
            logprobs: Some(None),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Embedding {
    pub(crate) object: &'static str,
    pub(crate) index: usize,
    pub(crate) embedding: [f32; 8],
}

pub(crate) const VECTOR: [f32; 8] = [0.125, -0.25, 0.5, 0.0, 1.0, -1.0, 0.75, 0.0625];
