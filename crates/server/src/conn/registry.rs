//! The table of open connections: what each is doing and since when, read by the watchdogs and
//! by the accept loop when it must make room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Every open client connection of a gateway, across its serving threads.
pub struct Conns {
    pub(super) epoch: Instant,
    pub(super) next_id: AtomicU64,
    /// By id, so the first entry is the oldest. Touched once per connection, never per request.
    pub(super) open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Responses whose body is still being written; shutdown waits for them.
    pub(super) responding: AtomicUsize,
    /// Descriptors the process may hold, read once at start.
    pub(super) fd_limit: Option<u64>,
}

/// One connection's state, shared by its task, its I/O and its requests.
pub(super) struct Conn {
    /// Requests whose head was read and whose response has not ended.
    pub(super) active: AtomicU32,
    /// Milliseconds since the epoch when it last became idle (opened, or a response ended).
    pub(super) idle_since: AtomicU64,
    /// Milliseconds since the epoch, plus one, when a new request head began; 0 while none.
    pub(super) head_since: AtomicU64,
    pub(super) served: AtomicBool,
    pub(super) evicted: AtomicBool,
    /// Rung by an eviction or a shutdown only; the request path never wakes the watchdog.
    pub(super) wake: tokio::sync::Notify,
}

impl Default for Conns {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            responding: AtomicUsize::new(0),
            fd_limit: open_files_limit(),
        }
    }
}

impl Conns {
    pub(super) fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn responding(&self) -> usize {
        self.responding.load(Relaxed)
    }

    /// Connections allowed at once: the configured maximum, kept below the descriptor limit
    /// with room left for upstream connections and files.
    pub fn capacity(&self, configured: usize) -> usize {
        match self.fd_limit {
            Some(limit) => {
                let reserve = (limit / 4).max(32);
                let room = limit.saturating_sub(reserve).max(1);
                configured.min(usize::try_from(room).unwrap_or(usize::MAX))
            }
            None => configured,
        }
    }

    /// Rings every connection's watchdog (the server is shutting down).
    pub(super) fn wake_all(&self) {
        for c in self.lock().values() {
            c.wake.notify_one();
        }
    }

    /// Closes the oldest connection that serves no request; false when every one is busy.
    pub(super) fn evict_one(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .find(|c| c.active.load(Relaxed) == 0 && !c.evicted.load(Relaxed));
        match victim {
            Some(c) => {
                c.evicted.store(true, Relaxed);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits` where the platform has it.
pub(super) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Conn {
    /// When the connection must be closed if nothing changes; `None` while serving a request.
    pub(super) fn deadline(
        &self,
        conns: &Conns,
        header: Duration,
        idle: Duration,
    ) -> Option<Instant> {
        if self.active.load(Relaxed) > 0 {
            return None;
        }
        let idle_since = conns.at(self.idle_since.load(Relaxed));
        if !self.served.load(Relaxed) {
            return Some(idle_since + header);
        }
        match self.head_since.load(Relaxed) {
            0 => Some(idle_since + idle),
            h => Some(conns.at(h - 1) + header),
        }
    }
}
