//! What a lane learns from its upstream's answers: cooldowns, the circuit breaker and the
//! adaptive concurrency limit.
//!
//! - **Cooldown.** A 429 with a hint, or `x-ratelimit-remaining-* = 0` with a reset time, pauses
//!   the lane until then: nobody is sent only to be refused.
//! - **Circuit.** [`FAILURES_TO_OPEN`] failures in a row open the circuit for a while (doubling up
//!   to [`MAX_OPEN`]); then one probe is let through (half-open). Its success closes the circuit,
//!   its failure opens it again.
//! - **Adaptive limit.** See [`crate::adaptive`].

use std::time::Duration;

pub const FAILURES_TO_OPEN: u32 = 5;
pub const FIRST_OPEN: Duration = Duration::from_secs(2);
pub const MAX_OPEN: Duration = Duration::from_secs(60);

/// An upstream answer, as far as the lane's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Answered; `latency` is the time to the response headers, `headroom` the requests the
    /// upstream says are left in its window (`x-ratelimit-remaining-requests`).
    Success {
        latency: Duration,
        headroom: Option<u64>,
    },
    /// Refused for load (429 rate limit, 503); `retry_after` when the upstream said.
    Overloaded { retry_after: Option<Duration> },
    /// Its budget is spent until `reset` (`x-ratelimit-remaining-* = 0`), though it answered.
    Exhausted { reset: Duration },
    /// Failed: unreachable, 5xx, timeout.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    CoolingDown,
    Open,
}

#[derive(Debug, Clone)]
pub struct Circuit {
    failures: u32,
    open_for: Duration,
    /// The circuit opened; when the pause ends only one probe runs until an outcome is known.
    pub half_open: bool,
    pub open: bool,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            failures: 0,
            open_for: FIRST_OPEN,
            half_open: false,
            open: false,
        }
    }
}

impl Circuit {
    /// Records an outcome; returns how long to pause the lane when the circuit (re)opens.
    pub fn record(&mut self, failed: bool) -> Option<Duration> {
        if !failed {
            *self = Self::default();
            return None;
        }
        self.failures += 1;
        if self.half_open || self.failures >= FAILURES_TO_OPEN {
            let pause = self.open_for;
            self.open_for = (self.open_for * 2).min(MAX_OPEN);
            self.half_open = true;
            self.open = true;
            return Some(pause);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_after_failures_and_doubles() {
        let mut c = Circuit::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(c.record(true), None);
        }
        assert_eq!(c.record(true), Some(FIRST_OPEN));
        assert!(c.half_open);
        assert_eq!(
            c.record(true),
            Some(FIRST_OPEN * 2),
            "a failed probe reopens for longer"
        );
        assert_eq!(c.record(false), None);
        assert!(!c.half_open && !c.open);
    }
}
