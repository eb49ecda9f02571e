//! A lane: one upstream account or endpoint, with its concurrency limit, rate limits and FIFO
//! (fair) queue.
//!
//! All of a lane's mutable state sits behind one short-lived mutex, never held across an await
//! and never while taking another lane's lock, so lanes never contend with each other. Slots are
//! handed out in two ways: inline, by the request itself when the queue is empty and capacity is
//! free (the fast path: one lock, no task hop), or by [`Lane::dispatch`], which runs whenever a
//! slot frees, a waiter arrives, or a rate-limit timer fires, and claims waiters in fair order.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::adaptive::{Adaptive, Sent};
use crate::error::{AdmissionError, Scope};
use crate::gcra::Denied;
use crate::health::{Circuit, Feedback, Health};
use crate::queue::FairQueue;
use crate::rates::{Blocked, RateSpec, Rates};
use crate::waiter::Waiter;
use crate::Mode;

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
const UPSTREAM_JITTER: Duration = Duration::from_millis(100);

/// An operator's hand on a lane's concurrency, set at run time (admin API, panel). It survives
/// a reload unless the new file changes that lane's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// What the config says: its fixed limit, or adaptive when it asks for that.
    #[default]
    Config,
    /// A fixed limit set by hand.
    Fixed(u32),
    /// One request at a time, as for a local server.
    Serial,
    /// Learn the limit from the upstream's answers, whatever the config says.
    Auto,
}

/// Where a lane's limit in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    Config,
    Adaptive,
    Operator,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Adaptive => "adaptive",
            Self::Operator => "operator",
        }
    }
}

/// What the admin API and metrics show of a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSnapshot {
    pub name: String,
    pub in_flight: u32,
    pub queued: usize,
    /// Concurrency limit in force; `None` is unlimited.
    pub limit: Option<u32>,
    pub rpm_used: Option<u64>,
    pub tpm_used: Option<u64>,
    pub cooldown_until: Option<Duration>,
    pub health: Health,
    /// Held by an operator: running requests finish, nothing new starts.
    pub paused: bool,
    pub control: Control,
    pub limit_source: LimitSource,
}

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
        spawn_timer(Arc::downgrade(&lane), lane.timer.clone());
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

    /// Applies a new spec (hot reload): limits change, counters, usage and queue stay.
    pub fn reconfigure(self: &Arc<Self>, spec: LaneSpec) {
        {
            let mut st = self.lock();
            st.rates.reconfigure(spec.rates);
            if spec.adaptive != st.spec.adaptive || spec.max_concurrent != st.spec.max_concurrent {
                // The file changed this lane's limit: it wins over what an operator set.
                if st.control != Control::Config {
                    tracing::info!(lane = %self.name, "the new config sets this lane's limit; the operator's setting is dropped");
                }
                st.control = Control::Config;
                st.adaptive = State::new_adaptive(&spec);
            }
            // A pause taken under the old bound is cut to the new one.
            let bound = Instant::now().checked_add(spec.max_pause);
            if let (Some(p), Some(b)) = (st.paused_until, bound) {
                if p > b {
                    st.paused_until = Some(b);
                    st.next_wake = Some(b);
                }
            }
            st.spec = spec;
            st.limit = st.configured_limit();
        }
        self.timer.notify_one();
        self.dispatch();
    }

    /// Sets the operator's control of the concurrency limit; returns the limit now in force.
    pub fn set_control(self: &Arc<Self>, control: Control) -> Option<u32> {
        let limit = {
            let mut st = self.lock();
            let adaptive = match control {
                Control::Auto => true,
                Control::Config => st.spec.adaptive,
                Control::Fixed(_) | Control::Serial => st.adaptive.is_some(),
            };
            if adaptive && st.adaptive.is_none() {
                let max = st.spec.max_concurrent.unwrap_or(ADAPTIVE_CEILING);
                st.adaptive = Some(Adaptive::new(crate::adaptive::START, max));
            } else if !adaptive {
                st.adaptive = None;
            }
            st.control = control;
            st.limit = st.configured_limit();
            st.limit
        };
        self.dispatch();
        (limit != UNLIMITED).then_some(limit)
    }

    /// Pauses (`true`) or resumes the lane for an operator. Paused, running requests finish and
    /// queued ones wait; a pool sends new ones to its other lanes. Returns whether it changed.
    pub fn set_paused(self: &Arc<Self>, paused: bool) -> bool {
        let changed = std::mem::replace(&mut self.lock().held, paused) != paused;
        if !paused {
            self.dispatch();
        }
        changed
    }

    /// Learns from an upstream answer to a request of unknown standing (see
    /// [`crate::Permit::feedback`], which knows it). Returns how long the lane now pauses when
    /// the answer carried a hint (Retry-After, a spent rate budget), so replicas can share it.
    pub fn feedback(self: &Arc<Self>, fb: Feedback) -> Option<Duration> {
        self.learn(fb, None)
    }

    /// Learns from an upstream answer: cooldowns, the circuit, the adaptive limit. `sent` is
    /// where the request stood when it was sent.
    pub(crate) fn learn(self: &Arc<Self>, fb: Feedback, sent: Option<Sent>) -> Option<Duration> {
        let now = Instant::now();
        let hinted = matches!(fb, Feedback::Overloaded { .. } | Feedback::Exhausted { .. });
        let paused = {
            let mut st = self.lock();
            let sent = sent.unwrap_or_else(|| st.sent());
            let service = st.ewma_service;
            let mut pause = None;
            match fb {
                Feedback::Success { latency, headroom } => {
                    st.circuit.record(false);
                    let waiting = self.queued() > 0;
                    if let Some(a) = &mut st.adaptive {
                        a.success(sent, latency, headroom, waiting);
                    }
                }
                Feedback::Overloaded { retry_after } => {
                    pause = retry_after;
                    if let Some(a) = &mut st.adaptive {
                        a.overload(sent);
                        // The lower limit is the answer to a refusal for concurrency; a hint no
                        // longer than a request takes says as much, and pausing the whole lane
                        // for it would only leave slots idle. A longer one is a spent budget.
                        pause = retry_after.filter(|h| *h > service.saturating_mul(2));
                    }
                }
                Feedback::Exhausted { reset } => pause = Some(reset),
                Feedback::Failed => pause = st.circuit.record(true),
            }
            st.limit = st.configured_limit();
            // Hints come from outside: never let one pause the lane past its bound.
            let until = pause
                .filter(|p| !p.is_zero())
                .and_then(|p| now.checked_add(p.min(st.spec.max_pause)));
            until.filter(|&u| st.pause(u))
        };
        if let Some(until) = paused {
            tracing::info!(lane = %self.name, pause_ms = (until - now).as_millis() as u64, "lane paused");
            self.lock().next_wake = Some(until);
            self.timer.notify_one();
        }
        self.dispatch();
        paused.filter(|_| hinted).map(|u| u - now)
    }

    /// The concurrency limit in force (fixed, adaptive or set by hand); `None`: unlimited.
    pub fn limit_in_force(&self) -> Option<u32> {
        let cap = self.lock().cap();
        (cap != UNLIMITED).then_some(cap)
    }

    pub fn snapshot(&self) -> LaneSnapshot {
        let now = Instant::now();
        let st = self.lock();
        LaneSnapshot {
            name: self.name.clone(),
            in_flight: st.in_flight,
            queued: self.queued.load(Ordering::Acquire),
            limit: (st.limit != UNLIMITED).then_some(st.limit),
            rpm_used: st.rates.requests_used(now).map(|(_, used, _)| used),
            tpm_used: st.rates.tokens_used(now).map(|(_, used, _)| used),
            cooldown_until: st
                .paused_until
                .filter(|&p| p > now)
                .map(|p| p.duration_since(now)),
            health: if st.circuit.open {
                Health::Open
            } else if st.paused_until.is_some_and(|p| p > now) {
                Health::CoolingDown
            } else {
                Health::Ok
            },
            paused: st.held,
            control: st.control,
            limit_source: st.limit_source(),
        }
    }

    /// Tags of the requests waiting here, in the order this lane would serve them if nothing
    /// else arrived (a waiter also queued on another lane of its pool may leave earlier).
    pub fn waiting(&self) -> Vec<u64> {
        self.waiting_with_eta()
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// [`Lane::waiting`], each with the expected wait until it gets a slot: the requests ahead
    /// of it served at the lane's measured rate (smoothed service time over the slots in use).
    pub fn waiting_with_eta(&self) -> Vec<(u64, Duration)> {
        let st = self.lock();
        st.queue
            .in_order()
            .into_iter()
            .filter(|w| w.is_pending())
            .enumerate()
            .map(|(ahead, w)| (w.tag, estimate_wait(&st, ahead)))
            .collect()
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn forget_waiter(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Free slots and whether rates allow a request now; used to rank pool members.
    pub(crate) fn headroom(&self, now: Instant, tokens: u64) -> (bool, u32, usize) {
        let st = self.lock();
        let open = !st.held
            && st.paused_until.is_none_or(|p| p <= now)
            && st.rates.check_ahead(now, tokens, UPSTREAM_JITTER).is_ok();
        (open, st.cap().saturating_sub(st.in_flight), self.queued())
    }

    /// The fast path: takes a slot at once if nobody is waiting and capacity is free.
    pub(crate) fn try_take(&self, now: Instant, tokens: u64) -> Result<Sent, Busy> {
        let mut st = self.lock();
        if st.held {
            return Err(Busy::Held);
        }
        if let Some(p) = st.paused_until.filter(|&p| p > now) {
            return Err(Busy::Paused {
                until: p,
                open: st.circuit.open,
            });
        }
        if self.queued() > 0 {
            return Err(Busy::Queue);
        }
        if st.in_flight >= st.cap() {
            return Err(Busy::Full);
        }
        st.rates
            .check_ahead(now, tokens, UPSTREAM_JITTER)
            .map_err(Busy::Rate)?;
        st.rates.take(now, tokens);
        st.in_flight += 1;
        Ok(st.sent())
    }

    /// The refusal a reject-mode lane gives for `busy`.
    pub(crate) fn refusal(&self, busy: Busy, now: Instant, tokens: u64) -> AdmissionError {
        let scope = Scope::Lane(self.name.clone());
        let st = self.lock();
        match busy {
            Busy::Rate(Blocked {
                denied: Denied::Never,
                ..
            }) => AdmissionError::NeverFits {
                scope,
                needed: tokens,
                limit: st.spec.rates.tpm.unwrap_or(0),
            },
            Busy::Rate(Blocked {
                kind,
                denied: Denied::Until(at),
            }) => AdmissionError::RateLimited {
                scope,
                kind,
                retry_after: at - now,
            },
            Busy::Paused { until, .. } => AdmissionError::NoLaneAvailable {
                retry_after: until - now,
            },
            Busy::Full | Busy::Queue | Busy::Held => AdmissionError::ConcurrencyLimited {
                scope,
                retry_after: estimate_wait(&st, 0),
            },
        }
    }

    /// Whether a request of `tokens` can ever pass this lane's token limit.
    pub(crate) fn fits(&self, tokens: u64) -> Result<(), AdmissionError> {
        let st = self.lock();
        match st.spec.rates.tpm {
            Some(limit) if tokens > limit => Err(AdmissionError::NeverFits {
                scope: Scope::Lane(self.name.clone()),
                needed: tokens,
                limit,
            }),
            _ => Ok(()),
        }
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

    /// Serves waiters while capacity allows, in fair order; arms the timer when a rate limit or
    /// a pause is what holds the head of the queue back.
    pub fn dispatch(self: &Arc<Self>) {
        let now = Instant::now();
        let mut st = self.lock();
        // Slow start grows only while the slots it gave are in use upstream: on a loaded
        // gateway granted requests take a while to be sent, and answers (refusals too) a
        // while to come back; growing meanwhile would only run past the edge unseen.
        let mut ramp = None;
        if st.adaptive.is_some() {
            let unsent = st
                .in_flight
                .saturating_sub(self.at_upstream.load(Ordering::Acquire));
            let waiting = self.queued() > 0 && unsent.saturating_mul(4) <= st.in_flight;
            let lag = Duration::from_micros(self.send_lag_us.load(Ordering::Relaxed));
            ramp = st.adaptive.as_mut().and_then(|a| a.grow(now, waiting, lag));
            st.limit = st.configured_limit();
        }
        let wake = loop {
            if st.held {
                break None;
            }
            if let Some(p) = st.paused_until {
                if p > now {
                    break Some(p);
                }
                st.paused_until = None;
            }
            if st.in_flight >= st.cap() {
                break None;
            }
            let Some(head) = st.queue.peek() else {
                break None;
            };
            if !head.is_pending() {
                st.queue.pop();
                continue;
            }
            let tokens = head.tokens;
            match st.rates.check_ahead(now, tokens, UPSTREAM_JITTER) {
                Ok(()) => {}
                Err(Blocked {
                    denied: Denied::Until(at),
                    ..
                }) => break Some(at),
                Err(Blocked {
                    denied: Denied::Never,
                    ..
                }) => {
                    // Only after a reload lowered the limit below what this waiter needs.
                    if let Some(w) = st.queue.pop() {
                        if w.claim() {
                            let limit = st.spec.rates.tpm.unwrap_or(0);
                            let scope = Scope::Lane(self.name.clone());
                            let _ = w.send(Err(AdmissionError::NeverFits {
                                scope,
                                needed: tokens,
                                limit,
                            }));
                        }
                    }
                    continue;
                }
            }
            let Some(w) = st.queue.pop() else { break None };
            if !w.claim() {
                continue;
            }
            st.rates.take(now, tokens);
            st.in_flight += 1;
            if w.send(Ok((self.clone(), st.sent()))).is_err() {
                // The client left between claim and delivery: undo.
                st.in_flight -= 1;
                st.rates.untake(tokens);
            }
        };
        // A slow start's next step wakes the timer too.
        let wake = match (wake, ramp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let changed = wake != st.next_wake;
        st.next_wake = wake;
        if changed && wake.is_some() {
            self.timer.notify_one();
        }
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

fn spawn_timer(lane: Weak<Lane>, timer: Arc<Notify>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        loop {
            let notified = timer.notified();
            let wake = {
                let Some(lane) = lane.upgrade() else { return };
                let due = lane.lock().next_wake;
                match due {
                    Some(at) if at <= Instant::now() => {
                        lane.dispatch();
                        lane.lock().next_wake
                    }
                    other => other,
                }
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    });
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Wakes the timer task so it sees the lane is gone and ends.
        self.timer.notify_one();
    }
}
