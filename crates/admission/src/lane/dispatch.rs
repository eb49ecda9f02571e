//! Serving a lane's queue: the dispatcher that hands free slots to waiters in fair order, the
//! timer task that runs it when a rate limit or a pause ends, and the lessons of upstream
//! answers (cooldowns, the circuit, the adaptive limit) that change what it may hand out.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Lane, State, UPSTREAM_JITTER};
use crate::adaptive::Sent;
use crate::error::{AdmissionError, Scope};
use crate::gcra::Denied;
use crate::health::Feedback;
use crate::rates::Blocked;

impl Lane {
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
        // Only the upstream's own hints are news for other replicas.
        let mut hinted = matches!(fb, Feedback::Overloaded { .. } | Feedback::Exhausted { .. });
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
                        let unexpected = a.overload(sent);
                        // The lower limit is the answer to a refusal for concurrency; a hint no
                        // longer than a request takes says as much, and pausing the whole lane
                        // for it would only leave slots idle. A longer one is a spent budget.
                        pause = retry_after.filter(|h| *h > service.saturating_mul(2));
                        // A refusal where there was room: the upstream may still count an
                        // answer it gave, and a request sent into that moment is refused
                        // too, and the one after it. An eighth of a request's time lets its
                        // count catch up.
                        if unexpected && pause.is_none() {
                            pause = Some((service / 8).max(Duration::from_millis(1)));
                            hinted = false;
                        }
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

    /// Grows an adaptive limit's slow start; when its next step is due. It grows only while the
    /// slots it gave are in use upstream: on a loaded gateway granted requests take a while to
    /// be sent, and answers (refusals too) a while to come back; growing meanwhile would only
    /// run past the edge unseen.
    fn ramp(&self, st: &mut State, now: Instant) -> Option<Instant> {
        st.adaptive.as_ref()?;
        let unsent = st
            .in_flight
            .saturating_sub(self.at_upstream.load(Ordering::Acquire));
        let waiting = self.queued() > 0 && unsent.saturating_mul(4) <= st.in_flight;
        let lag = Duration::from_micros(self.send_lag_us.load(Ordering::Relaxed));
        let ramp = st.adaptive.as_mut().and_then(|a| a.grow(now, waiting, lag));
        st.limit = st.configured_limit();
        ramp
    }

    /// Refuses the head of the queue, which can never fit: only after a reload lowered the
    /// limit below what this waiter needs.
    fn refuse_head(&self, st: &mut State, tokens: u64) {
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
    }

    /// Serves waiters while capacity allows, in fair order; arms the timer when a rate limit or
    /// a pause is what holds the head of the queue back.
    pub fn dispatch(self: &Arc<Self>) {
        let now = Instant::now();
        let mut st = self.lock();
        let ramp = self.ramp(&mut st, now);
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
                    self.refuse_head(&mut st, tokens);
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

impl Lane {
    pub(super) fn spawn_timer(lane: Weak<Lane>, timer: Arc<Notify>) {
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
}
