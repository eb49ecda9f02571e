//! Admission with paused time: limits, queues, timeouts, pools, fairness and cleanup.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::health::{Feedback, Health};

fn lane(name: &str, max: Option<u32>, mode: Mode) -> Arc<Lane> {
    Lane::new(LaneSpec {
        name: name.into(),
        max_concurrent: max,
        rates: RateSpec::default(),
        queue_max_len: 3,
        queue_timeout: Duration::from_secs(10),
        on_limit: mode,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    })
}

/// A lane with rate limits only, a roomy queue, and the given mode.
fn rated(name: &str, rates: RateSpec, mode: Mode) -> Arc<Lane> {
    Lane::new(LaneSpec {
        name: name.into(),
        max_concurrent: None,
        rates,
        queue_max_len: 100,
        queue_timeout: Duration::from_secs(10),
        on_limit: mode,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    })
}

fn anon() -> Arc<Key> {
    Key::new(0, KeySpec::anonymous())
}

fn key(id: u32, weight: u32) -> Arc<Key> {
    Key::new(
        id,
        KeySpec {
            name: format!("k{id}"),
            weight,
            ..KeySpec::anonymous()
        },
    )
}

async fn ask(
    lanes: &[Arc<Lane>],
    key: &Arc<Key>,
    cancel: &CancellationToken,
) -> Result<Permit, AdmissionError> {
    acquire(
        lanes,
        Ask {
            key,
            priority: key.spec().priority,
            tokens: 10,
            deadline: Instant::now() + Duration::from_secs(60),
            cancel,
            tag: 0,
        },
    )
    .await
}

/// Lets the spawned tasks run until `cond` holds. Every test here runs on one thread with time
/// paused, so a task that can make progress does within a few turns; the bound only turns a
/// bug into a failure instead of a hang.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// Returns once no other task can run: with time paused the clock moves (here by a
/// millisecond) only when every task is blocked. For asserting that something did not happen.
async fn all_blocked() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn queued_requests_are_served_in_order_as_slots_free() {
    let l = lane("a", Some(2), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    let p1 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let p2 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..3 {
        let (l2, k, c, tx) = (l.clone(), k.clone(), c.clone(), tx.clone());
        tokio::spawn(async move {
            let p = ask(&[l2], &k, &c).await.unwrap();
            tx.send((i, p)).unwrap();
        });
        until("the waiter queues", || l.snapshot().queued == i + 1).await;
    }
    assert_eq!(l.snapshot().queued, 3);
    assert_eq!(l.snapshot().in_flight, 2);
    drop(p1);
    let (first, p3) = rx.recv().await.unwrap();
    assert_eq!(first, 0);
    drop(p2);
    drop(p3);
    let (a, pa) = rx.recv().await.unwrap();
    let (b, pb) = rx.recv().await.unwrap();
    assert_eq!((a, b), (1, 2));
    assert_eq!(l.snapshot().in_flight, 2);
    drop((pa, pb));
    let s = l.snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reject_mode_refuses_with_a_hint() {
    let l = lane("a", Some(1), Mode::Reject);
    let k = anon();
    let c = CancellationToken::new();
    let _p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let err = ask(std::slice::from_ref(&l), &k, &c).await.err().unwrap();
    assert!(
        matches!(err, AdmissionError::ConcurrencyLimited { .. }),
        "{err:?}"
    );
    assert!(err.retry_after().unwrap() > Duration::ZERO);
    assert_eq!(l.snapshot().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_a_timeout_expires() {
    let l = lane("a", Some(1), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    let _p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (l, k, c) = (l.clone(), k.clone(), c.clone());
        waiting.push(tokio::spawn(async move { ask(&[l], &k, &c).await.err() }));
    }
    until("three wait", || l.snapshot().queued == 3).await;
    let full = ask(std::slice::from_ref(&l), &k, &c).await.err().unwrap();
    assert!(
        matches!(full, AdmissionError::QueueFull { max_len: 3, .. }),
        "{full:?}"
    );
    advance(Duration::from_secs(10)).await;
    for w in waiting {
        let e = w.await.unwrap().unwrap();
        assert!(matches!(e, AdmissionError::QueueTimeout { .. }), "{e:?}");
        assert!(e.retry_after().unwrap() > Duration::ZERO);
    }
    assert_eq!(l.snapshot().queued, 0);
    assert_eq!(l.snapshot().in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_and_disconnect_leave_the_queue_at_once() {
    let l = lane("a", Some(1), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    let p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let cancel = CancellationToken::new();
    let (l2, k2, c2) = (l.clone(), k.clone(), cancel.clone());
    let cancelled = tokio::spawn(async move { ask(&[l2], &k2, &c2).await.err() });
    let (l3, k3, c3) = (l.clone(), k.clone(), c.clone());
    let abandoned = tokio::spawn(async move { ask(&[l3], &k3, &c3).await.is_ok() });
    until("both wait", || l.snapshot().queued == 2).await;
    assert_eq!(l.snapshot().queued, 2);
    cancel.cancel();
    assert_eq!(cancelled.await.unwrap(), Some(AdmissionError::Cancelled));
    abandoned.abort();
    let _ = abandoned.await;
    assert_eq!(l.snapshot().queued, 0);
    drop(p);
    let s = l.snapshot();
    assert_eq!(
        (s.in_flight, s.queued),
        (0, 0),
        "no slot leaked to a waiter that left"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait() {
    let l = lane("a", Some(1), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    let _p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let err = acquire(
        std::slice::from_ref(&l),
        Ask {
            key: &k,
            priority: 0,
            tokens: 1,
            deadline: Instant::now() + Duration::from_secs(2),
            cancel: &c,
            tag: 0,
        },
    )
    .await
    .err();
    assert_eq!(err, Some(AdmissionError::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn queued_requests_follow_the_rate_limit() {
    let l = rated(
        "r",
        RateSpec {
            per_second: Some((10.0, 1)),
            ..RateSpec::default()
        },
        Mode::Queue,
    );
    let k = anon();
    let c = CancellationToken::new();
    let t0 = Instant::now();
    let mut at = Vec::new();
    for _ in 0..5 {
        let _p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
        at.push(Instant::now() - t0);
    }
    let expected: Vec<_> = (0..5).map(|i| Duration::from_millis(100 * i)).collect();
    assert_eq!(at, expected);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_token_limit_is_refused_at_once() {
    let l = rated(
        "t",
        RateSpec {
            tpm: Some(1000),
            ..RateSpec::default()
        },
        Mode::Queue,
    );
    let k = anon();
    let c = CancellationToken::new();
    let err = acquire(
        std::slice::from_ref(&l),
        Ask {
            key: &k,
            priority: 0,
            tokens: 5000,
            deadline: Instant::now() + Duration::from_secs(60),
            cancel: &c,
            tag: 0,
        },
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            AdmissionError::NeverFits {
                needed: 5000,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_are_settled_to_actual_usage() {
    let l = rated(
        "t",
        RateSpec {
            tpm: Some(1000),
            ..RateSpec::default()
        },
        Mode::Reject,
    );
    let k = anon();
    let c = CancellationToken::new();
    let big = |t| Ask {
        key: &k,
        priority: 0,
        tokens: t,
        deadline: Instant::now() + Duration::from_secs(60),
        cancel: &c,
        tag: 0,
    };
    let mut p = acquire(std::slice::from_ref(&l), big(900)).await.unwrap();
    assert!(
        acquire(std::slice::from_ref(&l), big(200)).await.is_err(),
        "900 + 200 > 1000"
    );
    p.settle_tokens(100);
    assert_eq!(l.snapshot().tpm_used, Some(100));
    assert!(
        acquire(std::slice::from_ref(&l), big(200)).await.is_ok(),
        "the refund made room"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pool_uses_the_lane_with_headroom_and_the_first_that_frees() {
    let a = lane("a", Some(1), Mode::Queue);
    let b = lane("b", Some(1), Mode::Queue);
    let pool = [a.clone(), b.clone()];
    let k = anon();
    let c = CancellationToken::new();
    let p1 = ask(&pool, &k, &c).await.unwrap();
    let p2 = ask(&pool, &k, &c).await.unwrap();
    assert_ne!(
        p1.lane().name(),
        p2.lane().name(),
        "the second goes to the idle lane"
    );
    let (pool2, k2, c2) = (pool.clone(), k.clone(), c.clone());
    let queued = tokio::spawn(async move {
        ask(&pool2, &k2, &c2)
            .await
            .map(|p| p.lane().name().to_owned())
    });
    until("it waits in both lanes", || {
        (a.queued(), b.queued()) == (1, 1)
    })
    .await;
    assert_eq!((a.queued(), b.queued()), (1, 1), "waits in both lanes");
    let freed = p2.lane().name().to_owned();
    drop(p2);
    assert_eq!(queued.await.unwrap().unwrap(), freed);
    assert_eq!((a.queued(), b.queued()), (0, 0));
    drop(p1);
}

#[tokio::test(start_paused = true)]
async fn weights_share_a_contended_lane() {
    let l = Lane::new(LaneSpec {
        name: "f".into(),
        max_concurrent: Some(1),
        rates: RateSpec::default(),
        queue_max_len: 1000,
        queue_timeout: Duration::from_secs(600),
        on_limit: Mode::Queue,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    });
    let heavy = key(1, 3);
    let light = key(2, 1);
    let c = CancellationToken::new();
    let gate = ask(std::slice::from_ref(&l), &heavy, &c).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for k in [&heavy, &light] {
        for _ in 0..100 {
            let (l, k, c, tx) = (l.clone(), k.clone(), c.clone(), tx.clone());
            tokio::spawn(async move {
                let p = ask(&[l], &k, &c).await.unwrap();
                tx.send(k.id).unwrap();
                drop(p);
            });
        }
    }
    until("all two hundred wait", || l.snapshot().queued == 200).await;
    drop(gate);
    let mut served = [0; 3];
    for _ in 0..80 {
        served[rx.recv().await.unwrap() as usize] += 1;
    }
    assert!(
        (58..=62).contains(&served[1]),
        "3:1 weights served {served:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn key_limits_reject_by_default() {
    let l = lane("a", None, Mode::Queue);
    let k = Key::new(
        1,
        KeySpec {
            name: "team".into(),
            max_concurrent: Some(1),
            rates: RateSpec {
                rpm: Some(2),
                ..RateSpec::default()
            },
            ..KeySpec::anonymous()
        },
    );
    let c = CancellationToken::new();
    let p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let e = ask(std::slice::from_ref(&l), &k, &c).await.err().unwrap();
    assert!(
        matches!(
            e,
            AdmissionError::ConcurrencyLimited {
                scope: Scope::Key(_),
                ..
            }
        ),
        "{e:?}"
    );
    drop(p);
    let _p = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    drop(_p);
    let e = ask(std::slice::from_ref(&l), &k, &c).await.err().unwrap();
    let AdmissionError::RateLimited {
        retry_after,
        kind: RateKind::PerMinute,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        retry_after,
        Duration::from_secs(30),
        "2 rpm refills one request every 30 s"
    );
    assert_eq!(k.usage().requests, Some((2, 0, Duration::from_secs(60))));
}

#[tokio::test(start_paused = true)]
async fn failures_open_the_circuit_then_one_probe_runs() {
    let l = lane("c", Some(4), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    for _ in 0..crate::health::FAILURES_TO_OPEN {
        l.feedback(Feedback::Failed);
    }
    assert_eq!(l.snapshot().health, Health::Open);
    assert_eq!(l.snapshot().cooldown_until, Some(crate::health::FIRST_OPEN));
    let refused = ask(std::slice::from_ref(&l), &k, &c).await.err();
    assert_eq!(
        refused,
        Some(AdmissionError::NoLaneAvailable {
            retry_after: crate::health::FIRST_OPEN
        })
    );
    advance(crate::health::FIRST_OPEN).await;
    let probe = ask(std::slice::from_ref(&l), &k, &c)
        .await
        .expect("the probe goes out when the pause ends");
    assert_eq!(l.snapshot().in_flight, 1);
    let (l3, k3, c3) = (l.clone(), k.clone(), c.clone());
    let second = tokio::spawn(async move {
        ask(&[l3], &k3, &c3)
            .await
            .map(|p| p.lane().name().to_owned())
    });
    all_blocked().await;
    assert_eq!(l.snapshot().queued, 1, "half-open: one probe at a time");
    l.feedback(Feedback::Success {
        latency: Duration::from_millis(50),
        headroom: None,
    });
    assert_eq!(second.await.unwrap().unwrap(), "c");
    assert_eq!(l.snapshot().health, Health::Ok);
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_lane_cools_down_and_its_pool_mate_serves() {
    let a = lane("a", Some(4), Mode::Queue);
    let b = lane("b", Some(4), Mode::Queue);
    let k = anon();
    let c = CancellationToken::new();
    a.feedback(Feedback::Overloaded {
        retry_after: Some(Duration::from_secs(2)),
    });
    assert_eq!(a.snapshot().health, Health::CoolingDown);
    for _ in 0..3 {
        let p = ask(&[a.clone(), b.clone()], &k, &c).await.unwrap();
        assert_eq!(p.lane().name(), "b");
    }
    advance(Duration::from_secs(2)).await;
    assert_eq!(a.snapshot().health, Health::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_is_entirely_paused_refuses_with_the_reopening_time() {
    let a = lane("a", Some(4), Mode::Queue);
    let b = lane("b", Some(4), Mode::Queue);
    // Cooldowns longer than the request may wait (the lanes' queue timeout is 10 s).
    a.feedback(Feedback::Overloaded {
        retry_after: Some(Duration::from_secs(30)),
    });
    b.feedback(Feedback::Overloaded {
        retry_after: Some(Duration::from_secs(50)),
    });
    let err = ask(&[a.clone(), b.clone()], &anon(), &CancellationToken::new())
        .await
        .err();
    assert_eq!(
        err,
        Some(AdmissionError::NoLaneAvailable {
            retry_after: Duration::from_secs(30)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_cooldown_is_waited_out() {
    let a = lane("a", Some(4), Mode::Queue);
    a.feedback(Feedback::Overloaded {
        retry_after: Some(Duration::from_millis(300)),
    });
    let t0 = Instant::now();
    let p = ask(std::slice::from_ref(&a), &anon(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_millis(300));
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_key_limit_counts_the_requests_already_running() {
    let l = lane("a", None, Mode::Queue);
    let spec = |max| KeySpec {
        name: "team".into(),
        max_concurrent: Some(max),
        on_limit: Mode::Queue,
        ..KeySpec::anonymous()
    };
    let k = Key::new(1, spec(2));
    let c = CancellationToken::new();
    let p1 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let p2 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    k.reconfigure(spec(1));
    let (l2, k2, c2) = (l.clone(), k.clone(), c.clone());
    let waiting = tokio::spawn(async move { ask(&[l2], &k2, &c2).await.is_ok() });
    all_blocked().await;
    drop(p1);
    all_blocked().await;
    assert!(
        !waiting.is_finished(),
        "one still runs, and the new limit is 1"
    );
    assert_eq!(k.in_flight(), 1);
    k.reconfigure(spec(3));
    assert!(waiting.await.unwrap(), "a larger limit lets the waiter in");
    drop(p2);
    assert_eq!(k.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_hint_never_pauses_a_lane_past_its_bound() {
    let a = lane("a", Some(4), Mode::Queue);
    // What a hostile `retry-after: 1000000000000000000` parses to.
    a.feedback(Feedback::Overloaded {
        retry_after: Some(Duration::from_secs(365 * 86_400)),
    });
    let cooldown = a.snapshot().cooldown_until.unwrap();
    assert!(cooldown <= Duration::from_secs(300), "{cooldown:?}");
    a.feedback(Feedback::Exhausted {
        reset: Duration::MAX,
    });
    assert!(a.snapshot().cooldown_until.unwrap() <= Duration::from_secs(300));

    // A reload with a shorter bound cuts the pause already taken.
    let mut spec = LaneSpec {
        name: "a".into(),
        max_concurrent: Some(4),
        rates: RateSpec::default(),
        queue_max_len: 3,
        queue_timeout: Duration::from_secs(10),
        on_limit: Mode::Queue,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    };
    spec.max_pause = Duration::from_secs(1);
    a.reconfigure(spec);
    assert!(a.snapshot().cooldown_until.unwrap() <= Duration::from_secs(1));
    advance(Duration::from_secs(1)).await;
    assert_eq!(a.snapshot().health, Health::Ok);
    let p = ask(std::slice::from_ref(&a), &anon(), &CancellationToken::new()).await;
    assert!(p.is_ok());
}

/// Spawns `n` requests on `l` that report their permits on a channel as they are admitted.
fn waiters(
    l: &Arc<Lane>,
    k: &Arc<Key>,
    c: &CancellationToken,
    n: usize,
) -> tokio::sync::mpsc::UnboundedReceiver<Permit> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let (l, k, c, tx) = (l.clone(), k.clone(), c.clone(), tx.clone());
        tokio::spawn(async move {
            let p = ask(&[l], &k, &c).await.unwrap();
            let _ = tx.send(p);
        });
    }
    rx
}

#[tokio::test(start_paused = true)]
async fn serial_runs_one_at_a_time_and_parallel_restores_the_limit() {
    let l = lane("a", Some(3), Mode::Queue);
    let (k, c) = (anon(), CancellationToken::new());
    let first: Vec<Permit> = vec![
        ask(std::slice::from_ref(&l), &k, &c).await.unwrap(),
        ask(std::slice::from_ref(&l), &k, &c).await.unwrap(),
    ];
    assert_eq!(l.set_control(Control::Serial), Some(1));
    let mut rx = waiters(&l, &k, &c, 3);
    until("three wait", || l.snapshot().queued == 3).await;
    assert_eq!(l.snapshot().queued, 3, "two run, none may join them");
    drop(first);
    let p = rx.recv().await.unwrap();
    all_blocked().await;
    let s = l.snapshot();
    assert_eq!((s.in_flight, s.queued), (1, 2), "one at a time");
    assert_eq!(
        (s.control, s.limit_source),
        (Control::Serial, LimitSource::Operator)
    );
    drop(p);
    let p = rx.recv().await.unwrap();
    assert_eq!(l.set_control(Control::Config), Some(3));
    let last = rx.recv().await.unwrap();
    let s = l.snapshot();
    assert_eq!((s.in_flight, s.limit_source), (2, LimitSource::Config));
    drop((p, last));
    assert_eq!(l.set_control(Control::Fixed(5)), Some(5));
    assert_eq!(
        l.set_control(Control::Auto),
        Some(crate::adaptive::START.min(3)),
        "adaptive starts low"
    );
    assert_eq!(l.snapshot().limit_source, LimitSource::Adaptive);
}

#[tokio::test(start_paused = true)]
async fn a_paused_lane_starts_nothing_until_resumed() {
    let l = lane("a", Some(2), Mode::Queue);
    let (k, c) = (anon(), CancellationToken::new());
    let running = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    assert!(l.set_paused(true));
    assert!(!l.set_paused(true), "pausing a paused lane changes nothing");
    let mut rx = waiters(&l, &k, &c, 2);
    until("both wait", || l.snapshot().queued == 2).await;
    drop(running);
    advance(Duration::from_secs(5)).await;
    all_blocked().await;
    let s = l.snapshot();
    assert!(s.paused);
    assert_eq!(
        (s.in_flight, s.queued),
        (0, 2),
        "a free slot stays free while paused"
    );
    assert!(rx.try_recv().is_err());
    assert!(l.set_paused(false));
    let a = rx.recv().await.unwrap();
    let b = rx.recv().await.unwrap();
    assert_eq!(l.snapshot().in_flight, 2);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn a_pool_sends_new_requests_past_a_paused_lane() {
    let (a, b) = (
        lane("a", Some(2), Mode::Queue),
        lane("b", Some(2), Mode::Queue),
    );
    let (k, c) = (anon(), CancellationToken::new());
    a.set_paused(true);
    let pool = [a.clone(), b.clone()];
    let p1 = ask(&pool, &k, &c).await.unwrap();
    let p2 = ask(&pool, &k, &c).await.unwrap();
    assert!(Arc::ptr_eq(p1.lane(), &b) && Arc::ptr_eq(p2.lane(), &b));
    assert_eq!(a.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_operator_setting_survives_a_reload_unless_the_file_changes_the_limit() {
    let l = lane("a", Some(4), Mode::Queue);
    l.set_control(Control::Serial);
    let spec = |max| LaneSpec {
        name: "a".into(),
        max_concurrent: Some(max),
        rates: RateSpec::default(),
        queue_max_len: 10,
        queue_timeout: Duration::from_secs(10),
        on_limit: Mode::Queue,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    };
    l.reconfigure(spec(4));
    let s = l.snapshot();
    assert_eq!(
        (s.control, s.limit),
        (Control::Serial, Some(1)),
        "queue settings changed only"
    );
    l.reconfigure(spec(6));
    let s = l.snapshot();
    assert_eq!(
        (s.control, s.limit),
        (Control::Config, Some(6)),
        "the file set a new limit"
    );
}

#[tokio::test(start_paused = true)]
async fn the_wait_estimate_follows_the_measured_service_rate() {
    let l = lane("a", Some(2), Mode::Queue);
    let (k, c) = (anon(), CancellationToken::new());
    // Two requests that each hold a slot for 200 ms: the lane learns its service time.
    let p1 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    let p2 = ask(std::slice::from_ref(&l), &k, &c).await.unwrap();
    advance(Duration::from_millis(200)).await;
    drop((p1, p2));
    let running = [
        ask(std::slice::from_ref(&l), &k, &c).await.unwrap(),
        ask(std::slice::from_ref(&l), &k, &c).await.unwrap(),
    ];
    let _rx = waiters(&l, &k, &c, 3);
    until("three wait", || l.snapshot().queued == 3).await;
    let etas: Vec<u128> = l
        .waiting_with_eta()
        .iter()
        .map(|(_, d)| d.as_millis())
        .collect();
    // A slot frees every 200 ms / 2 slots: the n-th in line waits n of those.
    assert_eq!(etas, [100, 200, 300]);
    drop(running);
}

/// Holds a slot of `l` for `hold`, starting now; reports how long it waited for it.
fn serve_for(l: &Arc<Lane>, tag: u64, hold: Duration) -> tokio::task::JoinHandle<(u64, Duration)> {
    let l = l.clone();
    tokio::spawn(async move {
        let (k, c) = (anon(), CancellationToken::new());
        let t0 = Instant::now();
        let ask = Ask {
            key: &k,
            priority: 0,
            tokens: 1,
            deadline: t0 + Duration::from_secs(600),
            cancel: &c,
            tag,
        };
        let p = acquire(std::slice::from_ref(&l), ask).await.unwrap();
        let waited = t0.elapsed();
        tokio::time::sleep(hold).await;
        drop(p);
        (tag, waited)
    })
}

#[tokio::test(start_paused = true)]
async fn predicted_waits_match_a_steady_queue() {
    let l = Lane::new(LaneSpec {
        name: "a".into(),
        max_concurrent: Some(2),
        rates: RateSpec::default(),
        queue_max_len: 100,
        queue_timeout: Duration::from_secs(600),
        on_limit: Mode::Queue,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    });
    let hold = Duration::from_millis(200);
    // Warm-up: the lane measures a 200 ms service time.
    for t in [serve_for(&l, 100, hold), serve_for(&l, 101, hold)] {
        t.await.unwrap();
    }
    // A steady lane: its two slots were taken 100 ms apart, so one frees every 100 ms.
    let running = vec![serve_for(&l, 102, hold)];
    until("the first runs", || l.snapshot().in_flight == 1).await;
    advance(Duration::from_millis(100)).await;
    let mut all = running;
    all.push(serve_for(&l, 103, hold));
    until("both run", || l.snapshot().in_flight == 2).await;
    for tag in 0..8 {
        all.push(serve_for(&l, tag, hold));
        until("it queues", || l.snapshot().queued == tag as usize + 1).await;
    }
    let predicted: std::collections::HashMap<u64, Duration> =
        l.waiting_with_eta().into_iter().collect();
    assert_eq!(predicted.len(), 8);
    for t in all {
        let (tag, waited) = t.await.unwrap();
        let Some(eta) = predicted.get(&tag) else {
            continue;
        };
        let error = (eta.as_secs_f64() - waited.as_secs_f64()).abs() / waited.as_secs_f64();
        assert!(
            error <= 0.25,
            "request {tag}: predicted {eta:?}, waited {waited:?}"
        );
    }
}
