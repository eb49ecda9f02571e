//! The connection to Redis and whether the store is usable: every call has a timeout, a failed
//! call marks the store down, and a probe brings it back up when Redis answers again, so that
//! while Redis is away requests do not each wait for a timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};

use crate::Shared;

/// The layout of the keys this build writes; kept in `{prefix}:schema`. A store holding
/// another layout under the same prefix is refused rather than misread.
pub const SCHEMA: &str = "1";

/// How often the probe checks a store that is down (and, while up, that it still is).
const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct Health {
    up: AtomicBool,
    /// Calls that failed or timed out, for the metrics.
    pub errors: AtomicU64,
    /// Requests served on local limits alone because the store was down (fail-open).
    pub served_open: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Health {
    pub fn new() -> Self {
        Self {
            // Optimistic: requests before the first probe ask the store (within the timeout)
            // rather than being served on local limits for no reason.
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            served_open: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn down(&self, why: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %why, "limit store down: limits are not shared until it is back");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn set_up(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("limit store up: limits are shared");
        }
    }
}

/// A connection manager that connects on first use (so a store that is down never delays the
/// start) and answers within `timeout` or fails.
pub fn manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

/// Runs `call` within the store's timeout; any failure marks the store down.
pub async fn bounded<T>(
    shared: &Shared,
    what: &str,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, String> {
    let why = match tokio::time::timeout(shared.timeout, call).await {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => describe(&e),
        Err(_) => format!("no answer within {:?}", shared.timeout),
    };
    let why = format!("{what}: {why}");
    shared.health.down(why.clone());
    Err(why)
}

fn describe(e: &RedisError) -> String {
    if e.to_string().contains("WRONGTYPE") {
        format!("{e} (a key under this prefix holds another kind of value: left by another version of Laneway? use another limits.prefix or delete those keys)")
    } else {
        e.to_string()
    }
}

/// Checks the store every [`PROBE_EVERY`]: a `PING`, and the key layout under the prefix.
pub fn spawn_probe(shared: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            let Some(s) = shared.upgrade() else { return };
            if let Err(why) = probe(&s).await {
                s.health.down(why);
            } else {
                s.health.set_up();
            }
            drop(s);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

async fn probe(s: &Arc<Shared>) -> Result<(), String> {
    let mut conn = s.conn.clone();
    let key = format!("{}:schema", s.prefix);
    let set: Option<String> = tokio::time::timeout(s.timeout, async {
        let _: () = redis::cmd("PING").query_async(&mut conn).await?;
        // Claims the prefix for this layout when nobody has; reads what is there otherwise.
        let _: bool = conn.set_nx(&key, SCHEMA).await?;
        conn.get::<_, Option<String>>(&key).await
    })
    .await
    .map_err(|_| format!("probe: no answer within {:?}", s.timeout))?
    .map_err(|e| format!("probe: {}", describe(&e)))?;
    match set.as_deref() {
        Some(SCHEMA) => Ok(()),
        other => Err(format!(
            "the keys under prefix `{}` use layout {} but this Laneway uses layout {SCHEMA}: \
             set another limits.prefix, or delete those keys once no older replica runs",
            s.prefix,
            other.unwrap_or("(none)")
        )),
    }
}
