//! The catalogue of errors Laneway itself produces, in the OpenAI envelope
//! `{"error":{"message","type","code","param"}}`.
//!
//! Errors that come from an upstream and are not handled by the gateway are passed through
//! untouched and never pass through this type.

use std::time::Duration;

use serde::Serialize;

/// Every code a client can see from Laneway, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidApiKey,
    ModelNotAllowed,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    /// The client did not send its request body within `server.body_timeout`.
    RequestTimeout,
    RateLimit,
    ConcurrencyLimitExceeded,
    QueueFull,
    QueueTimeout,
    RequestCancelled,
    NoLaneAvailable,
    StoreUnavailable,
    UpstreamUnreachable,
    DeadlineExceeded,
    /// The disk under `[storage] path` is full: a Batch API upload or result could not be kept.
    StorageFull,
    Internal,
}

impl ErrorCode {
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidApiKey => 401,
            Self::ModelNotAllowed => 403,
            Self::ModelNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::RateLimit
            | Self::ConcurrencyLimitExceeded
            | Self::QueueFull
            | Self::QueueTimeout => 429,
            Self::Internal => 500,
            Self::UpstreamUnreachable => 502,
            Self::RequestCancelled | Self::NoLaneAvailable | Self::StoreUnavailable => 503,
            Self::DeadlineExceeded => 504,
            Self::StorageFull => 507,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::ModelNotFound => "model_not_found",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimit => "rate_limit",
            Self::ConcurrencyLimitExceeded => "concurrency_limit_exceeded",
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
            Self::RequestCancelled => "request_cancelled",
            Self::NoLaneAvailable => "no_lane_available",
            Self::StoreUnavailable => "store_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::StorageFull => "storage_full",
            Self::Internal => "internal_error",
        }
    }

    /// The code of a refusal known only by its status (a web framework's rejection of a path
    /// or a query): the code with that status where there is one, else the general one.
    pub const fn for_status(status: u16) -> Self {
        match status {
            401 => Self::InvalidApiKey,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            408 => Self::RequestTimeout,
            413 => Self::PayloadTooLarge,
            400..=499 => Self::InvalidRequest,
            _ => Self::Internal,
        }
    }

    /// Whether the same request sent again later may succeed: Laneway's capacity, rate and
    /// availability refusals and timeouts, not a request that is wrong or not allowed.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            Self::RequestTimeout
                | Self::RateLimit
                | Self::ConcurrencyLimitExceeded
                | Self::QueueFull
                | Self::QueueTimeout
                | Self::NoLaneAvailable
                | Self::StoreUnavailable
                | Self::UpstreamUnreachable
                | Self::DeadlineExceeded
                | Self::Internal
        )
    }

    /// The OpenAI `type` field, grouping codes the way OpenAI's SDKs expect.
    pub const fn kind(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "authentication_error",
            Self::ModelNotAllowed => "permission_error",
            Self::RateLimit
            | Self::ConcurrencyLimitExceeded
            | Self::QueueFull
            | Self::QueueTimeout => "rate_limit_error",
            Self::RequestCancelled
            | Self::NoLaneAvailable
            | Self::StoreUnavailable
            | Self::UpstreamUnreachable
            | Self::DeadlineExceeded
            | Self::StorageFull
            | Self::Internal => "server_error",
            _ => "invalid_request_error",
        }
    }
}

/// An error produced by Laneway: a code, a message saying what happened and what to do, and,
/// for 429 and 503, when capacity is really expected back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<&'static str>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The error as the last Server-Sent Event of a stream that cannot go on: the same
    /// envelope as [`ApiError::to_body`] in one `data:` event.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&self.to_body());
        event.extend_from_slice(b"\n\n");
        event
    }

    /// The JSON body, `{"error":{...}}`.
    pub fn to_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
            param: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        let env = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.code.kind(),
                code: self.code.as_str(),
                param: self.param,
            },
        };
        // Serialising a struct of strings into a Vec cannot fail.
        serde_json::to_vec(&env).unwrap_or_default()
    }
}

/// `Retry-After` is whole seconds, rounded up, so a client that obeys it is never early.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs();
    if after.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// `retry-after-ms`, rounded up for the same reason.
pub fn retry_after_millis(after: Duration) -> u128 {
    let ms = after.as_millis();
    if after.as_nanos() > ms * 1_000_000 {
        ms + 1
    } else {
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = ApiError::new(ErrorCode::ModelNotFound, "no route for `x`").with_param("model");
        let v: serde_json::Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["message"], "no route for `x`");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_millis(Duration::from_micros(1500)), 2);
        assert_eq!(retry_after_millis(Duration::from_millis(7)), 7);
    }
}
