//! How many items run at once: a fixed number, or adaptive, learning the upstream's capacity
//! from its refusals and latency (see `aimd` for why not with the lanes' controller). Either
//! way, an upstream that reports its rate budget spent (`x-ratelimit-remaining-* = 0`) holds
//! new items back for one refill step instead of collecting 429s.

use std::sync::Mutex;
use std::time::Duration;

use crate::aimd::Aimd;
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
    aimd: Option<Aimd>,
    /// Below the in-flight count at which the upstream last refused: it cannot take that many.
    ceiling: Option<usize>,
    /// Successes since the ceiling last moved; enough of them probe one higher, so a capacity
    /// that grew is found again.
    since_ceiling: u32,
    /// The upstream said its budget is spent (`x-ratelimit-remaining-* = 0`): nothing new starts
    /// before then, whatever the bound.
    paused_until: Option<Instant>,
}

/// The longest a rate-limit header may hold new items back.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Successes at the ceiling before trying one more in flight.
const PROBE_AFTER: u32 = 100;

impl State {
    fn limit(&self) -> usize {
        let learned = self
            .aimd
            .as_ref()
            .map_or(usize::MAX, |a| a.limit() as usize);
        learned.min(self.ceiling.unwrap_or(usize::MAX))
    }
}

impl Gate {
    pub fn new(c: Concurrency) -> Self {
        let aimd = match c {
            Concurrency::Fixed(_) => None,
            Concurrency::Adaptive { max } => {
                let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
                Some(Aimd::new(2.min(max), max))
            }
        };
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                aimd,
                ceiling: None,
                since_ceiling: 0,
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
        // Most entries find room at once: no waiter is registered for them.
        if self.try_enter().is_ok() {
            return Pass(self);
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking again, so a pass given back in between is not missed.
            freed.as_mut().enable();
            match self.try_enter() {
                Ok(()) => return Pass(self),
                Err(Some(until)) => tokio::time::sleep_until(until).await,
                Err(None) => freed.await,
            }
        }
    }

    /// Takes room if there is some; else says until when new items are held back, if they are.
    fn try_enter(&self) -> Result<(), Option<Instant>> {
        let mut st = self.lock();
        let paused = st.paused_until.filter(|&p| p > Instant::now());
        if paused.is_none() && st.in_flight < st.limit() {
            st.in_flight += 1;
            return Ok(());
        }
        Err(paused)
    }

    /// Learns from one attempt of an item that holds a pass (so `in_flight` counts it).
    pub fn learn(&self, s: Signal) {
        let mut st = self.lock();
        if let Signal::Served {
            exhausted: Some(wait),
            ..
        } = s
        {
            let until = Instant::now() + wait.min(MAX_PAUSE);
            st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        }
        if st.aimd.is_none() {
            return;
        }
        match s {
            Signal::Served { latency, .. } => {
                if let Some(a) = &mut st.aimd {
                    a.success(latency);
                }
                st.since_ceiling += 1;
                if st.since_ceiling >= PROBE_AFTER {
                    st.since_ceiling = 0;
                    st.ceiling = st.ceiling.map(|c| c + 1);
                }
            }
            Signal::Overloaded => {
                if let Some(a) = &mut st.aimd {
                    a.overload();
                }
                // Refused with `in_flight` running: the upstream takes fewer than that.
                st.ceiling = Some(st.in_flight.saturating_sub(1).max(1));
                st.since_ceiling = 0;
            }
            Signal::Other => {}
        }
        drop(st);
        self.freed.notify_waiters();
    }
}

/// Room taken in the gate, given back on drop.
pub(crate) struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.freed.notify_one();
    }
}
