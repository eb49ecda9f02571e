//! What a lane learns from its upstream's answers: cooldowns, the circuit breaker and the
//! adaptive concurrency limit.
//!
//! - **Cooldown.** A 429 with a hint, or `x-ratelimit-remaining-* = 0` with a reset time, pauses
//!   the lane until then: nobody is sent only to be refused.
//! - **Circuit.** [`FAILURES_TO_OPEN`] failures in a row open the circuit for a while (doubling up
//!   to [`MAX_OPEN`]); then one probe is let through (half-open). Its success closes the circuit,
//!   its failure opens it again.
//! - **Adaptive limit (AIMD).** The limit creeps up by `0.2 / limit` per success whose latency is
//!   within twice the best seen, and is cut by a fifth on overload (429, 503) or when latency climbs
//!   past that. The slow increase keeps the probing of an unknown capacity to a few refusals
//!   per hundred requests; the cut backs off before a provider starts refusing in earnest.

use std::time::Duration;

pub const FAILURES_TO_OPEN: u32 = 5;
pub const FIRST_OPEN: Duration = Duration::from_secs(2);
pub const MAX_OPEN: Duration = Duration::from_secs(60);

/// An upstream answer, as far as the lane's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Answered; `latency` is the time to the response headers.
    Success { latency: Duration },
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

/// Additive-increase, multiplicative-decrease concurrency limit.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    max: f64,
    best_latency: Option<Duration>,
}

impl Aimd {
    pub fn new(start: u32, max: u32) -> Self {
        Self {
            limit: f64::from(start.clamp(1, max.max(1))),
            max: f64::from(max.max(1)),
            best_latency: None,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.floor().max(1.0) as u32
    }

    pub fn success(&mut self, latency: Duration) {
        let best = *self.best_latency.get_or_insert(latency);
        if latency < best {
            self.best_latency = Some(latency);
        }
        // Latency far above the best seen means the upstream queues internally: back off a
        // little before it starts refusing. A floor keeps sub-millisecond noise from counting.
        if latency > best * 2 + Duration::from_millis(5) {
            self.limit = (self.limit * 0.9).max(1.0);
        } else {
            self.limit = (self.limit + 0.2 / self.limit).min(self.max);
        }
    }

    pub fn overload(&mut self) {
        self.limit = (self.limit * 0.8).max(1.0);
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

    #[test]
    fn aimd_finds_a_hidden_capacity() {
        // A simulated upstream that refuses above 6 in flight; the lane keeps it full.
        let mut a = Aimd::new(1, 1000);
        let mut refused = 0;
        let mut limits = Vec::new();
        for _ in 0..2000 {
            if a.limit() > 6 {
                refused += 1;
                a.overload();
            } else {
                a.success(Duration::from_millis(100));
            }
            limits.push(a.limit());
        }
        let tail = &limits[1000..];
        assert!(
            tail.iter().all(|&l| (4..=7).contains(&l)),
            "{:?}",
            &tail[..20]
        );
        assert!(refused * 100 / 2000 <= 2, "{refused} refusals in 2000");
    }

    #[test]
    fn rising_latency_lowers_the_limit_and_noise_does_not() {
        let mut a = Aimd::new(10, 100);
        for _ in 0..20 {
            a.success(Duration::from_millis(100));
        }
        let steady = a.limit();
        assert!(steady >= 10, "{steady}");
        // Within twice the best latency plus 5 ms: noise, the limit keeps growing.
        for _ in 0..20 {
            a.success(Duration::from_millis(190));
        }
        assert!(a.limit() >= steady);
        // Four times the best: the upstream queues internally.
        for _ in 0..10 {
            a.success(Duration::from_millis(400));
        }
        assert!(a.limit() < steady, "{} vs {steady}", a.limit());
    }
}
