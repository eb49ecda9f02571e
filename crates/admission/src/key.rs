//! A client key's own limits, checked before any lane is asked. In `reject` mode (the default for
//! keys) an exhausted limit refuses at once; in `queue` mode the request waits for its key's
//! capacity (a future rate slot is reserved, a concurrency slot is awaited in FIFO order), within
//! its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{AdmissionError, Scope};
use crate::gcra::Denied;
use crate::queue::KeyId;
use crate::rates::{Blocked, RateSpec, Rates};
use crate::Mode;

#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    pub name: String,
    pub priority: i32,
    pub weight: u32,
    pub on_limit: Mode,
    pub max_concurrent: Option<u32>,
    pub rates: RateSpec,
}

impl KeySpec {
    /// The key of requests when no keys are configured: no limits, weight 1.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            priority: 0,
            weight: 1,
            on_limit: Mode::Reject,
            max_concurrent: None,
            rates: RateSpec::default(),
        }
    }
}

/// The `x-ratelimit-*` values of a key: (limit, remaining, time until full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub requests: Option<(u64, u64, Duration)>,
    pub tokens: Option<(u64, u64, Duration)>,
}

/// What changes as requests come and go, under one short lock per key.
struct State {
    spec: Arc<KeySpec>,
    rates: Rates,
    in_flight: u32,
    ewma_service: Duration,
}

pub struct Key {
    pub id: KeyId,
    /// Keys keep their name across reloads; everything else can change.
    pub name: String,
    state: Mutex<State>,
    /// Signalled when a concurrency slot frees or the limit grows, for keys in queue mode.
    freed: Notify,
    /// Whether the key has rate limits, readable without the lock on every response.
    rate_limited: AtomicBool,
}

/// A key's share of a request: its concurrency slot and its rate reservation.
pub struct KeyPermit {
    key: Arc<Key>,
    holds_slot: bool,
    tokens: u64,
    started: Instant,
    /// Whether dropping the permit gives the rate reservation back: true while the request has
    /// not reached a lane yet (it waits, or a lane refused it), false once it was sent.
    pub(crate) refund_on_drop: bool,
}

impl Key {
    pub fn new(id: KeyId, spec: KeySpec) -> Arc<Self> {
        Arc::new(Self {
            id,
            name: spec.name.clone(),
            rate_limited: AtomicBool::new(spec.rates != RateSpec::default()),
            state: Mutex::new(State {
                rates: Rates::new(spec.rates),
                spec: Arc::new(spec),
                in_flight: 0,
                ewma_service: Duration::from_secs(1),
            }),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of the state is a single step; a poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self) -> Arc<KeySpec> {
        self.lock().spec.clone()
    }

    /// Applies new limits (hot reload): requests in flight and rate usage carry over, so the
    /// new limits hold from the first request after the reload.
    pub fn reconfigure(&self, spec: KeySpec) {
        {
            let mut st = self.lock();
            st.rates.reconfigure(spec.rates);
            self.rate_limited
                .store(spec.rates != RateSpec::default(), Ordering::Relaxed);
            st.spec = Arc::new(spec);
        }
        // A larger limit may let waiters in.
        self.freed.notify_waiters();
    }

    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    fn scope(&self) -> Scope {
        Scope::Key(self.name.clone())
    }

    /// Whether this key has any limit worth reporting in `x-ratelimit-*` headers. Lock-free, so
    /// keys without limits never touch the key's lock for it.
    pub fn has_rate_limits(&self) -> bool {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub fn usage(&self) -> KeyUsage {
        let now = Instant::now();
        let st = self.lock();
        let remaining = |v: Option<(u64, u64, Duration)>| {
            v.map(|(cap, used, full)| (cap, cap - used.min(cap), full))
        };
        KeyUsage {
            requests: remaining(st.rates.requests_used(now)),
            tokens: remaining(st.rates.tokens_used(now)),
        }
    }

    fn concurrency_hint(st: &State) -> Duration {
        let n = st.spec.max_concurrent.unwrap_or(1).max(1);
        (st.ewma_service / n).max(Duration::from_millis(1))
    }

    fn blocked(&self, st: &State, b: Blocked, now: Instant, tokens: u64) -> AdmissionError {
        match b.denied {
            Denied::Never => AdmissionError::NeverFits {
                scope: self.scope(),
                needed: tokens,
                limit: st.spec.rates.tpm.unwrap_or(0),
            },
            Denied::Until(at) => AdmissionError::RateLimited {
                scope: self.scope(),
                kind: b.kind,
                retry_after: at - now,
            },
        }
    }

    /// Takes a concurrency slot if one is free.
    fn try_slot(st: &mut State) -> bool {
        if st.spec.max_concurrent.is_some_and(|m| st.in_flight >= m) {
            return false;
        }
        st.in_flight += 1;
        true
    }

    pub async fn admit(
        self: &Arc<Self>,
        tokens: u64,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<KeyPermit, AdmissionError> {
        let now = Instant::now();
        let mut permit = KeyPermit {
            key: self.clone(),
            holds_slot: false,
            tokens,
            started: now,
            refund_on_drop: false,
        };
        let mode = self.lock().spec.on_limit;
        match mode {
            Mode::Reject => {
                let mut st = self.lock();
                if let Err(b) = st.rates.check(now, tokens) {
                    return Err(self.blocked(&st, b, now, tokens));
                }
                if !Self::try_slot(&mut st) {
                    return Err(AdmissionError::ConcurrencyLimited {
                        scope: self.scope(),
                        retry_after: Self::concurrency_hint(&st),
                    });
                }
                permit.holds_slot = true;
                st.rates.take(now, tokens);
            }
            Mode::Queue => {
                let at = {
                    let mut st = self.lock();
                    if let Err(
                        b @ Blocked {
                            denied: Denied::Never,
                            ..
                        },
                    ) = st.rates.check(now, tokens)
                    {
                        return Err(self.blocked(&st, b, now, tokens));
                    }
                    st.rates.reserve(now, tokens)
                };
                // From here on, dropping `permit` gives the reservation back.
                permit.refund_on_drop = true;
                if at > deadline {
                    return Err(AdmissionError::RateLimited {
                        scope: self.scope(),
                        kind: crate::error::RateKind::PerMinute,
                        retry_after: at - now,
                    });
                }
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = cancel.cancelled() => return Err(AdmissionError::Cancelled),
                }
                loop {
                    // Registered before the check, so a slot freed in between is not missed.
                    let freed = self.freed.notified();
                    tokio::pin!(freed);
                    freed.as_mut().enable();
                    if Self::try_slot(&mut self.lock()) {
                        permit.holds_slot = true;
                        break;
                    }
                    tokio::select! {
                        () = &mut freed => {}
                        () = tokio::time::sleep_until(deadline) => return Err(AdmissionError::DeadlineExceeded),
                        () = cancel.cancelled() => return Err(AdmissionError::Cancelled),
                    }
                }
                permit.refund_on_drop = false;
            }
        }
        Ok(permit)
    }
}

impl KeyPermit {
    pub(crate) fn settle_tokens(&mut self, actual: u64) {
        self.key
            .lock()
            .rates
            .settle_tokens(Instant::now(), self.tokens, actual);
        self.tokens = actual;
    }
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        {
            let mut st = self.key.lock();
            if !self.refund_on_drop {
                let held = self.started.elapsed();
                st.ewma_service = (st.ewma_service * 7 + held) / 8;
            } else {
                st.rates.untake(self.tokens);
            }
            if self.holds_slot {
                st.in_flight = st.in_flight.saturating_sub(1);
            }
        }
        if self.holds_slot {
            self.key.freed.notify_one();
        }
    }
}
