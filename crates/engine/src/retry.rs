//! Retry pacing: full-jitter exponential backoff, the upstream's hint winning when it is longer,
//! and a per-lane retry budget.
//!
//! Why a budget and not just `max_attempts`: when an upstream is down, every request retrying
//! three times triples the load on it exactly when it can take least. A budget lets retries add
//! at most `ratio` of recent first attempts (plus a small floor so a quiet lane can still retry),
//! so a failing upstream sees about `(1 + ratio) ×` the client load, never `max_attempts ×`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use laneway_config::RetryConfig;
use tokio::time::Instant;

/// Delay before retry number `retry` (1 for the first retry): uniform in `[0, min(max, base × 2^(retry-1))]`.
pub fn backoff(cfg: &RetryConfig, retry: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20));
    let cap = exp.min(cfg.backoff_max);
    cap.mul_f64(fastrand::f64())
}

/// The delay before retry number `attempt`, or `None` when it would not finish before the
/// deadline. Another lane of the pool is tried after a short backoff; the same lane only once
/// its hint (bounded by `retry.max_pause`) has passed.
pub fn delay(
    retry: &RetryConfig,
    attempt: u32,
    another_lane: bool,
    hint: Option<Duration>,
    remaining: Duration,
) -> Option<Duration> {
    let mut delay = backoff(retry, attempt);
    if !another_lane {
        delay = delay.max(hint.unwrap_or_default().min(retry.max_pause));
    }
    (delay < remaining).then_some(delay)
}

/// Seconds a deposit or a withdrawal counts for: older credit expires.
const WINDOW: usize = 10;

/// One retry, in the slots' fixed-point units (a deposit is `ratio` of one).
const UNIT: i64 = 1000;

/// A lane's retry budget, as tower's `TpsBudget` keeps one: first attempts deposit `ratio` of a
/// retry and retries withdraw one, each counted in its one-second slot of a ten-second window,
/// so credit expires with the window; `min_per_second` retries a second are always allowed on
/// top. Only atomics on the request path: the first caller to enter a new second clears the
/// slots that fell out of the window (a deposit racing that clear may be lost, which errs on
/// the side of fewer retries).
pub struct Budget {
    start: Instant,
    /// Seconds since `start` of the newest slot in use.
    second: AtomicU64,
    /// Net credit per slot, in [`UNIT`]s.
    slots: [AtomicI64; WINDOW],
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            second: AtomicU64::new(0),
            slots: Default::default(),
        }
    }
}

impl Budget {
    /// The slot of this second, after clearing the ones the window left behind.
    fn slot(&self) -> &AtomicI64 {
        let now = Instant::now().duration_since(self.start).as_secs();
        let mut seen = self.second.load(Ordering::Acquire);
        while now > seen {
            match self
                .second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    for s in (seen + 1)..=now.min(seen + WINDOW as u64) {
                        self.slots[(s % WINDOW as u64) as usize].store(0, Ordering::Release);
                    }
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
        &self.slots[(now % WINDOW as u64) as usize]
    }

    /// A first attempt was sent: it earns `ratio` of a retry.
    pub fn deposit(&self, cfg: &RetryConfig) {
        let credit = (cfg.budget_ratio * UNIT as f64) as i64;
        self.slot().fetch_add(credit, Ordering::AcqRel);
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, cfg: &RetryConfig) -> bool {
        let slot = self.slot();
        let floor = (cfg.budget_min_per_second * WINDOW as f64 * UNIT as f64) as i64;
        let credit: i64 = self.slots.iter().map(|s| s.load(Ordering::Acquire)).sum();
        if floor.saturating_add(credit) >= UNIT {
            slot.fetch_sub(UNIT, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, floor: f64) -> RetryConfig {
        RetryConfig {
            budget_ratio: ratio,
            budget_min_per_second: floor,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_full_jitter() {
        let c = RetryConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        let ms = Duration::from_millis;
        for (retry, cap) in [
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(400)),
            (4, ms(800)),
            (5, ms(1000)),
            (40, ms(1000)),
        ] {
            let delays: Vec<Duration> = (0..400).map(|_| backoff(&c, retry)).collect();
            let max = delays.iter().max().copied().unwrap_or_default();
            let min = delays.iter().min().copied().unwrap_or_default();
            assert!(max <= cap, "retry {retry}: {max:?} > {cap:?}");
            // Full jitter spreads retries over the whole range, so a crowd does not come back
            // at once.
            assert!(
                max > cap * 9 / 10 && min < cap / 10,
                "retry {retry}: {min:?}..{max:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_retries_to_a_ratio_of_attempts() {
        let c = cfg(0.2, 0.0);
        let b = Budget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit(&c);
            if b.withdraw(&c) {
                retries += 1;
            }
        }
        assert!(
            (199..=200).contains(&retries),
            "{retries} retries for 1000 requests at 20%"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_min_per_second_over_the_window() {
        let c = cfg(0.0, 10.0);
        let b = Budget::default();
        let first = (0..500).filter(|_| b.withdraw(&c)).count();
        assert_eq!(first, 100, "ten seconds of a floor of ten a second");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(&c), "the withdrawals still count");
        tokio::time::advance(Duration::from_secs(5)).await;
        let again = (0..500).filter(|_| b.withdraw(&c)).count();
        assert_eq!(again, 100, "they expired with the window");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_with_the_window() {
        let c = cfg(0.5, 0.0);
        let b = Budget::default();
        for _ in 0..20 {
            b.deposit(&c);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.withdraw(&c), "credit from nine seconds ago still counts");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!b.withdraw(&c), "credit older than the window is gone");
        // A budget left idle for long clears every slot at once.
        b.deposit(&c);
        b.deposit(&c);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!b.withdraw(&c));
    }

    fn pacing() -> RetryConfig {
        RetryConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_pause: Duration::from_secs(5),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn another_lane_is_tried_after_backoff_only() {
        for attempt in 1..6 {
            let d = delay(
                &pacing(),
                attempt,
                true,
                Some(Duration::from_secs(60)),
                Duration::MAX,
            )
            .unwrap();
            assert!(
                d <= Duration::from_secs(1),
                "the hint is for the lane that gave it"
            );
        }
    }

    #[test]
    fn the_same_lane_waits_for_its_bounded_hint() {
        let d = delay(
            &pacing(),
            1,
            false,
            Some(Duration::from_secs(2)),
            Duration::MAX,
        )
        .unwrap();
        assert!(d >= Duration::from_secs(2));
        let d = delay(
            &pacing(),
            1,
            false,
            Some(Duration::from_secs(3600)),
            Duration::MAX,
        );
        assert_eq!(
            d,
            Some(Duration::from_secs(5)),
            "retry.max_pause bounds a hint"
        );
    }

    #[test]
    fn no_retry_that_cannot_finish_before_the_deadline() {
        let hint = Some(Duration::from_secs(2));
        assert_eq!(
            delay(&pacing(), 1, false, hint, Duration::from_secs(1)),
            None
        );
        assert!(delay(&pacing(), 1, false, hint, Duration::from_secs(3)).is_some());
    }
}
