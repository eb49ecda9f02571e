//! The engine's response-id record kept in the Batch API's database, so that an id outlives a
//! restart.

use std::sync::Arc;

use laneway_engine::label::Label;
use laneway_engine::responses::{IdRecord, Pending};

use crate::Opener;

/// Longest wait for the record before an answer ends anyway.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct StoredIds(pub(crate) Arc<Opener>);

impl IdRecord for StoredIds {
    fn record(&self, id: String, lane: Label, key: Label) -> Pending<'_, ()> {
        Box::pin(async move {
            let Ok(storage) = self.0.storage().await else {
                return;
            };
            let written =
                tokio::task::spawn_blocking(move || storage.record_response(&id, &lane, &key));
            // The answer's last bytes wait for this: a store that hangs must not hold them
            // long (the id is in this replica's memory all the same).
            match tokio::time::timeout(RECORD_WAIT, written).await {
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "could not record a response id's lane");
                }
                Err(_) => tracing::warn!("recording a response id's lane took longer than 2s"),
                _ => {}
            }
        })
    }

    fn find(&self, id: String) -> Pending<'_, Option<(String, String)>> {
        Box::pin(async move {
            let storage = self.0.storage().await.ok()?;
            tokio::task::spawn_blocking(move || storage.response_lane(&id))
                .await
                .ok()?
                .ok()?
        })
    }

    fn forget(&self, id: String) -> Pending<'_, ()> {
        Box::pin(async move {
            if let Ok(storage) = self.0.storage().await {
                let _ = tokio::task::spawn_blocking(move || storage.forget_response(&id)).await;
            }
        })
    }
}
