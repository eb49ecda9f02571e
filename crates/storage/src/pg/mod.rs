//! [`Store`](crate::Store) on PostgreSQL (`[storage] url`): files (their content too, in
//! 1 MiB chunks), batches, items with their leases and response ids, shared by every replica
//! that names the same database.
//!
//! One connection per replica, behind a mutex like SQLite's, driven by a small runtime of its
//! own so that every call can be given a deadline: a database that stops answering costs a
//! call [`CALL_TIMEOUT`], not a hung thread. After a failure the store answers
//! [`Error::Unavailable`] at once for [`BACKOFF`], then tries to connect again.
//!
//! - `schema`: versioned migrations, applied at start under an advisory lock.
//! - `files`, `batches`, `items`: the queries.

mod batches;
mod files;
mod items;
pub(crate) mod schema;
mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tokio_postgres::{Client, NoTls, Row};

use crate::batches::object::Cols;
use crate::db::Error;

/// Longest wait for one call (a query or a transaction) before the database counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failure, how long calls fail at once instead of trying again.
const BACKOFF: Duration = Duration::from_secs(1);

pub struct Postgres {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    /// Owned here, shut down without waiting when the store goes (it may go on an async
    /// thread, where a runtime cannot be dropped).
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    conn: Mutex<Link>,
    pub(crate) max_file_size: usize,
    /// Where uploads are spooled before they go into the database in one transaction.
    pub(crate) spool: PathBuf,
    pub(crate) version: i64,
}

#[derive(Default)]
struct Link {
    client: Option<Arc<Client>>,
    down_until: Option<Instant>,
}

impl Link {
    /// The database failed: calls fail at once for [`BACKOFF`].
    fn failed(&mut self) {
        self.client = None;
        self.down_until = Some(Instant::now() + BACKOFF);
    }
}

impl Postgres {
    /// Connects to `url`, brings the schema up to date (refusing a newer one) and keeps the
    /// connection. `spool` is a private directory for uploads in progress.
    pub fn open(url: &str, max_file_size: usize, spool: PathBuf) -> Result<Self, Error> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Invalid(format!(
                "storage.url `{}`: {e}",
                laneway_core::redact_url(url)
            ))
        })?;
        let rt = runtime()?;
        crate::private::ensure_dir(&spool)?;
        remove_stale_spools(&spool);
        let mut inner = Inner {
            config,
            shown: laneway_core::redact_url(url).into_owned(),
            handle: rt.handle().clone(),
            rt: Some(rt),
            conn: Mutex::default(),
            max_file_size,
            spool,
            version: 0,
        };
        inner.version = inner.call(schema::migrate)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Whether `url` is reachable, and at which schema version (none: no schema yet), without
    /// changing anything.
    pub fn probe(url: &str) -> Result<Option<i64>, Error> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Invalid(format!("storage.url: {e}")))?;
        let rt = runtime()?;
        let inner = Inner {
            config,
            shown: laneway_core::redact_url(url).into_owned(),
            handle: rt.handle().clone(),
            rt: Some(rt),
            conn: Mutex::default(),
            max_file_size: 0,
            spool: PathBuf::new(),
            version: 0,
        };
        inner.call(schema::version)
    }
}

/// Removes uploads a process that died left half-spooled. Only those untouched for an hour:
/// another process on this machine may be spooling into the same directory right now.
fn remove_stale_spools(spool: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    let hour = Duration::from_secs(3600);
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > hour);
        if stale && e.file_name().to_string_lossy().ends_with(".part") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The connection's own runtime: one thread that drives its I/O and timers whichever thread
/// waits for a call (a current-thread runtime would need the waiting thread to drive them).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("laneway-postgres")
        .enable_all()
        .build()
}

impl Inner {
    fn link(&self) -> MutexGuard<'_, Link> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, made if there is none (unless the database failed a moment ago).
    fn client(&self, link: &mut Link) -> Result<Arc<Client>, Error> {
        if let Some(c) = &link.client {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        if link.down_until.is_some_and(|t| Instant::now() < t) {
            return Err(self.unavailable("it failed a moment ago"));
        }
        // The timer is made inside the runtime: this thread is not one of its own.
        let connecting =
            async { tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls)).await };
        match self.handle.block_on(connecting) {
            Ok(Ok((client, connection))) => {
                self.handle.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "the PostgreSQL connection ended");
                    }
                });
                let client = Arc::new(client);
                link.client = Some(client.clone());
                link.down_until = None;
                Ok(client)
            }
            Ok(Err(e)) => {
                link.failed();
                Err(self.unavailable(&e.to_string()))
            }
            Err(_) => {
                link.failed();
                Err(self.unavailable("connecting took longer than 3s"))
            }
        }
    }

    fn unavailable(&self, why: &str) -> Error {
        Error::Unavailable(format!(
            "the batch store (PostgreSQL at {}) is unavailable: {why}",
            self.shown
        ))
    }

    /// Runs `op` on the connection within [`CALL_TIMEOUT`]. One call at a time: a transaction
    /// (`BEGIN` … `COMMIT` in `op`) is never interleaved with another caller's statements.
    /// Any failure drops the connection, which also ends a transaction left open.
    pub(crate) fn call<T, F>(&self, op: impl FnOnce(Arc<Client>) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        self.call_within(Duration::ZERO, op)
    }

    /// [`Inner::call`] given `extra` time beyond [`CALL_TIMEOUT`] (a large file).
    pub(crate) fn call_within<T, F>(
        &self,
        extra: Duration,
        op: impl FnOnce(Arc<Client>) -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let mut link = self.link();
        let client = self.client(&mut link)?;
        let within = CALL_TIMEOUT.saturating_add(extra);
        let op = op(client);
        match self
            .handle
            .block_on(async { tokio::time::timeout(within, op).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                link.client = None;
                Err(match e {
                    Error::Pg(p) if p.as_db_error().is_none() => {
                        link.failed();
                        self.unavailable(&p.to_string())
                    }
                    other => other,
                })
            }
            Err(_) => {
                link.client = None;
                link.failed();
                Err(self.unavailable(&format!("a call took longer than {}s", within.as_secs())))
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!("PostgreSQL at {}, schema {}", self.shown, self.version)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Cols for Row {
    type E = Error;
    fn text(&self, i: usize) -> Result<Option<String>, Error> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, Error> {
        Ok(self.try_get(i)?)
    }
}

/// A count or size as PostgreSQL's BIGINT.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
