//! The adaptive concurrency limit: how many requests at once an upstream takes when nobody
//! says, found quickly and followed when it changes.
//!
//! Every answer is judged against where its request stood when it was sent ([`Sent`]):
//!
//! - **A refusal** (429, 503) of a request sent with `n` in flight says the capacity is below
//!   `n`. Above every level that succeeded lately, that is the edge being found: the limit
//!   becomes `n - 1`, no guessing. At or below a level that succeeded, the capacity may have
//!   fallen, or the upstream's own count may lag behind an answer it just gave (a slot it
//!   answered still counted when the next request arrives). One such refusal is a strike: the
//!   lane holds back an eighth of a request's time, so the next request does not meet the same
//!   stale count, and a success at that level clears it. A second before such a success says
//!   the capacity fell: the limit is cut to 70%, once per round trip — refusals of requests
//!   sent before the cut carry no news and are not counted again. Finding the edge starts a
//!   new epoch too: the requests granted under the higher limit are still out, and their
//!   successes above the edge are no proof of room.
//! - The count `n` is taken when the request is sent upstream ([`crate::Permit::begin`]), not
//!   when its slot was granted: between the two, others may have finished.
//! - **A success** at `n` in flight says the capacity is at least `n`.
//! - **Latency** rising with concurrency means the upstream queues internally: when the
//!   short-term average passes twice the long-term one, the limit steps back 10%. Both averages
//!   see the same mix of short and long requests, and each sample is clipped at four times the
//!   long-term average, so one slow answer or a noisy machine does not move the limit.
//! - **`x-ratelimit-remaining-requests`**: the limit does not grow past what the upstream says
//!   is left in its window.
//!
//! Growth: from [`START`] the limit grows sixteenfold per round trip, smoothly in time, until
//! the first refusal (see [`Adaptive::grow`]); below a known ceiling it closes half the gap
//! per round trip; at the ceiling, while requests wait, it probes one higher after
//! [`PROBE_FIRST`] successes, backing off to [`PROBE_MAX`] while probes keep failing. After a
//! cut (a capacity that fell may come back) probes are also due after 16 round trips, backing
//! off to 128: at a limit of 1 or 2, 64 successes are 32 to 64 round trips, and a capacity
//! that doubled again would wait that long to be seen. A steady capacity costs under 2%
//! refusals, and one that grew is found within one interval. A success with fewer than a
//! quarter of the slots in use says nothing about more.

use std::time::Duration;

use tokio::time::Instant;

/// Where a request stood when it was sent: what its answer can teach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Requests in flight, this one included.
    pub in_flight: u32,
    /// The limit in force.
    pub limit: u32,
    /// The controller's epoch: answers to requests sent before the last cut are old news.
    pub epoch: u64,
}

/// Where an adaptive limit starts: a refusal costs one fast answer, so starting above one
/// request is cheap, and four keeps a capacity of two to two refusals.
pub const START: u32 = 4;
/// Successes at the ceiling before the first probe one higher.
pub const PROBE_FIRST: u32 = 64;
/// The most successes between probes while they keep failing.
pub const PROBE_MAX: u32 = 256;
/// Round trips at the ceiling before the first probe: a small limit sees few answers per round
/// trip, so counting answers alone would leave a capacity that grew unseen for many seconds.
const PROBE_FIRST_RTTS: u32 = 16;
/// The most round trips between probes while they keep failing.
const PROBE_MAX_RTTS: u32 = 128;
/// How much slow start multiplies the limit per round trip.
const RAMP: f64 = 16.0;
/// Slow start stays within this multiple of the highest count that succeeded.
const SHOWN: f64 = 8.0;
/// The same after a probe found that a known capacity grew.
const RAMP_AGAIN: f64 = 2.0;
/// Successes above the ceiling that prove the capacity grew.
const PASSES: u32 = 4;
/// What is kept of the limit when the capacity fell.
const CUT: f64 = 0.7;
/// What is kept of the limit when latency says the upstream queues.
const EASE: f64 = 0.9;

#[derive(Debug, Clone)]
pub struct Adaptive {
    limit: f64,
    max: f64,
    /// The lowest in-flight count refused since the capacity last grew: it is below this.
    ceiling: Option<u32>,
    /// The highest in-flight count known good since the last cut, below the ceiling.
    safe: u32,
    /// Successes at or above the ceiling since the last refusal there: the probe's evidence.
    passes: u32,
    epoch: u64,
    /// Successes at the ceiling since the last probe.
    at_ceiling: u32,
    /// How many times the probe interval doubled since probes last succeeded or the limit was
    /// cut: the interval is `PROBE_FIRST << level` answers or `PROBE_FIRST_RTTS << level`
    /// round trips, whichever comes first, within their maxima.
    probe_level: u32,
    /// Whether the limit was cut since probes last succeeded: a capacity that fell may come
    /// back, so probes are paced by round trips too, not by successes alone.
    after_cut: bool,
    /// A refusal at a level that succeeded lately, not yet confirmed: one alone may be the
    /// upstream's own count lagging behind an answer it gave; a second before a success at or
    /// above it says the capacity fell.
    strike: Option<u32>,
    /// Latency averages (seconds): over about 16 answers and about 256.
    short: f64,
    long: f64,
    /// Slow start: since when, and from which limit, the limit has been growing.
    ramp: Option<(Instant, f64)>,
    /// What the upstream last said is left in its window (`x-ratelimit-remaining-requests`).
    room: f64,
    /// Slow start's growth per round trip: fast at first, gentle once a probe found more
    /// room near a capacity already known.
    ramp_rate: f64,
}

impl Adaptive {
    pub fn new(start: u32, max: u32) -> Self {
        let max = max.max(1);
        Self {
            limit: f64::from(start.clamp(1, max)),
            max: f64::from(max),
            ceiling: None,
            safe: 0,
            passes: 0,
            epoch: 0,
            at_ceiling: 0,
            probe_level: 0,
            after_cut: false,
            strike: None,
            short: 0.0,
            long: 0.0,
            ramp: None,
            room: f64::INFINITY,
            ramp_rate: RAMP,
        }
    }

    pub fn limit(&self) -> u32 {
        // `limit` stays within 1..=max (a u32), so the cast cannot truncate.
        self.limit.floor().clamp(1.0, self.max) as u32
    }

    /// Stamps a request granted with `in_flight` running (itself included).
    pub fn sent(&self, in_flight: u32) -> Sent {
        Sent {
            in_flight,
            limit: self.limit(),
            epoch: self.epoch,
        }
    }

    /// The lowest in-flight count the upstream refused since its capacity last grew.
    pub fn ceiling(&self) -> Option<u32> {
        self.ceiling
    }

    /// An answer: `latency` to the response headers, `headroom` the requests the upstream says
    /// are left in its window, `waiting` whether requests wait for a slot now (a probe for
    /// more capacity is only worth its risk when someone would use it).
    pub fn success(&mut self, sent: Sent, latency: Duration, headroom: Option<u64>, waiting: bool) {
        let n = sent.in_flight;
        let fresh = sent.epoch == self.epoch;
        match self.ceiling {
            // Counted in flight when granted, a request may reach the upstream after another
            // left it: one success above the ceiling proves little, a few in a row do.
            Some(c) if n >= c => {
                self.passes += u32::from(fresh);
                if self.passes >= PASSES {
                    // The capacity grew: find the new edge as fast as the first.
                    (self.ceiling, self.passes) = (None, 0);
                    self.safe = c;
                    self.ramp_rate = RAMP_AGAIN;
                    self.probe_level = 0;
                    self.after_cut = false;
                }
            }
            _ if fresh => self.safe = self.safe.max(n),
            _ => {}
        }
        if self.strike.is_some_and(|s| n >= s) {
            self.strike = None;
        }
        if self.queueing(latency) && fresh {
            self.cut(EASE, n);
            // Take the slower level as the new usual: each doubling costs one step back, not
            // a cut every round trip until the long average catches up. If the step back
            // helped, latency falls below it again.
            self.long = self.long.max(self.short);
            return;
        }
        if u64::from(n) * 4 < u64::from(sent.limit) {
            return;
        }
        self.room = headroom.map_or(f64::INFINITY, |r| r as f64);
        if self.limit >= self.room {
            return;
        }
        let next = match self.ceiling {
            // Slow start grows with time, in `grow`.
            None => self.limit,
            Some(c) => {
                let top = f64::from(c.saturating_sub(1).max(1));
                if self.limit < top {
                    let gap = ((top - self.limit) / 2.0).max(1.0);
                    (self.limit + gap / self.limit).min(top)
                } else {
                    self.at_ceiling += 1;
                    if self.at_ceiling >= self.probe_due() && waiting {
                        self.at_ceiling = 0;
                        f64::from(c)
                    } else {
                        self.limit
                    }
                }
            }
        };
        self.limit = next.clamp(1.0, self.max);
    }

    /// Slow start, until the first refusal: while requests wait, the limit grows fourfold per
    /// round trip, continuously in time rather than in steps per answer. Answers to a burst
    /// arrive together; growing per answer would send the whole next step at once, and when
    /// that step crosses the capacity every request of it is refused before the first refusal
    /// is back. Growing in time spreads the new requests over the round trip, so the first
    /// refusal stops the growth a few requests past the edge. It never runs more than eight
    /// times past the highest count that succeeded, for when answers come back late. Returns
    /// when the next whole request is due, for the caller's timer.
    ///
    /// `lag` is how long granted requests take to be sent (a loaded caller is slow to send
    /// and as slow to hear refusals back): it counts in the round trip the growth is paced by.
    pub fn grow(&mut self, now: Instant, waiting: bool, lag: Duration) -> Option<Instant> {
        if self.ceiling.is_some() || self.long == 0.0 || !waiting || self.limit >= self.max {
            self.ramp = None;
            return None;
        }
        let rtt = (self.short + 4.0 * lag.as_secs_f64()).max(0.000_5);
        let (since, base) = *self.ramp.get_or_insert((now, self.limit));
        let rounds = now.saturating_duration_since(since).as_secs_f64() / rtt;
        // Never far past what answers have shown the upstream takes: when answers come back
        // late (a loaded machine), growing in time alone runs past the edge unseen.
        let shown = f64::from(self.safe.max(START)) * SHOWN;
        let top = self
            .max
            .min(self.room.max(self.limit))
            .min(shown.max(self.limit));
        let grown = base * self.ramp_rate.powf(rounds);
        self.limit = self.limit.max(grown).min(top);
        if grown > top {
            // Held back: grow on from here once answers allow, not in one jump to where the
            // clock would have been.
            self.ramp = Some((now, self.limit));
            return None;
        }
        // When base × rate^(t / rtt) reaches the next whole request.
        let next = (self.limit.floor() + 1.0).min(self.max);
        let at = rtt * (next / base).ln() / self.ramp_rate.ln();
        (at.is_finite() && self.limit < top)
            .then(|| since + Duration::from_secs_f64(at.clamp(0.0, 3600.0)))
    }

    /// Successes at the ceiling before the next probe.
    fn probe_due(&self) -> u32 {
        let answers = PROBE_FIRST
            .saturating_mul(1 << self.probe_level.min(8))
            .min(PROBE_MAX);
        let rtts = PROBE_FIRST_RTTS
            .saturating_mul(1 << self.probe_level.min(8))
            .min(PROBE_MAX_RTTS);
        if !self.after_cut {
            return answers;
        }
        // At the ceiling, a round trip brings about `limit` answers.
        answers.min(rtts.saturating_mul(self.limit()))
    }

    /// A refusal for load (429, 503). Returns whether it came where there should have been room
    /// (a level that succeeded lately) and was not yet taken as news: the caller holds the
    /// lane back a moment, since the upstream's count may lag and the next request sent at once
    /// would be refused too.
    pub fn overload(&mut self, sent: Sent) -> bool {
        let n = sent.in_flight.max(1);
        if n > self.safe {
            if self.ceiling.is_some_and(|c| n >= c) {
                self.probe_level = (self.probe_level + 1).min(8);
            }
            self.passes = 0;
            if self.ceiling.is_none_or(|c| n < c) {
                self.ceiling = Some(n);
                // Requests granted under the higher limit are still out, and on a loaded
                // machine their count at sending overstates what the upstream held: their
                // successes above the new edge would look like room that is not there.
                self.epoch += 1;
            }
            self.limit = self.limit.min(f64::from(n - 1)).max(1.0);
            self.at_ceiling = 0;
        } else if sent.epoch == self.epoch {
            match self.strike {
                Some(_) => self.cut(CUT, n),
                None => {
                    self.strike = Some(n);
                    return true;
                }
            }
        }
        false
    }

    /// The capacity fell (or the upstream queues) at `n` in flight: keep `factor` of the limit
    /// and start a new epoch so answers to older requests are not counted again. The ceiling
    /// moves to `n` but never below the new limit: an upstream's own count can lag (a request
    /// it answered may still count there for a moment), so a refusal at a count far below
    /// what just succeeded does not collapse the limit.
    fn cut(&mut self, factor: f64, n: u32) {
        self.limit = (self.limit * factor).max(1.0);
        let floor = self.limit() + 1;
        self.ceiling = Some(self.ceiling.map_or(n, |c| c.min(n)).max(floor));
        self.safe = self.limit();
        self.passes = 0;
        self.epoch += 1;
        self.at_ceiling = 0;
        self.probe_level = 0;
        self.after_cut = true;
        self.strike = None;
    }

    /// Feeds the latency averages; whether the recent answers are twice as slow as usual.
    fn queueing(&mut self, latency: Duration) -> bool {
        let x = latency.as_secs_f64();
        if self.long == 0.0 {
            (self.short, self.long) = (x, x);
            return false;
        }
        let x = x.min(self.long * 4.0);
        self.short += (x - self.short) / 16.0;
        self.long += (x - self.long) / 256.0;
        // The floor keeps sub-millisecond answers' jitter from counting.
        self.short > 2.0 * self.long + 0.002
    }
}

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;
