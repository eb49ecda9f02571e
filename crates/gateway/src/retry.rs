//! Retry pacing: full-jitter exponential backoff, the upstream's hint winning when it is longer,
//! and a per-lane retry budget.
//!
//! Why a budget and not just `max_attempts`: when an upstream is down, every request retrying
//! three times triples the load on it exactly when it can take least. A budget lets retries add
//! at most `ratio` of recent first attempts (plus a small floor so a quiet lane can still retry),
//! so a failing upstream sees about `(1 + ratio) ×` the client load, never `max_attempts ×`.

use std::sync::Mutex;
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

/// A token bucket of retries, refilled by first attempts (`ratio` each) and by time
/// (`min_per_second`), capped at what ten seconds of that floor plus a burst would hold. It
/// starts with one second of the floor, so a quiet lane can retry at once.
#[derive(Default)]
pub struct Budget {
    state: Mutex<Option<(f64, Instant)>>,
}

impl Budget {
    fn refill<'s>(cfg: &RetryConfig, s: &'s mut Option<(f64, Instant)>) -> &'s mut (f64, Instant) {
        let now = Instant::now();
        let cap = (cfg.budget_min_per_second * 10.0).max(1.0) + 100.0 * cfg.budget_ratio;
        let s = s.get_or_insert((cfg.budget_min_per_second, now));
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * cfg.budget_min_per_second).min(cap);
        s.1 = now;
        s
    }

    /// A first attempt was sent: it earns `ratio` of a retry.
    pub fn deposit(&self, cfg: &RetryConfig) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refill(cfg, &mut s).0 += cfg.budget_ratio;
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, cfg: &RetryConfig) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = Self::refill(cfg, &mut s);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
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
    async fn the_floor_refills_with_time() {
        let c = cfg(0.0, 10.0);
        let b = Budget::default();
        let initial = (0..100).filter(|_| b.withdraw(&c)).count();
        assert_eq!(initial, 10, "one second of the floor to start with");
        tokio::time::advance(Duration::from_millis(500)).await;
        let n = (0..100).filter(|_| b.withdraw(&c)).count();
        assert_eq!(n, 5);
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
