//! The limit store shared by Laneway replicas: with `[limits] store = "redis://…"`, a lane's
//! concurrency and rates and a key's concurrency and rates hold across every replica, so a key
//! limited to 10 requests per second gets 10 in all, not 10 per replica.
//!
//! Each replica keeps its own queues and local limits; the store is consulted once a request
//! holds a local permit. One script checks and takes everything a request needs (the lane's
//! and the key's concurrency leases and rates, the lane's shared cooldown) and one more gives
//! it back: two Redis calls per request. Concurrency is held as leases that each replica
//! renews, so a replica that dies frees its slots within the lease time. A release that frees
//! a full set is published, so a request waiting on any replica retries at once.
//!
//! # Layout
//! - `scripts`: the Lua scripts and the keys they use.
//! - `fallback`: this replica's own rate limits, while the store is down (fail-open).
//! - `health`: the connection, timeouts, up/down and the probe that brings it back.
//! - `hold`: a granted hold, its release and the renewal of leases.
//! - `wake`: the subscription that wakes waiters when a slot frees on another replica.

mod fallback;
mod fleet;
mod health;
mod hold;
mod ids;
mod scripts;
mod wake;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use hold::Hold;

pub use laneway_admission::shared::{Side, Terms, Verdict};

/// The options of a shared store.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub prefix: String,
    pub timeout: Duration,
    pub lease: Duration,
    /// Serve on local limits while the store is down (else [`Verdict::Down`]).
    pub fail_open: bool,
}

pub(crate) struct Shared {
    conn: redis::aio::ConnectionManager,
    /// `{prefix}`, for the schema key.
    prefix: String,
    /// `{prefix}:v1`, for every other key.
    ns: String,
    timeout: Duration,
    lease: Duration,
    health: health::Health,
    /// Names this replica's leases apart from other replicas'.
    replica: String,
    seq: AtomicU64,
    holds: hold::Registry,
    wake: wake::Wake,
    /// The channel operators' actions are published on.
    fleet_channel: String,
    /// The actions received on it, for whoever listens in this replica.
    actions: tokio::sync::broadcast::Sender<String>,
    /// This replica's own rate limits, used while the store is down and `fail_open`.
    fallback: Option<fallback::Fallback>,
}

impl Shared {
    /// The verdict while the store cannot answer: local limits, or a refusal.
    fn unavailable(
        &self,
        lane: Terms<'_>,
        key: Option<Terms<'_>>,
        tokens: u64,
        why: Option<String>,
    ) -> Verdict {
        match &self.fallback {
            Some(f) => {
                self.health.served_open.fetch_add(1, Ordering::Relaxed);
                f.admit(lane, key, tokens)
            }
            None => Verdict::Down(
                why.or_else(|| self.health.last_error())
                    .unwrap_or_else(|| "down".into()),
            ),
        }
    }
}

/// A handle on the shared store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens the store without waiting for it: the connection is made on first use and the
    /// store reports itself down until Redis answers. Must run inside a tokio runtime.
    pub fn open(o: Options) -> Result<Self, String> {
        let client = redis::Client::open(o.url.as_str())
            .map_err(|e| format!("limits.store is not a usable Redis URL: {e}"))?;
        let conn =
            health::manager(client.clone(), o.timeout).map_err(|e| format!("limits.store: {e}"))?;
        let ns = format!("{}:v1", o.prefix);
        let shared = Arc::new(Shared {
            conn,
            wake: wake::Wake::new(format!("{ns}:free")),
            fleet_channel: format!("{ns}:fleet"),
            actions: tokio::sync::broadcast::channel(256).0,
            prefix: o.prefix,
            ns,
            timeout: o.timeout,
            lease: o.lease,
            health: health::Health::new(),
            replica: format!("{:016x}", fastrand::u64(..)),
            seq: AtomicU64::new(0),
            holds: hold::Registry::default(),
            fallback: o.fail_open.then(fallback::Fallback::default),
        });
        health::spawn_probe(Arc::downgrade(&shared));
        hold::spawn_renewal(Arc::downgrade(&shared));
        wake::spawn_subscriber(Arc::downgrade(&shared), client);
        Ok(Self { shared })
    }

    /// Asks for everything a request needs from the shared limits, in one call.
    pub async fn admit(&self, lane: Terms<'_>, key: Option<Terms<'_>>, tokens: u64) -> Verdict {
        let s = &self.shared;
        if !s.health.is_up() {
            return s.unavailable(lane, key, tokens, None);
        }
        let id = s.seq.fetch_add(1, Ordering::Relaxed);
        let ask = hold::Ask::new(s, id, lane, key, tokens);
        let reply: Vec<i64> = match health::bounded(
            s,
            "acquire",
            ask.invoke(&scripts::ACQUIRE, s.conn.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(why) => return s.unavailable(lane, key, tokens, Some(why)),
        };
        let micros =
            |v: Option<&i64>| Duration::from_micros(v.map_or(0, |&v| v.max(0).unsigned_abs()));
        match reply.first() {
            Some(0) => Verdict::Granted(Box::new(ask.granted(s.clone()))),
            Some(1) => Verdict::Full(if reply.get(2) == Some(&2) {
                Side::Key
            } else {
                Side::Lane
            }),
            Some(2) => {
                let (side, kind) = ask.rate_at(reply.get(2).copied().unwrap_or(0));
                Verdict::Wait {
                    side,
                    kind,
                    after: micros(reply.get(1)),
                }
            }
            Some(3) => Verdict::Wait {
                side: Side::Lane,
                kind: None,
                after: micros(reply.get(1)),
            },
            _ => Verdict::Down(format!("acquire: unexpected reply {reply:?}")),
        }
    }

    /// Shares a pause an upstream asked of `lane` (Retry-After, a spent rate budget), so the
    /// other replicas wait too instead of each collecting the same 429.
    pub async fn cool(&self, lane: &str, pause: Duration) {
        let s = &self.shared;
        if !s.health.is_up() {
            return;
        }
        let key = format!("{}:lane:{lane}:cool", s.ns);
        let mut conn = s.conn.clone();
        let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        let _ = health::bounded(s, "cool", async move {
            scripts::COOL
                .key(key)
                .arg(micros)
                .invoke_async::<()>(&mut conn)
                .await
        })
        .await;
    }

    /// Resolves when a shared slot of `side` `name` frees on any replica (or soon after, when
    /// the message was missed: waiters also poll).
    pub async fn freed(&self, side: Side, name: &str) {
        self.shared.wake.freed(side, name).await;
    }

    pub fn is_up(&self) -> bool {
        self.shared.health.is_up()
    }

    /// Why the store is down, when it is.
    pub fn last_error(&self) -> Option<String> {
        self.shared.health.last_error()
    }

    /// Store calls that failed or timed out.
    pub fn errors(&self) -> u64 {
        self.shared.health.errors.load(Ordering::Relaxed)
    }

    /// Counts a request served on local limits alone while the store was down.
    pub fn served_open(&self) {
        self.shared
            .health
            .served_open
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn served_open_total(&self) -> u64 {
        self.shared.health.served_open.load(Ordering::Relaxed)
    }

    /// Leases this replica holds now.
    pub fn held(&self) -> usize {
        self.shared.holds.len()
    }
}

/// The engine's view of this store.
impl laneway_admission::shared::SharedLimits for Store {
    fn admit<'a>(
        &'a self,
        lane: Terms<'a>,
        key: Option<Terms<'a>>,
        tokens: u64,
    ) -> laneway_admission::shared::Pending<'a, Verdict> {
        Box::pin(Store::admit(self, lane, key, tokens))
    }

    fn freed<'a>(
        &'a self,
        side: Side,
        name: &'a str,
    ) -> laneway_admission::shared::Pending<'a, ()> {
        Box::pin(Store::freed(self, side, name))
    }

    fn cool<'a>(
        &'a self,
        lane: &'a str,
        pause: Duration,
    ) -> laneway_admission::shared::Pending<'a, ()> {
        Box::pin(Store::cool(self, lane, pause))
    }
}

/// The store a config names (`[limits] store = "redis://…"`), opened; `None` for the memory
/// store.
pub fn from_config(limits: &laneway_config::LimitStoreConfig) -> std::io::Result<Option<Store>> {
    match &limits.store {
        laneway_config::LimitStore::Memory => Ok(None),
        laneway_config::LimitStore::Redis(url) => Store::open(Options {
            url: url.expose().clone(),
            prefix: limits.prefix.clone(),
            timeout: limits.timeout,
            lease: limits.lease,
            fail_open: limits.fail_open,
        })
        .map(Some)
        .map_err(std::io::Error::other),
    }
}
