//! A client key's own limits, checked before any lane is asked. In `reject` mode (the default for
//! keys) an exhausted limit refuses at once; in `queue` mode the request waits for its key's
//! capacity (a future rate slot is reserved, a concurrency slot is awaited in FIFO order), within
//! its deadline.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

pub struct Key {
    pub id: KeyId,
    pub spec: KeySpec,
    slots: Option<Arc<Semaphore>>,
    rates: Mutex<Rates>,
    ewma_service: Mutex<Duration>,
}

/// A key's share of a request: its concurrency slot and its rate reservation.
pub struct KeyPermit {
    key: Arc<Key>,
    _slot: Option<OwnedSemaphorePermit>,
    tokens: u64,
    started: Instant,
    /// Set once the request reaches a lane; a request refused later gets its rates back.
    pub(crate) used: bool,
}

impl Key {
    pub fn new(id: KeyId, spec: KeySpec) -> Arc<Self> {
        Arc::new(Self {
            id,
            slots: spec
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            rates: Mutex::new(Rates::new(spec.rates)),
            ewma_service: Mutex::new(Duration::from_secs(1)),
            spec,
        })
    }

    fn rates(&self) -> MutexGuard<'_, Rates> {
        // Every mutation of the rates is a single step; a poisoned lock still holds valid state.
        self.rates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scope(&self) -> Scope {
        Scope::Key(self.spec.name.clone())
    }

    /// Whether this key has any limit worth reporting in `x-ratelimit-*` headers. Read from the
    /// spec, not the limiter, so keys without limits never touch the limiter's lock.
    pub fn has_rate_limits(&self) -> bool {
        self.spec.rates != RateSpec::default()
    }

    pub fn usage(&self) -> KeyUsage {
        let now = Instant::now();
        let r = self.rates();
        let remaining = |v: Option<(u64, u64, Duration)>| {
            v.map(|(cap, used, full)| (cap, cap - used.min(cap), full))
        };
        KeyUsage {
            requests: remaining(r.requests_used(now)),
            tokens: remaining(r.tokens_used(now)),
        }
    }

    fn concurrency_hint(&self) -> Duration {
        let per = *self.ewma_service.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.spec.max_concurrent.unwrap_or(1).max(1);
        (per / n).max(Duration::from_millis(1))
    }

    fn blocked(&self, b: Blocked, now: Instant, tokens: u64) -> AdmissionError {
        match b.denied {
            Denied::Never => AdmissionError::NeverFits {
                scope: self.scope(),
                needed: tokens,
                limit: self.spec.rates.tpm.unwrap_or(0),
            },
            Denied::Until(at) => AdmissionError::RateLimited {
                scope: self.scope(),
                kind: b.kind,
                retry_after: at - now,
            },
        }
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
            _slot: None,
            tokens,
            started: now,
            used: true,
        };
        match self.spec.on_limit {
            Mode::Reject => {
                self.rates()
                    .check(now, tokens)
                    .map_err(|b| self.blocked(b, now, tokens))?;
                if let Some(slots) = &self.slots {
                    permit._slot = Some(slots.clone().try_acquire_owned().map_err(|_| {
                        AdmissionError::ConcurrencyLimited {
                            scope: self.scope(),
                            retry_after: self.concurrency_hint(),
                        }
                    })?);
                }
                self.rates().take(now, tokens);
            }
            Mode::Queue => {
                let at = {
                    let mut r = self.rates();
                    if let Err(
                        b @ Blocked {
                            denied: Denied::Never,
                            ..
                        },
                    ) = r.check(now, tokens)
                    {
                        return Err(self.blocked(b, now, tokens));
                    }
                    r.reserve(now, tokens)
                };
                // From here on, dropping `permit` gives the reservation back.
                permit.used = false;
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
                if let Some(slots) = &self.slots {
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => permit._slot = slot.ok(),
                        () = tokio::time::sleep_until(deadline) => return Err(AdmissionError::DeadlineExceeded),
                        () = cancel.cancelled() => return Err(AdmissionError::Cancelled),
                    }
                }
                permit.used = true;
            }
        }
        Ok(permit)
    }
}

impl KeyPermit {
    pub fn key(&self) -> &Arc<Key> {
        &self.key
    }

    pub(crate) fn settle_tokens(&mut self, actual: u64) {
        self.key
            .rates()
            .settle_tokens(Instant::now(), self.tokens, actual);
        self.tokens = actual;
    }
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        if !self.used {
            self.key.rates().untake(self.tokens);
            return;
        }
        let held = self.started.elapsed();
        let mut e = self
            .key
            .ewma_service
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *e = (*e * 7 + held) / 8;
    }
}
