//! The model ids `GET /v1/models` lists: ids a client can send, never a pattern.
//!
//! A literal route lists itself. A route given as a pattern lists the ids its lanes serve that
//! match it: the lane's own `models = [...]`, or else what the lane's upstream lists at its
//! `/v1/models`. Those lists are cached per upstream, fetched once inline (bounded in time),
//! then refreshed in the background when stale; a failing upstream keeps its last list and is
//! asked again later, never on every call.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use laneway_core::glob;
use tokio::time::Instant;

use crate::App;
use laneway_engine::topology::{KeyLive, LaneLive, Topology};

/// How long a fetched list is used before it is refreshed.
const FRESH: Duration = Duration::from_secs(300);
/// How soon a failed fetch is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// The longest a client waits for an upstream's first list.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Catalog {
    /// By upstream base URL.
    lists: Mutex<HashMap<String, Cached>>,
}

#[derive(Clone)]
struct Cached {
    ids: Arc<Vec<String>>,
    /// When the list is due for a refresh.
    stale_at: Instant,
    refreshing: bool,
}

impl Catalog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids `key` may use, sorted and without duplicates.
    pub async fn ids(app: &Arc<App>, topo: &Topology, key: &KeyLive) -> Vec<String> {
        let mut out = BTreeSet::new();
        for route in &topo.routes {
            if glob::is_literal(&route.pattern) {
                out.insert(route.pattern.clone());
                continue;
            }
            for &i in &route.lanes {
                let lane = &topo.lanes[i];
                let served = if lane.config.models.is_empty() {
                    Self::discovered(app, lane).await
                } else {
                    Arc::new(lane.config.models.clone())
                };
                out.extend(
                    served
                        .iter()
                        .filter(|id| glob::matches(&route.pattern, id))
                        .cloned(),
                );
            }
        }
        out.into_iter().filter(|id| key.allows(id)).collect()
    }

    /// What the lane's upstream lists: fetched now if never fetched, else the cached list
    /// (refreshed in the background once stale).
    async fn discovered(app: &Arc<App>, lane: &LaneLive) -> Arc<Vec<String>> {
        let url = lane.config.url.clone();
        let now = Instant::now();
        let cached = {
            let mut lists = app.catalog.lock();
            let entry = lists.get_mut(&url);
            match entry {
                Some(c) if c.stale_at > now || c.refreshing => return c.ids.clone(),
                Some(c) => {
                    c.refreshing = true;
                    Some(c.ids.clone())
                }
                None => {
                    lists.insert(
                        url.clone(),
                        Cached {
                            ids: Arc::default(),
                            stale_at: now,
                            refreshing: true,
                        },
                    );
                    None
                }
            }
        };
        let api_key = lane.config.api_key.as_ref().map(|k| k.expose().clone());
        let fetch = {
            let app = app.clone();
            async move {
                let got = app
                    .client()
                    .list_models(&url, api_key.as_deref(), FETCH_TIMEOUT)
                    .await;
                let mut lists = app.catalog.lock();
                let entry = lists.entry(url.clone()).or_insert_with(|| Cached {
                    ids: Arc::default(),
                    stale_at: Instant::now(),
                    refreshing: false,
                });
                entry.refreshing = false;
                match got {
                    Ok(ids) => {
                        entry.ids = Arc::new(ids);
                        entry.stale_at = Instant::now() + FRESH;
                    }
                    Err(e) => {
                        tracing::debug!(url = %laneway_core::redact_url(&url), error = %e, "model list unavailable");
                        entry.stale_at = Instant::now() + RETRY_FAILED;
                    }
                }
                entry.ids.clone()
            }
        };
        match cached {
            Some(ids) => {
                tokio::spawn(fetch);
                ids
            }
            None => fetch.await,
        }
    }
}
