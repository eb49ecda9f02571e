//! Counters for `GET /mock/stats`. Atomics only: the mock's hot path takes no lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub rejected_429: AtomicU64,
    pub errors_injected: AtomicU64,
    pub cancelled: AtomicU64,
    /// Admitted requests waiting at the gate for a release.
    pub held: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub completed: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub rejected_429: u64,
    pub errors_injected: u64,
    pub cancelled: u64,
    /// Requests waiting at the gate. Not part of `GET /mock/stats`, whose fields are fixed;
    /// `POST /mock/release` reports it.
    #[serde(default, skip_serializing)]
    pub held: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Relaxed),
            completed: self.completed.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            rejected_429: self.rejected_429.load(Relaxed),
            errors_injected: self.errors_injected.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            held: self.held.load(Relaxed),
        }
    }

    /// Zeroes the counters. `in_flight` is live state, not a counter, so it is kept, and the
    /// high-water mark restarts from it.
    pub fn reset(&self) {
        for c in [
            &self.requests,
            &self.completed,
            &self.rejected_429,
            &self.errors_injected,
            &self.cancelled,
        ] {
            c.store(0, Relaxed);
        }
        self.max_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
    }
}

/// Counts a request as in flight until dropped. Dropped before [`InFlight::complete`] means the
/// client went away first: that is a cancellation.
pub struct InFlight {
    stats: Arc<Stats>,
    done: bool,
}

impl InFlight {
    /// Admits a request unless `max` are already in flight; returns the count with it. Refused
    /// requests are never counted, so `max_in_flight` shows what the mock really served at once.
    pub fn enter(stats: &Arc<Stats>, max: Option<u64>) -> Option<(Self, u64)> {
        let limit = max.unwrap_or(u64::MAX);
        let before = stats
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        let now = before + 1;
        stats.max_in_flight.fetch_max(now, Relaxed);
        Some((
            Self {
                stats: stats.clone(),
                done: false,
            },
            now,
        ))
    }

    /// The response went out whole (or was an answer the mock chose, like a 429).
    pub fn complete(mut self, counted: bool) {
        if counted {
            self.stats.completed.fetch_add(1, Relaxed);
        }
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
        if !self.done {
            self.stats.cancelled.fetch_add(1, Relaxed);
        }
    }
}
