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
    pub(crate) system_fingerprint: Option<&'static str>,
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
            created: Some(now()),
            model,
            system_fingerprint: Some(FINGERPRINT),
            choices: Some(choices),
            data: None,
            usage: None,
        }
    }
}

/// The `system_fingerprint` every completion carries, as OpenAI's do.
pub(crate) const FINGERPRINT: &str = "fp_laneway_mock";

/// Seconds since the Unix epoch, for `created`.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
pub(crate) struct Message<'a> {
    pub(crate) role: &'static str,
    /// `null` when the answer is a tool call, as OpenAI sends it.
    pub(crate) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
pub(crate) struct ToolCall<'a> {
    pub(crate) id: &'a str,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) function: FunctionCall<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionCall<'a> {
    pub(crate) name: &'a str,
    pub(crate) arguments: &'static str,
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
    pub(crate) embedding: Vector,
}

/// A vector as floats, or as `encoding_format: "base64"` asks: the little-endian `f32` bytes
/// in base64 (what OpenAI's SDKs request by default and decode).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

/// Embedding dimensions unless a request asks for others (`dimensions`, up to [`MAX_DIMS`]).
pub(crate) const DEFAULT_DIMS: usize = 8;
pub(crate) const MAX_DIMS: usize = 4096;

/// A unit vector that depends only on `input`: equal inputs get equal vectors, different
/// inputs different ones.
pub(crate) fn vector_for(input: &[u8], dims: usize) -> Vec<f32> {
    // FNV-1a, then a seeded generator: no dependency, stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = fastrand::Rng::with_seed(h);
    let mut v: Vec<f32> = (0..dims.max(1)).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    for x in &mut v {
        *x /= norm;
    }
    v
}

pub(crate) fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}
