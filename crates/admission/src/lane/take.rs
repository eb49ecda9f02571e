//! Taking a slot: the fast path a request takes by itself when the lane has room and nobody
//! waits, and the refusal a reject-mode lane gives when it has not.

use tokio::time::Instant;

use super::{estimate_wait, Busy, Lane, UPSTREAM_JITTER};
use crate::adaptive::Sent;
use crate::error::{AdmissionError, Scope};
use crate::gcra::Denied;
use crate::rates::Blocked;

impl Lane {
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
}
