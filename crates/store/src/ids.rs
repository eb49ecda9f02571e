//! Which lane made each Responses API id, shared by every replica: a request continuing a
//! response, or a call on its id, reaches the lane that made it from any replica. One key per
//! id, `{prefix}:v1:resp:{id}`, holding the lane and the key that made it, kept for 30 days
//! (as long as OpenAI keeps a stored response). A store that is down answers nothing: the
//! request then runs as one without a recorded id, and the upstream answers for it.

use std::sync::Arc;
use std::time::Duration;

use laneway_core::record::{IdRecord, Pending};
use redis::AsyncCommands;

use crate::{health, Store};

/// How long an id is kept.
const KEPT: Duration = Duration::from_secs(30 * 86_400);
/// Separates the lane from the key in the stored value; in neither name.
const SEP: char = '\u{1f}';

impl Store {
    fn response_key(&self, id: &str) -> String {
        format!("{}:resp:{id}", self.shared.ns)
    }
}

impl IdRecord for Store {
    fn record(&self, id: String, lane: Arc<String>, key: Arc<String>) -> Pending<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.health.is_up() {
                return;
            }
            let (k, mut conn) = (self.response_key(&id), s.conn.clone());
            let value = format!("{lane}{SEP}{key}");
            let _ = health::bounded(s, "record a response id", async move {
                conn.set_ex::<_, _, ()>(k, value, KEPT.as_secs()).await
            })
            .await;
        })
    }

    fn find(&self, id: String) -> Pending<'_, Option<(String, String)>> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.health.is_up() {
                return None;
            }
            let (k, mut conn) = (self.response_key(&id), s.conn.clone());
            let found = health::bounded(s, "find a response id", async move {
                conn.get::<_, Option<String>>(k).await
            });
            let value = found.await.ok()??;
            let (lane, key) = value.split_once(SEP)?;
            Some((lane.to_owned(), key.to_owned()))
        })
    }

    fn forget(&self, id: String) -> Pending<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.health.is_up() {
                return;
            }
            let (k, mut conn) = (self.response_key(&id), s.conn.clone());
            let _ = health::bounded(s, "forget a response id", async move {
                conn.del::<_, ()>(k).await
            })
            .await;
        })
    }
}
