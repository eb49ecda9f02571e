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

/// A wait as people read it in a message: milliseconds under a second, else whole seconds
/// rounded up (`retry in 12s`, `retry in 2m5s`), never `11.895663421s`.
pub struct Human(pub Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            return write!(f, "{}ms", ms.max(1));
        }
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        match secs {
            0..=59 => write!(f, "{secs}s"),
            60..=3599 => write!(f, "{}m{}s", secs / 60, secs % 60),
            _ => write!(f, "{}h{}m", secs / 3600, (secs / 60) % 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("{scope} is over its {} limit; retry in {}", kind.describe(), Human(*retry_after))]
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
    #[error("{scope} has all its concurrent slots in use; retry in {}", Human(*retry_after))]
    ConcurrencyLimited { scope: Scope, retry_after: Duration },
    #[error("the queue of lane `{lane}` is full ({max_len} waiting); retry in {}", Human(*retry_after))]
    QueueFull {
        lane: String,
        max_len: usize,
        retry_after: Duration,
    },
    #[error("waited {} in the queue without a free slot; retry in {}", Human(*waited), Human(*retry_after))]
    QueueTimeout {
        waited: Duration,
        retry_after: Duration,
    },
    #[error("the request's deadline passed while it waited for capacity")]
    DeadlineExceeded,
    #[error("the request was cancelled while it waited")]
    Cancelled,
    #[error("every lane for this model is cooling down; retry in {}", Human(*retry_after))]
    NoLaneAvailable { retry_after: Duration },
    /// The limit store shared by the replicas is down and the config says to refuse then.
    #[error("the shared limit store is unavailable ({reason}); retry in {}", Human(*retry_after))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_rounded_for_people() {
        let ms = Duration::from_millis;
        for (d, shown) in [
            (ms(0), "1ms"),
            (ms(250), "250ms"),
            (Duration::from_secs_f64(11.895_663_421), "12s"),
            (ms(60_000), "1m0s"),
            (ms(125_001), "2m6s"),
            (ms(7_200_000), "2h0m"),
        ] {
            assert_eq!(Human(d).to_string(), shown);
        }
        let e = AdmissionError::NoLaneAvailable {
            retry_after: Duration::from_secs_f64(11.895_663_421),
        };
        assert!(e.to_string().ends_with("retry in 12s"), "{e}");
    }
}
