//! A granted hold on shared limits: its leases, its token reservation, its release on drop,
//! and the renewal that keeps the leases of a live replica from expiring.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use laneway_admission::{RateKind, SharedHold};
use redis::Script;

use crate::{health, scripts, Shared, Side, Terms};

/// One rate limit as the acquire script takes it.
struct Rate {
    key: String,
    interval_us: f64,
    tolerance_us: f64,
    cost: u64,
    side: Side,
    kind: RateKind,
}

/// The keys and arguments of one request's acquire call.
pub struct Ask<'a> {
    id: u64,
    member: String,
    lane: Terms<'a>,
    key: Option<Terms<'a>>,
    lane_held: String,
    key_held: String,
    cool: String,
    lease_us: u64,
    rates: Vec<Rate>,
}

impl<'a> Ask<'a> {
    pub fn new(s: &Shared, id: u64, lane: Terms<'a>, key: Option<Terms<'a>>, tokens: u64) -> Self {
        let lane_ns = format!("{}:lane:{}", s.ns, lane.name);
        let key_ns = key.map(|k| format!("{}:key:{}", s.ns, k.name));
        let mut rates = Vec::new();
        for (side, terms, ns) in [
            (Side::Lane, Some(&lane), Some(&lane_ns)),
            (Side::Key, key.as_ref(), key_ns.as_ref()),
        ] {
            let (Some(t), Some(ns)) = (terms, ns) else {
                continue;
            };
            let r = t.rates;
            if let Some((rate, burst)) = r.per_second {
                let interval = 1e6 / rate;
                rates.push(Rate {
                    key: format!("{ns}:rate:s"),
                    interval_us: interval,
                    tolerance_us: interval * f64::from(burst),
                    cost: 1,
                    side,
                    kind: RateKind::PerSecond,
                });
            }
            if let Some(n) = r.rpm {
                rates.push(Rate {
                    key: format!("{ns}:rate:m"),
                    interval_us: 60e6 / f64::from(n),
                    tolerance_us: 60e6,
                    cost: 1,
                    side,
                    kind: RateKind::PerMinute,
                });
            }
            if let Some(n) = r.tpm {
                rates.push(Rate {
                    key: format!("{ns}:rate:t"),
                    interval_us: 60e6 / n as f64,
                    tolerance_us: 60e6,
                    cost: tokens,
                    side,
                    kind: RateKind::TokensPerMinute,
                });
            }
        }
        Self {
            id,
            member: format!("{}:{id}", s.replica),
            lane,
            key,
            lane_held: format!("{lane_ns}:held"),
            key_held: key_ns.map_or_else(|| format!("{}:nokey", s.ns), |k| format!("{k}:held")),
            cool: format!("{lane_ns}:cool"),
            lease_us: u64::try_from(s.lease.as_micros()).unwrap_or(u64::MAX),
            rates,
        }
    }

    fn limits(&self) -> (u32, u32) {
        (
            self.lane.limit.unwrap_or(0),
            self.key.and_then(|k| k.limit).unwrap_or(0),
        )
    }

    pub async fn invoke(
        &self,
        script: &Script,
        mut conn: redis::aio::ConnectionManager,
    ) -> redis::RedisResult<Vec<i64>> {
        let (lane_limit, key_limit) = self.limits();
        let mut call = script.key(&self.lane_held);
        call.key(&self.key_held).key(&self.cool);
        call.arg(&self.member)
            .arg(self.lease_us)
            .arg(lane_limit)
            .arg(key_limit);
        for r in &self.rates {
            call.key(&r.key)
                .arg(r.interval_us)
                .arg(r.tolerance_us)
                .arg(r.cost);
        }
        call.invoke_async(&mut conn).await
    }

    /// Which side and limit the script's 1-based rate index names.
    pub fn rate_at(&self, index: i64) -> (Side, Option<RateKind>) {
        usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.rates.get(i))
            .map_or((Side::Lane, None), |r| (r.side, Some(r.kind)))
    }

    pub fn granted(self, shared: Arc<Shared>) -> Hold {
        let (lane_limit, key_limit) = self.limits();
        let key_held = (key_limit > 0).then_some(self.key_held);
        shared.holds.insert(
            self.id,
            Leased {
                member: self.member.clone(),
                lane_held: self.lane_held.clone(),
                key_held: key_held.clone(),
            },
        );
        let tpm = self
            .rates
            .into_iter()
            .filter(|r| r.kind == RateKind::TokensPerMinute)
            .map(|r| (r.key, r.interval_us))
            .collect();
        Hold {
            shared,
            id: self.id,
            member: self.member,
            lane_held: self.lane_held,
            key_held,
            lane_limit,
            key_limit,
            lane: self.lane.name.to_owned(),
            key: self.key.map(|k| k.name.to_owned()),
            tpm,
            back: AtomicI64::new(0),
        }
    }
}

/// Capacity held in the shared store for one request; dropping it gives it back.
pub struct Hold {
    shared: Arc<Shared>,
    id: u64,
    member: String,
    lane_held: String,
    key_held: Option<String>,
    lane_limit: u32,
    key_limit: u32,
    lane: String,
    key: Option<String>,
    /// Token-limit keys and their interval, to settle the reservation on release.
    tpm: Vec<(String, f64)>,
    /// Tokens to give back (negative: to charge) once the usage is known.
    back: AtomicI64,
}

impl SharedHold for Hold {
    fn settle_tokens(&self, reserved: u64, actual: u64) {
        let r = i64::try_from(reserved).unwrap_or(i64::MAX);
        let a = i64::try_from(actual).unwrap_or(i64::MAX);
        self.back.store(r.saturating_sub(a), Ordering::Relaxed);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.shared.holds.remove(self.id);
        // Without a runtime or a store, the leases simply expire: they are no longer renewed.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.shared.health.is_up() {
            return;
        }
        let s = self.shared.clone();
        let mut call = scripts::RELEASE.key(&self.lane_held);
        call.key(self.key_held.as_deref().unwrap_or(""));
        call.arg(&self.member)
            .arg(self.lane_limit)
            .arg(self.key_limit)
            .arg(s.wake.channel())
            .arg(format!("l:{}", self.lane))
            .arg(format!("k:{}", self.key.as_deref().unwrap_or("")));
        let back = self.back.load(Ordering::Relaxed);
        for (key, interval) in &self.tpm {
            call.key(key).arg(*interval).arg(back);
        }
        rt.spawn(async move {
            let mut conn = s.conn.clone();
            let _ = health::bounded(&s, "release", call.invoke_async::<()>(&mut conn)).await;
        });
    }
}

pub struct Leased {
    member: String,
    lane_held: String,
    key_held: Option<String>,
}

/// This replica's live leases, in shards so that requests rarely meet on one lock.
pub struct Registry {
    shards: Vec<Mutex<HashMap<u64, Leased>>>,
}

const SHARDS: usize = 16;

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Registry {
    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Leased>> {
        let i = usize::try_from(id % SHARDS as u64).unwrap_or(0);
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u64, l: Leased) {
        self.shard(id).insert(id, l);
    }

    fn remove(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    pub fn len(&self) -> usize {
        (0..SHARDS as u64).map(|i| self.shard(i).len()).sum()
    }

    /// Every held set with this replica's members in it.
    fn by_set(&self) -> HashMap<String, Vec<String>> {
        let mut sets: HashMap<String, Vec<String>> = HashMap::new();
        for i in 0..SHARDS as u64 {
            for l in self.shard(i).values() {
                sets.entry(l.lane_held.clone())
                    .or_default()
                    .push(l.member.clone());
                if let Some(k) = &l.key_held {
                    sets.entry(k.clone()).or_default().push(l.member.clone());
                }
            }
        }
        sets
    }
}

/// Renews this replica's leases three times per lease time, in one call.
pub fn spawn_renewal(shared: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            let Some(s) = shared.upgrade() else { return };
            let every = s.lease / 3;
            let sets = s.holds.by_set();
            if !sets.is_empty() && s.health.is_up() {
                let mut call = scripts::RENEW.prepare_invoke();
                call.arg(u64::try_from(s.lease.as_micros()).unwrap_or(u64::MAX));
                for (set, members) in &sets {
                    call.key(set).arg(members.len());
                    for m in members {
                        call.arg(m);
                    }
                }
                let mut conn = s.conn.clone();
                let _ = health::bounded(&s, "renew", call.invoke_async::<()>(&mut conn)).await;
            }
            drop(s);
            tokio::time::sleep(every).await;
        }
    });
}
