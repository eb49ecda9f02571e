//! Limits shared with other replicas, as admission sees them: a store that is asked once a
//! request holds its local permit (`laneway-store` is the Redis one). The engine holds it as a
//! [`SharedLimits`] trait object, so it knows nothing of the store behind it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{RateKind, RateSpec, SharedHold};

/// One scope's terms: a lane's or a key's name, concurrency limit in force and rates.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    pub name: &'a str,
    pub limit: Option<u32>,
    pub rates: RateSpec,
}

/// Which scope a shared limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Lane,
    Key,
}

/// What the store says of a request.
pub enum Verdict {
    /// Taken; the hold lives (and is given back) with the request's permit.
    Granted(Box<dyn SharedHold>),
    /// Every shared concurrency slot of that side is held; wait with [`SharedLimits::freed`].
    Full(Side),
    /// A shared rate refuses until `after` (`kind` is `None` for a shared cooldown).
    Wait {
        side: Side,
        kind: Option<RateKind>,
        after: Duration,
    },
    /// The store is down and serving on local limits was allowed: this replica's own rate
    /// limits passed.
    Local,
    /// The store did not answer (or is known to be down) and the config says to refuse: why.
    Down(String),
}

/// A future of the store.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store of limits shared by replicas.
pub trait SharedLimits: Send + Sync {
    /// Takes what a request needs of the lane's and the key's shared limits, or says why not.
    fn admit<'a>(
        &'a self,
        lane: Terms<'a>,
        key: Option<Terms<'a>>,
        tokens: u64,
    ) -> Pending<'a, Verdict>;
    /// Resolves when a slot of `name` on `side` may have freed anywhere in the fleet.
    fn freed<'a>(&'a self, side: Side, name: &'a str) -> Pending<'a, ()>;
    /// Pauses `lane` for every replica (an upstream's Retry-After, a spent rate budget).
    fn cool<'a>(&'a self, lane: &'a str, pause: Duration) -> Pending<'a, ()>;
}
