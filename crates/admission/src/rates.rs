//! The three rate limits of one scope (a lane or a key), checked and taken together so that a
//! request either passes all of them or takes from none.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::RateKind;
use crate::gcra::{Denied, Gcra};

/// Requests per second with burst, requests per minute, tokens per minute. `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateSpec {
    pub per_second: Option<(f64, u32)>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Rates {
    per_second: Option<Gcra>,
    rpm: Option<Gcra>,
    tpm: Option<Gcra>,
}

/// A refusal: which limit, and when it would pass (or never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub kind: RateKind,
    pub denied: Denied,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Rates {
    pub fn new(spec: RateSpec) -> Self {
        Self {
            per_second: spec.per_second.map(|(r, b)| Gcra::per_second(r, b)),
            rpm: spec.rpm.map(|n| Gcra::new(n.into(), MINUTE)),
            tpm: spec.tpm.map(|n| Gcra::new(n, MINUTE)),
        }
    }

    /// Replaces the limits, keeping the usage of limits that still exist (hot reload): a
    /// changed limit keeps how far ahead its schedule runs, so a full window stays full.
    pub fn reconfigure(&mut self, spec: RateSpec) {
        let fresh = Self::new(spec);
        let keep = |old: &Option<Gcra>, new: Option<Gcra>| match (old, new) {
            (Some(o), Some(mut n)) => {
                n.carry_usage(o);
                Some(n)
            }
            (_, n) => n,
        };
        self.per_second = keep(&self.per_second, fresh.per_second);
        self.rpm = keep(&self.rpm, fresh.rpm);
        self.tpm = keep(&self.tpm, fresh.tpm);
    }

    pub fn is_empty(&self) -> bool {
        self.per_second.is_none() && self.rpm.is_none() && self.tpm.is_none()
    }

    fn each(&self, tokens: u64) -> impl Iterator<Item = (&Gcra, u64, RateKind)> {
        [
            (self.per_second.as_ref(), 1, RateKind::PerSecond),
            (self.rpm.as_ref(), 1, RateKind::PerMinute),
            (self.tpm.as_ref(), tokens, RateKind::TokensPerMinute),
        ]
        .into_iter()
        .filter_map(|(g, n, k)| g.map(|g| (g, n, k)))
    }

    /// Whether a request of `tokens` passes every limit at `now`. When several refuse, the
    /// latest instant wins (it is when all of them pass); `Never` wins over any instant.
    pub fn check(&self, now: Instant, tokens: u64) -> Result<(), Blocked> {
        self.worst(tokens, |g, n| g.check(now, n))
    }

    fn worst(
        &self,
        tokens: u64,
        check: impl Fn(&Gcra, u64) -> Result<(), Denied>,
    ) -> Result<(), Blocked> {
        let mut worst: Option<Blocked> = None;
        for (g, n, kind) in self.each(tokens) {
            if let Err(denied) = check(g, n) {
                let later = match (worst.map(|w| w.denied), denied) {
                    (None, _) => true,
                    (Some(Denied::Never), _) => false,
                    (_, Denied::Never) => true,
                    (Some(Denied::Until(a)), Denied::Until(b)) => b > a,
                };
                if later {
                    worst = Some(Blocked { kind, denied });
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Takes a request of `tokens` from every limit. Call after [`Rates::check`] passed.
    /// Like [`Rates::check`], but each limit holds back up to `margin` of its burst (see
    /// [`Gcra::check_ahead`]), so the upstream, which counts a request a little later than the
    /// lane admitted it, still has room when that delay varies.
    pub fn check_ahead(&self, now: Instant, tokens: u64, margin: Duration) -> Result<(), Blocked> {
        self.worst(tokens, |g, n| g.check_ahead(now, n, margin))
    }

    pub fn take(&mut self, now: Instant, tokens: u64) {
        self.reserve(now, tokens);
    }

    /// Takes from every limit even if that runs ahead of now; returns the instant at which the
    /// reservation conforms (wait until then).
    pub fn reserve(&mut self, now: Instant, tokens: u64) -> Instant {
        let mut at = now;
        for (g, n) in [
            (&mut self.per_second, 1),
            (&mut self.rpm, 1),
            (&mut self.tpm, tokens),
        ] {
            if let Some(g) = g {
                at = at.max(g.force(now, n));
            }
        }
        at
    }

    /// Gives back a whole request (it was never sent).
    pub fn untake(&mut self, tokens: u64) {
        for (g, n) in [
            (&mut self.per_second, 1),
            (&mut self.rpm, 1),
            (&mut self.tpm, tokens),
        ] {
            if let Some(g) = g {
                g.refund(n);
            }
        }
    }

    /// Settles a token reservation against what the upstream reported.
    pub fn settle_tokens(&mut self, now: Instant, reserved: u64, actual: u64) {
        if let Some(g) = &mut self.tpm {
            if actual < reserved {
                g.refund(reserved - actual);
            } else if actual > reserved {
                g.force(now, actual - reserved);
            }
        }
    }

    /// (limit, used) of requests per minute, or of the per-second limit scaled to a minute.
    pub fn requests_used(&self, now: Instant) -> Option<(u64, u64, Duration)> {
        let g = self.rpm.as_ref().or(self.per_second.as_ref())?;
        Some((g.capacity(), g.used(now), g.until_full(now)))
    }

    pub fn tokens_used(&self, now: Instant) -> Option<(u64, u64, Duration)> {
        let g = self.tpm.as_ref()?;
        Some((g.capacity(), g.used(now), g.until_full(now)))
    }
}
