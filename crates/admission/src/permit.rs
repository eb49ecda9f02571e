//! The permit: a lane slot, its rate reservation and the key's share, released on drop.
//!
//! The gateway keeps the permit inside the response body, so it lives exactly as long as the
//! request: it is released when the body ends, the client goes away, the deadline passes, an
//! operator stops the request, or a task panics — every path runs `Drop`.

use std::sync::Arc;

use tokio::time::Instant;

use crate::adaptive::Sent;
use crate::health::Feedback;
use crate::key::KeyPermit;
use crate::lane::Lane;

/// Capacity held in a limit store shared with other replicas, next to this process's own
/// permit. Dropping it gives the capacity back.
pub trait SharedHold: Send + Sync {
    /// Corrects the shared token reservation once the upstream reported its usage.
    fn settle_tokens(&self, reserved: u64, actual: u64);
}

pub struct Permit {
    lane: Arc<Lane>,
    /// Where the lane stands in the pool the request asked with.
    pool_index: usize,
    /// Always present; an `Option` only so that [`Permit::into_key`] can move it out.
    key: Option<KeyPermit>,
    tokens: u64,
    started: Instant,
    /// Time spent waiting for the slot.
    pub queued_for: std::time::Duration,
    /// The same request's hold in a shared store, when replicas share their limits.
    shared: Option<Box<dyn SharedHold>>,
    /// Where the request stood on the lane when it was granted (or began, once it did).
    sent: Sent,
    /// Counted among the lane's requests at the upstream (see [`Permit::begin`]).
    begun: bool,
}

impl Permit {
    pub(crate) fn new(
        lane: Arc<Lane>,
        pool_index: usize,
        key: KeyPermit,
        tokens: u64,
        queued_for: std::time::Duration,
        sent: Sent,
    ) -> Self {
        Self {
            lane,
            pool_index,
            key: Some(key),
            tokens,
            started: Instant::now(),
            queued_for,
            shared: None,
            sent,
            begun: false,
        }
    }

    /// The request is being sent upstream now. Between its grant and this moment others may
    /// have finished, so the count of requests at the upstream taken here is what its answer
    /// is judged against: a grant's count can overstate what the upstream held by the requests
    /// still on their way.
    pub fn begin(&mut self) {
        if !self.begun {
            self.begun = true;
            self.sent.in_flight = self.lane.begin(self.started.elapsed());
        }
    }

    /// Teaches the lane what the upstream answered to this request; its standing when it was
    /// sent (how many were in flight) is what lets the adaptive limit read the answer. Returns
    /// the pause the lane took, as [`Lane::feedback`] does.
    pub fn feedback(&self, fb: Feedback) -> Option<std::time::Duration> {
        self.lane.learn(fb, Some(self.sent))
    }

    /// Attaches the request's hold in a shared store: it lives and settles with this permit.
    pub fn hold_shared(&mut self, hold: Box<dyn SharedHold>, waited: std::time::Duration) {
        self.shared = Some(hold);
        self.queued_for += waited;
    }

    /// The tokens reserved for this request.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }

    /// The granted lane's position in the slice of lanes passed to [`crate::acquire`], so the
    /// caller can find its own data for the lane without a lookup.
    pub fn pool_index(&self) -> usize {
        self.pool_index
    }

    /// Releases the lane slot and keeps the key's share, for a retry on another lane: the
    /// request is still one request to its key.
    pub fn into_key(mut self) -> Option<KeyPermit> {
        self.key.take()
    }

    /// Corrects the token reservation to the upstream's reported usage: refunds what was
    /// over-estimated, charges what was under. Called once, when the response's usage is known.
    pub fn settle_tokens(&mut self, actual: u64) {
        self.lane.settle_tokens(self.tokens, actual);
        if let Some(h) = &self.shared {
            h.settle_tokens(self.tokens, actual);
        }
        if let Some(k) = &mut self.key {
            k.settle_tokens(actual);
        }
        self.tokens = actual;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.begun {
            self.lane.end();
        }
        self.lane.release(self.started.elapsed());
    }
}
