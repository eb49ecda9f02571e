//! Continuously refilling buckets, the way OpenAI's per-minute limits behave: a limit of 60 rpm
//! holds 60 requests and gains one back every second.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

/// The outcome of taking from a bucket, with what the `x-ratelimit-*` headers report.
pub struct Taken {
    pub ok: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// When refused: time until `cost` fits.
    pub retry_after: Duration,
}

impl Bucket {
    pub fn per_minute(limit: u64) -> Self {
        Self {
            capacity: limit as f64,
            per_sec: limit as f64 / 60.0,
            state: Mutex::new((limit as f64, Instant::now())),
        }
    }

    pub fn take(&self, cost: f64) -> Taken {
        let now = Instant::now();
        // The lock guards two floats for a few instructions; a poisoned lock still holds them.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let level = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_sec).min(self.capacity);
        let ok = level >= cost.min(self.capacity);
        let after = if ok { level - cost } else { level };
        *s = (after, now);
        // `check` refuses a limit of 0; were one here, 0/0 and x/0 would read as 0 and a day.
        let secs = |missing: f64| crate::secs(missing / self.per_sec);
        Taken {
            ok,
            limit: self.capacity as u64,
            remaining: after.max(0.0) as u64,
            reset: secs(self.capacity - after),
            retry_after: if ok {
                Duration::ZERO
            } else {
                secs(cost.min(self.capacity) - level)
            },
        }
    }

    pub fn reset(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = (self.capacity, Instant::now());
    }
}

/// OpenAI's reset format: `1s`, `850ms`, `6m0s`.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        if (s - s.round()).abs() < 0.0005 {
            format!("{}s", s.round() as u64)
        } else {
            format!("{s:.3}s")
        }
    } else {
        let total = d.as_secs();
        format!("{}m{}s", total / 60, total % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refills_continuously() {
        let b = Bucket::per_minute(60);
        for _ in 0..60 {
            assert!(b.take(1.0).ok);
        }
        let t = b.take(1.0);
        assert!(!t.ok);
        assert_eq!(t.retry_after, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.take(1.0).ok);
        assert!(!b.take(1.0).ok);
    }

    #[test]
    fn formats_like_openai() {
        assert_eq!(openai_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.500s");
    }
}
