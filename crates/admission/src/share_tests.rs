//! A full lane queue is shared between keys: a key with fewer places takes the newest place of
//! the key holding the most, so no key keeps more than its share while others wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

fn lane(max_len: usize) -> Arc<Lane> {
    Lane::new(LaneSpec {
        name: "shared".into(),
        max_concurrent: Some(1),
        rates: RateSpec::default(),
        queue_max_len: max_len,
        queue_timeout: Duration::from_secs(60),
        on_limit: Mode::Queue,
        adaptive: false,
        max_pause: Duration::from_secs(300),
    })
}

fn key(id: u32) -> Arc<Key> {
    Key::new(
        id,
        KeySpec {
            name: format!("k{id}"),
            ..KeySpec::anonymous()
        },
    )
}

/// A request's outcome; a granted slot is given back at once.
type Waiting = JoinHandle<Result<(), AdmissionError>>;

async fn take(
    l: &Arc<Lane>,
    k: &Arc<Key>,
    c: &CancellationToken,
) -> Result<Permit, AdmissionError> {
    acquire(
        std::slice::from_ref(l),
        Ask {
            key: k,
            priority: 0,
            tokens: 1,
            deadline: tokio::time::Instant::now() + Duration::from_secs(600),
            cancel: c,
            tag: u64::from(k.id),
        },
    )
    .await
}

/// Sends one request of `k` and returns once it stands in the queue or has been refused.
async fn queue_one(l: &Arc<Lane>, k: &Arc<Key>, c: &CancellationToken) -> Waiting {
    let tag = u64::from(k.id);
    let before = per_key(l).get(&tag).copied().unwrap_or(0);
    let (l2, k, c) = (l.clone(), k.clone(), c.clone());
    let h = tokio::spawn(async move { take(&l2, &k, &c).await.map(drop) });
    // A bounded number of scheduler turns, not a clock.
    for _ in 0..10_000 {
        if h.is_finished() || per_key(l).get(&tag).copied().unwrap_or(0) > before {
            return h;
        }
        tokio::task::yield_now().await;
    }
    panic!("a request of key {tag} neither queued nor was refused");
}

fn per_key(l: &Lane) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for tag in l.waiting() {
        *m.entry(tag).or_default() += 1;
    }
    m
}

#[tokio::test(start_paused = true)]
async fn a_second_key_waits_instead_of_being_refused_by_a_full_queue() {
    let l = lane(4);
    let c = CancellationToken::new();
    let (a, b) = (key(1), key(2));
    let running = take(&l, &a, &c).await.unwrap();
    let mut of_a = Vec::new();
    for _ in 0..4 {
        of_a.push(queue_one(&l, &a, &c).await);
    }
    assert_eq!(l.queued(), 4, "key a filled the queue");
    // Key a's fifth is refused: it already holds the whole queue.
    let refused = queue_one(&l, &a, &c).await.await.unwrap().err().unwrap();
    assert!(
        matches!(refused, AdmissionError::QueueFull { .. }),
        "{refused:?}"
    );
    // Key b waits: key a's newest place is given up.
    let b_first = queue_one(&l, &b, &c).await;
    assert!(!b_first.is_finished(), "key b was refused");
    let newest_of_a = of_a.pop().unwrap().await.unwrap().err().unwrap();
    assert!(
        matches!(newest_of_a, AdmissionError::QueueFull { .. }),
        "{newest_of_a:?}"
    );
    assert!(newest_of_a.retry_after().unwrap() > Duration::ZERO);
    assert_eq!(l.queued(), 4);
    assert_eq!(per_key(&l), HashMap::from([(1, 3), (2, 1)]));
    // Once more: 3 against 1 + 1.
    let b_second = queue_one(&l, &b, &c).await;
    assert!(!b_second.is_finished());
    assert!(of_a.pop().unwrap().await.unwrap().is_err());
    assert_eq!(per_key(&l), HashMap::from([(1, 2), (2, 2)]));
    // Even shares: a third of b's is refused, and nothing of a's is displaced.
    let b_third = queue_one(&l, &b, &c).await.await.unwrap();
    assert!(matches!(b_third, Err(AdmissionError::QueueFull { .. })));
    assert_eq!(per_key(&l), HashMap::from([(1, 2), (2, 2)]));
    // The waiting four are then served as slots free: nothing was lost.
    drop(running);
    let mut left = of_a;
    left.push(b_first);
    left.push(b_second);
    for h in left {
        h.await.unwrap().unwrap();
    }
    assert_eq!((l.queued(), l.snapshot().in_flight), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn ten_keys_sharing_a_full_queue_each_keep_their_share() {
    let l = lane(10);
    let c = CancellationToken::new();
    let keys: Vec<_> = (0..10).map(key).collect();
    let _running = take(&l, &keys[0], &c).await.unwrap();
    let mut handles = Vec::new();
    // Key 0 fills the whole queue first; then every other key sends three.
    for _ in 0..10 {
        handles.push(queue_one(&l, &keys[0], &c).await);
    }
    for _ in 0..3 {
        for k in &keys[1..] {
            handles.push(queue_one(&l, k, &c).await);
        }
    }
    let shares = per_key(&l);
    assert_eq!(shares.values().sum::<usize>(), 10);
    assert_eq!(shares.len(), 10, "every key waits: {shares:?}");
    assert!(shares.values().all(|&n| n == 1), "{shares:?}");
    c.cancel();
    for h in handles {
        let _ = h.await.unwrap();
    }
    assert_eq!(l.queued(), 0);
}
