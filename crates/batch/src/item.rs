//! What goes in and what comes out: requests, responses, errors and token usage.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use laneway_core::wire::Endpoint;
use serde_json::Value;

/// One request: an OpenAI request body and the endpoint it goes to.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    pub body: Value,
}

impl Request {
    /// A request to `endpoint` (the Responses API, Anthropic's Messages, moderations, … as
    /// well as the three constructors below).
    pub fn new(endpoint: Endpoint, body: Value) -> Self {
        Self { endpoint, body }
    }

    /// A `/v1/responses` request (OpenAI's Responses API).
    pub fn response(body: Value) -> Self {
        Self::new(Endpoint::Responses, body)
    }

    /// A `/v1/messages` request (Anthropic's Messages API).
    pub fn message(body: Value) -> Self {
        Self::new(Endpoint::Messages, body)
    }

    /// A `/v1/chat/completions` request.
    pub fn chat(body: Value) -> Self {
        Self {
            endpoint: Endpoint::ChatCompletions,
            body,
        }
    }

    /// A `/v1/completions` request.
    pub fn completion(body: Value) -> Self {
        Self {
            endpoint: Endpoint::Completions,
            body,
        }
    }

    /// A `/v1/embeddings` request.
    pub fn embedding(body: Value) -> Self {
        Self {
            endpoint: Endpoint::Embeddings,
            body,
        }
    }

    pub(crate) fn streams(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

/// Tokens an upstream reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    pub(crate) fn from_body(v: &Value) -> Option<Self> {
        let u = v.get("usage").filter(|u| u.is_object())?;
        // Chat and completions say prompt/completion; the Responses and Messages APIs say
        // input/output.
        let count = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Value::as_u64);
        Some(Self {
            prompt_tokens: count("prompt_tokens", "input_tokens").unwrap_or(0),
            completion_tokens: count("completion_tokens", "output_tokens").unwrap_or(0),
        })
    }

    pub(crate) fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
    }
}

/// A successful answer.
///
/// The body is kept as the JSON text that came and parsed into a [`Value`] only when asked:
/// a program that reads one field of each of ten thousand answers, or writes them out again,
/// does not pay for ten thousand trees it never walks.
#[derive(Debug, Clone)]
pub struct Response {
    /// Valid UTF-8 JSON, checked when the answer arrived.
    raw: Bytes,
    parsed: OnceLock<Value>,
    /// A streamed item's chunks (`data:` events), in order; empty for a plain answer.
    pub chunks: Vec<Value>,
    pub usage: Option<Usage>,
    /// The id the answer carried (`x-request-id`), or the one the runner sent.
    pub request_id: String,
}

impl Response {
    /// `raw` must be JSON text; `parsed`, its tree when the caller already built one.
    pub(crate) fn new(
        raw: Bytes,
        parsed: Option<Value>,
        chunks: Vec<Value>,
        usage: Option<Usage>,
        request_id: String,
    ) -> Self {
        debug_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&raw).is_ok());
        Self {
            raw,
            parsed: parsed.map(OnceLock::from).unwrap_or_default(),
            chunks,
            usage,
            request_id,
        }
    }

    /// The response body; for a streamed item, the last chunk that carried content or usage.
    /// Parsed on first use.
    pub fn body(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }

    /// The body as owned JSON.
    pub fn into_body(self) -> Value {
        match self.parsed.into_inner() {
            Some(v) => v,
            None => serde_json::from_slice(&self.raw).unwrap_or(Value::Null),
        }
    }

    /// The body's JSON text as the upstream sent it: to store or pass it on without a parse.
    pub fn raw_body(&self) -> &str {
        std::str::from_utf8(&self.raw).unwrap_or("null")
    }
}

/// Why an item failed: the OpenAI error code and HTTP status when the upstream (or the gateway)
/// answered, or a transport problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// HTTP status; `None` when no answer came (connection failed, timed out, cancelled).
    pub status: Option<u16>,
    /// The OpenAI error `code` (`rate_limit`, `model_not_found`, …), or Laneway's own:
    /// `timeout`, `connection_error`, `cancelled`, `invalid_response`.
    pub code: String,
    pub message: String,
    /// When the upstream said to come back.
    pub retry_after: Option<Duration>,
    /// The answer's JSON body, when an answer came and was JSON.
    pub body: Option<Box<Value>>,
    /// The id the answer carried (`x-request-id`), or the one the runner sent.
    pub request_id: Option<String>,
}

impl Error {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: None,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
            body: None,
            request_id: None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{s} {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// One request's outcome, with its position in the input.
#[derive(Debug, Clone)]
pub struct Item {
    pub index: usize,
    pub result: Result<Response, Error>,
}
