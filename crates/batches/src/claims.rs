//! Running a batch's items: claimed from the store a few at a time (leased to this replica),
//! sent through the lanes, each result recorded once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use laneway_storage::{BatchStatus, Item, ItemResult, Store};
use tokio::task::JoinSet;

use super::item::{self, Outcome};
use super::{blocking, Running};
use crate::Api as App;

pub(crate) enum End {
    /// Every item has its result.
    Done,
    /// Cancelled, the gateway is draining, or the batch left `in_progress`: no new items.
    Stopped,
    Expired,
}

/// How often a replica looks again: for items whose lease ran out, for unfinished batches, for
/// a store that was down. A third of the lease, so a dead replica's items are taken over soon
/// after they are free.
pub(crate) fn poll(app: &App) -> Duration {
    (app.batches.config.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Runs every item without a result, at most `storage.batch_concurrency` at once across all
/// batches here, and waits for the ones started.
pub(crate) async fn items(
    app: &Arc<App>,
    storage: &Arc<dyn Store>,
    b: &laneway_storage::Batch,
    endpoint: Endpoint,
    running: &Arc<Running>,
) -> Result<End, ApiError> {
    let token = &running.token;
    let expires = tokio::time::sleep_until(expiry(b.expires_at()));
    tokio::pin!(expires);
    let mut tasks = JoinSet::new();
    let mut claimed = VecDeque::new();
    let mut end = loop {
        let slot = tokio::select! {
            () = token.cancelled() => break End::Stopped,
            () = &mut expires => break End::Expired,
            slot = app.batches.slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break End::Stopped };
        if claimed.is_empty() {
            let want = app.batches.slots.available_permits().saturating_add(1);
            let got = claim(app, storage, &b.id, want).await?;
            let inflight = running.inflight();
            claimed.extend(got.into_iter().filter(|i| !inflight.contains(&i.custom_id)));
        }
        let Some(next) = claimed.pop_front() else {
            drop(slot);
            if let Some(end) = nothing_to_claim(storage, &b.id, tasks.is_empty()).await? {
                break end;
            }
            // Wait for an item here to end, or for leases elsewhere to run out.
            tokio::select! {
                () = token.cancelled() => break End::Stopped,
                () = &mut expires => break End::Expired,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => reaped(done)?,
                () = tokio::time::sleep(poll(app)) => {}
            }
            continue;
        };
        let (app, storage, running) = (app.clone(), storage.clone(), running.clone());
        let (owner, id) = (b.owner.clone(), b.id.clone());
        running.inflight().insert(next.custom_id.clone());
        tasks.spawn(async move {
            let _slot = slot;
            let custom_id = next.custom_id.clone();
            let done = one(&app, &storage, &id, &owner, endpoint, next, &running).await;
            running.inflight().remove(&custom_id);
            done
        });
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = reaped(done) {
                token.cancel();
                return Err(e);
            }
        }
    };
    // Started items finish, unless the window closes first.
    loop {
        if matches!(end, End::Expired) {
            // Nothing more runs: waiting items are withdrawn, running ones aborted.
            token.cancel();
            running.abort.cancel();
        }
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(done) => reaped(done)?,
            },
            () = &mut expires, if matches!(end, End::Done) => end = End::Expired,
        }
    }
    Ok(end)
}

/// An item task's end: its error, if the store refused its result for good.
fn reaped(done: Result<Result<(), ApiError>, tokio::task::JoinError>) -> Result<(), ApiError> {
    match done {
        Ok(r) => r,
        Err(e) => Err(ApiError::new(ErrorCode::Internal, e.to_string())),
    }
}

/// Claims up to `want` items; none while the store is down (the loop looks again).
async fn claim(
    app: &Arc<App>,
    storage: &Arc<dyn Store>,
    id: &str,
    want: usize,
) -> Result<Vec<Item>, ApiError> {
    let (id, holder, lease) = (
        id.to_owned(),
        app.batches.holder.clone(),
        app.batches.config.lease,
    );
    match blocking(storage, move |s| s.claim(&id, &holder, want, lease)).await {
        Err(e) if e.code == ErrorCode::StoreUnavailable => Ok(Vec::new()),
        other => other,
    }
}

/// No item could be claimed: the batch is done when none is left anywhere and none runs here;
/// it stopped for this replica when it left `in_progress` (cancelled, expired elsewhere);
/// otherwise other replicas hold the rest (`None`).
async fn nothing_to_claim(
    storage: &Arc<dyn Store>,
    id: &str,
    idle: bool,
) -> Result<Option<End>, ApiError> {
    let id = id.to_owned();
    let looked = blocking(storage, move |s| {
        Ok((s.batch(&id, None)?, s.remaining(&id)?))
    })
    .await;
    let (b, remaining) = match looked {
        Err(e) if e.code == ErrorCode::StoreUnavailable => return Ok(None),
        other => other?,
    };
    if b.status != BatchStatus::InProgress {
        return Ok(Some(End::Stopped));
    }
    Ok((idle && remaining == 0).then_some(End::Done))
}

/// The batch's expiry as a point on the runtime's clock.
fn expiry(expires_at: i64) -> tokio::time::Instant {
    let left = expires_at.saturating_sub(laneway_storage::now()).max(0);
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0).min(400 * 24 * 3600));
    tokio::time::Instant::now() + left
}

/// Sends one item until it has an answer to record, then records it.
async fn one(
    app: &Arc<App>,
    storage: &Arc<dyn Store>,
    batch_id: &str,
    owner: &str,
    endpoint: Endpoint,
    it: Item,
    running: &Running,
) -> Result<(), ApiError> {
    let body = Bytes::from(it.body);
    let (status, answer, request_id) = loop {
        let attempt = tokio::select! {
            o = item::run(app, endpoint, owner, body.clone(), &running.token) => o,
            // Past the batch's window even running items end (their upstream call is closed).
            () = running.abort.cancelled() => return Ok(()),
        };
        match attempt {
            Outcome::Done {
                status,
                body,
                request_id,
                lane,
            } => {
                if let Some(l) = lane {
                    running
                        .lanes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(l);
                }
                break (status, body, request_id);
            }
            Outcome::Withdrawn => return Ok(()),
            Outcome::Later(after) => tokio::select! {
                () = running.token.cancelled() => return Ok(()),
                () = tokio::time::sleep(after) => {}
            },
        }
    };
    let result = Arc::new(ItemResult {
        line: it.line,
        ok: (200..300).contains(&status),
        output: item::output_line(&it.custom_id, status, &answer, &request_id),
        custom_id: it.custom_id,
    });
    // A store that is down keeps the answer waiting here rather than losing it; past the
    // lease another replica may run the item again, and the first result recorded stands.
    loop {
        let (id, r) = (batch_id.to_owned(), result.clone());
        match blocking(storage, move |s| s.record(&id, &r)).await {
            Ok(new) => {
                if new {
                    running.done.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            Err(e) if e.code == ErrorCode::StoreUnavailable => tokio::select! {
                () = running.abort.cancelled() => return Ok(()),
                () = tokio::time::sleep(poll(app)) => {}
            },
            Err(e) => return Err(e),
        }
    }
}
