//! Driving one batch through its lifecycle: validating → in_progress → finalizing → completed
//! (or failed, expired, cancelling → cancelled). Every step reads the stored status first, so a
//! restarted gateway picks a batch up wherever the previous process left it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_storage::{validate, BatchStatus, ItemResult, Storage};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::item::{self, Outcome};
use super::{blocking, Batches, Running};
use crate::Api as App;

/// Starts driving `id` on the current runtime, once per batch and process.
pub(crate) fn launch(app: &Arc<App>, storage: Arc<Storage>, id: String) {
    let running = {
        let mut running = app.batches.running();
        if running.contains_key(&id) {
            return;
        }
        let r = Arc::new(Running {
            token: app.batches.stopping.child_token(),
            abort: CancellationToken::new(),
            started: tokio::time::Instant::now(),
            done: AtomicU64::new(0),
            lanes: Mutex::default(),
        });
        running.insert(id.clone(), r.clone());
        r
    };
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = drive(&app, &storage, &id, &running).await {
            tracing::error!(batch = %id, "the batch failed: {}", e.message);
            let why = vec![
                serde_json::json!({"code": e.code.as_str(), "message": e.message, "line": null}),
            ];
            let owned = id.clone();
            let _ = blocking(&storage, move |s| s.fail_validation(&owned, &why)).await;
        }
        app.batches.running().remove(&id);
    });
}

impl Batches {
    /// Stops a batch driven here from taking new items.
    pub(crate) fn stop_batch(&self, id: &str) {
        if let Some(r) = self.running().get(id) {
            r.token.cancel();
        }
    }
}

/// Checks every line of a validating batch's input: it starts, or fails with the problems.
async fn validate_input(
    app: &Arc<App>,
    storage: &Arc<Storage>,
    b: laneway_storage::Batch,
) -> Result<(), laneway_core::ApiError> {
    let owned = b.id.clone();
    let topo = app.engine.topo.load_full();
    let owner = b.owner.clone();
    let input = b.input_file_id.clone();
    let checked = blocking(storage, move |s| {
        let f = s.file(&input, None)?;
        let key = topo.key_named(&owner).cloned();
        validate::check(&s.content_path(&f), &b.endpoint, |model| {
            if topo.config.route_for(model).is_none() {
                return Err((
                    "model_not_found",
                    format!("no route serves the model `{model}`"),
                ));
            }
            match &key {
                Some(k) if k.allows(model) => Ok(()),
                _ => Err((
                    "model_not_allowed",
                    format!("the key `{owner}` may not use the model `{model}`"),
                )),
            }
        })
    })
    .await;
    match checked {
        Ok(Ok(total)) => blocking(storage, move |s| s.start(&owned, total))
            .await
            .map(drop)?,
        Ok(Err(problems)) => {
            let problems: Vec<_> = problems.iter().map(validate::Problem::to_json).collect();
            blocking(storage, move |s| s.fail_validation(&owned, &problems)).await?;
        }
        Err(e) => {
            let problems = vec![
                serde_json::json!({"code": "invalid_file", "message": e.message, "line": null}),
            ];
            blocking(storage, move |s| s.fail_validation(&owned, &problems)).await?;
        }
    }
    Ok(())
}

async fn drive(
    app: &Arc<App>,
    storage: &Arc<Storage>,
    id: &str,
    running: &Arc<Running>,
) -> Result<(), laneway_core::ApiError> {
    loop {
        let owned = id.to_owned();
        let b = blocking(storage, move |s| s.batch(&owned, None)).await?;
        let Some(endpoint) = Endpoint::from_path(&b.endpoint) else {
            let owned = id.to_owned();
            let why = serde_json::json!([{"code": "invalid_endpoint", "message": "the batch's endpoint is not served", "line": null}]);
            return blocking(storage, move |s| {
                s.fail_validation(&owned, why.as_array().map_or(&[][..], Vec::as_slice))
            })
            .await;
        };
        let owned = id.to_owned();
        match b.status {
            BatchStatus::Validating => validate_input(app, storage, b).await?,
            BatchStatus::InProgress => {
                let end = items(app, storage, &b, endpoint, running).await?;
                let (from, to) = match end {
                    End::Done => (BatchStatus::InProgress, BatchStatus::Finalizing),
                    // The status moved on its own (cancelling) or stays for the next start.
                    End::Stopped => {
                        if app.batches.stopping.is_cancelled() {
                            return Ok(());
                        }
                        continue;
                    }
                    End::Expired => {
                        finish(app, storage, id, BatchStatus::Expired).await?;
                        return Ok(());
                    }
                };
                blocking(storage, move |s| s.transition(&owned, &[from], to)).await?;
            }
            BatchStatus::Finalizing => {
                return finish(app, storage, id, BatchStatus::Completed).await
            }
            BatchStatus::Cancelling => {
                if app.batches.stopping.is_cancelled() {
                    return Ok(());
                }
                return finish(app, storage, id, BatchStatus::Cancelled).await;
            }
            _ => return Ok(()),
        }
    }
}

/// Writes the output files and ends the batch in `to`.
async fn finish(
    app: &Arc<App>,
    storage: &Arc<Storage>,
    id: &str,
    to: BatchStatus,
) -> Result<(), laneway_core::ApiError> {
    let owned = id.to_owned();
    blocking(storage, move |s| s.finalize(&owned, to)).await?;
    app.engine.observer().batch_ended(to.as_str());
    tracing::info!(batch = %id, status = to.as_str(), "batch ended");
    Ok(())
}

enum End {
    /// Every item has its result.
    Done,
    /// Cancelled, or the gateway is draining: no new items were taken.
    Stopped,
    Expired,
}

/// Runs every item not yet recorded, at most `storage.batch_concurrency` at once across all
/// batches, and waits for the ones started.
async fn items(
    app: &Arc<App>,
    storage: &Arc<Storage>,
    b: &laneway_storage::Batch,
    endpoint: Endpoint,
    running: &Arc<Running>,
) -> Result<End, laneway_core::ApiError> {
    let token = &running.token;
    let (id, input) = (b.id.clone(), b.input_file_id.clone());
    let recorded = blocking(storage, move |s| s.recorded(&id)).await?;
    let path = blocking(storage, move |s| Ok(s.content_path(&s.file(&input, None)?))).await?;
    let lines = blocking(storage, move |_| validate::requests(&path)).await?;
    // A reader thread feeds the items in input order, a few ahead of the senders.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, String, String)>(64);
    tokio::task::spawn_blocking(move || {
        for item in lines.filter(|(_, cid, _)| !recorded.contains(cid)) {
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let expires = tokio::time::sleep_until(expiry(b.expires_at()));
    tokio::pin!(expires);
    let mut tasks = JoinSet::new();
    let mut end = loop {
        let slot = tokio::select! {
            () = token.cancelled() => break End::Stopped,
            () = &mut expires => break End::Expired,
            slot = app.batches.slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break End::Stopped };
        let next = tokio::select! {
            () = token.cancelled() => break End::Stopped,
            () = &mut expires => break End::Expired,
            next = rx.recv() => next,
        };
        let Some((line, custom_id, body)) = next else {
            break End::Done;
        };
        let (app, storage, running) = (app.clone(), storage.clone(), running.clone());
        let owner = b.owner.clone();
        let id = b.id.clone();
        tasks.spawn(async move {
            let _slot = slot;
            one(
                &app, &storage, &id, &owner, endpoint, line, custom_id, body, &running,
            )
            .await
        });
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Err(e)) = done {
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
                Some(Ok(Err(e))) => return Err(e),
                Some(_) => {}
            },
            () = &mut expires, if matches!(end, End::Done) => end = End::Expired,
        }
    }
    Ok(end)
}

/// The batch's expiry as a point on the runtime's clock.
fn expiry(expires_at: i64) -> tokio::time::Instant {
    let left = expires_at.saturating_sub(laneway_storage::now()).max(0);
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0).min(400 * 24 * 3600));
    tokio::time::Instant::now() + left
}

/// Sends one item until it has an answer to record, then records it.
#[allow(clippy::too_many_arguments)]
async fn one(
    app: &Arc<App>,
    storage: &Arc<Storage>,
    batch_id: &str,
    owner: &str,
    endpoint: Endpoint,
    line: u64,
    custom_id: String,
    body: String,
    running: &Running,
) -> Result<(), laneway_core::ApiError> {
    let body = Bytes::from(body);
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
    let result = ItemResult {
        line,
        ok: (200..300).contains(&status),
        output: item::output_line(&custom_id, status, &answer, &request_id),
        custom_id,
    };
    let id = batch_id.to_owned();
    if blocking(storage, move |s| s.record(&id, &result)).await? {
        running.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
