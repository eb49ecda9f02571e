//! What a running mock holds: its limits and counters, and the gate that holds admitted
//! requests until a test releases them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::bucket::Bucket;
use crate::stats::Stats;
use crate::MockConfig;

pub struct MockState {
    pub cfg: MockConfig,
    pub stats: Arc<Stats>,
    pub(crate) rpm: Option<Bucket>,
    pub(crate) tpm: Option<Bucket>,
    /// Numbers requests, for response ids and for per-request random streams.
    pub(crate) seq: AtomicU64,
    /// Mixed into answer ids so that two runs of the mock never hand out the same id.
    pub(crate) salt: u64,
    /// The Responses API answers this mock made, by id.
    pub(crate) responses: crate::responses::Store,
    /// In-flight limit in force (`u64::MAX`: none); tests may change it while the mock runs.
    pub(crate) max_concurrent: AtomicU64,
    /// While on, admitted requests wait at the gate until a test releases them.
    hold: AtomicBool,
    gate: Semaphore,
}

impl MockState {
    pub fn new(cfg: MockConfig) -> Self {
        Self {
            rpm: cfg.rpm.map(|r| Bucket::per_minute(r.into())),
            tpm: cfg.tpm.map(Bucket::per_minute),
            max_concurrent: AtomicU64::new(cfg.max_concurrent.map_or(u64::MAX, u64::from)),
            hold: AtomicBool::new(cfg.hold),
            gate: Semaphore::new(0),
            cfg,
            stats: Arc::default(),
            seq: AtomicU64::new(0),
            salt: fastrand::u64(..),
            responses: crate::responses::Store::default(),
        }
    }

    /// Lets up to `n` held requests (all when `None`) go on.
    pub fn release(&self, n: Option<u64>) -> u64 {
        let held = self.stats.held.load(Relaxed);
        let n = n.map_or(held, |n| n.min(held));
        self.gate.add_permits(
            usize::try_from(n)
                .unwrap_or(0)
                .min(Semaphore::MAX_PERMITS / 2),
        );
        n
    }

    /// Turns the gate on or off; turning it off releases everyone held.
    pub fn set_hold(&self, on: bool) {
        if on {
            // Permits left over from a release nobody took would let requests skip the gate.
            while let Ok(p) = self.gate.try_acquire() {
                p.forget();
            }
            self.hold.store(true, Relaxed);
        } else {
            self.hold.store(false, Relaxed);
            self.release(None);
        }
    }

    pub fn set_max_concurrent(&self, max: Option<u32>) {
        self.max_concurrent
            .store(max.map_or(u64::MAX, u64::from), Relaxed);
    }

    /// Waits at the gate while it is on.
    pub(crate) async fn pass_gate(&self) {
        if !self.hold.load(Relaxed) {
            return;
        }
        let _held = Held::enter(&self.stats);
        if let Ok(p) = self.gate.acquire().await {
            p.forget();
        }
    }
}

/// Counts a request as held at the gate until dropped (released, or its client went away).
struct Held<'a>(&'a Stats);

impl<'a> Held<'a> {
    fn enter(stats: &'a Stats) -> Self {
        stats.held.fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Relaxed);
    }
}
