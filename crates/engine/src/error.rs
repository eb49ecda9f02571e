//! The one error type of a request: Laneway's own refusal (an [`ApiError`], which knows its
//! OpenAI code, status and retry hint) or an upstream's error answer passed on as it came.
//! Every error the request path meets converts into it here; [`crate::render`] turns it into
//! each form a client reads.

use bytes::Bytes;
use laneway_admission::{AdmissionError, Scope};
use laneway_core::wire::PeekError;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::UpstreamError;

#[derive(Debug)]
pub enum Error {
    Api(ApiError),
    /// An upstream's own error answer, passed to the client as it came (status, content type,
    /// retry hints and body).
    PassThrough(Box<http::Response<Bytes>>),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<PeekError> for Error {
    fn from(e: PeekError) -> Self {
        let param = e.param();
        let mut err = ApiError::new(ErrorCode::InvalidRequest, e.to_string());
        err.param = param;
        Self::Api(err)
    }
}

impl From<AdmissionError> for Error {
    fn from(e: AdmissionError) -> Self {
        let msg = e.to_string();
        let (code, advice) = match &e {
            AdmissionError::RateLimited { .. } => (
                ErrorCode::RateLimit,
                "slow down or retry after the indicated time",
            ),
            AdmissionError::NeverFits { .. } => (
                ErrorCode::RateLimit,
                "it can never fit: lower `max_tokens` or shorten the prompt",
            ),
            AdmissionError::ConcurrencyLimited {
                scope: Scope::Key(_),
                ..
            } => (
                ErrorCode::ConcurrencyLimitExceeded,
                "wait for one of your running requests to finish",
            ),
            AdmissionError::ConcurrencyLimited { .. } => (
                ErrorCode::ConcurrencyLimitExceeded,
                "retry after the indicated time",
            ),
            AdmissionError::QueueFull { .. } => (
                ErrorCode::QueueFull,
                "the gateway is saturated; retry later",
            ),
            AdmissionError::QueueTimeout { .. } => (
                ErrorCode::QueueTimeout,
                "the lane is saturated; retry later",
            ),
            AdmissionError::DeadlineExceeded => (
                ErrorCode::DeadlineExceeded,
                "raise `x-laneway-timeout` or server.request_timeout if the request needs longer",
            ),
            AdmissionError::Cancelled => (
                ErrorCode::RequestCancelled,
                "an operator cancelled it; send it again if still needed",
            ),
            AdmissionError::NoLaneAvailable { .. } => {
                (ErrorCode::NoLaneAvailable, "retry after the indicated time")
            }
            AdmissionError::StoreUnavailable { .. } => (
                ErrorCode::StoreUnavailable,
                "the gateway refuses rather than overshoot limits it cannot share; retry after the indicated time",
            ),
        };
        let mut err = ApiError::new(code, format!("{msg}; {advice}"));
        if let Some(after) = e.retry_after() {
            err = err.with_retry_after(after);
        }
        Self::Api(err)
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Self {
        let code = match e {
            UpstreamError::FirstByteTimeout(_) => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::UpstreamUnreachable,
        };
        Self::Api(ApiError::new(
            code,
            format!("{e}; check that the lane's upstream is running"),
        ))
    }
}

impl Error {
    /// The error code for logs and metrics; `upstream_<status>` for pass-through answers.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Api(e) => e.code.as_str().into(),
            Self::PassThrough(r) => format!("upstream_{}", r.status().as_u16()).into(),
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Self::Api(e) => e.status(),
            Self::PassThrough(r) => r.status().as_u16(),
        }
    }

    /// Whether sending the same request again later may succeed: rate and capacity refusals,
    /// timeouts, an unreachable upstream, and the upstream's own 408, 409, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Api(e) => e.code.retryable(),
            Self::PassThrough(r) => {
                let s = r.status().as_u16();
                matches!(s, 408 | 409 | 429) || s >= 500
            }
        }
    }
}

impl From<crate::table::Stop> for Error {
    fn from(s: crate::table::Stop) -> Self {
        match s {
            crate::table::Stop::Operator => cancelled(),
            crate::table::Stop::Deadline => deadline_exceeded(),
        }
    }
}

/// An operator stopped the request.
pub fn cancelled() -> Error {
    ApiError::new(
        ErrorCode::RequestCancelled,
        "an operator stopped this request; send it again if it is still needed",
    )
    .into()
}

/// The request's deadline passed before an answer.
pub fn deadline_exceeded() -> Error {
    ApiError::new(
        ErrorCode::DeadlineExceeded,
        "the request's deadline passed before the upstream answered; raise x-laneway-timeout or server.request_timeout if it needs longer",
    )
    .into()
}
