//! The request's record ([`Entry`]: its facts, where it stands, the operator's token) and the
//! request table: every request inside the gateway, queued or running, for the admin API and
//! the panel.
//!
//! Sharded by request tag so that registering and removing requests never contends on one lock;
//! the admin view walks the shards one at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::label::Label;

const SHARDS: usize = 32;

/// One request's record, made when it arrives and shared by everything that handles it: its
/// ledger (what is logged and counted at its end), the table (what operators see), the waiting
/// stream. Facts learned on the way (the key, the model) are set once.
pub struct Entry {
    pub tag: u64,
    pub id: Arc<str>,
    /// The client's own `x-request-id`, shown beside the gateway's id.
    pub client_id: Option<Arc<str>>,
    /// The key that sent it, once it was checked.
    key: OnceLock<Label>,
    /// The model it asked for, and that model as a metrics label (bounded per route), once it
    /// was routed.
    model: OnceLock<(Label, Label)>,
    stream: AtomicBool,
    /// A Batch API item: counted apart from interactive requests.
    pub batch: bool,
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

fn dash() -> Label {
    static DASH: OnceLock<Label> = OnceLock::new();
    DASH.get_or_init(|| Arc::new("-".to_owned())).clone()
}

/// Tags are never reused; they order the table and name a request in a lane's queue.
static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

impl Entry {
    /// The record of a request that has just arrived, `batch` for a Batch API item.
    pub fn new(ctx: &crate::ids::RequestCtx, batch: bool) -> Arc<Self> {
        Arc::new(Self {
            tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            id: ctx.id.clone(),
            client_id: ctx.client_id.clone(),
            key: OnceLock::new(),
            model: OnceLock::new(),
            stream: AtomicBool::new(false),
            batch,
            created: Instant::now(),
            started: Mutex::new(None),
            attempt: AtomicU32::new(0),
            cancel: CancellationToken::new(),
            waits: tokio::sync::Notify::new(),
        })
    }

    /// Notes the key that sent the request (once; a second key is ignored).
    pub fn set_key(&self, key: &Label) {
        let _ = self.key.set(key.clone());
    }

    /// The key's name as a label; `-` before it was checked.
    pub fn key(&self) -> Label {
        self.key.get().cloned().unwrap_or_else(dash)
    }

    /// Notes the model the request asked for, its metrics label, and whether it streams.
    pub fn set_model(&self, model: &str, label: Label, stream: bool) {
        let _ = self.model.set((Arc::new(model.to_owned()), label));
        self.stream.store(stream, Ordering::Relaxed);
    }

    /// The model it asked for; `-` before it was routed.
    pub fn model(&self) -> Label {
        self.model.get().map_or_else(dash, |(m, _)| m.clone())
    }

    /// The model as a metrics label (see `topology::ModelLabels`); `-` before it was routed.
    pub fn model_label(&self) -> Label {
        self.model.get().map_or_else(dash, |(_, l)| l.clone())
    }

    pub fn stream(&self) -> bool {
        self.stream.load(Ordering::Relaxed)
    }

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
        if self.stream() {
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
    /// The replica that holds it, in a fleet sharing a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl Table {
    fn shard(&self, tag: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // Only inserts and removes happen under these locks; a poisoned one is still consistent.
        self.shards[tag as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `entry` where operators see it, until the registration is dropped.
    pub fn register(self: &Arc<Self>, entry: &Arc<Entry>) -> Registration {
        self.shard(entry.tag).insert(entry.tag, entry.clone());
        Registration {
            table: self.clone(),
            entry: entry.clone(),
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
