//! The operator's view of a lane and hands on it: its snapshot and waiting list for the admin
//! API, the panel and metrics; a fixed, serial or adaptive limit set at run time; a pause; and
//! a hot reload of its spec.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{estimate_wait, Lane, LaneSpec, State, ADAPTIVE_CEILING, UNLIMITED};
use crate::adaptive::Adaptive;
use crate::health::Health;

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

impl Lane {
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
}
