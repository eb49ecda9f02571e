//! The Responses API's ids. A response lives in the provider account that made it, so a
//! request with `previous_response_id`, and every call on an id (`GET` and `DELETE
//! /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`), must reach the lane that made
//! it. Which lane that was is recorded when the answer ends: in memory at once (the client may
//! send its next turn as soon as it has read this one) and in an [`IdRecord`] (the server's
//! storage database), so that it survives a restart. Ids are recorded for the key that made
//! them and only that key may use them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::label::Label;

/// Ids kept in memory; older ones are read from the record.
const IN_MEMORY: usize = 100_000;

pub use laneway_core::record::{IdRecord, Pending};

/// Which lane made each response id, and for which key.
pub struct ResponseLanes {
    recent: Mutex<Recent>,
    record: Option<Arc<dyn IdRecord>>,
}

#[derive(Default)]
struct Recent {
    by_id: HashMap<String, (Label, Label)>,
    order: VecDeque<String>,
}

impl ResponseLanes {
    pub fn new(record: Option<Arc<dyn IdRecord>>) -> Self {
        Self {
            recent: Mutex::default(),
            record,
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `lane` made `id` for `key` in memory, and gives the future that keeps it
    /// in the record (none without one). The relayed body holds its last bytes until it is
    /// done, so a client that continues the response at once, through any replica, finds it.
    pub fn record_durably(
        &self,
        id: String,
        lane: Label,
        key: Label,
    ) -> Option<Pending<'static, ()>> {
        self.remember(&id, &lane, &key);
        let record = self.record.clone()?;
        Some(Box::pin(async move { record.record(id, lane, key).await }))
    }

    fn remember(&self, id: &str, lane: &Label, key: &Label) {
        let mut r = self.recent();
        if r.order.len() >= IN_MEMORY {
            if let Some(old) = r.order.pop_front() {
                r.by_id.remove(&old);
            }
        }
        r.order.push_back(id.to_owned());
        r.by_id.insert(id.to_owned(), (lane.clone(), key.clone()));
    }

    /// Records that `lane` made `id` for `key`: in memory now, in the record shortly.
    pub fn record(&self, id: String, lane: Label, key: Label) {
        self.remember(&id, &lane, &key);
        // Outside a runtime (a test dropping a body by hand) the memory record stands alone.
        if let (Some(record), Ok(handle)) = (&self.record, tokio::runtime::Handle::try_current()) {
            let record = record.clone();
            handle.spawn(async move { record.record(id, lane, key).await });
        }
    }

    /// The lane that made `id`, if `key` made it.
    pub async fn lane_of(&self, id: &str, key: &str) -> Option<String> {
        let recent = self
            .recent()
            .by_id
            .get(id)
            .map(|(l, k)| (l.to_string(), k.to_string()));
        let (lane, owner) = match recent {
            Some(found) => found,
            None => self.record.as_ref()?.find(id.to_owned()).await?,
        };
        (owner == key).then_some(lane)
    }

    /// Forgets `id` after its upstream deleted it.
    pub fn forget(&self, id: &str) {
        self.recent().by_id.remove(id);
        if let Some(record) = &self.record {
            let (record, id) = (record.clone(), id.to_owned());
            tokio::spawn(async move { record.forget(id).await });
        }
    }
}
