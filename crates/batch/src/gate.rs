//! How many items run at once: a fixed number, or adaptive, learning the upstream's capacity
//! from its refusals and latency with the same controller Laneway's lanes use
//! ([`laneway_admission::adaptive`]). Either way, an
//! upstream that reports its rate budget spent (`x-ratelimit-remaining-* = 0`) holds new items
//! back for one refill step instead of collecting 429s.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use laneway_admission::adaptive::{Adaptive, Sent};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::send::Signal;

/// The concurrency bound of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most this many items in flight.
    Fixed(usize),
    /// Start low and find what the upstream takes, never above `max`.
    Adaptive { max: usize },
}

impl Concurrency {
    pub(crate) fn ceiling(self) -> usize {
        match self {
            Self::Fixed(n) | Self::Adaptive { max: n } => n.max(1),
        }
    }
}

pub(crate) struct Gate {
    state: Mutex<State>,
    freed: Notify,
}

struct State {
    in_flight: usize,
    /// Attempts sent and not yet answered: what the upstream holds from this run.
    at_upstream: u32,
    adaptive: Option<Adaptive>,
    /// The upstream said its budget is spent (`x-ratelimit-remaining-* = 0`): nothing new starts
    /// before then, whatever the bound.
    paused_until: Option<Instant>,
}

/// The longest a rate-limit header may hold new items back.
const MAX_PAUSE: Duration = Duration::from_secs(60);

impl State {
    fn limit(&self) -> usize {
        self.adaptive
            .as_ref()
            .map_or(usize::MAX, |a| a.limit() as usize)
    }
}

impl Gate {
    pub fn new(c: Concurrency) -> Self {
        let adaptive = match c {
            Concurrency::Fixed(_) => None,
            Concurrency::Adaptive { max } => {
                let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
                Some(Adaptive::new(laneway_admission::adaptive::START, max))
            }
        };
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                at_upstream: 0,
                adaptive,
                paused_until: None,
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room under the adaptive limit (a fixed bound is kept by the caller's buffer).
    pub async fn enter(&self) -> Pass<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (paused, step) = {
                let mut st = self.lock();
                let now = Instant::now();
                let step = st
                    .adaptive
                    .as_mut()
                    .and_then(|a| a.grow(now, true, Duration::ZERO));
                let paused = st.paused_until.filter(|&p| p > now);
                if paused.is_none() && st.in_flight < st.limit() {
                    st.in_flight += 1;
                    let sent = st.adaptive.as_ref().map(|a| a.sent(0));
                    return Pass {
                        gate: self,
                        sent,
                        open: AtomicBool::new(false),
                        at: AtomicU32::new(0),
                    };
                }
                (paused, step)
            };
            match (paused, step) {
                (Some(until), _) => tokio::time::sleep_until(until).await,
                (None, Some(at)) => {
                    tokio::select! {
                        () = &mut freed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                (None, None) => freed.await,
            }
        }
    }
}

/// Room taken in the gate, given back on drop.
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
    /// The adaptive limit's stamp when the item entered; its count is taken per attempt.
    sent: Option<Sent>,
    /// An attempt is at the upstream.
    open: AtomicBool,
    /// Attempts at the upstream when this one was sent, itself included.
    at: AtomicU32,
}

impl Pass<'_> {
    /// Waits until an attempt may go to the upstream: under an adaptive limit, fewer attempts
    /// than the limit are there (an item retrying after a refusal holds its pass but must not
    /// add to an overload). Counts the attempt as sent.
    pub async fn sending(&self) {
        loop {
            let freed = self.gate.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let step = {
                let mut st = self.gate.lock();
                let step = st
                    .adaptive
                    .as_mut()
                    .and_then(|a| a.grow(Instant::now(), true, Duration::ZERO));
                let limit = st.adaptive.as_ref().map_or(u32::MAX, Adaptive::limit);
                if st.at_upstream < limit || st.at_upstream == 0 {
                    st.at_upstream += 1;
                    self.open.store(true, Ordering::Release);
                    self.at.store(st.at_upstream, Ordering::Release);
                    return;
                }
                step
            };
            match step {
                Some(at) => {
                    tokio::select! {
                        () = &mut freed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Learns from one attempt of the item holding this pass. The adaptive limit judges an
    /// answer by how many attempts were at the upstream when it was sent: an item backing off
    /// between attempts holds a pass but is not there.
    pub fn learn(&self, s: Signal) {
        let mut st = self.gate.lock();
        if self.open.swap(false, Ordering::AcqRel) {
            st.at_upstream = st.at_upstream.saturating_sub(1);
        }
        if let Signal::Served {
            exhausted: Some(wait),
            ..
        } = s
        {
            let until = Instant::now() + wait.min(MAX_PAUSE);
            st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        }
        let (Some(a), Some(sent)) = (&mut st.adaptive, self.sent) else {
            return;
        };
        let sent = Sent {
            in_flight: self.at.load(Ordering::Acquire).max(1),
            ..sent
        };
        match s {
            Signal::Served { latency, .. } => a.success(sent, latency, None, true),
            Signal::Overloaded => a.overload(sent),
            Signal::Other => {}
        }
        drop(st);
        self.gate.freed.notify_waiters();
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        st.in_flight -= 1;
        if self.open.load(Ordering::Acquire) {
            // The attempt ended without an answer (the item's timeout).
            st.at_upstream = st.at_upstream.saturating_sub(1);
        }
        drop(st);
        self.gate.freed.notify_one();
    }
}
