//! Reading just enough of an OpenAI request body, and rewriting its model name in place.
//!
//! Bodies pass through Laneway as bytes. The gateway needs a handful of fields for routing and
//! admission; [`peek`] borrows them from the body (unknown fields are skipped by the parser, not
//! built into values) and remembers where the model string sits so that [`RequestMeta::rewrite_model`]
//! can splice a new name in without re-serialising the document.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Which model endpoint a body was sent to; decides which fields are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
    /// Anthropic's Messages API (`/v1/messages`).
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
    Moderations,
    Images,
    Speech,
    /// `/v1/audio/transcriptions`: a multipart form with the audio file.
    Transcriptions,
    /// `/v1/audio/translations`: a multipart form with the audio file.
    Translations,
    /// `/v1/images/edits`: a multipart form with the image.
    ImageEdits,
}

impl Endpoint {
    /// Every endpoint, in declaration order: `ALL[e as usize] == e`.
    pub const ALL: [Endpoint; 12] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Messages,
        Self::CountTokens,
        Self::Moderations,
        Self::Images,
        Self::Speech,
        Self::Transcriptions,
        Self::Translations,
        Self::ImageEdits,
    ];

    /// The path under the lane's base URL (which already ends in `/v1` or similar).
    pub const fn upstream_suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Responses => "/responses",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
            Self::Moderations => "/moderations",
            Self::Images => "/images/generations",
            Self::Speech => "/audio/speech",
            Self::Transcriptions => "/audio/transcriptions",
            Self::Translations => "/audio/translations",
            Self::ImageEdits => "/images/edits",
        }
    }

    /// The gateway's own path for the endpoint, as Batch API files name it.
    pub const fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::Moderations => "/v1/moderations",
            Self::Images => "/v1/images/generations",
            Self::Speech => "/v1/audio/speech",
            Self::Transcriptions => "/v1/audio/transcriptions",
            Self::Translations => "/v1/audio/translations",
            Self::ImageEdits => "/v1/images/edits",
        }
    }

    /// The endpoint a Batch API `endpoint` or `url` names.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Anthropic's API: its clients read Laneway's refusals in Anthropic's error shape.
    pub const fn anthropic(self) -> bool {
        matches!(self, Self::Messages | Self::CountTokens)
    }

    /// Whether the body is a multipart form (read with [`crate::form::peek_form`]), not JSON.
    pub const fn form(self) -> bool {
        matches!(
            self,
            Self::Transcriptions | Self::Translations | Self::ImageEdits
        )
    }

    /// Whether the upstream reports usage at the end of a stream only when asked
    /// (`stream_options.include_usage`); the other APIs always report it.
    pub const fn usage_on_request(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }

    const fn body_field(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages | Self::CountTokens => "messages",
            Self::Completions | Self::Images => "prompt",
            Self::Embeddings | Self::Responses | Self::Moderations | Self::Speech => "input",
            Self::Transcriptions | Self::Translations | Self::ImageEdits => "file",
        }
    }
}

/// What Laneway needs to know about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    pub model: String,
    /// Byte range of the model's JSON string (quotes included) inside the body.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// `max_tokens` or `max_completion_tokens`, when the client set one.
    pub max_tokens: Option<u64>,
    /// Whether the client itself asked for a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Size in bytes of the prompt field, the basis of the token estimate.
    pub prompt_bytes: usize,
    /// Responses API: the response this one continues, which lives on the lane that made it.
    pub previous_response_id: Option<String>,
    /// A multipart form body: the model is a form field's raw text, not a JSON string.
    pub form: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    #[error("the request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the request body must be a JSON object")]
    NotObject,
    /// Valid JSON that cannot be a request, such as a field given twice.
    #[error("the request body is not a valid request: {0}")]
    NotRequest(String),
    #[error("the body must be multipart/form-data with a boundary, as this endpoint takes a file")]
    NotForm,
    #[error("missing required parameter `{0}`")]
    Missing(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

impl PeekError {
    /// The parameter the error is about, for the envelope's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::Missing(p) => Some(p),
            Self::WrongType { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Peek<'a> {
    // Scalars are read raw and typed one by one below, so that a wrong type gets an error that
    // names its field; serde's own message names only the expected type and the position.
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions<'a> {
    #[serde(borrow)]
    include_usage: Option<&'a RawValue>,
}

/// A field read raw, as type `T`, or the error naming it and what it must be.
fn typed<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    field: &'static str,
    expected: &'static str,
) -> Result<Option<T>, PeekError> {
    raw.map(|r| serde_json::from_str(r.get()))
        .transpose()
        .map_err(|_| PeekError::WrongType { field, expected })
}

/// Reads the routing and admission fields of a request body.
pub fn peek(endpoint: Endpoint, body: &[u8]) -> Result<RequestMeta, PeekError> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"{") {
        return Err(
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                PeekError::NotObject
            } else {
                PeekError::NotJson(first_json_error(body))
            },
        );
    }
    // Every field is read raw, so a data error here is valid JSON that no request can be: a
    // field given twice.
    let p: Peek<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            PeekError::NotRequest(e.to_string())
        } else {
            PeekError::NotJson(e.to_string())
        }
    })?;
    let raw_model = p.model.ok_or(PeekError::Missing("model"))?;
    let model: String =
        serde_json::from_str(raw_model.get()).map_err(|_| PeekError::WrongType {
            field: "model",
            expected: "a string",
        })?;
    if model.is_empty() {
        return Err(PeekError::Missing("model"));
    }
    let prompt = match endpoint.body_field() {
        "messages" => p.messages,
        "prompt" => p.prompt,
        _ => p.input,
    };
    let prompt = prompt.ok_or(PeekError::Missing(endpoint.body_field()))?;
    if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
        && !prompt.get().starts_with('[')
    {
        return Err(PeekError::WrongType {
            field: "messages",
            expected: "an array of messages",
        });
    }
    const FLAG: &str = "true or false";
    const COUNT: &str = "a non-negative integer";
    let stream = typed(p.stream, "stream", FLAG)?;
    let max_tokens = typed(p.max_tokens, "max_tokens", COUNT)?;
    let max_completion = typed(p.max_completion_tokens, "max_completion_tokens", COUNT)?;
    let max_output = typed(p.max_output_tokens, "max_output_tokens", COUNT)?;
    let previous_response_id: Option<String> =
        typed::<Option<String>>(p.previous_response_id, "previous_response_id", "a string")?
            .flatten();
    let options: Option<StreamOptions<'_>> =
        typed(p.stream_options, "stream_options", "an object")?;
    let include_usage = typed(
        options.and_then(|o| o.include_usage),
        "stream_options.include_usage",
        FLAG,
    )?;
    let start = offset_in(body, raw_model.get().as_bytes());
    Ok(RequestMeta {
        model,
        model_span: start..start + raw_model.get().len(),
        stream: stream.unwrap_or(false),
        max_tokens: max_completion.or(max_output).or(max_tokens),
        include_usage: include_usage.unwrap_or(false),
        prompt_bytes: prompt.get().len(),
        previous_response_id,
        form: false,
    })
}

fn first_json_error(body: &[u8]) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => e.to_string(),
        Ok(_) => "expected a JSON object".into(),
    }
}

/// Where `part`, a sub-slice borrowed from `whole`, starts. Both come from the same allocation,
/// so the address difference is the offset.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

impl RequestMeta {
    /// A rough token estimate for admission: about four bytes of JSON per token. It is settled
    /// against the upstream's reported `usage` when the response ends.
    pub fn prompt_token_estimate(&self) -> u64 {
        (self.prompt_bytes as u64).div_ceil(4)
    }

    /// Returns the body with the model name replaced, copying the body once; the original body is
    /// returned untouched (no copy) when the name is the same.
    pub fn rewrite_model(&self, body: &Bytes, new_model: &str) -> Bytes {
        if new_model == self.model {
            return body.clone();
        }
        let quoted = if self.form {
            // A form field holds the name as it is; a line break would end the part.
            if new_model.contains(['\r', '\n']) {
                return body.clone();
            }
            new_model.to_owned()
        } else {
            serde_json::to_string(new_model).unwrap_or_default()
        };
        let mut out = BytesMut::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        out.freeze()
    }

    /// Returns the body with `stream_options.include_usage = true` added, so the upstream reports
    /// usage at the end of a stream even when the client did not ask for it (token limits,
    /// metrics and the request log need it). A body without `stream_options` (the usual case)
    /// gets the member spliced in before its closing brace, without parsing the prompt again.
    pub fn with_stream_usage(body: &Bytes) -> Bytes {
        const MEMBER: &[u8] = br#","stream_options":{"include_usage":true}"#;
        let end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        let named = memchr::memmem::find(body, b"\"stream_options\"").is_some();
        if !named && body.get(end) == Some(&b'}') {
            let mut out = BytesMut::with_capacity(body.len() + MEMBER.len());
            out.extend_from_slice(&body[..end]);
            out.extend_from_slice(MEMBER);
            out.extend_from_slice(&body[end..]);
            return out.freeze();
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        else {
            return body.clone();
        };
        let opts = v
            .entry("stream_options")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        serde_json::to_vec(&v)
            .map(Bytes::from)
            .unwrap_or_else(|_| body.clone())
    }
}

#[cfg(test)]
mod tests;
