//! Transport failures talking to an upstream. All of them happen before the response headers
//! arrive, so nothing has reached the client yet and a retry is safe.

use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect or TLS handshake failed: the upstream refused or is unreachable.
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not connect within {0:?}")]
    ConnectTimeout(Duration),
    /// No response headers within the lane's first-byte timeout.
    #[error("the upstream sent no response within {0:?}")]
    FirstByteTimeout(Duration),
    /// The connection broke before the response headers.
    #[error("the upstream dropped the connection before answering: {0}")]
    Dropped(String),
    #[error("the upstream URL is invalid: {0}")]
    BadUrl(String),
}

impl UpstreamError {
    /// Whether another attempt could succeed. A bad URL will stay bad.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::BadUrl(_))
    }
}
