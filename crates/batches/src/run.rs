//! Driving one batch through its lifecycle: validating → in_progress → finalizing → completed
//! (or failed, expired, cancelling → cancelled). Every step reads the stored status first and
//! every move is conditional on it, so a restarted gateway picks a batch up wherever the
//! previous process left it, and several replicas may drive one batch side by side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use laneway_core::wire::Endpoint;
use laneway_core::ErrorCode;
use laneway_storage::{validate, BatchStatus, Item, Store};
use tokio_util::sync::CancellationToken;

use super::claims::{items, poll, End};
use super::{blocking, Batches, Running};
use crate::Api as App;

/// Starts driving `id` on the current runtime, once per batch and process.
pub(crate) fn launch(app: &Arc<App>, storage: Arc<dyn Store>, id: String) {
    tend(app, &storage);
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
            inflight: Mutex::default(),
        });
        running.insert(id.clone(), r.clone());
        r
    };
    let app = app.clone();
    tokio::spawn(async move {
        match drive(&app, &storage, &id, &running).await {
            Ok(()) => {}
            // Nothing is wrong with the batch: it is taken up again when the store is back
            // (by this replica's search for unfinished batches, or at the next start).
            Err(e) if e.code == ErrorCode::StoreUnavailable => {
                tracing::warn!(batch = %id, "the batch waits for its store: {}", e.message);
            }
            Err(e) => {
                tracing::error!(batch = %id, "the batch failed: {}", e.message);
                let why = vec![
                    serde_json::json!({"code": e.code.as_str(), "message": e.message, "line": null}),
                ];
                let owned = id.clone();
                let _ = blocking(&storage, move |s| s.fail_validation(&owned, &why)).await;
            }
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
    storage: &Arc<dyn Store>,
    b: laneway_storage::Batch,
) -> Result<(), laneway_core::ApiError> {
    let owned = b.id.clone();
    let topo = app.engine.topo.load_full();
    let owner = b.owner.clone();
    let input = b.input_file_id.clone();
    let checked = blocking(storage, move |s| {
        let f = s.file(&input, None)?;
        let key = topo.key_named(&owner).cloned();
        validate::check_reader(s.content(&f)?, &b.endpoint, |model| {
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
        Ok(Ok(_)) => store_items(storage, owned).await?,
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
    storage: &Arc<dyn Store>,
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
                if !b.items_loaded {
                    // A batch started before items were stored: they are stored now.
                    store_items(storage, owned.clone()).await?;
                }
                let end = items(app, storage, &b, endpoint, running).await?;
                let (from, to) = match end {
                    End::Done => (BatchStatus::InProgress, BatchStatus::Finalizing),
                    // The status moved on its own (cancelling) or stays for the next start.
                    End::Stopped => {
                        if app.batches.stopping.is_cancelled() {
                            // Draining: what this replica held is free for the others now.
                            let holder = app.batches.holder.clone();
                            blocking(storage, move |s| s.release(&holder)).await?;
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
    storage: &Arc<dyn Store>,
    id: &str,
    to: BatchStatus,
) -> Result<(), laneway_core::ApiError> {
    let owned = id.to_owned();
    blocking(storage, move |s| s.finalize(&owned, to)).await?;
    app.engine.observer().batch_ended(to.as_str());
    tracing::info!(batch = %id, status = to.as_str(), "batch ended");
    Ok(())
}

/// Stores the items of a checked batch and starts it (if no one else did).
async fn store_items(storage: &Arc<dyn Store>, id: String) -> Result<(), laneway_core::ApiError> {
    blocking(storage, move |s| {
        let b = s.batch(&id, None)?;
        let f = s.file(&b.input_file_id, None)?;
        let mut items =
            validate::requests_from(s.content(&f)?).map(|(line, custom_id, body)| Item {
                line,
                custom_id,
                body,
            });
        s.start(&id, &mut items)
    })
    .await
    .map(drop)
}

/// Starts, once per process, the two tasks that keep a fleet's batches going: renewing the
/// leases of the items this replica holds, and taking up unfinished batches no task here
/// drives (made on another replica, left by one that died, or waiting for a store that was
/// down). Both end when the gateway drains.
pub(crate) fn tend(app: &Arc<App>, storage: &Arc<dyn Store>) {
    if app.batches.tending.swap(true, Ordering::Relaxed) {
        return;
    }
    let (app, storage) = (app.clone(), storage.clone());
    tokio::spawn(async move {
        let every = poll(&app);
        let stopping = app.batches.stopping.clone();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (holder, lease) = (app.batches.holder.clone(), app.batches.config.lease);
            if let Err(e) = blocking(&storage, move |s| s.renew(&holder, lease)).await {
                tracing::debug!("could not renew item leases: {}", e.message);
            }
            match blocking(&storage, |s| s.unfinished()).await {
                Ok(unfinished) => {
                    for b in unfinished {
                        launch(&app, storage.clone(), b.id);
                    }
                }
                Err(e) => tracing::debug!("could not look for unfinished batches: {}", e.message),
            }
        }
    });
}
