//! A request waiting for a slot. One waiter may stand in the queues of several lanes of a pool;
//! the first lane with capacity claims it, the others find it stale and skip it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::adaptive::Sent;
use crate::error::AdmissionError;
use crate::queue::KeyId;

/// A queue a waiter stands in (a lane), told when the waiter leaves every queue at once.
pub trait Queue {
    fn forget_waiter(&self);
}

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

/// A lane with a slot and rate taken, and where the request stands on it.
pub type Granted<L> = (Arc<L>, Sent);
/// What a lane hands a claimed waiter.
pub type Grant<L> = Result<Granted<L>, AdmissionError>;

pub struct Waiter<L> {
    state: AtomicU8,
    tx: Mutex<Option<oneshot::Sender<Grant<L>>>>,
    pub tokens: u64,
    pub key: KeyId,
    pub priority: i32,
    pub weight: u32,
    pub enqueued_at: Instant,
    /// Opaque id of the request, for the admin view.
    pub tag: u64,
    /// Every lane whose queue holds this waiter, so each can stop counting it once it is served.
    pub lanes: Vec<Arc<L>>,
}

impl<L: Queue> Waiter<L> {
    pub fn new(
        tokens: u64,
        key: KeyId,
        priority: i32,
        weight: u32,
        tag: u64,
        lanes: Vec<Arc<L>>,
    ) -> (Arc<Self>, oneshot::Receiver<Grant<L>>) {
        let (tx, rx) = oneshot::channel();
        let w = Self {
            state: AtomicU8::new(PENDING),
            tx: Mutex::new(Some(tx)),
            tokens,
            key,
            priority,
            weight,
            enqueued_at: Instant::now(),
            tag,
            lanes,
        };
        (Arc::new(w), rx)
    }

    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    fn leave(&self, to: u8) -> bool {
        let won = self
            .state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            for lane in &self.lanes {
                lane.forget_waiter();
            }
        }
        won
    }

    /// A lane takes this waiter. Exactly one caller of `claim` or `abandon` wins.
    pub fn claim(&self) -> bool {
        self.leave(CLAIMED)
    }

    /// The client gave up (timeout, cancel, disconnect).
    pub fn abandon(&self) -> bool {
        self.leave(ABANDONED)
    }

    /// Delivers the grant to the client; gives it back if the client is gone.
    pub fn send(&self, grant: Grant<L>) -> Result<(), Grant<L>> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        match tx {
            Some(tx) => tx.send(grant),
            None => Err(grant),
        }
    }
}
