//! The engine's response-id record kept in the Batch API's database, so that an id outlives a
//! restart.

use std::sync::Arc;

use laneway_engine::label::Label;
use laneway_engine::responses::{IdRecord, Pending};

use crate::Opener;

pub(crate) struct StoredIds(pub(crate) Arc<Opener>);

impl IdRecord for StoredIds {
    fn record(&self, id: String, lane: Label, key: Label) -> Pending<'_, ()> {
        Box::pin(async move {
            let Ok(storage) = self.0.storage().await else {
                return;
            };
            let written =
                tokio::task::spawn_blocking(move || storage.record_response(&id, &lane, &key))
                    .await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "could not record a response id's lane");
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
