//! A whole adaptive lane against a simulated upstream with a hidden capacity, on paused time,
//! over the matrix `bench/adaptive.py` measures against the real mock: capacity 1, 2, 4, 5, 16
//! and 64; latency 50 ms and 500 ms; 500 requests at once or at a steady rate; the capacity
//! halving and doubling during a run; and an upstream whose own count lags (a slot it has
//! answered is now and then still counted when the next request arrives, as a real server's
//! may be), which at small capacities refuses a request the capacity has room for.
//!
//! Not asserted, by arithmetic: following a doubling within 5 s at 500 ms and a small
//! capacity. It takes a probe above the limit every few seconds, and each probe the capacity
//! has no room for is a refusal: at capacity 2 and 500 ms, one every 4 s is one refusal in 16
//! answers, far above 2%. There a doubling is found within the probe interval (16 to 128 round
//! trips). A count that lags during slow start at large capacities (64 at 50 ms) looks like the
//! edge and costs up to a third more time (1.36× measured). Every cell: makespan within 1.3× the ideal and at most 2%
//! of upstream calls refused; after a change, the limit follows within 5 s.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use laneway_admission::{acquire, Ask, Feedback, Key, KeySpec, Lane, LaneSpec, Mode, RateSpec};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Refuses at once above its capacity, with a hint of one latency (as the mock does); answers
/// the rest after its latency, give or take 5%.
struct Upstream {
    capacity: AtomicU32,
    in_flight: AtomicU32,
    latency: Duration,
    calls: AtomicU32,
    refused: AtomicU32,
    /// The share of answers whose slot the upstream frees a millisecond after answering.
    lag: f64,
}

impl Upstream {
    async fn call(&self, seq: u64) -> Result<(), Duration> {
        self.calls.fetch_add(1, Relaxed);
        let n = self.in_flight.fetch_add(1, Relaxed) + 1;
        if n > self.capacity.load(Relaxed) {
            self.in_flight.fetch_sub(1, Relaxed);
            self.refused.fetch_add(1, Relaxed);
            return Err(self.latency);
        }
        let mut rng = fastrand::Rng::with_seed(seq);
        sleep(self.latency.mul_f64(rng.f64() * 0.1 + 0.95)).await;
        Ok(())
    }

    /// Frees the slot of an answered call: at once, or now and then a moment later.
    fn free(self: &Arc<Self>, seq: u64) {
        if fastrand::Rng::with_seed(!seq).f64() < self.lag {
            let up = self.clone();
            tokio::spawn(async move {
                sleep(Duration::from_millis(1)).await;
                up.in_flight.fetch_sub(1, Relaxed);
            });
        } else {
            self.in_flight.fetch_sub(1, Relaxed);
        }
    }
}

/// One client request, as the gateway runs it: wait for a slot, call, teach the lane, and on a
/// refusal retry after the gateway's default backoff (full jitter from 200 ms, doubling) or
/// the upstream's hint, whichever is longer.
async fn client(lane: Arc<Lane>, key: Arc<Key>, up: Arc<Upstream>, seq: u64) {
    let cancel = CancellationToken::new();
    for attempt in 0u64.. {
        let ask = Ask {
            key: &key,
            priority: 0,
            tokens: 1,
            deadline: Instant::now() + Duration::from_secs(3600),
            cancel: &cancel,
            tag: seq,
        };
        let lanes = [lane.clone()];
        let mut permit = acquire(&lanes, ask).await.expect("the queue is roomy");
        permit.begin();
        let sent = Instant::now();
        match up.call(seq * 64 + attempt).await {
            Ok(()) => {
                up.free(seq * 64 + attempt);
                permit.feedback(Feedback::Success {
                    latency: sent.elapsed(),
                    headroom: None,
                });
                return;
            }
            Err(hint) => {
                permit.feedback(Feedback::Overloaded {
                    retry_after: Some(hint),
                });
                drop(permit);
                let cap = Duration::from_millis(200 << attempt.min(7));
                let backoff = cap.mul_f64(fastrand::Rng::with_seed(seq ^ (attempt << 32)).f64());
                sleep(backoff.max(hint)).await;
            }
        }
    }
}

enum Arrival {
    Burst,
    /// At 90% of what the upstream can serve.
    Steady,
}

/// The capacity over the run: `(from second, capacity)` after the first.
struct Cell {
    capacity: u32,
    latency_ms: u64,
    requests: u32,
    arrival: Arrival,
    changes: &'static [(u64, u32)],
    /// See [`Upstream::lag`].
    lag: f64,
}

struct Outcome {
    makespan: Duration,
    ideal: Duration,
    calls: u32,
    refused: u32,
    /// Per change: how long until the limit reached the new capacity's band.
    reactions: Vec<Duration>,
}

async fn run(cell: Cell) -> Outcome {
    let lane = Lane::new(LaneSpec {
        name: "sim".into(),
        max_concurrent: None,
        rates: RateSpec::default(),
        queue_max_len: 100_000,
        queue_timeout: Duration::from_secs(3600),
        on_limit: Mode::Queue,
        adaptive: true,
        max_pause: Duration::from_secs(300),
    });
    let key = Key::new(0, KeySpec::anonymous());
    let latency = Duration::from_millis(cell.latency_ms);
    let up = Arc::new(Upstream {
        capacity: AtomicU32::new(cell.capacity),
        in_flight: AtomicU32::new(0),
        latency,
        calls: AtomicU32::new(0),
        refused: AtomicU32::new(0),
        lag: cell.lag,
    });
    let start = Instant::now();
    let interval = latency.div_f64(0.9 * f64::from(cell.capacity));
    let mut tasks = tokio::task::JoinSet::new();
    // The capacity changes, and the limit watched every 10 ms for the reaction to each.
    let watch = {
        let (lane, up, changes) = (lane.clone(), up.clone(), cell.changes);
        tokio::spawn(async move {
            let mut reactions = Vec::new();
            for &(at, capacity) in changes {
                sleep_until(start + Duration::from_secs(at)).await;
                let old = up.capacity.swap(capacity, Relaxed);
                let changed = Instant::now();
                loop {
                    let limit = lane.limit_in_force().unwrap_or(u32::MAX);
                    let settled = if capacity < old {
                        limit <= capacity
                    } else {
                        limit * 4 >= capacity * 3
                    };
                    if settled {
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                reactions.push(changed.elapsed());
            }
            reactions
        })
    };
    for seq in 0..cell.requests {
        if let Arrival::Steady = cell.arrival {
            sleep_until(start + interval * seq).await;
        }
        tasks.spawn(client(
            lane.clone(),
            key.clone(),
            up.clone(),
            u64::from(seq),
        ));
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client task");
    }
    let makespan = start.elapsed();
    let reactions = watch.await.expect("watch task");
    Outcome {
        makespan,
        ideal: ideal(&cell, latency, interval),
        calls: up.calls.load(Relaxed),
        refused: up.refused.load(Relaxed),
        reactions,
    }
}

/// The best any scheduler could do: every request arriving is served at once while capacity
/// allows; a burst takes `ceil(n / capacity)` latencies; with changes, the time by which the
/// capacity over the run has served `n` latencies' worth of work.
fn ideal(cell: &Cell, latency: Duration, interval: Duration) -> Duration {
    let n = f64::from(cell.requests);
    match (&cell.arrival, cell.changes) {
        (Arrival::Steady, _) => interval * (cell.requests - 1) + latency,
        (Arrival::Burst, []) => latency * cell.requests.div_ceil(cell.capacity),
        (Arrival::Burst, changes) => {
            let mut work = n * latency.as_secs_f64();
            let (mut t, mut c) = (0.0, f64::from(cell.capacity));
            for &(at, next) in changes {
                let span = at as f64 - t;
                if work <= span * c {
                    break;
                }
                work -= span * c;
                (t, c) = (at as f64, f64::from(next));
            }
            Duration::from_secs_f64(t + work / c)
        }
    }
}

async fn check(cell: Cell) {
    let label = format!(
        "capacity {} latency {} ms {} {}{}",
        cell.capacity,
        cell.latency_ms,
        match cell.arrival {
            Arrival::Burst => "burst",
            Arrival::Steady => "steady",
        },
        cell.requests,
        if cell.lag > 0.0 { " lagging" } else { "" }
    );
    let o = run(cell).await;
    let ratio = o.makespan.as_secs_f64() / o.ideal.as_secs_f64();
    let share = f64::from(o.refused) / f64::from(o.calls);
    println!(
        "{label}: makespan {:.2} s, ideal {:.2} s ({ratio:.2}×), {} of {} calls refused ({:.2}%), reactions {:?}",
        o.makespan.as_secs_f64(),
        o.ideal.as_secs_f64(),
        o.refused,
        o.calls,
        share * 100.0,
        o.reactions
    );
    assert!(ratio <= 1.3, "{label}: makespan {ratio:.2}× the ideal");
    assert!(share <= 0.02, "{label}: {:.2}% refused", share * 100.0);
    for r in o.reactions {
        assert!(r <= Duration::from_secs(5), "{label}: reacted in {r:?}");
    }
}

macro_rules! cells {
    ($($name:ident: $capacity:expr, $latency:expr, $arrival:ident $(, lag $lag:expr)?;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            check(Cell {
                capacity: $capacity,
                latency_ms: $latency,
                requests: 500,
                arrival: Arrival::$arrival,
                changes: &[],
                lag: 0.0 $(+ $lag)?,
            })
            .await;
        }
    )*};
}

cells! {
    capacity_1_latency_50_burst: 1, 50, Burst;
    capacity_1_latency_50_steady: 1, 50, Steady;
    capacity_1_latency_500_burst: 1, 500, Burst;
    capacity_1_latency_500_steady: 1, 500, Steady;
    capacity_4_latency_50_burst: 4, 50, Burst;
    capacity_4_latency_50_steady: 4, 50, Steady;
    capacity_4_latency_500_burst: 4, 500, Burst;
    capacity_4_latency_500_steady: 4, 500, Steady;
    capacity_1_latency_50_burst_lagging: 1, 50, Burst, lag 0.01;
    capacity_2_latency_50_burst_lagging: 2, 50, Burst, lag 0.01;
    capacity_2_latency_500_burst_lagging: 2, 500, Burst, lag 0.01;
    capacity_4_latency_50_burst_lagging: 4, 50, Burst, lag 0.01;
    capacity_16_latency_50_burst_lagging: 16, 50, Burst, lag 0.01;
    capacity_2_latency_50_burst: 2, 50, Burst;
    capacity_2_latency_50_steady: 2, 50, Steady;
    capacity_2_latency_500_burst: 2, 500, Burst;
    capacity_2_latency_500_steady: 2, 500, Steady;
    capacity_5_latency_50_burst: 5, 50, Burst;
    capacity_5_latency_50_steady: 5, 50, Steady;
    capacity_5_latency_500_burst: 5, 500, Burst;
    capacity_5_latency_500_steady: 5, 500, Steady;
    capacity_16_latency_50_burst: 16, 50, Burst;
    capacity_16_latency_50_steady: 16, 50, Steady;
    capacity_16_latency_500_burst: 16, 500, Burst;
    capacity_16_latency_500_steady: 16, 500, Steady;
    capacity_64_latency_50_burst: 64, 50, Burst;
    capacity_64_latency_50_steady: 64, 50, Steady;
    capacity_64_latency_500_burst: 64, 500, Burst;
    capacity_64_latency_500_steady: 64, 500, Steady;
}

#[tokio::test(start_paused = true)]
async fn capacity_16_halves_and_doubles_at_50_ms() {
    check(Cell {
        capacity: 16,
        latency_ms: 50,
        requests: 2400,
        arrival: Arrival::Burst,
        changes: &[(3, 8), (6, 16)],
        lag: 0.0,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn capacity_64_halves_and_doubles_at_500_ms() {
    check(Cell {
        capacity: 64,
        latency_ms: 500,
        requests: 2000,
        arrival: Arrival::Burst,
        changes: &[(6, 32), (12, 64)],
        lag: 0.0,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn capacity_2_halves_and_doubles_at_50_ms() {
    check(Cell {
        capacity: 2,
        latency_ms: 50,
        requests: 600,
        arrival: Arrival::Burst,
        changes: &[(4, 1), (8, 2)],
        lag: 0.0,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn capacity_4_halves_and_doubles_at_50_ms() {
    check(Cell {
        capacity: 4,
        latency_ms: 50,
        requests: 1200,
        arrival: Arrival::Burst,
        changes: &[(4, 2), (8, 4)],
        lag: 0.0,
    })
    .await;
}
