//! A lane: one upstream account or endpoint, with its concurrency limit, rate limits and FIFO
//! (fair) queue.
//!
//! All of a lane's mutable state sits behind one short-lived mutex, never held across an await
//! and never while taking another lane's lock, so lanes never contend with each other. Slots are
//! handed out in two ways: inline, by the request itself when the queue is empty and capacity is
//! free (the fast path: one lock, no task hop), or by [`Lane::dispatch`], which runs whenever a
//! slot frees, a waiter arrives, or a rate-limit timer fires, and claims waiters in fair order.
//!
//! Here: the state and slot accounting. The fast path and refusals are in `take`, the dispatcher,
//! its timer and the lessons of upstream answers in `dispatch`, and what operators see and set
//! in `operator`.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::adaptive::{Adaptive, Sent};
use crate::error::AdmissionError;
use crate::health::Circuit;
use crate::queue::FairQueue;
use crate::rates::Blocked;
use crate::rates::{RateSpec, Rates};
use crate::waiter::{Queue, Waiter as Waits};

/// A request waiting for a slot on lanes.
pub(crate) type Waiter = Waits<Lane>;
use crate::Mode;

mod dispatch;
mod operator;
mod take;

pub use operator::{Control, LaneSnapshot, LimitSource};

/// How a lane is limited. Rebuilt from the config on every (re)load.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSpec {
    pub name: String,
    /// Requests in flight at most; `None` is unlimited.
    pub max_concurrent: Option<u32>,
    pub rates: RateSpec,
    pub queue_max_len: usize,
    pub queue_timeout: Duration,
    pub on_limit: Mode,
    /// Learn the concurrency limit from the upstream's answers, up to `max_concurrent` (or
    /// [`ADAPTIVE_CEILING`] when unset).
    pub adaptive: bool,
    /// The longest an upstream's hint (Retry-After, a rate-limit reset) may pause the lane.
    pub max_pause: Duration,
}

/// The highest limit an adaptive lane without a configured maximum will try.
pub const ADAPTIVE_CEILING: u32 = 256;

/// How late a lane judges its rate limits (see [`Rates::check_ahead`]): covers the varying
/// delay between admitting a request and the upstream counting it, on loopback and in a region.
/// The largest such delay comes first: the upstream's bucket starts refilling when the first
/// request of a burst arrives, which with hundreds of new connections at once can trail its
/// admission by tens of milliseconds. It costs a tenth of a second of burst once; the steady
/// rate is unchanged. Limits without burst (tolerance of one interval) are not affected.
/// Why the fast path failed.
pub(crate) enum Busy {
    /// Paused by an operator: wait in the queue (or on a pool mate), it is not an outage.
    Held,
    /// Cooling down or open until then; `open` when the circuit is open (the upstream fails).
    Paused {
        until: Instant,
        open: bool,
    },
    Full,
    Rate(Blocked),
    Queue,
}

const UPSTREAM_JITTER: Duration = Duration::from_millis(100);

struct State {
    spec: LaneSpec,
    /// Concurrency limit in force (the configured one, or what an adaptive controller set).
    limit: u32,
    in_flight: u32,
    rates: Rates,
    queue: FairQueue<Arc<Waiter>>,
    paused_until: Option<Instant>,
    /// When the timer task should next run [`Lane::dispatch`].
    next_wake: Option<Instant>,
    /// Smoothed time a request holds a slot, for honest Retry-After estimates.
    ewma_service: Duration,
    /// Whether `ewma_service` has been measured yet (before, it is a one-second guess).
    measured: bool,
    circuit: Circuit,
    adaptive: Option<Adaptive>,
    control: Control,
    /// Paused by an operator (not an upstream cooldown): nothing new starts until resumed.
    held: bool,
}

impl State {
    /// Slots usable now: one probe while the circuit is half-open.
    fn cap(&self) -> u32 {
        if self.circuit.half_open {
            self.limit.min(1)
        } else {
            self.limit
        }
    }

    fn new_adaptive(spec: &LaneSpec) -> Option<Adaptive> {
        spec.adaptive.then(|| {
            let max = spec.max_concurrent.unwrap_or(ADAPTIVE_CEILING);
            Adaptive::new(crate::adaptive::START, max)
        })
    }

    /// Stamps a request just granted (counted in `in_flight`) for its answer's lesson.
    fn sent(&self) -> Sent {
        self.adaptive.as_ref().map_or(
            Sent {
                in_flight: self.in_flight,
                limit: self.limit,
                epoch: 0,
            },
            |a| a.sent(self.in_flight),
        )
    }

    fn configured_limit(&self) -> u32 {
        match (self.control, &self.adaptive) {
            (Control::Fixed(n), _) => n.max(1),
            (Control::Serial, _) => 1,
            (Control::Config | Control::Auto, Some(a)) => a.limit(),
            (Control::Config | Control::Auto, None) => {
                self.spec.max_concurrent.unwrap_or(UNLIMITED)
            }
        }
    }

    fn limit_source(&self) -> LimitSource {
        match self.control {
            Control::Fixed(_) | Control::Serial => LimitSource::Operator,
            Control::Auto => LimitSource::Adaptive,
            Control::Config if self.spec.adaptive => LimitSource::Adaptive,
            Control::Config => LimitSource::Config,
        }
    }

    fn pause(&mut self, until: Instant) -> bool {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
            true
        } else {
            false
        }
    }
}

pub struct Lane {
    name: String,
    state: Mutex<State>,
    /// Live waiters registered in this lane's queue (stale entries of pool mates excluded).
    queued: AtomicUsize,
    /// Requests sent upstream and not yet released (see [`crate::Permit::begin`]).
    at_upstream: AtomicU32,
    /// Smoothed time from a grant to its request being sent, in microseconds.
    send_lag_us: std::sync::atomic::AtomicU64,
    timer: Arc<Notify>,
}

const UNLIMITED: u32 = u32::MAX;

impl Lane {
    /// Creates a lane and its timer task (which ends when the lane is dropped).
    pub fn new(spec: LaneSpec) -> Arc<Self> {
        let adaptive = State::new_adaptive(&spec);
        let lane = Arc::new(Self {
            name: spec.name.clone(),
            state: Mutex::new(State {
                limit: adaptive
                    .as_ref()
                    .map_or(spec.max_concurrent.unwrap_or(UNLIMITED), Adaptive::limit),
                circuit: Circuit::default(),
                adaptive,
                in_flight: 0,
                rates: Rates::new(spec.rates),
                queue: FairQueue::default(),
                paused_until: None,
                next_wake: None,
                ewma_service: Duration::from_secs(1),
                measured: false,
                control: Control::Config,
                held: false,
                spec,
            }),
            queued: AtomicUsize::new(0),
            at_upstream: AtomicU32::new(0),
            send_lag_us: std::sync::atomic::AtomicU64::new(0),
            timer: Arc::new(Notify::new()),
        });
        Lane::spawn_timer(Arc::downgrade(&lane), lane.timer.clone());
        lane
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are still consistent
        // (every mutation is a single step), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether the lane queues or refuses when it is at its limits.
    pub fn mode(&self) -> Mode {
        self.lock().spec.on_limit
    }

    pub(crate) fn queue_limits(&self) -> (usize, Duration) {
        let st = self.lock();
        (st.spec.queue_max_len, st.spec.queue_timeout)
    }

    /// Expected wait for a newcomer behind everyone queued now.
    pub(crate) fn wait_estimate(&self) -> Duration {
        let st = self.lock();
        estimate_wait(&st, self.queued())
    }

    /// Puts a waiter in line and lets the dispatcher serve it if capacity is already free.
    pub(crate) fn enqueue(self: &Arc<Self>, w: Arc<Waiter>) {
        {
            let mut st = self.lock();
            self.queued.fetch_add(1, Ordering::AcqRel);
            st.queue.push(w.priority, w.key, w.weight, w);
            // Entries served by a pool mate linger until popped; sweep when they dominate.
            if st.queue.len() > 2 * self.queued() + 64 {
                st.queue.retain(|w| w.is_pending());
            }
        }
        self.dispatch();
    }

    /// The queue is full and a request of `key` arrives: if another key holds more of the
    /// waiting room than `key` would with this request, that key's newest waiter is refused
    /// (429 `queue_full`, with when a slot is expected) to make room. Returns whether a place
    /// was freed.
    pub(crate) fn displace_for(&self, key: crate::queue::KeyId) -> bool {
        let st = self.lock();
        let Some(victim) = st.queue.displaceable(key, |w| w.is_pending()) else {
            return false;
        };
        if !victim.claim() {
            return false;
        }
        let refusal = AdmissionError::QueueFull {
            lane: self.name.clone(),
            max_len: st.spec.queue_max_len,
            retry_after: estimate_wait(&st, self.queued()),
        };
        // A client already gone needs no answer; its place is free either way.
        let _ = victim.send(Err(refusal));
        true
    }

    /// One more request at the upstream; returns how many are there now, itself included.
    pub(crate) fn begin(&self, lag: Duration) -> u32 {
        // A smoothed value, updated without the lock: a lost update between racing senders
        // costs nothing but a sample.
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        let old = self.send_lag_us.load(Ordering::Relaxed);
        let new = old.saturating_mul(7).saturating_add(us) / 8;
        self.send_lag_us.store(new, Ordering::Relaxed);
        self.at_upstream
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1)
    }

    pub(crate) fn end(&self) {
        self.at_upstream.fetch_sub(1, Ordering::AcqRel);
    }

    /// Frees a slot held for `held` and serves the next waiter.
    pub(crate) fn release(self: &Arc<Self>, held: Duration) {
        {
            let mut st = self.lock();
            st.in_flight = st.in_flight.saturating_sub(1);
            // Smooth over about eight requests: reacts in a few completions, ignores one outlier.
            st.ewma_service = if st.measured {
                (st.ewma_service.saturating_mul(7).saturating_add(held)) / 8
            } else {
                held
            };
            st.measured = true;
        }
        self.dispatch();
    }

    /// Gives back a slot and its rate reservation that were never used.
    pub(crate) fn unclaim(self: &Arc<Self>, tokens: u64) {
        {
            let mut st = self.lock();
            st.in_flight = st.in_flight.saturating_sub(1);
            st.rates.untake(tokens);
        }
        self.dispatch();
    }

    pub(crate) fn settle_tokens(&self, reserved: u64, actual: u64) {
        self.lock()
            .rates
            .settle_tokens(Instant::now(), reserved, actual);
    }
}

/// Expected time until `ahead + 1` slots have freed: on a busy lane a slot frees every
/// `service time / slots in use`, so the request behind `ahead` others waits `ahead + 1` of
/// those intervals. Saturating: a long queue behind a slow lane cannot overflow it.
fn estimate_wait(st: &State, ahead: usize) -> Duration {
    let slots = st.limit.min(st.in_flight.max(1)).max(1);
    let interval = st.ewma_service / slots;
    let n = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    interval.saturating_mul(n).max(Duration::from_millis(1))
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Wakes the timer task so it sees the lane is gone and ends.
        self.timer.notify_one();
    }
}

impl Queue for Lane {
    fn forget_waiter(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}
