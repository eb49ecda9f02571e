//! The OpenAI Batch API: files and batches kept in a [`Store`] (`laneway-storage`: SQLite under
//! `[storage] path`, or PostgreSQL under `[storage] url` for a fleet), items sent through the
//! same lanes, limits and fair queues as interactive requests at a priority below all of them.
//! Every replica sharing a database drives its unfinished batches; items are leased one replica
//! at a time, and those of a replica that died are taken over when their lease runs out.
//!
//! - [`files`]: `/v1/files`, uploads streamed to disk.
//! - [`api`]: `/v1/batches` and `/admin/batches`.
//! - [`run`]: one batch from validation to its output files; resumed after a restart, taken up
//!   from other replicas, this replica's item leases renewed.
//! - [`claims`]: a batch's items claimed, run and recorded.
//! - [`item`]: one item through the request path.
//!
//! Durability rests on one rule: an item's result is recorded, once, by its `custom_id`, in
//! the same transaction that counts it; output files are written from those records when the
//! batch ends. A gateway killed at any moment runs again only the items it had not recorded.

mod api;
mod claims;
mod files;
mod item;
mod run;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use laneway_config::StorageConfig;
use laneway_core::{ApiError, ErrorCode};
use laneway_storage::{Postgres, Storage, Store};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

pub use api::{admin_list, cancel, create, list, retrieve};
pub use files::{content, delete, get as get_file, list as list_files, upload};

mod ids;

use laneway_engine::Engine;

/// The Batch API of a running gateway: its state and the engine its items run through; the
/// state of every handler here.
pub struct Api {
    pub engine: Arc<Engine>,
    pub batches: Batches,
}

/// The storage, opened on first use; shared with the response-id record.
pub(crate) struct Opener {
    config: StorageConfig,
    storage: OnceCell<Arc<dyn Store>>,
}

/// The Batch API's state.
pub struct Batches {
    config: StorageConfig,
    opener: Arc<Opener>,
    /// Batches being driven here, by id.
    running: Mutex<HashMap<String, Arc<Running>>>,
    /// Items in flight across every batch (`storage.batch_concurrency`).
    slots: Arc<Semaphore>,
    /// Set when the gateway drains: batches stop taking items and carry on after a restart.
    stopping: CancellationToken,
    /// Whom this process's item leases are for.
    holder: String,
    /// Whether the tasks that renew leases and look for batches to take over were started.
    tending: std::sync::atomic::AtomicBool,
}

impl Batches {
    pub fn new(config: StorageConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.batch_concurrency.max(1)));
        Self {
            opener: Arc::new(Opener {
                config: config.clone(),
                storage: OnceCell::new(),
            }),
            config,
            running: Mutex::default(),
            slots,
            stopping: CancellationToken::new(),
            holder: laneway_storage::new_id("replica-"),
            tending: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The storage, opened on first use.
    pub(crate) async fn storage(&self) -> Result<Arc<dyn Store>, ApiError> {
        self.opener.storage().await
    }

    /// Where the engine keeps response ids beyond its memory: this storage's database.
    pub fn id_record(&self) -> Arc<dyn laneway_engine::responses::IdRecord> {
        Arc::new(ids::StoredIds(self.opener.clone()))
    }

    /// The storage for reading: `None` when nothing was ever stored (no `[storage]` section, no
    /// directory), so listing batches does not create the directory.
    pub(crate) async fn existing(&self) -> Result<Option<Arc<dyn Store>>, ApiError> {
        if self.opener.storage.get().is_none()
            && !self.config.configured
            && !self.config.path.exists()
        {
            return Ok(None);
        }
        self.storage().await.map(Some)
    }
}

impl Batches {
    /// Stops every batch from taking new items (the gateway is draining).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the admin API and the panel show of a batch beyond its counts: the lanes its items
    /// ran on and its pace here, while it runs.
    pub(crate) fn progress(&self, b: &laneway_storage::Batch) -> serde_json::Value {
        let done = b.counts.completed.saturating_add(b.counts.failed);
        let mut v = serde_json::json!({
            "done": done,
            "total": b.counts.total,
            "running": false,
        });
        if let Some(r) = self.running().get(&b.id) {
            let secs = r.started.elapsed().as_secs_f64();
            let here = r.done.load(Ordering::Relaxed);
            v["running"] = true.into();
            v["lanes"] = r.lanes().into();
            v["items_per_second"] = if secs > 0.0 {
                (here as f64 / secs).into()
            } else {
                0.0.into()
            };
        }
        v
    }
}

impl Opener {
    pub(crate) async fn storage(&self) -> Result<Arc<dyn Store>, ApiError> {
        self.storage
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let opened = tokio::task::spawn_blocking(move || open(&config)).await;
                match opened {
                    Ok(Ok(s)) => {
                        tracing::info!(storage = %s.describe(), "the Batch API's storage is open");
                        Ok(s)
                    }
                    Ok(Err(e)) => Err(storage_error(&e)),
                    Err(e) => Err(ApiError::new(ErrorCode::Internal, e.to_string())),
                }
            })
            .await
            .cloned()
    }
}

/// Opens the store the config names: PostgreSQL under `url` (uploads spooled under `path`),
/// else SQLite under `path`.
fn open(config: &StorageConfig) -> Result<Arc<dyn Store>, laneway_storage::Error> {
    Ok(match &config.url {
        Some(url) => Arc::new(Postgres::open(
            url,
            config.max_file_size,
            config.path.join("spool"),
        )?),
        None => Arc::new(Storage::open(&config.path, config.max_file_size)?),
    })
}

/// The Batch API's routes: `/v1/files`, `/v1/batches` and `/admin/batches`.
pub fn router(api: Arc<Api>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/v1/files",
            post(upload)
                .get(list_files)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/files/{id}", get(get_file).delete(delete))
        .route("/v1/files/{id}/content", get(content))
        .route("/v1/batches", post(create).get(list))
        .route("/v1/batches/{id}", get(retrieve))
        .route("/v1/batches/{id}/cancel", post(cancel))
        .route("/admin/batches", get(admin_list))
        .with_state(api)
}

/// A batch being driven by this process.
pub(crate) struct Running {
    /// Cancelling stops the batch taking new items and withdraws those waiting for a slot.
    token: CancellationToken,
    /// Cancelling ends running items too (the batch expired).
    abort: CancellationToken,
    started: tokio::time::Instant,
    /// Items recorded since this process took the batch up.
    done: AtomicU64,
    lanes: Mutex<BTreeSet<laneway_engine::label::Label>>,
    /// Items running here by `custom_id`: a claim that hands one back (its lease ran out while
    /// the store was down) does not start it twice.
    inflight: Mutex<std::collections::HashSet<String>>,
}

impl Running {
    fn inflight(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lanes(&self) -> Vec<String> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.iter().map(|l| l.to_string()).collect()
    }
}

/// At start: opens the storage if the config names it (or it is already there) and carries
/// on with every batch a previous process left unfinished.
pub async fn resume(app: &Arc<Api>) -> std::io::Result<()> {
    let b = &app.batches;
    if !b.config.configured && !b.config.path.exists() {
        return Ok(());
    }
    let storage = b
        .storage()
        .await
        .map_err(|e| std::io::Error::other(format!("cannot open the storage: {}", e.message)))?;
    let unfinished = {
        let s = storage.clone();
        tokio::task::spawn_blocking(move || s.unfinished())
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?
    };
    for batch in unfinished {
        tracing::info!(batch = %batch.id, status = batch.status.as_str(), "resuming a batch");
        run::launch(app, storage.clone(), batch.id);
    }
    run::tend(app, &storage);
    Ok(())
}

/// Runs blocking storage work off the async threads and maps its errors to responses.
pub(crate) async fn blocking<T: Send + 'static>(
    storage: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, laneway_storage::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let s = storage.clone();
    match tokio::task::spawn_blocking(move || f(&*s)).await {
        Ok(r) => r.map_err(|e| storage_error(&e)),
        Err(e) => Err(ApiError::new(ErrorCode::Internal, e.to_string())),
    }
}

/// The one place storage errors become API errors.
pub(crate) fn storage_error(e: &laneway_storage::Error) -> ApiError {
    use laneway_storage::Error as E;
    if e.disk_full() {
        return ApiError::new(
            ErrorCode::StorageFull,
            "the disk under [storage] path is full; nothing was kept, free space and retry",
        );
    }
    match e {
        E::NotFound(m) => ApiError::new(ErrorCode::NotFound, m.clone()),
        E::Invalid(m) => ApiError::new(ErrorCode::InvalidRequest, m.clone()),
        E::TooLarge(n) => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the file is larger than storage.max_file_size ({n} bytes)"),
        ),
        E::Unavailable(m) => ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("{m}; files and batches are safe, retry shortly"),
        ),
        E::Sql(_) | E::Io(_) | E::Pg(_) | E::Schema(_) => {
            tracing::error!("storage: {e}");
            ApiError::new(ErrorCode::Internal, format!("{e}"))
        }
    }
}
