//! The controller alone, answer by answer. The whole lane against a simulated upstream, on
//! paused time and over the benchmark's matrix, is in `tests/adaptive_matrix.rs`.

use super::*;

const MS50: Duration = Duration::from_millis(50);

/// Sends one request at `n` in flight (itself included).
fn at(a: &Adaptive, n: u32) -> Sent {
    a.sent(n)
}

/// An upstream that refuses at once above its capacity and answers the rest 50 ms after they
/// were sent: the limit is kept full (there is always more work).
struct Sim {
    capacity: u32,
    running: std::collections::VecDeque<(Sent, Instant)>,
    now: Instant,
    refused: u32,
    answered: u32,
}

impl Sim {
    fn new(capacity: u32) -> Self {
        Self {
            capacity,
            running: Default::default(),
            now: Instant::now(),
            refused: 0,
            answered: 0,
        }
    }

    /// Fills the limit, then lets `answers` requests finish.
    fn run(&mut self, a: &mut Adaptive, answers: u32) {
        for _ in 0..answers {
            a.grow(self.now, true, Duration::ZERO);
            while (self.running.len() as u32) < a.limit() {
                let s = at(a, self.running.len() as u32 + 1);
                if s.in_flight > self.capacity {
                    self.refused += 1;
                    a.overload(s);
                } else {
                    self.running.push_back((s, self.now + MS50));
                }
            }
            if let Some((s, done)) = self.running.pop_front() {
                self.now = self.now.max(done);
                self.answered += 1;
                a.success(s, MS50, None, true);
            }
        }
    }
}

#[test]
fn the_first_refusal_sets_the_limit_to_the_edge() {
    let mut a = Adaptive::new(START, 1000);
    let mut up = Sim::new(40);
    up.run(&mut a, 4);
    assert_eq!(a.limit(), 4, "no growth before the first answers");
    up.run(&mut a, 20);
    assert!(a.limit() > 16, "then fast: {}", a.limit());
    while up.refused == 0 {
        up.run(&mut a, 1);
    }
    assert_eq!(a.limit(), 40, "one refusal finds the edge");
    assert_eq!(a.ceiling(), Some(41));
}

#[test]
fn a_small_capacity_costs_two_refusals_at_the_start() {
    let mut a = Adaptive::new(START, 1000);
    let mut up = Sim::new(2);
    up.run(&mut a, 1);
    assert_eq!(a.limit(), 2);
    assert!((1..=2).contains(&up.refused), "{}", up.refused);
    // At a limit of 2 the first probe is due after sixteen round trips: 32 answers.
    let at_start = up.refused;
    up.run(&mut a, 32 - 2);
    assert_eq!(up.refused, at_start, "no probe before its time");
    // The refusals of the first burst above the edge already doubled the interval.
    up.run(&mut a, PROBE_FIRST + 4);
    assert_eq!(up.refused, at_start + 1, "then one probe");
}

#[test]
fn probes_back_off_while_they_fail_and_stay_under_one_percent() {
    let mut a = Adaptive::new(START, 1000);
    let mut up = Sim::new(16);
    up.run(&mut a, 20_000);
    assert!(
        (16..=17).contains(&a.limit()),
        "holds the capacity: {}",
        a.limit()
    );
    let (refused, answered) = (up.refused, up.answered);
    assert!(refused > 10, "it keeps probing: {refused}");
    assert!(refused * 100 <= answered, "{refused} refused of {answered}");
}

#[test]
fn a_capacity_that_grew_is_found_by_a_probe() {
    let mut a = Adaptive::new(START, 1000);
    let mut up = Sim::new(8);
    up.run(&mut a, 2000);
    assert!((8..=9).contains(&a.limit()), "{}", a.limit());
    up.capacity = 16;
    let before = up.answered;
    while a.limit() < 16 {
        up.run(&mut a, 1);
        assert!(
            up.answered - before <= PROBE_MAX + 16,
            "stuck at {}",
            a.limit()
        );
    }
    up.run(&mut a, 100);
    assert!((16..=17).contains(&a.limit()), "{}", a.limit());
}

#[test]
fn late_answers_from_past_the_edge_do_not_prove_room() {
    // Slow start ran to 20 before the first refusal came back: on a loaded machine the
    // requests granted meanwhile are sent late, counted high, and some of them succeed.
    let mut a = Adaptive::new(20, 1000);
    let before: Vec<Sent> = (1..=20).map(|n| at(&a, n)).collect();
    for s in &before[..6] {
        a.success(*s, MS50, None, true);
    }
    a.overload(before[6]);
    assert_eq!((a.limit(), a.ceiling()), (6, Some(7)), "the edge");
    for s in &before[10..16] {
        a.success(*s, MS50, None, true);
    }
    assert_eq!(
        (a.limit(), a.ceiling()),
        (6, Some(7)),
        "successes of requests granted before the edge was found are old news"
    );
    // Requests granted since count: a probe at the edge that keeps passing finds more room.
    for _ in 0..PASSES {
        a.success(at(&a, 7), MS50, None, true);
    }
    assert_eq!(a.ceiling(), None, "the capacity grew");
}

#[test]
fn a_capacity_that_fell_is_followed_in_two_cuts_not_one_per_answer() {
    let mut a = Adaptive::new(START, 1000);
    let mut up = Sim::new(64);
    up.run(&mut a, 200);
    assert_eq!(a.limit(), 64);
    // Every request in flight was sent before the capacity halved: the first refusal cuts,
    // the other answers to requests sent before the cut do not cut again.
    let old: Vec<Sent> = (1..=64).map(|n| at(&a, n)).collect();
    for s in old.iter().rev().take(10) {
        a.overload(*s);
    }
    assert_eq!(a.limit(), 44, "one cut to 70%");
    let mut up = Sim::new(32);
    up.run(&mut a, 60);
    assert!((30..=32).contains(&a.limit()), "{}", a.limit());
    assert!(up.refused <= 2, "{} refused after the cut", up.refused);
}

#[test]
fn the_limit_grows_only_while_it_binds() {
    let mut a = Adaptive::new(8, 1000);
    let t = Instant::now();
    a.success(at(&a, 8), MS50, None, true);
    a.grow(t, false, Duration::ZERO);
    a.grow(t + Duration::from_secs(1), false, Duration::ZERO);
    assert_eq!(a.limit(), 8, "nobody waits: slow start holds");
    a.grow(t + Duration::from_secs(2), true, Duration::ZERO);
    a.grow(t + Duration::from_millis(2050), true, Duration::ZERO);
    assert!(a.limit() > 8, "{}", a.limit());

    // Below a known ceiling, growth comes from answers, and only from those of a busy lane.
    let mut b = Adaptive::new(8, 1000);
    b.overload(at(&b, 20));
    for _ in 0..100 {
        b.success(at(&b, 1), MS50, None, true);
    }
    assert_eq!(
        b.limit(),
        8,
        "one in flight says nothing about more than eight"
    );
    for _ in 0..5 {
        b.success(at(&b, 8), MS50, None, true);
    }
    assert!(b.limit() > 8);
}

#[test]
fn headroom_caps_growth() {
    let mut a = Adaptive::new(START, 1000);
    let t = Instant::now();
    for i in 0..100 {
        let s = at(&a, a.limit());
        a.success(s, MS50, Some(6), true);
        a.grow(t + MS50 * i, true, Duration::ZERO);
    }
    assert!(a.limit() <= 7, "{}", a.limit());
}

#[test]
fn latency_rising_with_load_steps_back_and_noise_does_not() {
    let mut a = Adaptive::new(16, 16);
    let mut rng = fastrand::Rng::with_seed(7);
    // A busy machine: most answers near 50 ms, one in five up to four times slower, one in
    // fifty ten times slower.
    for _ in 0..5000 {
        let s = at(&a, a.limit());
        let x = match rng.u32(0..100) {
            0..=1 => 500,
            2..=21 => rng.u64(50..200),
            _ => rng.u64(45..60),
        };
        a.success(s, Duration::from_millis(x), None, true);
    }
    assert_eq!(a.limit(), 16, "noise does not collapse the limit");
    // The upstream starts queueing: every answer five times slower than usual.
    for _ in 0..40 {
        let s = at(&a, a.limit());
        a.success(s, Duration::from_millis(250), None, true);
    }
    assert!(a.limit() < 16, "{}", a.limit());
    assert!(
        a.limit() >= 12,
        "one step back, not a collapse: {}",
        a.limit()
    );
}

#[test]
fn hostile_values_stay_in_bounds() {
    let mut a = Adaptive::new(u32::MAX, u32::MAX);
    a.success(at(&a, u32::MAX), Duration::MAX, Some(u64::MAX), true);
    a.overload(at(&a, 0));
    a.overload(at(&a, u32::MAX));
    assert!(a.limit() >= 1);
    let mut b = Adaptive::new(0, 0);
    b.success(at(&b, 1), Duration::ZERO, Some(0), false);
    assert_eq!(b.limit(), 1);
}
