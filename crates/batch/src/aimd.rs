//! The run's own adaptive bound: additive increase, multiplicative decrease.
//!
//! Lanes use `laneway_admission::adaptive`, which reads each answer against how many requests
//! were at the upstream when it was sent. A run's gate cannot count that well: its items are
//! counted from before their HTTP client has a connection, and while a run ramps up most of
//! them are still connecting, so the counts run far ahead of what the upstream holds and the
//! edge rule would misread them. The slow increase here needs no counts: it probes an unknown
//! capacity with a few refusals per hundred requests; the gate's ceiling (the in-flight count
//! of the last refusal) keeps it there.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Aimd {
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
        // Within 1..=max (a u32), so the cast cannot truncate.
        self.limit.floor().clamp(1.0, self.max) as u32
    }

    pub fn success(&mut self, latency: Duration) {
        let best = *self.best_latency.get_or_insert(latency);
        if latency < best {
            self.best_latency = Some(latency);
        }
        // Latency far above the best seen means the upstream queues internally: back off a
        // little before it starts refusing. A floor keeps sub-millisecond noise from counting.
        if latency > best.saturating_mul(2) + Duration::from_millis(5) {
            self.limit = (self.limit * 0.9).max(1.0);
        } else {
            self.limit = (self.limit + 0.2 / self.limit).min(self.max);
        }
    }

    pub fn overload(&mut self) {
        self.limit = (self.limit * 0.8).max(1.0);
    }
}
