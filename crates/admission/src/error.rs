//! Why admission refused a request. Each variant carries what the client needs to come back at
//! the right time; the gateway turns them into responses in one place.

use std::time::Duration;

/// Which side's limit refused: the client's key, or the upstream lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Key(String),
    Lane(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k) => write!(f, "key `{k}`"),
            Self::Lane(l) => write!(f, "lane `{l}`"),
        }
    }
}

/// Which rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    PerSecond,
    PerMinute,
    TokensPerMinute,
}

impl RateKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::PerSecond => "requests-per-second",
            Self::PerMinute => "requests-per-minute",
            Self::TokensPerMinute => "tokens-per-minute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("{scope} is over its {} limit; retry in {retry_after:?}", kind.describe())]
    RateLimited {
        scope: Scope,
        kind: RateKind,
        retry_after: Duration,
    },
    /// The request alone needs more tokens than the limit holds in a whole minute.
    #[error("this request needs about {needed} tokens but {scope} allows only {limit} per minute")]
    NeverFits {
        scope: Scope,
        needed: u64,
        limit: u64,
    },
    #[error("{scope} has all its concurrent slots in use; retry in {retry_after:?}")]
    ConcurrencyLimited { scope: Scope, retry_after: Duration },
    #[error("the queue of lane `{lane}` is full ({max_len} waiting); retry in {retry_after:?}")]
    QueueFull {
        lane: String,
        max_len: usize,
        retry_after: Duration,
    },
    #[error("waited {waited:?} in the queue without a free slot; retry in {retry_after:?}")]
    QueueTimeout {
        waited: Duration,
        retry_after: Duration,
    },
    #[error("the request's deadline passed while it waited for capacity")]
    DeadlineExceeded,
    #[error("the request was cancelled while it waited")]
    Cancelled,
    #[error("every lane for this model is cooling down; retry in {retry_after:?}")]
    NoLaneAvailable { retry_after: Duration },
    /// The limit store shared by the replicas is down and the config says to refuse then.
    #[error("the shared limit store is unavailable ({reason}); retry in {retry_after:?}")]
    StoreUnavailable {
        reason: String,
        retry_after: Duration,
    },
}

impl AdmissionError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::ConcurrencyLimited { retry_after, .. }
            | Self::QueueFull { retry_after, .. }
            | Self::QueueTimeout { retry_after, .. }
            | Self::NoLaneAvailable { retry_after }
            | Self::StoreUnavailable { retry_after, .. } => Some(*retry_after),
            Self::NeverFits { .. } | Self::DeadlineExceeded | Self::Cancelled => None,
        }
    }
}
