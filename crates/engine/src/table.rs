//! The request table: every request inside the gateway, queued or running, with what the admin
//! API and the panel show and the token an operator uses to cancel or stop it.
//!
//! Sharded by request tag so that registering and removing requests never contends on one lock;
//! the admin view walks the shards one at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::label::Label;

const SHARDS: usize = 32;

pub struct Entry {
    pub tag: u64,
    pub id: Arc<str>,
    /// The client's own `x-request-id`, shown beside the gateway's id.
    pub client_id: Option<Arc<str>>,
    pub key: Label,
    pub model: String,
    pub stream: bool,
    pub created: Instant,
    /// When and where the request got a lane slot; `None` while it waits (again, when a retry
    /// waits for another lane).
    started: Mutex<Option<(Instant, Label)>>,
    pub attempt: AtomicU32,
    /// Fired only by an operator (admin API or panel): stop or cancel this request.
    pub cancel: CancellationToken,
    /// Notified each time the request starts waiting for a slot; a stream then tells its
    /// client where it stands (see `waiting`).
    pub waits: tokio::sync::Notify,
}

/// Why a request ended before its work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An operator stopped or cancelled it.
    Operator,
    /// Its deadline passed.
    Deadline,
}

impl Entry {
    /// Resolves when an operator stops the request or `deadline` passes: the one place both
    /// are watched.
    pub async fn stopped(&self, deadline: Instant) -> Stop {
        tokio::select! {
            () = self.cancel.cancelled() => Stop::Operator,
            () = tokio::time::sleep_until(deadline) => Stop::Deadline,
        }
    }

    /// Runs `work` unless the request is stopped first (see [`Entry::stopped`]).
    pub async fn within<T>(
        &self,
        deadline: Instant,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Stop> {
        tokio::select! {
            r = work => Ok(r),
            s = self.stopped(deadline) => Err(s),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Label)>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running(&self) -> Option<(Instant, Label)> {
        self.slot().clone()
    }

    pub fn set_running(&self, lane: Label) {
        *self.slot() = Some((Instant::now(), lane));
    }

    pub fn set_waiting(&self) {
        *self.slot() = None;
        if self.stream {
            self.waits.notify_one();
        }
    }

    pub fn is_running(&self) -> bool {
        self.slot().is_some()
    }

    pub fn lane(&self) -> Option<Label> {
        self.slot().as_ref().map(|(_, l)| l.clone())
    }

    pub fn operator_cancel(&self) {
        self.cancel.cancel();
    }
}

#[derive(Default)]
pub struct Table {
    shards: [Mutex<HashMap<u64, Arc<Entry>>>; SHARDS],
    next: AtomicU64,
}

/// Removes the entry from the table when dropped.
pub struct Registration {
    table: Arc<Table>,
    pub entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.shard(self.entry.tag).remove(&self.entry.tag);
    }
}

/// One row of `GET /admin/requests`.
#[derive(Debug, Serialize)]
pub struct RequestView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    pub state: &'static str,
    pub lane: Option<String>,
    pub key: String,
    pub model: String,
    pub stream: bool,
    pub queued_ms: u64,
    pub running_ms: Option<u64>,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// Lanes the request waits for (its route's pool), while queued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<String>,
}

impl Table {
    fn shard(&self, tag: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // Only inserts and removes happen under these locks; a poisoned one is still consistent.
        self.shards[tag as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        id: Arc<str>,
        client_id: Option<Arc<str>>,
        key: Label,
        model: String,
        stream: bool,
    ) -> Registration {
        let tag = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            tag,
            id,
            client_id,
            key,
            model,
            stream,
            created: Instant::now(),
            started: Mutex::new(None),
            attempt: AtomicU32::new(0),
            cancel: CancellationToken::new(),
            waits: tokio::sync::Notify::new(),
        });
        self.shard(tag).insert(tag, entry.clone());
        Registration {
            table: self.clone(),
            entry,
        }
    }

    pub fn all(&self) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned(),
            );
        }
        out.sort_by_key(|e| e.tag);
        out
    }

    pub fn find(&self, id: &str) -> Option<Arc<Entry>> {
        self.all().into_iter().find(|e| &*e.id == id)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
