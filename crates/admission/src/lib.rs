//! Admission control for Laneway: who may send a request upstream, on which lane, and when.
//!
//! It knows nothing of HTTP. The gateway, the batch runner and library users all call
//! [`acquire`] with a key, a pool of lanes and a token estimate, and get a [`Permit`] (or a
//! typed [`AdmissionError`] carrying an honest retry hint). Time comes from tokio, so every
//! limit, queue and timeout is tested with paused time.
//!
//! # Layout
//! - [`gcra`]: the one rate algorithm (per second with burst, per minute, tokens per minute).
//! - [`rates`]: the three rate limits of a scope, taken all-or-nothing.
//! - [`queue`]: the fair queue (priority classes, weighted virtual time per key, FIFO per key).
//! - [`lane`]: a lane's slots, rates, queue and dispatcher.
//! - [`health`]: what upstream answers teach a lane: cooldowns and the circuit.
//! - [`adaptive`]: the adaptive concurrency limit, learned from refusals, latency and headers.
//! - [`key`]: a client key's limits, in reject or queue mode.
//! - `waiter`: a queued request, possibly waiting on several lanes of a pool at once.
//! - [`permit`]: the RAII permit.
//! - [`error`]: why a request was refused.

pub mod adaptive;
pub mod error;
pub mod gcra;
pub mod health;
pub mod key;
pub mod lane;
pub mod permit;
pub mod queue;
pub mod rates;
pub mod shared;
mod waiter;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use adaptive::Sent;
pub use error::{AdmissionError, RateKind, Scope};
pub use health::{Feedback, Health};
pub use key::{Key, KeyPermit, KeySpec, KeyUsage};
pub use lane::{Control, Lane, LaneSnapshot, LaneSpec, LimitSource};
pub use permit::{Permit, SharedHold};
pub use rates::RateSpec;

/// What to do when a limit is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Reject,
    Queue,
}

/// One request asking for capacity.
pub struct Ask<'a> {
    pub key: &'a Arc<Key>,
    /// Effective priority: the key's, possibly lowered by the request.
    pub priority: i32,
    /// Prompt estimate plus the completion budget, reserved against token limits.
    pub tokens: u64,
    /// End-to-end deadline of the request.
    pub deadline: Instant,
    pub cancel: &'a CancellationToken,
    /// The request's tag in the gateway's table, shown by queue inspection.
    pub tag: u64,
}

/// Admits a request: first its key's limits, then a slot on the pool's lane with the most
/// headroom, waiting in the lanes' queues if every lane is busy.
pub async fn acquire(lanes: &[Arc<Lane>], ask: Ask<'_>) -> Result<Permit, AdmissionError> {
    // A request larger than every lane's token limit would wait forever: refuse it now.
    if !lanes.iter().any(|l| l.fits(ask.tokens).is_ok()) {
        return Err(match lanes.first() {
            Some(l) => l
                .fits(ask.tokens)
                .err()
                .unwrap_or(AdmissionError::Cancelled),
            None => AdmissionError::NoLaneAvailable {
                retry_after: Duration::from_secs(1),
            },
        });
    }
    let key = ask.key.admit(ask.tokens, ask.deadline, ask.cancel).await?;
    acquire_with_key(lanes, ask, key).await
}

/// Admits a request that already holds its key's share (a retry, after
/// [`Permit::into_key`]) onto a lane of the pool.
pub async fn acquire_with_key(
    lanes: &[Arc<Lane>],
    ask: Ask<'_>,
    mut key: key::KeyPermit,
) -> Result<Permit, AdmissionError> {
    let start = Instant::now();
    match admit_lane(lanes, &ask).await {
        Ok((lane, sent)) => {
            // `admit_lane` grants only lanes of `lanes`, so the search always finds it.
            let index = lanes
                .iter()
                .position(|l| Arc::ptr_eq(l, &lane))
                .unwrap_or_default();
            Ok(Permit::new(
                lane,
                index,
                key,
                ask.tokens,
                start.elapsed(),
                sent,
            ))
        }
        Err(e) => {
            key.refund_on_drop = true;
            Err(e)
        }
    }
}

/// Lanes ordered by headroom: open ones first, then most free slots, then fewest queued.
fn by_headroom(lanes: &[Arc<Lane>], now: Instant, tokens: u64) -> Vec<&Arc<Lane>> {
    if lanes.len() == 1 {
        return lanes.iter().collect();
    }
    let offset = round_robin_start(lanes.len());
    let mut scored: Vec<_> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (open, free, queued) = l.headroom(now, tokens);
            // Rotating tie-break so equal lanes share the load instead of the first taking all.
            let rot = (i + lanes.len() - offset) % lanes.len();
            (
                (
                    std::cmp::Reverse(open),
                    std::cmp::Reverse(free),
                    queued,
                    rot,
                ),
                l,
            )
        })
        .collect();
    scored.sort_by_key(|s| s.0);
    scored.into_iter().map(|(_, l)| l).collect()
}

/// Where a pool scan starts: a round-robin counter, so lanes of equal headroom take turns.
fn round_robin_start(n: usize) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % n
}

async fn admit_lane(
    lanes: &[Arc<Lane>],
    ask: &Ask<'_>,
) -> Result<waiter::Granted<Lane>, AdmissionError> {
    let now = Instant::now();
    let ordered = by_headroom(lanes, now, ask.tokens);
    let first_refusal = match take_now(&ordered, ask, now) {
        Taken::Granted(g) => return Ok(g),
        Taken::AllDown(e) => return Err(e),
        Taken::Busy(refusal) => refusal,
    };
    let open = queues_to_join(&ordered, ask, first_refusal)?;
    let timeout = open
        .iter()
        .map(|l| l.queue_limits().1)
        .max()
        .unwrap_or(Duration::ZERO);
    let queue_deadline = now + timeout;
    let (waiter, mut rx) = lane::Waiter::new(
        ask.tokens,
        ask.key.id,
        ask.priority,
        ask.key.spec().weight,
        ask.tag,
        open.clone(),
    );
    // Dropping this guard (timeout, cancel, or the client going away) leaves every queue at once.
    let guard = LeaveOnDrop {
        waiter: &waiter,
        rx: &mut rx,
        tokens: ask.tokens,
        done: false,
    };
    for lane in &open {
        lane.enqueue(waiter.clone());
    }
    guard
        .wait(queue_deadline, ask.deadline, ask.cancel, &open)
        .await
}

/// What trying every lane at once gave.
enum Taken {
    Granted(waiter::Granted<Lane>),
    /// Every lane is down for this request: say so now rather than wait.
    AllDown(AdmissionError),
    /// Busy; the first lane's refusal, for when the request may not queue.
    Busy(Option<AdmissionError>),
}

/// A slot on the first lane (in headroom order) that has one now.
fn take_now(ordered: &[&Arc<Lane>], ask: &Ask<'_>, now: Instant) -> Taken {
    let mut first_refusal = None;
    // A lane is down for this request when its circuit is open, or when it cools down past the
    // time the request could wait. When every lane is down, waiting would only hide the outage:
    // say so at once (the gateway then tries the route's fallbacks), with when the first lane
    // reopens. A short cooldown is simply waited out in the queue.
    let longest_wait = ordered
        .iter()
        .map(|l| l.queue_limits().1)
        .max()
        .unwrap_or(Duration::ZERO);
    let wait_until = ask.deadline.min(now + longest_wait);
    let mut all_down: Option<Instant> = Some(now + Duration::from_secs(86_400));
    for lane in ordered {
        match lane.try_take(now, ask.tokens) {
            Ok(sent) => return Taken::Granted((Arc::clone(*lane), sent)),
            Err(busy) => {
                all_down = match (&busy, all_down) {
                    (lane::Busy::Paused { until, open }, Some(min))
                        if *open || *until > wait_until =>
                    {
                        Some(min.min(*until))
                    }
                    _ => None,
                };
                if first_refusal.is_none() {
                    first_refusal = Some(lane.refusal(busy, now, ask.tokens));
                }
            }
        }
    }
    match all_down {
        Some(until) => Taken::AllDown(AdmissionError::NoLaneAvailable {
            retry_after: until - now,
        }),
        None => Taken::Busy(first_refusal),
    }
}

/// The lanes whose queues the request joins: those that queue, fit it, and have room (or give
/// a place up to it: a full queue refuses whoever holds more than its share).
fn queues_to_join(
    ordered: &[&Arc<Lane>],
    ask: &Ask<'_>,
    first_refusal: Option<AdmissionError>,
) -> Result<Vec<Arc<Lane>>, AdmissionError> {
    let queueing: Vec<Arc<Lane>> = ordered
        .iter()
        .filter(|l| l.mode() == Mode::Queue && l.fits(ask.tokens).is_ok())
        .map(|l| Arc::clone(*l))
        .collect();
    if queueing.is_empty() {
        return Err(first_refusal.unwrap_or(AdmissionError::Cancelled));
    }
    let mut open: Vec<Arc<Lane>> = queueing
        .iter()
        .filter(|l| l.queued() < l.queue_limits().0)
        .cloned()
        .collect();
    if open.is_empty() {
        // Every queue is full: a key with fewer waiting than another takes that key's newest
        // place.
        if let Some(lane) = queueing.iter().find(|l| l.displace_for(ask.key.id)) {
            open.push(Arc::clone(lane));
        }
    }
    if open.is_empty() {
        let lane = &queueing[0];
        return Err(AdmissionError::QueueFull {
            lane: lane.name().to_owned(),
            max_len: lane.queue_limits().0,
            retry_after: lane.wait_estimate(),
        });
    }
    Ok(open)
}

struct LeaveOnDrop<'a> {
    waiter: &'a Arc<lane::Waiter>,
    rx: &'a mut tokio::sync::oneshot::Receiver<waiter::Grant<Lane>>,
    tokens: u64,
    done: bool,
}

impl LeaveOnDrop<'_> {
    async fn wait(
        mut self,
        queue_deadline: Instant,
        deadline: Instant,
        cancel: &CancellationToken,
        lanes: &[Arc<Lane>],
    ) -> Result<waiter::Granted<Lane>, AdmissionError> {
        let limit = queue_deadline.min(deadline);
        let outcome = tokio::select! {
            grant = &mut *self.rx => Some(grant),
            () = tokio::time::sleep_until(limit) => None,
            () = cancel.cancelled() => None,
        };
        if let Some(grant) = outcome {
            self.done = true;
            // The sender is dropped only after a claim, so a closed channel cannot happen
            // without a grant; treat it as a cancellation to be safe.
            return grant.unwrap_or(Err(AdmissionError::Cancelled));
        }
        if !self.waiter.abandon() {
            // A lane claimed us at the same instant: take the slot after all.
            if let Ok(grant) = self.rx.try_recv() {
                self.done = true;
                return grant;
            }
        }
        self.done = true;
        Err(if cancel.is_cancelled() {
            AdmissionError::Cancelled
        } else if deadline <= queue_deadline {
            AdmissionError::DeadlineExceeded
        } else {
            let waited = Instant::now() - self.waiter.enqueued_at;
            let retry_after = lanes
                .iter()
                .map(|l| l.wait_estimate())
                .min()
                .unwrap_or(Duration::from_secs(1));
            AdmissionError::QueueTimeout {
                waited,
                retry_after,
            }
        })
    }
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if !self.waiter.abandon() {
            // Claimed but never received: hand the slot back.
            if let Ok(Ok((lane, _))) = self.rx.try_recv() {
                lane.unclaim(self.tokens);
            }
        }
    }
}

#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod tests;
