//! The generic cell rate algorithm with weighted cells, the one limiter behind requests per
//! second (with burst), requests per minute and tokens per minute.
//!
//! State is a single instant, the theoretical arrival time (TAT). A cell of cost `n` advances it
//! by `n × interval`; it conforms when the new TAT is at most `tolerance` ahead of now. Because the
//! state is one number, it is cheap to check under a lane's lock, easy to refund when a token
//! reservation is settled, and maps one-to-one onto a Redis script for shared limits. Unlike a
//! fixed window it never lets 2× the limit through across a window boundary.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Gcra {
    /// Time one unit of cost occupies.
    interval: Duration,
    /// How far ahead of now the TAT may run: `capacity × interval`.
    tolerance: Duration,
    capacity: u64,
    tat: Option<Instant>,
}

/// Why a cost does not fit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// It fits at this instant, if nothing else is taken first.
    Until(Instant),
    /// It is larger than the whole capacity and will never fit.
    Never,
}

impl Gcra {
    /// `capacity` units may be taken at once, refilling at `capacity` per `period`.
    pub fn new(capacity: u64, period: Duration) -> Self {
        let capacity = capacity.max(1);
        let interval = period / u32::try_from(capacity).unwrap_or(u32::MAX);
        Self::with_interval(interval.max(Duration::from_nanos(1)), capacity)
    }

    /// One unit every `interval`, up to `burst` at once.
    pub fn with_interval(interval: Duration, burst: u64) -> Self {
        let burst = burst.max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u32::try_from(burst).unwrap_or(u32::MAX)),
            capacity: burst,
            tat: None,
        }
    }

    pub fn per_second(rate: f64, burst: u32) -> Self {
        Self::with_interval(Duration::from_secs_f64(1.0 / rate), burst.into())
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn cost(&self, n: u64) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Whether `n` units fit at `now` while up to `margin` of the burst stays unused: judged as
    /// of `margin` ago, so in the steady state every admission comes `margin` after the instant
    /// it would conform, at the same rate (the TAT runs ahead of now and the take at `now`
    /// does not move it). The margin is capped by what the burst can hold beyond one unit, so
    /// a burst of one, which has no room to spare, is judged exactly and loses no rate.
    pub fn check_ahead(&self, now: Instant, n: u64, margin: Duration) -> Result<(), Denied> {
        let margin = margin.min(self.tolerance.saturating_sub(self.interval));
        let then = now.checked_sub(margin).unwrap_or(now);
        match self.check(then, n) {
            Err(Denied::Until(at)) => Err(Denied::Until(at.checked_add(margin).unwrap_or(at))),
            other => other,
        }
    }

    /// Whether `n` units fit at `now`, without taking them.
    pub fn check(&self, now: Instant, n: u64) -> Result<(), Denied> {
        if n > self.capacity {
            return Err(Denied::Never);
        }
        let tat = self.tat.map_or(now, |t| t.max(now));
        let Some(new_tat) = tat.checked_add(self.cost(n)) else {
            return Err(Denied::Never);
        };
        let allowed_at = new_tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at <= now {
            Ok(())
        } else {
            Err(Denied::Until(allowed_at))
        }
    }

    /// Takes `n` units if they fit at `now`.
    pub fn take(&mut self, now: Instant, n: u64) -> Result<(), Denied> {
        self.check(now, n)?;
        self.force(now, n);
        Ok(())
    }

    /// Takes `n` units regardless: used to reserve a future slot (then wait until the returned
    /// instant) and to charge usage beyond what was reserved.
    ///
    /// A charge counts for at most one full window: usage an upstream reports is outside input,
    /// and no value of it may block the limit for longer than that.
    pub fn force(&mut self, now: Instant, n: u64) -> Instant {
        let start = self.tat.map_or(now, |t| t.max(now));
        let tat = start
            .checked_add(self.cost(n.min(self.capacity)))
            .unwrap_or(start);
        self.tat = Some(tat);
        tat.checked_sub(self.tolerance).unwrap_or(now).max(now)
    }

    /// Gives back `n` units taken earlier (a token reservation settled below its estimate).
    pub fn refund(&mut self, n: u64) {
        if let Some(t) = self.tat {
            self.tat = Some(t.checked_sub(self.cost(n)).unwrap_or(t));
        }
    }

    /// Takes over another limiter's schedule (a reloaded limit): the time until it is full
    /// again is kept, so traffic admitted under the old limit still counts.
    pub fn carry_usage(&mut self, old: &Gcra) {
        self.tat = old.tat;
    }

    /// Units in use at `now`: how much of the capacity the TAT still covers.
    pub fn used(&self, now: Instant) -> u64 {
        let ahead = self
            .tat
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        // Rounded up: a unit partly refilled is not available yet, so `remaining` never overstates.
        let units = ahead.as_nanos().div_ceil(self.interval.as_nanos().max(1));
        (units as u64).min(self.capacity)
    }

    /// Time until every unit is available again.
    pub fn until_full(&self, now: Instant) -> Duration {
        self.tat
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_steady() {
        let t0 = Instant::now();
        let mut g = Gcra::per_second(5.0, 10);
        for _ in 0..10 {
            assert!(g.take(t0, 1).is_ok());
        }
        let Err(Denied::Until(at)) = g.take(t0, 1) else {
            panic!("burst exceeded")
        };
        assert_eq!(at - t0, Duration::from_millis(200));
        assert!(g.take(at, 1).is_ok());
        assert_eq!(g.take(t0, 11), Err(Denied::Never));
    }

    /// Admits as soon as `check_ahead` allows and records each admission instant.
    fn admissions(mut g: Gcra, margin: Duration, n: usize) -> Vec<Duration> {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut now = t0;
        let mut at = Vec::new();
        while at.len() < n {
            match g.check_ahead(now, 1, margin) {
                Ok(()) => {
                    g.take(now, 1).unwrap();
                    at.push(now - t0);
                }
                Err(Denied::Until(next)) => now = next,
                Err(Denied::Never) => panic!("one unit always fits"),
            }
        }
        at
    }

    #[test]
    fn check_ahead_keeps_a_margin_in_the_steady_state_without_losing_rate() {
        let margin = Duration::from_millis(5);
        // 6000 a minute: the burst but the one unit held back goes at once, then one every
        // 10 ms, each 5 ms after the instant it would conform, so an upstream bucket of the
        // same size always has half a unit to spare.
        let at = admissions(Gcra::new(6000, Duration::from_secs(60)), margin, 6009);
        assert!(at[..5999].iter().all(|d| d.is_zero()));
        let steady: Vec<_> = at[5999..].iter().map(Duration::as_millis).collect();
        assert_eq!(steady, [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]);
        // A burst of one has no room for a margin: it is judged exactly, every 100 ms.
        let at = admissions(Gcra::per_second(10.0, 1), margin, 4);
        let ms: Vec<_> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 100, 200, 300]);
    }

    #[test]
    fn refund_gives_room_back() {
        let t0 = Instant::now();
        let mut g = Gcra::new(100, Duration::from_secs(60));
        g.take(t0, 100).unwrap();
        assert!(g.check(t0, 10).is_err());
        g.refund(40);
        assert!(g.take(t0, 40).is_ok());
        assert!(g.check(t0, 1).is_err());
    }

    proptest! {
        /// Like the continuously refilling buckets providers use, at most `capacity` plus what
        /// refills during a window is ever taken in it (2 × capacity per period), and a denial's
        /// instant is never early: taking at it succeeds.
        #[test]
        fn never_exceeds_and_hints_are_honest(
            capacity in 1u64..50,
            steps in proptest::collection::vec((0u64..3_000, 1u64..5), 1..200),
        ) {
            let period = Duration::from_secs(1);
            let t0 = Instant::now();
            let mut g = Gcra::new(capacity, period);
            let mut now = t0;
            let mut taken: Vec<(Instant, u64)> = Vec::new();
            for (gap_ms, cost) in steps {
                now += Duration::from_millis(gap_ms);
                match g.take(now, cost) {
                    Ok(()) => taken.push((now, cost)),
                    Err(Denied::Until(at)) => {
                        prop_assert!(at > now);
                        let mut probe = g.clone();
                        prop_assert!(probe.take(at, cost).is_ok(), "retry hint was early");
                    }
                    Err(Denied::Never) => prop_assert!(cost > capacity),
                }
            }
            // Every window [start, end] between two takes holds at most capacity + refill.
            for (i, &(start, _)) in taken.iter().enumerate() {
                let mut in_window = 0;
                for &(end, cost) in &taken[i..] {
                    in_window += cost;
                    let refilled = ((end - start).as_nanos() * u128::from(capacity) / period.as_nanos()) as u64;
                    prop_assert!(in_window <= capacity + refilled, "{in_window} > {capacity} + {refilled}");
                }
            }
        }
    }
}
